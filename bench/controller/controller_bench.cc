// Controller benchmark: host sessions at scale over real gRPC streams.
//
//   bench_controller [--hosts 1000] [--vms 100000] [--groups 10000]
//                    [--rules 20000] [--changes 100] [--settle-ms 500]
//                    [--data-dir DIR] [--channel-per-host] [--tls]
//
// Spawns the real dfw-controller (its own process, so its memory is its
// own), loads groups and policies through the gRPC API (each write is one
// RocksDB WriteBatch with a synced WAL), then opens --hosts HostSession
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
// Measures:
//   - API write rate (PutGroup / PutPolicy / Tag, synced WAL);
//   - cold registration: first Hello sent -> every host holds its full state;
//   - tag change -> last affected host has its delta (p50 / p99 / max),
//     one change at a time, each given --settle-ms for stragglers;
//   - controller restart: load from RocksDB, then all hosts reconnect and
//     get full state;
//   - controller RSS.
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "dfw/trust/ca.h"
#include "dfw/trust/spiffe_id.h"
#include "dfw/trust/svid.h"
#include "dfw/v1/controller.grpc.pb.h"
#include "dfw/v1/host.grpc.pb.h"

using Clock = std::chrono::steady_clock;
using namespace dfw::v1;

namespace {

struct Flags {
  int hosts = 1000, vms = 100000, groups = 10000, rules = 20000, changes = 100, settle_ms = 500;
  std::string data_dir;
  bool tls = false, channel_per_host = false;
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

// ------------------------------------------------------- the controller

struct Controller {
  pid_t pid = -1;
  std::string grpc;
  double start_ms = 0;
};

// pki_dir empty: --insecure; else --pki-dir pki_dir (mutual TLS).
Controller Spawn(const std::string& dir, const std::string& pki_dir) {
  Controller c;
  std::string port_file = dir + "/ports";
  std::remove(port_file.c_str());
  auto t0 = Clock::now();
  c.pid = fork();
  if (c.pid == 0) {
    std::string log = dir + "/controller.log";
    FILE* f = std::fopen(log.c_str(), "a");
    dup2(fileno(f), 1);
    dup2(fileno(f), 2);
    std::string db = dir + "/db";
    if (pki_dir.empty()) {
      execl(DFW_CONTROLLER_BIN, DFW_CONTROLLER_BIN, "--data-dir", db.c_str(), "--grpc-listen",
            "127.0.0.1:0", "--http-listen", "", "--port-file", port_file.c_str(), "--insecure",
            nullptr);
    } else {
      execl(DFW_CONTROLLER_BIN, DFW_CONTROLLER_BIN, "--data-dir", db.c_str(), "--grpc-listen",
            "127.0.0.1:0", "--http-listen", "", "--port-file", port_file.c_str(), "--pki-dir",
            pki_dir.c_str(), nullptr);
    }
    _exit(127);
  }
  for (;;) {
    std::ifstream f(port_file);
    std::string line;
    if (std::getline(f, line) && line.find("grpc=") != std::string::npos) {
      c.grpc = line.substr(line.find("grpc=") + 5);
      c.grpc = c.grpc.substr(0, c.grpc.find(' '));
      break;
    }
    int st;
    if (waitpid(c.pid, &st, WNOHANG) == c.pid) {
      std::fprintf(stderr, "dfw-controller exited; see %s/controller.log\n", dir.c_str());
      std::exit(1);
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

struct Recorder {
  std::mutex mu;
  std::condition_variable cv;
  int full_count = 0;
  Clock::time_point last_full;
  size_t full_prefixes = 0, full_rules = 0;
  // revision -> (hosts that received it, last receive time)
  std::map<uint64_t, std::pair<int, Clock::time_point>> deltas;
  uint64_t overflow_fulls = 0;
  int done = 0;
  // Sessions that ended with an error before the bench cancelled them.
  int failed = 0;
  std::string first_error;
};

class HostSim final : public grpc::ClientBidiReactor<HostToController, ControllerToHost> {
 public:
  HostSim(HostSessionService::Stub* stub, HostToController hello, Recorder* rec)
      : hello_(std::move(hello)), rec_(rec) {
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

  void OnReadDone(bool ok) override {
    if (!ok) return;
    auto now = Clock::now();
    uint64_t rev = 0;
    {
      std::lock_guard<std::mutex> l(rec_->mu);
      if (in_.has_full()) {
        rev = in_.full().revision();
        if (!got_full_) {
          got_full_ = true;
          ++rec_->full_count;
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
      } else {
        rev = in_.delta().to_revision();
        auto& d = rec_->deltas[rev];
        ++d.first;
        d.second = now;
      }
    }
    // Free a full state now: parsing the next delta into in_ would free its
    // thousands of strings on the latency path of that delta.
    if (in_.has_full()) in_ = ControllerToHost();
    {
      std::lock_guard<std::mutex> l(mu_);
      pending_ack_ = rev;
    }
    MaybeAck();
    StartRead(&in_);
  }
  void OnWriteDone(bool ok) override {
    {
      std::lock_guard<std::mutex> l(mu_);
      writing_ = false;
      if (!ok) return;
    }
    MaybeAck();
  }
  void OnDone(const grpc::Status& s) override {
    std::lock_guard<std::mutex> l(rec_->mu);
    ++rec_->done;
    if (!s.ok() && s.error_code() != grpc::StatusCode::CANCELLED) {
      if (rec_->failed++ == 0)
        rec_->first_error = std::to_string(s.error_code()) + " " + s.error_message();
    }
    rec_->cv.notify_all();
  }

 private:
  void MaybeAck() {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (writing_ || pending_ack_ == 0) return;
      out_.mutable_ack()->set_revision(pending_ack_);
      out_.mutable_ack()->set_ok(true);
      pending_ack_ = 0;
      writing_ = true;
    }
    StartWrite(&out_);
  }
  grpc::ClientContext ctx_;
  HostToController hello_, out_;
  ControllerToHost in_;
  Recorder* rec_;
  std::mutex mu_;
  bool writing_ = false;
  bool got_full_ = false;
  uint64_t pending_ack_ = 0;
};

struct Fleet {
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  std::vector<std::unique_ptr<HostSessionService::Stub>> stubs;
  std::vector<std::unique_ptr<HostSim>> hosts;
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
void Connect(Fleet& fleet, const std::string& target, const std::vector<HostToController>& hellos,
             bool per_host, const Pki* pki) {
  size_t n = per_host ? hellos.size() : kSharedChannels;
  for (size_t c = 0; c < n; ++c) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(-1);
    args.SetInt("dfw.bench.channel",
                static_cast<int>(c));  // distinct channels, distinct connections
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    fleet.channels.push_back(
        grpc::CreateCustomChannel(target, Creds(pki, pki ? &pki->hosts[c] : nullptr), args));
    fleet.stubs.push_back(HostSessionService::NewStub(fleet.channels.back()));
  }
  for (size_t h = 0; h < hellos.size(); ++h) {
    fleet.hosts.push_back(
        std::make_unique<HostSim>(fleet.stubs[h % n].get(), hellos[h], &fleet.rec));
  }
}

void Disconnect(Fleet& fleet) {
  for (auto& h : fleet.hosts) h->Cancel();
  std::unique_lock<std::mutex> l(fleet.rec.mu);
  fleet.rec.cv.wait_for(l, std::chrono::seconds(30),
                        [&] { return fleet.rec.done == static_cast<int>(fleet.hosts.size()); });
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

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  Flags f;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--tls") {
      f.tls = f.channel_per_host = true;
      continue;
    }
    if (a == "--channel-per-host") {
      f.channel_per_host = true;
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
    else if (a == "--data-dir")
      f.data_dir = v;
    else {
      std::fprintf(stderr, "unknown flag %s\n", a.c_str());
      return 2;
    }
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
  Controller ctl = Spawn(f.data_dir, pki_dir);
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
      return 1;
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
      return 1;
    }
  }
  double policies_ms = Ms(Clock::now() - t0);
  std::printf(
      "API writes: %d PutGroup in %.0f ms (%.0f/s), %d PutPolicy in %.0f ms (%.0f/s), sequential, "
      "synced WAL\n",
      f.groups, groups_ms, f.groups / groups_ms * 1000, policies, policies_ms,
      policies / policies_ms * 1000);

  // ---- cold registration: every host says hello with its inventory.
  auto hellos = MakeHellos(f);
  auto fleet = std::make_unique<Fleet>();
  t0 = Clock::now();
  Connect(*fleet, ctl.grpc, hellos, f.channel_per_host, pki.get());
  if (!WaitFull(*fleet, f.hosts, 600)) {
    std::lock_guard<std::mutex> l(fleet->rec.mu);
    std::fprintf(stderr,
                 "not every host got its full state (%d); %d sessions failed, the first: %s\n",
                 fleet->rec.full_count, fleet->rec.failed, fleet->rec.first_error.c_str());
    Stop(ctl, SIGKILL);
    std::_Exit(1);  // the fleet's live streams would hold up a normal exit
  }
  double cold_ms = Ms(fleet->rec.last_full - t0);
  std::printf(
      "cold registration (hello with inventory -> full state, all hosts): %.0f ms; "
      "avg per host %zu compiled rules, %zu address-set prefixes\n",
      cold_ms, fleet->rec.full_rules / f.hosts, fleet->rec.full_prefixes / f.hosts);
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
  std::printf("registration deltas drained %.0f ms after the last full state\n",
              Ms(Clock::now() - fleet->rec.last_full));
  if (const char* w = std::getenv("DFW_BENCH_EXTRA_WAIT_MS")) {
    std::this_thread::sleep_for(std::chrono::milliseconds(std::atoi(w)));
  }
  long rss_loaded = RssKiB(ctl.pid);

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
      return 1;
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

  // ---- tag write throughput with every session attached (4 clients).
  std::atomic<int> next{0};
  int burst = std::max(200, f.changes * 5);
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
  long rss_after = RssKiB(ctl.pid);
  Disconnect(*fleet);
  fleet.reset();

  // ---- restart: load from RocksDB, then every host reconnects.
  Stop(ctl, SIGTERM);
  ctl = Spawn(f.data_dir, pki_dir);
  auto fleet2 = std::make_unique<Fleet>();
  t0 = Clock::now();
  Connect(*fleet2, ctl.grpc, hellos, f.channel_per_host, pki.get());
  if (!WaitFull(*fleet2, f.hosts, 600)) {
    std::lock_guard<std::mutex> l(fleet2->rec.mu);
    std::fprintf(
        stderr,
        "reconnect: not every host got its full state (%d); %d sessions failed, the first: %s\n",
        fleet2->rec.full_count, fleet2->rec.failed, fleet2->rec.first_error.c_str());
    Stop(ctl, SIGKILL);
    std::_Exit(1);  // the fleet's live streams would hold up a normal exit
  }
  double warm_ms = Ms(fleet2->rec.last_full - t0);
  long rss_restarted = RssKiB(ctl.pid);
  std::printf(
      "controller restart: start (RocksDB load + rebuild) %.0f ms; all %d hosts reconnect -> full "
      "state in %.0f ms\n",
      ctl.start_ms, f.hosts, warm_ms);
  std::printf(
      "controller RSS: %.0f MiB loaded with sessions, %.0f MiB after the write burst, %.0f MiB "
      "after restart\n",
      rss_loaded / 1024.0, rss_after / 1024.0, rss_restarted / 1024.0);
  Disconnect(*fleet2);
  fleet2.reset();
  Stop(ctl, SIGTERM);
  if (own_dir) std::filesystem::remove_all(f.data_dir);
  return 0;
}
