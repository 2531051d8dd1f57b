#include "dfw/controller/controller_server.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <spdlog/spdlog.h>

#include "dfw/controller/authz.h"
#include "dfw/controller/controller_grpc_service.h"
#include "dfw/controller/enrollment.h"
#include "dfw/controller/host_session_service.h"
#include "dfw/controller/rest_api.h"
#include "dfw/controller/trust_grpc_service.h"
#include "dfw/trust/ca.h"
#include "dfw/trust/loopback.h"
#include "dfw/trust/svid.h"
#include "str_util.h"

namespace dfw::controller {

absl::Status CheckLoopback(const std::string& listen) {
  size_t colon = listen.rfind(':');
  if (colon == std::string::npos) {
    return absl::InvalidArgumentError(Cat("listen: '", listen, "' is not host:port"));
  }
  if (trust::IsLoopbackHostPort(listen)) return absl::OkStatus();
  return absl::InvalidArgumentError(
      Cat("listen: '", listen,
          "' is not a loopback address; plaintext (--insecure) is for "
          "loopback only: give the controller a certificate instead"));
}

ControllerServer::ControllerServer() = default;
ControllerServer::~ControllerServer() { Stop(); }

absl::Status ControllerServer::Start(const ControllerOptions& o) {
  if (o.insecure) {
    if (auto s = CheckLoopback(o.grpc_listen); !s.ok()) return s;
    if (!o.http_listen.empty()) {
      if (auto s = CheckLoopback(o.http_listen); !s.ok()) return s;
    }
  } else if (o.svid_dir.empty()) {
    return absl::InvalidArgumentError(
        "tls: no certificate (svid_dir); create one with `dfwctl ca init`, or run plaintext on "
        "loopback with --insecure");
  }
  auto model = ModelService::Open(o.data_dir, o.store);
  if (!model.ok()) return model.status();
  model_ = std::move(*model);

  std::unique_ptr<trust::CertificateAuthority> ca;
  std::string td = o.trust_domain;
  if (!o.ca_dir.empty()) {
    auto loaded = trust::CertificateAuthority::Load(o.ca_dir);
    if (!loaded.ok()) return loaded.status();
    ca = std::move(*loaded);
    if (!td.empty() && td != ca->trust_domain()) {
      return absl::InvalidArgumentError(
          Cat("trust_domain: '", td, "' is not the CA's ('", ca->trust_domain(), "')"));
    }
    td = ca->trust_domain();
  }
  revoked_ = std::make_unique<RevocationList>();
  if (o.insecure) {
    authz_ = std::make_unique<Authorizer>(Authorizer::Insecure());
    spdlog::warn("dfw-controller: INSECURE: plaintext on loopback, every caller is an admin");
  } else {
    if (td.empty()) {
      return absl::InvalidArgumentError("trust_domain: required without a CA (--ca-dir)");
    }
    if (auto s = trust::ReadSvid(o.svid_dir); !s.ok()) return s.status();
    authz_ = std::make_unique<Authorizer>(td, revoked_.get());
  }
  enrollment_ = std::make_unique<Enrollment>(model_.get(), std::move(ca), revoked_.get());
  if (auto s = enrollment_->Load(); !s.ok()) return s;

  if (auto s = StartGrpc(o); !s.ok()) return s;
  if (!o.http_listen.empty()) {
    size_t colon = o.http_listen.rfind(':');
    if (colon == std::string::npos) {
      return absl::InvalidArgumentError(Cat("http_listen: '", o.http_listen, "' is not host:port"));
    }
    RestTlsOptions tls;
    if (!o.insecure) tls.svid_dir = o.svid_dir;
    tls.refresh = o.cert_refresh;
    rest_ = std::make_unique<RestApi>(model_.get(), enrollment_.get(), authz_.get(), tls);
    rest_->SetAllowedHosts(o.http_allowed_hosts);
    auto port = rest_->Start(o.http_listen.substr(0, colon),
                             std::atoi(o.http_listen.substr(colon + 1).c_str()));
    if (!port.ok()) return port.status();
    http_port_ = *port;
  }
  return absl::OkStatus();
}

absl::Status ControllerServer::StartGrpc(const ControllerOptions& o) {
  controller_service_ = std::make_unique<ControllerGrpcService>(model_.get(), authz_.get());
  session_service_ = std::make_unique<HostSessionService>(model_.get(), authz_.get());
  trust_service_ = std::make_unique<TrustGrpcService>(enrollment_.get(), authz_.get());

  std::shared_ptr<grpc::ServerCredentials> creds;
  if (o.insecure) {
    creds = grpc::InsecureServerCredentials();
  } else {
    // The SVID files are watched: a renewed certificate is served without a
    // restart. A client certificate is requested and verified when sent;
    // only Enroll accepts a caller without one (authz.h).
    auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
        o.svid_dir + "/" + trust::kSvidKeyFile, o.svid_dir + "/" + trust::kSvidFile,
        o.svid_dir + "/" + trust::kSvidBundleFile,
        static_cast<unsigned>(std::max<int64_t>(1, o.cert_refresh.count())));
    grpc::experimental::TlsServerCredentialsOptions topts(provider);
    topts.watch_root_certs();
    topts.watch_identity_key_cert_pairs();
    topts.set_cert_request_type(GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY);
    creds = grpc::experimental::TlsServerCredentials(topts);
  }
  grpc::ServerBuilder b;
  b.AddListeningPort(o.grpc_listen, creds, &grpc_port_);
  b.RegisterService(controller_service_.get());
  b.RegisterService(session_service_.get());
  b.RegisterService(trust_service_.get());
  b.SetMaxSendMessageSize(-1);
  b.SetMaxReceiveMessageSize(256 << 20);
  grpc_server_ = b.BuildAndStart();
  if (!grpc_server_ || grpc_port_ == 0) {
    return absl::UnavailableError(Cat("grpc: cannot listen on ", o.grpc_listen));
  }
  return absl::OkStatus();
}

void ControllerServer::Stop() {
  if (rest_) rest_->Stop();
  if (grpc_server_) {
    grpc_server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    grpc_server_.reset();
  }
  rest_.reset();
  trust_service_.reset();
  session_service_.reset();
  controller_service_.reset();
  enrollment_.reset();
  authz_.reset();
  revoked_.reset();
  model_.reset();
}

}  // namespace dfw::controller
