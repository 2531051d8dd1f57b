// GuestAgent against a real controller, with real nftables: the test process
// moves into a network namespace of its own (unshare), where it runs the
// controller (in process, plaintext on that namespace's loopback), gives
// itself an "eth0" (one end of a veth pair, 198.18.5.10/24), and runs the
// agent.
// Checks: the guest registers as guest-enforced; its table follows tag and
// membership changes; kill of another's nft flush is repaired; the status.
// Needs root (unshare, nftables).
#include <sched.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <thread>

#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>

#include "dfw/hostagent/metrics_server.h"
#include "dfw/vmagent/guest_agent.h"
#include "dfw/vmagent/guest_facts.h"
#include "exposition_parser.h"
#include "nft_test_netns.h"
#include "test_util.h"

namespace dfw::vmagent {
namespace {

using controller::testing::Rest;
using controller::testing::TagGroupJson;
using controller::testing::TempDir;
using nlohmann::json;

constexpr const char* kUuid = "0b5e0000-0000-4000-8000-0000000000c1";

// Output of a shell command (its status is not what these checks read).
std::string Shell(const std::string& cmd) {
  std::string out;
  testing::Sh(cmd, &out);
  return out;
}

bool WaitFor(const std::function<bool()>& pred, int ms = 10000) {
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return pred();
}

class GuestAgentTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // The whole test process from here on: its own network namespace, so
    // nothing touches the machine's ruleset.
    ASSERT_EQ(geteuid(), 0u) << "needs root";
    ASSERT_EQ(unshare(CLONE_NEWNET), 0) << "unshare(CLONE_NEWNET)";
    ASSERT_EQ(std::system("ip link set lo up && ip link add eth0 type veth peer name eth0p && ip "
                          "link set eth0p up && "
                          "ip link set eth0 address 52:54:00:05:00:10 && "
                          "ip addr add 198.18.5.10/24 dev eth0 && ip link set eth0 up"),
              0);
  }

  void SetUp() override { Start(std::chrono::milliseconds(0)); }

  void Start(std::chrono::milliseconds audit_first) {
    controller::ControllerOptions o;
    o.data_dir = dir_.path() + "/db";
    o.insecure = true;
    ASSERT_TRUE(server_.Start(o).ok());
    rest_ = std::make_unique<Rest>(server_.http_port());
    ASSERT_EQ(rest_->Post("/api/v1/groups", TagGroupJson("web", "app", "web")).status, 201);
    ASSERT_EQ(rest_->Post("/api/v1/groups", TagGroupJson("db", "app", "db")).status, 201);
    auto p = json::parse(R"({"id":"web-to-db","category":"CATEGORY_APPLICATION",
      "applied_to_group_ids":["web","db"],"stateful":true,
      "rules":[{"id":"pg","sources":{"group_ids":["web"]},"destinations":{"group_ids":["db"]},
                "services":[{"protocol":6,"destination_ports":[{"first":5432}]}],
                "action":"ACTION_ALLOW","log":true}]})");
    ASSERT_EQ(rest_->Post("/api/v1/policies", p).status, 201);
    // A web VM somewhere else (a host's report, through the API here).
    json web = controller::testing::VmJson("web-1", "", {{"app", "web"}}, "198.18.7.7");
    ASSERT_EQ(rest_->Post("/api/v1/vms", web).status, 201);

    GuestAgentConfig c;
    c.controller_target = "127.0.0.1:" + std::to_string(server_.grpc_port());
    c.credentials = grpc::InsecureChannelCredentials();
    c.facts.vm_uuid = kUuid;
    c.facts.interfaces = {"eth0"};
    c.facts.hostname = "gst";
    c.render.table = "dfw";
    c.render.bypass.controller_ips = {"127.0.0.1"};
    c.render.bypass.controller_port = static_cast<uint16_t>(server_.grpc_port());
    c.status_file = dir_.path() + "/status.json";
    c.flow_log = dir_.path() + "/flows.jsonl";
    c.facts_interval = std::chrono::milliseconds(200);
    c.status_interval = std::chrono::milliseconds(100);
    c.audit_first = audit_first;
    agent_ = std::make_unique<GuestAgent>(c);
    ASSERT_TRUE(agent_->Start().ok());
  }

  void TearDown() override {
    agent_.reset();
    rest_.reset();
    server_.Stop();
    Shell("nft delete table inet dfw");
  }

  json Host() {
    json hosts = rest_->Get("/api/v1/hosts").body["hosts"];  // (a copy: the result is a temporary)
    for (const auto& h : hosts) {
      if (h["id"] == std::string("guest:") + kUuid) return h;
    }
    return nullptr;
  }
  uint64_t Revision() { return rest_->Get("/api/v1/status").body.value("revision", uint64_t{0}); }
  // Connected, and the controller counts everything sent to it as realized.
  bool Realized() {
    json h = Host();
    if (!h.is_object() || !h.value("connected", false)) return false;
    json real = rest_->Get("/api/v1/realization").body["hosts"];
    for (const auto& r : real) {
      if (r["host_id"] == std::string("guest:") + kUuid) {
        return r.value("state", "") == "REALIZATION_STATE_REALIZED";
      }
    }
    return false;
  }
  std::string Debug() {
    return rest_->Get("/api/v1/hosts").body.dump() + "\n" +
           rest_->Get("/api/v1/realization").body.dump() + "\n" + Shell("nft list ruleset");
  }
  std::string Table() { return Shell("nft list table inet dfw"); }

  TempDir dir_;
  controller::ControllerServer server_;
  std::unique_ptr<Rest> rest_;
  std::unique_ptr<GuestAgent> agent_;
};

TEST_F(GuestAgentTest, RegistersEnforcesFollowsTagsAndRepairs) {
  ASSERT_TRUE(WaitFor([&] { return Realized(); })) << Debug();
  json vm = rest_->Get(std::string("/api/v1/vms/") + kUuid).body;
  EXPECT_EQ(vm.value("enforcement", ""), "ENFORCEMENT_GUEST") << vm;
  EXPECT_EQ(vm["vnics"][0].value("id", ""), std::string(kUuid) + ".eth0");
  EXPECT_EQ(vm["vnics"][0].value("mac", ""), "52:54:00:05:00:10");
  EXPECT_EQ(vm["vnics"][0]["addresses"][0].value("ip", ""), "198.18.5.10");
  // In no group yet: its vNIC still gets the default rule (default deny).
  std::string t = Table();
  EXPECT_NE(t.find("iifname \"eth0\" jump"), std::string::npos) << t;

  // Tagged db: the rule admitting web's addresses appears; web-1's address
  // arrives in the set.
  auto r = rest_->Post(std::string("/api/v1/vms/") + kUuid + "/tags",
                       json::parse(R"({"set":[{"scope":"app","value":"db"}]})"));
  ASSERT_EQ(r.status, 200) << r.body;
  ASSERT_TRUE(WaitFor([&] { return Realized(); }));
  t = Table();
  EXPECT_NE(t.find("198.18.7.7"), std::string::npos) << t;
  EXPECT_NE(t.find("tcp dport 5432"), std::string::npos) << t;

  // A membership change touches the set only.
  json web2 = controller::testing::VmJson("web-2", "", {{"app", "web"}}, "198.18.7.8");
  ASSERT_EQ(rest_->Post("/api/v1/vms", web2).status, 201);
  ASSERT_TRUE(WaitFor([&] { return Realized(); }));
  EXPECT_NE(Table().find("198.18.7.8"), std::string::npos) << Table();

  // Someone flushes the ruleset: the agent puts its table back.
  ASSERT_EQ(Shell("nft flush ruleset"), "");
  ASSERT_TRUE(WaitFor([&] { return Table().find("198.18.7.8") != std::string::npos; }, 5000))
      << "not repaired: " << Table();
  ASSERT_TRUE(WaitFor([&] { return agent_->status().repairs >= 1; }));
  EXPECT_NE(agent_->status().last_repair.find("table"), std::string::npos)
      << agent_->status().last_repair;

  // The status file: revision, counters per rule, drops by reason.
  ASSERT_TRUE(WaitFor([&] {
    std::ifstream f(dir_.path() + "/status.json");
    std::stringstream ss;
    ss << f.rdbuf();
    json s = json::parse(ss.str(), nullptr, false);
    return !s.is_discarded() && s.value("applied_revision", 0ULL) >= Revision() &&
           s.value("repairs", 0ULL) >= 1 && s.contains("drops");
  }));

  // GET /metrics: the same, in the Prometheus format, over a real socket
  // (plain HTTP on loopback: trust is the listener's own test's matter).
  hostagent::MetricsServerOptions mo;
  auto* agent = agent_.get();
  hostagent::MetricsServer server(mo, [agent] { return agent->MetricsText(); });
  auto port = server.Start();
  ASSERT_TRUE(port.ok()) << port.status();
  httplib::Client cli("127.0.0.1", *port);
  auto res = cli.Get("/metrics");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200);
  auto m = metrics::testing::Parse(res->body);
  ASSERT_TRUE(m.error.empty()) << m.error << "\n" << res->body;
  EXPECT_EQ(m.Or0("dfw_vmagent_controller_connected"), 1) << res->body;
  EXPECT_EQ(m.Or0("dfw_vmagent_nft_up"), 1) << res->body;
  EXPECT_GE(m.Or0("dfw_vmagent_applied_revision"), static_cast<double>(Revision())) << res->body;
  EXPECT_GE(m.Or0("dfw_vmagent_repairs_total"), 1) << res->body;
  EXPECT_EQ(m.families.count("dfw_vmagent_rule_hits_total"), 1u) << res->body;
  // The guest's nftables counters have no session totals (issue 16).
  EXPECT_EQ(m.families.count("dfw_vmagent_rule_session_packets_total"), 0u) << res->body;
  EXPECT_EQ(m.families.count("dfw_vmagent_rule_session_bytes_total"), 0u) << res->body;
  EXPECT_EQ(m.families.count("dfw_vmagent_drops_total"), 1u) << res->body;
  server.Stop();
}

TEST_F(GuestAgentTest, StoppedAgentLeavesItsTableEnforcing) {
  ASSERT_TRUE(WaitFor([&] { return Realized(); })) << Debug();
  ASSERT_NE(Table().find("jump"), std::string::npos);
  agent_.reset();  // the agent stops (as after a crash: nothing is undone)
  EXPECT_NE(Table().find("iifname \"eth0\" jump"), std::string::npos)
      << "the table went with the agent";
}

TEST_F(GuestAgentTest, AuditFirstLogsOnlyThenEnforces) {
  // Again, with --audit-first 1.5 s.
  agent_.reset();
  rest_.reset();
  server_.Stop();
  Shell("nft delete table inet dfw");
  std::filesystem::remove_all(dir_.path() + "/db");
  Start(std::chrono::milliseconds(1500));
  ASSERT_TRUE(WaitFor([&] { return Realized(); })) << Debug();
  // While auditing, the default rule logs as audit and accepts.
  std::string t = Table();
  EXPECT_NE(t.find("dfw:audit:0"), std::string::npos) << t;
  EXPECT_EQ(t.find("drop comment \"r0\""), std::string::npos) << t;
  EXPECT_TRUE(agent_->status().audit_all);
  // Then the same rules enforce.
  ASSERT_TRUE(WaitFor([&] { return !agent_->status().audit_all; }, 5000));
  t = Table();
  EXPECT_NE(t.find("drop comment \"r0\""), std::string::npos) << t;
  EXPECT_EQ(t.find("dfw:audit:0"), std::string::npos) << t;
}

TEST(GuestFacts, UuidInterfacesAndIds) {
  FactsOptions o;
  o.vm_uuid = "0B5E0000-0000-4000-8000-0000000000C1\n";
  auto u = ReadVmUuid(o);
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_EQ(*u, "0b5e0000-0000-4000-8000-0000000000c1");
  o.vm_uuid = "not-a-uuid";
  EXPECT_EQ(ReadVmUuid(o).status().message(), "vm uuid: 'not-a-uuid' from --vm-uuid is not a UUID");
  o.vm_uuid.clear();
  o.uuid_file = "/nonexistent/product_uuid";
  EXPECT_EQ(ReadVmUuid(o).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(VnicIdFor("u", "eth0"), "u.eth0");
  EXPECT_EQ(VnicIdFor("u", "wl@n 0"), "u.wl_n_0");
  FactsOptions none;
  none.interfaces = {"no-such-if0"};
  EXPECT_EQ(ListInterfaces(none).status().code(), absl::StatusCode::kNotFound);
}

TEST(ApplyDeltaToState, AppliesOrRefusesWholly) {
  dfw::v1::HostDesiredState s;
  s.set_revision(5);
  auto* set = s.add_address_sets();
  set->set_id("g:web");
  set->add_prefixes("198.18.0.1/32");
  s.add_rulesets()->set_vnic_id("v1");
  dfw::v1::HostDelta d;
  d.set_from_revision(4);
  d.set_to_revision(6);
  EXPECT_EQ(ApplyDeltaToState(d, &s).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.revision(), 5u);
  d.set_from_revision(5);
  auto* sd = d.add_address_set_deltas();
  sd->set_id("g:web");
  sd->add_added("198.18.0.2/32");
  sd->add_removed("198.18.0.1/32");
  d.add_rulesets_removed("v1");
  d.add_rulesets_set()->set_vnic_id("v2");
  ASSERT_TRUE(ApplyDeltaToState(d, &s).ok());
  EXPECT_EQ(s.revision(), 6u);
  ASSERT_EQ(s.address_sets_size(), 1);
  ASSERT_EQ(s.address_sets(0).prefixes_size(), 1);
  EXPECT_EQ(s.address_sets(0).prefixes(0), "198.18.0.2/32");
  ASSERT_EQ(s.rulesets_size(), 1);
  EXPECT_EQ(s.rulesets(0).vnic_id(), "v2");
  dfw::v1::HostDelta bad;
  bad.set_from_revision(6);
  bad.set_to_revision(7);
  bad.add_address_set_deltas()->set_id("g:nope");
  EXPECT_EQ(ApplyDeltaToState(bad, &s).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.revision(), 6u) << "a refused delta changes nothing";
}

}  // namespace
}  // namespace dfw::vmagent
