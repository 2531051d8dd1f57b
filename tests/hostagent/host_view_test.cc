// ComputeHostView: the join of libvirt's domains with OVS's Interface rows.
#include "dfw/hostagent/host_view.h"

#include <gtest/gtest.h>

#include "fake_edges.h"

namespace dfw::hostagent {
namespace {

ovs::OvsInterface Row(std::string name, std::string iface_id, std::string mac, std::string vm,
                      int64_t ofport) {
  ovs::OvsInterface r = testing::Row(std::move(name), std::move(iface_id), std::move(mac), ofport);
  r.vm_uuid = std::move(vm);
  return r;
}

Domain Dom(std::string uuid, std::string name, std::vector<DomainInterface> ifs,
           std::vector<DomainTag> tags = {}) {
  Domain d;
  d.uri = "test:///x";
  d.uuid = std::move(uuid);
  d.name = std::move(name);
  d.interfaces = std::move(ifs);
  d.tags = std::move(tags);
  return d;
}

TEST(HostView, JoinsByInterfaceIdAndByVmUuidAndMac) {
  std::vector<Domain> doms = {
      Dom("11111111-0000-0000-0000-000000000001", "web",
          {{"52:54:00:00:00:01", "bridge", "vnet0", "vnic-web", {"198.18.0.11"}}},
          {{"app", "web"}}),
      // No interface id in libvirt: joined through vm-uuid + attached-mac.
      Dom("11111111-0000-0000-0000-000000000002", "db",
          {{"52:54:00:00:00:02", "vhostuser", "", "", {"198.18.0.12"}}}, {{"app", "db"}}),
  };
  std::vector<ovs::OvsInterface> rows = {
      Row("fw0", "", "", "", 1), Row("vnet0", "vnic-web", "52:54:00:00:00:01", "", 5),
      Row("vhu-db", "vnic-db", "52:54:00:00:00:02", "11111111-0000-0000-0000-000000000002", 6),
      Row("uplink", "", "", "", 2),  // no iface-id: not a vNIC
  };
  HostView v = ComputeHostView(doms, rows, {"fw0"}, "host-a");
  EXPECT_TRUE(v.errors.empty());
  EXPECT_EQ(v.firewall_ofports, std::vector<int64_t>{1});
  ASSERT_EQ(v.vnics.size(), 2u);
  EXPECT_EQ(v.vnics[0].id(), "vnic-db");
  EXPECT_EQ(v.vnics[0].local_id(), 6u);
  ASSERT_EQ(v.vnics[0].bound_ips_size(), 1);
  EXPECT_EQ(v.vnics[0].bound_ips(0), "198.18.0.12");
  EXPECT_EQ(v.vnics[1].id(), "vnic-web");
  EXPECT_EQ(v.vnics[1].local_id(), 5u);
  EXPECT_EQ(v.steering.firewall_ofports, std::vector<uint32_t>{1});
  ASSERT_EQ(v.steering.vnics.size(), 2u);
  EXPECT_EQ(v.steering.vnics[0].ofport, 6u);
  EXPECT_EQ(v.steering.vnics[0].local_id, 6);

  ASSERT_EQ(v.vms.size(), 2u);
  const v1::Vm& db = v.vms[1];
  EXPECT_EQ(db.name(), "db");
  EXPECT_EQ(db.host(), "host-a");
  ASSERT_EQ(db.vnics_size(), 1);
  EXPECT_EQ(db.vnics(0).id(), "vnic-db");  // the OVS row's iface-id
  EXPECT_EQ(db.vnics(0).ovs_port(), "vhu-db");
  ASSERT_EQ(db.vnics(0).addresses_size(), 1);
  EXPECT_EQ(db.vnics(0).addresses(0).source(), v1::ADDRESS_SOURCE_LIBVIRT);
  ASSERT_EQ(db.tags_size(), 1);
  EXPECT_EQ(db.tags(0).value(), "db");
}

TEST(HostView, UnknownPortsAreSteeredWithoutAddressesNeverLeftOut) {
  // A port with an iface-id that libvirt does not know: steered (the
  // dataplane drops its traffic, it has no rules), not reported as a VM.
  std::vector<ovs::OvsInterface> rows = {Row("fw0", "", "", "", 3),
                                         Row("stray", "vnic-x", "52:54:00:AA:BB:CC", "", 9)};
  HostView v = ComputeHostView({}, rows, {"fw0"}, "h");
  ASSERT_EQ(v.vnics.size(), 1u);
  EXPECT_EQ(v.vnics[0].mac(), "52:54:00:aa:bb:cc");
  EXPECT_EQ(v.vnics[0].bound_ips_size(), 0);
  EXPECT_TRUE(v.vms.empty());
}

TEST(HostView, PortsThatCannotBeSteeredAreNamedInErrors) {
  std::vector<ovs::OvsInterface> rows = {
      Row("fw0", "", "", "", 3),
      Row("big", "vnic-big", "52:54:00:00:00:09", "", 4000),  // above 2047
      Row("nomac", "vnic-nomac", "", "", 7),
      Row("unplugged", "vnic-u", "52:54:00:00:00:08", "", -1),  // no ofport yet: skipped
  };
  HostView v = ComputeHostView({}, rows, {"fw0"}, "h");
  EXPECT_TRUE(v.vnics.empty());
  ASSERT_EQ(v.errors.size(), 2u);
  // Not left to NORMAL: OVS drops what they send.
  EXPECT_EQ(v.steering.isolated_ofports, (std::vector<uint32_t>{4000, 7}));
  EXPECT_NE(v.errors[0].find("ofport 4000"), std::string::npos) << v.errors[0];
  EXPECT_NE(v.errors[1].find("no MAC"), std::string::npos) << v.errors[1];
}

TEST(HostView, PortsWithoutIfaceIdPassAsUplinksUnlessTheySayTheyAreAVm) {
  std::vector<ovs::OvsInterface> rows = {
      Row("fw0", "", "", "", 3),
      Row("eth1", "", "", "", 12),                     // uplink
      Row("br0", "", "", "", ovs::kLocalOfport),       // the bridge's LOCAL port
      Row("eth2", "", "", "", 2),                      // second uplink
      Row("eth3", "", "", "", -1),                     // no ofport yet: skipped
      Row("vm-noid", "", "52:54:00:00:00:0a", "", 8),  // a VM's port, no iface-id
      Row("vm-noid2", "", "", "33333333-0000-0000-0000-000000000001", 9),
      Row("odd", "", "", "", 0xff00),  // reserved number
      Row("vnet0", "vnic-a", "52:54:00:00:00:01", "", 5),
  };
  HostView v = ComputeHostView({}, rows, {"fw0"}, "h");
  EXPECT_EQ(v.steering.uplink_ofports, (std::vector<uint32_t>{2, 12, ovs::kLocalOfport}));
  EXPECT_EQ(v.steering.isolated_ofports, (std::vector<uint32_t>{8, 9}));
  ASSERT_EQ(v.errors.size(), 3u);
  EXPECT_NE(v.errors[0].find("'vm-noid'"), std::string::npos) << v.errors[0];
  EXPECT_NE(v.errors[0].find("no iface-id"), std::string::npos) << v.errors[0];
  EXPECT_NE(v.errors[2].find("ofport 65280"), std::string::npos) << v.errors[2];
  ASSERT_EQ(v.steering.vnics.size(), 1u);
  // The steering computed from the view is valid: every port in one role.
  auto flows = ovs::ComputeSteeringFlows(v.steering);
  ASSERT_TRUE(flows.ok()) << flows.status();
  int passes = 0;
  for (const ovs::FlowSpec& f : *flows) passes += f.actions == "resubmit(,1)";
  EXPECT_EQ(passes, 3);  // eth2, eth1, LOCAL
}

TEST(HostView, NoFirewallPortMeansNothingToSteerTo) {
  HostView v = ComputeHostView({}, {Row("a", "vnic-a", "52:54:00:00:00:01", "", 4)}, {"fw0"}, "h");
  EXPECT_EQ(v.firewall_ofports, std::vector<int64_t>{-1});
  EXPECT_TRUE(v.steering.firewall_ofports.empty());
  EXPECT_EQ(v.vnics.size(), 1u);
}

// One firewall port per dataplane worker: none of them is a vNIC, and
// steering waits until every one of them has an ofport.
TEST(HostView, SeveralFirewallPortsAreSteeredToOnlyWhenAllHaveOfports) {
  std::vector<ovs::OvsInterface> rows = {Row("fw0", "", "", "", 1),
                                         Row("vnet0", "vnic-a", "52:54:00:00:00:01", "", 5),
                                         Row("fw1", "", "", "", -1)};
  HostView v = ComputeHostView({}, rows, {"fw0", "fw1"}, "h");
  EXPECT_EQ(v.firewall_ofports, (std::vector<int64_t>{1, -1}));
  EXPECT_TRUE(v.steering.firewall_ofports.empty());
  EXPECT_TRUE(v.steering.uplink_ofports.empty());  // fw1 is not an uplink
  rows[2].ofport = 2;
  v = ComputeHostView({}, rows, {"fw0", "fw1"}, "h");
  EXPECT_EQ(v.steering.firewall_ofports, (std::vector<uint32_t>{1, 2}));
  ASSERT_EQ(v.vnics.size(), 1u);
  EXPECT_EQ(v.vnics[0].id(), "vnic-a");
  EXPECT_TRUE(v.steering.uplink_ofports.empty());
}

TEST(HostView, InterfacesNotOnTheBridgeAreReportedOnlyWithAnId) {
  std::vector<Domain> doms = {Dom("22222222-0000-0000-0000-000000000001", "vm",
                                  {{"52:54:00:00:00:01", "bridge", "", "vnic-1", {}},
                                   {"52:54:00:00:00:02", "network", "", "", {}}})};
  HostView v = ComputeHostView(doms, {}, {"fw0"}, "h");
  ASSERT_EQ(v.vms.size(), 1u);
  ASSERT_EQ(v.vms[0].vnics_size(), 1);
  EXPECT_EQ(v.vms[0].vnics(0).id(), "vnic-1");
  EXPECT_TRUE(v.vnics.empty());
}

}  // namespace
}  // namespace dfw::hostagent
