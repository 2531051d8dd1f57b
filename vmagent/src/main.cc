// dfw-vmagent: the guest agent (guest_agent.h), run as root inside the VM.
//
//   dfw-vmagent --controller HOST:PORT[,HOST:PORT...] [--cert-dir DIR]
//               [--join-token-file FILE --ca-bundle FILE] [--insecure]
//               [--vm-uuid UUID] [--interface IF]... [--hostname NAME]
//               [--audit-first SECONDS] [--flow-log FILE] [--status-file FILE]
//               [--table NAME] [--nflog-group N] [--tcp-loose]
//               [--metrics-listen ADDR:PORT [--metrics-insecure]]
//   dfw-vmagent status [--status-file FILE]
//
// Trust: the session is mutual TLS with the VM's SVID
// (spiffe://<td>/vm/<uuid>) in --cert-dir (default
// /var/lib/dfw/vmagent/svid). Without one there the agent enrolls with the
// one-time token from --join-token-file (dfwctl enroll create --vm UUID),
// verifying the controller with --ca-bundle. --insecure (plaintext) is
// refused unless the controller is a loopback address.
//
// Several controllers (high availability, comma-separated): the session and
// the SVID's enrollment and renewal follow the leader among them, as the
// host agent's do. They must listen on one port: the guest's bypass lets
// the controllers' addresses through on that port.
//
// The VM's UUID is /sys/class/dmi/id/product_uuid unless --vm-uuid; the
// interfaces are every one but loopback (up or down) unless --interface. The
// controller's address and port always pass (bypass), as do DHCP and IPv6
// neighbour discovery. TCP is strict as in the dataplane: 30 s after the
// first state (and after --audit-first) the agent sets the guest's
// nf_conntrack_tcp_loose=0; --tcp-loose leaves it as it is. SIGINT/SIGTERM
// stop the agent; the nftables table
// stays and keeps enforcing. `status` prints the running agent's status
// file (default /run/dfw/vmagent.json).
//
// --metrics-listen ADDR:PORT (off by default) serves GET /metrics
// (GuestAgent::MetricsText) over HTTPS with the VM's SVID, to users of role
// viewer and above of its trust domain, as the host agent's does
// (metrics_server.h); --metrics-insecure: plain HTTP, loopback only. The
// port is not in the guest's bypass: a rule must allow the scraper to it.
#include <netdb.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>

#include "dfw/hostagent/metrics_server.h"
#include "dfw/hostagent/svid_client.h"
#include "dfw/trust/loopback.h"
#include "dfw/vmagent/guest_agent.h"

namespace {

std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop.store(true); }

constexpr const char kUsage[] =
    "usage: dfw-vmagent --controller HOST:PORT[,HOST:PORT...] [--cert-dir DIR]\n"
    "         [--join-token-file FILE --ca-bundle FILE] [--insecure]\n"
    "         [--vm-uuid UUID] [--interface IF]... [--hostname NAME]\n"
    "         [--audit-first SECONDS] [--flow-log FILE] [--status-file FILE]\n"
    "         [--table NAME] [--nflog-group N] [--tcp-loose]\n"
    "         [--metrics-listen ADDR:PORT [--metrics-insecure]]\n"
    "       dfw-vmagent status [--status-file FILE]\n";

int Usage(const std::string& msg) {
  std::fprintf(stderr, "dfw-vmagent: %s\n%s", msg.c_str(), kUsage);
  return 2;
}

std::string ReadFirstLine(const std::string& path) {
  std::ifstream f(path);
  std::string s;
  std::getline(f, s);
  return s;
}

// "host:port" / "[v6]:port" -> every address of host, and the port.
bool ResolveController(const std::string& target, std::vector<std::string>* ips, uint16_t* port) {
  std::string host, p;
  if (!target.empty() && target[0] == '[') {
    size_t close = target.find(']');
    if (close == std::string::npos || close + 1 >= target.size() || target[close + 1] != ':') {
      return false;
    }
    host = target.substr(1, close - 1);
    p = target.substr(close + 2);
  } else {
    size_t colon = target.rfind(':');
    if (colon == std::string::npos) return false;
    host = target.substr(0, colon);
    p = target.substr(colon + 1);
  }
  char* end = nullptr;
  long n = std::strtol(p.c_str(), &end, 10);
  if (p.empty() || *end != '\0' || n < 1 || n > 65535) return false;
  *port = static_cast<uint16_t>(n);
  struct addrinfo hints = {};
  hints.ai_socktype = SOCK_STREAM;
  struct addrinfo* res = nullptr;
  if (getaddrinfo(host.c_str(), nullptr, &hints, &res) != 0) return false;
  for (auto* a = res; a != nullptr; a = a->ai_next) {
    char buf[NI_MAXHOST];
    if (getnameinfo(a->ai_addr, a->ai_addrlen, buf, sizeof buf, nullptr, 0, NI_NUMERICHOST) == 0) {
      ips->push_back(buf);
    }
  }
  freeaddrinfo(res);
  return !ips->empty();
}

int Status(const std::string& file) {
  std::ifstream f(file);
  if (!f) {
    std::fprintf(stderr, "dfw-vmagent: no status at %s (is the agent running?)\n", file.c_str());
    return 1;
  }
  nlohmann::json j = nlohmann::json::parse(f, nullptr, false);
  if (j.is_discarded()) {
    std::fprintf(stderr, "dfw-vmagent: %s is not JSON\n", file.c_str());
    return 1;
  }
  std::printf("vm              %s\n", j.value("vm", "").c_str());
  std::printf("connected       %s\n", j.value("connected", false) ? "yes" : "no");
  std::printf("revision        %llu\n",
              static_cast<unsigned long long>(j.value("applied_revision", 0ULL)));
  std::printf("audit only      %s\n", j.value("audit_all", false) ? "yes (audit-first)" : "no");
  std::printf(
      "repairs         %llu%s%s\n", static_cast<unsigned long long>(j.value("repairs", 0ULL)),
      j.value("last_repair", "").empty() ? "" : "  last: ", j.value("last_repair", "").c_str());
  std::printf("revalidated     %llu connections cut\n",
              static_cast<unsigned long long>(j.value("revalidated_deleted", 0ULL)));
  for (const auto& c : j.value("foreign_base_chains", nlohmann::json::array())) {
    std::printf("other chain     %s\n", c.get<std::string>().c_str());
  }
  if (!j.value("last_error", "").empty()) {
    std::printf("last error      %s\n", j.value("last_error", "").c_str());
  }
  std::printf("%-8s %-32s %12s %14s\n", "RULE", "POLICY/RULE", "PACKETS", "BYTES");
  for (const auto& r : j.value("rules", nlohmann::json::array())) {
    std::printf("%-8llu %-32s %12llu %14llu\n",
                static_cast<unsigned long long>(r.value("rule", 0ULL)),
                r.value("name", std::string()).c_str(),
                static_cast<unsigned long long>(r.value("packets", 0ULL)),
                static_cast<unsigned long long>(r.value("bytes", 0ULL)));
  }
  std::printf("%-16s %12s\n", "DROP REASON", "PACKETS");
  const nlohmann::json drops =
      j.value("drops", nlohmann::json::object());  // (items() of a temporary dangles)
  for (const auto& [reason, n] : drops.items()) {
    std::printf("%-16s %12llu\n", reason.c_str(),
                static_cast<unsigned long long>(n.get<uint64_t>()));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  dfw::vmagent::GuestAgentConfig cfg;
  cfg.status_file = "/run/dfw/vmagent.json";
  dfw::hostagent::SvidClientOptions svid_opts;
  svid_opts.cert_dir = "/var/lib/dfw/vmagent/svid";
  std::string token_file;
  bool insecure = false;
  std::string metrics_listen;
  bool metrics_insecure = false;
  bool status_cmd = argc > 1 && std::string(argv[1]) == "status";
  for (int i = status_cmd ? 2 : 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    auto value = [&](std::string* out) {
      if (i + 1 >= argc) return false;
      *out = argv[++i];
      return true;
    };
    std::string v;
    if (a == "--status-file" && value(&cfg.status_file)) continue;
    if (status_cmd) return Usage("status: unknown argument '" + a + "'");
    if (a == "--controller" && value(&cfg.controller_target)) continue;
    if (a == "--cert-dir" && value(&svid_opts.cert_dir)) continue;
    if (a == "--join-token-file" && value(&token_file)) continue;
    if (a == "--ca-bundle" && value(&svid_opts.ca_bundle)) continue;
    if (a == "--vm-uuid" && value(&cfg.facts.vm_uuid)) continue;
    if (a == "--hostname" && value(&cfg.facts.hostname)) continue;
    if (a == "--flow-log" && value(&cfg.flow_log)) continue;
    if (a == "--table" && value(&cfg.render.table)) continue;
    if (a == "--interface" && value(&v)) {
      cfg.facts.interfaces.push_back(v);
      continue;
    }
    if (a == "--insecure") {
      insecure = true;
      continue;
    }
    if (a == "--metrics-listen" && value(&metrics_listen)) continue;
    if (a == "--metrics-insecure") {
      metrics_insecure = true;
      continue;
    }
    if (a == "--tcp-loose") {
      cfg.strict_tcp_after = std::chrono::milliseconds(-1);
      continue;
    }
    if ((a == "--audit-first" || a == "--nflog-group") && value(&v)) {
      char* end = nullptr;
      long n = std::strtol(v.c_str(), &end, 10);
      if (v.empty() || *end != '\0' || n < 0 || n > 65535) {
        return Usage(a + ": a number from 0 to 65535, not '" + v + "'");
      }
      if (a == "--audit-first") {
        cfg.audit_first = std::chrono::seconds(n);
      } else {
        cfg.render.nflog_group = static_cast<uint16_t>(n);
      }
      continue;
    }
    return Usage("unknown or incomplete argument '" + a + "'");
  }
  if (status_cmd) return Status(cfg.status_file);
  if (cfg.controller_target.empty()) return Usage("--controller is required");
  dfw::hostagent::MetricsServerOptions metrics_opts;
  if (!metrics_listen.empty()) {
    auto hp = dfw::hostagent::MetricsServer::ParseListen(metrics_listen);
    if (!hp.ok()) return Usage("--metrics-listen: " + std::string(hp.status().message()));
    metrics_opts.host = hp->first;
    metrics_opts.port = hp->second;
    if (metrics_insecure && !dfw::trust::IsLoopbackHost(metrics_opts.host))
      return Usage("--metrics-insecure: --metrics-listen must be a loopback address");
    if (!metrics_insecure) metrics_opts.svid_dir = svid_opts.cert_dir;
  } else if (metrics_insecure) {
    return Usage("--metrics-insecure goes with --metrics-listen");
  }
  std::vector<std::string> controllers;
  {
    std::stringstream ss(cfg.controller_target);
    for (std::string t; std::getline(ss, t, ',');) controllers.push_back(t);
  }
  for (const std::string& t : controllers) {
    uint16_t port = 0;
    if (!ResolveController(t, &cfg.render.bypass.controller_ips, &port)) {
      return Usage("--controller: '" + t + "' is not HOST:PORT with a host that resolves");
    }
    if (cfg.render.bypass.controller_port != 0 && port != cfg.render.bypass.controller_port) {
      return Usage("--controller: '" + t + "' listens on port " + std::to_string(port) + ", '" +
                   controllers[0] + "' on " + std::to_string(cfg.render.bypass.controller_port) +
                   ": the controllers must share one port (the guest's bypass opens one)");
    }
    cfg.render.bypass.controller_port = port;
    if (insecure && !dfw::trust::IsLoopbackHostPort(t)) {
      return Usage("--insecure: the controller must be a loopback address, not '" + t + "'");
    }
  }

  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  std::signal(SIGPIPE, SIG_IGN);
  std::unique_ptr<dfw::hostagent::SvidClient> svid;
  if (insecure) {  // every controller is a loopback address (checked above)
    spdlog::warn("dfw-vmagent: INSECURE: plaintext session to {}", cfg.controller_target);
    cfg.credentials = grpc::InsecureChannelCredentials();
  } else {
    svid_opts.controller_target = cfg.controller_target;
    if (!token_file.empty()) svid_opts.join_token = ReadFirstLine(token_file);
    svid = std::make_unique<dfw::hostagent::SvidClient>(svid_opts);
    if (auto s = svid->Enroll([] { return g_stop.load(); }); !s.ok()) {
      std::fprintf(stderr, "dfw-vmagent: %s\n", s.ToString().c_str());
      return 1;
    }
    cfg.credentials = svid->Credentials();
    svid->Start();
  }
  std::string status_file = cfg.status_file;
  dfw::vmagent::GuestAgent agent(cfg);
  if (auto s = agent.Start(); !s.ok()) {
    std::fprintf(stderr, "dfw-vmagent: %s\n", s.ToString().c_str());
    return 1;
  }
  std::unique_ptr<dfw::hostagent::MetricsServer> metrics;
  if (!metrics_listen.empty()) {
    if (metrics_insecure) {
      spdlog::warn(
          "dfw-vmagent: INSECURE: GET /metrics in plain HTTP on {}, readable by anyone "
          "on this machine",
          metrics_listen);
    }
    metrics = std::make_unique<dfw::hostagent::MetricsServer>(
        metrics_opts, [&agent] { return agent.MetricsText(); });
    if (auto p = metrics->Start(); !p.ok()) {
      std::fprintf(stderr, "dfw-vmagent: --metrics-listen: %s\n", p.status().ToString().c_str());
      agent.Stop();
      if (svid) svid->Stop();
      return 1;
    }
  }
  std::printf("dfw-vmagent: started vm=%s controller=%s status=%s\n", agent.status().vm_id.c_str(),
              cfg.controller_target.c_str(), status_file.c_str());
  std::fflush(stdout);
  while (!g_stop.load()) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  if (metrics) metrics->Stop();
  agent.Stop();
  if (svid) svid->Stop();
  std::printf("dfw-vmagent: stopped (table inet %s stays in force)\n",
              cfg.render.table.empty() ? "dfw" : cfg.render.table.c_str());
  return 0;
}
