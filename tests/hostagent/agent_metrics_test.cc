// The host agent's GET /metrics rendering (agent_metrics.h), with the fake
// edges of fake_edges.h: the text is parsed by the strict exposition parser
// (tests/base/exposition_parser.h) and its values are checked to follow what
// the agent did (vNICs steered, states applied and refused, dataplane calls
// by method and result, libvirt counters, the dataplane's own counters read
// when scraped and absent, not stale, when it is down; per-vNIC series only
// when asked for; the SVID's expiry).
#include "dfw/hostagent/agent_metrics.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <tuple>

#include "dfw/hostagent/dataplane_client.h"
#include "dfw/hostagent/host_agent.h"
#include "dfw/trust/ca.h"
#include "dfw/trust/svid.h"
#include "exposition_parser.h"
#include "fake_edges.h"

namespace dfw::hostagent {
namespace {

using metrics::testing::LabelSet;
using metrics::testing::Parse;
using metrics::testing::Scrape;
using testing::CallLog;
using testing::FakeEdgeSet;
using testing::Row;

constexpr char kVmA[] = "11111111-0000-0000-0000-00000000000a";

class AgentMetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    HostAgentConfig cfg;
    cfg.host_id = "host-a";
    cfg.resync_interval = std::chrono::hours(1);
    agent_ = std::make_unique<HostAgent>(cfg, std::move(fakes_.edges));
    ASSERT_TRUE(agent_->StartEdges().ok());
    fakes_.ovs->rows = {Row("fw0", "", "", 1)};
  }

  // Scrapes and parses; every family is the agent's or the dataplane's.
  Scrape Metrics(bool per_vnic = false, const std::string& svid_dir = "") {
    AgentMetricsOptions o;
    o.per_vnic = per_vnic;
    o.svid_dir = svid_dir;
    std::string text = ScrapeAgent(*agent_, o);
    Scrape s = Parse(text);
    EXPECT_EQ(s.error, "") << text;
    for (const auto& [name, f] : s.families) {
      EXPECT_TRUE(name.rfind("dfw_hostagent_", 0) == 0 || name.rfind("dfw_dataplane_", 0) == 0)
          << name;
    }
    return s;
  }
  static LabelSet Call(const std::string& method, const std::string& result) {
    return {{"method", method}, {"result", result}};
  }
  v1::ControllerToHost Full(uint64_t revision) {
    v1::ControllerToHost m;
    m.mutable_full()->set_revision(revision);
    return m;
  }
  v1::ControllerToHost Delta(uint64_t from, uint64_t to) {
    v1::ControllerToHost m;
    m.mutable_delta()->set_from_revision(from);
    m.mutable_delta()->set_to_revision(to);
    return m;
  }

  CallLog log_;
  FakeEdgeSet fakes_{&log_};  // the agent owns them
  std::unique_ptr<HostAgent> agent_;
};

// dfwctl observe's host end: whether the controller observes, records sent
// and records lost, as the relay counts them.
TEST_F(AgentMetricsTest, FlowRelayShowsTheWatchRecordsSentAndLost) {
  Scrape s = Metrics();
  EXPECT_EQ(s.Or0("dfw_hostagent_flow_watch"), 0);
  EXPECT_EQ(s.Or0("dfw_hostagent_flow_records_sent_total"), 0);
  ASSERT_TRUE(s.families.count("dfw_hostagent_flow_records_lost_total"));
  fakes_.ctl->hooks.flow_watch(true);
  for (int i = 0; i < 100 && Metrics().Or0("dfw_hostagent_flow_records_sent_total") < 2; ++i) {
    fakes_.dp->flows.Produce(1);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  fakes_.dp->flows.DropInRing(5);  // the workers' ring was full
  for (int i = 0; i < 100 && Metrics().Or0("dfw_hostagent_flow_records_lost_total") < 5; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  s = Metrics();
  EXPECT_EQ(s.Or0("dfw_hostagent_flow_watch"), 1);
  EXPECT_GE(s.Or0("dfw_hostagent_flow_records_sent_total"), 2);
  EXPECT_EQ(s.Or0("dfw_hostagent_flow_records_lost_total"), 5);
  EXPECT_GE(s.Or0("dfw_hostagent_dataplane_calls_total", Call("FlowRecords", "ok")), 2);
  fakes_.ctl->hooks.flow_watch(false);
  EXPECT_EQ(Metrics().Or0("dfw_hostagent_flow_watch"), 0);
}

TEST_F(AgentMetricsTest, ValuesFollowTheAgentsWork) {
  Scrape before = Metrics();
  for (const char* family :
       {"dfw_hostagent_controller_connected", "dfw_hostagent_controller_reconnects_total",
        "dfw_hostagent_realized_revision", "dfw_hostagent_wanted_revision",
        "dfw_hostagent_apply_errors_total", "dfw_hostagent_vnics", "dfw_hostagent_vms",
        "dfw_hostagent_reconcile_passes_total", "dfw_hostagent_libvirt_refreshes_total",
        "dfw_hostagent_libvirt_errors_total", "dfw_hostagent_dataplane_calls_total",
        "dfw_hostagent_dataplane_call_duration_seconds", "dfw_dataplane_up",
        "dfw_dataplane_drops_total", "dfw_dataplane_packets_total"}) {
    EXPECT_TRUE(before.families.count(family)) << family;
  }
  EXPECT_EQ(before.Or0("dfw_hostagent_vnics", {{"state", "steered"}}), 0);
  EXPECT_EQ(before.Or0("dfw_hostagent_dataplane_calls_total", Call("SetVNic", "ok")), 0);
  // A scrape's own Counters call is counted in what it shows.
  EXPECT_EQ(before.Or0("dfw_hostagent_dataplane_calls_total", Call("Counters", "ok")), 1);

  // A VM with one vNIC on the bridge, one libvirt interface not on it, and a
  // port that cannot be steered (ofport above 2047).
  fakes_.ovs->rows.push_back(Row("vnet5", "vnic-a", "52:54:00:00:00:0a", 5));
  fakes_.ovs->rows.push_back(Row("vnet9", "vnic-z", "52:54:00:00:00:0f", 3000));
  Domain d;
  d.uri = "test:///x";
  d.uuid = kVmA;
  d.name = "vm-a";
  d.interfaces = {{"52:54:00:00:00:0a", "bridge", "", "vnic-a", {"198.18.0.10"}},
                  {"52:54:00:00:00:0b", "bridge", "", "vnic-b", {}}};
  fakes_.lv->domains = {d};
  fakes_.lv->counted.full_reads = 2;
  fakes_.lv->counted.domain_reads = 5;
  fakes_.lv->counted.connections_lost = 1;
  fakes_.ctl->sessions = 3;
  fakes_.ctl->acked = 7;
  agent_->Pass();
  ASSERT_TRUE(fakes_.ctl->hooks.apply(Full(7)).ok());
  fakes_.dp->refuse_deltas = true;
  EXPECT_FALSE(fakes_.ctl->hooks.apply(Delta(7, 8)).ok());
  v1::ControllerToHost neither;
  EXPECT_FALSE(fakes_.ctl->hooks.apply(neither).ok());

  fakes_.dp->counters.set_applied_revision(7);
  auto* drop = fakes_.dp->counters.add_drops();
  drop->set_reason("spoof-src-mac");
  drop->set_packets(4);
  drop = fakes_.dp->counters.add_drops();
  drop->set_reason("policy");
  drop->set_packets(9);
  // One policy rule under two rule numbers (two vNICs), and another rule.
  for (auto [num, rule, packets] : {std::tuple<uint32_t, const char*, uint64_t>{3, "allow-pg", 5},
                                    {8, "allow-pg", 2},
                                    {4, "deny-ssh", 1}}) {
    auto* rc = fakes_.dp->counters.add_rules();
    rc->set_rule_num(num);
    rc->set_policy_id("web-to-db");
    rc->set_rule_id(rule);
    rc->set_packets(packets);
    rc->set_bytes(packets * 60);
    // Its ended connections: ten packets each hit's connection carried.
    rc->set_session_packets(packets * 10);
    rc->set_session_bytes(packets * 1000);
  }
  // A rule whose connections ended with no hit since the dataplane started
  // (imported after a restart): session totals only.
  auto* only_sessions = fakes_.dp->counters.add_rules();
  only_sessions->set_rule_num(9);
  only_sessions->set_policy_id("dns");
  only_sessions->set_rule_id("allow-53");
  only_sessions->set_session_packets(2);
  only_sessions->set_session_bytes(150);
  auto* v = fakes_.dp->counters.add_vnics();
  v->set_vnic_id("vnic-a");
  v->set_tx_packets(10);
  v->set_tx_bytes(1000);
  v->set_rx_packets(20);
  v->set_rx_bytes(3000);
  v->set_drops(2);
  v->set_connections(3);
  v = fakes_.dp->counters.add_vnics();
  v->set_vnic_id("vnic-q\"x");  // escaped in the label
  v->set_tx_packets(1);
  fakes_.dp->counters.set_api_refused_connections(1);

  Scrape s = Metrics();
  EXPECT_EQ(s.Or0("dfw_hostagent_controller_connected"), 1);
  EXPECT_EQ(s.Or0("dfw_hostagent_controller_reconnects_total"), 2);
  EXPECT_EQ(s.Or0("dfw_hostagent_realized_revision"), 7);
  EXPECT_EQ(s.Or0("dfw_hostagent_wanted_revision"), 8);
  EXPECT_EQ(s.Or0("dfw_hostagent_apply_errors_total", {{"reason", "refused"}}), 1);
  EXPECT_EQ(s.Or0("dfw_hostagent_apply_errors_total", {{"reason", "invalid"}}), 1);
  EXPECT_EQ(s.Or0("dfw_hostagent_apply_errors_total", {{"reason", "unreachable"}}), 0);
  EXPECT_EQ(s.Or0("dfw_hostagent_vnics", {{"state", "steered"}}), 1);
  EXPECT_EQ(s.Or0("dfw_hostagent_vnics", {{"state", "isolated"}}), 1);
  EXPECT_EQ(s.Or0("dfw_hostagent_vnics", {{"state", "not_on_bridge"}}), 1);
  EXPECT_EQ(s.Or0("dfw_hostagent_vnics", {{"state", "waiting"}}), 0);
  EXPECT_EQ(s.Or0("dfw_hostagent_vms"), 1);
  EXPECT_EQ(s.Or0("dfw_hostagent_host_view_errors"), 1);
  EXPECT_GE(s.Or0("dfw_hostagent_reconcile_passes_total"), 1);
  EXPECT_EQ(s.Or0("dfw_hostagent_libvirt_refreshes_total", {{"kind", "full"}}), 2);
  EXPECT_EQ(s.Or0("dfw_hostagent_libvirt_refreshes_total", {{"kind", "domain"}}), 5);
  EXPECT_EQ(s.Or0("dfw_hostagent_libvirt_errors_total", {{"kind", "lost"}}), 1);
  // Dataplane calls by method and result, with their latency.
  EXPECT_EQ(s.Or0("dfw_hostagent_dataplane_calls_total", Call("SetVNic", "ok")), 1);
  EXPECT_EQ(s.Or0("dfw_hostagent_dataplane_calls_total", Call("SetState", "ok")), 1);
  EXPECT_EQ(s.Or0("dfw_hostagent_dataplane_calls_total", Call("SetState", "error")), 1);
  EXPECT_EQ(s.Or0("dfw_hostagent_dataplane_calls_total", Call("Counters", "ok")), 2);
  EXPECT_GE(s.Or0("dfw_hostagent_dataplane_calls_total", Call("GetState", "ok")), 2);
  EXPECT_EQ(s.Or0("dfw_hostagent_dataplane_call_duration_seconds_count", {{"method", "SetState"}}),
            2);
  EXPECT_EQ(
      s.Or0("dfw_hostagent_dataplane_call_duration_seconds_count", {{"method", "RemoveVNic"}}), 0);
  // The dataplane's counters, read for this scrape.
  EXPECT_EQ(s.Or0("dfw_dataplane_up"), 1);
  EXPECT_EQ(s.Or0("dfw_dataplane_applied_revision"), 7);
  EXPECT_EQ(s.Or0("dfw_dataplane_drops_total", {{"reason", "spoof-src-mac"}}), 4);
  EXPECT_EQ(s.Or0("dfw_dataplane_drops_total", {{"reason", "policy"}}), 9);
  const LabelSet pg = {{"policy", "web-to-db"}, {"rule", "allow-pg"}};
  EXPECT_EQ(s.Or0("dfw_dataplane_rule_hits_total", pg), 7);  // both rule numbers
  EXPECT_EQ(s.Or0("dfw_dataplane_rule_hit_bytes_total", pg), 420);
  EXPECT_EQ(s.Or0("dfw_dataplane_rule_hits_total", {{"policy", "web-to-db"}, {"rule", "deny-ssh"}}),
            1);
  // Session totals of the connections the rules admitted, summed the same way.
  EXPECT_EQ(s.Or0("dfw_dataplane_rule_session_packets_total", pg), 70);
  EXPECT_EQ(s.Or0("dfw_dataplane_rule_session_bytes_total", pg), 7000);
  EXPECT_EQ(s.Or0("dfw_dataplane_rule_session_packets_total",
                  {{"policy", "web-to-db"}, {"rule", "deny-ssh"}}),
            10);
  const LabelSet dns = {{"policy", "dns"}, {"rule", "allow-53"}};
  EXPECT_EQ(s.Or0("dfw_dataplane_rule_session_packets_total", dns), 2);
  EXPECT_EQ(s.Or0("dfw_dataplane_rule_session_bytes_total", dns), 150);
  EXPECT_EQ(s.families.at("dfw_dataplane_rule_session_packets_total").samples.size(), 3u);
  EXPECT_EQ(s.families.at("dfw_dataplane_rule_session_bytes_total").type, "counter");
  EXPECT_NE(s.families.at("dfw_dataplane_rule_session_bytes_total")
                .help.find("of connections the rule admitted, counted when they end"),
            std::string::npos);
  EXPECT_EQ(s.Or0("dfw_dataplane_packets_total", {{"direction", "from_vm"}}), 11);
  EXPECT_EQ(s.Or0("dfw_dataplane_packets_total", {{"direction", "to_vm"}}), 20);
  EXPECT_EQ(s.Or0("dfw_dataplane_bytes_total", {{"direction", "to_vm"}}), 3000);
  EXPECT_EQ(s.Or0("dfw_dataplane_connections"), 3);
  EXPECT_EQ(s.Or0("dfw_dataplane_vnics"), 2);
  EXPECT_EQ(s.Or0("dfw_dataplane_api_refused_connections_total"), 1);
  // No per-vNIC series unless asked for; none names a VM or a vNIC.
  EXPECT_FALSE(s.families.count("dfw_dataplane_vnic_packets_total"));
  for (const auto& [name, f] : s.families) {
    for (const auto& sample : f.samples) {
      for (const auto& [k, val] : sample.labels) {
        EXPECT_EQ(val.find("vnic-"), std::string::npos) << name << " " << k << "=" << val;
        EXPECT_EQ(val.find("1111"), std::string::npos) << name << " " << k << "=" << val;
      }
    }
  }

  Scrape pv = Metrics(/*per_vnic=*/true);
  EXPECT_EQ(
      pv.Or0("dfw_dataplane_vnic_packets_total", {{"vnic", "vnic-a"}, {"direction", "to_vm"}}), 20);
  EXPECT_EQ(
      pv.Or0("dfw_dataplane_vnic_bytes_total", {{"vnic", "vnic-a"}, {"direction", "from_vm"}}),
      1000);
  EXPECT_EQ(pv.Or0("dfw_dataplane_vnic_drops_total", {{"vnic", "vnic-a"}}), 2);
  EXPECT_EQ(pv.Or0("dfw_dataplane_vnic_connections", {{"vnic", "vnic-a"}}), 3);
  EXPECT_EQ(
      pv.Or0("dfw_dataplane_vnic_packets_total", {{"vnic", "vnic-q\"x"}, {"direction", "from_vm"}}),
      1);
}

TEST_F(AgentMetricsTest, DataplaneDownShowsUpZeroAndNoStaleValues) {
  fakes_.dp->counters.set_applied_revision(5);
  fakes_.dp->counters.add_drops()->set_reason("policy");
  agent_->Pass();
  Scrape up = Metrics();
  EXPECT_EQ(up.Or0("dfw_dataplane_up"), 1);
  EXPECT_TRUE(up.Value("dfw_dataplane_applied_revision").has_value());

  fakes_.dp->down = true;
  agent_->Pass();
  fakes_.ctl->is_connected = false;
  EXPECT_FALSE(fakes_.ctl->hooks.apply(Full(6)).ok());
  Scrape down = Metrics();
  EXPECT_EQ(down.Value("dfw_dataplane_up"), 0);
  for (const auto& [name, f] : down.families) {
    if (name != "dfw_dataplane_up") {
      EXPECT_NE(name.rfind("dfw_dataplane_", 0), 0u)
          << name << " shown while the dataplane is down";
    }
  }
  EXPECT_EQ(down.Or0("dfw_hostagent_controller_connected"), 0);
  EXPECT_EQ(down.Or0("dfw_hostagent_apply_errors_total", {{"reason", "unreachable"}}), 1);
  EXPECT_GE(down.Or0("dfw_hostagent_dataplane_calls_total", Call("GetState", "unreachable")), 1);
  EXPECT_EQ(down.Or0("dfw_hostagent_dataplane_calls_total", Call("Counters", "unreachable")), 1);
  EXPECT_EQ(Metrics().Or0("dfw_hostagent_dataplane_calls_total", Call("Counters", "unreachable")),
            2);
}

TEST_F(AgentMetricsTest, SvidExpiryIsTheCertificatesNotAfter) {
  EXPECT_FALSE(Metrics().families.count("dfw_hostagent_svid_expiry_timestamp_seconds"));
  char tmpl[] = "/tmp/dfw-agent-metrics-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  {
    auto ca = trust::CertificateAuthority::Init(dir + "/ca", "dfw.test");
    ASSERT_TRUE(ca.ok()) << ca.status();
    trust::IssueOptions io;
    io.id = {"dfw.test", trust::IdKind::kHost, "host-a"};
    io.validity = std::chrono::hours(5);
    auto kc = (*ca)->IssueWithNewKey(io);
    ASSERT_TRUE(kc.ok());
    ASSERT_TRUE(
        trust::WriteSvid(dir + "/svid", {kc->key_pem, kc->cert.cert_pem, (*ca)->bundle_pem()})
            .ok());
    Scrape s = Metrics(false, dir + "/svid");
    auto v = s.Value("dfw_hostagent_svid_expiry_timestamp_seconds");
    ASSERT_TRUE(v.has_value());
    EXPECT_EQ(*v, static_cast<double>(trust::Clock::to_time_t(kc->cert.not_after)));
    // A dir without an SVID: no value rather than a wrong one.
    EXPECT_FALSE(
        Metrics(false, dir + "/none").Value("dfw_hostagent_svid_expiry_timestamp_seconds"));
  }
  std::string rm = "rm -rf '" + dir + "'";
  EXPECT_EQ(std::system(rm.c_str()), 0);
}

// The real DataplaneClient against a dataplane that hangs (a socket that is
// listened on and never served): the scrape gives up at its deadline and
// shows the dataplane down.
TEST(AgentMetricsDeadlineTest, AHungDataplaneIsDownAfterTheDeadline) {
  char tmpl[] = "/tmp/dfw-agent-metrics-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string sock = std::string(tmpl) + "/api.sock";
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, sock.c_str(), sizeof(a.sun_path) - 1);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(listen(fd, 16), 0);  // connections wait in the backlog, never answered

  CallLog log;
  FakeEdgeSet fakes(&log);
  fakes.edges.dataplane = std::make_unique<DataplaneClient>("unix:" + sock);
  HostAgentConfig cfg;
  cfg.host_id = "host-a";
  HostAgent agent(cfg, std::move(fakes.edges));
  AgentMetricsOptions o;
  o.dataplane_deadline = std::chrono::milliseconds(300);
  const auto t0 = std::chrono::steady_clock::now();
  std::string text = ScrapeAgent(agent, o);
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_LT(took, std::chrono::seconds(3));
  EXPECT_GE(took, std::chrono::milliseconds(250));
  Scrape s = Parse(text);
  EXPECT_EQ(s.error, "") << text;
  EXPECT_EQ(s.Value("dfw_dataplane_up"), 0);
  EXPECT_FALSE(s.families.count("dfw_dataplane_applied_revision"));
  EXPECT_EQ(s.Or0("dfw_hostagent_dataplane_calls_total",
                  {{"method", "Counters"}, {"result", "unreachable"}}),
            1);
  close(fd);
  std::string rm = "rm -rf '" + std::string(tmpl) + "'";
  EXPECT_EQ(std::system(rm.c_str()), 0);
}

}  // namespace
}  // namespace dfw::hostagent
