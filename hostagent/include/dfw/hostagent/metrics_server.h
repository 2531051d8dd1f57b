// MetricsServer: an agent's GET /metrics listener (dfw-hostagent
// --metrics-listen ADDR:PORT; docs/architecture.md, "Metrics").
//
// What. An HTTPS server (httplib, as the controller's REST API) with one
// route, GET /metrics, answering what the caller's `render` returns in the
// Prometheus text format. Anything else is 404 (another method on /metrics:
// 405).
//
// Trust. Mutual TLS with the agent's own SVID (trust/server_tls.h: the
// files of its cert dir, re-read when renewed; clients verified against
// its bundle, so only certificates chaining to the trust domain's CA get
// through the handshake). Who may read: the controller's read permission
// (authz.h kRead: users of role viewer, editor or admin; a scraper gets a
// viewer identity, e.g. `dfwctl enroll create --user prometheus --role
// viewer`), checked with trust::InspectLeaf in the agent's own trust domain
// (its SVID's). No certificate: 401; a valid identity that is not such a
// user (a host, a VM, a user without a role): 403. The agent holds no
// revocation list (the controller does): a revoked but unexpired
// certificate still reads metrics here until it expires (24 h by default).
// Insecure (an empty svid_dir: --metrics-insecure): plain HTTP, refused
// unless the listen address is loopback, and every caller may read.
//
// Thread safety. Start and Stop from one thread; `render` runs on the
// server's worker threads (at most kMetricsWorkers at once) and must be
// thread-safe.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace httplib {
class Server;
}  // namespace httplib

namespace dfw::trust {
class ServerTls;
}  // namespace dfw::trust

namespace dfw::hostagent {

inline constexpr size_t kMetricsWorkers = 4;  // scrapes served at once
inline constexpr int kMetricsReadTimeoutSeconds = 5;

struct MetricsServerOptions {
  std::string host = "127.0.0.1";
  int port = 0;                      // 0: any free port
  std::string svid_dir;              // the agent's SVID; empty: plain HTTP (loopback only)
  std::chrono::seconds refresh{30};  // how often the SVID files are looked at
};

class MetricsServer {
 public:
  using Render = std::function<std::string()>;
  MetricsServer(MetricsServerOptions o, Render render);
  ~MetricsServer();  // Stop()s
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // Reads the SVID, binds and serves on a background thread; returns the
  // bound port. Errors: no readable SVID, a plain listener on a non-loopback
  // address, the address not bindable.
  absl::StatusOr<int> Start();
  void Stop();

  // "ADDR:PORT" ("[v6]:PORT" too) -> host, port (1..65535).
  static absl::StatusOr<std::pair<std::string, int>> ParseListen(const std::string& text);

 private:
  const MetricsServerOptions o_;
  const Render render_;
  std::string trust_domain_;               // the agent's own (from its SVID)
  std::unique_ptr<trust::ServerTls> tls_;  // before server_: its TLS context calls it
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
};

}  // namespace dfw::hostagent
