#include "dfw/controller/rest_api.h"

#include <arpa/inet.h>
#include <httplib.h>
#include <sys/socket.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <deque>
#include <nlohmann/json.hpp>
#include <optional>
#include <tuple>

#include "absl/strings/ascii.h"
#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "dfw/base/metrics.h"
#include "dfw/controller/enrollment.h"
#include "dfw/trust/loopback.h"
#include "dfw/trust/server_tls.h"
#include "google/protobuf/util/json_util.h"
#include "grpc_metrics.h"
#include "str_util.h"

namespace dfw::controller {

using google::protobuf::Message;
using httplib::Request;
using httplib::Response;

int HttpStatusFor(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      return 400;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kAborted:
      return 409;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kUnavailable:
      return 503;
    default:
      return 500;
  }
}

namespace {

// `all_fields`: false, zero and empty fields too (an answer whose "no" is
// the point, like a trace's "allowed": false).
std::string ToJson(const Message& m, bool all_fields = false) {
  std::string out;
  google::protobuf::util::JsonPrintOptions o;
  o.preserve_proto_field_names = true;
  o.always_print_primitive_fields = all_fields;
  (void)google::protobuf::util::MessageToJsonString(m, &out, o);
  return out;
}

void SendError(Response& res, const absl::Status& s) {
  std::string msg(s.message());
  std::string field;
  size_t colon = msg.find(": ");
  if (colon != std::string::npos && msg.substr(0, colon).find(' ') == std::string::npos) {
    field = msg.substr(0, colon);
  }
  nlohmann::json j;
  j["error"] = {{"code", absl::StatusCodeToString(s.code())},
                {"http_status", HttpStatusOf(s)},
                {"field", field},
                {"message", msg}};
  res.status = HttpStatusOf(s);
  // A message may quote input that is not UTF-8: replace, never throw.
  res.set_content(j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace),
                  "application/json");
}

void SendMessage(Response& res, const Message& m, int status = 200, uint64_t etag = 0) {
  res.status = status;
  if (etag != 0) res.set_header("ETag", Cat("\"", etag, "\""));
  res.set_content(ToJson(m), "application/json");
}

template <typename T>
void Send(Response& res, const absl::StatusOr<T>& r, int status = 200) {
  if (!r.ok()) {
    SendError(res, r.status());
    return;
  }
  uint64_t etag = 0;
  if constexpr (requires(const T& t) { t.revision(); }) etag = r->revision();
  SendMessage(res, *r, status, etag);
}

absl::Status ParseBody(const Request& req, Message* m) {
  if (req.body.empty()) return absl::InvalidArgumentError("body: empty; send a JSON object");
  google::protobuf::util::JsonParseOptions o;
  o.ignore_unknown_fields = false;
  auto s = google::protobuf::util::JsonStringToMessage(req.body, m, o);
  if (!s.ok()) return absl::InvalidArgumentError(Cat("body: ", std::string(s.message())));
  return absl::OkStatus();
}

// A decimal number of at most `max`; anything else (a sign, spaces, an
// overflow) is INVALID_ARGUMENT naming the field.
absl::StatusOr<uint64_t> ParseUint(const std::string& text, const char* field,
                                   uint64_t max = UINT64_MAX) {
  if (text.empty()) return absl::InvalidArgumentError(Cat(field, ": empty"));
  std::string shown = text.size() > 40 ? text.substr(0, 40) + "..." : text;
  for (char c : text) {
    if (c < '0' || c > '9') {
      return absl::InvalidArgumentError(Cat(field, ": '", shown, "' is not a number"));
    }
  }
  uint64_t v = 0;
  if (!absl::SimpleAtoi(text, &v) || v > max) {
    return absl::InvalidArgumentError(Cat(field, ": '", shown, "' is above ", max));
  }
  return v;
}

// If-Match: "5" (or W/"5"), or ?expected_revision=5.
absl::StatusOr<uint64_t> ExpectedRevision(const Request& req) {
  if (req.has_param("expected_revision")) {
    return ParseUint(req.get_param_value("expected_revision"), "expected_revision");
  }
  if (req.has_header("If-Match")) {
    std::string v = req.get_header_value("If-Match");
    if (v.rfind("W/", 0) == 0) v = v.substr(2);
    if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
    return ParseUint(v, "If-Match");
  }
  return 0;
}

// ?dry_run=true on a policy write: the impact preview instead of the change
// (a PreviewPolicyRequest with ?rules_per_vnic_budget=N); nullopt when the
// request is no dry run.
absl::StatusOr<std::optional<dfw::v1::PreviewPolicyRequest>> DryRun(const Request& req) {
  if (!req.has_param("dry_run")) return std::nullopt;
  const std::string v = req.get_param_value("dry_run");
  if (v == "false" || v == "0") return std::nullopt;
  if (v != "true" && v != "1") {
    return absl::InvalidArgumentError(
        Cat("dry_run: '", v.substr(0, 40), "' is not true, false, 1 or 0"));
  }
  dfw::v1::PreviewPolicyRequest pr;
  if (req.has_param("rules_per_vnic_budget")) {
    auto b = ParseUint(req.get_param_value("rules_per_vnic_budget"), "rules_per_vnic_budget",
                       UINT32_MAX);
    if (!b.ok()) return b.status();
    pr.set_rules_per_vnic_budget(static_cast<uint32_t>(*b));
  }
  return pr;
}

absl::StatusOr<dfw::v1::ListRequest> ListParams(const Request& req) {
  dfw::v1::ListRequest l;
  if (req.has_param("page_size")) {
    auto n = ParseUint(req.get_param_value("page_size"), "page_size", UINT32_MAX);
    if (!n.ok()) return n.status();
    l.set_page_size(static_cast<uint32_t>(*n));
  }
  if (req.has_param("page_token")) l.set_page_token(req.get_param_value("page_token"));
  return l;
}

// The id in the path wins; a body id that disagrees is an error.
absl::Status PathId(std::string* body_id, const std::string& path_id) {
  if (body_id->empty()) {
    *body_id = path_id;
  } else if (*body_id != path_id) {
    return absl::InvalidArgumentError(
        Cat("id: '", *body_id, "' does not match the path's '", path_id, "'"));
  }
  return absl::OkStatus();
}

constexpr char kHttpStatusPayload[] = "dfw.http_status";

absl::Status WithHttpStatus(absl::Status s, int http_status) {
  s.SetPayload(kHttpStatusPayload, absl::Cord(std::to_string(http_status)));
  return s;
}

struct HostPort {
  std::string host;  // lower case, IPv6 without brackets
  std::string port;  // empty: none given
};

// "name", "name:port", "1.2.3.4:80", "[::1]:80"; nullopt when malformed.
std::optional<HostPort> SplitHostPort(std::string_view v) {
  HostPort out;
  if (v.empty()) return std::nullopt;
  if (v.front() == '[') {
    size_t close = v.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    out.host = std::string(v.substr(1, close - 1));
    std::string_view rest = v.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return std::nullopt;
      out.port = std::string(rest.substr(1));
    }
  } else {
    size_t colon = v.find(':');
    if (colon != v.rfind(':')) return std::nullopt;  // a bare IPv6 address
    out.host = std::string(v.substr(0, colon));
    if (colon != std::string_view::npos) out.port = std::string(v.substr(colon + 1));
  }
  if (out.host.empty()) return std::nullopt;
  for (char c : out.port) {
    if (c < '0' || c > '9') return std::nullopt;
  }
  for (char c : out.host) {
    if (!(absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == ':' ||
          c == '_')) {
      return std::nullopt;
    }
  }
  out.host = absl::AsciiStrToLower(out.host);
  return out;
}

// The address a connection arrived on, as Host would name it.
bool IsLocalAddress(const std::string& host, const std::string& local_addr) {
  if (local_addr.empty()) return false;
  std::string local = absl::AsciiStrToLower(local_addr);
  if (local.rfind("::ffff:", 0) == 0 && local.find('.') != std::string::npos) {
    local = local.substr(7);
  }
  return host == local;
}

bool HasBody(const Request& req) {
  if (req.has_header("Transfer-Encoding")) return true;
  return req.has_header("Content-Length") && req.get_header_value("Content-Length") != "0";
}

}  // namespace

int HttpStatusOf(const absl::Status& s) {
  if (auto p = s.GetPayload(kHttpStatusPayload)) {
    int v = 0;
    if (absl::SimpleAtoi(std::string(*p), &v)) return v;
  }
  if (IsStoreFull(s)) return 507;  // Insufficient Storage: the store's disk is full
  return HttpStatusFor(s.code());
}

absl::Status CheckRequest(const Request& req, const std::vector<std::string>& allowed_hosts) {
  // Host: a name a DNS-rebinding page cannot make the browser send.
  if (req.get_header_value_count("Host") != 1) {
    return absl::InvalidArgumentError("Host: send exactly one Host header");
  }
  auto host = SplitHostPort(req.get_header_value("Host"));
  if (!host) return absl::InvalidArgumentError("Host: malformed");
  bool allowed = trust::IsLoopbackHost(host->host) || IsLocalAddress(host->host, req.local_addr);
  for (const auto& h : allowed_hosts) allowed = allowed || absl::AsciiStrToLower(h) == host->host;
  if (!allowed) {
    return WithHttpStatus(
        absl::PermissionDeniedError(Cat("Host: '", host->host,
                                        "' is not a name of this controller (loopback, the "
                                        "listening address, or an allowed host)")),
        421);
  }
  // Origin: same origin only; there is no CORS.
  if (req.has_header("Origin")) {
    if (req.get_header_value_count("Origin") != 1) {
      return WithHttpStatus(absl::PermissionDeniedError("Origin: more than one"), 403);
    }
    std::string origin = absl::AsciiStrToLower(req.get_header_value("Origin"));
    std::string scheme = req.ssl ? "https" : "http";
    std::string default_port = req.ssl ? "443" : "80";
    bool same = false;
    if (origin.rfind(scheme + "://", 0) == 0) {
      auto o = SplitHostPort(std::string_view(origin).substr(scheme.size() + 3));
      if (o) {
        std::string op = o->port.empty() ? default_port : o->port;
        std::string hp = host->port.empty() ? default_port : host->port;
        same = o->host == host->host && op == hp;
      }
    }
    if (!same) {
      return WithHttpStatus(absl::PermissionDeniedError(
                                "Origin: cross-origin requests are refused (the API has no CORS)"),
                            403);
    }
  }
  // Writes with a body: JSON only (a cross-site form cannot send it).
  const std::string& m = req.method;
  if ((m == "POST" || m == "PUT" || m == "PATCH" || m == "DELETE") && HasBody(req)) {
    std::string ct = req.get_header_value("Content-Type");
    ct = absl::AsciiStrToLower(absl::StripAsciiWhitespace(ct.substr(0, ct.find(';'))));
    if (ct != "application/json") {
      return WithHttpStatus(absl::InvalidArgumentError("Content-Type: send application/json"), 415);
    }
  }
  if (req.has_header("Content-Length")) {
    uint64_t n = 0;
    if (!absl::SimpleAtoi(req.get_header_value("Content-Length"), &n)) {
      return absl::InvalidArgumentError("Content-Length: not a number");
    }
    if (n > kMaxRequestBodyBytes) {
      return WithHttpStatus(
          absl::ResourceExhaustedError(Cat("body: ", n, " bytes; at most ", kMaxRequestBodyBytes)),
          413);
    }
  }
  return absl::OkStatus();
}

void RestApi::SetAllowedHosts(std::vector<std::string> hosts) {
  std::lock_guard l(hosts_mu_);
  allowed_hosts_ = std::move(hosts);
}

void RestApi::RaiseListenBacklog() {
  int fd = listen_fd_.load();
  if (fd < 0) return;
  if (::listen(fd, kListenBacklog) != 0) {
    std::fprintf(stderr, "dfw-controller: REST: cannot raise the listen backlog: %s\n",
                 std::strerror(errno));
  }
}

// Requests by (method, route template, status class), each with a latency
// histogram. Every route is registered before the server starts, so the
// set is fixed: a request costs two relaxed atomic adds and a histogram
// observation, with no lock and no allocation.
class RestApi::RequestMetrics {
 public:
  struct Route {
    Route(std::string m, std::string r) : method(std::move(m)), route(std::move(r)) {}
    const std::string method, route;
    std::array<std::atomic<uint64_t>, 5> by_class{};  // 1xx .. 5xx
    metrics::Histogram seconds{metrics::LatencyBuckets()};
  };

  RequestMetrics() {
    for (const char* m : {"GET", "POST", "PUT", "DELETE", "other"}) {
      unmatched_.push_back(&routes_.emplace_back(m, "unmatched"));
    }
  }
  // The label of a route pattern: "/api/v1/vms/([^/]+)" -> "/api/v1/vms/{id}".
  Route* Add(const std::string& method, const std::string& pattern) {
    std::string route = pattern;
    for (auto [from, to] :
         {std::pair<std::string_view, std::string_view>{"([^/]+)", "{id}"}, {"/.*", "/{any}"}}) {
      for (size_t at = route.find(from); at != std::string::npos; at = route.find(from, at)) {
        route.replace(at, from.size(), to);
        at += to.size();
      }
    }
    return &routes_.emplace_back(method, route);
  }
  // Requests no route took (refused before routing, or no such route):
  // one series per method, never per path.
  Route* Unmatched(std::string_view method) {
    for (Route* r : unmatched_) {
      if (r->method == method) return r;
    }
    return unmatched_.back();
  }
  // The request being served on this thread: when its headers were read
  // (the pre-routing handler) and the route that took it (Guarded).
  static inline thread_local std::optional<std::chrono::steady_clock::time_point> t_start;
  static inline thread_local Route* t_route = nullptr;

  static void Record(Route* r, int status, double seconds) {
    int cls = status / 100;
    if (cls < 1 || cls > 5) cls = 5;
    r->by_class[cls - 1].fetch_add(1, std::memory_order_relaxed);
    r->seconds.Observe(seconds);
  }
  void Render(metrics::Exposition& e) const {
    e.Family("dfw_controller_http_requests_total", "counter",
             "REST requests answered, by method, route template and status class.");
    for (const Route& r : routes_) {
      for (size_t c = 0; c < r.by_class.size(); ++c) {
        uint64_t n = r.by_class[c].load(std::memory_order_relaxed);
        if (n == 0) continue;
        e.Sample("dfw_controller_http_requests_total",
                 {{"method", r.method}, {"route", r.route}, {"code", Cat(c + 1, "xx")}},
                 static_cast<double>(n));
      }
    }
    e.Family("dfw_controller_http_request_duration_seconds", "histogram",
             "REST request latency from the request's headers read to its response ready "
             "to write, by method and route template.");
    for (const Route& r : routes_) {
      auto snap = r.seconds.Read();
      if (snap.count == 0) continue;
      e.Histogram("dfw_controller_http_request_duration_seconds",
                  {{"method", r.method}, {"route", r.route}}, snap);
    }
  }

 private:
  std::deque<Route> routes_;  // stable addresses; only appended before Start
  std::vector<Route*> unmatched_;
};

void RestApi::InstallRequestGuards(httplib::Server& s) {
  // Counted once the response is final and before it is written (so a
  // client that saw the answer finds it counted).
  s.set_post_routing_handler([this](const Request& req, Response& res) {
    double seconds = 0;
    if (RequestMetrics::t_start) {
      seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - *RequestMetrics::t_start)
              .count();
    }
    RequestMetrics::Route* r =
        RequestMetrics::t_route ? RequestMetrics::t_route : requests_->Unmatched(req.method);
    RequestMetrics::Record(r, res.status, seconds);
    RequestMetrics::t_start.reset();
    RequestMetrics::t_route = nullptr;
  });
  s.set_pre_routing_handler([this](const Request& req, Response& res) {
    RequestMetrics::t_start = std::chrono::steady_clock::now();
    RequestMetrics::t_route = nullptr;
    std::vector<std::string> hosts;
    {
      std::lock_guard l(hosts_mu_);
      hosts = allowed_hosts_;
    }
    auto st = CheckRequest(req, hosts);
    if (st.ok()) return httplib::Server::HandlerResponse::Unhandled;
    SendError(res, st);
    res.set_header("Connection", "close");  // the body, if any, is left unread
    return httplib::Server::HandlerResponse::Handled;
  });
  s.set_exception_handler([](const Request& req, Response& res, std::exception_ptr ep) {
    std::string what = "unknown exception";
    try {
      if (ep) std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    std::fprintf(stderr, "dfw-controller: REST %s %s failed: %s\n", req.method.c_str(),
                 req.path.c_str(), what.c_str());
    res.headers.clear();
    SendError(res, absl::InternalError("internal: the request failed; see the controller's log"));
  });
  // A TLS response goes out as several records: without NODELAY, Nagle and
  // the client's delayed ACK hold the last one ~40 ms.
  s.set_tcp_nodelay(true);
  s.set_payload_max_length(kMaxRequestBodyBytes);
  s.set_read_timeout(kRestReadTimeoutSeconds, 0);
  s.set_keep_alive_timeout(kRestReadTimeoutSeconds);
  // Records the listening socket (httplib calls this on it before bind).
  s.set_socket_options([this](socket_t sock) {
    httplib::default_socket_options(sock);
    listen_fd_.store(sock);
  });
  // httplib makes the task queue once bound, right before its first
  // accept: the moment to raise the backlog.
  s.new_task_queue = [this] {
    RaiseListenBacklog();
    return new httplib::ThreadPool(kRestWorkers);
  };
}

// The caller of the request being served on this thread (set by Guarded).
thread_local const Caller* t_rest_caller = nullptr;

// Route registration that authorizes first: every handler registered
// through it runs only for a caller holding PermissionForRest(method,
// path), with the caller as the change's actor.
class RestApi::Guarded {
 public:
  Guarded(httplib::Server& s, const Authorizer* authz, RequestMetrics* requests)
      : s_(s), authz_(authz), requests_(requests) {}
  void Get(const std::string& p, httplib::Server::Handler h) {
    s_.Get(p, Wrap("GET", p, std::move(h)));
  }
  void Post(const std::string& p, httplib::Server::Handler h) {
    s_.Post(p, Wrap("POST", p, std::move(h)));
  }
  void Put(const std::string& p, httplib::Server::Handler h) {
    s_.Put(p, Wrap("PUT", p, std::move(h)));
  }
  void Delete(const std::string& p, httplib::Server::Handler h) {
    s_.Delete(p, Wrap("DELETE", p, std::move(h)));
  }
  template <typename F>
  void set_error_handler(F&& f) {
    s_.set_error_handler(std::forward<F>(f));
  }

 private:
  httplib::Server::Handler Wrap(const std::string& method, const std::string& pattern,
                                httplib::Server::Handler h) {
    const Authorizer* authz = authz_;
    RequestMetrics::Route* route = requests_->Add(method, pattern);
    return [authz, route, h = std::move(h)](const Request& req, Response& res) {
      RequestMetrics::t_route = route;  // refusals below count for the route too
      auto caller =
          authz->Authorize(trust::PeerLeafPem(req.ssl), PermissionForRest(req.method, req.path));
      if (!caller.ok()) return SendError(res, caller.status());
      ActorScope actor(caller->actor);
      t_rest_caller = &*caller;
      h(req, res);
      t_rest_caller = nullptr;
    };
  }
  httplib::Server& s_;
  const Authorizer* authz_;
  RequestMetrics* requests_;
};

RestApi::RestApi(ModelService* model, Enrollment* enrollment, const Authorizer* authz,
                 const RestTlsOptions& tls)
    : model_(model), enrollment_(enrollment), authz_(authz) {
  SetUpServer(tls);
  Routes();
}

RestApi::RestApi(const Authorizer* authz, const RestTlsOptions& tls, std::function<Leader()> leader)
    : model_(nullptr), enrollment_(nullptr), authz_(authz) {
  SetUpServer(tls);
  StandbyRoutes(std::move(leader));
}

void RestApi::StandbyRoutes(std::function<Leader()> leader) {
  httplib::Server::Handler answer = [leader = std::move(leader)](const Request&, Response& res) {
    Leader l = leader();
    absl::Status s = absl::UnavailableError(
        l.http.empty() && l.grpc.empty()
            ? std::string("controller: this controller is a standby and no leader is known yet; "
                          "retry shortly")
            : Cat("controller: this controller is a standby; the leader is ", l.name, " at http ",
                  l.http, ", grpc ", l.grpc));
    SendError(res, s);
    nlohmann::json j = nlohmann::json::parse(res.body, nullptr, false);
    j["leader"] = {{"name", l.name}, {"grpc", l.grpc}, {"http", l.http}};
    res.set_content(j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace),
                    "application/json");
    if (!l.http.empty()) res.set_header("X-Dfw-Leader", l.http);
    res.set_header("Retry-After", "1");
  };
  // Authorized as on the leader: the leader's address only to a caller
  // who may make that request there.
  Guarded s(*server_, authz_, requests_.get());
  const std::string any = "/.*";
  s.Get(any, answer);
  s.Post(any, answer);
  s.Put(any, answer);
  s.Delete(any, answer);
}

void RestApi::SetUpServer(const RestTlsOptions& tls) {
  requests_ = std::make_unique<RequestMetrics>();
  if (!tls.svid_dir.empty()) {
    tls_ = std::make_unique<trust::ServerTls>(tls.svid_dir, tls.refresh);
    tls_status_ = tls_->Load();
    if (tls_status_.ok()) {
      trust::ServerTls* t = tls_.get();
      server_ = std::make_unique<httplib::SSLServer>([t](SSL_CTX& ctx) { return t->Setup(ctx); });
      if (!server_->is_valid())
        tls_status_ = absl::InvalidArgumentError(
            Cat("tls: ", tls.svid_dir, ": cannot set up TLS from the SVID's bundle"));
    }
  }
  if (!server_) server_ = std::make_unique<httplib::Server>();
  InstallRequestGuards(*server_);
}

RestApi::~RestApi() { Stop(); }

absl::StatusOr<int> RestApi::Start(const std::string& host, int port) {
  if (!tls_status_.ok()) return tls_status_;
  int bound =
      port == 0 ? server_->bind_to_any_port(host) : (server_->bind_to_port(host, port) ? port : -1);
  if (bound <= 0) return absl::UnavailableError(Cat("http: cannot listen on ", host, ":", port));
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  return bound;
}

void RestApi::Stop() {
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
}

void RestApi::Routes() {
  Guarded s(*server_, authz_, requests_.get());
  ModelService* m = model_;
  const std::string id = "/([^/]+)";

  // ---- VMs
  s.Get("/api/v1/vms", [m](const Request& req, Response& res) {
    auto l = ListParams(req);
    if (!l.ok()) return SendError(res, l.status());
    Send(res, m->ListVms(*l));
  });
  s.Post("/api/v1/vms", [m](const Request& req, Response& res) {
    dfw::v1::PutVmRequest r;
    if (auto e = ParseBody(req, r.mutable_vm()); !e.ok()) return SendError(res, e);
    Send(res, m->PutVm(r, true), 201);
  });
  s.Get("/api/v1/vms" + id,
        [m](const Request& req, Response& res) { Send(res, m->GetVm(req.matches[1])); });
  s.Put("/api/v1/vms" + id, [m](const Request& req, Response& res) {
    dfw::v1::PutVmRequest r;
    if (auto e = ParseBody(req, r.mutable_vm()); !e.ok()) return SendError(res, e);
    if (auto e = PathId(r.mutable_vm()->mutable_id(), req.matches[1]); !e.ok())
      return SendError(res, e);
    auto ex = ExpectedRevision(req);
    if (!ex.ok()) return SendError(res, ex.status());
    r.set_expected_revision(*ex);
    Send(res, m->PutVm(r));
  });
  s.Delete("/api/v1/vms" + id, [m](const Request& req, Response& res) {
    dfw::v1::DeleteRequest r;
    r.set_id(req.matches[1]);
    auto ex = ExpectedRevision(req);
    if (!ex.ok()) return SendError(res, ex.status());
    r.set_expected_revision(*ex);
    Send(res, m->DeleteVm(r));
  });
  s.Post("/api/v1/vms" + id + "/tags", [m](const Request& req, Response& res) {
    dfw::v1::TagRequest r;
    if (auto e = ParseBody(req, &r); !e.ok()) return SendError(res, e);
    if (r.vm_ids_size() > 0) {
      return SendError(res, absl::InvalidArgumentError("vm_ids: the VM is the one in the path"));
    }
    r.add_vm_ids(req.matches[1]);
    auto ex = ExpectedRevision(req);
    if (!ex.ok()) return SendError(res, ex.status());
    if (*ex != 0) r.set_expected_revision(*ex);
    auto dry = DryRun(req);
    if (!dry.ok()) return SendError(res, dry.status());
    if (*dry) return Send(res, m->PreviewTag(r));
    Send(res, m->Tag(r));
  });
  s.Post("/api/v1/tags", [m](const Request& req, Response& res) {
    dfw::v1::TagRequest r;
    if (auto e = ParseBody(req, &r); !e.ok()) return SendError(res, e);
    auto dry = DryRun(req);
    if (!dry.ok()) return SendError(res, dry.status());
    if (*dry) return Send(res, m->PreviewTag(r));
    Send(res, m->Tag(r));
  });
  s.Get("/api/v1/vms" + id + "/groups",
        [m](const Request& req, Response& res) { Send(res, m->VmGroups(req.matches[1])); });
  s.Get("/api/v1/vms" + id + "/effective-rules", [m](const Request& req, Response& res) {
    dfw::v1::EffectiveRulesRequest r;
    r.set_vm_id(req.matches[1]);
    Send(res, m->EffectiveRules(r));
  });
  s.Get("/api/v1/vnics" + id + "/effective-rules", [m](const Request& req, Response& res) {
    dfw::v1::EffectiveRulesRequest r;
    r.set_vnic_id(req.matches[1]);
    Send(res, m->EffectiveRules(r));
  });

  // ---- trace: GET /api/v1/trace?from_vm_id=A&to_vm_id=B&protocol=6&destination_port=5432
  // (from_ip, to_ip, source_port, icmp_type, icmp_code optional).
  s.Get("/api/v1/trace", [m](const Request& req, Response& res) {
    dfw::v1::TraceRequest r;
    r.set_from_vm_id(req.get_param_value("from_vm_id"));
    r.set_to_vm_id(req.get_param_value("to_vm_id"));
    r.set_from_ip(req.get_param_value("from_ip"));
    r.set_to_ip(req.get_param_value("to_ip"));
    for (const char* name :
         {"protocol", "destination_port", "source_port", "icmp_type", "icmp_code"}) {
      if (!req.has_param(name)) continue;
      auto v = ParseUint(req.get_param_value(name), name, 65535);
      if (!v.ok()) return SendError(res, v.status());
      const auto n = static_cast<uint32_t>(*v);
      const std::string_view f = name;
      if (f == "protocol") r.set_protocol(n);
      if (f == "destination_port") r.set_destination_port(n);
      if (f == "source_port") r.set_source_port(n);
      if (f == "icmp_type") {
        r.set_icmp_type(n);
        r.set_has_icmp_type(true);
      }
      if (f == "icmp_code") r.set_icmp_code(n);
    }
    auto t = m->Trace(r);
    if (!t.ok()) return SendError(res, t.status());
    res.set_content(ToJson(*t, /*all_fields=*/true), "application/json");
  });

  // ---- live trace and probe: POST /api/v1/probes, a ProbeFlowRequest
  // (a trace's flow, inject, timeout_ms); answers when every capture ended.
  s.Post("/api/v1/probes", [m](const Request& req, Response& res) {
    dfw::v1::ProbeFlowRequest r;
    if (auto e = ParseBody(req, &r); !e.ok()) return SendError(res, e);
    auto p = m->ProbeFlow(r);
    if (!p.ok()) return SendError(res, p.status());
    res.set_content(ToJson(*p, /*all_fields=*/true), "application/json");
  });

  // ---- groups
  s.Get("/api/v1/groups", [m](const Request& req, Response& res) {
    auto l = ListParams(req);
    if (!l.ok()) return SendError(res, l.status());
    Send(res, m->ListGroups(*l));
  });
  s.Post("/api/v1/groups", [m](const Request& req, Response& res) {
    dfw::v1::PutGroupRequest r;
    if (auto e = ParseBody(req, r.mutable_group()); !e.ok()) return SendError(res, e);
    auto dry = DryRun(req);
    if (!dry.ok()) return SendError(res, dry.status());
    if (*dry) {
      dfw::v1::PreviewGroupRequest pr;
      *pr.mutable_group() = r.group();
      pr.set_create_only(true);
      return Send(res, m->PreviewGroup(pr));
    }
    Send(res, m->PutGroup(r, true), 201);
  });
  s.Get("/api/v1/groups" + id,
        [m](const Request& req, Response& res) { Send(res, m->GetGroup(req.matches[1])); });
  s.Put("/api/v1/groups" + id, [m](const Request& req, Response& res) {
    dfw::v1::PutGroupRequest r;
    if (auto e = ParseBody(req, r.mutable_group()); !e.ok()) return SendError(res, e);
    if (auto e = PathId(r.mutable_group()->mutable_id(), req.matches[1]); !e.ok()) {
      return SendError(res, e);
    }
    auto ex = ExpectedRevision(req);
    if (!ex.ok()) return SendError(res, ex.status());
    r.set_expected_revision(*ex);
    auto dry = DryRun(req);
    if (!dry.ok()) return SendError(res, dry.status());
    if (*dry) {
      dfw::v1::PreviewGroupRequest pr;
      *pr.mutable_group() = r.group();
      pr.set_expected_revision(*ex);
      return Send(res, m->PreviewGroup(pr));
    }
    Send(res, m->PutGroup(r));
  });
  s.Delete("/api/v1/groups" + id, [m](const Request& req, Response& res) {
    dfw::v1::DeleteRequest r;
    r.set_id(req.matches[1]);
    auto ex = ExpectedRevision(req);
    if (!ex.ok()) return SendError(res, ex.status());
    r.set_expected_revision(*ex);
    Send(res, m->DeleteGroup(r));
  });
  s.Get("/api/v1/groups" + id + "/members",
        [m](const Request& req, Response& res) { Send(res, m->GroupMembers(req.matches[1])); });

  // ---- policies
  s.Get("/api/v1/policies", [m](const Request& req, Response& res) {
    auto l = ListParams(req);
    if (!l.ok()) return SendError(res, l.status());
    Send(res, m->ListPolicies(*l));
  });
  s.Post("/api/v1/policies", [m](const Request& req, Response& res) {
    dfw::v1::PutPolicyRequest r;
    if (auto e = ParseBody(req, r.mutable_policy()); !e.ok()) return SendError(res, e);
    auto dry = DryRun(req);
    if (!dry.ok()) return SendError(res, dry.status());
    if (*dry) {
      *(*dry)->mutable_policy() = r.policy();
      (*dry)->set_create_only(true);
      return Send(res, m->PreviewPolicy(**dry));
    }
    Send(res, m->PutPolicy(r, true), 201);
  });
  s.Get("/api/v1/policies" + id,
        [m](const Request& req, Response& res) { Send(res, m->GetPolicy(req.matches[1])); });
  s.Put("/api/v1/policies" + id, [m](const Request& req, Response& res) {
    dfw::v1::PutPolicyRequest r;
    if (auto e = ParseBody(req, r.mutable_policy()); !e.ok()) return SendError(res, e);
    if (auto e = PathId(r.mutable_policy()->mutable_id(), req.matches[1]); !e.ok()) {
      return SendError(res, e);
    }
    auto ex = ExpectedRevision(req);
    if (!ex.ok()) return SendError(res, ex.status());
    r.set_expected_revision(*ex);
    auto dry = DryRun(req);
    if (!dry.ok()) return SendError(res, dry.status());
    if (*dry) {
      *(*dry)->mutable_policy() = r.policy();
      (*dry)->set_expected_revision(*ex);
      return Send(res, m->PreviewPolicy(**dry));
    }
    Send(res, m->PutPolicy(r));
  });
  s.Delete("/api/v1/policies" + id, [m](const Request& req, Response& res) {
    dfw::v1::DeleteRequest r;
    r.set_id(req.matches[1]);
    auto ex = ExpectedRevision(req);
    if (!ex.ok()) return SendError(res, ex.status());
    r.set_expected_revision(*ex);
    auto dry = DryRun(req);
    if (!dry.ok()) return SendError(res, dry.status());
    if (*dry) {
      (*dry)->set_delete_policy_id(r.id());
      (*dry)->set_expected_revision(*ex);
      return Send(res, m->PreviewPolicy(**dry));
    }
    Send(res, m->DeletePolicy(r));
  });

  // ---- the exclusion list (admin writes: authz.cc)
  s.Get("/api/v1/exclusions",
        [m](const Request&, Response& res) { Send(res, m->ListExclusions()); });
  s.Post("/api/v1/exclusions", [m](const Request& req, Response& res) {
    dfw::v1::Exclusion r;
    if (auto e = ParseBody(req, &r); !e.ok()) return SendError(res, e);
    Send(res, m->AddExclusion(r), 201);
  });
  s.Delete("/api/v1/exclusions" + id, [m](const Request& req, Response& res) {
    Send(res, m->DeleteExclusion(req.matches[1]));
  });

  // ---- hosts, realization, changes, status
  s.Get("/api/v1/hosts", [m](const Request&, Response& res) { Send(res, m->ListHosts()); });
  s.Delete("/api/v1/hosts" + id,
           [m](const Request& req, Response& res) { Send(res, m->DeleteHost(req.matches[1])); });
  s.Get("/api/v1/realization", [m](const Request& req, Response& res) {
    dfw::v1::RealizationRequest r;
    if (req.has_param("policy_id")) r.set_policy_id(req.get_param_value("policy_id"));
    Send(res, m->Realization(r));
  });
  // dfwctl observe: flow records relayed by the hosts (flow_hub.h), after
  // `cursor` (0: the newest), filtered, waiting up to wait_ms for one.
  s.Get("/api/v1/flows", [m](const Request& req, Response& res) {
    uint64_t cursor = 0, wait_ms = 0, limit = 100;
    for (auto [name, out, max] :
         {std::tuple<const char*, uint64_t*, uint64_t>{"cursor", &cursor, UINT64_MAX},
          {"wait_ms", &wait_ms, 30000},
          {"limit", &limit, FlowHub::kMaxLimit}}) {
      if (!req.has_param(name)) continue;
      auto v = ParseUint(req.get_param_value(name), name, max);
      if (!v.ok()) return SendError(res, v.status());
      *out = *v;
    }
    if (limit == 0) return SendError(res, absl::InvalidArgumentError("limit: 0; at least 1"));
    auto filter = FlowFilter::Parse([&req](const std::string& name) -> std::optional<std::string> {
      if (!req.has_param(name)) return std::nullopt;
      return req.get_param_value(name);
    });
    if (!filter.ok()) return SendError(res, filter.status());
    Send(res, absl::StatusOr<dfw::v1::ObserveResponse>(
                  m->flow_hub().Read(cursor, *filter, limit, std::chrono::milliseconds(wait_ms))));
  });
  s.Get("/api/v1/changes", [m](const Request& req, Response& res) {
    uint64_t from = 0, wait_ms = 0;
    if (req.has_param("from_revision")) {
      auto v = ParseUint(req.get_param_value("from_revision"), "from_revision");
      if (!v.ok()) return SendError(res, v.status());
      from = *v;
    }
    if (req.has_param("wait_ms")) {
      auto v = ParseUint(req.get_param_value("wait_ms"), "wait_ms");
      if (!v.ok()) return SendError(res, v.status());
      wait_ms = std::min<uint64_t>(*v, 60000);
    }
    if (wait_ms > 0) m->WaitForRevisionAbove(from, std::chrono::milliseconds(wait_ms));
    auto ev = m->Changes(from, 1000);
    if (!ev.ok()) return SendError(res, ev.status());
    std::string body = Cat("{\"revision\":\"", m->revision(), "\",\"events\":[");
    for (size_t i = 0; i < ev->size(); ++i) {
      if (i) body += ",";
      body += ToJson((*ev)[i]);
    }
    body += "]}";
    res.set_content(body, "application/json");
  });
  s.Get("/api/v1/status", [m](const Request&, Response& res) {
    ModelStats st = m->Stats();
    nlohmann::json j = {{"revision", st.revision},
                        {"vms", st.vms},
                        {"groups", st.groups},
                        {"policies", st.policies},
                        {"exclusions", st.exclusions},
                        {"excluded_vnics", st.excluded_vnics},
                        {"hosts", st.hosts},
                        {"connected_hosts", st.connected_hosts},
                        {"memberships", st.index.memberships},
                        {"compiled_rule_refs", st.compiler.compiled_rule_refs},
                        {"vm_claims_waiting", st.handover.claims_waiting},
                        {"vm_handovers", st.handover.handovers},
                        {"connections_moved", st.handover.entries_moved},
                        {"connections_dropped", st.handover.entries_dropped}};
    res.set_content(j.dump(), "application/json");
  });
  s.Get("/metrics", [this](const Request&, Response& res) {
    res.set_content(RenderMetrics(), metrics::kContentType);
  });
  TrustRoutes(s);
  s.set_error_handler([](const Request& req, Response& res) {
    if (!res.body.empty()) return;
    if (res.status == 404) {
      SendError(res,
                absl::NotFoundError(Cat("path: no such resource ", req.method, " ", req.path)));
    } else if (res.status == 413) {
      SendError(res, WithHttpStatus(absl::ResourceExhaustedError(
                                        Cat("body: above ", kMaxRequestBodyBytes, " bytes")),
                                    413));
    } else if (res.status >= 400) {
      SendError(res, WithHttpStatus(absl::InvalidArgumentError(
                                        Cat("request: refused with HTTP status ", res.status)),
                                    res.status));
    }
  });
}

std::string RestApi::RenderMetrics() const {
  ModelMetrics mm = model_->Metrics(metrics_per_host_);
  const ModelStats& st = mm.stats;
  metrics::Exposition e;
  auto gauge = [&e](const char* name, const char* help, double v) {
    e.Family(name, "gauge", help);
    e.Sample(name, {}, v);
  };
  auto d = [](auto v) { return static_cast<double>(v); };
  gauge("dfw_controller_revision", "The model's current revision.", d(st.revision));
  e.Family("dfw_controller_hosts", "gauge",
           "Hosts this controller knows, by whether their session is connected.");
  e.Sample("dfw_controller_hosts", {{"state", "connected"}}, d(st.connected_hosts));
  e.Sample("dfw_controller_hosts", {{"state", "disconnected"}},
           d(st.hosts - std::min(st.hosts, st.connected_hosts)));
  gauge("dfw_controller_hosts_pending",
        "Hosts whose realized revision is below the one they must reach.", d(mm.hosts_pending));
  gauge("dfw_controller_oldest_unrealized_revision_age_seconds",
        "Age of the oldest revision some affected host has not acked (0: none).",
        mm.oldest_unrealized_seconds);
  e.Family("dfw_controller_realization_duration_seconds", "histogram",
           "From a revision accepted to the last host it affected acking it.");
  e.Histogram("dfw_controller_realization_duration_seconds", {}, mm.realization_seconds);
  gauge("dfw_controller_feed_pending_objects",
        "Objects (rulesets, address sets, connection imports) merged into host feeds and not "
        "yet sent, summed over hosts.",
        d(mm.feed_objects));
  gauge("dfw_controller_feed_pending_objects_max",
        "The largest number of objects one host feed holds unsent.", d(mm.feed_objects_max));
  gauge("dfw_controller_feeds_owing", "Host feeds owing their host a message.", d(mm.feeds_owed));
  e.Family("dfw_controller_store_commits_total", "counter",
           "Store commits (one per change), by result.");
  e.Sample("dfw_controller_store_commits_total", {{"result", "ok"}}, d(mm.store_commits));
  e.Sample("dfw_controller_store_commits_total", {{"result", "error"}},
           d(mm.store_commit_failures));
  e.Family("dfw_controller_store_commit_duration_seconds", "histogram",
           "Latency of one store commit (a synced write), failed ones included.");
  e.Histogram("dfw_controller_store_commit_duration_seconds", {}, mm.store_commit_seconds);
  // ModelService::Stats(): the model, the membership index, the compiler.
  struct Gauge {
    const char* name;
    const char* help;
    double value;
  };
  for (const Gauge& g : {
           Gauge{"dfw_controller_vms", "VMs in the model.", d(st.vms)},
           Gauge{"dfw_controller_groups", "Security groups in the model.", d(st.groups)},
           Gauge{"dfw_controller_policies", "Policies in the model.", d(st.policies)},
           Gauge{"dfw_controller_exclusions", "Entries on the exclusion list.", d(st.exclusions)},
           Gauge{"dfw_controller_excluded_vnics", "vNICs the exclusion list covers (not filtered).",
                 d(st.excluded_vnics)},
           Gauge{"dfw_controller_memberships", "(group, VM) pairs in the membership index.",
                 d(st.index.memberships)},
           Gauge{"dfw_controller_membership_vnic_refs",
                 "(group, vNIC) pairs in the membership index.", d(st.index.vnic_refs)},
           Gauge{"dfw_controller_membership_address_refs",
                 "(group, address) pairs in the membership index.", d(st.index.address_refs)},
           Gauge{"dfw_controller_membership_index_bytes",
                 "Estimate of the membership index's heap use in bytes.", d(st.index.approx_bytes)},
           Gauge{"dfw_controller_compiled_rules", "Rules of all policies, as compiled.",
                 d(st.compiler.rules)},
           Gauge{"dfw_controller_compiled_rule_refs",
                 "(vNIC, rule) pairs in the compiled rulesets.", d(st.compiler.compiled_rule_refs)},
           Gauge{"dfw_controller_vnics_with_rules", "vNICs with at least one rule.",
                 d(st.compiler.vnics_with_rules)},
       }) {
    gauge(g.name, g.help, g.value);
  }
  e.Family("dfw_controller_refused_vm_claims_total", "counter",
           "VMs a host reported that another connected host holds, since the start.");
  e.Sample("dfw_controller_refused_vm_claims_total", {}, d(st.refused_vm_claims));
  const FlowHub::Stats flows = model_->flow_hub().stats();
  e.Family("dfw_controller_flow_records_total", "counter",
           "Flow records hosts relayed for dfwctl observe, since the start.");
  e.Sample("dfw_controller_flow_records_total", {}, d(flows.records));
  e.Family("dfw_controller_flow_records_lost_total", "counter",
           "Flow records hosts reported lost before they reached the controller, since the start.");
  e.Sample("dfw_controller_flow_records_lost_total", {}, d(flows.host_lost));
  gauge("dfw_controller_flow_watch",
        "1 while the hosts are asked to relay flow records (someone observes).",
        flows.watching ? 1 : 0);
  if (metrics_per_host_) {
    auto per_host = [&](const char* name, const char* help, auto value) {
      e.Family(name, "gauge", help);
      for (const auto& h : mm.hosts) e.Sample(name, {{"host", h.id}}, d(value(h)));
    };
    using H = ModelMetrics::Host;
    per_host("dfw_controller_host_connected",
             "1 when the host's session is connected (per host: --metrics-per-host).",
             [](const H& h) { return h.connected ? 1 : 0; });
    per_host("dfw_controller_host_realized_revision",
             "The highest revision the host acked to this process (per host).",
             [](const H& h) { return h.realized_revision; });
    per_host("dfw_controller_host_wanted_revision", "The revision the host must reach (per host).",
             [](const H& h) { return h.want_revision; });
    per_host("dfw_controller_host_feed_pending_objects",
             "Objects merged into the host's feed and not yet sent (per host).",
             [](const H& h) { return h.feed_objects; });
  }
  requests_->Render(e);
  if (grpc_metrics_ != nullptr) grpc_metrics_->Render(e);
  return e.text();
}

void RestApi::TrustRoutes(Guarded& s) {
  Enrollment* e = enrollment_;
  if (!e) return;
  s.Post("/api/v1/enroll", [e](const Request& req, Response& res) {
    dfw::v1::EnrollRequest r;
    if (auto err = ParseBody(req, &r); !err.ok()) return SendError(res, err);
    Send(res, e->Enroll(r), 201);
  });
  s.Post("/api/v1/renew", [e](const Request& req, Response& res) {
    dfw::v1::RenewRequest r;
    if (auto err = ParseBody(req, &r); !err.ok()) return SendError(res, err);
    Send(res, e->Renew(r, *t_rest_caller), 201);
  });
  s.Post("/api/v1/join-tokens", [e](const Request& req, Response& res) {
    dfw::v1::CreateJoinTokenRequest r;
    if (auto err = ParseBody(req, &r); !err.ok()) return SendError(res, err);
    Send(res, e->CreateJoinToken(r), 201);
  });
  s.Get("/api/v1/certificates", [e](const Request& req, Response& res) {
    dfw::v1::ListCertificatesRequest r;
    r.set_include_expired(req.get_param_value("include_expired") == "true");
    Send(res, e->ListCertificates(r));
  });
  s.Post("/api/v1/certificates/([^/]+)/revoke", [e](const Request& req, Response& res) {
    dfw::v1::RevokeCertificateRequest r;
    r.set_serial(req.matches[1]);
    Send(res, e->Revoke(r, *t_rest_caller));
  });
}

}  // namespace dfw::controller
