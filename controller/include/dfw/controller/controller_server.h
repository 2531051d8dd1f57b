// ControllerServer: one running controller — the model over a data
// directory, the gRPC server (ControllerService + HostSessionService) and
// the REST API — as the daemon runs it and as tests embed it.
//
// Thread safety: Start and Stop from one thread; the services are
// thread-safe.
#pragma once

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "dfw/controller/model_service.h"

namespace grpc {
class Server;
}

namespace dfw::controller {

class ControllerGrpcService;
class HostSessionService;
class RestApi;

struct ControllerOptions {
  std::string data_dir;
  std::string grpc_listen = "127.0.0.1:0";  // port 0: any free port
  std::string http_listen = "127.0.0.1:0";  // empty: no REST
};

class ControllerServer {
 public:
  ControllerServer();
  ~ControllerServer();

  absl::Status Start(const ControllerOptions& options);
  void Stop();

  int grpc_port() const { return grpc_port_; }
  int http_port() const { return http_port_; }
  ModelService* model() { return model_.get(); }

 private:
  std::unique_ptr<ModelService> model_;
  std::unique_ptr<ControllerGrpcService> controller_service_;
  std::unique_ptr<HostSessionService> session_service_;
  std::unique_ptr<RestApi> rest_;
  std::unique_ptr<grpc::Server> grpc_server_;
  int grpc_port_ = 0;
  int http_port_ = 0;
};

}  // namespace dfw::controller
