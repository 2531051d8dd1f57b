// OpenFlowBridge: steering flows installed, reconciled and changed in one
// bundle on a private ovs-vswitchd (ovs_sandbox.h).
#include "dfw/ovs/openflow_bridge.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "absl/strings/str_format.h"
#include "dfw/ovs/ovsdb_monitor.h"
#include "dfw/ovs/probe_frame.h"
#include "ovs_sandbox.h"

namespace dfw::ovs {
namespace {

using testing::OvsSandbox;

using FlowSet = std::set<std::string>;  // "cookie key actions=..."

std::string Line(const InstalledFlow& f) {
  std::ostringstream s;
  s << std::hex << "0x" << f.cookie << " " << f.key << " actions=" << f.actions;
  return s.str();
}

FlowSet Canonical(const std::vector<FlowSpec>& flows) {
  FlowSet out;
  for (const FlowSpec& f : flows) {
    absl::StatusOr<InstalledFlow> c = CanonicalFlow(f);
    EXPECT_TRUE(c.ok()) << c.status();
    if (c.ok()) out.insert(Line(*c));
  }
  return out;
}

FlowSet AsSet(const std::vector<InstalledFlow>& flows) {
  FlowSet out;
  for (const InstalledFlow& f : flows) out.insert(Line(f));
  return out;
}

// `ovs-ofctl -O OpenFlow13 --no-stats dump-flows` lines with our cookie
// prefix, in the same "cookie key actions=" form ("table=0," added where
// ovs-ofctl leaves it out).
FlowSet OfctlDump(OvsSandbox& ovs) {
  std::string out;
  EXPECT_EQ(ovs.Ofctl("--no-stats dump-flows", "", &out), 0) << ovs.error();
  FlowSet flows;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line)) {
    line.erase(0, line.find_first_not_of(' '));
    if (line.rfind("cookie=0xdf305ee0", 0) != 0) continue;
    const size_t comma = line.find(", ");
    std::string cookie = line.substr(7, comma - 7);
    std::string rest = line.substr(comma + 2);
    if (rest.rfind("table=", 0) != 0) {
      rest = "table=0," + rest;
    } else {
      rest.erase(rest.find(", ") + 1, 1);  // "table=1, priority=" -> "table=1,priority="
    }
    const size_t sp = rest.find(" actions=");
    flows.insert(cookie + " " + rest.substr(0, sp) + rest.substr(sp));
  }
  return flows;
}

class OpenFlowBridgeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(ovs_.Start()) << ovs_.error();
    ASSERT_TRUE(CreateFirewallPort(ovs_.db_socket(), "br0", "dfw-fw", "internal", {}, 1).ok());
    ASSERT_EQ(ovs_.Vsctl("add-port br0 vnet5 -- set Interface vnet5 type=internal "
                         "ofport_request=5 -- add-port br0 vnet6 -- set Interface vnet6 "
                         "type=internal ofport_request=6"),
              0)
        << ovs_.error();
    auto br = OpenFlowBridge::Connect(ovs_.mgmt_target());
    ASSERT_TRUE(br.ok()) << br.status();
    bridge_ = *std::move(br);
  }

  static SteeringConfig TwoVnics() {
    return {{1}, {{5, 7, "52:54:00:00:00:05"}, {6, 8, "52:54:00:00:00:06"}}};
  }
  static std::vector<FlowSpec> Flows(const SteeringConfig& c) {
    auto f = ComputeSteeringFlows(c);
    EXPECT_TRUE(f.ok()) << f.status();
    return f.ok() ? *f : std::vector<FlowSpec>{};
  }

  OvsSandbox ovs_;
  std::unique_ptr<OpenFlowBridge> bridge_;
};

TEST_F(OpenFlowBridgeTest, InstallsExactlyTheSteeringSetInOneBundle) {
  const std::vector<FlowSpec> desired = Flows(TwoVnics());
  absl::StatusOr<ReconcileResult> r = bridge_->Reconcile(desired);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->added, desired.size());
  EXPECT_EQ(r->kept + r->modified + r->deleted, 0u);
  EXPECT_EQ(r->bundles, 1u);
  EXPECT_EQ(bridge_->bundles_committed(), 1u);

  auto dumped = bridge_->DumpFlows();
  ASSERT_TRUE(dumped.ok()) << dumped.status();
  EXPECT_EQ(AsSet(*dumped), Canonical(desired));
  // The same, as ovs-ofctl sees it.
  EXPECT_EQ(OfctlDump(ovs_), Canonical(desired));
  // Our table-0 default replaced the bridge's own "priority=0 actions=NORMAL".
  std::string out;
  ASSERT_EQ(ovs_.Ofctl("--no-stats dump-flows", "", &out), 0) << ovs_.error();
  EXPECT_EQ(out.find("cookie=0x0,"), std::string::npos) << out;
}

TEST_F(OpenFlowBridgeTest, ReconcileFixesOursAndLeavesForeignFlowsAlone) {
  const std::vector<FlowSpec> desired = Flows(TwoVnics());
  ASSERT_TRUE(bridge_->Reconcile(desired).ok());

  // A foreign flow, a stale flow of ours, one of ours deleted, one altered.
  ASSERT_EQ(ovs_.Ofctl("add-flow", "'cookie=0x1234,table=0,priority=50,in_port=9,actions=drop'"), 0)
      << ovs_.error();
  ASSERT_EQ(ovs_.Ofctl("add-flow",
                       "'cookie=0xdf305ee000000063,table=0,priority=100,in_port=99,actions=drop'"),
            0)
      << ovs_.error();
  ASSERT_EQ(ovs_.Ofctl("--strict del-flows", "'table=1,priority=100,dl_dst=52:54:00:00:00:06'"), 0)
      << ovs_.error();
  ASSERT_EQ(ovs_.Ofctl("add-flow",
                       "'cookie=0xdf305ee000000005,table=0,priority=100,in_port=1,dl_vlan=2055,"
                       "actions=drop'"),
            0)
      << ovs_.error();

  // A new connection, as after a restart of the agent.
  auto again = OpenFlowBridge::Connect(ovs_.mgmt_target());
  ASSERT_TRUE(again.ok()) << again.status();
  absl::StatusOr<ReconcileResult> r = (*again)->Reconcile(desired);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->deleted, 1u);
  EXPECT_EQ(r->added, 1u);
  EXPECT_EQ(r->modified, 1u);
  EXPECT_EQ(r->kept, desired.size() - 2);
  EXPECT_EQ(r->bundles, 1u);
  EXPECT_EQ((*again)->bundles_committed(), 1u);

  auto dumped = (*again)->DumpFlows();
  ASSERT_TRUE(dumped.ok()) << dumped.status();
  EXPECT_EQ(AsSet(*dumped), Canonical(desired));
  auto foreign = (*again)->DumpFlows(0x1234, ~0ULL);
  ASSERT_TRUE(foreign.ok()) << foreign.status();
  ASSERT_EQ(foreign->size(), 1u);
  EXPECT_EQ(foreign->front().key, "table=0,priority=50,in_port=9");

  // Nothing differs any more: nothing is sent.
  r = (*again)->Reconcile(desired);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->kept, desired.size());
  EXPECT_EQ(r->bundles, 0u);
  EXPECT_EQ((*again)->bundles_committed(), 1u);
}

TEST_F(OpenFlowBridgeTest, FlowSetChangeIsAtomicForConcurrentReaders) {
  const std::vector<FlowSpec> both = Flows(TwoVnics());
  const std::vector<FlowSpec> one = Flows({{1}, {{5, 7, "52:54:00:00:00:05"}}});
  const FlowSet both_set = Canonical(both), one_set = Canonical(one);
  ASSERT_TRUE(bridge_->Reconcile(both).ok());

  // A reader on its own connection dumps our flows in a loop; every dump must
  // be one of the two whole sets, never a mix and never without steering.
  std::atomic<bool> stop{false};
  std::atomic<int> dumps{0}, bad{0};
  std::string first_bad;
  std::thread reader([&] {
    auto rd = OpenFlowBridge::Connect(ovs_.mgmt_target());
    if (!rd.ok()) {
      bad = 1;
      first_bad = rd.status().ToString();
      return;
    }
    while (!stop.load()) {
      auto d = (*rd)->DumpFlows();
      if (!d.ok()) continue;
      const FlowSet s = AsSet(*d);
      if (s != both_set && s != one_set && bad++ == 0) {
        for (const std::string& l : s) first_bad += l + "\n";
      }
      ++dumps;
    }
  });
  constexpr int kChanges = 20;
  for (int i = 0; i < kChanges; ++i) {
    // vNIC 6 removed, then back.
    absl::StatusOr<ReconcileResult> r = bridge_->Reconcile(i % 2 == 0 ? one : both);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->bundles, 1u);
    // vNIC 6's six flows; 5's broadcast flow and the uplinks' lose or gain
    // the copy into 6's ingress.
    EXPECT_EQ(i % 2 == 0 ? r->deleted : r->added, 6u);
    EXPECT_EQ(r->modified, 2u);
    testing::WaitFor([&] { return dumps.load() > i * 3; }, std::chrono::seconds(2));
  }
  stop = true;
  reader.join();
  EXPECT_EQ(bad.load(), 0) << first_bad;
  EXPECT_GT(dumps.load(), kChanges);
  EXPECT_EQ(bridge_->bundles_committed(), kChanges + 1u);
  auto dumped = bridge_->DumpFlows();
  ASSERT_TRUE(dumped.ok());
  EXPECT_EQ(AsSet(*dumped), both_set);
}

TEST_F(OpenFlowBridgeTest, RejectedBundleChangesNothing) {
  const std::vector<FlowSpec> desired = Flows(TwoVnics());
  ASSERT_TRUE(bridge_->Reconcile(desired).ok());
  // Second mod is valid syntax but the switch refuses it (no table 254 flows
  // may be added: it is read-only in OVS); the first must not stay either.
  absl::Status st = bridge_->ApplyBundle(
      {{FlowModKind::kDeleteStrict, "table=1,priority=0,cookie=0xdf305ee000000000/-1"},
       {FlowModKind::kAdd, "table=254,priority=1,cookie=0xdf305ee000000000 actions=drop"}});
  EXPECT_FALSE(st.ok());
  auto dumped = bridge_->DumpFlows();
  ASSERT_TRUE(dumped.ok());
  EXPECT_EQ(AsSet(*dumped), Canonical(desired));
}

TEST_F(OpenFlowBridgeTest, TheLargestBroadcastFlowFitsOneOpenFlowMessage) {
  // kMaxSteeredVnics vNICs: the uplinks' broadcast flow carries a copy for
  // each; the switch must take it whole.
  SteeringConfig c{{1}, {}};
  for (uint16_t id = 1; id <= kMaxSteeredVnics; ++id) {
    c.vnics.push_back({id + 9u, id, absl::StrFormat("52:54:00:00:%02x:%02x", id >> 8, id & 0xff)});
  }
  const std::vector<FlowSpec> all = Flows(c);
  auto largest = std::find_if(all.begin(), all.end(), [](const FlowSpec& f) {
    return f.table == 1 && f.priority == kPriorityGroupFromUplink;
  });
  ASSERT_NE(largest, all.end());
  absl::StatusOr<ReconcileResult> r = bridge_->Reconcile({*largest});
  ASSERT_TRUE(r.ok()) << r.status();
  auto dumped = bridge_->DumpFlows();
  ASSERT_TRUE(dumped.ok()) << dumped.status();
  ASSERT_EQ(dumped->size(), 1u);
  size_t copies = 0;
  for (size_t at = 0; (at = dumped->front().actions.find("output:1,", at)) != std::string::npos;
       ++at) {
    ++copies;
  }
  EXPECT_EQ(copies, kMaxSteeredVnics);
}

std::string PortLineOf(OvsSandbox& ovs, const std::string& name) {
  std::string out;
  EXPECT_EQ(ovs.Run("ovs-ofctl -O OpenFlow10 show " + ovs.mgmt_target(), &out), 0) << ovs.error();
  // " 1(dfw-fw): addr:..\n     config:     NO_FLOOD\n ..."
  const size_t at = out.find("(" + name + ")");
  if (at == std::string::npos) return "";
  const size_t cfg = out.find("config:", at);
  return out.substr(cfg, out.find('\n', cfg) - cfg);
}

TEST_F(OpenFlowBridgeTest, FirewallPortGetsNoFlood) {
  EXPECT_EQ(PortLineOf(ovs_, "dfw-fw").find("NO_FLOOD"), std::string::npos);
  ASSERT_TRUE(SetPortNoFlood(ovs_.mgmt_target(), 1).ok());
  EXPECT_NE(PortLineOf(ovs_, "dfw-fw").find("NO_FLOOD"), std::string::npos)
      << PortLineOf(ovs_, "dfw-fw");
  EXPECT_EQ(PortLineOf(ovs_, "vnet5").find("NO_FLOOD"), std::string::npos);
  ASSERT_TRUE(SetPortNoFlood(ovs_.mgmt_target(), 1).ok());  // idempotent
  ASSERT_TRUE(SetPortNoFlood(ovs_.mgmt_target(), 1, false).ok());
  EXPECT_EQ(PortLineOf(ovs_, "dfw-fw").find("NO_FLOOD"), std::string::npos);

  absl::Status st = SetPortNoFlood(ovs_.mgmt_target(), 77);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("no port 77"), std::string::npos) << st;
}

// The datapath actions ovs-vswitchd computes for a packet (ofproto/trace).
std::string DatapathActions(OvsSandbox& ovs, const std::string& packet) {
  std::string out;
  EXPECT_EQ(
      ovs.Run("ovs-appctl -t " + ovs.dir() + "/vswitchd.ctl ofproto/trace br0 '" + packet + "'",
              &out),
      0)
      << ovs.error();
  const size_t at = out.rfind("Datapath actions: ");
  if (at == std::string::npos) return "no datapath actions in: " + out;
  const size_t start = at + strlen("Datapath actions: ");
  return out.substr(start, out.find('\n', start) - start);
}

TEST_F(OpenFlowBridgeTest, TracedPacketsCrossTheFirewallPortAsDesigned) {
  ASSERT_TRUE(bridge_->Reconcile(Flows(TwoVnics())).ok());
  ASSERT_TRUE(SetPortNoFlood(ovs_.mgmt_target(), 1).ok());
  const std::string a = "dl_src=52:54:00:00:00:05,", b = "dl_dst=52:54:00:00:00:06";
  // VM 5 -> VM 6: egress of 5 (tag 7) to the firewall port...
  EXPECT_EQ(DatapathActions(ovs_, "in_port=5," + a + b), "push_vlan(vid=7,pcp=0),1");
  // ...allowed back: ingress of 6 (tag 0x808 = 2056) to the firewall port...
  EXPECT_EQ(DatapathActions(ovs_, "in_port=1,dl_vlan=7," + a + b),
            "pop_vlan,push_vlan(vid=2056,pcp=0),1");
  // ...allowed back: delivered untagged to 6.
  EXPECT_EQ(DatapathActions(ovs_, "in_port=1,dl_vlan=2056," + a + b), "pop_vlan,6");
  // A frame the VM tagged itself, and an unknown tag from the firewall: dropped.
  EXPECT_EQ(DatapathActions(ovs_, "in_port=5,dl_vlan=10," + a + b), "drop");
  EXPECT_EQ(DatapathActions(ovs_, "in_port=1,dl_vlan=99," + a + b), "drop");
  EXPECT_EQ(DatapathActions(ovs_, "in_port=1," + a + b), "drop");
}

// A datapath action list as the outputs it makes: (port, VLAN id or -1 when
// untagged), in order. Understands push_vlan(vid=..), pop_vlan and port
// numbers, the only actions our flows produce; anything else is returned in
// `other`.
struct Outputs {
  std::vector<std::pair<int, int>> out;
  std::vector<std::string> other;
};
Outputs ParseOutputs(const std::string& actions) {
  Outputs r;
  int vid = -1, depth = 0;
  std::string tok;
  auto flush = [&] {
    if (tok.empty()) return;
    if (tok.rfind("push_vlan(vid=", 0) == 0) {
      vid = std::stoi(tok.substr(14));
    } else if (tok == "pop_vlan") {
      vid = -1;
    } else if (std::all_of(tok.begin(), tok.end(), ::isdigit)) {
      r.out.push_back({std::stoi(tok), vid});
    } else {
      r.other.push_back(tok);
    }
    tok.clear();
  };
  for (char ch : actions) {
    if (ch == '(') ++depth;
    if (ch == ')') --depth;
    if (ch == ',' && depth == 0) {
      flush();
    } else {
      tok += ch;
    }
  }
  flush();
  return r;
}

std::set<int> PortsOf(const Outputs& o) {
  std::set<int> ports;
  for (const auto& [port, vid] : o.out) ports.insert(port);
  return ports;
}

// The steering tags of the copies sent to the firewall port (ofport 1), in
// order.
std::vector<int> TagsToFirewall(const Outputs& o) {
  std::vector<int> tags;
  for (const auto& [port, vid] : o.out) {
    if (port == 1) tags.push_back(vid);
  }
  return tags;
}

// Three vNICs (ofports 5, 6, 7; local ids 7, 8, 9), an uplink (ofport 2) and
// a port nobody told the agent about (ofport 9); every vNIC port and the
// firewall port no-flood, as the agent sets them.
class FleetSteeringTest : public OpenFlowBridgeTest {
 protected:
  void SetUp() override {
    OpenFlowBridgeTest::SetUp();
    if (HasFatalFailure()) return;
    ASSERT_EQ(ovs_.Vsctl("add-port br0 vnet7 -- set Interface vnet7 type=internal "
                         "ofport_request=7 -- add-port br0 eth1 -- set Interface eth1 "
                         "type=internal ofport_request=2 -- add-port br0 new9 -- set Interface "
                         "new9 type=internal ofport_request=9"),
              0)
        << ovs_.error();
    SteeringConfig c = TwoVnics();
    c.vnics.push_back({7, 9, "52:54:00:00:00:07"});
    c.uplink_ofports = {2};
    ASSERT_TRUE(bridge_->Reconcile(Flows(c)).ok());
    for (uint32_t port : {1u, 5u, 6u, 7u}) {
      ASSERT_TRUE(SetPortNoFlood(ovs_.mgmt_target(), port).ok()) << port;
    }
  }
  std::string Trace(const std::string& packet) { return DatapathActions(ovs_, packet); }

  static constexpr const char* kFromA = "dl_src=52:54:00:00:00:05,";
  static constexpr const char* kBroadcast = "dl_dst=ff:ff:ff:ff:ff:ff";
};

TEST_F(FleetSteeringTest, BroadcastFromAVnicCrossesEachReceiversIngressAndGoesOutTheUplink) {
  // 5's broadcast, allowed by its egress rules, back from the firewall port.
  const std::string acts = Trace(std::string("in_port=1,dl_vlan=7,") + kFromA + kBroadcast);
  const Outputs o = ParseOutputs(acts);
  EXPECT_TRUE(o.other.empty()) << acts;
  // One copy into 6's ingress (0x808) and one into 7's (0x809), both to the
  // firewall port; the original untagged to the uplink; never to 5 itself,
  // never straight to 6 or 7.
  EXPECT_EQ(TagsToFirewall(o), (std::vector<int>{0x808, 0x809})) << acts;
  EXPECT_EQ(std::count(o.out.begin(), o.out.end(), std::pair<int, int>{2, -1}), 1) << acts;
  for (int vnic : {5, 6, 7}) EXPECT_EQ(PortsOf(o).count(vnic), 0u) << vnic << ": " << acts;
  // The copies, allowed by 6's and 7's ingress rules, are delivered untagged.
  EXPECT_EQ(Trace(std::string("in_port=1,dl_vlan=2056,") + kFromA + kBroadcast), "pop_vlan,6");
  EXPECT_EQ(Trace(std::string("in_port=1,dl_vlan=2057,") + kFromA + kBroadcast), "pop_vlan,7");
  // Multicast (group bit, not all-ones) takes the same path.
  const std::string mcast =
      Trace(std::string("in_port=1,dl_vlan=7,") + kFromA + "dl_dst=01:00:5e:00:00:fb");
  const Outputs m = ParseOutputs(mcast);
  EXPECT_EQ(TagsToFirewall(m), (std::vector<int>{0x808, 0x809})) << mcast;
  EXPECT_EQ(std::count(m.out.begin(), m.out.end(), std::pair<int, int>{2, -1}), 1) << mcast;
  for (int vnic : {5, 6, 7}) EXPECT_EQ(PortsOf(m).count(vnic), 0u) << vnic << ": " << mcast;
}

TEST_F(FleetSteeringTest, BroadcastFromTheUplinkReachesEveryVnicOnlyThroughTheFirewall) {
  const std::string acts = Trace(std::string("in_port=2,dl_src=52:54:00:00:01:00,") + kBroadcast);
  const Outputs o = ParseOutputs(acts);
  EXPECT_TRUE(o.other.empty()) << acts;
  EXPECT_EQ(TagsToFirewall(o), (std::vector<int>{0x807, 0x808, 0x809})) << acts;
  for (int port : {2, 5, 6, 7}) EXPECT_EQ(PortsOf(o).count(port), 0u) << port << ": " << acts;
}

TEST_F(FleetSteeringTest, ATaggedFrameFromTheUplinkIsDropped) {
  EXPECT_EQ(Trace("in_port=2,dl_vlan=8,dl_src=52:54:00:00:01:00,dl_dst=52:54:00:00:00:06"), "drop");
  EXPECT_EQ(Trace(std::string("in_port=2,dl_vlan=100,dl_src=52:54:00:00:01:00,") + kBroadcast),
            "drop");
}

TEST_F(FleetSteeringTest, AFrameFromAPortTheAgentDoesNotKnowIsDropped) {
  EXPECT_EQ(Trace("in_port=9,dl_src=52:54:00:00:00:09,dl_dst=52:54:00:00:00:06"), "drop");
  EXPECT_EQ(Trace(std::string("in_port=9,dl_src=52:54:00:00:00:09,") + kBroadcast), "drop");
  EXPECT_EQ(Trace("in_port=9,dl_src=52:54:00:00:00:09,dl_dst=52:54:00:00:01:00"), "drop");
}

TEST_F(FleetSteeringTest, UnicastFromTheUplinkToAVnicGoesThroughItsIngress) {
  EXPECT_EQ(Trace("in_port=2,dl_src=52:54:00:00:01:00,dl_dst=52:54:00:00:00:06"),
            "push_vlan(vid=2056,pcp=0),1");
  // Even after NORMAL learnt 6's MAC on port 6 (from a broadcast 6 sent).
  ASSERT_EQ(ovs_.Run("ovs-appctl -t " + ovs_.dir() +
                     "/vswitchd.ctl ofproto/trace br0 "
                     "'in_port=1,dl_vlan=8,dl_src=52:54:00:00:00:06,dl_dst=ff:ff:ff:ff:ff:ff' "
                     "-generate"),
            0)
      << ovs_.error();
  std::string fdb;
  ASSERT_EQ(ovs_.Run("ovs-appctl -t " + ovs_.dir() + "/vswitchd.ctl fdb/show br0", &fdb), 0);
  EXPECT_NE(fdb.find("52:54:00:00:00:06"), std::string::npos) << fdb;
  EXPECT_EQ(Trace("in_port=2,dl_src=52:54:00:00:01:00,dl_dst=52:54:00:00:00:06"),
            "push_vlan(vid=2056,pcp=0),1");
}

TEST_F(FleetSteeringTest, UnknownUnicastFromAVnicReachesTheUplinkAndNoVnic) {
  const std::string acts =
      Trace(std::string("in_port=1,dl_vlan=7,") + kFromA + "dl_dst=52:54:00:00:01:99");
  const Outputs o = ParseOutputs(acts);
  EXPECT_TRUE(o.other.empty()) << acts;
  EXPECT_EQ(PortsOf(o).count(2), 1u) << acts;
  for (int port : {1, 5, 6, 7}) EXPECT_EQ(PortsOf(o).count(port), 0u) << port << ": " << acts;
  for (const auto& [port, vid] : o.out) EXPECT_EQ(vid, -1) << acts;
  // Port 9 is not no-flood (the agent has not seen it yet): NORMAL floods to
  // it. The agent must set no-flood on a VM port as soon as it appears.
  EXPECT_EQ(PortsOf(o).count(9), 1u) << acts;
}

// The exclusion list: vNIC 5 (local id 7) protected; vNICs 6 (local id 8,
// 198.18.10.6 and 2001:db8::6) and 7 (local id 9, 198.18.10.7) excluded;
// uplink 2. As the agent sets them: the firewall port and 5 no-flood, 6 and
// 7 flooded again (no-flood set when they appeared, then cleared).
class ExclusionSteeringTest : public OpenFlowBridgeTest {
 protected:
  void SetUp() override {
    OpenFlowBridgeTest::SetUp();
    if (HasFatalFailure()) return;
    ASSERT_EQ(ovs_.Vsctl("add-port br0 vnet7 -- set Interface vnet7 type=internal "
                         "ofport_request=7 -- add-port br0 eth1 -- set Interface eth1 "
                         "type=internal ofport_request=2"),
              0)
        << ovs_.error();
    ASSERT_TRUE(bridge_->Reconcile(Flows(Config())).ok());
    for (uint32_t port : {1u, 5u, 6u, 7u}) {
      ASSERT_TRUE(SetPortNoFlood(ovs_.mgmt_target(), port).ok()) << port;
    }
    for (uint32_t port : {6u, 7u}) {
      ASSERT_TRUE(SetPortNoFlood(ovs_.mgmt_target(), port, false).ok()) << port;
    }
  }
  static SteeringConfig Config() {
    SteeringConfig c{{1},
                     {{5, 7, "52:54:00:00:00:05"},
                      {6, 8, "52:54:00:00:00:06", true, {"198.18.10.6", "2001:db8::6"}},
                      {7, 9, "52:54:00:00:00:07", true, {"198.18.10.7/32"}}}};
    c.uplink_ofports = {2};
    return c;
  }
  std::string Trace(const std::string& packet) { return DatapathActions(ovs_, packet); }
  // Makes NORMAL learn a MAC on a port: `in_port_and_mac` is
  // "in_port=P,dl_src=M"; a broadcast from there is really processed.
  void Learn(const std::string& in_port_and_mac) {
    ASSERT_EQ(ovs_.Run("ovs-appctl -t " + ovs_.dir() + "/vswitchd.ctl ofproto/trace br0 '" +
                       in_port_and_mac + ",dl_dst=ff:ff:ff:ff:ff:ff' -generate"),
              0)
        << ovs_.error();
  }

  static constexpr const char* kFrom6 = "in_port=6,dl_src=52:54:00:00:00:06,";
  static constexpr const char* kIp6 = "ip,nw_src=198.18.10.6,";
};

TEST_F(ExclusionSteeringTest, ExcludedVnicsArePartOfNormalsFloodAgain) {
  EXPECT_NE(PortLineOf(ovs_, "dfw-fw").find("NO_FLOOD"), std::string::npos);
  EXPECT_NE(PortLineOf(ovs_, "vnet5").find("NO_FLOOD"), std::string::npos);
  EXPECT_EQ(PortLineOf(ovs_, "vnet6").find("NO_FLOOD"), std::string::npos)
      << PortLineOf(ovs_, "vnet6");
  EXPECT_EQ(PortLineOf(ovs_, "vnet7").find("NO_FLOOD"), std::string::npos)
      << PortLineOf(ovs_, "vnet7");
}

TEST_F(ExclusionSteeringTest, UnicastBetweenExcludedVnicsAndToTheUplinkBypassesTheFirewall) {
  EXPECT_EQ(Trace(std::string(kFrom6) + kIp6 + "nw_dst=198.18.10.7,dl_dst=52:54:00:00:00:07"), "7");
  EXPECT_EQ(Trace("in_port=7,dl_src=52:54:00:00:00:07,ip,nw_src=198.18.10.7,nw_dst=198.18.10.6,"
                  "dl_dst=52:54:00:00:00:06"),
            "6");
  // To a machine beyond the uplink NORMAL has not learnt: flooded
  // untagged to the uplink and the other excluded vNIC (and the bridge's
  // LOCAL port), never to the firewall, 5 or back to 6.
  const std::string to_unknown =
      Trace(std::string(kFrom6) + kIp6 + "nw_dst=198.18.20.1,dl_dst=52:54:00:00:01:00");
  const Outputs o = ParseOutputs(to_unknown);
  EXPECT_TRUE(o.other.empty()) << to_unknown;
  EXPECT_EQ(PortsOf(o).count(2), 1u) << to_unknown;
  EXPECT_EQ(PortsOf(o).count(7), 1u) << to_unknown;
  for (int port : {1, 5, 6}) EXPECT_EQ(PortsOf(o).count(port), 0u) << port << ": " << to_unknown;
  for (const auto& [port, vid] : o.out) EXPECT_EQ(vid, -1) << to_unknown;
  // Learnt: to the uplink only.
  Learn("in_port=2,dl_src=52:54:00:00:01:00");
  EXPECT_EQ(Trace(std::string(kFrom6) + kIp6 + "nw_dst=198.18.20.1,dl_dst=52:54:00:00:01:00"), "2");
}

TEST_F(ExclusionSteeringTest, UnicastFromAnExcludedVnicToAProtectedOneCrossesItsIngress) {
  EXPECT_EQ(Trace(std::string(kFrom6) + kIp6 + "nw_dst=198.18.10.5,dl_dst=52:54:00:00:00:05"),
            "push_vlan(vid=2055,pcp=0),1");
  EXPECT_EQ(
      Trace(std::string(kFrom6) + "arp,arp_op=2,arp_spa=198.18.10.6,arp_sha=52:54:00:00:00:06,"
                                  "arp_tpa=198.18.10.5,dl_dst=52:54:00:00:00:05"),
      "push_vlan(vid=2055,pcp=0),1");
  EXPECT_EQ(Trace(std::string(kFrom6) +
                  "ipv6,ipv6_src=2001:db8::6,ipv6_dst=2001:db8::5,dl_dst=52:54:00:00:00:05"),
            "push_vlan(vid=2055,pcp=0),1");
  // Allowed by 5's ingress rules: delivered to 5.
  EXPECT_EQ(Trace("in_port=1,dl_vlan=2055,dl_src=52:54:00:00:00:06,dl_dst=52:54:00:00:00:05"),
            "pop_vlan,5");
}

TEST_F(ExclusionSteeringTest, UnicastToAnExcludedVnicIsDeliveredDirectly) {
  EXPECT_EQ(Trace("in_port=2,dl_src=52:54:00:00:01:00,dl_dst=52:54:00:00:00:06"), "6");
  // From 5, allowed by 5's egress rules, back from the firewall.
  EXPECT_EQ(Trace("in_port=1,dl_vlan=7,dl_src=52:54:00:00:00:05,dl_dst=52:54:00:00:00:06"),
            "pop_vlan,6");
  // Even after NORMAL learnt 6's MAC elsewhere (a spoofer beyond the uplink).
  Learn("in_port=2,dl_src=52:54:00:00:00:06");
  EXPECT_EQ(Trace("in_port=2,dl_src=52:54:00:00:01:00,dl_dst=52:54:00:00:00:06"), "6");
  // 5's egress to the firewall is unchanged.
  EXPECT_EQ(Trace("in_port=5,dl_src=52:54:00:00:00:05,dl_dst=52:54:00:00:00:06"),
            "push_vlan(vid=7,pcp=0),1");
  // Nothing comes back from the firewall with 6's tags.
  for (const char* vlan : {"8", "2056"}) {
    EXPECT_EQ(Trace(std::string("in_port=1,dl_vlan=") + vlan +
                    ",dl_src=52:54:00:00:00:06,dl_dst=52:54:00:00:00:05"),
              "drop")
        << vlan;
    EXPECT_EQ(Trace(std::string("in_port=1,dl_vlan=") + vlan +
                    ",dl_src=52:54:00:00:00:05,dl_dst=52:54:00:00:00:06"),
              "drop")
        << vlan;
  }
}

TEST_F(ExclusionSteeringTest, SpoofedFramesFromAnExcludedVnicAreDroppedInOvs) {
  const std::string to5 = "dl_dst=52:54:00:00:00:05,";
  const std::string bcast = "dl_dst=ff:ff:ff:ff:ff:ff,";
  for (const std::string& spoofed : {
           // Source IP: another's, 7's, unbound.
           std::string(kFrom6) + to5 + "ip,nw_src=198.18.10.5,nw_dst=198.18.10.5",
           std::string(kFrom6) + to5 + "ip,nw_src=198.18.10.7,nw_dst=198.18.10.5",
           std::string(kFrom6) + "dl_dst=52:54:00:00:00:07,ip,nw_src=198.18.10.99",
           // Source MAC: unbound, the protected vNIC's, the other excluded one's.
           "in_port=6,dl_src=52:54:00:00:00:99," + to5 + kIp6 + "nw_dst=198.18.10.5",
           std::string("in_port=6,dl_src=52:54:00:00:00:05,dl_dst=52:54:00:00:00:07,") + kIp6,
           std::string("in_port=6,dl_src=52:54:00:00:00:07,dl_dst=52:54:00:00:01:00,") + kIp6,
           // ARP: spoofed sender address, sender MAC.
           std::string(kFrom6) + bcast +
               "arp,arp_op=1,arp_spa=198.18.10.5,arp_sha=52:54:00:00:00:06,arp_tpa=198.18.10.7",
           std::string(kFrom6) + bcast +
               "arp,arp_op=2,arp_spa=198.18.10.6,arp_sha=52:54:00:00:00:05,arp_tpa=198.18.10.5",
           // Not DHCP from 0.0.0.0.
           std::string(kFrom6) + bcast + "udp,nw_src=0.0.0.0,udp_src=68,udp_dst=68",
           // IPv6: unbound source; router advertisement; a neighbour
           // advertisement of another's address; a solicitation with another
           // MAC as its source link-layer address.
           std::string(kFrom6) + to5 + "ipv6,ipv6_src=2001:db8::5",
           std::string(kFrom6) + "dl_dst=33:33:00:00:00:01,icmp6,ipv6_src=2001:db8::6,"
                                 "ipv6_dst=ff02::1,icmpv6_type=134,icmpv6_code=0",
           std::string(kFrom6) + to5 +
               "icmp6,ipv6_src=2001:db8::6,icmpv6_type=136,icmpv6_code=0,nd_target=2001:db8::5,"
               "nd_tll=52:54:00:00:00:06",
           std::string(kFrom6) + "dl_dst=33:33:ff:00:00:05,icmp6,ipv6_src=2001:db8::6,"
                                 "ipv6_dst=ff02::1:ff00:5,icmpv6_type=135,icmpv6_code=0,"
                                 "nd_target=2001:db8::5,nd_sll=52:54:00:00:00:05",
           // Tagged, and not IP/ARP at all.
           std::string(kFrom6) + to5 + "dl_vlan=10,ip,nw_src=198.18.10.6",
           std::string(kFrom6) + "dl_dst=01:80:c2:00:00:0e,dl_type=0x88cc",
       }) {
    EXPECT_EQ(Trace(spoofed), "drop") << spoofed;
  }
  // The frames it may send, for contrast: an ARP probe, a DHCP request, a
  // duplicate address detection, an advertisement of its own address.
  for (const std::string& fine : {
           std::string(kFrom6) + bcast +
               "arp,arp_op=1,arp_spa=0.0.0.0,arp_sha=52:54:00:00:00:06,arp_tpa=198.18.10.6",
           std::string(kFrom6) + bcast +
               "udp,nw_src=0.0.0.0,nw_dst=255.255.255.255,udp_src=68,udp_dst=67",
           std::string(kFrom6) + "dl_dst=33:33:ff:00:00:06,icmp6,ipv6_src=::,"
                                 "ipv6_dst=ff02::1:ff00:6,icmpv6_type=135,icmpv6_code=0,"
                                 "nd_target=2001:db8::6",
           std::string(kFrom6) + to5 +
               "icmp6,ipv6_src=2001:db8::6,icmpv6_type=136,icmpv6_code=0,nd_target=2001:db8::6,"
               "nd_tll=52:54:00:00:00:06",
       }) {
    const std::string acts = Trace(fine);
    EXPECT_NE(acts, "drop") << fine;
    EXPECT_EQ(acts.find("no datapath actions"), std::string::npos) << acts;
  }
}

// A neighbour solicitation from 6 (2001:db8::6) for 2001:db8::5 with these
// source link-layer options, as the hex frame ofproto/trace takes (the
// checksum is left 0: OVS does not check it).
std::string SolicitationFrame(const std::vector<std::string>& source_lladdrs) {
  std::string hex = "3333ff00000552540000000686dd";  // Ethernet
  absl::StrAppendFormat(&hex, "60000000%04x3aff", 24 + 8 * source_lladdrs.size());
  hex += "20010db8000000000000000000000006ff0200000000000000000001ff000005";
  hex += "870000000000000020010db8000000000000000000000005";  // type 135, target
  for (std::string mac : source_lladdrs) {
    mac.erase(std::remove(mac.begin(), mac.end(), ':'), mac.end());
    hex += "0101" + mac;
  }
  return hex;
}

TEST_F(ExclusionSteeringTest, ASolicitationWithASecondLinkLayerOptionIsDropped) {
  auto trace = [&](const std::vector<std::string>& lladdrs) {
    std::string out;
    EXPECT_EQ(
        ovs_.Run("ovs-appctl -t " + ovs_.dir() + "/vswitchd.ctl ofproto/trace br0 in_port=6 " +
                     SolicitationFrame(lladdrs),
                 &out),
        0)
        << ovs_.error();
    const size_t at = out.rfind("Datapath actions: ");
    if (at == std::string::npos) return "no datapath actions in: " + out;
    return out.substr(at + 18, out.find('\n', at) - at - 18);
  };
  const std::string mine = "52:54:00:00:00:06", other = "52:54:00:00:00:05";
  // Allowed: to the solicited-node group, so into 5's ingress (and flooded).
  EXPECT_EQ(trace({mine}).rfind("push_vlan(vid=2055,pcp=0),1,", 0), 0u) << trace({mine});
  EXPECT_EQ(trace({}).rfind("push_vlan(vid=2055,pcp=0),1,", 0), 0u) << trace({});
  EXPECT_EQ(trace({other}), "drop");
  // The spoofguard takes the last option (`other`); OVS parses neither and
  // leaves nd_target ::, which p180 drops.
  EXPECT_EQ(trace({mine, other}), "drop");
  EXPECT_EQ(trace({mine, mine}), "drop");
}

TEST_F(ExclusionSteeringTest, BroadcastFromAnExcludedVnicCrossesProtectedIngressesOnly) {
  for (const std::string& frame :
       {std::string(kFrom6) + "dl_dst=ff:ff:ff:ff:ff:ff,arp,arp_op=1,arp_spa=198.18.10.6,"
                              "arp_sha=52:54:00:00:00:06,arp_tpa=198.18.10.5",
        std::string(kFrom6) +
            "dl_dst=01:00:5e:00:00:fb,ip,nw_src=198.18.10.6,nw_dst=224.0.0.251"}) {
    const std::string acts = Trace(frame);
    const Outputs o = ParseOutputs(acts);
    EXPECT_TRUE(o.other.empty()) << acts;
    // One copy into 5's ingress (0x807), none tagged with 6's or 7's ids;
    // untagged to the uplink and to 7 (NORMAL's flood); never back to 6,
    // never straight to 5.
    EXPECT_EQ(TagsToFirewall(o), (std::vector<int>{0x807})) << acts;
    EXPECT_EQ(std::count(o.out.begin(), o.out.end(), std::pair<int, int>{2, -1}), 1) << acts;
    EXPECT_EQ(std::count(o.out.begin(), o.out.end(), std::pair<int, int>{7, -1}), 1) << acts;
    EXPECT_EQ(PortsOf(o).count(6), 0u) << acts;
    EXPECT_EQ(PortsOf(o).count(5), 0u) << acts;
  }
}

TEST_F(ExclusionSteeringTest, BroadcastToExcludedVnicsIsFloodedNeverCopiedIntoTheFirewall) {
  // From the uplink: into 5's ingress, flooded to 6 and 7.
  std::string acts = Trace("in_port=2,dl_src=52:54:00:00:01:00,dl_dst=ff:ff:ff:ff:ff:ff");
  Outputs o = ParseOutputs(acts);
  EXPECT_TRUE(o.other.empty()) << acts;
  EXPECT_EQ(TagsToFirewall(o), (std::vector<int>{0x807})) << acts;
  for (int port : {6, 7}) {
    EXPECT_EQ(std::count(o.out.begin(), o.out.end(), std::pair<int, int>{port, -1}), 1)
        << port << ": " << acts;
  }
  for (int port : {2, 5}) EXPECT_EQ(PortsOf(o).count(port), 0u) << port << ": " << acts;
  // From 5, allowed by its egress rules: no vNIC's ingress copy (5 is the
  // only protected one), flooded untagged to the uplink, 6 and 7.
  acts = Trace("in_port=1,dl_vlan=7,dl_src=52:54:00:00:00:05,dl_dst=ff:ff:ff:ff:ff:ff");
  o = ParseOutputs(acts);
  EXPECT_TRUE(o.other.empty()) << acts;
  EXPECT_TRUE(TagsToFirewall(o).empty()) << acts;
  for (int port : {2, 6, 7}) {
    EXPECT_EQ(std::count(o.out.begin(), o.out.end(), std::pair<int, int>{port, -1}), 1)
        << port << ": " << acts;
  }
  for (int port : {1, 5}) EXPECT_EQ(PortsOf(o).count(port), 0u) << port << ": " << acts;
}

// The dataplane's spoofguard (dataplane/src/pipeline.cc Pipeline::Spoofguard)
// restated for the frames RandomFrame makes: what an excluded vNIC's port
// security must let through.
struct Frame {
  std::string text;  // ofproto/trace flow
  bool spoofguard_allows = false;
};
Frame RandomFrame(std::mt19937& rng) {
  const std::string mac = "52:54:00:00:00:06", other_mac = "52:54:00:00:00:05";
  const std::set<std::string> v4 = {"198.18.10.6"}, v6 = {"2001:db8::6"};
  auto pick = [&](std::vector<std::string> from) { return from[rng() % from.size()]; };
  const std::string src_mac = rng() % 4 == 0 ? other_mac : mac;
  Frame f;
  f.text = "in_port=6,dl_src=" + src_mac + ",dl_dst=ff:ff:ff:ff:ff:ff,";
  bool ok = src_mac == mac;
  switch (rng() % 6) {
    case 0: {  // ARP
      const std::string spa = pick({"198.18.10.6", "198.18.10.5", "0.0.0.0"});
      const std::string sha = rng() % 4 == 0 ? other_mac : mac;
      f.text += "arp,arp_op=" + pick({"1", "2"}) + ",arp_spa=" + spa + ",arp_sha=" + sha +
                ",arp_tpa=198.18.10.5";
      ok = ok && sha == mac && (spa == "0.0.0.0" || v4.count(spa));
      break;
    }
    case 1: {  // IPv4: UDP (maybe DHCP) or TCP
      const std::string src = pick({"198.18.10.6", "198.18.10.5", "0.0.0.0"});
      const bool udp = rng() % 2 == 0;
      const std::string sport = pick({"68", "1234"}), dport = pick({"67", "68"});
      const std::string l4 = udp ? "udp" : "tcp";
      f.text += l4 + ",nw_src=" + src + ",nw_dst=255.255.255.255," + l4 + "_src=" + sport + "," +
                l4 + "_dst=" + dport;
      const bool dhcp = udp && sport == "68" && dport == "67" && src == "0.0.0.0";
      ok = ok && (v4.count(src) || dhcp);
      break;
    }
    case 2: {  // IPv6, not neighbour discovery
      const std::string src = pick({"2001:db8::6", "2001:db8::5", "::", "fe80::5054:ff:fe00:6"});
      f.text += "udp6,ipv6_src=" + src + ",ipv6_dst=ff02::1,udp_src=546,udp_dst=547";
      ok = ok && v6.count(src);
      break;
    }
    default: {  // neighbour discovery: RS, RA, NS, NA, redirect
      const int type = 133 + static_cast<int>(rng() % 5);
      const std::string src = pick({"2001:db8::6", "2001:db8::5", "::"});
      f.text += "icmp6,ipv6_src=" + src + ",ipv6_dst=ff02::1,icmpv6_type=" + std::to_string(type) +
                ",icmpv6_code=0";
      if (type == 134 || type == 137) {
        ok = false;
        break;
      }
      if (type == 133) {
        ok = ok && v6.count(src);
        break;
      }
      const std::string target = pick({"2001:db8::6", "2001:db8::5"});
      const std::string lladdr = pick({"", mac, other_mac});
      f.text += ",nd_target=" + target;
      if (!lladdr.empty()) f.text += (type == 135 ? ",nd_sll=" : ",nd_tll=") + lladdr;
      if (!lladdr.empty() && lladdr != mac) ok = false;
      if (type == 136 && !v6.count(target)) ok = false;
      ok = ok && (v6.count(src) || (type == 135 && src == "::"));
      break;
    }
  }
  f.spoofguard_allows = ok;
  return f;
}

TEST_F(ExclusionSteeringTest, PortSecurityAgreesWithTheSpoofguardOnRandomFrames) {
  std::mt19937 rng(7);
  int allowed = 0, dropped = 0;
  for (int i = 0; i < 150; ++i) {
    const Frame f = RandomFrame(rng);
    const std::string acts = Trace(f.text);
    ASSERT_EQ(acts.find("no datapath actions"), std::string::npos) << acts;
    // A broadcast that passes goes at least to the uplink.
    EXPECT_EQ(acts != "drop", f.spoofguard_allows) << f.text << " -> " << acts;
    ++(f.spoofguard_allows ? allowed : dropped);
  }
  // Both verdicts were exercised.
  EXPECT_GT(allowed, 20);
  EXPECT_GT(dropped, 20);
}

// n_packets of the flows `ovs-ofctl dump-flows <filter>` lists, summed.
uint64_t PacketsOf(OvsSandbox& ovs, const std::string& filter) {
  std::string out;
  EXPECT_EQ(ovs.Ofctl("dump-flows", "'" + filter + "'", &out), 0) << out;
  uint64_t n = 0;
  for (size_t at = 0; (at = out.find("n_packets=", at)) != std::string::npos; ++at) {
    n += std::stoull(out.substr(at + strlen("n_packets=")));
  }
  return n;
}

// A probe from vnet5 (52:54:00:00:00:05, 198.18.10.5) to vnet6.
std::vector<uint8_t> Probe(uint8_t proto, bool v6, uint16_t dst_port = 5432) {
  ProbeFrameSpec s;
  s.src_mac = {0x52, 0x54, 0x00, 0x00, 0x00, 0x05};
  s.dst_mac = {0x52, 0x54, 0x00, 0x00, 0x00, 0x06};
  s.protocol = proto;
  s.src_ip = v6 ? std::vector<uint8_t>{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5}
                : std::vector<uint8_t>{198, 18, 10, 5};
  s.dst_ip = v6 ? std::vector<uint8_t>{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 6}
                : std::vector<uint8_t>{198, 18, 10, 6};
  s.src_port = 40000;
  s.dst_port = dst_port;
  s.icmp_id = 77;
  absl::StatusOr<std::vector<uint8_t>> f = BuildProbeFrame(s);
  EXPECT_TRUE(f.ok()) << f.status();
  return f.ok() ? *f : std::vector<uint8_t>{};
}

TEST_F(OpenFlowBridgeTest, PacketOutCrossesTableZeroAsIfReceivedOnThePort) {
  // One counting flow per probe kind, matching every field the probe sets
  // (so OVS's own parser confirms the frames' layout), and a catch-all.
  const std::vector<std::pair<std::string, std::vector<uint8_t>>> cases = {
      {"in_port=5,tcp,nw_src=198.18.10.5,nw_dst=198.18.10.6,tp_src=40000,tp_dst=5432,"
       "tcp_flags=+syn-ack,nw_ttl=64",
       Probe(kProtoTcp, false)},
      {"in_port=5,udp6,ipv6_src=2001:db8::5,ipv6_dst=2001:db8::6,tp_src=40000,tp_dst=53",
       Probe(kProtoUdp, true, 53)},
      {"in_port=5,icmp,nw_src=198.18.10.5,nw_dst=198.18.10.6,icmp_type=8,icmp_code=0",
       Probe(kProtoIcmp, false)},
      {"in_port=5,icmp6,ipv6_src=2001:db8::5,ipv6_dst=2001:db8::6,icmpv6_type=128,"
       "icmpv6_code=0",
       Probe(kProtoIcmpv6, true)},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    ASSERT_EQ(ovs_.Ofctl("add-flow", absl::StrFormat("'cookie=0x5eed%04x,table=0,priority=100,%s "
                                                     "actions=drop'",
                                                     i, cases[i].first)),
              0)
        << cases[i].first;
  }
  ASSERT_EQ(ovs_.Ofctl("add-flow", "'cookie=0x5eedffff,table=0,priority=1,actions=drop'"), 0);
  // The same TCP SYN from vnet6 must not hit vnet5's flow.
  ASSERT_EQ(ovs_.Ofctl("add-flow",
                       "'cookie=0x5eedfff6,table=0,priority=100,in_port=6,tcp,tp_dst=5432 "
                       "actions=drop'"),
            0);

  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(cases[i].first);
    absl::Status st = bridge_->PacketOut(5, cases[i].second);
    ASSERT_TRUE(st.ok()) << st;
    // The barrier's reply came after the packet went through the table:
    // its flow has counted it already.
    for (size_t j = 0; j < cases.size(); ++j) {
      EXPECT_EQ(PacketsOf(ovs_, absl::StrFormat("cookie=0x5eed%04x/-1", j)), j <= i ? 1u : 0u) << j;
    }
  }
  EXPECT_EQ(PacketsOf(ovs_, "cookie=0x5eedffff/-1"), 0u);
  EXPECT_EQ(PacketsOf(ovs_, "cookie=0x5eedfff6/-1"), 0u);

  // From vnet6 the SYN hits vnet6's flow; the bridge's LOCAL port works too.
  ASSERT_TRUE(bridge_->PacketOut(6, Probe(kProtoTcp, false)).ok());
  EXPECT_EQ(PacketsOf(ovs_, "cookie=0x5eedfff6/-1"), 1u);
  EXPECT_EQ(PacketsOf(ovs_, "cookie=0x5eed0000/-1"), 1u);
  ASSERT_TRUE(bridge_->PacketOut(0xfffffffe, Probe(kProtoTcp, false)).ok());
  EXPECT_EQ(PacketsOf(ovs_, "cookie=0x5eedffff/-1"), 1u);
}

TEST_F(OpenFlowBridgeTest, PacketOutFromAVnicPortTakesItsSteeringFlow) {
  ASSERT_TRUE(bridge_->Reconcile(Flows(TwoVnics())).ok());
  ASSERT_TRUE(SetPortNoFlood(ovs_.mgmt_target(), 1).ok());
  const std::string egress5 = "cookie=0xdf305ee000000005/-1,table=0,in_port=5";
  const uint64_t before = PacketsOf(ovs_, egress5);
  ASSERT_TRUE(bridge_->PacketOut(5, Probe(kProtoTcp, false)).ok());
  // Counted by vnet5's egress flow (p100: tag 7, output to the firewall
  // port), and by nothing reading frames from the firewall port.
  EXPECT_EQ(PacketsOf(ovs_, egress5), before + 1);
  EXPECT_EQ(PacketsOf(ovs_, "table=0,in_port=1"), 0u);
  std::string out;
  ASSERT_EQ(ovs_.Ofctl("dump-flows", "'" + egress5 + "'", &out), 0) << out;
  std::istringstream lines(out);
  std::string line, hit;
  while (std::getline(lines, line)) {
    if (line.find("n_packets=1,") != std::string::npos) hit += line;
  }
  EXPECT_NE(hit.find("priority=100,in_port=5 actions="), std::string::npos) << out;
  EXPECT_NE(hit.find("output:1"), std::string::npos) << out;
}

TEST_F(OpenFlowBridgeTest, PacketOutRejectsWhatOvsWouldSilentlyAccept) {
  // Counts whatever would reach the table.
  ASSERT_EQ(ovs_.Ofctl("add-flow", "'cookie=0x5eedffff,table=0,priority=1,actions=drop'"), 0);
  const std::vector<uint8_t> syn = Probe(kProtoTcp, false);

  // OVS accepts a packet-out from a port number it does not have (and runs
  // the frame as from that port): PacketOut looks the port up first.
  absl::Status st = bridge_->PacketOut(4000, syn);
  EXPECT_EQ(st.code(), absl::StatusCode::kNotFound) << st;
  EXPECT_NE(st.message().find("no port 4000 on the bridge"), std::string::npos) << st;
  // Not an OpenFlow 1.3 port number at all (OVS would answer
  // OFPBAC_BAD_OUT_PORT), port 0 (OVS accepts it), CONTROLLER (accepted
  // too, but no frame comes in on it).
  for (uint32_t port : {0xfff0u, 0xff00u, 0u, 0xfffffffdu}) {
    st = bridge_->PacketOut(port, syn);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << port << ": " << st;
    EXPECT_NE(st.message().find("is not a port a frame can come in on"), std::string::npos) << st;
  }
  // OVS accepts empty and runt frames and runs them through the table as
  // an all-zero flow (its datapath then fails to execute them, logged only).
  for (size_t len : {0u, 1u, 13u}) {
    st = bridge_->PacketOut(5, std::vector<uint8_t>(syn.begin(), syn.begin() + len));
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << len << ": " << st;
    EXPECT_NE(st.message().find("shorter than an Ethernet header"), std::string::npos) << st;
  }
  // More than one OpenFlow message can carry.
  st = bridge_->PacketOut(5, std::vector<uint8_t>(65472, 0x52));
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_NE(st.message().find("does not fit an OpenFlow message"), std::string::npos) << st;

  EXPECT_EQ(PacketsOf(ovs_, "cookie=0x5eedffff/-1"), 0u);
  // The connection is still good: a frame of just a header goes through.
  ASSERT_TRUE(bridge_->PacketOut(5, std::vector<uint8_t>(syn.begin(), syn.begin() + 14)).ok());
  EXPECT_EQ(PacketsOf(ovs_, "cookie=0x5eedffff/-1"), 1u);
}

TEST(OpenFlowBridgeNoSwitch, ConnectFailsWithTarget) {
  auto br = OpenFlowBridge::Connect("unix:/nonexistent/br0.mgmt", std::chrono::milliseconds(200));
  ASSERT_FALSE(br.ok());
  EXPECT_NE(br.status().message().find("/nonexistent/br0.mgmt"), std::string::npos) << br.status();
}

}  // namespace
}  // namespace dfw::ovs
