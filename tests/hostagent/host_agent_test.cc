// HostAgent's ordering rules, with fake edges (fake_edges.h) that record one
// sequence of calls: dataplane before flows, flows before RemoveVNic, exports
// before the inventory removal, imports before flows, no-flood before flows,
// no Hello before the inventories are read, session restart when the
// dataplane lost its state, fail closed while the dataplane is down.
#include "dfw/hostagent/host_agent.h"

#include <gtest/gtest.h>

#include <thread>

#include "fake_edges.h"

namespace dfw::hostagent {
namespace {

using testing::CallLog;
using testing::FakeController;
using testing::FakeDataplane;
using testing::FakeEdgeSet;
using testing::FakeLibvirt;
using testing::FakeOvs;
using testing::Row;

constexpr char kVmA[] = "11111111-0000-0000-0000-00000000000a";
constexpr char kVmB[] = "11111111-0000-0000-0000-00000000000b";

Domain Dom(std::string uuid, std::string iface_id, std::string mac, std::string ip) {
  Domain d;
  d.uri = "test:///x";
  d.uuid = uuid;
  d.name = "vm-" + uuid.substr(uuid.size() - 1);
  d.interfaces = {{std::move(mac), "bridge", "", std::move(iface_id), {std::move(ip)}}};
  return d;
}

v1::ConnectionEntry Entry(uint32_t port) {
  v1::ConnectionEntry e;
  e.set_protocol(6);
  e.set_src_ip(std::string("\xc6\x12\x00\x0b", 4));
  e.set_dst_ip(std::string("\xc6\x12\x00\x0c", 4));
  e.set_src_port(port);
  e.set_dst_port(443);
  return e;
}

class HostAgentTest : public ::testing::Test {
 protected:
  void SetUp() override { Make(); }

  void Make(std::chrono::milliseconds resync = std::chrono::hours(1),
            std::chrono::milliseconds import_ttl = std::chrono::seconds(60),
            std::vector<std::string> firewall_ports = {"fw0"}) {
    agent_.reset();
    FakeEdgeSet e(&log_);
    dp_ = e.dp;
    ovs_ = e.ovs;
    lv_ = e.lv;
    ctl_ = e.ctl;
    HostAgentConfig cfg;
    cfg.host_id = "host-a";
    cfg.firewall_ports = firewall_ports;
    cfg.resync_interval = resync;
    cfg.import_ttl = import_ttl;
    agent_ = std::make_unique<HostAgent>(cfg, std::move(e.edges));
    ASSERT_TRUE(agent_->StartEdges().ok());
    ovs_->rows.clear();
    for (size_t k = 0; k < firewall_ports.size(); ++k)
      ovs_->rows.push_back(Row(firewall_ports[k], "", "", static_cast<int64_t>(k + 1)));
  }
  // The actions of the installed flow that takes what vNIC port `ofport`
  // sends to the dataplane ("mod_vlan_vid:<id>,output:<firewall port>").
  std::string EgressActions(uint32_t ofport) const {
    for (const ovs::FlowSpec& f : ovs_->flows) {
      if (f.table == 0 && f.match == "in_port=" + std::to_string(ofport) &&
          f.actions.rfind("mod_vlan_vid", 0) == 0)
        return f.actions;
    }
    return "";
  }

  // VM a: vNIC "vnic-a" on ofport 5.
  void PlugA() {
    ovs_->rows.push_back(Row("vnet5", "vnic-a", "52:54:00:00:00:0a", 5));
    lv_->domains.push_back(Dom(kVmA, "vnic-a", "52:54:00:00:00:0a", "198.18.0.10"));
  }
  void PlugB() {
    ovs_->rows.push_back(Row("vnet6", "vnic-b", "52:54:00:00:00:0b", 6));
    lv_->domains.push_back(Dom(kVmB, "vnic-b", "52:54:00:00:00:0b", "198.18.0.11"));
  }
  void UnplugPort(const std::string& iface_id) {
    std::erase_if(ovs_->rows, [&](const ovs::OvsInterface& r) { return r.iface_id == iface_id; });
  }
  void UndefineVm(const std::string& uuid) {
    std::erase_if(lv_->domains, [&](const Domain& d) { return d.uuid == uuid; });
  }
  void Import(const std::string& vm, const std::string& vnic, int n, bool last = true) {
    v1::ConnectionImport m;
    m.set_vm_id(vm);
    m.set_vnic_id(vnic);
    m.set_from_host("host-z");
    for (int i = 0; i < n; ++i) *m.add_entries() = Entry(static_cast<uint32_t>(1000 + i));
    m.set_last(last);
    ctl_->hooks.connections(m);
  }

  CallLog log_;
  FakeDataplane* dp_ = nullptr;
  FakeOvs* ovs_ = nullptr;
  FakeLibvirt* lv_ = nullptr;
  FakeController* ctl_ = nullptr;
  std::unique_ptr<HostAgent> agent_;
};

TEST_F(HostAgentTest, VnicGoesToTheDataplaneAndGetsNoFloodBeforeAnyFlowSteersToIt) {
  PlugA();
  agent_->Pass();
  EXPECT_TRUE(log_.InOrder({"dp.SetVnic vnic-a", "ovs.Reconcile steer=5"}));
  EXPECT_TRUE(log_.InOrder({"ovs.NoFlood 5", "ovs.Reconcile steer=5"}));
  EXPECT_TRUE(log_.InOrder({"ovs.NoFlood 1", "ovs.Reconcile steer=5"})) << "the firewall port";

  // A second vNIC later: the same order for it, nothing again for the first.
  PlugB();
  int from = log_.size();
  agent_->Pass();
  EXPECT_TRUE(log_.InOrder({"dp.SetVnic vnic-b", "ovs.Reconcile steer=5,6"}, from));
  EXPECT_TRUE(log_.InOrder({"ovs.NoFlood 6", "ovs.Reconcile steer=5,6"}, from));
  EXPECT_EQ(log_.Find("dp.SetVnic vnic-a", from), -1);
  EXPECT_EQ(log_.Find("ovs.NoFlood 5", from), -1);
}

// A firewall port per dataplane worker: each vNIC goes to its owner's port
// (local id % ports), and never to a port the dataplane does not read.
TEST_F(HostAgentTest, VnicsAreSteeredToTheirOwnersFirewallPortOfThoseTheDataplaneReads) {
  Make(std::chrono::hours(1), std::chrono::seconds(60), {"fw0", "fw1"});  // ofports 1, 2
  dp_->firewall_ports = 2;
  PlugA();  // ofport 5: worker 1
  PlugB();  // ofport 6: worker 0
  agent_->Pass();
  EXPECT_EQ(EgressActions(5), "mod_vlan_vid:5,output:2");
  EXPECT_EQ(EgressActions(6), "mod_vlan_vid:6,output:1");
  EXPECT_TRUE(log_.InOrder({"ovs.NoFlood 2", "ovs.Reconcile steer=5,6"})) << "fw1 too";

  // The dataplane restarted with one port (its workers share it): fw1 is
  // read by nobody, so everything goes to fw0.
  dp_->firewall_ports = 1;
  dp_->instance_id = 2;
  agent_->Pass();
  EXPECT_EQ(EgressActions(5), "mod_vlan_vid:5,output:1");
  EXPECT_EQ(EgressActions(6), "mod_vlan_vid:6,output:1");
}

TEST_F(HostAgentTest, IsolatedVmPortGetsNoFloodButNoSteeringAndUplinksKeepFlooding) {
  PlugA();
  // A VM's port without an iface-id (cannot be steered): isolated. NORMAL
  // must not flood to it either (broadcasts, unknown unicast).
  ovs::OvsInterface isolated = Row("vnet7", "", "52:54:00:00:00:0c", 7);
  isolated.vm_uuid = "11111111-0000-0000-0000-00000000000c";
  ovs_->rows.push_back(isolated);
  ovs_->rows.push_back(Row("uplink0", "", "", 9));  // provider network: floods go there
  agent_->Pass();
  EXPECT_TRUE(log_.InOrder({"ovs.NoFlood 7", "ovs.Reconcile steer=5"})) << log_.Dump();
  EXPECT_EQ(log_.Find("ovs.NoFlood 9"), -1) << "an uplink keeps NORMAL's floods";
  EXPECT_EQ(log_.Count("dp.SetVnic"), 1) << "only vnic-a is a vNIC";
  EXPECT_GE(log_.Find("dp.SetVnic vnic-a"), 0);
}

TEST_F(HostAgentTest, NoFloodAgainOnEveryVnicPortAfterOpenFlowReconnectedBeforeTheFlows) {
  Make(std::chrono::milliseconds(1));
  PlugA();
  PlugB();
  agent_->Pass();
  ASSERT_EQ(log_.Count("ovs.NoFlood 5"), 1) << log_.Dump();
  // ovs-vswitchd restarted: the next reconcile fails on the old connection.
  ovs_->fail_next_reconcile = true;
  std::this_thread::sleep_for(std::chrono::milliseconds(5));  // the dump is due
  int from = log_.size();
  agent_->Pass();
  ASSERT_TRUE(log_.InOrder({"ovs.Reconcile failed", "ovs.Connect"}, from));
  int connect = log_.Find("ovs.Connect", from);
  for (const char* port : {"ovs.NoFlood 1", "ovs.NoFlood 5", "ovs.NoFlood 6"}) {
    EXPECT_TRUE(log_.InOrder({"ovs.Connect", port, "ovs.Reconcile steer=5,6"}, connect));
  }
}

TEST_F(HostAgentTest, VnicLeavingExportsThenRemovesFlowsThenRemovesItFromTheDataplane) {
  PlugA();
  PlugB();
  for (uint32_t i = 0; i < 20000; ++i) dp_->conns["vnic-a"].push_back(Entry(i));
  agent_->Pass();
  ASSERT_GE(log_.Find("ctl.Inventory " + std::string(kVmA) + "," + kVmB), 0) << log_.Dump();

  UnplugPort("vnic-a");  // live migration: the port and the domain go
  UndefineVm(kVmA);
  int from = log_.size();
  agent_->Pass();
  int e1 = log_.Find(absl::StrCat("ctl.Export ", kVmA, " vnic-a 8192"), from);
  int e2 = log_.Find(absl::StrCat("ctl.Export ", kVmA, " vnic-a 8192"), e1 + 1);
  int e3 = log_.Find(absl::StrCat("ctl.Export ", kVmA, " vnic-a 3616 last total=20000"), from);
  int flows = log_.Find("ovs.Reconcile steer=6", from);
  int removed = log_.Find("dp.RemoveVnic vnic-a", from);
  int inventory = log_.Find("ctl.Inventory " + std::string(kVmB), from);
  ASSERT_GE(e1, 0) << log_.Dump();
  ASSERT_GT(e2, e1) << log_.Dump();
  ASSERT_GT(e3, e2) << log_.Dump();
  ASSERT_GE(flows, 0) << log_.Dump();
  EXPECT_LT(flows, removed) << "its flows go first";
  EXPECT_LT(e3, removed) << "exported before RemoveVNic";
  EXPECT_LT(e3, inventory) << "exported before the update that removes the VM";
  EXPECT_EQ(log_.Count("dp.Export"), 1);
  // The entries arrive whole and in order.
  std::vector<v1::ConnectionEntry> got;
  for (const auto& m : ctl_->exports)
    for (const auto& e : m.entries()) got.push_back(e);
  ASSERT_EQ(got.size(), 20000u);
  for (uint32_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i].src_port(), i);
  EXPECT_EQ(agent_->migration_stats().exports, 1u);
  EXPECT_EQ(agent_->migration_stats().entries_exported, 20000u);
}

TEST_F(HostAgentTest, VnicWithoutConnectionsSendsOneEmptyLastChunk) {
  PlugA();
  agent_->Pass();
  UnplugPort("vnic-a");
  agent_->Pass();
  EXPECT_GE(log_.Find(absl::StrCat("ctl.Export ", kVmA, " vnic-a 0 last total=0")), 0)
      << log_.Dump();
}

TEST_F(HostAgentTest, ExportFailureIsCountedAndTheVnicIsStillRemoved) {
  PlugA();
  agent_->Pass();
  dp_->export_fails = true;
  UnplugPort("vnic-a");
  UndefineVm(kVmA);
  agent_->Pass();
  EXPECT_GE(log_.Find("dp.RemoveVnic vnic-a"), 0) << log_.Dump();
  EXPECT_GE(log_.Find("ctl.Inventory "), 0) << log_.Dump();
  EXPECT_EQ(log_.Count("ctl.Export"), 0);
  EXPECT_EQ(agent_->migration_stats().export_failures, 1u);
}

TEST_F(HostAgentTest, VmLeavingLibvirtWithItsPortStillThereExportsOnceBeforeTheInventoryUpdate) {
  PlugA();
  dp_->conns["vnic-a"] = {Entry(1), Entry(2)};
  agent_->Pass();
  UndefineVm(kVmA);  // the domain goes; the port stays on the bridge
  int from = log_.size();
  agent_->Pass();
  int exp = log_.Find(absl::StrCat("ctl.Export ", kVmA, " vnic-a 2 last total=2"), from);
  int inventory = log_.Find("ctl.Inventory ", from);
  ASSERT_GE(exp, 0) << log_.Dump();
  EXPECT_LT(exp, inventory) << log_.Dump();
  EXPECT_EQ(log_.Find("dp.RemoveVnic vnic-a"), -1) << "still on the bridge: still steered";
  // Its port goes later: removed without a second export.
  UnplugPort("vnic-a");
  agent_->Pass();
  EXPECT_GE(log_.Find("dp.RemoveVnic vnic-a"), 0) << log_.Dump();
  EXPECT_EQ(log_.Count("dp.Export"), 1) << log_.Dump();
}

TEST_F(HostAgentTest, ImportForAVnicThatAppearsLaterGoesRightAfterItsSetVnicBeforeItsFlows) {
  PlugA();
  agent_->Pass();
  Import(kVmB, "vnic-b", 3, /*last=*/false);
  Import(kVmB, "vnic-b", 2);
  EXPECT_EQ(log_.Count("dp.Import"), 0) << "not known to the dataplane yet";
  PlugB();
  int from = log_.size();
  agent_->Pass();
  EXPECT_TRUE(
      log_.InOrder({"dp.SetVnic vnic-b", "dp.Import vnic-b 5", "ovs.Reconcile steer=5,6"}, from));
  EXPECT_EQ(dp_->imported["vnic-b"].size(), 5u);
  EXPECT_EQ(agent_->migration_stats().entries_imported, 5u);
}

TEST_F(HostAgentTest, ImportForAKnownVnicGoesAtOnceChunkByChunk) {
  PlugA();
  agent_->Pass();
  int from = log_.size();
  Import(kVmA, "vnic-a", 4, /*last=*/false);
  EXPECT_EQ(log_.Find("dp.Import vnic-a 4", from), from) << log_.Dump();
  Import(kVmA, "vnic-a", 1);
  EXPECT_EQ(dp_->imported["vnic-a"].size(), 5u);
  EXPECT_EQ(agent_->migration_stats().entries_imported, 5u);
}

TEST_F(HostAgentTest, ImportKeptForAVnicThatDoesNotComeExpires) {
  Make(std::chrono::hours(1), std::chrono::milliseconds(1));
  Import(kVmB, "vnic-b", 7);
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  agent_->Pass();
  EXPECT_EQ(agent_->migration_stats().entries_expired, 7u);
  PlugB();
  agent_->Pass();
  EXPECT_EQ(log_.Count("dp.Import"), 0) << log_.Dump();
}

TEST_F(HostAgentTest, ImportsKeptForAtMost64Vnics) {
  for (int i = 0; i < 64; ++i) Import(kVmB, "vnic-" + std::to_string(i), 1);
  EXPECT_EQ(agent_->migration_stats().entries_rejected, 0u);
  Import(kVmB, "vnic-64", 3);
  EXPECT_EQ(agent_->migration_stats().entries_rejected, 3u);
}

// The Hello names the revision the dataplane holds and the digests of what
// it holds, so a controller that did not send it (restarted, failed over)
// can answer with a delta; holding nothing, neither.
TEST_F(HostAgentTest, HelloCarriesTheHeldRevisionAndTheDigestsOfWhatIsHeld) {
  PlugA();
  agent_->Pass();
  dp_->revision = 12;
  auto* r = dp_->held.add_rulesets();
  r->set_id("vnic-a");
  r->set_digest(std::string(32, 'r'));
  auto* s = dp_->held.add_address_sets();
  s->set_id("g:web");
  s->set_digest(std::string(32, 's'));
  v1::HostHello hello = ctl_->hooks.hello();
  EXPECT_EQ(hello.held_revision(), 12u);
  EXPECT_EQ(hello.held().SerializeAsString(), dp_->held.SerializeAsString());
  ASSERT_EQ(hello.vms_size(), 1);

  dp_->revision = 0;
  hello = ctl_->hooks.hello();
  EXPECT_EQ(hello.held_revision(), 0u);
  EXPECT_FALSE(hello.has_held());

  dp_->down = true;  // unreachable: holds nothing the controller can count on
  hello = ctl_->hooks.hello();
  EXPECT_EQ(hello.held_revision(), 0u);
  EXPECT_FALSE(hello.has_held());
  dp_->down = false;

  // A delta the dataplane refused: the next Hello asks for a full state (no
  // digests, which would bring a delta again); once a full state is
  // applied, digests again.
  dp_->revision = 12;
  dp_->refuse_deltas = true;
  v1::ControllerToHost delta;
  delta.mutable_delta()->set_from_revision(12);
  delta.mutable_delta()->set_to_revision(13);
  EXPECT_FALSE(ctl_->hooks.apply(delta).ok());
  hello = ctl_->hooks.hello();
  EXPECT_EQ(hello.held_revision(), 12u);
  EXPECT_FALSE(hello.has_held());
  v1::ControllerToHost full;
  full.mutable_full()->set_revision(14);
  ASSERT_TRUE(ctl_->hooks.apply(full).ok());
  hello = ctl_->hooks.hello();
  EXPECT_EQ(hello.held_revision(), 14u);
  EXPECT_TRUE(hello.has_held());
}

TEST_F(HostAgentTest, SessionRestartsWhenTheDataplaneLostItsState) {
  PlugA();
  dp_->revision = 7;
  ctl_->acked = 7;
  agent_->Pass();
  EXPECT_EQ(log_.Count("ctl.Restart"), 0);

  // Restarted between two passes (a new instance) from its persisted state:
  // it holds what was acked, nothing to do.
  dp_->instance_id = 2;
  agent_->Pass();
  EXPECT_EQ(log_.Count("ctl.Restart"), 0) << log_.Dump();

  // Restarted again without its state: revision 0 < 7 acked.
  dp_->instance_id = 3;
  dp_->revision = 0;
  dp_->vnics.clear();
  int from = log_.size();
  agent_->Pass();
  EXPECT_GE(log_.Find("ctl.Restart", from), 0) << log_.Dump();
  EXPECT_GE(log_.Find("dp.SetVnic vnic-a", from), 0) << "the lost vNIC is pushed again";

  // Seen down, then back with less than was acked.
  ctl_->acked = 9;
  dp_->revision = 9;
  agent_->Pass();
  dp_->down = true;
  agent_->Pass();
  dp_->down = false;
  dp_->revision = 4;
  from = log_.size();
  agent_->Pass();
  EXPECT_GE(log_.Find("ctl.Restart", from), 0) << log_.Dump();
}

TEST_F(HostAgentTest, NothingInTheDataplaneIsOverwrittenBeforeEveryLibvirtUriSynced) {
  // The dataplane has vnic-a with its address (persisted); libvirt is not
  // read yet, so the view has vnic-a without it.
  v1::DataplaneVNic had;
  had.set_id("vnic-a");
  had.set_local_id(5);
  had.set_mac("52:54:00:00:00:0a");
  had.add_bound_ips("198.18.0.10");
  dp_->vnics["vnic-a"] = had;
  ovs_->rows.push_back(Row("vnet5", "vnic-a", "52:54:00:00:00:0a", 5));
  ovs_->rows.push_back(Row("vnet6", "vnic-b", "52:54:00:00:00:0b", 6));
  lv_->is_synced = false;
  agent_->Pass();
  EXPECT_EQ(log_.Find("dp.SetVnic vnic-a"), -1) << log_.Dump();
  EXPECT_GE(log_.Find("dp.SetVnic vnic-b"), 0) << "a new vNIC goes (steered, fail closed)";
  EXPECT_EQ(dp_->vnics["vnic-a"].bound_ips_size(), 1);
  EXPECT_EQ(log_.Count("dp.RemoveVnic"), 0);
  // Synced, with another address: now it is updated.
  lv_->domains.push_back(Dom(kVmA, "vnic-a", "52:54:00:00:00:0a", "198.18.0.20"));
  lv_->is_synced = true;
  agent_->Pass();
  EXPECT_GE(log_.Find("dp.SetVnic vnic-a"), 0) << log_.Dump();
  ASSERT_EQ(dp_->vnics["vnic-a"].bound_ips_size(), 1);
  EXPECT_EQ(dp_->vnics["vnic-a"].bound_ips(0), "198.18.0.20");
}

TEST_F(HostAgentTest, NoHelloBeforeOvsdbAndLibvirtSynced) {
  PlugA();
  ovs_->is_synced = false;
  lv_->is_synced = false;
  agent_->Pass();
  EXPECT_EQ(log_.Count("ctl.Start"), 0);
  ovs_->is_synced = true;
  agent_->Pass();
  EXPECT_EQ(log_.Count("ctl.Start"), 0) << "libvirt not read yet";
  lv_->is_synced = true;
  agent_->Pass();
  EXPECT_EQ(log_.Count("ctl.Start"), 1);
  EXPECT_GE(log_.Find(std::string("ctl.Hello ") + kVmA), 0) << log_.Dump();
  agent_->Pass();
  EXPECT_EQ(log_.Count("ctl.Start"), 1) << "started once";
}

TEST_F(HostAgentTest, DataplaneDownIsRetriedAndTheFlowsAreStillInstalled) {
  PlugA();
  dp_->down = true;
  agent_->Pass();
  EXPECT_EQ(log_.Count("dp.SetVnic"), 0);
  EXPECT_GE(log_.Find("ovs.Reconcile steer=5"), 0) << "fail closed: " << log_.Dump();
  agent_->Pass();
  dp_->down = false;
  agent_->Pass();
  EXPECT_GE(log_.Find("dp.SetVnic vnic-a"), 0) << log_.Dump();
}

// The exclusion list: a vNIC whose ruleset the dataplane holds as excluded
// is steered past the dataplane (its unicast delivered straight to its
// port, nothing of it to the firewall port), and its port floods again only
// after those flows are in; taken off the list, no-flood comes back before
// the flows that steer it through the dataplane again. While the dataplane
// is unreachable, the last list it gave stays in force.
TEST_F(HostAgentTest, AnExcludedVnicBypassesTheDataplaneAndFloodsOnlyOnceItsFlowsAreIn) {
  PlugA();
  PlugB();
  agent_->Pass();
  ASSERT_EQ(EgressActions(5), "mod_vlan_vid:5,output:1");
  auto direct_to = [&](const std::string& mac) {
    for (const ovs::FlowSpec& f : ovs_->flows) {
      if (f.table == 1 && f.match == "dl_dst=" + mac) return f.actions;
    }
    return std::string();
  };
  auto ruleset = [](const std::string& vnic, bool excluded) {
    v1::VNicRuleset rs;
    rs.set_vnic_id(vnic);
    rs.set_excluded(excluded);
    if (excluded) rs.mutable_default_rule()->set_action(v1::ACTION_ALLOW);
    return rs;
  };
  v1::ControllerToHost full;
  full.mutable_full()->set_revision(7);
  *full.mutable_full()->add_rulesets() = ruleset("vnic-a", true);
  *full.mutable_full()->add_rulesets() = ruleset("vnic-b", false);
  ASSERT_TRUE(ctl_->hooks.apply(full).ok());
  int from = log_.size();
  agent_->Pass();
  EXPECT_EQ(EgressActions(5), "") << "nothing of vnic-a goes to the dataplane";
  EXPECT_EQ(direct_to("52:54:00:00:00:0a"), "output:5");
  EXPECT_EQ(EgressActions(6), "mod_vlan_vid:6,output:1") << "vnic-b stays protected";
  EXPECT_TRUE(log_.InOrder({"ovs.Reconcile steer=6", "ovs.Flood 5"}, from)) << log_.Dump();
  EXPECT_EQ(log_.Find("ovs.Flood 6", from), -1);
  EXPECT_EQ(agent_->Metrics().vnics_excluded, 1u);
  EXPECT_EQ(agent_->Metrics().vnics_steered, 1u);

  // Unreachable dataplane: the bypass stays (the excluded VM keeps talking).
  dp_->down = true;
  from = log_.size();
  agent_->Pass();
  EXPECT_EQ(EgressActions(5), "");
  EXPECT_EQ(log_.Find("ovs.NoFlood 5", from), -1);
  dp_->down = false;

  // Off the list: no-flood first, then the flows through the dataplane.
  v1::ControllerToHost delta;
  delta.mutable_delta()->set_from_revision(7);
  delta.mutable_delta()->set_to_revision(8);
  *delta.mutable_delta()->add_rulesets_set() = ruleset("vnic-a", false);
  ASSERT_TRUE(ctl_->hooks.apply(delta).ok());
  from = log_.size();
  agent_->Pass();
  EXPECT_TRUE(log_.InOrder({"ovs.NoFlood 5", "ovs.Reconcile steer=5,6"}, from)) << log_.Dump();
  EXPECT_EQ(EgressActions(5), "mod_vlan_vid:5,output:1");
  EXPECT_EQ(agent_->Metrics().vnics_excluded, 0u);
}

}  // namespace
}  // namespace dfw::hostagent

namespace dfw::hostagent {
namespace {

// The controller's FlowWatch (the session's flow_watch hook) starts the
// agent's relay thread: the dataplane's records reach the controller edge
// until the controller says stop or the session ends (hook false).
TEST_F(HostAgentTest, FlowWatchRelaysTheDataplanesRecordsUntilStopped) {
  ASSERT_TRUE(ctl_->hooks.flow_watch) << "StartEdges gives the session a flow_watch hook";
  dp_->flows.Produce(4);  // before the watch: not sent
  ctl_->hooks.flow_watch(true);
  auto records = [&] {
    uint64_t n = 0;
    for (const auto& b : ctl_->batches()) n += static_cast<uint64_t>(b.records_size());
    return n;
  };
  // The relay positions itself on its first round (every 100 ms); records
  // produced from then on are sent.
  for (int i = 0; i < 100 && records() < 3; ++i) {
    dp_->flows.Produce(1);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_GE(records(), 3u);
  for (const auto& b : ctl_->batches()) {
    for (const auto& r : b.records()) EXPECT_GT(r.seq(), 4u);
  }
  ctl_->hooks.flow_watch(false);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const uint64_t stopped_at = records();
  dp_->flows.Produce(10);
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  EXPECT_EQ(records(), stopped_at);
}

// With the agent's own thread (Start): the session's Apply of a revision
// that excludes a vNIC returns (and the revision is acked) only once a pass
// has steered the vNIC past the dataplane and its port floods again.
TEST(HostAgentThreadTest, ARevisionChangingTheExclusionListIsAckedOnlyOnceSteeringMatchesIt) {
  CallLog log;
  FakeEdgeSet e(&log);
  e.ovs->rows = {Row("fw0", "", "", 1), Row("vnet5", "vnic-a", "52:54:00:00:00:0a", 5)};
  e.lv->domains = {Dom(kVmA, "vnic-a", "52:54:00:00:00:0a", "198.18.0.10")};
  FakeController* ctl = e.ctl;
  HostAgentConfig cfg;
  cfg.host_id = "host-a";
  cfg.firewall_ports = {"fw0"};
  cfg.resync_interval = std::chrono::hours(1);  // passes only when something changed
  HostAgent agent(cfg, std::move(e.edges));
  ASSERT_TRUE(agent.Start().ok());
  for (int i = 0; i < 500 && log.Find("ovs.Reconcile steer=5") < 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_GE(log.Find("ovs.Reconcile steer=5"), 0) << log.Dump();
  v1::ControllerToHost full;
  full.mutable_full()->set_revision(3);
  auto* rs = full.mutable_full()->add_rulesets();
  rs->set_vnic_id("vnic-a");
  rs->set_excluded(true);
  rs->mutable_default_rule()->set_action(v1::ACTION_ALLOW);
  auto applied = ctl->hooks.apply(full);
  ASSERT_TRUE(applied.ok()) << applied.status();
  EXPECT_EQ(*applied, 3u);
  EXPECT_TRUE(log.InOrder({"dp.SetState 3", "ovs.Reconcile steer=", "ovs.Flood 5"})) << log.Dump();
  agent.Stop();
}

}  // namespace
}  // namespace dfw::hostagent
