// RestApi: the REST (JSON) face of ModelService under /api/v1/, on
// cpp-httplib. Bodies and responses are the proto messages of
// controller.proto / model.proto in protobuf's canonical JSON mapping
// (JsonStringToMessage / MessageToJsonString, field names as in the .proto),
// so REST and gRPC share one model and cannot drift.
//
//   GET    /api/v1/vms                    list (?page_size=&page_token=)
//   POST   /api/v1/vms                    create (409 if it exists)
//   GET|PUT|DELETE /api/v1/vms/{id}       read / create-or-replace / delete
//   POST   /api/v1/vms/{id}/tags          {"set":[..],"remove":[..]} on one VM
//   POST   /api/v1/tags                   TagRequest: tags on many VMs at once
//   GET    /api/v1/vms/{id}/groups        which groups, and by which criterion
//   GET    /api/v1/vms/{id}/effective-rules, /api/v1/vnics/{id}/effective-rules
//   same CRUD for /api/v1/groups and /api/v1/policies;
//   GET    /api/v1/groups/{id}/members
//   GET    /api/v1/hosts, /api/v1/realization[?policy_id=], /api/v1/status
//   GET    /api/v1/changes?from_revision=N[&wait_ms=M]   the change log
//
// Every object response carries ETag: "<revision>"; writes take If-Match
// (or ?expected_revision=) for optimistic concurrency. Errors:
//   {"error":{"code":"INVALID_ARGUMENT","http_status":400,
//             "field":"rules[2].action","message":"rules[2].action: must be ..."}}
// with 400 / 404 / 409 / 500 mapped from the status code.
//
// Thread safety: httplib serves requests on a thread pool; ModelService is
// thread-safe.
#pragma once

#include <memory>
#include <string>
#include <thread>

#include "dfw/controller/model_service.h"

namespace httplib {
class Server;
}

namespace dfw::controller {

class RestApi {
 public:
  explicit RestApi(ModelService* model);
  ~RestApi();

  // Binds host:port (port 0 = any free port) and serves on a background
  // thread. Returns the bound port.
  absl::StatusOr<int> Start(const std::string& host, int port);
  void Stop();

 private:
  void Routes();
  ModelService* model_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
};

// HTTP status for an absl status code.
int HttpStatusFor(absl::StatusCode code);

}  // namespace dfw::controller
