// ComputeSteeringFlows and CanonicalFlow without a running OVS (the canonical
// form goes through libopenvswitch's parser and OF1.3 encoder in-process).
#include "dfw/ovs/steering_flows.h"

#include <gtest/gtest.h>

#include <set>

#include "dfw/ovs/openflow_bridge.h"

namespace dfw::ovs {
namespace {

SteeringConfig OneVnic() { return {1, {{5, 7, "52:54:00:00:00:05"}}}; }

TEST(SteeringFlows, OneVnicGivesDesign4FlowsPlusFailClosedOnes) {
  absl::StatusOr<std::vector<FlowSpec>> flows = ComputeSteeringFlows(OneVnic());
  ASSERT_TRUE(flows.ok()) << flows.status();
  std::vector<std::string> got;
  for (const FlowSpec& f : *flows) got.push_back(f.ToString());
  const std::vector<std::string> want = {
      "table=0,priority=200,cookie=0xdf305ee000000005,in_port=5,vlan_tci=0x1000/0x1000 "
      "actions=drop",
      "table=0,priority=100,cookie=0xdf305ee000000005,in_port=5 actions=mod_vlan_vid:7,output:1",
      "table=0,priority=100,cookie=0xdf305ee000000005,in_port=1,dl_vlan=7 "
      "actions=strip_vlan,load:5->NXM_OF_IN_PORT[],resubmit(,1)",
      "table=0,priority=100,cookie=0xdf305ee000000005,in_port=1,dl_vlan=2055 "
      "actions=strip_vlan,output:5",
      "table=1,priority=100,cookie=0xdf305ee000000005,dl_dst=52:54:00:00:00:05 "
      "actions=mod_vlan_vid:2055,output:1",
      "table=0,priority=10,cookie=0xdf305ee000000000,in_port=1 actions=drop",
      "table=0,priority=0,cookie=0xdf305ee000000000 actions=resubmit(,1)",
      "table=1,priority=0,cookie=0xdf305ee000000000 actions=NORMAL",
  };
  EXPECT_EQ(got, want);
}

TEST(SteeringFlows, EveryFlowCarriesOurCookiePrefix) {
  SteeringConfig c = OneVnic();
  c.vnics.push_back({6, 2047, "52:54:00:00:00:06"});
  auto flows = ComputeSteeringFlows(c);
  ASSERT_TRUE(flows.ok()) << flows.status();
  EXPECT_EQ(flows->size(), 2 * 5 + 3u);
  for (const FlowSpec& f : *flows) {
    EXPECT_EQ(f.cookie & kSteeringCookieMask, kSteeringCookieBase) << f.ToString();
  }
}

TEST(SteeringFlows, MacIsLowerCasedAndHighestLocalIdFitsAVid) {
  SteeringConfig c{1, {{6, 2047, "52:54:00:AB:CD:EF"}}};
  auto flows = ComputeSteeringFlows(c);
  ASSERT_TRUE(flows.ok()) << flows.status();
  bool seen = false;
  for (const FlowSpec& f : *flows) {
    if (f.table == 1 && f.priority == kPrioritySteer) {
      EXPECT_EQ(f.match, "dl_dst=52:54:00:ab:cd:ef");
      EXPECT_EQ(f.actions, "mod_vlan_vid:4095,output:1");  // 2047 | 0x800
      seen = true;
    }
  }
  EXPECT_TRUE(seen);
}

TEST(SteeringFlows, NoVnicsLeavesBridgeDefaultsOnly) {
  auto flows = ComputeSteeringFlows({3, {}});
  ASSERT_TRUE(flows.ok()) << flows.status();
  EXPECT_EQ(flows->size(), 3u);
}

void ExpectInvalid(const SteeringConfig& c, const std::string& says) {
  auto flows = ComputeSteeringFlows(c);
  ASSERT_FALSE(flows.ok());
  EXPECT_EQ(flows.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(flows.status().message().find(says), std::string::npos) << flows.status();
}

TEST(SteeringFlows, InvalidConfigsAreRejectedWithTheReason) {
  ExpectInvalid({0, {}}, "firewall_ofport 0");
  ExpectInvalid({0xff00, {}}, "firewall_ofport");
  ExpectInvalid({1, {{1, 7, "52:54:00:00:00:05"}}}, "the firewall port's");
  ExpectInvalid({1, {{0, 7, "52:54:00:00:00:05"}}}, "not a port number");
  ExpectInvalid({1, {{5, 0, "52:54:00:00:00:05"}}}, "local id must be in 1..2047");
  ExpectInvalid({1, {{5, 2048, "52:54:00:00:00:05"}}}, "local id must be in 1..2047");
  ExpectInvalid({1, {{5, 7, "52:54:00:00:05"}}}, "not a unicast MAC");
  ExpectInvalid({1, {{5, 7, "52-54-00-00-00-05"}}}, "not a unicast MAC");
  ExpectInvalid({1, {{5, 7, "01:00:5e:00:00:01"}}}, "not a unicast MAC");
  ExpectInvalid({1, {{5, 7, "ff:ff:ff:ff:ff:ff"}}}, "not a unicast MAC");
  ExpectInvalid({1, {{5, 7, "00:00:00:00:00:00"}}}, "not a unicast MAC");
  ExpectInvalid({1, {{5, 7, "52:54:00:00:00:05"}, {5, 8, "52:54:00:00:00:06"}}},
                "ofport listed twice");
  ExpectInvalid({1, {{5, 7, "52:54:00:00:00:05"}, {6, 7, "52:54:00:00:00:06"}}},
                "local id used by another vNIC");
  ExpectInvalid({1, {{5, 7, "52:54:00:00:00:05"}, {6, 8, "52:54:00:00:00:05"}}},
                "mac used by another vNIC");
}

TEST(SteeringFlows, PortsThatCannotBeSteeredSendNothing) {
  SteeringConfig c = OneVnic();
  c.isolated_ofports = {9};
  auto flows = ComputeSteeringFlows(c);
  ASSERT_TRUE(flows.ok()) << flows.status();
  int drops_from_9 = 0;
  for (const FlowSpec& f : *flows) {
    if (f.match.find("in_port=9") == std::string::npos) continue;
    EXPECT_EQ(f.table, 0);
    EXPECT_EQ(f.priority, kPrioritySteer);
    EXPECT_EQ(f.actions, "drop");
    EXPECT_EQ(f.cookie, kSteeringCookieBase | 9);
    ++drops_from_9;
  }
  EXPECT_EQ(drops_from_9, 1);
  ExpectInvalid({1, {{5, 7, "52:54:00:00:00:05"}}, {5}}, "also listed as a vNIC or twice");
  ExpectInvalid({1, {}, {9, 9}}, "also listed as a vNIC or twice");
  ExpectInvalid({1, {}, {1}}, "the firewall port");
  ExpectInvalid({1, {}, {0}}, "not a port number");
}

TEST(SteeringFlows, AllFlowsParseInOvsAndCarryInOpenFlow13WithDistinctKeys) {
  SteeringConfig c = OneVnic();
  c.vnics.push_back({6, 8, "52:54:00:00:00:06"});
  c.isolated_ofports = {9};
  auto flows = ComputeSteeringFlows(c);
  ASSERT_TRUE(flows.ok()) << flows.status();
  std::set<std::string> keys;
  for (const FlowSpec& f : *flows) {
    absl::StatusOr<InstalledFlow> canon = CanonicalFlow(f);
    ASSERT_TRUE(canon.ok()) << canon.status();
    EXPECT_EQ(canon->cookie, f.cookie);
    EXPECT_TRUE(keys.insert(canon->key).second) << "duplicate key " << canon->key;
  }
}

TEST(SteeringFlows, CanonicalFormIsWhatOvsPrintsAfterOpenFlow13) {
  auto flows = ComputeSteeringFlows(OneVnic());
  ASSERT_TRUE(flows.ok());
  auto egress = CanonicalFlow((*flows)[1]);
  ASSERT_TRUE(egress.ok()) << egress.status();
  EXPECT_EQ(egress->key, "table=0,priority=100,in_port=5");
  EXPECT_EQ(egress->actions, "push_vlan:0x8100,set_field:4103->vlan_vid,output:1");
  auto back = CanonicalFlow((*flows)[2]);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->key, "table=0,priority=100,in_port=1,dl_vlan=7");
  EXPECT_EQ(back->actions, "pop_vlan,load:0x5->NXM_OF_IN_PORT[],resubmit(,1)");
  auto tagged = CanonicalFlow((*flows)[0]);
  ASSERT_TRUE(tagged.ok()) << tagged.status();
  EXPECT_EQ(tagged->key, "table=0,priority=200,in_port=5,vlan_tci=0x1000/0x1000");
  auto normal = CanonicalFlow(flows->back());
  ASSERT_TRUE(normal.ok()) << normal.status();
  EXPECT_EQ(normal->key, "table=1,priority=0");
  EXPECT_EQ(normal->actions, "NORMAL");
}

TEST(SteeringFlows, CanonicalFlowRejectsGarbageWithOvsMessage) {
  absl::StatusOr<InstalledFlow> c =
      CanonicalFlow({0, 1, kSteeringCookieBase, "in_porrt=5", "drop"});
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("in_porrt"), std::string::npos) << c.status();
}

}  // namespace
}  // namespace dfw::ovs
