#include "dfw/hostagent/svid_client.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "dfw/hostagent/controller_session.h"
#include "dfw/trust/ca.h"
#include "dfw/trust/peer.h"
#include "dfw/trust/svid.h"
#include "dfw/v1/trust.grpc.pb.h"

namespace dfw::hostagent {

using std::chrono::milliseconds;

namespace {

std::string Path(const std::string& dir, const char* file) { return dir + "/" + file; }

absl::Status FromGrpc(const grpc::Status& s, const std::string& what) {
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      what + ": " + s.error_message());
}

// Calls the TrustService of the controllers in `list` ("a:1,b:2") in turn,
// from the one that answered last, until one answers other than
// UNAVAILABLE; a standby's answer naming a leader in the list goes there
// next. Each address at most once, plus one hop to a named leader.
grpc::Status CallControllers(
    const std::string& list, std::atomic<size_t>* current,
    const std::shared_ptr<grpc::ChannelCredentials>& creds,
    const std::function<grpc::Status(v1::TrustService::Stub&, grpc::ClientContext&)>& fn) {
  const std::vector<std::string> targets = ControllerSession::SplitTargets(list);
  grpc::Status s;
  for (size_t tries = 0; tries <= targets.size(); ++tries) {
    size_t i = current->load() % targets.size();
    auto stub = v1::TrustService::NewStub(grpc::CreateChannel(targets[i], creds));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    s = fn(*stub, ctx);
    if (s.error_code() != grpc::StatusCode::UNAVAILABLE) return s;
    const auto& md = ctx.GetServerTrailingMetadata();
    auto it = md.find("dfw-leader-grpc");
    auto leader = it == md.end() ? targets.end()
                                 : std::find(targets.begin(), targets.end(),
                                             std::string(it->second.data(), it->second.size()));
    current->store(leader != targets.end() ? static_cast<size_t>(leader - targets.begin()) : i + 1);
  }
  return s;
}

}  // namespace

SvidClient::SvidClient(SvidClientOptions o) : o_(std::move(o)) {}
SvidClient::~SvidClient() { Stop(); }

bool SvidClient::has_svid() const {
  return std::filesystem::exists(Path(o_.cert_dir, trust::kSvidFile)) &&
         std::filesystem::exists(Path(o_.cert_dir, trust::kSvidKeyFile)) &&
         std::filesystem::exists(Path(o_.cert_dir, trust::kSvidBundleFile));
}

std::shared_ptr<grpc::ChannelCredentials> SvidClient::Credentials() const {
  auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      Path(o_.cert_dir, trust::kSvidKeyFile), Path(o_.cert_dir, trust::kSvidFile),
      Path(o_.cert_dir, trust::kSvidBundleFile),
      static_cast<unsigned>(std::max<int64_t>(1, o_.refresh.count())));
  grpc::experimental::TlsChannelCredentialsOptions opts;
  opts.set_certificate_provider(provider);
  opts.watch_root_certs();
  opts.watch_identity_key_cert_pairs();
  opts.set_verify_server_certs(true);
  return grpc::experimental::TlsCredentials(opts);
}

absl::Status SvidClient::Enroll(const std::function<bool()>& stop) {
  if (has_svid()) return absl::OkStatus();
  if (o_.join_token.empty() || o_.ca_bundle.empty()) {
    return absl::FailedPreconditionError(
        "tls: no certificate in " + o_.cert_dir +
        ": enroll with --join-token TOKEN --ca-bundle FILE (dfwctl enroll create --host ID)");
  }
  std::ifstream f(o_.ca_bundle);
  std::stringstream bundle;
  bundle << f.rdbuf();
  if (!f || bundle.str().empty()) {
    return absl::InvalidArgumentError("ca_bundle: cannot read " + o_.ca_bundle);
  }
  auto kc = trust::GenerateKeyAndCsr("dfw-hostagent");
  if (!kc.ok()) return kc.status();
  grpc::experimental::TlsChannelCredentialsOptions opts;
  opts.set_certificate_provider(
      std::make_shared<grpc::experimental::StaticDataCertificateProvider>(bundle.str()));
  opts.watch_root_certs();
  opts.set_verify_server_certs(true);
  auto creds = grpc::experimental::TlsCredentials(opts);
  milliseconds backoff(500);
  for (;;) {
    v1::EnrollRequest req;
    req.set_token(o_.join_token);
    req.set_csr_pem(kc->csr_pem);
    v1::CertificateResponse resp;
    grpc::Status s = CallControllers(o_.controller_target, &current_, creds,
                                     [&](v1::TrustService::Stub& stub, grpc::ClientContext& ctx) {
                                       return stub.Enroll(&ctx, req, &resp);
                                     });
    if (s.ok()) {
      if (auto w = trust::WriteSvid(o_.cert_dir, {kc->key_pem, resp.cert_pem(), resp.bundle_pem()});
          !w.ok()) {
        return w;
      }
      spdlog::info("tls: enrolled as {} (certificate {}), in {}", resp.spiffe_id(), resp.serial(),
                   o_.cert_dir);
      return absl::OkStatus();
    }
    if (s.error_code() != grpc::StatusCode::UNAVAILABLE &&
        s.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) {
      return FromGrpc(s, "enroll");
    }
    spdlog::warn("tls: enroll: controller {} unreachable ({}); retrying in {} ms",
                 o_.controller_target, s.error_message(), backoff.count());
    for (milliseconds waited(0); waited < backoff; waited += milliseconds(100)) {
      if (stop()) return absl::CancelledError("enroll: stopped");
      std::this_thread::sleep_for(milliseconds(100));
    }
    backoff = std::min(backoff * 2, milliseconds(10000));
  }
}

absl::Status SvidClient::RenewNow() {
  auto kc = trust::GenerateKeyAndCsr("dfw-hostagent");
  if (!kc.ok()) return kc.status();
  v1::RenewRequest req;
  req.set_csr_pem(kc->csr_pem);
  v1::CertificateResponse resp;
  grpc::Status s = CallControllers(o_.controller_target, &current_, Credentials(),
                                   [&](v1::TrustService::Stub& stub, grpc::ClientContext& ctx) {
                                     return stub.Renew(&ctx, req, &resp);
                                   });
  if (!s.ok()) return FromGrpc(s, "renew");
  if (auto w = trust::WriteSvid(o_.cert_dir, {kc->key_pem, resp.cert_pem(), resp.bundle_pem()});
      !w.ok()) {
    return w;
  }
  renewals_++;
  spdlog::info("tls: renewed {} (certificate {}, until {})", resp.spiffe_id(), resp.serial(),
               resp.not_after().seconds());
  return absl::OkStatus();
}

void SvidClient::Start() {
  thread_ = std::thread([this] { RenewLoop(); });
}

void SvidClient::Stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void SvidClient::RenewLoop() {
  for (;;) {
    {
      std::unique_lock<std::mutex> l(mu_);
      if (cv_.wait_for(l, o_.refresh, [this] { return stop_; })) return;
    }
    auto svid = trust::ReadSvid(o_.cert_dir);
    if (!svid.ok()) continue;
    auto nb = trust::NotBefore(svid->cert_pem);
    auto na = trust::NotAfter(svid->cert_pem);
    if (!nb.ok() || !na.ok()) continue;
    if (trust::Clock::now() < *nb + (*na - *nb) / 2) continue;
    if (auto s = RenewNow(); !s.ok()) {
      spdlog::warn("tls: renewal failed: {} (certificate valid until {}; retrying)",
                   std::string(s.message()), trust::Clock::to_time_t(*na));
    }
  }
}

}  // namespace dfw::hostagent
