// dfw-dataplane: the DPDK poll-mode process that touches every packet.
//
//   dfw-dataplane [--api unix:PATH] [--api-allow-uid UID]... [--state-dir DIR]
//                 [--flow-log FILE] [--max-connections N] [--tcp-loose]
//                 [--no-keep-connections] [--exit-after-ms N] [--tx-port N] [--mbufs N]
//                 [--workers N [--port-per-worker]]
//                 -- <EAL arguments, e.g. -l 1 --vdev net_virtio_user0,path=SOCK,server=1>
//
// The local API (default unix:/run/dfw/dataplane.sock) rewrites the firewall,
// so it trusts only the kernel: the socket is 0600 in a directory created
// 0700, and each connection's peer uid (SO_PEERCRED) must be 0, this
// process's euid or an --api-allow-uid before gRPC sees it (api_socket.h).
// `--api HOST:PORT` (plaintext TCP, no peer check) is refused unless
// --api-insecure-tcp is given, and even then only on a loopback address.
//
// The firewall port is ethdev port 0 (a vdev: in production net_virtio_user
// as the vhost-user server, `--vdev net_virtio_user0,path=SOCK,server=1,
// queues=1`, with OVS's fw0 a dpdkvhostuserclient connecting to SOCK; EAL
// init waits for OVS's first connection, and after an ovs-vswitchd restart
// the link goes down and comes back up by itself (link-state interrupt); a
// stale SOCK left by a killed dataplane is removed at start; net_ring,
// net_pcap or net_null in tests).
// --workers N --port-per-worker: ports 0..N-1 (N vdevs: fw0..fwN-1, each
// with one queue), worker w reading and writing port w only; the host agent
// (--firewall-ports N) steers each vNIC to its owner worker's port, so no
// frame crosses between cores (without it: one port with N queues, and the
// frames of a vNIC read by another worker are handed to its owner).
// Allowed frames go back out of port 0, or of port N with --tx-port N (for
// benchmarks: read a pcap, send to net_null). --mbufs sizes the mbuf pool
// (net_pcap with infinite_rx keeps the whole pcap in it).
// --no-pci is always added: this process never touches the host's devices.
// At start the persisted state (DIR/state.pb) is loaded and enforced before
// the API opens; vNICs without rules drop everything. With --state-dir, a
// clean stop writes the connection table to DIR/connections.pb and the next
// start imports it before its worker runs (conn_snapshot.h): a restart or an
// upgrade keeps established connections. --no-keep-connections: neither.
#include <grpcpp/grpcpp.h>
#include <grpcpp/server_posix.h>
#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "api_socket.h"
#include "conn_snapshot.h"
#include "dataplane_state.h"
#include "local_api.h"
#include "port_worker.h"

using namespace dfw::dataplane;

namespace {

std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop.store(true); }

int Usage(FILE* out = stderr) {
  std::fprintf(
      out,
      "usage: dfw-dataplane [--api unix:PATH] [--api-allow-uid UID]...\n"
      "                     [--api HOST:PORT --api-insecure-tcp]  (loopback only)\n"
      "                     [--state-dir DIR] [--flow-log FILE]\n"
      "                     [--max-connections N] [--tcp-loose] [--no-keep-connections]\n"
      "                     [--workers N [--port-per-worker]] [--exit-after-ms N]\n"
      "                     [--tx-port N] [--mbufs N] -- <EAL args>\n"
      "  --workers N: N poll workers (1-16) on the first N EAL lcores (-l 0,1,...), each\n"
      "    on its own rx/tx queue of the port (net_virtio_user ...,queues=N); a vNIC and its\n"
      "    connections belong to worker local_id %% N; --max-connections is split evenly\n"
      "  --port-per-worker: worker w on port w instead (N vdevs, one queue each; the host\n"
      "    agent's --firewall-ports N steers each vNIC to its owner's port)\n");
  return 2;
}

// A numeric flag's value: all of `text` a decimal number within min..max.
// Otherwise false, after a usage error naming the flag.
template <typename T>
bool ParseFlag(const char* flag, const char* text, T min, T max, T* out) {
  T v{};
  const char* end = text ? text + std::strlen(text) : nullptr;
  auto [ptr, ec] = text ? std::from_chars(text, end, v) : std::from_chars_result{nullptr, {}};
  if (!text || *text == '\0' || ec != std::errc() || ptr != end || v < min || v > max) {
    std::fprintf(stderr, "dfw-dataplane: %s wants a number within %llu..%llu, not '%s'\n", flag,
                 static_cast<unsigned long long>(min), static_cast<unsigned long long>(max),
                 text ? text : "");
    return false;
  }
  *out = v;
  return true;
}

// Link changes of a port with link-state interrupts (net_virtio_user): logged
// on the EAL interrupt thread. In server mode (server=1) it is this interrupt
// that accepts OVS's (re)connection; the PMD re-initialises the rings itself.
int OnLinkChange(uint16_t port, rte_eth_event_type, void*, void*) {
  rte_eth_link link;
  std::memset(&link, 0, sizeof(link));
  rte_eth_link_get_nowait(port, &link);
  std::printf("dfw-dataplane: port %u link %s\n", port,
              link.link_status == RTE_ETH_LINK_UP ? "up" : "down");
  std::fflush(stdout);
  return 0;
}

// A net_virtio_user vdev in server mode binds its socket path, and bind fails
// while a file is there: a dataplane that was killed leaves its socket
// behind. Removes it when nobody listens on it (a running dataplane's socket
// stays, and EAL init then fails with DPDK's own message).
void RemoveStaleServerSocket(const std::string& vdev) {
  if (vdev.rfind("net_virtio_user", 0) != 0 || vdev.find(",server=1") == std::string::npos) return;
  const size_t at = vdev.find(",path=");
  if (at == std::string::npos) return;
  const std::string path = vdev.substr(at + 6, vdev.find(',', at + 6) - (at + 6));
  struct stat st;
  if (path.empty() || lstat(path.c_str(), &st) != 0 || !S_ISSOCK(st.st_mode)) return;
  sockaddr_un addr;
  std::memset(&addr, 0, sizeof(addr));
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) return;
  std::memcpy(addr.sun_path, path.c_str(), path.size());
  const int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  if (fd < 0) return;
  const bool refused =
      connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 && errno == ECONNREFUSED;
  close(fd);
  if (refused && unlink(path.c_str()) == 0)
    std::fprintf(stderr, "dfw-dataplane: removed the stale vhost-user socket %s\n", path.c_str());
}

bool SetupPort(uint16_t port, rte_mempool* pool, uint16_t queues) {
  rte_eth_conf conf;
  std::memset(&conf, 0, sizeof(conf));
  // Link-state interrupts where the port has them: net_virtio_user as a
  // vhost-user server (server=1) needs them to accept a reconnecting OVS
  // (dpdkvhostuserclient) after ovs-vswitchd restarted. The worker polls
  // regardless of the link: while it is down rx is empty and tx drops.
  rte_eth_dev_info info;
  if (rte_eth_dev_info_get(port, &info) != 0) return false;
  if (info.dev_flags && (*info.dev_flags & RTE_ETH_DEV_INTR_LSC)) {
    conf.intr_conf.lsc = 1;
    rte_eth_dev_callback_register(port, RTE_ETH_EVENT_INTR_LSC, OnLinkChange, nullptr);
  }
  if (info.max_rx_queues < queues || info.max_tx_queues < queues) {
    std::fprintf(stderr, "dfw-dataplane: port %u has %u rx / %u tx queues, --workers needs %u\n",
                 port, info.max_rx_queues, info.max_tx_queues, queues);
    return false;
  }
  if (rte_eth_dev_configure(port, queues, queues, &conf) != 0) return false;
  uint16_t rxd = 1024, txd = 1024;
  rte_eth_dev_adjust_nb_rx_tx_desc(port, &rxd, &txd);
  int socket = rte_eth_dev_socket_id(port);
  if (socket < 0) socket = 0;
  for (uint16_t q = 0; q < queues; ++q) {
    if (rte_eth_rx_queue_setup(port, q, rxd, static_cast<unsigned>(socket), nullptr, pool) != 0)
      return false;
    if (rte_eth_tx_queue_setup(port, q, txd, static_cast<unsigned>(socket), nullptr) != 0)
      return false;
  }
  if (rte_eth_dev_start(port) != 0) return false;
  rte_eth_promiscuous_enable(port);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  std::string api = "unix:/run/dfw/dataplane.sock", state_dir, flow_log;
  uint64_t exit_after_ms = 0;
  int tx_port = -1;
  uint32_t mbufs = 8191, workers = 1;
  bool api_insecure_tcp = false, keep_connections = true, port_per_worker = false;
  std::vector<uid_t> api_allow_uids;
  PipelineConfig pc;
  int i = 1;
  for (; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    if (a == "--") {
      ++i;
      break;
    } else if (a == "-h" || a == "--help") {
      Usage(stdout);
      return 0;
    } else if (a == "--api") {
      const char* v = next();
      if (!v) return Usage();
      api = v;
    } else if (a == "--api-insecure-tcp") {
      api_insecure_tcp = true;
    } else if (a == "--api-allow-uid") {
      uint32_t uid = 0;
      if (!ParseFlag<uint32_t>("--api-allow-uid", next(), 0, 0xfffffffe, &uid)) return Usage();
      api_allow_uids.push_back(static_cast<uid_t>(uid));
    } else if (a == "--state-dir") {
      const char* v = next();
      if (!v) return Usage();
      state_dir = v;
    } else if (a == "--flow-log") {
      const char* v = next();
      if (!v) return Usage();
      flow_log = v;
    } else if (a == "--max-connections") {
      if (!ParseFlag<uint32_t>("--max-connections", next(), 1, 1u << 31,
                               &pc.conntrack.max_connections))
        return Usage();
    } else if (a == "--tcp-loose") {
      pc.conntrack.tcp_loose = true;
    } else if (a == "--no-keep-connections") {
      keep_connections = false;
    } else if (a == "--exit-after-ms") {
      if (!ParseFlag<uint64_t>("--exit-after-ms", next(), 0, UINT64_MAX, &exit_after_ms))
        return Usage();
    } else if (a == "--tx-port") {
      if (!ParseFlag<int>("--tx-port", next(), 0, RTE_MAX_ETHPORTS - 1, &tx_port)) return Usage();
    } else if (a == "--workers") {
      if (!ParseFlag<uint32_t>("--workers", next(), 1, VnicTable::kMaxWorkers, &workers))
        return Usage();
    } else if (a == "--port-per-worker") {
      port_per_worker = true;
    } else if (a == "--mbufs") {
      if (!ParseFlag<uint32_t>("--mbufs", next(), 1, UINT32_MAX, &mbufs)) return Usage();
    } else {
      return Usage();
    }
  }
  // The API endpoint is checked before the (slow) EAL start: a refused one
  // never gets as far as touching a port.
  ApiEndpoint endpoint;
  if (std::string why = ParseApiEndpoint(api, api_insecure_tcp, &endpoint); !why.empty()) {
    std::fprintf(stderr, "dfw-dataplane: refusing to start: %s\n", why.c_str());
    return 2;
  }
  if (endpoint.kind == ApiEndpoint::Kind::kTcp && !api_allow_uids.empty()) {
    std::fprintf(stderr,
                 "dfw-dataplane: refusing to start: --api-allow-uid needs a unix socket "
                 "(TCP carries no peer uid)\n");
    return 2;
  }
  if (endpoint.kind == ApiEndpoint::Kind::kUnix) {
    if (std::string why = ApiSocket::CheckPath(endpoint.path); !why.empty()) {
      std::fprintf(stderr, "dfw-dataplane: refusing to start: --api %s\n", why.c_str());
      return 1;
    }
  }
  std::vector<std::string> eal_args = {"dfw-dataplane"};
  bool no_pci = false;
  for (; i < argc; ++i) {
    eal_args.push_back(argv[i]);
    no_pci = no_pci || eal_args.back() == "--no-pci";
    const std::string& e = eal_args.back();
    if (e.rfind("--vdev=", 0) == 0) RemoveStaleServerSocket(e.substr(7));
    if (e == "--vdev" && i + 1 < argc) RemoveStaleServerSocket(argv[i + 1]);
  }
  if (!no_pci) eal_args.push_back("--no-pci");
  std::vector<char*> eal_argv;
  for (auto& s : eal_args) eal_argv.push_back(s.data());
  if (rte_eal_init(static_cast<int>(eal_argv.size()), eal_argv.data()) < 0) {
    std::fprintf(stderr, "dfw-dataplane: EAL init failed: %s\n", rte_strerror(rte_errno));
    return 1;
  }
  if (rte_eth_dev_count_avail() < 1) {
    std::fprintf(stderr,
                 "dfw-dataplane: no port; give one vdev, e.g. --vdev "
                 "net_virtio_user0,path=SOCK,server=1,queues=1\n");
    return 1;
  }
  if (rte_lcore_count() < workers) {
    std::fprintf(stderr,
                 "dfw-dataplane: --workers %u needs %u EAL lcores, EAL has %u (give -l with %u "
                 "cores, e.g. -l 0-%u)\n",
                 workers, workers, rte_lcore_count(), workers, workers - 1);
    return 1;
  }
  // One port with a queue per worker, or (--port-per-worker) a port per
  // worker with one queue each.
  const uint16_t rx_ports = port_per_worker ? static_cast<uint16_t>(workers) : 1;
  const uint16_t queues = port_per_worker ? 1 : static_cast<uint16_t>(workers);
  if (tx_port >= 0 && tx_port < rx_ports) {
    std::fprintf(stderr, "dfw-dataplane: --tx-port %d is a firewall port (0..%u)\n", tx_port,
                 rx_ports - 1);
    return 2;
  }
  if (rte_eth_dev_count_avail() < rx_ports) {
    std::fprintf(stderr,
                 "dfw-dataplane: --port-per-worker with --workers %u needs %u ports (vdevs "
                 "net_virtio_user0..%u), EAL has %u\n",
                 workers, rx_ports, rx_ports - 1, rte_eth_dev_count_avail());
    return 1;
  }
  rte_mempool* pool = rte_pktmbuf_pool_create("dfw_mbufs", mbufs, 256, 0, RTE_MBUF_DEFAULT_BUF_SIZE,
                                              static_cast<int>(rte_socket_id()));
  for (uint16_t p = 0; p < rx_ports; ++p) {
    if (!pool || !SetupPort(p, pool, queues)) {
      std::fprintf(stderr, "dfw-dataplane: port %u setup failed: %s\n", p, rte_strerror(rte_errno));
      return 1;
    }
  }
  if (tx_port > 0) {
    if (!rte_eth_dev_is_valid_port(static_cast<uint16_t>(tx_port)) ||
        !SetupPort(static_cast<uint16_t>(tx_port), pool, static_cast<uint16_t>(workers))) {
      std::fprintf(stderr, "dfw-dataplane: tx port %d setup failed (give a second vdev)\n",
                   tx_port);
      return 1;
    }
  }

  VnicTable vnics(workers);
  CaptureTable captures(&vnics);
  // Each worker's table holds its own vNICs' connections: the global limit
  // is shared out evenly.
  pc.conntrack.max_connections = std::max<uint32_t>(1, pc.conntrack.max_connections / workers);
  std::vector<std::unique_ptr<Pipeline>> pipelines;
  std::vector<Pipeline*> pipeline_ptrs;
  std::vector<ConnTable*> tables;
  for (uint32_t w = 0; w < workers; ++w) {
    pipelines.push_back(std::make_unique<Pipeline>(&vnics, pc, w));
    pipelines.back()->SetCaptures(&captures);
    pipeline_ptrs.push_back(pipelines.back().get());
    tables.push_back(&pipelines.back()->conntrack());
  }
  if (!state_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(state_dir, ec);
    if (ec) {
      std::fprintf(stderr, "dfw-dataplane: --state-dir %s: %s\n", state_dir.c_str(),
                   ec.message().c_str());
      return 1;
    }
  }
  DataplaneState state(&vnics, state_dir.empty() ? "" : state_dir + "/state.pb");
  // A state file that is there but is no valid saved state (0 bytes, a
  // directory, unparsable, refused) stops the start: enforcing nothing in its
  // place would overwrite it at the first API call. A missing file is a
  // first start.
  if (auto st = state.Load(); !st.ok()) {
    std::fprintf(stderr,
                 "dfw-dataplane: refusing to start: the persisted state is not a valid saved "
                 "state: %s (move it away to start with no state: every vNIC then drops until "
                 "its rules arrive)\n",
                 st.message().c_str());
    return 1;
  }
  // The connections the last clean stop kept, before the worker runs.
  const std::string snapshot = state_dir.empty() ? "" : state_dir + "/connections.pb";
  if (!snapshot.empty()) {
    SnapshotResult r;
    if (!keep_connections) {
      unlink(snapshot.c_str());  // an older stop's: never imported later
    } else if (Status st = LoadConnections(snapshot, tables, state, MonotonicMs(), &r); !st.ok()) {
      std::fprintf(stderr, "dfw-dataplane: connections of the last stop not restored: %s\n",
                   st.message().c_str());
    } else if (r.entries || r.expired || r.unknown || r.rejected) {
      std::printf(
          "dfw-dataplane: restored %u connections of %u vNICs from the last stop (%u expired "
          "while down, %u of vNICs no longer here, %u refused%s%s)\n",
          r.entries, r.vnics, r.expired, r.unknown, r.rejected, r.first_error.empty() ? "" : ": ",
          r.first_error.c_str());
    }
  }
  std::unique_ptr<WorkerRings> rings;
  if (workers > 1) {
    std::string error;
    rings = WorkerRings::Create("dfw_redispatch", workers, 4096, &error);
    if (!rings) {
      std::fprintf(stderr, "dfw-dataplane: %s\n", error.c_str());
      return 1;
    }
  }
  std::vector<std::unique_ptr<PortWorker>> port_workers;
  std::vector<PortWorker*> worker_ptrs;
  for (uint32_t w = 0; w < workers; ++w) {
    PortWorkerConfig wc;
    wc.tx_port = tx_port;
    wc.port = port_per_worker ? static_cast<uint16_t>(w) : 0;
    wc.queue = port_per_worker ? 0 : static_cast<uint16_t>(w);
    wc.tx_queue = tx_port >= 0 ? static_cast<int32_t>(w) : -1;  // tx_port: a queue per worker
    wc.rings = rings.get();
    wc.index = w;
    port_workers.push_back(std::make_unique<PortWorker>(pipelines[w].get(), pool, wc));
    worker_ptrs.push_back(port_workers.back().get());
  }

  std::FILE* sink = flow_log.empty() ? nullptr : std::fopen(flow_log.c_str(), "a");
  if (!flow_log.empty() && !sink)
    std::fprintf(stderr, "dfw-dataplane: cannot open %s\n", flow_log.c_str());
  LocalApi service(&state, pipeline_ptrs, worker_ptrs);
  service.SetFirewallPorts(rx_ports);
  service.SetCaptures(&captures);
  // A unix socket is ours (ApiSocket: 0600, peer uid checked) and gRPC gets
  // only the admitted connections; the server itself listens on nothing.
  // TCP (--api-insecure-tcp, loopback) is gRPC's own listener.
  std::unique_ptr<ApiSocket> api_socket;
  if (endpoint.kind == ApiEndpoint::Kind::kUnix) {
    std::string error;
    api_socket = ApiSocket::Open(endpoint.path, api_allow_uids, &error);
    if (!api_socket) {
      std::fprintf(stderr, "dfw-dataplane: api: %s\n", error.c_str());
      return 1;
    }
    service.SetRefusedConnections([s = api_socket.get()] { return s->refused(); });
  }
  grpc::ServerBuilder builder;
  int tcp_port = 0;
  if (endpoint.kind == ApiEndpoint::Kind::kTcp) {
    std::fprintf(stderr,
                 "dfw-dataplane: WARNING: the local API listens on plaintext TCP %s "
                 "(--api-insecure-tcp): every local user can rewrite the firewall\n",
                 endpoint.host_port.c_str());
    builder.AddListeningPort(endpoint.host_port, grpc::InsecureServerCredentials(), &tcp_port);
  }
  // A vNIC's connections travel in one Export/ImportConnections message
  // (about 60 bytes each; 100k is 6 MB, over gRPC's default 4 MB).
  builder.SetMaxReceiveMessageSize(256 << 20);
  builder.SetMaxSendMessageSize(256 << 20);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || (endpoint.kind == ApiEndpoint::Kind::kTcp && tcp_port == 0)) {
    std::fprintf(stderr, "dfw-dataplane: cannot listen on %s\n", api.c_str());
    return 1;
  }
  if (api_socket) {
    grpc::Server* srv = server.get();
    api_socket->Start([srv](int fd) { grpc::AddInsecureChannelFromFd(srv, fd); });
  } else {
    // The port gRPC picked for HOST:0.
    api =
        endpoint.host_port.substr(0, endpoint.host_port.rfind(':') + 1) + std::to_string(tcp_port);
  }
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  std::printf("dfw-dataplane: ready api=%s vnics=%zu revision=%llu workers=%u ports=%u\n",
              api.c_str(), state.Vnics().size(),
              static_cast<unsigned long long>(state.applied_revision()), workers, rx_ports);
  std::fflush(stdout);
  // The control loop (flow records, shutdown) on a plain thread; the worker
  // on this, the EAL main lcore's thread, so its mempool accesses use the
  // per-lcore cache instead of the pool's shared ring.
  std::thread control([&] {
    uint64_t start = MonotonicMs();
    while (!g_stop.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      service.DrainFlows(sink);
      service.SweepCaptures();
      if (exit_after_ms && MonotonicMs() - start > exit_after_ms) break;
    }
    if (api_socket) api_socket->Stop();  // no new connection for a server shutting down
    server->Shutdown();
    for (auto& w : port_workers) w->Stop();
  });
  const auto worker_start = std::chrono::steady_clock::now();
  // Workers 1..N-1 on the next EAL lcores, worker 0 on this one.
  uint32_t launched = 1;
  unsigned lcore = 0;
  RTE_LCORE_FOREACH_WORKER(lcore) {
    if (launched == workers) break;
    rte_eal_remote_launch(
        [](void* w) {
          static_cast<PortWorker*>(w)->Run();
          return 0;
        },
        port_workers[launched++].get(), lcore);
  }
  port_workers[0]->Run();
  rte_eal_mp_wait_lcore();
  control.join();
  const auto worker_us = std::chrono::duration_cast<std::chrono::microseconds>(
                             std::chrono::steady_clock::now() - worker_start)
                             .count();
  service.DrainFlows(sink);
  // The worker has stopped: its connection table is still, kept for the
  // next start (a crash keeps nothing).
  if (!snapshot.empty() && keep_connections) {
    SnapshotResult r;
    const std::vector<const ConnTable*> stopped(tables.begin(), tables.end());
    if (Status st = SaveConnections(snapshot, stopped, state, MonotonicMs(), &r); !st.ok()) {
      std::fprintf(stderr, "dfw-dataplane: connections not kept for the next start: %s\n",
                   st.message().c_str());
    } else {
      std::printf("dfw-dataplane: kept %u connections of %u vNICs for the next start\n", r.entries,
                  r.vnics);
    }
  }
  uint64_t rx = 0, tx = 0, forwarded = 0, redispatched = 0;
  for (uint32_t w = 0; w < workers; ++w) {
    const PortWorker& pw = *port_workers[w];
    rx += pw.rx_packets();
    tx += pw.tx_packets();
    redispatched += pw.redispatched();
    forwarded += pipelines[w]->counters().forwarded.Get();
    if (workers > 1) {
      std::printf(
          "dfw-dataplane: worker %u rx=%llu tx=%llu tx_dropped=%llu redispatched=%llu "
          "forwarded=%llu idle_sleeps=%llu\n",
          w, static_cast<unsigned long long>(pw.rx_packets()),
          static_cast<unsigned long long>(pw.tx_packets()),
          static_cast<unsigned long long>(pw.tx_dropped()),
          static_cast<unsigned long long>(pw.redispatched()),
          static_cast<unsigned long long>(pipelines[w]->counters().forwarded.Get()),
          static_cast<unsigned long long>(pw.idle_sleeps()));
    }
  }
  // Frames between workers when they stopped: neither forwarded nor dropped.
  const uint64_t in_flight = rings ? rings->InFlight() : 0;
  std::printf(
      "dfw-dataplane: stopped rx=%llu tx=%llu forwarded=%llu dropped=%llu worker_us=%lld "
      "workers=%u redispatched=%llu in_flight=%llu\n",
      static_cast<unsigned long long>(rx), static_cast<unsigned long long>(tx),
      static_cast<unsigned long long>(forwarded),
      static_cast<unsigned long long>(rx - forwarded - in_flight),
      static_cast<long long>(worker_us), workers, static_cast<unsigned long long>(redispatched),
      static_cast<unsigned long long>(in_flight));
  if (sink) std::fclose(sink);
  rings.reset();  // frames still in flight between workers go back to the pool
  for (uint16_t p = 0; p < rx_ports; ++p) {
    rte_eth_dev_stop(p);
    rte_eth_dev_close(p);
  }
  if (tx_port > 0) {
    rte_eth_dev_stop(static_cast<uint16_t>(tx_port));
    rte_eth_dev_close(static_cast<uint16_t>(tx_port));
  }
  rte_eal_cleanup();
  return 0;
}
