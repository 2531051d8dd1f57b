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
//   GET    /api/v1/trace?from_vm_id=&to_vm_id=&protocol=[&destination_port=&source_port=
//          &icmp_type=&icmp_code=&from_ip=&to_ip=]   which rule decides a connection
//   POST   /api/v1/probes                 ProbeFlowRequest: the trace, and what packets met
//                                          at the dataplanes (live trace; inject: a probe)
//   same CRUD for /api/v1/groups and /api/v1/policies;
//   GET    /api/v1/groups/{id}/members
//   GET    /api/v1/hosts, /api/v1/realization[?policy_id=], /api/v1/status
//   GET    /api/v1/changes?from_revision=N[&wait_ms=M]   the change log
//   GET    /metrics                       Prometheus text format 0.0.4 (read:
//                                          viewer and up; docs/architecture.md, "Metrics")
//
// Every object response carries ETag: "<revision>"; writes take If-Match
// (or ?expected_revision=) for optimistic concurrency. Errors:
//   {"error":{"code":"INVALID_ARGUMENT","http_status":400,
//             "field":"rules[2].action","message":"rules[2].action: must be ..."}}
// with 400 / 404 / 409 / 500 mapped from the status code. A handler that
// throws answers a generic 500 INTERNAL error (the exception's text goes to
// the log, never to the client).
//
// Ids in bodies and paths follow one rule (tagging::ValidateId): 1..128
// characters of [A-Za-z0-9._:-], not "." or "..". Numbers in headers and
// query parameters (If-Match, expected_revision, from_revision, wait_ms,
// page_size) are decimal and must fit their type: 400 naming the field.
//
// Browser safety. The API is for operators' tools, never for web pages:
// there is no CORS support at all (no Access-Control-* headers, no OPTIONS
// preflight). CheckRequest, run before routing on every request:
//   - Host must name a loopback address or "localhost", the address the
//     connection arrived on, or an entry of SetAllowedHosts; else 421
//     (a DNS-rebinding page cannot talk to the API);
//   - an Origin header must be the same origin as Host (scheme://host:port),
//     else 403, for every method (a cross-site page cannot drive the API);
//   - a request with a body (POST/PUT/PATCH/DELETE) must say
//     Content-Type: application/json, else 415 (a cross-site form cannot
//     send one without a preflight, which is refused);
//   - a body above kMaxRequestBodyBytes: 413.
//
// Limits: kMaxRequestBodyBytes here; object sizes in model_service.h and
// policy_validator.h. Connections: kRestWorkers threads serve connections
// (a connection holds one while it is being read, so a slow client holds
// one; see kRestReadTimeoutSeconds); the listen backlog is raised to
// kListenBacklog when the server starts listening (httplib's is 5).
//
// Trust: HTTPS with a client certificate (RestTlsOptions: the controller's
// SVID dir; clients are verified against its bundle); every route is
// authorized (authz.h, PermissionForRest) before its handler runs and runs
// with the caller as the actor. Trust routes (trust.proto in JSON):
//   POST /api/v1/enroll                   {"token":..,"csr_pem":..} (no certificate needed)
//   POST /api/v1/renew                    {"csr_pem":..}            (the caller's own identity)
//   POST /api/v1/join-tokens              CreateJoinTokenRequest     (admin)
//   GET  /api/v1/certificates[?include_expired=true]                 (admin)
//   POST /api/v1/certificates/{serial}/revoke                        (admin)
// Without TLS (an empty svid_dir: the explicit loopback-only --insecure
// mode) every caller is "local:insecure" with every permission.
//
// Thread safety: httplib serves requests on a thread pool; ModelService,
// Enrollment and Authorizer are thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "dfw/controller/authz.h"
#include "dfw/controller/model_service.h"

namespace dfw::trust {
class ServerTls;
}  // namespace dfw::trust

namespace httplib {
class Server;
struct Request;
}  // namespace httplib

namespace dfw::controller {

inline constexpr size_t kMaxRequestBodyBytes = 4u << 20;  // 4 MiB
inline constexpr int kListenBacklog = 4096;               // capped by net.core.somaxconn
inline constexpr size_t kRestWorkers = 64;                // connections served at once
inline constexpr int kRestReadTimeoutSeconds = 5;         // per read; also keep-alive idle

class Enrollment;
class GrpcRequestMetrics;

struct RestTlsOptions {
  std::string svid_dir;              // empty: plaintext (insecure mode)
  std::chrono::seconds refresh{30};  // how often the SVID files are looked at
};

class RestApi {
 public:
  // `enrollment` may be null (no trust routes: they answer 404).
  RestApi(ModelService* model, Enrollment* enrollment, const Authorizer* authz,
          const RestTlsOptions& tls);
  // A standby controller's REST (high availability, etcd_store.h): the same
  // TLS and request guards, and every request answered 503 UNAVAILABLE
  // with where the leader is: the error names it, the body's "leader"
  // object holds {name, grpc, http} and the header X-Dfw-Leader its HTTP
  // address, so a client retries there. `leader` is called per request
  // (empty fields: no leader known yet).
  struct Leader {
    std::string name, grpc, http;
  };
  RestApi(const Authorizer* authz, const RestTlsOptions& tls, std::function<Leader()> leader);
  ~RestApi();

  // Binds host:port (port 0 = any free port) and serves on a background
  // thread. Returns the bound port.
  absl::StatusOr<int> Start(const std::string& host, int port);
  void Stop();

  // Host names or addresses (case-insensitive, without port) a request's
  // Host header may name besides loopback, "localhost" and the address the
  // connection arrived on. Call before Start.
  void SetAllowedHosts(std::vector<std::string> hosts);
  // GET /metrics adds one series per host per per-host family (off by
  // default: its cardinality grows with the fleet). Call before Start.
  void SetMetricsPerHost(bool on) { metrics_per_host_ = on; }
  // GET /metrics adds the gRPC listener's calls (before Start; may stay
  // unset: no gRPC families).
  void SetGrpcMetrics(const GrpcRequestMetrics* m) { grpc_metrics_ = m; }

 private:
  // Installs the request guards on `s`: CheckRequest before routing, the
  // generic exception handler, the body limit, kRestWorkers workers with
  // read timeouts, and the listen backlog raise (RaiseListenBacklog, run by
  // the task queue factory, which httplib calls once bound, before the
  // first accept). Call once, before Start and after any other
  // new_task_queue / set_socket_options assignment (it replaces both).
  void InstallRequestGuards(httplib::Server& s);
  // listen() again on the bound socket with kListenBacklog. The socket is
  // the one recorded by InstallRequestGuards' socket options.
  void RaiseListenBacklog();
  std::atomic<int> listen_fd_{-1};
  mutable std::mutex hosts_mu_;
  std::vector<std::string> allowed_hosts_;

  class Guarded;
  // Requests by method, route template and status class, with latency
  // (the .cc): counted when each response is final, before it is written.
  class RequestMetrics;
  std::unique_ptr<RequestMetrics> requests_;
  bool metrics_per_host_ = false;
  const GrpcRequestMetrics* grpc_metrics_ = nullptr;
  std::string RenderMetrics() const;
  void Routes();
  void StandbyRoutes(std::function<Leader()> leader);
  void TrustRoutes(Guarded& s);
  void SetUpServer(const RestTlsOptions& tls);
  ModelService* model_;
  Enrollment* enrollment_;
  const Authorizer* authz_;
  std::unique_ptr<trust::ServerTls> tls_;  // before server_: the server's TLS context calls it
  absl::Status tls_status_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
};

// HTTP status for an absl status code.
int HttpStatusFor(absl::StatusCode code);

// The browser-safety and size checks above, for one request (headers
// only; run before the body is read). OK, or an error whose message names
// the header ("Host: ...") and whose HTTP status HttpStatusOf gives.
absl::Status CheckRequest(const httplib::Request& req,
                          const std::vector<std::string>& allowed_hosts);
// HTTP status of an error: the one CheckRequest attached, else
// HttpStatusFor(code).
int HttpStatusOf(const absl::Status& s);

}  // namespace dfw::controller
