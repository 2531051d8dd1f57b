// dfw-hostagent: the local control plane of one hypervisor.
//
//   dfw-hostagent --dataplane unix:PATH --ovsdb PATH [--ovs-rundir DIR]
//                 [--bridge br-dfw] [--firewall-port fw0] [--firewall-ports N]
//                 [--firewall-port-type dpdkvhostuserclient] [--firewall-socket PATH]
//                 [--libvirt URI]... [--controller HOST:PORT[,HOST:PORT...]]
//                 [--host-id ID] [--hostname NAME] [--resync-ms N]
//                 [--cert-dir DIR] [--join-token-file FILE --ca-bundle FILE]
//                 [--insecure] [--metrics-listen ADDR:PORT [--metrics-insecure]]
//                 [--metrics-per-vnic]
//
// Trust: the session to the controller is mutual TLS with the host's SVID
// in --cert-dir (default /var/lib/dfw/hostagent/svid; spiffe-helper's
// layout). Without one there, the agent enrolls first: it reads the
// one-time token (dfwctl enroll create --host ID) from --join-token-file,
// verifies the controller with --ca-bundle, and keeps the certificate it
// gets; it renews it at half-life without a restart. --insecure (plaintext)
// is refused unless the controller address is loopback.
//
// --libvirt may be given several times (default: qemu:///system; "none" for
// no libvirt). --host-id defaults to /etc/machine-id, --hostname to the
// system's. The OpenFlow target is unix:<ovs-rundir>/<bridge>.mgmt
// (--ovs-rundir defaults to /var/run/openvswitch). The firewall port is
// created if missing: type dpdkvhostuserclient with
// options:vhost-server-path=<--firewall-socket>, default
// <ovs-rundir>/<firewall-port>.sock, the socket dfw-dataplane serves
// (--vdev net_virtio_user0,path=<that socket>,server=1,queues=1); OVS
// connects to it and reconnects after either side restarted.
// --firewall-ports N (1-16, default 1): one firewall port per dataplane
// worker, for dfw-dataplane --workers N --port-per-worker. They are named
// from --firewall-port counting up (fw0, fw1, ...), each with its socket
// <ovs-rundir>/<port>.sock, and each vNIC is steered to its owner worker's
// port (local id % N), so no frame is handed between the dataplane's cores.
// --metrics-listen ADDR:PORT (off by default) serves GET /metrics
// (Prometheus text format; docs/architecture.md, "Metrics") over HTTPS with
// the agent's SVID from --cert-dir, to users of role viewer and above of
// its trust domain (mutual TLS; metrics_server.h). --metrics-insecure: plain
// HTTP to anyone, refused unless ADDR is loopback, logged as a warning.
// --metrics-per-vnic adds the dataplane's series per vNIC (cardinality).
// SIGINT/SIGTERM stop the agent; flows, ports and the dataplane's state are
// left in place (the agent holds no state: a new one reconciles without
// disturbing traffic).
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "dfw/hostagent/agent_metrics.h"
#include "dfw/hostagent/controller_session.h"
#include "dfw/hostagent/host_agent.h"
#include "dfw/hostagent/metrics_server.h"
#include "dfw/hostagent/svid_client.h"
#include "dfw/trust/loopback.h"

namespace {

std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop.store(true); }

constexpr const char kUsage[] =
    "usage: dfw-hostagent --dataplane unix:PATH --ovsdb PATH [--ovs-rundir DIR]\n"
    "         [--bridge NAME] [--firewall-port NAME] [--firewall-ports N]\n"
    "         [--firewall-port-type TYPE] [--firewall-socket PATH]\n"
    "         [--libvirt URI]... [--controller HOST:PORT[,...]] [--host-id ID]\n"
    "         [--hostname NAME] [--resync-ms N]\n"
    "         [--cert-dir DIR] [--join-token-file FILE --ca-bundle FILE] [--insecure]\n"
    "         [--metrics-listen ADDR:PORT [--metrics-insecure]] [--metrics-per-vnic]\n";

int Usage(const char* msg) {
  std::fprintf(stderr, "dfw-hostagent: %s\n%s", msg, kUsage);
  return 2;
}

// The names of `count` firewall ports from the first one's: a trailing
// number counts up ("fw0" -> fw0, fw1, ...), any other name gets 1, 2, ...
// from the second port on.
std::vector<std::string> FirewallPortNames(const std::string& first, uint32_t count) {
  size_t digits = first.size();
  while (digits > 0 && std::isdigit(static_cast<unsigned char>(first[digits - 1]))) --digits;
  if (first.size() - digits > 6) digits = first.size();  // not a counter: appended to
  const std::string stem = first.substr(0, digits);
  const uint32_t base = digits < first.size() ? std::stoul(first.substr(digits)) : 0;
  std::vector<std::string> names = {first};
  for (uint32_t k = 1; k < count; ++k) names.push_back(stem + std::to_string(base + k));
  return names;
}

std::string ReadFirstLine(const char* path) {
  std::ifstream f(path);
  std::string s;
  std::getline(f, s);
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  dfw::hostagent::HostAgentConfig cfg;
  std::string rundir = "/var/run/openvswitch";
  bool no_libvirt = false;
  bool insecure = false;
  dfw::hostagent::SvidClientOptions svid_opts;
  svid_opts.cert_dir = "/var/lib/dfw/hostagent/svid";
  std::string token_file;
  std::string firewall_port = "fw0", firewall_socket;
  uint32_t firewall_ports = 1;
  std::string metrics_listen;
  bool metrics_insecure = false;
  bool metrics_per_vnic = false;
  for (int i = 1; i < argc; ++i) {
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
    if (a == "--dataplane" && value(&cfg.dataplane_target)) continue;
    if (a == "--ovsdb" && value(&cfg.ovsdb_socket)) continue;
    if (a == "--ovs-rundir" && value(&rundir)) continue;
    if (a == "--bridge" && value(&cfg.bridge)) continue;
    if (a == "--firewall-port" && value(&firewall_port)) continue;
    if (a == "--firewall-port-type" && value(&cfg.firewall_port_type)) continue;
    if (a == "--firewall-socket" && value(&firewall_socket)) continue;
    if (a == "--firewall-ports" && value(&v)) {
      char* end = nullptr;
      const long n = std::strtol(v.c_str(), &end, 10);
      if (v.empty() || *end != '\0' || n < 1 || n > 16)
        return Usage("--firewall-ports: a number of ports within 1..16 (one per dataplane worker)");
      firewall_ports = static_cast<uint32_t>(n);
      continue;
    }
    if (a == "--controller" && value(&cfg.controller_target)) continue;
    if (a == "--host-id" && value(&cfg.host_id)) continue;
    if (a == "--hostname" && value(&cfg.hostname)) continue;
    if (a == "--cert-dir" && value(&svid_opts.cert_dir)) continue;
    if (a == "--join-token-file" && value(&token_file)) continue;
    if (a == "--ca-bundle" && value(&svid_opts.ca_bundle)) continue;
    if (a == "--insecure") {
      insecure = true;
      continue;
    }
    if (a == "--metrics-listen" && value(&metrics_listen)) continue;
    if (a == "--metrics-insecure") {
      metrics_insecure = true;
      continue;
    }
    if (a == "--metrics-per-vnic") {
      metrics_per_vnic = true;
      continue;
    }
    if (a == "--libvirt" && value(&v)) {
      if (v == "none") {
        no_libvirt = true;
      } else {
        cfg.libvirt_uris.push_back(v);
      }
      continue;
    }
    if (a == "--resync-ms" && value(&v)) {
      char* end = nullptr;
      long ms = std::strtol(v.c_str(), &end, 10);
      if (*end != '\0' || ms < 100) return Usage("--resync-ms: a number of milliseconds >= 100");
      cfg.resync_interval = std::chrono::milliseconds(ms);
      continue;
    }
    return Usage(("unknown or incomplete argument '" + a + "'").c_str());
  }
  if (cfg.dataplane_target.empty()) return Usage("--dataplane is required");
  if (cfg.ovsdb_socket.empty()) return Usage("--ovsdb is required");
  if (cfg.libvirt_uris.empty() && !no_libvirt) cfg.libvirt_uris.push_back("qemu:///system");
  if (no_libvirt) cfg.libvirt_uris.clear();
  if (cfg.host_id.empty()) cfg.host_id = ReadFirstLine("/etc/machine-id");
  if (cfg.host_id.empty()) return Usage("--host-id: none given and /etc/machine-id is empty");
  if (cfg.hostname.empty()) {
    char buf[256] = {};
    gethostname(buf, sizeof(buf) - 1);
    cfg.hostname = buf;
  }
  cfg.openflow_target = "unix:" + rundir + "/" + cfg.bridge + ".mgmt";
  if (!firewall_socket.empty() && firewall_ports > 1)
    return Usage(
        "--firewall-socket names one port's socket; with --firewall-ports N each port's is "
        "<ovs-rundir>/<port>.sock");
  cfg.firewall_ports = FirewallPortNames(firewall_port, firewall_ports);
  dfw::hostagent::MetricsServerOptions metrics_opts;
  if (!metrics_listen.empty()) {
    auto hp = dfw::hostagent::MetricsServer::ParseListen(metrics_listen);
    if (!hp.ok()) return Usage(std::string(hp.status().message()).c_str());
    metrics_opts.host = hp->first;
    metrics_opts.port = hp->second;
    if (metrics_insecure && !dfw::trust::IsLoopbackHost(metrics_opts.host))
      return Usage("--metrics-insecure: --metrics-listen must be a loopback address");
    if (!metrics_insecure) metrics_opts.svid_dir = svid_opts.cert_dir;
  } else if (metrics_insecure || metrics_per_vnic) {
    return Usage("--metrics-insecure and --metrics-per-vnic go with --metrics-listen");
  }
  for (const std::string& port : cfg.firewall_ports)
    cfg.firewall_sockets.push_back(firewall_socket.empty() ? rundir + "/" + port + ".sock"
                                                           : firewall_socket);

  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  std::unique_ptr<dfw::hostagent::SvidClient> svid;
  if (!cfg.controller_target.empty()) {
    if (insecure) {
      for (const auto& t : dfw::hostagent::ControllerSession::SplitTargets(cfg.controller_target)) {
        if (!dfw::trust::IsLoopbackHostPort(t)) {
          return Usage("--insecure: the controller must be a loopback address");
        }
      }
      spdlog::warn("dfw-hostagent: INSECURE: plaintext session to {}", cfg.controller_target);
      cfg.controller_credentials = grpc::InsecureChannelCredentials();
    } else {
      svid_opts.controller_target = cfg.controller_target;
      if (!token_file.empty()) svid_opts.join_token = ReadFirstLine(token_file.c_str());
      svid = std::make_unique<dfw::hostagent::SvidClient>(svid_opts);
      if (auto s = svid->Enroll([] { return g_stop.load(); }); !s.ok()) {
        std::fprintf(stderr, "dfw-hostagent: %s\n", s.ToString().c_str());
        return 1;
      }
      cfg.controller_credentials = svid->Credentials();
      svid->Start();
    }
  }
  // A write to the OpenFlow socket of an ovs-vswitchd that just restarted
  // must fail with EPIPE (the agent reconnects), not end the process.
  std::signal(SIGPIPE, SIG_IGN);
  auto edges = dfw::hostagent::MakeRealEdges(cfg);
  if (!edges.ok()) {
    std::fprintf(stderr, "dfw-hostagent: %s\n", edges.status().ToString().c_str());
    return 1;
  }
  dfw::hostagent::HostAgent agent(cfg, std::move(*edges));
  if (auto s = agent.Start(); !s.ok()) {
    std::fprintf(stderr, "dfw-hostagent: %s\n", s.ToString().c_str());
    return 1;
  }
  std::unique_ptr<dfw::hostagent::MetricsServer> metrics;
  if (!metrics_listen.empty()) {
    dfw::hostagent::AgentMetricsOptions mo;
    mo.per_vnic = metrics_per_vnic;
    if (svid || !metrics_insecure) mo.svid_dir = svid_opts.cert_dir;
    metrics = std::make_unique<dfw::hostagent::MetricsServer>(
        metrics_opts, [&agent, mo] { return dfw::hostagent::ScrapeAgent(agent, mo); });
    auto port = metrics->Start();
    if (!port.ok()) {
      std::fprintf(stderr, "dfw-hostagent: --metrics-listen %s: %s\n", metrics_listen.c_str(),
                   port.status().ToString().c_str());
      agent.Stop();
      return 1;
    }
    if (metrics_insecure) {
      spdlog::warn(
          "dfw-hostagent: INSECURE: GET /metrics in plain HTTP, without authentication, on "
          "{}:{} (--metrics-insecure)",
          metrics_opts.host, *port);
    } else {
      spdlog::info(
          "dfw-hostagent: GET /metrics on https://{}:{} (mutual TLS, users of role "
          "viewer and above)",
          metrics_opts.host, *port);
    }
  }
  std::string uris;
  for (const auto& u : cfg.libvirt_uris) uris += (uris.empty() ? "" : ",") + u;
  std::string ports;
  for (const auto& p : cfg.firewall_ports) ports += (ports.empty() ? "" : ",") + p;
  std::printf(
      "dfw-hostagent: started host=%s bridge=%s firewall-ports=%s libvirt=%s controller=%s\n",
      cfg.host_id.c_str(), cfg.bridge.c_str(), ports.c_str(), uris.empty() ? "none" : uris.c_str(),
      cfg.controller_target.empty() ? "none" : cfg.controller_target.c_str());
  std::fflush(stdout);
  while (!g_stop.load()) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  if (metrics) metrics->Stop();
  agent.Stop();
  if (svid) svid->Stop();
  std::printf("dfw-hostagent: stopped\n");
  return 0;
}
