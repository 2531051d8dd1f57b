#include "dfw/controller/controller_server.h"

#include <grpcpp/generic/async_generic_service.h>
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
#include "dfw/v1/trust.grpc.pb.h"
#include "grpc_metrics.h"
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

namespace {

std::shared_ptr<grpc::ServerCredentials> ServerCredentials(const ControllerOptions& o) {
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
  return creds;
}

}  // namespace

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
  if (auto s = InitTrust(o); !s.ok()) return s;
  if (o.etcd.endpoints.empty()) {
    auto model = ModelService::Open(o.data_dir, o.store);
    if (!model.ok()) return model.status();
    if (auto s = Lead(o, std::move(*model)); !s.ok()) return s;
    leading_ = true;
    return absl::OkStatus();
  }
#ifndef DFW_WITH_ETCD
  return absl::InvalidArgumentError(
      "etcd: this controller was built without the etcd store (-DDFW_WITH_ETCD=OFF)");
#else
  if (auto s = StartStandby(o); !s.ok()) return s;
  ControllerOptions lead = o;
  auto host_of = [](const std::string& listen) { return listen.substr(0, listen.rfind(':')); };
  lead.grpc_listen = Cat(host_of(o.grpc_listen), ":", grpc_port_);
  if (!o.http_listen.empty()) lead.http_listen = Cat(host_of(o.http_listen), ":", http_port_);
  if (lead.advertise_grpc.empty()) lead.advertise_grpc = lead.grpc_listen;
  if (lead.advertise_http.empty()) lead.advertise_http = lead.http_listen;
  if (lead.name.empty()) lead.name = lead.advertise_grpc;
  election_ = std::make_unique<EtcdLeaderElection>(
      o.etcd, EtcdLeaderElection::LeaderInfo{lead.name, lead.advertise_grpc, lead.advertise_http},
      o.lease_ttl);
  if (o.warm_standby) follower_ = std::thread([this, etcd = o.etcd] { Follow(etcd); });
  campaign_ = std::thread([this, lead] { Campaign(lead); });
  return absl::OkStatus();
#endif
}

absl::Status ControllerServer::InitTrust(const ControllerOptions& o) {
  std::string td = o.trust_domain;
  if (!o.ca_dir.empty()) {
    auto loaded = trust::CertificateAuthority::Load(o.ca_dir);
    if (!loaded.ok()) return loaded.status();
    ca_ = std::move(*loaded);
    if (!td.empty() && td != ca_->trust_domain()) {
      return absl::InvalidArgumentError(
          Cat("trust_domain: '", td, "' is not the CA's ('", ca_->trust_domain(), "')"));
    }
    td = ca_->trust_domain();
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
  trust_domain_ = td;
  return absl::OkStatus();
}

absl::Status ControllerServer::Lead(const ControllerOptions& o,
                                    std::unique_ptr<ModelService> model) {
  model_ = std::move(model);
  enrollment_ = std::make_unique<Enrollment>(model_.get(), std::move(ca_), revoked_.get());
  if (auto s = enrollment_->Load(); !s.ok()) return s;

  if (auto s = StartGrpc(o); !s.ok()) return s;
  if (!o.http_listen.empty()) {
    rest_ = std::make_unique<RestApi>(model_.get(), enrollment_.get(), authz_.get(), RestTlsFor(o));
    rest_->SetGrpcMetrics(grpc_metrics_.get());
    if (auto s = StartRest(o, rest_.get()); !s.ok()) return s;
  }
  return absl::OkStatus();
}

RestTlsOptions ControllerServer::RestTlsFor(const ControllerOptions& o) {
  RestTlsOptions tls;
  if (!o.insecure) tls.svid_dir = o.svid_dir;
  tls.refresh = o.cert_refresh;
  return tls;
}

absl::Status ControllerServer::StartRest(const ControllerOptions& o, RestApi* rest) {
  size_t colon = o.http_listen.rfind(':');
  if (colon == std::string::npos) {
    return absl::InvalidArgumentError(Cat("http_listen: '", o.http_listen, "' is not host:port"));
  }
  rest->SetAllowedHosts(o.http_allowed_hosts);
  rest->SetMetricsPerHost(o.metrics_per_host);
  auto port = rest->Start(o.http_listen.substr(0, colon),
                          std::atoi(o.http_listen.substr(colon + 1).c_str()));
  if (!port.ok()) return port.status();
  http_port_ = *port;
  return absl::OkStatus();
}

bool ControllerServer::WaitLeading(std::chrono::milliseconds timeout) {
  std::unique_lock l(leader_mu_);
  leader_cv_.wait_for(l, timeout, [&] { return leading_.load(); });
  return leading_.load();
}

RestApi::Leader ControllerServer::leader() const {
  std::lock_guard l(leader_mu_);
  return leader_;
}

#ifdef DFW_WITH_ETCD
// A standby's gRPC: every method of every service answers UNAVAILABLE with
// where the leader is, to any caller over the same TLS as the leader's (a
// host enrolling has no certificate yet; the leader's address is no
// secret from one who can reach this port).
class StandbyGrpcService : public grpc::CallbackGenericService {
 public:
  explicit StandbyGrpcService(std::function<RestApi::Leader()> leader)
      : leader_(std::move(leader)) {}
  grpc::ServerGenericBidiReactor* CreateReactor(grpc::GenericCallbackServerContext* ctx) override {
    class Reactor : public grpc::ServerGenericBidiReactor {
     public:
      explicit Reactor(const grpc::Status& s) { Finish(s); }
      void OnDone() override { delete this; }
    };
    RestApi::Leader l = leader_();
    if (l.grpc.empty()) {
      return new Reactor(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                      "controller: this controller is a standby and no leader is "
                                      "known yet; retry shortly"));
    }
    ctx->AddTrailingMetadata("dfw-leader-grpc", l.grpc);
    ctx->AddTrailingMetadata("dfw-leader-http", l.http);
    return new Reactor(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                    Cat("controller: this controller is a standby; the leader is ",
                                        l.name, " at grpc ", l.grpc, ", http ", l.http)));
  }

 private:
  std::function<RestApi::Leader()> leader_;
};
#else
class StandbyGrpcService {};
#endif

absl::Status ControllerServer::StartStandby(const ControllerOptions& o) {
#ifdef DFW_WITH_ETCD
  auto leader = [this] { return this->leader(); };
  standby_service_ = std::make_unique<StandbyGrpcService>(leader);
  grpc::ServerBuilder b;
  b.AddListeningPort(o.grpc_listen, ServerCredentials(o), &grpc_port_);
  b.RegisterCallbackGenericService(standby_service_.get());
  standby_grpc_ = b.BuildAndStart();
  if (!standby_grpc_ || grpc_port_ == 0) {
    return absl::UnavailableError(Cat("grpc: cannot listen on ", o.grpc_listen));
  }
  if (!o.http_listen.empty()) {
    standby_rest_ = std::make_unique<RestApi>(authz_.get(), RestTlsFor(o), leader);
    if (auto s = StartRest(o, standby_rest_.get()); !s.ok()) return s;
  }
  return absl::OkStatus();
#else
  (void)o;
  return absl::UnimplementedError("etcd: built without the etcd store");
#endif
}

void ControllerServer::StopStandby() {
  if (standby_rest_) standby_rest_->Stop();
  if (standby_grpc_) {
    standby_grpc_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
    standby_grpc_.reset();
  }
  standby_rest_.reset();
  standby_service_.reset();
}

void ControllerServer::Campaign(ControllerOptions o) {
#ifdef DFW_WITH_ETCD
  auto lost = [this, on_lost = o.on_lost_leadership](const std::string& why) {
    leading_ = false;
    if (on_lost) on_lost(why);
  };
  absl::Status s = election_->Campaign(
      [this](const EtcdLeaderElection::LeaderInfo& l) {
        std::lock_guard g(leader_mu_);
        leader_ = {l.name, l.grpc, l.http};
      },
      lost);
  if (!s.ok()) return;  // stopped
  auto t0 = std::chrono::steady_clock::now();
  EtcdStore* store = nullptr;
  std::unique_ptr<ModelService> model = TakeWarmModel(std::chrono::seconds(10), &store);
  const bool warm = model != nullptr;
  if (!warm) {
    auto opened = EtcdStore::Open(o.etcd);
    if (opened.ok()) {
      store = opened->get();
      auto loaded = ModelService::Open(std::move(*opened));
      if (loaded.ok()) model = std::move(*loaded);
      s = loaded.status();
    } else {
      s = opened.status();
    }
  }
  if (model) {
    // Guarded before any write: a deposed leader's late write was refused by
    // etcd, so what was followed or loaded is all there is.
    store->SetLeaderGuard(election_->key(), election_->create_revision());
    if (warm) model->PrepareToLead();
    StopStandby();
    s = Lead(o, std::move(model));
  }
  if (!s.ok()) {
    spdlog::error("dfw-controller: elected but cannot serve: {}", std::string(s.message()));
    lost(Cat("elected but cannot serve: ", s.message()));
    return;
  }
  {
    std::lock_guard g(leader_mu_);
    leader_ = {o.name, o.advertise_grpc, o.advertise_http};
    leading_ = true;
  }
  leader_cv_.notify_all();
  spdlog::info(
      "dfw-controller: {} leads at revision {} (took over in {} ms: {})", o.name,
      model_->revision(),
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
          .count(),
      warm ? "warm model followed to the revision stored" : "store loaded, rulesets compiled");
#else
  (void)o;
#endif
}

void ControllerServer::Follow(EtcdOptions etcd) {
#ifdef DFW_WITH_ETCD
  auto stopping = [this] {
    std::lock_guard l(warm_mu_);
    return stop_follow_;
  };
  while (!stopping()) {
    auto opened = EtcdStore::Open(etcd);
    absl::Status s = opened.status();
    std::unique_ptr<ModelService> model;
    EtcdStore* store = nullptr;
    if (opened.ok()) {
      store = opened->get();
      auto loaded = ModelService::Open(std::move(*opened));
      s = loaded.status();
      if (loaded.ok()) model = std::move(*loaded);
    }
    if (!model) {
      spdlog::warn("dfw-controller: standby: cannot load the store ({}); again in 1 s",
                   std::string(s.message()));
      std::unique_lock l(warm_mu_);
      warm_cv_.wait_for(l, std::chrono::seconds(1), [&] { return stop_follow_; });
      continue;
    }
    ModelService* m = model.get();
    {
      std::lock_guard l(warm_mu_);
      if (stop_follow_) return;
      warm_ = std::move(model);
      warm_store_ = store;
      followed_revision_ = m->revision();
    }
    warm_cv_.notify_all();
    spdlog::info("dfw-controller: standby: warm model at revision {}, following the store",
                 m->revision());
    absl::Status broken;
    s = store->Follow(m->opened_backend_revision(), [&](StoredChange c) {
      if (c.revision <= m->revision()) return true;  // in the snapshot already
      broken = m->ApplyFollowed(c);
      if (!broken.ok()) return false;
      {
        std::lock_guard l(warm_mu_);
        followed_revision_ = c.revision;
      }
      warm_cv_.notify_all();
      return true;
    });
    if (broken.ok() && s.ok() && stopping()) return;  // the model is handed over
    spdlog::warn("dfw-controller: standby: stopped following the store ({}); loading it again",
                 std::string((broken.ok() ? s : broken).message()));
    std::lock_guard l(warm_mu_);
    warm_.reset();
    warm_store_ = nullptr;
    followed_revision_ = 0;
  }
#else
  (void)etcd;
#endif
}

std::unique_ptr<ModelService> ControllerServer::TakeWarmModel(std::chrono::milliseconds wait,
                                                              EtcdStore** store) {
  if (!follower_.joinable()) return nullptr;
  std::unique_lock l(warm_mu_);
  const auto until = std::chrono::steady_clock::now() + wait;
  // A follower still loading (a controller elected as it starts) is waited
  // for: its load is the one a cold takeover would make.
  warm_cv_.wait_until(l, until, [&] { return warm_store_ != nullptr; });
  absl::StatusOr<uint64_t> target = absl::UnavailableError("no warm model");
  if (warm_store_ != nullptr) target = warm_store_->Revision();
  if (target.ok()) {
    warm_cv_.wait_until(l, until, [&] { return followed_revision_.load() >= *target; });
  }
  stop_follow_ = true;
  if (warm_store_ != nullptr) warm_store_->StopFollowing();
  l.unlock();
  warm_cv_.notify_all();
  follower_.join();  // the follower returns at once, or after the load it is in
  if (!target.ok() || !warm_ || warm_->revision() != *target) {
    spdlog::warn("dfw-controller: the warm model is not at the revision stored ({}); loading cold",
                 target.ok() ? Cat(warm_ ? warm_->revision() : 0, " vs ", *target)
                             : std::string(target.status().message()));
    warm_.reset();
    return nullptr;
  }
  *store = warm_store_;
  return std::move(warm_);
}

absl::Status ControllerServer::StartGrpc(const ControllerOptions& o) {
  controller_service_ = std::make_unique<ControllerGrpcService>(model_.get(), authz_.get());
  session_service_ = std::make_unique<HostSessionService>(model_.get(), authz_.get());
  trust_service_ = std::make_unique<TrustGrpcService>(enrollment_.get(), authz_.get());

  std::vector<const google::protobuf::ServiceDescriptor*> services;
  for (const char* name : {dfw::v1::ControllerService::service_full_name(),
                           dfw::v1::HostSessionService::service_full_name(),
                           dfw::v1::TrustService::service_full_name()}) {
    services.push_back(google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(name));
  }
  grpc_metrics_ = std::make_unique<GrpcRequestMetrics>(services);
  grpc::ServerBuilder b;
  b.AddListeningPort(o.grpc_listen, ServerCredentials(o), &grpc_port_);
  {
    std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> ic;
    ic.push_back(grpc_metrics_->InterceptorFactory());
    b.experimental().SetInterceptorCreators(std::move(ic));
  }
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
#ifdef DFW_WITH_ETCD
  if (election_) election_->Stop();  // wakes a campaign; a leader's lease is revoked
#endif
  if (campaign_.joinable()) campaign_.join();
  {
    std::lock_guard l(warm_mu_);
    stop_follow_ = true;
    if (warm_store_ != nullptr) warm_store_->StopFollowing();
  }
  warm_cv_.notify_all();
  if (follower_.joinable()) follower_.join();
  warm_.reset();
  StopStandby();
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
#ifdef DFW_WITH_ETCD
  election_.reset();
#endif
  leading_ = false;
}

}  // namespace dfw::controller
