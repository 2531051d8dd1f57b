// High availability on etcd (issue 15; label "ha"): 3 etcd members and 3
// dfw-controller processes on loopback, simulated hosts on the host agent's
// real ControllerSession given the three controller addresses, a writer on
// REST that follows the leader.
//
// Rounds: kill -9 the leading controller (and start it again, a standby),
// then kill -9 etcd's raft leader (and start it again). Each round makes a
// change that concerns every host and measures the time from the kill to a
// controller that accepts writes and to the change acknowledged by every
// host (median and max are printed). At the end: the change log has every
// revision once, in order, and holds every acknowledged write; the log read
// through the API is the one in etcd.
#include <grpcpp/grpcpp.h>
#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "controller_process.h"
#include "dfw/controller/etcd_store.h"
#include "dfw/hostagent/controller_session.h"
#include "dfw/tagging/str_cat.h"
#include "etcd_cluster.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "host_view.h"

namespace dfw::controller::testing {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

int Rounds() {
  const char* r = std::getenv("DFW_HA_ROUNDS");
  return r && std::atoi(r) > 0 ? std::atoi(r) : 20;
}

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

struct SimHost {
  std::string id;
  std::vector<dfw::v1::Vm> vms;
  std::atomic<uint64_t> applied{0};
  std::atomic<uint64_t> fulls{0}, deltas{0};
  std::mutex mu;
  HostView view;  // what it holds: its Hello's digests
  std::unique_ptr<hostagent::ControllerSession> session;
};

class HaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    ASSERT_TRUE(etcd_.Start(&why)) << why;
    std::string grpc_list;
    for (int i = 0; i < 3; ++i) {
      grpc_ports_.push_back(FreeLoopbackPort());
      http_ports_.push_back(FreeLoopbackPort());
      grpc_list += (i ? "," : "") + Cat("127.0.0.1:", grpc_ports_[i]);
      dirs_.push_back(std::make_unique<TempDir>());
      controllers_.push_back(std::make_unique<ControllerProcess>(
          dirs_[i]->path(),
          std::vector<std::string>{"--etcd-endpoints", etcd_.endpoint_list(), "--grpc-listen",
                                   Cat("127.0.0.1:", grpc_ports_[i]), "--http-listen",
                                   Cat("127.0.0.1:", http_ports_[i]), "--name", Cat("c", i),
                                   "--lease-ttl", "2"}));
      controllers_[i]->Start();
    }
    ASSERT_GE(WaitForLeader(Clock::now() + std::chrono::seconds(20)), 0) << Logs();
    // The model the hosts' rulesets come from: every VM in "all"; "probe"
    // (changed each round) is the source of a rule applied to "all".
    ASSERT_TRUE(
        Write("PUT", "/api/v1/groups/all",
              R"({"id":"all","criteria":[{"conditions":[{"tag":{"scope":"app","value":"web"}}]}]})")
            .ok);
    ASSERT_TRUE(Write("PUT", "/api/v1/groups/probe",
                      R"({"id":"probe","static_members":{"ip_prefixes":["198.19.0.0/24"]}})")
                    .ok);
    ASSERT_TRUE(Write("PUT", "/api/v1/policies/p",
                      R"({"id":"p","category":"CATEGORY_APPLICATION","applied_to_group_ids":["all"],
                          "rules":[{"id":"r1","sources":{"group_ids":["probe"]},
                                    "destinations":{"group_ids":["all"]},
                                    "services":[{"protocol":6,"destination_ports":[{"first":22}]}],
                                    "action":"ACTION_ALLOW"}]})")
                    .ok);
    for (int h = 0; h < kHosts; ++h) {
      auto host = std::make_unique<SimHost>();
      host->id = Cat("h", h);
      for (int v = 0; v < 2; ++v) {
        dfw::v1::Vm vm;
        vm.set_id(Cat("vm", h, "-", v));
        vm.set_name(vm.id());
        auto* t = vm.add_tags();
        t->set_scope("app");
        t->set_value("web");
        auto* n = vm.add_vnics();
        n->set_id(vm.id() + "-nic0");
        n->set_mac(Cat("52:54:00:00:0", h, ":0", v));
        n->add_addresses()->set_ip(Cat("198.18.", h, ".", v + 1));
        host->vms.push_back(vm);
      }
      SimHost* hp = host.get();
      hostagent::ControllerSession::Hooks hooks;
      hooks.hello = [hp] {
        dfw::v1::HostHello hello;
        hello.mutable_host()->set_id(hp->id);
        for (const auto& vm : hp->vms) *hello.add_vms() = vm;
        std::lock_guard<std::mutex> l(hp->mu);
        hello.set_held_revision(hp->view.revision);
        if (hp->view.revision != 0) *hello.mutable_held() = hp->view.Digests();
        return hello;
      };
      hooks.apply = [hp](const dfw::v1::ControllerToHost& m) -> absl::StatusOr<uint64_t> {
        std::lock_guard<std::mutex> l(hp->mu);
        if (m.has_delta()) {
          if (m.delta().from_revision() != hp->view.revision) {
            return absl::FailedPreconditionError(
                Cat("delta from ", m.delta().from_revision(), ", holding ", hp->view.revision));
          }
          hp->deltas++;
        } else {
          hp->fulls++;
        }
        hp->view.Apply(m);
        hp->applied = hp->view.revision;
        return hp->view.revision;
      };
      host->session = std::make_unique<hostagent::ControllerSession>(
          grpc_list, grpc::InsecureChannelCredentials(), hooks);
      host->session->Start();
      hosts_.push_back(std::move(host));
    }
    ASSERT_TRUE(WaitAllAcked(current_revision_, Clock::now() + std::chrono::seconds(20))) << Logs();
  }

  void TearDown() override {
    for (auto& h : hosts_) h->session->Stop();
  }

  struct Reply {
    bool ok = false;
    int status = 0;
    json body;
  };
  Reply Call(int i, const std::string& method, const std::string& path,
             const std::string& body = "") {
    httplib::Client cli("127.0.0.1", http_ports_[i]);
    cli.set_connection_timeout(1, 0);
    cli.set_read_timeout(10, 0);
    httplib::Result r = method == "GET"   ? cli.Get(path.c_str())
                        : method == "PUT" ? cli.Put(path.c_str(), body, "application/json")
                                          : cli.Delete(path.c_str());
    Reply out;
    if (!r) return out;
    out.status = r->status;
    out.ok = r->status >= 200 && r->status < 300;
    out.body = json::parse(r->body, nullptr, false);
    return out;
  }
  // The index of the controller that answers as the leader, or -1.
  int WaitForLeader(Clock::time_point deadline) {
    while (Clock::now() < deadline) {
      for (int i = 0; i < 3; ++i) {
        if (!controllers_[i]->running()) continue;
        if (Call(i, "GET", "/api/v1/status").ok) return leader_ = i;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return -1;
  }
  // A write on the leader, found again (and followed) as needed; retried
  // until it is acknowledged or 30 s pass. Records what was acknowledged.
  Reply Write(const std::string& method, const std::string& path, const std::string& body) {
    auto deadline = Clock::now() + std::chrono::seconds(30);
    Reply r;
    while (Clock::now() < deadline) {
      if (leader_ < 0 || !controllers_[leader_]->running()) {
        if (WaitForLeader(deadline) < 0) break;
      }
      r = Call(leader_, method, path, body);
      if (r.ok) {
        json st = Call(leader_, "GET", "/api/v1/status").body;
        uint64_t rev = r.body.is_object() && r.body.contains("revision")
                           ? std::stoull(r.body["revision"].get<std::string>())
                           : 0;
        if (rev == 0 && st.is_object()) rev = st.value("revision", uint64_t{0});
        current_revision_ = std::max(current_revision_, rev);
        acked_.push_back({path, rev});
        return r;
      }
      if (r.status == 503 && r.body.is_object() && r.body.contains("leader")) {
        std::string http = r.body["leader"].value("http", "");
        for (int i = 0; i < 3; ++i) {
          if (http == Cat("127.0.0.1:", http_ports_[i])) leader_ = i;
        }
      } else if (r.status == 0 || r.status >= 500) {
        leader_ = -1;
      } else {
        return r;  // refused (4xx): not retried
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return r;
  }
  bool WaitAllAcked(uint64_t revision, Clock::time_point deadline) {
    while (Clock::now() < deadline) {
      bool all = true;
      for (const auto& h : hosts_) all = all && h->applied.load() >= revision;
      if (all) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return false;
  }
  std::string Logs() {
    std::string s;
    for (int i = 0; i < 3; ++i) {
      std::string l = controllers_[i]->Log();
      if (l.size() > 4000) l = "..." + l.substr(l.size() - 4000);
      s += Cat("--- controller c", i, "\n", l, "\n");
    }
    return s;
  }
  // The round's change: "probe" moves to another /24; every host's rules change.
  Reply ProbeChange(int round) {
    return Write("PUT", "/api/v1/groups/probe",
                 Cat(R"({"id":"probe","static_members":{"ip_prefixes":["198.19.)", round % 250 + 1,
                     R"(.0/24"]}})"));
  }

  static void Report(const char* what, std::vector<double> leader_ms,
                     std::vector<double> acked_ms) {
    auto stat = [](std::vector<double> v) {
      std::sort(v.begin(), v.end());
      return std::make_pair(v.empty() ? 0 : v[v.size() / 2], v.empty() ? 0 : v.back());
    };
    auto [lm, lx] = stat(leader_ms);
    auto [am, ax] = stat(acked_ms);
    std::printf(
        "HA %s, %zu rounds: to a controller taking writes median %.0f ms, max %.0f ms; to the "
        "first change acked by every host median %.0f ms, max %.0f ms\n",
        what, leader_ms.size(), lm, lx, am, ax);
    std::fflush(stdout);
  }

  static constexpr int kHosts = 4;
  EtcdCluster etcd_{3};
  std::vector<int> grpc_ports_, http_ports_;
  std::vector<std::unique_ptr<TempDir>> dirs_;
  std::vector<std::unique_ptr<ControllerProcess>> controllers_;
  std::vector<std::unique_ptr<SimHost>> hosts_;
  int leader_ = -1;
  uint64_t current_revision_ = 0;
  struct Acked {
    std::string path;
    uint64_t revision;
  };
  std::vector<Acked> acked_;
};

// A standby names the leader (REST: 503, the body's "leader" and
// X-Dfw-Leader); dfwctl given a standby first follows it to the leader.
TEST_F(HaTest, StandbysNameTheLeaderAndDfwctlFollowsIt) {
  int standby = (leader_ + 1) % 3;
  Reply r = Call(standby, "GET", "/api/v1/groups");
  EXPECT_EQ(r.status, 503);
  ASSERT_TRUE(r.body.is_object() && r.body.contains("leader")) << r.body.dump();
  EXPECT_EQ(r.body["leader"].value("http", ""), Cat("127.0.0.1:", http_ports_[leader_]));
  EXPECT_EQ(r.body["leader"].value("name", ""), Cat("c", leader_));
  httplib::Client cli("127.0.0.1", http_ports_[standby]);
  auto raw = cli.Get("/api/v1/status");
  ASSERT_TRUE(raw);
  EXPECT_EQ(raw->get_header_value("X-Dfw-Leader"), Cat("127.0.0.1:", http_ports_[leader_]));

  std::string servers = Cat("http://127.0.0.1:", http_ports_[standby],
                            ",http://127.0.0.1:", http_ports_[(leader_ + 2) % 3],
                            ",http://127.0.0.1:", http_ports_[leader_]);
  std::string cmd = Cat(DFWCTL_BIN, " --insecure --server ", servers, " group list 2>&1");
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[256];
  while (fgets(buf, sizeof buf, p)) out += buf;
  int rc = pclose(p);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("probe"), std::string::npos) << out;
  // Every controller down but the list's last: dfwctl still gets there.
  std::string dead =
      Cat("http://127.0.0.1:", FreeLoopbackPort(), ",http://127.0.0.1:", http_ports_[leader_]);
  p = popen(Cat(DFWCTL_BIN, " --insecure --server ", dead, " group list 2>&1").c_str(), "r");
  ASSERT_NE(p, nullptr);
  out.clear();
  while (fgets(buf, sizeof buf, p)) out += buf;
  EXPECT_EQ(pclose(p), 0) << out;
}

TEST_F(HaTest, KillTheLeaderControllerThenEtcdsLeaderNothingLost) {
  const int rounds = Rounds();
  int round = 0;
  std::vector<double> to_leader, to_acked;
  for (int r = 0; r < rounds; ++r, ++round) {
    int victim = leader_;
    ASSERT_GE(victim, 0);
    // A write acknowledged just before the kill must survive it.
    ASSERT_TRUE(
        Write("PUT", Cat("/api/v1/groups/w", round),
              Cat(R"({"id":"w)", round, R"(","static_members":{"ip_prefixes":["198.18.200.)",
                  round % 250, R"(/32"]}})"))
            .ok)
        << Logs();
    std::vector<size_t> log_before;
    for (const auto& c : controllers_) log_before.push_back(c->Log().size());
    auto t0 = Clock::now();
    controllers_[victim]->Kill(SIGKILL);
    leader_ = -1;
    Reply change = ProbeChange(round);
    ASSERT_TRUE(change.ok) << "round " << r << "\n" << Logs();
    to_leader.push_back(Ms(Clock::now() - t0));
    EXPECT_NE(leader_, victim);
    // It took over with the model it followed while standing by.
    std::string took;
    WaitFor(
        [&] {
          std::string log = controllers_[leader_]->Log();
          size_t p = log.find("leads at revision", log_before[leader_]);
          if (p != std::string::npos) took = log.substr(p, log.find('\n', p) - p);
          return !took.empty();
        },
        5000);
    EXPECT_NE(took.find("warm model followed"), std::string::npos) << "round " << r << ": " << took;
    ASSERT_TRUE(WaitAllAcked(current_revision_, Clock::now() + std::chrono::seconds(30)))
        << "round " << r << ": hosts at " << hosts_[0]->applied << "," << hosts_[1]->applied
        << "... of " << current_revision_ << "\n"
        << Logs();
    to_acked.push_back(Ms(Clock::now() - t0));
    controllers_[victim]->Start();  // back as a standby
  }
  Report("kill -9 of the leading controller", to_leader, to_acked);

  std::vector<double> etcd_to_write, etcd_to_acked;
  int controller_exits = 0;
  for (int r = 0; r < rounds; ++r, ++round) {
    int victim = etcd_.LeaderIndex();
    ASSERT_GE(victim, 0) << etcd_.Logs();
    auto t0 = Clock::now();
    etcd_.Kill(static_cast<size_t>(victim));
    Reply change = ProbeChange(round);
    ASSERT_TRUE(change.ok) << "round " << r << "\n" << Logs();
    etcd_to_write.push_back(Ms(Clock::now() - t0));
    ASSERT_TRUE(WaitAllAcked(current_revision_, Clock::now() + std::chrono::seconds(30)))
        << "round " << r << "\n"
        << Logs();
    etcd_to_acked.push_back(Ms(Clock::now() - t0));
    etcd_.Restart(static_cast<size_t>(victim));
    ASSERT_TRUE(etcd_.WaitHealthy(20000)) << etcd_.Logs();
    for (int i = 0; i < 3; ++i) {
      if (!controllers_[i]->running()) {  // lost its lease while etcd elected
        ++controller_exits;
        std::string log = controllers_[i]->Log();
        size_t p = log.rfind("lost the leadership");
        std::printf("HA c%d exited (%d): %s\n", i, controllers_[i]->exit_code(),
                    p == std::string::npos ? "?" : log.substr(p, log.find('\n', p) - p).c_str());
        controllers_[i]->Start();
      }
    }
  }
  Report("kill -9 of etcd's raft leader", etcd_to_write, etcd_to_acked);
  std::printf("HA controllers that lost the leadership during the etcd rounds: %d\n",
              controller_exits);

  // The change log: every revision from 1 to the last, once, in order.
  std::vector<dfw::v1::ChangeEvent> log;
  uint64_t from = 0;
  for (;;) {
    Reply page = Call(leader_, "GET", Cat("/api/v1/changes?from_revision=", from));
    ASSERT_TRUE(page.ok) << page.status;
    auto events = page.body["events"];
    if (events.empty()) break;
    for (const auto& e : events) {
      dfw::v1::ChangeEvent ev;
      ev.set_revision(std::stoull(e["revision"].get<std::string>()));
      ev.set_id(e.value("id", ""));
      log.push_back(ev);
    }
    from = log.back().revision();
  }
  ASSERT_FALSE(log.empty());
  uint64_t expect = 1;
  for (size_t i = 0; i < log.size(); ++i) {
    uint64_t rev = log[i].revision();
    if (i > 0 && rev == log[i - 1].revision()) continue;  // several events of one change
    ASSERT_EQ(rev, expect) << "revision missing or repeated in the change log";
    ++expect;
  }
  EXPECT_EQ(expect - 1, current_revision_);
  // Every acknowledged write is in the log at its revision, and stored.
  for (const auto& a : acked_) {
    std::string id = a.path.substr(a.path.rfind('/') + 1);
    bool found = std::any_of(log.begin(), log.end(), [&](const dfw::v1::ChangeEvent& e) {
      return e.revision() == a.revision && e.id() == id;
    });
    EXPECT_TRUE(found) << a.path << " acknowledged at revision " << a.revision;
    EXPECT_TRUE(Call(leader_, "GET", a.path).ok) << a.path;
  }
  // The API's log is etcd's.
  EtcdOptions o;
  o.endpoints = etcd_.endpoints();
  auto store = EtcdStore::Open(o);
  ASSERT_TRUE(store.ok()) << store.status();
  size_t n = 0;
  for (uint64_t f = 0;;) {
    auto page = (*store)->ChangesSince(f, 1000);
    ASSERT_TRUE(page.ok()) << page.status();
    if (page->empty()) break;
    for (const auto& e : *page) {
      ASSERT_LT(n, log.size());
      EXPECT_EQ(e.revision(), log[n].revision());
      EXPECT_EQ(e.id(), log[n].id());
      ++n;
    }
    f = page->back().revision();
  }
  EXPECT_EQ(n, log.size());
  uint64_t fulls = 0, deltas = 0;
  for (const auto& h : hosts_) {
    fulls += h->fulls;
    deltas += h->deltas;
  }
  std::printf("HA hosts received %llu full states and %llu deltas in %d rounds\n",
              static_cast<unsigned long long>(fulls), static_cast<unsigned long long>(deltas),
              round);
  // Each host's one full state is its first: after every failover it
  // resumed from its digests with a delta.
  EXPECT_EQ(fulls, static_cast<uint64_t>(kHosts));
  // And holds what the leader computes for its VMs now.
  for (const auto& h : hosts_) {
    HostView want;
    for (const auto& vm : h->vms) {
      Reply r = Call(leader_, "GET", Cat("/api/v1/vms/", vm.id(), "/effective-rules"));
      ASSERT_TRUE(r.ok) << vm.id() << " " << r.status;
      dfw::v1::EffectiveRulesResponse eff;
      ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(r.body.dump(), &eff).ok());
      for (const auto& rs : eff.rulesets()) want.rulesets[rs.vnic_id()] = HostView::Rules(rs);
      for (const auto& s : eff.address_sets())
        want.sets[s.id()] = {s.prefixes().begin(), s.prefixes().end()};
    }
    std::lock_guard<std::mutex> l(h->mu);
    EXPECT_EQ(h->view.rulesets, want.rulesets) << h->id;
    EXPECT_EQ(h->view.sets, want.sets) << h->id;
  }
}

}  // namespace
}  // namespace dfw::controller::testing
