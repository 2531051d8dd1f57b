#include "dfw/hostagent/metrics_server.h"

#include <httplib.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <utility>

#include "dfw/base/metrics.h"
#include "dfw/trust/loopback.h"
#include "dfw/trust/peer.h"
#include "dfw/trust/server_tls.h"
#include "dfw/trust/svid.h"

namespace dfw::hostagent {
namespace {

void Refuse(httplib::Response& res, int status, const std::string& why) {
  res.status = status;
  res.set_content(why + "\n", "text/plain; charset=utf-8");
}

// The controller's read permission (authz.h kRead): users of role viewer
// and above. Empty: allowed; else the status and why.
std::pair<int, std::string> Authorize(const httplib::Request& req,
                                      const std::string& trust_domain) {
  const std::string leaf = trust::PeerLeafPem(req.ssl);
  if (leaf.empty()) {
    return {
        401,
        "certificate: none presented; GET /metrics needs a client certificate of trust domain " +
            trust_domain + " (a user of role viewer or above)"};
  }
  auto peer = trust::InspectLeaf(leaf, trust_domain);
  if (!peer.ok()) return {401, "certificate: " + std::string(peer.status().message())};
  if (trust::Clock::now() > peer->not_after) {
    return {401, "certificate: " + peer->id.ToString() + " has expired"};
  }
  if (peer->id.kind != trust::IdKind::kUser) {
    return {403, peer->id.ToString() +
                     " is not a user identity; GET /metrics needs a user of "
                     "role viewer or above"};
  }
  if (peer->role < trust::Role::kViewer) {
    return {403, peer->id.ToString() + " has role " + trust::RoleName(peer->role) +
                     "; GET /metrics needs viewer"};
  }
  return {0, ""};
}

}  // namespace

MetricsServer::MetricsServer(MetricsServerOptions o, Render render)
    : o_(std::move(o)), render_(std::move(render)) {}

MetricsServer::~MetricsServer() { Stop(); }

absl::StatusOr<std::pair<std::string, int>> MetricsServer::ParseListen(const std::string& text) {
  const size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 >= text.size()) {
    return absl::InvalidArgumentError("metrics listen: '" + text + "' is not ADDR:PORT");
  }
  std::string host = text.substr(0, colon);
  if (host.find(':') != std::string::npos) {  // IPv6: only in brackets
    if (host.front() != '[' || host.back() != ']') {
      return absl::InvalidArgumentError("metrics listen: an IPv6 address goes in brackets: '" +
                                        text + "'");
    }
    host = host.substr(1, host.size() - 2);
  }
  const std::string port_text = text.substr(colon + 1);
  char* end = nullptr;
  const long port = std::strtol(port_text.c_str(), &end, 10);
  if (*end != '\0' || port < 1 || port > 65535) {
    return absl::InvalidArgumentError("metrics listen: port '" + port_text +
                                      "' is not within 1..65535");
  }
  return std::make_pair(host, static_cast<int>(port));
}

absl::StatusOr<int> MetricsServer::Start() {
  if (server_) return absl::FailedPreconditionError("metrics: started twice");
  if (o_.svid_dir.empty()) {
    if (!trust::IsLoopbackHost(o_.host)) {
      return absl::InvalidArgumentError(
          "metrics: plain HTTP (--metrics-insecure) only on a "
          "loopback address, not " +
          o_.host);
    }
    server_ = std::make_unique<httplib::Server>();
  } else {
    auto svid = trust::ReadSvid(o_.svid_dir);
    if (!svid.ok()) return svid.status();
    // The agent's own trust domain: its SVID's SPIFFE ID's.
    auto self = trust::SpiffeIdOf(svid->cert_pem);
    if (!self.ok()) return self.status();
    trust_domain_ = self->trust_domain;
    tls_ = std::make_unique<trust::ServerTls>(o_.svid_dir, o_.refresh);
    if (auto s = tls_->Load(); !s.ok()) return s;
    trust::ServerTls* t = tls_.get();
    server_ = std::make_unique<httplib::SSLServer>([t](SSL_CTX& ctx) { return t->Setup(ctx); });
    if (!server_->is_valid()) {
      return absl::InvalidArgumentError("metrics: " + o_.svid_dir +
                                        ": cannot set up TLS from the SVID's bundle");
    }
  }
  const bool tls = tls_ != nullptr;
  const std::string td = trust_domain_;
  server_->Get("/metrics", [this, tls, td](const httplib::Request& req, httplib::Response& res) {
    if (tls) {
      auto [status, why] = Authorize(req, td);
      if (status != 0) return Refuse(res, status, why);
    }
    res.set_content(render_(), metrics::kContentType);
  });
  auto not_allowed = [](const httplib::Request&, httplib::Response& res) {
    res.set_header("Allow", "GET");
    Refuse(res, 405, "GET only");
  };
  server_->Post("/metrics", not_allowed);
  server_->Put("/metrics", not_allowed);
  server_->Delete("/metrics", not_allowed);
  server_->Patch("/metrics", not_allowed);
  server_->set_tcp_nodelay(true);
  server_->set_payload_max_length(4096);
  server_->set_read_timeout(kMetricsReadTimeoutSeconds, 0);
  server_->set_keep_alive_timeout(kMetricsReadTimeoutSeconds);
  server_->new_task_queue = [] { return new httplib::ThreadPool(kMetricsWorkers); };
  const int bound = o_.port == 0 ? server_->bind_to_any_port(o_.host)
                                 : (server_->bind_to_port(o_.host, o_.port) ? o_.port : -1);
  if (bound <= 0) {
    return absl::UnavailableError("metrics: cannot listen on " + o_.host + ":" +
                                  std::to_string(o_.port));
  }
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  return bound;
}

void MetricsServer::Stop() {
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace dfw::hostagent
