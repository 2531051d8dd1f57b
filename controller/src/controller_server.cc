#include "dfw/controller/controller_server.h"

#include <grpcpp/grpcpp.h>

#include "dfw/controller/controller_grpc_service.h"
#include "dfw/controller/host_session_service.h"
#include "dfw/controller/rest_api.h"
#include "str_util.h"

namespace dfw::controller {

ControllerServer::ControllerServer() = default;
ControllerServer::~ControllerServer() { Stop(); }

absl::Status ControllerServer::Start(const ControllerOptions& o) {
  auto model = ModelService::Open(o.data_dir);
  if (!model.ok()) return model.status();
  model_ = std::move(*model);
  controller_service_ = std::make_unique<ControllerGrpcService>(model_.get());
  session_service_ = std::make_unique<HostSessionService>(model_.get());

  grpc::ServerBuilder b;
  b.AddListeningPort(o.grpc_listen, grpc::InsecureServerCredentials(), &grpc_port_);
  b.RegisterService(controller_service_.get());
  b.RegisterService(session_service_.get());
  b.SetMaxSendMessageSize(-1);
  b.SetMaxReceiveMessageSize(256 << 20);
  grpc_server_ = b.BuildAndStart();
  if (!grpc_server_ || grpc_port_ == 0) {
    return absl::UnavailableError(Cat("grpc: cannot listen on ", o.grpc_listen));
  }
  if (!o.http_listen.empty()) {
    size_t colon = o.http_listen.rfind(':');
    if (colon == std::string::npos) {
      return absl::InvalidArgumentError(Cat("http_listen: '", o.http_listen, "' is not host:port"));
    }
    rest_ = std::make_unique<RestApi>(model_.get());
    auto port = rest_->Start(o.http_listen.substr(0, colon),
                             std::atoi(o.http_listen.substr(colon + 1).c_str()));
    if (!port.ok()) return port.status();
    http_port_ = *port;
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
  session_service_.reset();
  controller_service_.reset();
  model_.reset();
}

}  // namespace dfw::controller
