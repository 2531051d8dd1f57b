// ComputeSteeringFlows and CanonicalFlow without a running OVS (the canonical
// form goes through libopenvswitch's parser and OF1.3 encoder in-process).
#include "dfw/ovs/steering_flows.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <random>
#include <set>
#include <sstream>

#include "absl/strings/str_format.h"
#include "dfw/ovs/openflow_bridge.h"

namespace dfw::ovs {
namespace {

SteeringConfig OneVnic() { return {{1}, {{5, 7, "52:54:00:00:00:05"}}}; }

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
      // Its broadcasts: no other local vNIC, so to NORMAL only.
      "table=1,priority=100,cookie=0xdf305ee000000005,in_port=5,"
      "dl_dst=01:00:00:00:00:00/01:00:00:00:00:00 actions=NORMAL",
      "table=0,priority=10,cookie=0xdf305ee000000000,in_port=1 actions=drop",
      "table=0,priority=0,cookie=0xdf305ee000000000 actions=drop",
      // Broadcasts from anywhere else (uplinks): a copy into 5's ingress.
      "table=1,priority=50,cookie=0xdf305ee000000000,dl_dst=01:00:00:00:00:00/01:00:00:00:00:00 "
      "actions=mod_vlan_vid:2055,output:1,strip_vlan,NORMAL",
      "table=1,priority=0,cookie=0xdf305ee000000000 actions=NORMAL",
  };
  EXPECT_EQ(got, want);
}

TEST(SteeringFlows, EveryFlowCarriesOurCookiePrefix) {
  SteeringConfig c = OneVnic();
  c.vnics.push_back({6, 2047, "52:54:00:00:00:06"});
  c.uplink_ofports = {3, kLocalOfport};
  c.isolated_ofports = {9};
  auto flows = ComputeSteeringFlows(c);
  ASSERT_TRUE(flows.ok()) << flows.status();
  EXPECT_EQ(flows->size(), 2 * 6 + 2 * 2 + 1 + 4u);
  for (const FlowSpec& f : *flows) {
    EXPECT_EQ(f.cookie & kSteeringCookieMask, kSteeringCookieBase) << f.ToString();
  }
}

TEST(SteeringFlows, MacIsLowerCasedAndHighestLocalIdFitsAVid) {
  SteeringConfig c{{1}, {{6, 2047, "52:54:00:AB:CD:EF"}}};
  auto flows = ComputeSteeringFlows(c);
  ASSERT_TRUE(flows.ok()) << flows.status();
  bool seen = false;
  for (const FlowSpec& f : *flows) {
    if (f.table == 1 && f.priority == kPrioritySteer && f.match.rfind("dl_dst=", 0) == 0) {
      EXPECT_EQ(f.match, "dl_dst=52:54:00:ab:cd:ef");
      EXPECT_EQ(f.actions, "mod_vlan_vid:4095,output:1");  // 2047 | 0x800
      seen = true;
    }
  }
  EXPECT_TRUE(seen);
}

TEST(SteeringFlows, NoVnicsLeavesBridgeDefaultsOnly) {
  auto flows = ComputeSteeringFlows({{3}, {}});
  ASSERT_TRUE(flows.ok()) << flows.status();
  EXPECT_EQ(flows->size(), 4u);
}

void ExpectInvalid(const SteeringConfig& c, const std::string& says) {
  auto flows = ComputeSteeringFlows(c);
  ASSERT_FALSE(flows.ok());
  EXPECT_EQ(flows.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(flows.status().message().find(says), std::string::npos) << flows.status();
}

TEST(SteeringFlows, InvalidConfigsAreRejectedWithTheReason) {
  ExpectInvalid({{0}, {}}, "firewall_ofport 0");
  ExpectInvalid({{0xff00}, {}}, "firewall_ofport");
  ExpectInvalid({{1}, {{1, 7, "52:54:00:00:00:05"}}}, "a firewall port's");
  ExpectInvalid({{1}, {{0, 7, "52:54:00:00:00:05"}}}, "not a port number");
  ExpectInvalid({{1}, {{5, 0, "52:54:00:00:00:05"}}}, "local id must be in 1..2047");
  ExpectInvalid({{1}, {{5, 2048, "52:54:00:00:00:05"}}}, "local id must be in 1..2047");
  ExpectInvalid({{1}, {{5, 7, "52:54:00:00:05"}}}, "not a unicast MAC");
  ExpectInvalid({{1}, {{5, 7, "52-54-00-00-00-05"}}}, "not a unicast MAC");
  ExpectInvalid({{1}, {{5, 7, "01:00:5e:00:00:01"}}}, "not a unicast MAC");
  ExpectInvalid({{1}, {{5, 7, "ff:ff:ff:ff:ff:ff"}}}, "not a unicast MAC");
  ExpectInvalid({{1}, {{5, 7, "00:00:00:00:00:00"}}}, "not a unicast MAC");
  ExpectInvalid({{1}, {{5, 7, "52:54:00:00:00:05"}, {5, 8, "52:54:00:00:00:06"}}},
                "ofport listed twice");
  ExpectInvalid({{1}, {{5, 7, "52:54:00:00:00:05"}, {6, 7, "52:54:00:00:00:06"}}},
                "local id used by another vNIC");
  ExpectInvalid({{1}, {{5, 7, "52:54:00:00:00:05"}, {6, 8, "52:54:00:00:00:05"}}},
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
  ExpectInvalid({{1}, {{5, 7, "52:54:00:00:00:05"}}, {5}}, "isolated ofport 5: also listed");
  ExpectInvalid({{1}, {}, {9, 9}}, "isolated ofport 9: also listed");
  ExpectInvalid({{1}, {}, {1}}, "isolated ofport 1: a firewall port");
  ExpectInvalid({{1}, {}, {0}}, "isolated ofport 0: not a port number");
  ExpectInvalid({{1}, {}, {kLocalOfport}}, "isolated ofport 65534: not a port number");
}

TEST(SteeringFlows, UnknownPortsAreDeniedKnownUplinksAndLocalPassUntagged) {
  SteeringConfig c = OneVnic();
  c.uplink_ofports = {3, kLocalOfport};
  auto flows = ComputeSteeringFlows(c);
  ASSERT_TRUE(flows.ok()) << flows.status();
  std::vector<std::string> uplink_flows;
  std::string table0_default;
  for (const FlowSpec& f : *flows) {
    if (f.table != 0) continue;
    if (f.match.empty()) table0_default = f.actions;
    if (f.match.find("in_port=3") == 0 || f.match.find("in_port=LOCAL") == 0) {
      uplink_flows.push_back(f.ToString());
    }
  }
  EXPECT_EQ(table0_default, "drop");
  EXPECT_EQ(uplink_flows,
            (std::vector<std::string>{
                "table=0,priority=200,cookie=0xdf305ee000000003,in_port=3,"
                "vlan_tci=0x1000/0x1000 actions=drop",
                "table=0,priority=100,cookie=0xdf305ee000000003,in_port=3 actions=resubmit(,1)",
                "table=0,priority=200,cookie=0xdf305ee00000fffe,in_port=LOCAL,"
                "vlan_tci=0x1000/0x1000 actions=drop",
                "table=0,priority=100,cookie=0xdf305ee00000fffe,in_port=LOCAL "
                "actions=resubmit(,1)"}));
}

TEST(SteeringFlows, InvalidUplinksAreRejectedWithTheReason) {
  ExpectInvalid({{1}, {}, {}, {0}}, "uplink ofport 0: not a port number");
  ExpectInvalid({{1}, {}, {}, {0xff00}}, "uplink ofport 65280: not a port number");
  ExpectInvalid({{1}, {}, {}, {0xffff}}, "uplink ofport 65535: not a port number");
  ExpectInvalid({{1}, {}, {}, {1}}, "uplink ofport 1: a firewall port");
  ExpectInvalid({{1}, {{5, 7, "52:54:00:00:00:05"}}, {}, {5}}, "uplink ofport 5: also listed");
  ExpectInvalid({{1}, {}, {9}, {9}}, "uplink ofport 9: also listed");
  ExpectInvalid({{1}, {}, {}, {3, 3}}, "uplink ofport 3: also listed");
}

// What the group-addressed flows of table 1 do with a broadcast from
// `in_port`, read off the flow text the way OVS would (first match by
// priority): the steering tags copied to a firewall port (with the port),
// in order, and whether the frame then goes to NORMAL untagged.
struct GroupDelivery {
  std::vector<std::pair<unsigned, uint32_t>> copies;  // (tag, firewall port)
  bool normal_untagged = false;
};
GroupDelivery DeliverBroadcast(const std::vector<FlowSpec>& flows, uint32_t in_port,
                               const std::vector<uint32_t>& fws) {
  const std::string group = "dl_dst=01:00:00:00:00:00/01:00:00:00:00:00";
  const FlowSpec* best = nullptr;
  for (const FlowSpec& f : flows) {
    if (f.table != 1) continue;
    const bool matches = f.match.empty() || f.match == group ||
                         f.match == "in_port=" + std::to_string(in_port) + "," + group;
    if (matches && (best == nullptr || f.priority > best->priority)) best = &f;
  }
  GroupDelivery d;
  if (best == nullptr) return d;
  std::istringstream in(best->actions);
  bool tagged = false;
  unsigned tag = 0;
  for (std::string a; std::getline(in, a, ',');) {
    if (a.rfind("mod_vlan_vid:", 0) == 0) {
      tag = std::stoul(a.substr(13));
      tagged = true;
    } else if (a.rfind("output:", 0) == 0) {
      const auto port = static_cast<uint32_t>(std::stoul(a.substr(7)));
      EXPECT_NE(std::find(fws.begin(), fws.end(), port), fws.end()) << best->actions;
      EXPECT_TRUE(tagged) << best->actions;
      d.copies.emplace_back(tag, port);
    } else if (a == "strip_vlan") {
      tagged = false;
    } else if (a == "NORMAL") {
      d.normal_untagged = !tagged;
    } else {
      ADD_FAILURE() << "unexpected action " << a << " in " << best->actions;
    }
  }
  return d;
}

TEST(SteeringFlows, BroadcastReachesEveryOtherVnicThroughItsIngressOnRandomConfigs) {
  std::mt19937 rng(12);
  for (int round = 0; round < 200; ++round) {
    SteeringConfig c;
    std::set<uint32_t> used_ports;
    const size_t fw_ports = 1 + rng() % 3;
    while (c.firewall_ofports.size() < fw_ports) {
      const uint32_t port = 1 + rng() % 3000;
      if (used_ports.insert(port).second) c.firewall_ofports.push_back(port);
    }
    std::set<uint16_t> used_ids;
    const int n = static_cast<int>(rng() % 12);
    while (static_cast<int>(c.vnics.size()) < n) {
      const uint32_t port = 1 + rng() % 3000;
      const uint16_t id = 1 + rng() % kMaxLocalId;
      if (!used_ports.insert(port).second || !used_ids.insert(id).second) continue;
      c.vnics.push_back({port, id, absl::StrFormat("52:54:00:00:%02x:%02x", id >> 8, id & 0xff)});
    }
    const size_t uplinks = rng() % 3;
    while (c.uplink_ofports.size() < uplinks) {
      const uint32_t port = 1 + rng() % 3000;
      if (used_ports.insert(port).second) c.uplink_ofports.push_back(port);
    }
    auto flows = ComputeSteeringFlows(c);
    ASSERT_TRUE(flows.ok()) << flows.status();
    // The reference: a broadcast goes once into every local vNIC's ingress
    // but the sender's, through that vNIC's owner worker's port (local id
    // modulo the ports), then to NORMAL untagged.
    auto expected = [&](uint32_t sender) {
      std::vector<std::pair<unsigned, uint32_t>> copies;
      for (const VnicSteering& v : c.vnics) {
        if (v.ofport == sender) continue;
        copies.emplace_back(v.local_id | kIngressVlanBit,
                            c.firewall_ofports[v.local_id % c.firewall_ofports.size()]);
      }
      return copies;
    };
    std::vector<uint32_t> senders = c.uplink_ofports;
    for (const VnicSteering& v : c.vnics) senders.push_back(v.ofport);
    for (uint32_t from : senders) {
      GroupDelivery d = DeliverBroadcast(*flows, from, c.firewall_ofports);
      EXPECT_EQ(d.copies, expected(from)) << "round " << round << " from " << from;
      EXPECT_TRUE(d.normal_untagged) << "round " << round << " from " << from;
    }
  }
}

// Several firewall ports (one per dataplane worker): every flow that sends
// a vNIC's tagged frame to the dataplane, or takes one back from it, uses
// that vNIC's owner's port (local id % ports), and each firewall port drops
// what it sends with a tag it does not own.
TEST(SteeringFlows, EachVnicCrossesOnlyItsOwnerWorkersFirewallPort) {
  SteeringConfig c{{1, 2}, {{5, 7, "52:54:00:00:00:05"}, {6, 8, "52:54:00:00:00:06"}}};
  c.uplink_ofports = {3};
  auto flows = ComputeSteeringFlows(c);
  ASSERT_TRUE(flows.ok()) << flows.status();
  auto owner = [](unsigned tag) { return (tag & kMaxLocalId) % 2 == 0 ? 1u : 2u; };
  int tagged_outputs = 0, tagged_returns = 0;
  std::set<std::string> fail_closed;
  for (const FlowSpec& f : *flows) {
    unsigned in_port = 0, vlan = 0;
    if (std::sscanf(f.match.c_str(), "in_port=%u,dl_vlan=%u", &in_port, &vlan) == 2) {
      EXPECT_EQ(in_port, owner(vlan)) << f.ToString();
      ++tagged_returns;
    }
    if ((f.match == "in_port=1" || f.match == "in_port=2") && f.actions == "drop") {
      EXPECT_EQ(f.priority, kPriorityFirewallDefault);
      fail_closed.insert(f.match);
    }
    std::istringstream in(f.actions);
    unsigned tag = 0;
    for (std::string a; std::getline(in, a, ',');) {
      if (a.rfind("mod_vlan_vid:", 0) == 0) tag = std::stoul(a.substr(13));
      if (a.rfind("output:", 0) == 0 && tag != 0) {
        EXPECT_EQ(std::stoul(a.substr(7)), owner(tag)) << f.ToString();
        ++tagged_outputs;
      }
      if (a == "strip_vlan") tag = 0;
    }
  }
  // Per vNIC: egress, unicast ingress, and one broadcast copy from the other
  // vNIC and one from the uplinks.
  EXPECT_EQ(tagged_outputs, 2 * 4);
  EXPECT_EQ(tagged_returns, 2 * 2);
  EXPECT_EQ(fail_closed, (std::set<std::string>{"in_port=1", "in_port=2"}));
  ExpectInvalid({{}, {}}, "firewall_ofports: 0 ports");
  ExpectInvalid({{1, 1}, {}}, "firewall_ofport 1 listed twice");
  ExpectInvalid({std::vector<uint32_t>(kMaxFirewallPorts + 1, 1), {}}, "firewall_ofports: 17");
  ExpectInvalid({{1, 2}, {{2, 7, "52:54:00:00:00:05"}}}, "a firewall port's");
  ExpectInvalid({{1, 2}, {}, {}, {2}}, "uplink ofport 2: a firewall port");
}

TEST(SteeringFlows, AllFlowsParseInOvsAndCarryInOpenFlow13WithDistinctKeys) {
  SteeringConfig c = OneVnic();
  c.vnics.push_back({6, 8, "52:54:00:00:00:06"});
  c.isolated_ofports = {9};
  c.uplink_ofports = {3, kLocalOfport};
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

TEST(SteeringFlows, MoreVnicsThanOneBroadcastFlowCanCarryAreRefused) {
  SteeringConfig c{{1}, {}};
  for (uint16_t id = 1; id <= kMaxSteeredVnics + 1; ++id) {
    c.vnics.push_back({id + 9u, id, absl::StrFormat("52:54:00:00:%02x:%02x", id >> 8, id & 0xff)});
  }
  ExpectInvalid(c, "vnics: 2001 vNICs, at most 2000");
}

TEST(SteeringFlows, CanonicalFlowRejectsGarbageWithOvsMessage) {
  absl::StatusOr<InstalledFlow> c =
      CanonicalFlow({0, 1, kSteeringCookieBase, "in_porrt=5", "drop"});
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("in_porrt"), std::string::npos) << c.status();
}

}  // namespace
}  // namespace dfw::ovs
