// Controller benchmark: host sessions at scale over real gRPC streams.
//
//   bench_controller [--hosts 1000] [--vms 100000] [--groups 10000]
//                    [--rules 20000] [--changes 100] [--settle-ms 500]
//                    [--moves 20] [--move-connections 10000]
//                    [--data-dir DIR] [--channel-per-host] [--tls] [--etcd]
//                    [--resume] [--failover [--cold-standby] [--failover-kill]]
//
// Environment: DFW_BENCH_CONTROLLER=PATH runs that dfw-controller binary
// instead of the one built with the bench (to compare two builds with one
// bench); DFW_BENCH_EXTRA_WAIT_MS, DFW_BENCH_VERBOSE as below.
//
// Spawns the real dfw-controller (its own process, so its memory is its
// own), loads groups and policies through the gRPC API (each write is one
// RocksDB WriteBatch with a synced WAL; with --etcd one etcd transaction),
// then opens --hosts HostSession
// streams from this one process (gRPC callback API); each simulated host
// registers 1/hosts of the VMs (with tags and one vNIC each) and acks every
// revision it receives.
//
// Transport. Default: plaintext (dfw-controller --insecure), the hosts'
// streams spread over 16 shared channels (connections). --channel-per-host:
// one channel, so one connection, per host, as real host agents have.
// --tls (implies --channel-per-host, since each host has its own
// certificate): before the controller starts, a CA for trust domain
// "bench.test" is made in DIR/pki/ca with dfw::trust, the controller's SVID
// (server_auth, SANs 127.0.0.1 and localhost) is written to
// DIR/pki/controller and the controller runs with --pki-dir DIR/pki (mutual
// TLS); the API channel uses an admin user's certificate and every host its
// own spiffe://bench.test/host/<host id> certificate. Issuance (a new EC
// P-256 key per certificate) is timed on its own, not as registration.
// Compare --channel-per-host with --tls: same connection shape, the only
// difference is TLS.
//
// Store. Default: the embedded RocksDB (dfw-controller --data-dir DIR/db).
// --etcd: the bench starts one etcd member of its own (/usr/bin/etcd, data
// dir DIR/etcd, client and peer URLs on free loopback ports, log
// DIR/etcd.log) and runs the controller with --etcd-endpoints against it
// (plaintext: loopback); everything else is the same. etcd runs with
// --max-txn-ops kEtcdMaxTxnOps and --max-request-bytes kEtcdMaxRequestBytes,
// and the controller with the same --etcd-max-txn-ops/-request-bytes: a
// registration batch (up to 128 Hellos and 5,000 VMs, host_session_service.h)
// is one transaction of a put and a change-log entry per VM and per host,
// ~10,300 operations and ~1.5 MB at most, above etcd's defaults (128
// operations, 1.5 MiB), which the controller would refuse whole. The
// restart phase restarts the controller against the same etcd (it loads the
// model from etcd). etcd is stopped by its pid and its data dir removed at
// the end, also when the bench fails (an exit handler, SIGINT/SIGTERM taken
// by a thread, and PR_SET_PDEATHSIG should the bench itself be killed).
//
// Takeover (--etcd --failover): a second dfw-controller, --name
// bench-standby, its own port and log (DIR/controller-standby.log), starts
// as a standby right after the leader, before any write, so it follows
// every one (warm; with --cold-standby it runs with --cold-standby and loads
// the store only once elected). In place of the restart phase the leader is
// sent SIGTERM (it revokes its lease: the standby is elected at once; with
// --failover-kill SIGKILL, and the standby waits for the lease's TTL) with
// every host attached, and measured from the signal: the standby accepting
// an API write (PutGroup), the takeover time the standby logs ("took over
// in N ms: ..."), every host reconnected to the standby's address with its
// full state (each once its session to the old leader ended; a session the
// standby answers UNAVAILABLE is opened again after >= 100 ms), and the
// standby's RSS before the failover. Not with --resume.
//
// Measures:
//   - API write rate (PutGroup / PutPolicy / Tag, synced WAL);
//   - cold registration: first Hello sent -> every host holds its full state;
//   - tag change -> last affected host has its delta (p50 / p99 / max),
//     one change at a time, each given --settle-ms for stragglers;
//   - VM moves (live migration), one at a time: the destination host
//     reports the VM (a claim), then from the moment the source sends its
//     ConnectionExport chunks and the InventoryUpdate removing the VM:
//     -> the destination has every ConnectionImport entry, -> the
//     destination has the delta with the VM's vNIC ruleset (and the source
//     the delta removing it); the imports must come before that delta;
//   - controller restart: load from RocksDB (or etcd), then all hosts
//     reconnect and get full state (and the time until every host's ack of
//     it is written);
//     with --resume the hosts resume instead: each HostSim keeps what it
//     holds (HeldState: its revision, per vNIC the digest of its ruleset,
//     per address set its content, interned fleet-wide by SetInterner since
//     at full size each host holds ~125,000 prefixes) and its reconnect
//     Hello carries held_revision and the digests (HostHello.held), so the
//     restarted controller sends each a delta of what differs. Measured:
//     reconnect -> every host has its first message, -> its ack is written;
//     full states vs deltas received and their bytes (ByteSizeLong) vs the
//     full states of cold registration. Checked: every host then holds the
//     controller's revision (and the controller sees it acked), applied
//     every message as is, and got no full state; else exit 1. The
//     bookkeeping runs on the gRPC callback threads before each ack, so with
//     --resume the registration and delta figures include it (without it,
//     nothing is kept);
//   - controller RSS (and etcd's, with --etcd; and etcd's database size).
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "dfw/proto/state_digest.h"
#include "dfw/trust/ca.h"
#include "dfw/trust/loopback.h"
#include "dfw/trust/spiffe_id.h"
#include "dfw/trust/svid.h"
#include "dfw/v1/controller.grpc.pb.h"
#include "dfw/v1/host.grpc.pb.h"

using Clock = std::chrono::steady_clock;
using namespace dfw::v1;

namespace {

struct Flags {
  int hosts = 1000, vms = 100000, groups = 10000, rules = 20000, changes = 100, settle_ms = 500;
  int moves = 20, move_connections = 10000;
  std::string data_dir;
  bool tls = false, channel_per_host = false, etcd = false, resume = false;
  // --failover: a standby controller on the same etcd from the start; the
  // leader is stopped in place of the restart. --cold-standby: the standby
  // runs with --cold-standby. --failover-kill: SIGKILL instead of SIGTERM.
  bool failover = false, cold_standby = false, failover_kill = false;
};

constexpr char kTrustDomain[] = "bench.test";
constexpr int kSharedChannels = 16;

std::string HostId(int h) {
  char id[32];
  std::snprintf(id, sizeof id, "host-%04d", h);
  return id;
}

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

long RssKiB(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::strtol(line.c_str() + 6, nullptr, 10);
  }
  return 0;
}

// ------------------------------------------------------------ the model

constexpr int kApps = 1000, kTiers = 4, kEnvs = 4, kTeams = 200, kOwners = 2000;

uint32_t Mix(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352d;
  x ^= x >> 15;
  x *= 0x846ca68b;
  x ^= x >> 16;
  return x;
}

void AddTag(Vm* vm, const std::string& s, int v) {
  auto* t = vm->add_tags();
  t->set_scope(s);
  t->set_value(std::to_string(v));
}

Vm MakeVm(int i, int hosts, int vms) {
  Vm vm;
  char id[32];
  std::snprintf(id, sizeof id, "vm-%06d", i);
  vm.set_id(id);
  vm.set_name(id);
  AddTag(&vm, "app", Mix(i) % kApps);
  AddTag(&vm, "tier", i % kTiers);
  AddTag(&vm, "env", (i / kTiers) % kEnvs);
  AddTag(&vm, "team", Mix(i + 7) % kTeams);
  AddTag(&vm, "owner", Mix(i + 13) % kOwners);
  auto* n = vm.add_vnics();
  n->set_id(std::string(id) + "-nic0");
  char mac[32];
  std::snprintf(mac, sizeof mac, "52:54:00:%02x:%02x:%02x", (i >> 16) & 255, (i >> 8) & 255,
                i & 255);
  n->set_mac(mac);
  uint32_t a = (198u << 24) | (18u << 16) | static_cast<uint32_t>(i);  // 198.18.0.0/15
  char ip[32];
  std::snprintf(ip, sizeof ip, "%u.%u.%u.%u", a >> 24, (a >> 16) & 255, (a >> 8) & 255, a & 255);
  n->add_addresses()->set_ip(ip);
  (void)hosts;
  (void)vms;
  return vm;
}

std::string GroupId(int k) {
  char id[32];
  std::snprintf(id, sizeof id, "g-%05d", k);
  return id;
}

void TagCond(Conjunction* c, const std::string& s, int v) {
  auto* t = c->add_conditions()->mutable_tag();
  t->set_scope(s);
  t->set_value(std::to_string(v));
}

SecurityGroup MakeGroup(int k) {
  SecurityGroup g;
  g.set_id(GroupId(k));
  auto* c = g.add_criteria();
  int x = k / 4;
  switch (k % 4) {
    case 0:
      TagCond(c, "app", x % kApps);
      break;  // ~100 VMs
    case 1:
      TagCond(c, "owner", x % kOwners);
      break;  // ~50
    case 2:
      TagCond(c, "app", x % kApps);
      TagCond(c, "tier", x % kTiers);
      break;  // ~25
    default:
      TagCond(c, "team", x % kTeams);
      break;  // ~500
  }
  return g;
}

constexpr int kRulesPerPolicy = 10;
constexpr int kSourcePool = 200;  // rules' sources come from a pool of shared groups

Policy MakePolicy(int p, int groups) {
  Policy pol;
  char id[32];
  std::snprintf(id, sizeof id, "pol-%05d", p);
  pol.set_id(id);
  pol.set_category(CATEGORY_APPLICATION);
  pol.set_priority(p);
  pol.set_stateful(true);
  std::string applied = GroupId((p * 5) % groups);
  pol.add_applied_to_group_ids(applied);
  for (int j = 0; j < kRulesPerPolicy; ++j) {
    auto* r = pol.add_rules();
    r->set_id("r" + std::to_string(j));
    r->mutable_sources()->add_group_ids(GroupId((Mix(p * 31 + j) % kSourcePool) % groups));
    r->mutable_destinations()->add_group_ids(applied);
    auto* s = r->add_services();
    s->set_protocol(6);
    auto* pr = s->add_destination_ports();
    pr->set_first(1000 + j);
    r->set_direction(DIRECTION_IN);
    r->set_action(j == kRulesPerPolicy - 1 ? ACTION_DROP : ACTION_ALLOW);
  }
  return pol;
}

// ------------------------------------------------------------- the etcd

// etcd's transaction limits for --etcd, given to etcd and to the controller
// alike. A registration batch is at most 5,000 VMs and 128 hosts
// (HostSessionService::kMaxBatchVms, kMaxBatchHellos), each a put and a
// change-log entry: 2 x 5,128 + the revision and rule-number keys, ~10,300
// operations; ~300 bytes per VM (key, the VM, its log entry), ~1.5 MB.
constexpr int kEtcdMaxTxnOps = 16384;
constexpr int kEtcdMaxRequestBytes = 8 << 20;
constexpr char kEtcdBinary[] = "/usr/bin/etcd";

// The children to stop when the bench ends early (exit, SIGINT, SIGTERM):
// the controller and etcd, by pid (atomic: the signal thread reads them).
std::atomic<pid_t> g_controller_pid{-1};
std::atomic<pid_t> g_standby_pid{-1};  // --failover: the second controller
std::atomic<pid_t> g_etcd_pid{-1};
std::mutex g_stop_mu;         // one StopChildren at a time
std::string g_etcd_data_dir;  // removed with etcd (g_stop_mu)

std::string RunCommand(const std::string& cmd) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return out;
  char buf[512];
  while (fgets(buf, sizeof buf, p)) out += buf;
  pclose(p);
  return out;
}

void KillChild(std::atomic<pid_t>* pid) {
  pid_t p = pid->exchange(-1);
  if (p <= 0) return;
  kill(p, SIGKILL);
  waitpid(p, nullptr, 0);
}

// Exit handler: whatever is still running is killed, etcd's data removed.
void StopChildren() {
  std::lock_guard<std::mutex> l(g_stop_mu);
  KillChild(&g_controller_pid);
  KillChild(&g_standby_pid);
  KillChild(&g_etcd_pid);
  if (!g_etcd_data_dir.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(g_etcd_data_dir, ec);
    g_etcd_data_dir.clear();
  }
}

sigset_t StopSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}

// SIGINT and SIGTERM are blocked in every thread and taken by this one:
// children stopped, etcd's data removed, then exit.
void WatchStopSignals() {
  sigset_t set = StopSignals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);  // threads made later inherit it
  std::thread([set] {
    int sig = 0;
    sigwait(&set, &sig);
    std::fprintf(stderr, "signal %d: stopping the controller and etcd\n", sig);
    StopChildren();
    std::_Exit(128 + sig);
  }).detach();
}

// In a child before exec: the signals the bench blocked, unblocked again.
void UnblockStopSignals() {
  sigset_t set = StopSignals();
  pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
}

// [[noreturn]] exit for a failed run: children stopped, etcd's data removed.
[[noreturn]] void FailExit() {
  StopChildren();
  std::_Exit(1);  // the fleet's live streams would hold up a normal exit
}

// Starts args[0] with args, stdout and stderr appended to log; its pid also
// in *pid (to be stopped when the bench ends early).
pid_t SpawnChild(std::vector<std::string> args, const std::string& log, std::atomic<pid_t>* pid) {
  pid_t p = fork();
  if (p == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlives the bench
    UnblockStopSignals();
    FILE* f = std::fopen(log.c_str(), "a");
    if (f != nullptr) {
      dup2(fileno(f), 1);
      dup2(fileno(f), 2);
    }
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  *pid = p;
  return p;
}

struct Etcd {
  int client_port = 0, peer_port = 0;
  std::string endpoint;  // 127.0.0.1:PORT
};

// One etcd member on loopback, data in dir/etcd, log in dir/etcd.log;
// returns once it answers `etcdctl endpoint health`.
Etcd StartEtcd(const std::string& dir) {
  if (access(kEtcdBinary, X_OK) != 0) {
    std::fprintf(stderr, "%s not found: run scripts/install-deps.sh (etcd-server)\n", kEtcdBinary);
    std::exit(1);
  }
  Etcd e;
  e.client_port = dfw::trust::FreeLoopbackPort();
  e.peer_port = dfw::trust::FreeLoopbackPort();
  e.endpoint = "127.0.0.1:" + std::to_string(e.client_port);
  std::string client = "http://" + e.endpoint;
  std::string peer = "http://127.0.0.1:" + std::to_string(e.peer_port);
  const std::string data_dir = dir + "/etcd";
  std::error_code ec;
  std::filesystem::remove_all(data_dir, ec);  // a reused --data-dir: start empty
  {
    std::lock_guard<std::mutex> l(g_stop_mu);
    g_etcd_data_dir = data_dir;
  }
  std::vector<std::string> args = {kEtcdBinary,
                                   "--name=bench",
                                   "--data-dir=" + data_dir,
                                   "--listen-client-urls=" + client,
                                   "--advertise-client-urls=" + client,
                                   "--listen-peer-urls=" + peer,
                                   "--initial-advertise-peer-urls=" + peer,
                                   "--initial-cluster=bench=" + peer,
                                   "--initial-cluster-state=new",
                                   "--initial-cluster-token=dfw-bench",
                                   "--max-txn-ops=" + std::to_string(kEtcdMaxTxnOps),
                                   "--max-request-bytes=" + std::to_string(kEtcdMaxRequestBytes),
                                   "--logger=zap",
                                   "--log-outputs=stderr"};
  std::string log = dir + "/etcd.log";
  pid_t pid = SpawnChild(args, log, &g_etcd_pid);
  auto t0 = Clock::now();
  for (;;) {
    std::string out =
        RunCommand("ETCDCTL_API=3 etcdctl --command-timeout=1s --endpoints=" + e.endpoint +
                   " endpoint health 2>&1");
    if (out.find("is healthy") != std::string::npos) break;
    int st;
    if (waitpid(pid, &st, WNOHANG) == pid) {
      g_etcd_pid = -1;
      std::fprintf(stderr, "etcd exited; see %s\n", log.c_str());
      FailExit();
    }
    if (Ms(Clock::now() - t0) > 20000) {
      std::fprintf(stderr, "etcd did not become healthy in 20 s; see %s\n", log.c_str());
      FailExit();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return e;
}

// etcd's database size (etcdctl endpoint status), bytes; 0 if unknown.
long EtcdDbSize(const Etcd& e) {
  std::string out =
      RunCommand("ETCDCTL_API=3 etcdctl --command-timeout=5s --endpoints=" + e.endpoint +
                 " endpoint status -w fields 2>/dev/null");
  size_t p = out.find("\"DBSize\" : ");
  return p == std::string::npos ? 0 : std::strtol(out.c_str() + p + 11, nullptr, 10);
}

// One of etcd's Prometheus metrics (GET /metrics on the client URL), the
// sum of its samples named exactly `name` (no labels); -1 if absent.
struct EtcdMetrics {
  std::string text;
  double Get(const std::string& name) const {
    double sum = -1;
    size_t p = 0;
    while ((p = text.find("\n" + name + " ", p)) != std::string::npos) {
      p += name.size() + 2;
      sum = (sum < 0 ? 0 : sum) + std::strtod(text.c_str() + p, nullptr);
    }
    return sum;
  }
};

EtcdMetrics ReadEtcdMetrics(const Etcd& e) {
  return {"\n" + RunCommand("curl -s --max-time 5 http://" + e.endpoint + "/metrics")};
}

// etcd's disk syncs between two readings: its WAL fsyncs (one per raft
// Ready with entries: here about one per transaction) and its backend
// (bbolt) commits, each with its mean time.
void PrintEtcdDisk(const char* what, const EtcdMetrics& a, const EtcdMetrics& b) {
  auto d = [&](const std::string& n) { return b.Get(n) - a.Get(n); };
  double wal_n = d("etcd_disk_wal_fsync_duration_seconds_count");
  double wal_s = d("etcd_disk_wal_fsync_duration_seconds_sum");
  double be_n = d("etcd_disk_backend_commit_duration_seconds_count");
  double be_s = d("etcd_disk_backend_commit_duration_seconds_sum");
  double props = d("etcd_server_proposals_committed_total");
  std::printf(
      "etcd disk, %s: %.0f proposals committed, %.0f WAL fsyncs (mean %.2f ms), %.0f backend "
      "commits (mean %.2f ms)\n",
      what, props, wal_n, wal_n > 0 ? wal_s / wal_n * 1000 : 0.0, be_n,
      be_n > 0 ? be_s / be_n * 1000 : 0.0);
}

void StopEtcd() {
  if (pid_t p = g_etcd_pid.exchange(-1); p > 0) {
    kill(p, SIGTERM);
    waitpid(p, nullptr, 0);
  }
  StopChildren();  // removes the data dir
}

// ------------------------------------------------------- the controller

struct Controller {
  pid_t pid = -1;
  std::string grpc;
  double start_ms = 0;
  std::string log;                               // its log (stdout and stderr)
  std::atomic<pid_t>* slot = &g_controller_pid;  // where the exit handler finds its pid
};

// --failover's second controller: a standby on the same etcd, its own ports,
// name, port file and log; warm unless cold (--cold-standby).
struct StandbyRole {
  bool standby = false, cold = false;
};

// pki_dir empty: --insecure; else --pki-dir pki_dir (mutual TLS). etcd
// null: the store is RocksDB in dir/db; else etcd (the controller is up
// once it leads: it loaded the model from etcd). role.standby (etcd only):
// named bench-standby, log dir/controller-standby.log, up once its port file
// says it stands by.
Controller Spawn(const std::string& dir, const std::string& pki_dir, const Etcd* etcd,
                 StandbyRole role = {}) {
  Controller c;
  if (role.standby) c.slot = &g_standby_pid;
  const std::string suffix = role.standby ? "-standby" : "";
  // DFW_BENCH_CONTROLLER: another dfw-controller binary (an older build to
  // compare with, measured by the same bench in the same minutes).
  const char* bin = std::getenv("DFW_BENCH_CONTROLLER");
  if (bin == nullptr || *bin == '\0') bin = DFW_CONTROLLER_BIN;
  std::string port_file = dir + "/ports" + suffix;
  std::remove(port_file.c_str());
  std::string log = dir + "/controller" + suffix + ".log";
  c.log = log;
  std::error_code ec;
  auto log_from = std::filesystem::exists(log) ? std::filesystem::file_size(log, ec) : 0;
  std::vector<std::string> args = {bin, "--grpc-listen", "127.0.0.1:0", "--http-listen",
                                   "",  "--port-file",   port_file};
  if (etcd == nullptr) {
    args.insert(args.end(), {"--data-dir", dir + "/db"});
  } else {
    args.insert(args.end(), {"--etcd-endpoints", etcd->endpoint, "--etcd-prefix", "/dfw-bench/",
                             "--name", role.standby ? "bench-standby" : "bench",
                             "--etcd-max-txn-ops", std::to_string(kEtcdMaxTxnOps),
                             "--etcd-max-request-bytes", std::to_string(kEtcdMaxRequestBytes)});
    if (role.cold) args.push_back("--cold-standby");
  }
  if (pki_dir.empty()) {
    args.push_back("--insecure");
  } else {
    args.insert(args.end(), {"--pki-dir", pki_dir});
  }
  auto t0 = Clock::now();
  c.pid = SpawnChild(args, log, c.slot);
  auto exited = [&] {
    int st;
    if (waitpid(c.pid, &st, WNOHANG) != c.pid) return false;
    *c.slot = -1;
    std::fprintf(stderr, "dfw-controller exited; see %s\n", log.c_str());
    return true;
  };
  for (;;) {
    std::ifstream f(port_file);
    std::string line;
    if (std::getline(f, line) && line.find("grpc=") != std::string::npos) {
      c.grpc = line.substr(line.find("grpc=") + 5);
      c.grpc = c.grpc.substr(0, c.grpc.find(' '));
      break;
    }
    if (exited()) FailExit();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  // With etcd the port file comes while it stands by: up once it logs that
  // it leads (elected, model loaded from etcd, rulesets compiled).
  while (etcd != nullptr && !role.standby) {
    std::ifstream f(log);
    f.seekg(static_cast<std::streamoff>(log_from));
    std::string line;
    bool leads = false;
    while (std::getline(f, line))
      leads = leads || line.find(" leads at revision") != std::string::npos;
    if (leads) break;
    if (exited()) FailExit();
    if (Ms(Clock::now() - t0) > 600000) {
      std::fprintf(stderr, "dfw-controller not leading after 600 s; see %s\n", log.c_str());
      FailExit();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  c.start_ms = Ms(Clock::now() - t0);
  return c;
}

void Stop(Controller& c, int sig) {
  kill(c.pid, sig);
  int st;
  waitpid(c.pid, &st, 0);
  *c.slot = -1;
}

// The line a controller logged when it took the lead after offset `from`
// of its log ("... leads at revision R (took over in N ms: ...)"); empty
// if none yet.
std::string LeadsLine(const std::string& log, std::uintmax_t from) {
  std::ifstream f(log);
  f.seekg(static_cast<std::streamoff>(from));
  std::string line, out;
  while (std::getline(f, line)) {
    if (line.find(" leads at revision") != std::string::npos) out = line;
  }
  return out;
}

// ------------------------------------------------------------- the PKI

struct Pki {
  std::string dir;  // what --pki-dir gets
  std::string bundle_pem;
  dfw::trust::KeyAndCert admin;
  std::vector<dfw::trust::KeyAndCert> hosts;  // index = host number
};

[[noreturn]] void Die(const std::string& what, const absl::Status& s) {
  std::fprintf(stderr, "%s: %s\n", what.c_str(), std::string(s.message()).c_str());
  std::exit(1);
}

// A CA in dir/ca, the controller's SVID in dir/controller, an admin user's
// certificate and one certificate per host, each with a new key.
Pki MakePki(const std::string& dir, int hosts) {
  Pki p;
  p.dir = dir;
  std::filesystem::remove_all(dir);  // Init refuses to overwrite a CA (a reused --data-dir)
  auto ca = dfw::trust::CertificateAuthority::Init(dir + "/ca", kTrustDomain);
  if (!ca.ok()) Die("CA init", ca.status());
  p.bundle_pem = (*ca)->bundle_pem();
  dfw::trust::IssueOptions c;
  c.id = {kTrustDomain, dfw::trust::IdKind::kController, "bench"};
  c.server_auth = true;
  c.ip_sans = {"127.0.0.1"};
  c.dns_sans = {"localhost"};
  auto ctl = (*ca)->IssueWithNewKey(c);
  if (!ctl.ok()) Die("controller certificate", ctl.status());
  if (auto s = dfw::trust::WriteSvid(dir + "/controller",
                                     {ctl->key_pem, ctl->cert.cert_pem, p.bundle_pem});
      !s.ok()) {
    Die("controller SVID", s);
  }
  dfw::trust::IssueOptions u;
  u.id = {kTrustDomain, dfw::trust::IdKind::kUser, "bench-admin"};
  u.role = dfw::trust::Role::kAdmin;
  auto adm = (*ca)->IssueWithNewKey(u);
  if (!adm.ok()) Die("admin certificate", adm.status());
  p.admin = std::move(*adm);
  p.hosts.reserve(hosts);
  for (int h = 0; h < hosts; ++h) {
    dfw::trust::IssueOptions o;
    o.id = {kTrustDomain, dfw::trust::IdKind::kHost, HostId(h)};
    auto kc = (*ca)->IssueWithNewKey(o);
    if (!kc.ok()) Die("host certificate " + HostId(h), kc.status());
    p.hosts.push_back(std::move(*kc));
  }
  return p;
}

std::shared_ptr<grpc::ChannelCredentials> Creds(const Pki* pki, const dfw::trust::KeyAndCert* who) {
  if (pki == nullptr) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions o;
  o.pem_root_certs = pki->bundle_pem;
  o.pem_private_key = who->key_pem;
  o.pem_cert_chain = who->cert.cert_pem;
  return grpc::SslCredentials(o);
}

// ------------------------------------------------------ simulated hosts

// ----------------------------------------- what a host holds (--resume)

uint64_t Mix64(uint64_t x) {  // splitmix64's finalizer
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}

// A 128-bit hash of a set of prefixes: a sum over them, so it does not
// depend on their order and a delta updates it from its added and removed
// prefixes alone.
struct SetHash {
  uint64_t a = 0, b = 0;
  void Add(std::string_view p) {
    uint64_t h = std::hash<std::string_view>()(p);
    a += Mix64(h);
    b += Mix64(h ^ 0x9e3779b97f4a7c15ull);
  }
  void Remove(std::string_view p) {
    uint64_t h = std::hash<std::string_view>()(p);
    a -= Mix64(h);
    b -= Mix64(h ^ 0x9e3779b97f4a7c15ull);
  }
};

// An address set's content as hosts hold it, one copy fleet-wide.
struct SetContent {
  std::string id;
  SetHash hash;
  std::vector<std::string> prefixes;  // sorted, unique
  std::string digest;                 // proto::AddressSetDigest(id, prefixes)
  bool interned;                      // counted in SetInterner::Size (its mutex)
};

// The set contents the simulated hosts hold, interned: at full size every
// host holds ~125,000 prefixes, and a copy per host would take several GB.
// Looked up by set id and SetHash, so a host applying a full state hashes
// its prefixes and one applying a set delta only its added and removed
// ones; a content no host holds yet is built (sorted) and SHA-256'd once.
// An entry goes when the last host holding it lets go. Thread-safe (the
// hosts' gRPC callback threads).
class SetInterner {
 public:
  // The content (id, h); `make` builds its sorted, unique prefixes when no
  // host holds it.
  template <typename Make>
  std::shared_ptr<const SetContent> Get(const std::string& id, const SetHash& h, Make make) {
    Key key{id, h.a, h.b};
    {
      std::lock_guard<std::mutex> l(mu_);
      auto it = table_.find(key);
      if (it != table_.end()) {
        if (auto p = it->second.lock()) return p;
      }
    }
    auto* c = new SetContent{id, h, make(), "", false};
    c->digest = dfw::proto::AddressSetDigest(c->id, c->prefixes);
    std::shared_ptr<const SetContent> p(c, [this](const SetContent* x) { Release(x); });
    std::shared_ptr<const SetContent> out;
    {
      std::lock_guard<std::mutex> l(mu_);
      auto& slot = table_[std::move(key)];
      out = slot.lock();  // another host made it meanwhile: p goes, after the lock
      if (!out) {
        slot = out = p;
        c->interned = true;
        ++contents_;
        prefixes_ += c->prefixes.size();
      }
    }
    return out;
  }
  // Distinct contents held and their prefixes.
  std::pair<size_t, size_t> Size() {
    std::lock_guard<std::mutex> l(mu_);
    return {contents_, prefixes_};
  }

 private:
  struct Key {
    std::string id;
    uint64_t a, b;
    bool operator==(const Key& o) const { return a == o.a && b == o.b && id == o.id; }
  };
  struct KeyHash {
    size_t operator()(const Key& k) const { return k.a; }
  };
  void Release(const SetContent* x) {
    {
      std::lock_guard<std::mutex> l(mu_);
      auto it = table_.find(Key{x->id, x->hash.a, x->hash.b});
      if (it != table_.end() && it->second.expired()) table_.erase(it);
      if (x->interned) {
        --contents_;
        prefixes_ -= x->prefixes.size();
      }
    }
    delete x;
  }
  std::mutex mu_;
  std::unordered_map<Key, std::weak_ptr<const SetContent>, KeyHash> table_;
  size_t contents_ = 0, prefixes_ = 0;
};

SetInterner& Interner() {
  static auto* in = new SetInterner();  // never destroyed: hosts may outlive main's locals
  return *in;
}

// What one simulated host holds, as its dataplane would report it in a
// Hello (HostHello.held_revision, .held): the revision, per vNIC the digest
// of its ruleset (computed when it arrives; the rules are not kept), per
// address set its content (interned). Applied on the host's gRPC callback
// thread (one at a time per session); read by the bench between sessions.
struct HeldState {
  uint64_t revision = 0;
  std::unordered_map<std::string, std::string> rulesets;  // vNIC -> proto::RulesetDigest
  std::unordered_map<std::string, std::shared_ptr<const SetContent>> sets;
  // What the controller sent that a host could not apply as is: a delta not
  // from the held revision, a change to a set not held, a prefix added twice
  // or removed while absent. Must stay 0.
  uint64_t anomalies = 0;
  std::string first_anomaly;

  void Anomaly(const std::string& what) {
    if (anomalies++ == 0) first_anomaly = what;
  }

  std::shared_ptr<const SetContent> Whole(const AddressSet& s) {
    SetHash h;
    for (const auto& p : s.prefixes()) h.Add(p);
    return Interner().Get(s.id(), h, [&] {
      std::vector<std::string> v(s.prefixes().begin(), s.prefixes().end());
      std::sort(v.begin(), v.end());
      v.erase(std::unique(v.begin(), v.end()), v.end());
      if (v.size() != static_cast<size_t>(s.prefixes_size())) Anomaly("duplicates in " + s.id());
      return v;
    });
  }

  // A set delta on the content held: only the changed prefixes are hashed;
  // the new content is built only if no host holds it yet.
  std::shared_ptr<const SetContent> Change(const SetContent& old, const AddressSetDelta& x) {
    auto sorted = [](const google::protobuf::RepeatedPtrField<std::string>& r) {
      std::vector<const std::string*> v;
      v.reserve(static_cast<size_t>(r.size()));
      for (const auto& s : r) v.push_back(&s);
      std::sort(v.begin(), v.end(), [](const auto* a, const auto* b) { return *a < *b; });
      return v;
    };
    auto held = [&](const std::string& p) {
      return std::binary_search(old.prefixes.begin(), old.prefixes.end(), p);
    };
    std::vector<const std::string*> add, rem;
    SetHash h = old.hash;
    for (const std::string* p : sorted(x.added())) {
      if (held(*p) || (!add.empty() && *add.back() == *p)) {
        Anomaly(x.id() + " +" + *p + ": already held");
        continue;
      }
      add.push_back(p);
      h.Add(*p);
    }
    for (const std::string* p : sorted(x.removed())) {
      if (!held(*p) || (!rem.empty() && *rem.back() == *p)) {
        Anomaly(x.id() + " -" + *p + ": not held");
        continue;
      }
      rem.push_back(p);
      h.Remove(*p);
    }
    return Interner().Get(old.id, h, [&] {
      std::vector<std::string> v;
      v.reserve(old.prefixes.size() + add.size() - rem.size());
      size_t j = 0, k = 0;
      for (const auto& p : old.prefixes) {
        if (j < rem.size() && *rem[j] == p) {
          ++j;
          continue;
        }
        while (k < add.size() && *add[k] < p) v.push_back(*add[k++]);
        v.push_back(p);
      }
      while (k < add.size()) v.push_back(*add[k++]);
      return v;
    });
  }

  void Apply(const ControllerToHost& m) {
    if (m.has_full()) {
      const auto& f = m.full();
      decltype(rulesets) r;
      decltype(sets) s;  // built beside the old ones, so shared contents stay interned
      for (const auto& rs : f.rulesets()) r[rs.vnic_id()] = dfw::proto::RulesetDigest(rs);
      for (const auto& a : f.address_sets()) s[a.id()] = Whole(a);
      rulesets.swap(r);
      sets.swap(s);
      revision = f.revision();
      return;
    }
    const auto& d = m.delta();
    if (d.from_revision() != revision) {
      Anomaly("delta from " + std::to_string(d.from_revision()) + ", held " +
              std::to_string(revision));
    }
    for (const auto& rs : d.rulesets_set()) rulesets[rs.vnic_id()] = dfw::proto::RulesetDigest(rs);
    for (const auto& v : d.rulesets_removed()) rulesets.erase(v);
    for (const auto& a : d.address_sets_set()) sets[a.id()] = Whole(a);
    for (const auto& x : d.address_set_deltas()) {
      auto it = sets.find(x.id());
      if (it == sets.end()) {
        Anomaly("delta for a set not held: " + x.id());
        continue;
      }
      it->second = Change(*it->second, x);
    }
    for (const auto& id : d.address_sets_removed()) sets.erase(id);
    revision = d.to_revision();
  }

  HeldDigests Digests() const {
    HeldDigests out;
    for (const auto& [vnic, digest] : rulesets) {
      auto* o = out.add_rulesets();
      o->set_id(vnic);
      o->set_digest(digest);
    }
    for (const auto& [id, c] : sets) {
      auto* o = out.add_address_sets();
      o->set_id(id);
      o->set_digest(c->digest);
    }
    return out;
  }
};

// The VM move in progress (Recorder::mu): what the source and destination
// sessions see of it from t0, the source's first export chunk.
struct MoveWatch {
  bool active = false;
  int src = -1, dst = -1;
  std::string vm, vnic;
  int want_entries = 0;
  Clock::time_point t0;
  // Destination: its ConnectionImport messages for the VM.
  int import_msgs = 0, import_entries = 0;
  bool imports_last = false;
  Clock::time_point imports_at;  // the one with last=true
  // Destination: the first delta or full after t0, and the one that sets the
  // vNIC's ruleset (the same one unless another change came in between).
  bool first = false, rules = false;
  uint64_t first_rev = 0, rules_rev = 0;
  Clock::time_point first_at, rules_at;
  int imports_after_rules = 0;  // ordering violations: imports after the rules
  // Source: the delta removing the vNIC's ruleset.
  bool removed = false;
  uint64_t removed_rev = 0;
  Clock::time_point removed_at;
};

// A host's ConnectionImport messages (Recorder::mu).
struct ImportLog {
  struct Msg {
    Clock::time_point at;
    std::string vm_id;
    int entries;
    bool last;
  };
  std::vector<Msg> msgs;
  uint64_t entries = 0;
};

struct Recorder {
  std::mutex mu;
  std::condition_variable cv;
  int full_count = 0;
  Clock::time_point last_full;
  std::set<uint64_t> full_revisions;  // of first full states: the registration's changes
  size_t full_prefixes = 0, full_rules = 0;
  // revision -> (hosts that received it, last receive time)
  std::map<uint64_t, std::pair<int, Clock::time_point>> deltas;
  uint64_t overflow_fulls = 0;
  int done = 0;
  // Sessions that ended with an error before the bench cancelled them.
  int failed = 0;
  std::string first_error;
  std::vector<ImportLog> imports;  // index = host number
  uint64_t stray_imports = 0;      // import messages no move in progress explains
  MoveWatch move;
  // Each session's first state message (full or delta) and when the host's
  // ack of it was written.
  int first_count = 0, first_acked = 0;
  Clock::time_point last_first, last_first_ack;
  // --resume only (count_bytes): state messages received, with their
  // ByteSizeLong, and what the deltas carried.
  bool count_bytes = false;
  uint64_t msgs_full = 0, msgs_delta = 0, bytes_full = 0, bytes_delta = 0;
  uint64_t first_full_bytes = 0;  // of each session's first full state
  uint64_t delta_rulesets = 0, delta_sets_whole = 0, delta_set_changes = 0, delta_prefixes = 0;
  // --failover's reconnect: a session that ends before any state message
  // (the standby answers UNAVAILABLE while it does not lead; its standby
  // listener, shut down for the takeover, may cancel a call) is not a
  // failure: its host is queued here to try again (RetryUnavailable), as a
  // host agent tries again after 0.1 s. retries: by status code.
  bool retry_unavailable = false;
  std::vector<int> to_retry;
  std::map<int, uint64_t> retries;
};

bool SetsRuleset(const ControllerToHost& m, const std::string& vnic) {
  for (const auto& r : m.delta().rulesets_set()) {
    if (r.vnic_id() == vnic) return true;
  }
  for (const auto& r : m.full().rulesets()) {
    if (r.vnic_id() == vnic) return true;
  }
  return false;
}

bool RemovesRuleset(const ControllerToHost& m, const std::string& vnic) {
  for (const auto& v : m.delta().rulesets_removed()) {
    if (v == vnic) return true;
  }
  return false;
}

class HostSim final : public grpc::ClientBidiReactor<HostToController, ControllerToHost> {
 public:
  // held: what the host holds, kept up to date (--resume); null: nothing kept.
  HostSim(HostSessionService::Stub* stub, HostToController hello, int index, Recorder* rec,
          HeldState* held)
      : hello_(std::move(hello)), index_(index), rec_(rec), held_(held) {
    // Like a host agent, which retries until it is connected: with one
    // connection per host, 1,000 connects meet a controller busy with the
    // registration storm, and a fail-fast call would end with UNAVAILABLE
    // when its connect attempt times out.
    ctx_.set_wait_for_ready(true);
    stub->async()->Session(&ctx_, this);
    writing_ = true;
    StartWrite(&hello_);
    StartRead(&in_);
    StartCall();
  }
  void Cancel() { ctx_.TryCancel(); }
  // Under rec->mu: this session's full state came; it ended.
  bool got_full() const { return got_full_; }
  bool done() const { return done_; }
  // Queues a message (an InventoryUpdate, a ConnectionExport) behind the
  // ones queued before it; one write in flight at a time, acks in between.
  void Send(HostToController m) {
    {
      std::lock_guard<std::mutex> l(mu_);
      queue_.push_back(std::move(m));
    }
    MaybeWrite();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;
    auto now = Clock::now();
    uint64_t rev = 0;
    const bool state_msg = in_.has_full() || in_.has_delta();
    const size_t bytes = rec_->count_bytes && state_msg ? in_.ByteSizeLong() : 0;
    {
      std::lock_guard<std::mutex> l(rec_->mu);
      if (state_msg && !got_first_) {
        got_first_ = true;
        ++rec_->first_count;
        rec_->last_first = now;
        if (rec_->count_bytes && in_.has_full()) rec_->first_full_bytes += bytes;
      }
      if (rec_->count_bytes && state_msg) {
        if (in_.has_full()) {
          ++rec_->msgs_full;
          rec_->bytes_full += bytes;
        } else {
          const auto& d = in_.delta();
          ++rec_->msgs_delta;
          rec_->bytes_delta += bytes;
          rec_->delta_rulesets += d.rulesets_set_size();
          rec_->delta_sets_whole += d.address_sets_set_size();
          rec_->delta_set_changes += d.address_set_deltas_size();
          for (const auto& a : d.address_sets_set()) rec_->delta_prefixes += a.prefixes_size();
          for (const auto& x : d.address_set_deltas())
            rec_->delta_prefixes += x.added_size() + x.removed_size();
        }
      }
      MoveWatch& mv = rec_->move;
      if (in_.has_connections()) {
        const auto& c = in_.connections();
        auto& log = rec_->imports[index_];
        log.msgs.push_back({now, c.vm_id(), c.entries_size(), c.last()});
        log.entries += c.entries_size();
        if (mv.active && index_ == mv.dst && c.vm_id() == mv.vm) {
          ++mv.import_msgs;
          mv.import_entries += c.entries_size();
          if (c.last()) {
            mv.imports_last = true;
            mv.imports_at = now;
          }
          if (mv.rules) ++mv.imports_after_rules;
        } else {
          ++rec_->stray_imports;
        }
        rec_->cv.notify_all();
      } else if (in_.has_full()) {
        rev = in_.full().revision();
        if (!got_full_) {
          got_full_ = true;
          ++rec_->full_count;
          rec_->full_revisions.insert(rev);
          rec_->last_full = now;
          for (const auto& s : in_.full().address_sets()) rec_->full_prefixes += s.prefixes_size();
          for (const auto& r : in_.full().rulesets()) rec_->full_rules += r.rules_size();
          rec_->cv.notify_all();
        } else {
          ++rec_->overflow_fulls;
          auto& d = rec_->deltas[rev];
          ++d.first;
          d.second = now;
        }
      } else if (in_.has_delta()) {
        rev = in_.delta().to_revision();
        auto& d = rec_->deltas[rev];
        ++d.first;
        d.second = now;
      }
      if (rev != 0 && mv.active) {
        if (index_ == mv.dst) {
          if (!mv.first) {
            mv.first = true;
            mv.first_rev = rev;
            mv.first_at = now;
          }
          if (!mv.rules && SetsRuleset(in_, mv.vnic)) {
            mv.rules = true;
            mv.rules_rev = rev;
            mv.rules_at = now;
            rec_->cv.notify_all();
          }
        } else if (index_ == mv.src && !mv.removed && RemovesRuleset(in_, mv.vnic)) {
          mv.removed = true;
          mv.removed_rev = rev;
          mv.removed_at = now;
          rec_->cv.notify_all();
        }
      }
    }
    // Applied before the ack goes, as a host agent does.
    if (held_ != nullptr && state_msg) held_->Apply(in_);
    // Free a full state or an import now: parsing the next delta into in_
    // would free their thousands of strings on the latency path of that delta.
    if (!in_.has_delta()) in_ = ControllerToHost();
    if (rev != 0) {
      std::lock_guard<std::mutex> l(mu_);
      pending_ack_ = rev;
    }
    MaybeWrite();
    StartRead(&in_);
  }
  void OnWriteDone(bool ok) override {
    bool first_ack = false;
    {
      std::lock_guard<std::mutex> l(mu_);
      writing_ = false;
      if (!ok) return;
      first_ack = writing_ack_ && !acked_first_;
      acked_first_ = acked_first_ || writing_ack_;
      writing_ack_ = false;
    }
    if (first_ack) {
      std::lock_guard<std::mutex> l(rec_->mu);
      ++rec_->first_acked;
      rec_->last_first_ack = Clock::now();
      rec_->cv.notify_all();
    }
    MaybeWrite();
  }
  void OnDone(const grpc::Status& s) override {
    std::lock_guard<std::mutex> l(rec_->mu);
    ++rec_->done;
    done_ = true;
    if (rec_->retry_unavailable && !got_first_) {
      rec_->to_retry.push_back(index_);
      ++rec_->retries[s.error_code()];
    } else if (!s.ok() && s.error_code() != grpc::StatusCode::CANCELLED) {
      if (rec_->failed++ == 0)
        rec_->first_error = std::to_string(s.error_code()) + " " + s.error_message();
    }
    rec_->cv.notify_all();
  }

 private:
  // The next write, when none is in flight: the newest pending ack first
  // (acks are small and realization waits for them), then the queue in order.
  void MaybeWrite() {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (writing_) return;
      if (pending_ack_ != 0) {
        out_.Clear();
        out_.mutable_ack()->set_revision(pending_ack_);
        out_.mutable_ack()->set_ok(true);
        pending_ack_ = 0;
        writing_ack_ = true;
      } else if (!queue_.empty()) {
        out_ = std::move(queue_.front());
        queue_.pop_front();
      } else {
        return;
      }
      writing_ = true;
    }
    StartWrite(&out_);
  }
  grpc::ClientContext ctx_;
  HostToController hello_, out_;
  ControllerToHost in_;
  int index_;
  Recorder* rec_;
  HeldState* held_;
  std::mutex mu_;
  std::deque<HostToController> queue_;
  bool writing_ = false;
  bool writing_ack_ = false, acked_first_ = false;  // mu_
  bool got_full_ = false;
  bool got_first_ = false;  // a state message came (rec_->mu)
  bool done_ = false;       // OnDone ran (rec_->mu)
  uint64_t pending_ack_ = 0;
};

struct Fleet {
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  std::vector<std::unique_ptr<HostSessionService::Stub>> stubs;
  std::vector<std::unique_ptr<HostSim>> hosts;
  // Sessions replaced by RetryUnavailable, kept until the fleet goes (their
  // OnDone may still be returning when they are replaced).
  std::vector<std::unique_ptr<HostSim>> retired;
  std::vector<HostToController> hellos;  // what RetryUnavailable sends
  Recorder rec;
};

std::vector<HostToController> MakeHellos(const Flags& f) {
  std::vector<HostToController> hellos(f.hosts);
  for (int h = 0; h < f.hosts; ++h) {
    auto* hello = hellos[h].mutable_hello();
    std::string id = HostId(h);
    hello->mutable_host()->set_id(id);
    hello->mutable_host()->set_hostname(std::string(id) + ".bench");
  }
  for (int i = 0; i < f.vms; ++i) {
    int h = static_cast<int>(static_cast<int64_t>(i) * f.hosts / f.vms);
    *hellos[h].mutable_hello()->add_vms() = MakeVm(i, f.hosts, f.vms);
  }
  return hellos;
}

// pki null: plaintext. Channels: one per host (per_host; always with TLS,
// each host presents its own certificate), else kSharedChannels shared.
// held: one HeldState per host, kept up to date by its session (--resume).
// fast_reconnect (--failover): the channels try to connect again 100 ms
// after a refused connect instead of gRPC's 1 s doubling backoff (a host
// agent opens a new channel for each attempt, 0.1 s apart).
void Connect(Fleet& fleet, const std::string& target, const std::vector<HostToController>& hellos,
             bool per_host, const Pki* pki, std::vector<HeldState>* held,
             bool fast_reconnect = false) {
  size_t n = per_host ? hellos.size() : kSharedChannels;
  fleet.rec.imports.resize(hellos.size());
  if (fast_reconnect) fleet.hellos = hellos;
  for (size_t c = 0; c < n; ++c) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(-1);
    args.SetInt("dfw.bench.channel",
                static_cast<int>(c));  // distinct channels, distinct connections
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    if (fast_reconnect) {
      args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
      args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
      args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 100);
    }
    fleet.channels.push_back(
        grpc::CreateCustomChannel(target, Creds(pki, pki ? &pki->hosts[c] : nullptr), args));
    fleet.stubs.push_back(HostSessionService::NewStub(fleet.channels.back()));
  }
  for (size_t h = 0; h < hellos.size(); ++h) {
    fleet.hosts.push_back(std::make_unique<HostSim>(fleet.stubs[h % n].get(), hellos[h],
                                                    static_cast<int>(h), &fleet.rec,
                                                    held ? &(*held)[h] : nullptr));
  }
}

void Disconnect(Fleet& fleet) {
  for (auto& h : fleet.hosts) h->Cancel();
  std::unique_lock<std::mutex> l(fleet.rec.mu);
  fleet.rec.cv.wait_for(l, std::chrono::seconds(30), [&] {
    return fleet.rec.done == static_cast<int>(fleet.hosts.size() + fleet.retired.size());
  });
}

// --failover: the hosts whose session was answered UNAVAILABLE before any
// state message, taken from the queue.
std::vector<int> TakeRetries(Fleet& fleet) {
  std::vector<int> again;
  std::lock_guard<std::mutex> l(fleet.rec.mu);
  again.swap(fleet.rec.to_retry);
  return again;
}

// Each of them opens a new session (same channel, same Hello).
void RetryUnavailable(Fleet& fleet, const std::vector<int>& again) {
  const size_t n = fleet.stubs.size();
  for (int h : again) {
    fleet.retired.push_back(std::move(fleet.hosts[h]));
    fleet.hosts[h] = std::make_unique<HostSim>(fleet.stubs[h % n].get(), fleet.hellos[h], h,
                                               &fleet.rec, nullptr);
  }
}

// --resume after the restart: n hosts' first message acked (or failed).
bool WaitFirstAcked(Fleet& fleet, int n, int timeout_s) {
  std::unique_lock<std::mutex> l(fleet.rec.mu);
  fleet.rec.cv.wait_for(l, std::chrono::seconds(timeout_s),
                        [&] { return fleet.rec.first_acked + fleet.rec.failed >= n; });
  return fleet.rec.first_acked >= n;
}

bool WaitFull(Fleet& fleet, int n, int timeout_s) {
  std::unique_lock<std::mutex> l(fleet.rec.mu);
  // Also stop waiting once every session either has its state or failed.
  fleet.rec.cv.wait_for(l, std::chrono::seconds(timeout_s),
                        [&] { return fleet.rec.full_count + fleet.rec.failed >= n; });
  return fleet.rec.full_count >= n;
}

double Pct(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = std::min(v.size() - 1, static_cast<size_t>(p / 100.0 * v.size()));
  return v[i];
}

// ------------------------------------------------------------ VM moves

std::string Ip4(uint32_t a) {
  std::string b(4, '\0');
  b[0] = static_cast<char>(a >> 24);
  b[1] = static_cast<char>(a >> 16);
  b[2] = static_cast<char>(a >> 8);
  b[3] = static_cast<char>(a);
  return b;
}

// Connection k of VM i's vNIC as its dataplane exports it: an inbound TCP
// connection from a 10/8 peer to one of the policies' ports, established
// (both peers in state 2, window scaling seen), valid for
// dfw::dataplane::ValidateConnExport.
ConnectionEntry MoveEntry(int i, int k) {
  ConnectionEntry e;
  e.set_protocol(6);
  e.set_src_ip(Ip4((10u << 24) | static_cast<uint32_t>(k + 1)));
  e.set_dst_ip(Ip4((198u << 24) | (18u << 16) | static_cast<uint32_t>(i)));
  e.set_src_port(32768 + k % 28000);
  e.set_dst_port(1000 + k % kRulesPerPolicy);
  e.set_direction(DIRECTION_IN);
  e.set_state(CONNECTION_STATE_ESTABLISHED);
  e.set_rule_num(1);
  e.set_revalidate(true);
  e.set_expires_in_ms(432000000);  // the established timeout, 5 days
  e.set_packets(20 + k % 100);
  e.set_bytes(4000 + k % 100000);
  auto peer = [](TcpPeerState* p, uint32_t seq_end, uint32_t peer_seq_end) {
    p->set_seq_end(seq_end);
    p->set_ack_end(peer_seq_end + 64240);
    p->set_max_win(64240);
    p->set_wscale(7);
    p->set_flags(1);  // the SYN carried the window scale option
    p->set_state(2);  // established
  };
  uint32_t orig = Mix(static_cast<uint32_t>(2 * k)), reply = Mix(static_cast<uint32_t>(2 * k + 1));
  peer(e.mutable_tcp_orig(), orig, reply);
  peer(e.mutable_tcp_reply(), reply, orig);
  return e;
}

constexpr int kExportChunk = 8192;  // entries per ConnectionExport message

// The source's export of VM i's vNIC: chunks of kExportChunk, `last` and
// `total` on the final one.
std::vector<HostToController> MakeExport(const Vm& vm, int i, int n) {
  std::vector<HostToController> out;
  int k = 0;
  do {
    HostToController m;
    auto* x = m.mutable_connections();
    x->set_vm_id(vm.id());
    x->set_vnic_id(vm.vnics(0).id());
    int end = std::min(n, k + kExportChunk);
    for (; k < end; ++k) *x->add_entries() = MoveEntry(i, k);
    if (k == n) {
      x->set_last(true);
      x->set_total(static_cast<uint32_t>(n));
    }
    out.push_back(std::move(m));
  } while (k < n);
  return out;
}

// The host's refused VM claims (ListHosts), -1 when it is not listed.
int64_t RefusedClaims(ControllerService::Stub* api, const std::string& host) {
  grpc::ClientContext ctx;
  ListRequest req;
  ListHostsResponse out;
  if (!api->ListHosts(&ctx, req, &out).ok()) return -1;
  for (const auto& h : out.hosts()) {
    if (h.id() == host) return static_cast<int64_t>(h.refused_vm_claims());
  }
  return -1;
}

// The controller's current revision: Realization of one policy (of none
// when there are none), cheap.
uint64_t CurrentRevision(ControllerService::Stub* api, int policies) {
  grpc::ClientContext ctx;
  RealizationRequest req;
  if (policies > 0) req.set_policy_id("pol-00000");
  RealizationResponse out;
  if (!api->Realization(&ctx, req, &out).ok()) return 0;
  return out.current_revision();
}

// How many of the bench's hosts the controller does not see at revision
// rev (ListHosts: the revision each host acknowledged last).
int HostsNotAcked(ControllerService::Stub* api, uint64_t rev, int hosts) {
  grpc::ClientContext ctx;
  ListRequest req;
  ListHostsResponse out;
  if (!api->ListHosts(&ctx, req, &out).ok()) return hosts;
  int at = 0;
  for (const auto& h : out.hosts()) at += h.realized_revision() == rev ? 1 : 0;
  return hosts - at;
}

// ---------------------------------------------------------- --failover

// The leader is stopped (SIGTERM, or SIGKILL with --failover-kill) with every
// host attached; the standby takes over. Measured from the signal: the
// standby accepting an API write (a PutGroup every 10 ms, on a channel
// connected to it before the signal), the takeover the standby logs, and
// every host, once its session to the old leader ended, reconnected to the
// standby and holding its full state (and its ack written). Hosts go
// straight to the standby's address (a host agent given both addresses
// would first wait its 0.5 s backoff and try the old one: not modelled);
// a session the standby answers UNAVAILABLE, not leading yet, is opened
// again after >= 100 ms, the agent's pause between controllers.
void RunFailover(const Flags& f, Controller& leader, Controller& standby,
                 std::unique_ptr<Fleet> fleet, const std::vector<HostToController>& hellos,
                 const Pki* pki) {
  const int sig = f.failover_kill ? SIGKILL : SIGTERM;
  grpc::ChannelArguments pa;
  pa.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 10);
  pa.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 10);
  pa.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 10);
  auto probe = ControllerService::NewStub(
      grpc::CreateCustomChannel(standby.grpc, Creds(pki, pki ? &pki->admin : nullptr), pa));
  PutGroupRequest probe_req;
  *probe_req.mutable_group() = MakeGroup(0);  // a group no policy uses
  probe_req.mutable_group()->set_id("g-failover-probe");
  std::string before_err;
  {  // connects the channel: the standby answers UNAVAILABLE
    grpc::ClientContext ctx;
    SecurityGroup out;
    auto s = probe->PutGroup(&ctx, probe_req, &out);
    before_err = s.ok() ? "OK (?)" : s.error_message();
  }
  const long standby_rss = RssKiB(standby.pid), leader_rss = RssKiB(leader.pid);
  std::printf(
      "failover: standby RSS before the failover %.0f MiB (leader %.0f MiB); the standby answers "
      "a PutGroup: %s\n",
      standby_rss / 1024.0, leader_rss / 1024.0, before_err.c_str());
  std::atomic<double> exit_ms{-1}, write_ms{-1};
  std::atomic<int> attempts{0};
  std::mutex err_mu;
  std::string last_err;
  auto tk = Clock::now();
  kill(leader.pid, sig);
  std::thread reaper([&] {
    int st;
    waitpid(leader.pid, &st, 0);
    *leader.slot = -1;
    exit_ms = Ms(Clock::now() - tk);
  });
  std::thread prober([&] {
    while (Ms(Clock::now() - tk) < 600000) {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
      SecurityGroup out;
      auto s = probe->PutGroup(&ctx, probe_req, &out);
      ++attempts;
      if (s.ok()) {
        write_ms = Ms(Clock::now() - tk);
        return;
      }
      {
        std::lock_guard<std::mutex> l(err_mu);
        last_err = s.error_message();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  });
  // The hosts: each session to the old leader ends (it shuts its server
  // down, or its connections reset), then they reconnect.
  {
    std::unique_lock<std::mutex> l(fleet->rec.mu);
    fleet->rec.cv.wait_for(l, std::chrono::seconds(60), [&] { return fleet->rec.done >= f.hosts; });
  }
  const double ended_ms = Ms(Clock::now() - tk);
  auto fleet2 = std::make_unique<Fleet>();
  fleet2->rec.retry_unavailable = true;
  Connect(*fleet2, standby.grpc, hellos, f.channel_per_host, pki, nullptr, true);
  bool all = false;
  int progress = -1;  // full states; 60 s without a new one ends the wait
  for (auto last = Clock::now(); Ms(Clock::now() - last) < 60000;) {
    std::vector<int> again = TakeRetries(*fleet2);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    RetryUnavailable(*fleet2, again);
    std::lock_guard<std::mutex> l(fleet2->rec.mu);
    if ((all = fleet2->rec.full_count >= f.hosts) || fleet2->rec.failed > 0) break;
    if (fleet2->rec.full_count != progress || !again.empty()) last = Clock::now();
    progress = fleet2->rec.full_count;
  }
  if (!all) {
    std::lock_guard<std::mutex> l(fleet2->rec.mu);
    std::fprintf(stderr,
                 "failover: not every host got its full state from the new leader (%d); %d "
                 "sessions failed, the first: %s\n",
                 fleet2->rec.full_count, fleet2->rec.failed, fleet2->rec.first_error.c_str());
    int shown = 0;
    for (size_t h = 0; h < fleet2->hosts.size() && shown < 10; ++h) {
      const HostSim& sim = *fleet2->hosts[h];
      if (sim.got_full()) continue;
      ++shown;
      std::fprintf(stderr, "  %s: no full state, session %s\n", HostId(static_cast<int>(h)).c_str(),
                   sim.done() ? "ended" : "open");
    }
    FailExit();
  }
  const double hosts_ms = Ms(fleet2->rec.last_full - tk);
  double acked_ms = -1;
  if (WaitFirstAcked(*fleet2, f.hosts, 60)) {
    std::lock_guard<std::mutex> l(fleet2->rec.mu);
    acked_ms = Ms(fleet2->rec.last_first_ack - tk);
  }
  prober.join();
  reaper.join();
  const long standby_rss_after = RssKiB(standby.pid);
  std::string leads = LeadsLine(standby.log, 0);
  std::string took = leads.substr(std::min(leads.size(), leads.find(" leads at revision")));
  uint64_t retries = 0;
  std::string retry_codes;
  {
    std::lock_guard<std::mutex> l(fleet2->rec.mu);
    for (const auto& [code, n] : fleet2->rec.retries) {
      retries += n;
      retry_codes += (retry_codes.empty() ? "" : ", ") + std::to_string(n) + " with status " +
                     std::to_string(code);
    }
  }
  std::printf(
      "failover (%s to the leader with %d hosts attached; %s standby), from the signal:\n"
      "  the old leader exited %.0f ms; its host sessions all ended %.0f ms%s\n"
      "  -> the standby accepts an API write (PutGroup, one every 10 ms): %.0f ms (%d attempts)\n"
      "  the standby's log: \"%s\"\n"
      "  -> every host reconnected to it has its full state: %.0f ms (reconnects from %.0f ms; "
      "%lu sessions ended before a state message and were opened again%s%s%s)\n"
      "  -> every host's ack of it written: %.0f ms\n"
      "  new leader's RSS: %.0f MiB before the failover, %.0f MiB with every host back\n",
      f.failover_kill ? "SIGKILL" : "SIGTERM", f.hosts, f.cold_standby ? "cold" : "warm",
      exit_ms.load(), ended_ms,
      f.failover_kill ? " (SIGKILL: the lease is not revoked; the standby waits for its TTL)" : "",
      write_ms.load(), attempts.load(), took.c_str(), hosts_ms, ended_ms,
      static_cast<unsigned long>(retries), retry_codes.empty() ? "" : ": ", retry_codes.c_str(),
      retry_codes.empty() ? "" : " (14 UNAVAILABLE, 1 CANCELLED)", acked_ms, standby_rss / 1024.0,
      standby_rss_after / 1024.0);
  const bool warm_taken = leads.find("warm model followed") != std::string::npos;
  if (!f.cold_standby && !warm_taken) {
    std::printf("  NOTE: the warm standby did not take a warm model (see %s)\n",
                standby.log.c_str());
  }
  Disconnect(*fleet2);
  fleet2.reset();
  fleet.reset();
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  WatchStopSignals();  // before any other thread
  Flags f;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--tls") {
      f.tls = f.channel_per_host = true;
      continue;
    }
    // Switches without a value.
    const std::pair<const char*, bool*> switches[] = {{"--channel-per-host", &f.channel_per_host},
                                                      {"--etcd", &f.etcd},
                                                      {"--resume", &f.resume},
                                                      {"--failover", &f.failover},
                                                      {"--cold-standby", &f.cold_standby},
                                                      {"--failover-kill", &f.failover_kill}};
    auto sw = std::find_if(std::begin(switches), std::end(switches),
                           [&](const auto& x) { return a == x.first; });
    if (sw != std::end(switches)) {
      *sw->second = true;
      continue;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "flag %s needs a value\n", a.c_str());
      return 2;
    }
    std::string v = argv[++i];
    if (a == "--hosts")
      f.hosts = std::stoi(v);
    else if (a == "--vms")
      f.vms = std::stoi(v);
    else if (a == "--groups")
      f.groups = std::stoi(v);
    else if (a == "--rules")
      f.rules = std::stoi(v);
    else if (a == "--changes")
      f.changes = std::stoi(v);
    else if (a == "--settle-ms")
      f.settle_ms = std::stoi(v);
    else if (a == "--moves")
      f.moves = std::stoi(v);
    else if (a == "--move-connections")
      f.move_connections = std::stoi(v);
    else if (a == "--data-dir")
      f.data_dir = v;
    else {
      std::fprintf(stderr, "unknown flag %s\n", a.c_str());
      return 2;
    }
  }
  if (f.failover && !f.etcd) {
    std::fprintf(stderr, "--failover needs --etcd\n");
    return 2;
  }
  if (f.failover && f.resume) {
    std::fprintf(stderr,
                 "--failover: --resume is not supported (hosts reconnect without digests)\n");
    return 2;
  }
  if ((f.cold_standby || f.failover_kill) && !f.failover) {
    std::fprintf(stderr, "--cold-standby and --failover-kill go with --failover\n");
    return 2;
  }
  bool own_dir = f.data_dir.empty();
  if (own_dir) {
    std::string t = (std::filesystem::temp_directory_path() / "dfw-ctl-bench-XXXXXX").string();
    f.data_dir = mkdtemp(t.data());
  }
  int policies = f.rules / kRulesPerPolicy;
  std::printf("controller bench: %d hosts, %d VMs, %d groups, %d policies x %d rules = %d rules\n",
              f.hosts, f.vms, f.groups, policies, kRulesPerPolicy, policies * kRulesPerPolicy);
  std::printf(
      "transport: %s, %s\n",
      f.tls ? "mutual TLS (SPIFFE X.509 SVIDs, trust domain bench.test)" : "plaintext (--insecure)",
      f.channel_per_host ? "one channel (connection) per host" : "hosts share 16 channels");
  std::unique_ptr<Pki> pki;
  if (f.tls) {
    auto t = Clock::now();
    pki = std::make_unique<Pki>(MakePki(f.data_dir + "/pki", f.hosts));
    double ms = Ms(Clock::now() - t);
    std::printf(
        "certificate issuance (not part of registration): CA + controller SVID + admin + %d host "
        "certificates, each a new EC P-256 key: %.0f ms (%.2f ms per certificate)\n",
        f.hosts, ms, ms / (f.hosts + 2));
  }
  std::string pki_dir = pki ? pki->dir : "";
  std::atexit(StopChildren);
  std::unique_ptr<Etcd> etcd;
  if (f.etcd) {
    etcd = std::make_unique<Etcd>(StartEtcd(f.data_dir));
    std::string version = RunCommand(std::string(kEtcdBinary) + " --version 2>/dev/null");
    version = version.substr(0, version.find('\n'));
    std::printf(
        "store: etcd (%s), one member on %s, --max-txn-ops %d --max-request-bytes %d (the "
        "controller's --etcd-max-txn-ops/--etcd-max-request-bytes the same)\n",
        version.c_str(), etcd->endpoint.c_str(), kEtcdMaxTxnOps, kEtcdMaxRequestBytes);
  } else {
    std::printf("store: RocksDB (embedded), %s/db\n", f.data_dir.c_str());
  }
  const char* store_write = f.etcd ? "one etcd txn each" : "synced WAL";
  auto etcd_rss = [&] { return etcd ? RssKiB(g_etcd_pid) : 0L; };
  auto etcd_metrics = [&] { return etcd ? ReadEtcdMetrics(*etcd) : EtcdMetrics(); };
  EtcdMetrics m_start = etcd_metrics();
  Controller ctl = Spawn(f.data_dir, pki_dir, etcd.get());
  // --failover: the standby, up before the first write, so it follows them all.
  Controller standby;
  if (f.failover) {
    standby = Spawn(f.data_dir, pki_dir, etcd.get(), {true, f.cold_standby});
    std::printf("standby: %s on %s (%s), up in %.0f ms\n", f.cold_standby ? "cold" : "warm",
                standby.grpc.c_str(),
                f.cold_standby ? "--cold-standby: loads the store once elected"
                               : "follows the store through an etcd watch",
                standby.start_ms);
  }
  auto api_ch = grpc::CreateChannel(ctl.grpc, Creds(pki.get(), pki ? &pki->admin : nullptr));
  auto api = ControllerService::NewStub(api_ch);

  // ---- API writes: groups, then policies (one synced WriteBatch each).
  auto t0 = Clock::now();
  for (int k = 0; k < f.groups; ++k) {
    grpc::ClientContext ctx;
    PutGroupRequest req;
    *req.mutable_group() = MakeGroup(k);
    SecurityGroup out;
    auto s = api->PutGroup(&ctx, req, &out);
    if (!s.ok()) {
      std::fprintf(stderr, "PutGroup: %s\n", s.error_message().c_str());
      FailExit();
    }
  }
  double groups_ms = Ms(Clock::now() - t0);
  t0 = Clock::now();
  for (int p = 0; p < policies; ++p) {
    grpc::ClientContext ctx;
    PutPolicyRequest req;
    *req.mutable_policy() = MakePolicy(p, f.groups);
    Policy out;
    auto s = api->PutPolicy(&ctx, req, &out);
    if (!s.ok()) {
      std::fprintf(stderr, "PutPolicy: %s\n", s.error_message().c_str());
      FailExit();
    }
  }
  double policies_ms = Ms(Clock::now() - t0);
  std::printf(
      "API writes: %d PutGroup in %.0f ms (%.0f/s), %d PutPolicy in %.0f ms (%.0f/s), sequential, "
      "%s\n",
      f.groups, groups_ms, f.groups / groups_ms * 1000, policies, policies_ms,
      policies / policies_ms * 1000, store_write);
  EtcdMetrics m_api = etcd_metrics();
  if (etcd) PrintEtcdDisk("API writes", m_start, m_api);

  // ---- cold registration: every host says hello with its inventory.
  auto hellos = MakeHellos(f);
  // --resume: what each host holds, kept across the restart.
  std::vector<HeldState> held(f.resume ? f.hosts : 0);
  std::vector<HeldState>* held_ptr = f.resume ? &held : nullptr;
  auto fleet = std::make_unique<Fleet>();
  fleet->rec.count_bytes = f.resume;
  t0 = Clock::now();
  Connect(*fleet, ctl.grpc, hellos, f.channel_per_host, pki.get(), held_ptr);
  if (!WaitFull(*fleet, f.hosts, 600)) {
    std::lock_guard<std::mutex> l(fleet->rec.mu);
    std::fprintf(stderr,
                 "not every host got its full state (%d); %d sessions failed, the first: %s\n",
                 fleet->rec.full_count, fleet->rec.failed, fleet->rec.first_error.c_str());
    FailExit();
  }
  double cold_ms = Ms(fleet->rec.last_full - t0);
  uint64_t cold_full_bytes = 0;
  {
    std::lock_guard<std::mutex> l(fleet->rec.mu);
    cold_full_bytes = fleet->rec.first_full_bytes;
  }
  std::printf(
      "cold registration (hello with inventory -> full state, all hosts): %.0f ms; "
      "avg per host %zu compiled rules, %zu address-set prefixes\n",
      cold_ms, fleet->rec.full_rules / f.hosts, fleet->rec.full_prefixes / f.hosts);
  if (f.resume) {
    std::lock_guard<std::mutex> l(fleet->rec.mu);
    std::printf(
        "  --resume: registration and delta figures include the hosts' bookkeeping of what they "
        "hold (ruleset digests, interned set contents) on the gRPC callback threads; full states "
        "%.1f MiB in all (ByteSizeLong), %.0f KiB per host\n",
        fleet->rec.first_full_bytes / 1048576.0,
        fleet->rec.first_full_bytes / 1024.0 / std::max(1, fleet->rec.full_count));
  }
  // Let the registration deltas drain: wait until no delta arrived for 1 s.
  auto drain_start = Clock::now();
  for (size_t seen = SIZE_MAX;;) {
    size_t now_seen = 0;
    {
      std::lock_guard<std::mutex> l(fleet->rec.mu);
      for (const auto& [rev, d] : fleet->rec.deltas) now_seen += d.first;
    }
    if (now_seen == seen || Ms(Clock::now() - drain_start) > 300000) break;
    seen = now_seen;
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  {
    std::lock_guard<std::mutex> l(fleet->rec.mu);
    size_t reg_deltas = 0;
    for (const auto& [rev, d] : fleet->rec.deltas) reg_deltas += d.first;
    std::printf(
        "registration deltas drained %.0f ms after the last full state; %zu deltas to hosts "
        "already connected, full states at %zu distinct revisions\n",
        Ms(Clock::now() - fleet->rec.last_full), reg_deltas, fleet->rec.full_revisions.size());
  }
  if (const char* w = std::getenv("DFW_BENCH_EXTRA_WAIT_MS")) {
    std::this_thread::sleep_for(std::chrono::milliseconds(std::atoi(w)));
  }
  long rss_loaded = RssKiB(ctl.pid), etcd_rss_loaded = etcd_rss();
  if (etcd) PrintEtcdDisk("registration", m_api, etcd_metrics());

  // ---- tag changes, one at a time: accepted -> last affected host has its delta.
  std::mt19937 rng(42);
  std::vector<double> lat, api_lat;
  std::vector<int> fanout;
  int late = 0;
  std::vector<std::pair<uint64_t, int>> counted;
  for (int c = 0; c < f.changes; ++c) {
    int vm = static_cast<int>(rng() % f.vms);
    char id[32];
    std::snprintf(id, sizeof id, "vm-%06d", vm);
    TagRequest req;
    req.add_vm_ids(id);
    auto* t = req.add_set();
    t->set_scope("app");
    t->set_value(std::to_string(rng() % kApps));
    auto* r = req.add_remove();  // the VM's current app value, read back first
    r->set_scope("app");
    grpc::ClientContext gctx;
    GetRequest g;
    g.set_id(id);
    Vm cur;
    api->GetVm(&gctx, g, &cur);
    r->set_value("");
    for (const auto& tag : cur.tags()) {
      if (tag.scope() == "app") r->set_value(tag.value());
    }
    if (r->value() == t->value()) t->set_value(std::to_string((std::stoi(t->value()) + 1) % kApps));
    grpc::ClientContext ctx;
    TagResponse out;
    auto start = Clock::now();
    auto s = api->Tag(&ctx, req, &out);
    auto accepted = Clock::now();
    if (!s.ok()) {
      std::fprintf(stderr, "Tag: %s\n", s.error_message().c_str());
      FailExit();
    }
    api_lat.push_back(Ms(accepted - start));
    std::this_thread::sleep_for(std::chrono::milliseconds(f.settle_ms));
    std::lock_guard<std::mutex> l(fleet->rec.mu);
    auto it = fleet->rec.deltas.find(out.revision());
    if (it == fleet->rec.deltas.end()) continue;  // touched no host
    lat.push_back(Ms(it->second.second - start));
    if (std::getenv("DFW_BENCH_VERBOSE")) {
      std::printf("  change %d rev %lu: api %.2f ms, last host %.2f ms, hosts %d\n", c,
                  static_cast<unsigned long>(out.revision()), api_lat.back(), lat.back(),
                  it->second.first);
    }
    fanout.push_back(it->second.first);
    counted.emplace_back(out.revision(), it->second.first);
  }
  {
    std::lock_guard<std::mutex> l(fleet->rec.mu);  // deltas that came after their settle window
    for (const auto& [rev, n] : counted) late += fleet->rec.deltas[rev].first - n;
  }
  std::printf(
      "tag change -> last affected host has its delta, %zu changes (measured from the API call):\n"
      "  p50 %.2f ms  p90 %.2f ms  p99 %.2f ms  max %.2f ms; API call alone p50 %.2f ms p99 %.2f "
      "ms;\n"
      "  hosts per change p50 %.0f max %.0f; late deltas %d; overflow full states %lu\n",
      lat.size(), Pct(lat, 50), Pct(lat, 90), Pct(lat, 99), Pct(lat, 100), Pct(api_lat, 50),
      Pct(api_lat, 99), Pct(std::vector<double>(fanout.begin(), fanout.end()), 50),
      Pct(std::vector<double>(fanout.begin(), fanout.end()), 100), late,
      static_cast<unsigned long>(fleet->rec.overflow_fulls));

  // ---- VM moves, one at a time: the destination claims, then from the
  // source's first export chunk (t0) -> the destination has every import,
  // -> the destination has the VM's rules (after the imports), and the
  // source the delta without them.
  if (f.moves > 0 && f.hosts >= 2) {
    std::vector<int> owner(f.vms);
    for (int i = 0; i < f.vms; ++i)
      owner[i] = static_cast<int>(static_cast<int64_t>(i) * f.hosts / f.vms);
    std::vector<bool> moved(f.vms, false);
    std::vector<double> claim_lat, imp_lat, rules_lat, removed_lat, eps;
    int violations = 0, no_imports = 0, short_imports = 0, no_rules = 0, no_removal = 0;
    int claim_timeouts = 0, rules_not_first = 0, split_revisions = 0, done_moves = 0;
    uint64_t entries_sent = 0, entries_got = 0, stray_before = 0;
    double import_ms_sum = 0;
    {
      std::lock_guard<std::mutex> l(fleet->rec.mu);
      stray_before = fleet->rec.stray_imports;
    }
    const int n_entries = std::max(0, f.move_connections);
    for (int m = 0; m < f.moves && done_moves < f.vms; ++m) {
      int i;
      do {
        i = static_cast<int>(rng() % f.vms);
      } while (moved[i]);
      int a = owner[i];
      int b = static_cast<int>((a + 1 + rng() % (f.hosts - 1)) % f.hosts);
      Vm vm = MakeVm(i, f.hosts, f.vms);  // as its owner reported it
      const std::string vnic = vm.vnics(0).id();
      std::vector<HostToController> exports;
      if (n_entries > 0) exports = MakeExport(vm, i, n_entries);
      HostToController removal;
      removal.mutable_inventory()->add_vms_removed(vm.id());

      // The destination reports the VM while the source still holds it: a claim.
      int64_t refused = RefusedClaims(api.get(), HostId(b));
      HostToController claim;
      *claim.mutable_inventory()->add_vms_set() = vm;
      auto tc = Clock::now();
      fleet->hosts[b]->Send(std::move(claim));
      bool claimed = false;
      while (Ms(Clock::now() - tc) < 5000) {
        if (RefusedClaims(api.get(), HostId(b)) > refused) {
          claimed = true;
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      if (claimed) {
        claim_lat.push_back(Ms(Clock::now() - tc));
      } else {
        ++claim_timeouts;
      }

      // The source exports the vNIC's connections, then lets the VM go.
      Clock::time_point t0;
      {
        std::lock_guard<std::mutex> l(fleet->rec.mu);
        MoveWatch& mv = fleet->rec.move;
        mv = MoveWatch();
        mv.active = true;
        mv.src = a;
        mv.dst = b;
        mv.vm = vm.id();
        mv.vnic = vnic;
        mv.want_entries = n_entries;
        mv.t0 = t0 = Clock::now();
      }
      for (auto& x : exports) fleet->hosts[a]->Send(std::move(x));
      fleet->hosts[a]->Send(std::move(removal));
      {
        std::unique_lock<std::mutex> l(fleet->rec.mu);
        MoveWatch& mv = fleet->rec.move;
        fleet->rec.cv.wait_for(l, std::chrono::seconds(30), [&] {
          return (n_entries == 0 || mv.imports_last) && mv.rules && mv.removed;
        });
      }
      // Stragglers: an import after the rules, a second import.
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      std::lock_guard<std::mutex> l(fleet->rec.mu);
      MoveWatch& mv = fleet->rec.move;
      mv.active = false;
      entries_sent += n_entries;
      entries_got += mv.import_entries;
      if (n_entries > 0) {
        if (!mv.imports_last) {
          ++no_imports;
        } else {
          double ms = Ms(mv.imports_at - t0);
          imp_lat.push_back(ms);
          import_ms_sum += ms;
          eps.push_back(n_entries / ms * 1000);
          if (mv.import_entries != n_entries) ++short_imports;
        }
      }
      if (mv.rules) {
        rules_lat.push_back(Ms(mv.rules_at - t0));
        if (mv.first_rev != mv.rules_rev) ++rules_not_first;
      } else {
        ++no_rules;
      }
      if (mv.removed) {
        removed_lat.push_back(Ms(mv.removed_at - t0));
        if (mv.rules && mv.removed_rev != mv.rules_rev) ++split_revisions;
      } else {
        ++no_removal;
      }
      // The promise: every import before the revision with the VM's rules.
      bool violated = mv.imports_after_rules > 0 ||
                      (n_entries > 0 && mv.rules && mv.imports_last && mv.imports_at > mv.rules_at);
      if (violated) ++violations;
      if (std::getenv("DFW_BENCH_VERBOSE")) {
        std::printf(
            "  move %d %s %s -> %s: claim %.2f ms; imports %d msgs %d entries at %.2f ms; rules "
            "rev %lu at %.2f ms (first delta rev %lu); source removal rev %lu at %.2f ms%s\n",
            m, vm.id().c_str(), HostId(a).c_str(), HostId(b).c_str(),
            claimed ? claim_lat.back() : -1.0, mv.import_msgs, mv.import_entries,
            mv.imports_last ? Ms(mv.imports_at - t0) : -1.0,
            static_cast<unsigned long>(mv.rules_rev), mv.rules ? Ms(mv.rules_at - t0) : -1.0,
            static_cast<unsigned long>(mv.first_rev), static_cast<unsigned long>(mv.removed_rev),
            mv.removed ? Ms(mv.removed_at - t0) : -1.0, violated ? " ORDER VIOLATED" : "");
      }
      // The VM is b's now: a later move starts there, and the hosts'
      // reconnect Hellos (restart phase) list it on b.
      owner[i] = b;
      moved[i] = true;
      ++done_moves;
      auto* va = hellos[a].mutable_hello()->mutable_vms();
      for (int k = 0; k < va->size(); ++k) {
        if (va->Get(k).id() == vm.id()) {
          va->DeleteSubrange(k, 1);
          break;
        }
      }
      *hellos[b].mutable_hello()->add_vms() = vm;
    }
    uint64_t stray = 0;
    {
      std::lock_guard<std::mutex> l(fleet->rec.mu);
      stray = fleet->rec.stray_imports - stray_before;
    }
    std::printf(
        "VM moves, %d one at a time, %d connections per vNIC (%d ConnectionExport chunks), "
        "measured from the source's first export chunk:\n"
        "  -> destination has every imported entry: p50 %.2f ms  p99 %.2f ms  max %.2f ms; "
        "entries/s p50 %.0f (%.0f over all moves)\n"
        "  -> destination has the VM's rules:        p50 %.2f ms  p99 %.2f ms  max %.2f ms\n"
        "  -> source has the delta removing them:   p50 %.2f ms  p99 %.2f ms  max %.2f ms\n"
        "  claim (destination's report -> refused claim visible in ListHosts) p50 %.2f ms max "
        "%.2f ms;\n"
        "  ordering violations (an import after the rules) %d; entries sent %lu received %lu; "
        "moves without imports %d, with fewer entries %d, without rules %d, without the "
        "source's removal %d; rules not in the destination's first delta %d; source and "
        "destination in different revisions %d; claims not seen %d; stray imports %lu\n",
        done_moves, n_entries, n_entries == 0 ? 0 : (n_entries + kExportChunk - 1) / kExportChunk,
        Pct(imp_lat, 50), Pct(imp_lat, 99), Pct(imp_lat, 100), Pct(eps, 50),
        import_ms_sum > 0 ? static_cast<double>(entries_got) / import_ms_sum * 1000 : 0.0,
        Pct(rules_lat, 50), Pct(rules_lat, 99), Pct(rules_lat, 100), Pct(removed_lat, 50),
        Pct(removed_lat, 99), Pct(removed_lat, 100), Pct(claim_lat, 50), Pct(claim_lat, 100),
        violations, static_cast<unsigned long>(entries_sent),
        static_cast<unsigned long>(entries_got), no_imports, short_imports, no_rules, no_removal,
        rules_not_first, split_revisions, claim_timeouts, static_cast<unsigned long>(stray));
  }

  // ---- tag write throughput with every session attached (4 clients).
  std::atomic<int> next{0};
  int burst = std::max(200, f.changes * 5);
  EtcdMetrics m_burst = etcd_metrics();
  t0 = Clock::now();
  std::vector<std::thread> ws;
  for (int w = 0; w < 4; ++w) {
    ws.emplace_back([&, w] {
      auto stub = ControllerService::NewStub(api_ch);
      for (int i; (i = next++) < burst;) {
        TagRequest req;
        char id[32];
        std::snprintf(id, sizeof id, "vm-%06d", static_cast<int>(Mix(i * 4 + w) % f.vms));
        req.add_vm_ids(id);
        auto* t = req.add_set();
        t->set_scope("burst");
        t->set_value(std::to_string(i));
        grpc::ClientContext ctx;
        TagResponse out;
        stub->Tag(&ctx, req, &out);
      }
    });
  }
  for (auto& t : ws) t.join();
  double burst_ms = Ms(Clock::now() - t0);
  std::printf("API Tag writes with %d sessions attached, 4 clients: %d in %.0f ms (%.0f/s)\n",
              f.hosts, burst, burst_ms, burst / burst_ms * 1000);
  if (etcd) PrintEtcdDisk("Tag writes", m_burst, etcd_metrics());
  long rss_after = RssKiB(ctl.pid), etcd_rss_after = etcd_rss();
  if (f.failover) {
    std::printf(
        "controller RSS: %.0f MiB loaded with sessions, %.0f MiB after the write burst; etcd RSS "
        "%.0f / %.0f MiB at the same points\n",
        rss_loaded / 1024.0, rss_after / 1024.0, etcd_rss_loaded / 1024.0, etcd_rss_after / 1024.0);
    RunFailover(f, ctl, standby, std::move(fleet), hellos, pki.get());
    Stop(standby, SIGTERM);
    StopEtcd();
    if (own_dir) std::filesystem::remove_all(f.data_dir);
    return 0;
  }
  Disconnect(*fleet);
  fleet.reset();

  // ---- restart: load from RocksDB (or the same etcd), then every host reconnects.
  Stop(ctl, SIGTERM);
  // --resume: every host's Hello carries what it holds (its revision and
  // digests), built before the clock starts, as a dataplane keeps them.
  int with_digests = 0;
  if (f.resume) {
    size_t rulesets = 0, sets = 0, prefixes = 0, hello_bytes = 0;
    uint64_t rev_min = UINT64_MAX, rev_max = 0;
    for (int h = 0; h < f.hosts; ++h) {
      const HeldState& st = held[h];
      auto* hello = hellos[h].mutable_hello();
      hello->set_held_revision(st.revision);
      *hello->mutable_held() = st.Digests();
      if (!st.rulesets.empty() || !st.sets.empty()) ++with_digests;
      rulesets += st.rulesets.size();
      sets += st.sets.size();
      for (const auto& [id, c] : st.sets) prefixes += c->prefixes.size();
      hello_bytes += hello->held().ByteSizeLong();
      rev_min = std::min(rev_min, st.revision);
      rev_max = std::max(rev_max, st.revision);
    }
    auto [contents, interned] = Interner().Size();
    std::printf(
        "--resume: hosts hold revisions %lu..%lu; per host on average %zu ruleset digests, %zu "
        "address sets, %zu prefixes; fleet-wide %zu distinct set contents with %zu prefixes "
        "interned (%.1f%% of the %zu the hosts hold); %d Hellos carry digests, %.1f KiB each on "
        "average\n",
        static_cast<unsigned long>(rev_min), static_cast<unsigned long>(rev_max),
        rulesets / f.hosts, sets / f.hosts, prefixes / f.hosts, contents, interned,
        prefixes ? 100.0 * interned / prefixes : 0.0, prefixes, with_digests,
        hello_bytes / 1024.0 / f.hosts);
  }
  ctl = Spawn(f.data_dir, pki_dir, etcd.get());
  auto api2 = ControllerService::NewStub(
      grpc::CreateChannel(ctl.grpc, Creds(pki.get(), pki ? &pki->admin : nullptr)));
  // A host that holds the current revision with matching digests is sent
  // nothing: not waited for.
  int expect = f.hosts;
  uint64_t rev_restarted = 0;
  if (f.resume) {
    rev_restarted = CurrentRevision(api2.get(), policies);
    expect = static_cast<int>(std::count_if(held.begin(), held.end(), [&](const HeldState& st) {
      return st.revision != rev_restarted;
    }));
  }
  auto fleet2 = std::make_unique<Fleet>();
  fleet2->rec.count_bytes = f.resume;
  t0 = Clock::now();
  Connect(*fleet2, ctl.grpc, hellos, f.channel_per_host, pki.get(), held_ptr);
  if (f.resume ? !WaitFirstAcked(*fleet2, expect, 600) : !WaitFull(*fleet2, f.hosts, 600)) {
    std::lock_guard<std::mutex> l(fleet2->rec.mu);
    std::fprintf(stderr,
                 "reconnect: not every host got its %s (%d, acked %d); %d sessions failed, the "
                 "first: %s\n",
                 f.resume ? "first message" : "full state",
                 f.resume ? fleet2->rec.first_count : fleet2->rec.full_count,
                 fleet2->rec.first_acked, fleet2->rec.failed, fleet2->rec.first_error.c_str());
    FailExit();
  }
  long rss_restarted = 0, etcd_rss_restarted = 0;
  auto print_rss = [&] {
    std::printf(
        "controller RSS: %.0f MiB loaded with sessions, %.0f MiB after the write burst, %.0f MiB "
        "after restart\n",
        rss_loaded / 1024.0, rss_after / 1024.0, rss_restarted / 1024.0);
    if (etcd) {
      std::printf(
          "etcd RSS: %.0f MiB loaded with sessions, %.0f MiB after the write burst, %.0f MiB "
          "after restart; etcd database size %.0f MiB\n",
          etcd_rss_loaded / 1024.0, etcd_rss_after / 1024.0, etcd_rss_restarted / 1024.0,
          EtcdDbSize(*etcd) / 1048576.0);
    }
  };
  if (!f.resume) {
    double warm_ms = Ms(fleet2->rec.last_full - t0);
    rss_restarted = RssKiB(ctl.pid);
    etcd_rss_restarted = etcd_rss();
    std::printf(
        "controller restart: start (%s load + rebuild) %.0f ms; all %d hosts reconnect -> full "
        "state in %.0f ms\n",
        f.etcd ? "etcd" : "RocksDB", ctl.start_ms, f.hosts, warm_ms);
    print_rss();
    // After the figures above: the hosts' acks of their full states.
    if (WaitFirstAcked(*fleet2, f.hosts, 60)) {
      std::lock_guard<std::mutex> l(fleet2->rec.mu);
      std::printf("  every host's ack of its full state written %.0f ms after the reconnect\n",
                  Ms(fleet2->rec.last_first_ack - t0));
    }
  } else {
    double first_ms, acked_ms;
    {
      std::lock_guard<std::mutex> l(fleet2->rec.mu);
      first_ms = expect > 0 ? Ms(fleet2->rec.last_first - t0) : 0;
      acked_ms = expect > 0 ? Ms(fleet2->rec.last_first_ack - t0) : 0;
    }
    rss_restarted = RssKiB(ctl.pid);
    etcd_rss_restarted = etcd_rss();
    std::printf(
        "controller restart: start (%s load + rebuild) %.0f ms; all %d hosts reconnect with their "
        "digests (--resume) -> every host has its first message in %.0f ms, its ack written in "
        "%.0f ms (%d hosts held the controller's revision %lu already: none expected)\n",
        f.etcd ? "etcd" : "RocksDB", ctl.start_ms, f.hosts, first_ms, acked_ms, f.hosts - expect,
        static_cast<unsigned long>(rev_restarted));
    print_rss();
    // The check, cheap: the controller sees every host at its revision (its
    // acks may still be in flight: up to 10 s), and after the sessions end
    // every host holds that revision, got no full state and nothing it could
    // not apply.
    uint64_t current = CurrentRevision(api2.get(), policies);
    int not_acked = f.hosts;
    for (auto w = Clock::now(); Ms(Clock::now() - w) < 10000;) {
      if ((not_acked = HostsNotAcked(api2.get(), current, f.hosts)) == 0) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    Disconnect(*fleet2);
    int wrong_rev = 0;
    uint64_t anomalies = 0;
    std::string first_anomaly;
    for (const HeldState& st : held) {
      wrong_rev += st.revision != current ? 1 : 0;
      if (st.anomalies > 0 && anomalies == 0) first_anomaly = st.first_anomaly;
      anomalies += st.anomalies;
    }
    const Recorder& r = fleet2->rec;  // sessions done
    uint64_t bytes = r.bytes_full + r.bytes_delta;
    std::printf(
        "resume after the restart: %d of %d hosts sent digests; received %lu full states and %lu "
        "deltas, %lu bytes (ByteSizeLong; %.1f per host) vs %.1f MiB of full states at cold "
        "registration (%.4f%%); the deltas set %lu rulesets and %lu address sets whole (%lu "
        "prefixes with the set deltas' added and removed) and change %lu sets\n",
        with_digests, f.hosts, static_cast<unsigned long>(r.msgs_full),
        static_cast<unsigned long>(r.msgs_delta), static_cast<unsigned long>(bytes),
        static_cast<double>(bytes) / f.hosts, cold_full_bytes / 1048576.0,
        cold_full_bytes ? 100.0 * bytes / cold_full_bytes : 0.0,
        static_cast<unsigned long>(r.delta_rulesets),
        static_cast<unsigned long>(r.delta_sets_whole),
        static_cast<unsigned long>(r.delta_prefixes),
        static_cast<unsigned long>(r.delta_set_changes));
    std::printf(
        "resume check: controller at revision %lu; hosts holding another revision %d; hosts the "
        "controller does not see at it (ListHosts) %d; full states %lu; anomalies %lu%s%s\n",
        static_cast<unsigned long>(current), wrong_rev, not_acked,
        static_cast<unsigned long>(r.msgs_full), static_cast<unsigned long>(anomalies),
        anomalies ? ", the first: " : "", first_anomaly.c_str());
    bool fulls_wrong = with_digests == f.hosts && r.msgs_full > 0;
    if (fulls_wrong || wrong_rev > 0 || not_acked > 0 || anomalies > 0) {
      std::fprintf(stderr, "resume check failed%s\n",
                   fulls_wrong ? ": full states although every host sent its digests" : "");
      FailExit();
    }
  }
  if (!f.resume) Disconnect(*fleet2);  // --resume: done above
  fleet2.reset();
  Stop(ctl, SIGTERM);
  StopEtcd();
  if (own_dir) std::filesystem::remove_all(f.data_dir);
  return 0;
}
