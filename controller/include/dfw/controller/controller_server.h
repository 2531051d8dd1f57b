// ControllerServer: one running controller — the model over a data
// directory, the gRPC server (ControllerService + HostSessionService) and
// the REST API — as the daemon runs it and as tests embed it.
//
// Secure by default: without svid_dir the server refuses to start unless
// `insecure` is set, and insecure refuses any non-loopback address.
//
// Thread safety: Start and Stop from one thread; the services are
// thread-safe.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "dfw/controller/model_service.h"

namespace grpc {
class Server;
}

namespace dfw::controller {

class Authorizer;
class ControllerGrpcService;
class Enrollment;
class HostSessionService;
class RestApi;
class RevocationList;
class TrustGrpcService;

struct ControllerOptions {
  std::string data_dir;
  std::string grpc_listen = "127.0.0.1:0";  // port 0: any free port
  std::string http_listen = "127.0.0.1:0";  // empty: no REST
  // Names a browser or client may use in Host besides loopback and the
  // address a connection arrived on (rest_api.h): the controller's DNS names.
  std::vector<std::string> http_allowed_hosts;

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
  ModelService* model() { return model_.get(); }
  Enrollment* enrollment() { return enrollment_.get(); }

 private:
  absl::Status StartGrpc(const ControllerOptions& o);
  std::unique_ptr<ModelService> model_;
  std::unique_ptr<RevocationList> revoked_;
  std::unique_ptr<Authorizer> authz_;
  std::unique_ptr<Enrollment> enrollment_;
  std::unique_ptr<TrustGrpcService> trust_service_;
  std::unique_ptr<ControllerGrpcService> controller_service_;
  std::unique_ptr<HostSessionService> session_service_;
  std::unique_ptr<RestApi> rest_;
  std::unique_ptr<grpc::Server> grpc_server_;
  int grpc_port_ = 0;
  int http_port_ = 0;
};

}  // namespace dfw::controller
