// ControllerServer: one running controller — the model over a data
// directory, the gRPC server (ControllerService + HostSessionService) and
// the REST API — as the daemon runs it and as tests embed it.
//
// Secure by default: without svid_dir the server refuses to start unless
// `insecure` is set, and insecure refuses any non-loopback address.
//
// High availability (issue 15; etcd_store.h). With etcd endpoints the store
// is etcd and several controllers share it; one leads, elected through an
// etcd lease. Start binds the listen addresses at once, as a standby: every
// gRPC call is answered UNAVAILABLE and every REST request 503, both naming
// the leader (gRPC: the message and the trailing metadata dfw-leader-grpc /
// dfw-leader-http; REST: the body's "leader" and X-Dfw-Leader), so clients
// given several controller addresses go to it. A standby keeps a warm
// model (warm_standby): a thread loads the store and follows it through an
// etcd watch (EtcdStore::Follow, ModelService::ApplyFollowed), so the
// memberships and rulesets are computed as the leader commits. Once elected
// (a thread campaigns), the controller catches its warm model up to the
// revision stored (or, without one in time, loads the store cold), closes
// the standby listeners and serves on the same ports; every write it makes
// is guarded by its leadership in etcd. If the leadership is lost, on_lost_leadership runs
// once (dfw-controller exits: a restarted process stands by again).
//
// Thread safety: Start and Stop from one thread; the services are
// thread-safe. model() and enrollment() are null until leading() (always
// leading without etcd).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "dfw/controller/etcd_store.h"
#include "dfw/controller/model_service.h"
#include "dfw/controller/rest_api.h"

namespace grpc {
class Server;
}

namespace dfw::controller {

class Authorizer;
class ControllerGrpcService;
class Enrollment;
class GrpcRequestMetrics;
class HostSessionService;
class RevocationList;
class StandbyGrpcService;
class TrustGrpcService;
}  // namespace dfw::controller
namespace dfw::trust {
class CertificateAuthority;
}
namespace dfw::controller {

struct ControllerOptions {
  std::string data_dir;
  std::string grpc_listen = "127.0.0.1:0";  // port 0: any free port
  std::string http_listen = "127.0.0.1:0";  // empty: no REST
  // Names a browser or client may use in Host besides loopback and the
  // address a connection arrived on (rest_api.h): the controller's DNS names.
  std::vector<std::string> http_allowed_hosts;
  // GET /metrics with per-host series (--metrics-per-host; cardinality).
  bool metrics_per_host = false;

  // Trust (docs/architecture.md, "Trust"): mutual TLS on gRPC and REST.
  // svid_dir: the controller's own certificate in spiffe-helper's layout
  // (svid.pem, svid_key.pem, svid_bundle.pem), re-read when it changes.
  // ca_dir: the CA that signs certificates at enrollment (ca.pem,
  // ca_key.pem); empty: this controller does not enroll anyone, and the
  // trust domain must be given.
  std::string svid_dir;
  std::string ca_dir;
  std::string trust_domain;  // empty: the CA's
  std::chrono::seconds cert_refresh{30};
  // Plaintext with every caller an admin ("local:insecure"): refused unless
  // both listen addresses are loopback.
  bool insecure = false;
  // The store (store.h, docs/architecture.md "Persistence"): the free-space
  // reserve below which writes are refused (--store-min-free-mb), and
  // whether to start on a damaged store (--accept-store-loss).
  StoreOptions store;

  // High availability: etcd.endpoints non-empty puts the store in etcd
  // (data_dir is then unused) and elects a leader among the controllers.
  EtcdOptions etcd;
  std::string name;            // in the leader key and logs; default: host:grpc port
  std::string advertise_grpc;  // what a standby tells clients; default: the
  std::string advertise_http;  // listen address with the bound port
  std::chrono::seconds lease_ttl{5};
  // A standby follows the store with a model of its own (memory as the
  // leader's); false: it loads the store only once elected (--cold-standby).
  bool warm_standby = true;
  // Runs once when the leadership is lost (from the lease's thread).
  std::function<void(const std::string& why)> on_lost_leadership;
};

// OK when `listen` (host:port) is a loopback address.
absl::Status CheckLoopback(const std::string& listen);

class ControllerServer {
 public:
  ControllerServer();
  ~ControllerServer();

  absl::Status Start(const ControllerOptions& options);
  void Stop();

  int grpc_port() const { return grpc_port_; }
  int http_port() const { return http_port_; }
  // Serving as the leader (a controller without etcd always is).
  bool leading() const { return leading_.load(); }
  // Waits until leading() or `timeout`; leading().
  bool WaitLeading(std::chrono::milliseconds timeout);
  // The leader as last seen while standing by (empty fields: unknown).
  RestApi::Leader leader() const;
  ModelService* model() { return model_.get(); }
  Enrollment* enrollment() { return enrollment_.get(); }

 private:
  absl::Status InitTrust(const ControllerOptions& o);
  // Serves `model` (the leader's part of Start).
  absl::Status Lead(const ControllerOptions& o, std::unique_ptr<ModelService> model);
  absl::Status StartStandby(const ControllerOptions& o);
  void StopStandby();
  void Campaign(ControllerOptions o);
  // The warm standby's thread: opens the store, follows it; again on error.
  void Follow(EtcdOptions etcd);
  // Stops the follower (after waiting for one still loading) once its model
  // reached the revision stored, or after `wait` in all; the model and its
  // store when it did, else null.
  std::unique_ptr<ModelService> TakeWarmModel(std::chrono::milliseconds wait, EtcdStore** store);
  absl::Status StartGrpc(const ControllerOptions& o);
  static RestTlsOptions RestTlsFor(const ControllerOptions& o);
  // Binds o.http_listen and serves `rest` there; sets http_port_.
  absl::Status StartRest(const ControllerOptions& o, RestApi* rest);
  std::unique_ptr<trust::CertificateAuthority> ca_;  // until Lead hands it to Enrollment
  std::string trust_domain_;
#ifdef DFW_WITH_ETCD
  std::unique_ptr<EtcdLeaderElection> election_;
#endif
  std::unique_ptr<StandbyGrpcService> standby_service_;
  std::unique_ptr<grpc::Server> standby_grpc_;
  std::unique_ptr<RestApi> standby_rest_;
  std::thread campaign_;
  std::thread follower_;
  std::mutex warm_mu_;  // the follower's hand-off
  std::condition_variable warm_cv_;
  bool stop_follow_ = false;
  EtcdStore* warm_store_ = nullptr;     // the warm model's (it owns it)
  std::unique_ptr<ModelService> warm_;  // written by the follower only
  std::atomic<uint64_t> followed_revision_{0};
  std::atomic<bool> leading_{false};
  mutable std::mutex leader_mu_;
  std::condition_variable leader_cv_;
  RestApi::Leader leader_;
  std::unique_ptr<ModelService> model_;
  std::unique_ptr<RevocationList> revoked_;
  std::unique_ptr<Authorizer> authz_;
  std::unique_ptr<Enrollment> enrollment_;
  std::unique_ptr<TrustGrpcService> trust_service_;
  std::unique_ptr<ControllerGrpcService> controller_service_;
  std::unique_ptr<HostSessionService> session_service_;
  std::unique_ptr<RestApi> rest_;
  // gRPC calls for GET /metrics; outlives the server it counts for.
  std::unique_ptr<GrpcRequestMetrics> grpc_metrics_;
  std::unique_ptr<grpc::Server> grpc_server_;
  int grpc_port_ = 0;
  int http_port_ = 0;
};

}  // namespace dfw::controller
