// ComputeSteeringFlows and CanonicalFlow without a running OVS (the canonical
// form goes through libopenvswitch's parser and OF1.3 encoder in-process).
#include "dfw/ovs/steering_flows.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <map>
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

// vNIC 5 protected, vNIC 6 (local id 8) on the exclusion list, uplink 3.
SteeringConfig OneProtectedOneExcluded() {
  SteeringConfig c{{1},
                   {{5, 7, "52:54:00:00:00:05"},
                    {6, 8, "52:54:00:00:00:06", true, {"198.18.10.6", "2001:DB8::6/128"}}}};
  c.uplink_ofports = {3};
  return c;
}

TEST(SteeringFlows, ExcludedVnicGetsPortSecurityAndDirectDeliveryInsteadOfSteering) {
  auto flows = ComputeSteeringFlows(OneProtectedOneExcluded());
  ASSERT_TRUE(flows.ok()) << flows.status();
  std::vector<std::string> got;
  for (const FlowSpec& f : *flows) {
    if (f.cookie == (kSteeringCookieBase | 6)) got.push_back(f.ToString());
  }
  const std::string c = "cookie=0xdf305ee000000006,in_port=6,";
  const std::string from = c + "dl_src=52:54:00:00:00:06,";
  const std::string m = "52:54:00:00:00:06", none = "00:00:00:00:00:00";
  const std::string ok = " actions=resubmit(,1)";
  const std::vector<std::string> want = {
      "table=0,priority=200," + c + "vlan_tci=0x1000/0x1000 actions=drop",
      // Router advertisements, redirects, neighbour messages OVS could not
      // parse: dropped.
      "table=0,priority=180," + c + "icmp6,icmp_type=134 actions=drop",
      "table=0,priority=180," + c + "icmp6,icmp_type=137 actions=drop",
      "table=0,priority=180," + c + "icmp6,icmp_type=135,icmp_code=0,nd_target=:: actions=drop",
      "table=0,priority=180," + c + "icmp6,icmp_type=136,icmp_code=0,nd_target=:: actions=drop",
      // Solicitations from its address or :: (DAD), its MAC or none.
      "table=0,priority=170," + from + "icmp6,ipv6_src=2001:db8::6,icmp_type=135,icmp_code=0," +
          "nd_sll=" + m + ok,
      "table=0,priority=170," + from + "icmp6,ipv6_src=2001:db8::6,icmp_type=135,icmp_code=0," +
          "nd_sll=" + none + ok,
      "table=0,priority=170," + from + "icmp6,ipv6_src=::,icmp_type=135,icmp_code=0,nd_sll=" + m +
          ok,
      "table=0,priority=170," + from +
          "icmp6,ipv6_src=::,icmp_type=135,icmp_code=0,nd_sll=" + none + ok,
      // Advertisements of its address from its address.
      "table=0,priority=170," + from + "icmp6,ipv6_src=2001:db8::6,icmp_type=136,icmp_code=0," +
          "nd_target=2001:db8::6,nd_tll=" + m + ok,
      "table=0,priority=170," + from + "icmp6,ipv6_src=2001:db8::6,icmp_type=136,icmp_code=0," +
          "nd_target=2001:db8::6,nd_tll=" + none + ok,
      "table=0,priority=160," + c + "icmp6,icmp_type=135 actions=drop",
      "table=0,priority=160," + c + "icmp6,icmp_type=136 actions=drop",
      "table=0,priority=150," + from + "arp,arp_spa=0.0.0.0,arp_sha=" + m + ok,
      "table=0,priority=150," + from + "arp,arp_spa=198.18.10.6,arp_sha=" + m + ok,
      "table=0,priority=150," + from + "ip,nw_src=198.18.10.6" + ok,
      "table=0,priority=150," + from + "udp,nw_src=0.0.0.0,tp_src=68,tp_dst=67" + ok,
      "table=0,priority=150," + from + "ipv6,ipv6_src=2001:db8::6" + ok,
      "table=0,priority=100,cookie=0xdf305ee000000006,in_port=6 actions=drop",
      // No egress through the firewall, no returns for tags 8 / 0x808 from
      // it; unicast to 6 is delivered directly.
      "table=1,priority=100,cookie=0xdf305ee000000006,dl_dst=52:54:00:00:00:06 actions=output:6",
  };
  EXPECT_EQ(got, want);

  // Group-addressed frames: 6 gets no copy into the firewall (NORMAL's flood
  // reaches it) and has no broadcast flow of its own (the p50 one, as for
  // uplinks); 5's broadcasts copy into no vNIC's ingress.
  std::vector<std::string> group;
  for (const FlowSpec& f : *flows) {
    if (f.table == 1 && f.match.find("dl_dst=01:00:00:00:00:00/") != std::string::npos) {
      group.push_back(f.ToString());
    }
  }
  EXPECT_EQ(group,
            (std::vector<std::string>{"table=1,priority=100,cookie=0xdf305ee000000005,in_port=5,"
                                      "dl_dst=01:00:00:00:00:00/01:00:00:00:00:00 actions=NORMAL",
                                      "table=1,priority=50,cookie=0xdf305ee000000000,"
                                      "dl_dst=01:00:00:00:00:00/01:00:00:00:00:00 "
                                      "actions=mod_vlan_vid:2055,output:1,strip_vlan,NORMAL"}));
  // Nothing tags a frame with 6's ids or takes one back from the firewall.
  for (const FlowSpec& f : *flows) {
    for (const char* tag :
         {"dl_vlan=8 ", "dl_vlan=2056 ", "mod_vlan_vid:8,", "mod_vlan_vid:2056,"}) {
      EXPECT_EQ(f.ToString().find(tag), std::string::npos) << f.ToString();
    }
  }
  // The protected vNIC's flows are the same as without 6.
  auto alone = ComputeSteeringFlows({{1}, {{5, 7, "52:54:00:00:00:05"}}, {}, {3}});
  ASSERT_TRUE(alone.ok()) << alone.status();
  std::vector<FlowSpec> of5, alone5;
  for (const FlowSpec& f : *flows) {
    if (f.cookie == (kSteeringCookieBase | 5)) of5.push_back(f);
  }
  for (const FlowSpec& f : *alone) {
    if (f.cookie == (kSteeringCookieBase | 5)) alone5.push_back(f);
  }
  EXPECT_EQ(of5, alone5);
}

TEST(SteeringFlows, ExcludedVnicsAddressesAreDedupedAndEachFamilyGetsItsFlows) {
  const std::vector<std::string> addresses = {"198.18.10.6", "198.18.10.6/32",    "198.18.10.7",
                                              "2001:db8::6", "2001:db8:0::7/128", "2001:DB8::6"};
  SteeringConfig c{{1}, {{6, 8, "52:54:00:00:00:06", true, addresses}}};
  auto flows = ComputeSteeringFlows(c);
  ASSERT_TRUE(flows.ok()) << flows.status();
  std::map<std::string, int> kinds;
  for (const FlowSpec& f : *flows) {
    if (f.table != 0 || f.actions != "resubmit(,1)") continue;
    for (const char* k : {",arp,", ",ip,", ",udp,", ",ipv6,", "icmp_type=135", "icmp_type=136"}) {
      if (f.match.find(k) != std::string::npos) ++kinds[k];
    }
  }
  // ARP: 2 addresses + probe; IPv4: 2; DHCP: 1; IPv6: 2; NS: (2 + ::) x 2
  // link-layer options; NA: 2 sources x 2 targets x 2.
  EXPECT_EQ(kinds, (std::map<std::string, int>{{",arp,", 3},
                                               {",ip,", 2},
                                               {",udp,", 1},
                                               {",ipv6,", 2},
                                               {"icmp_type=135", 6},
                                               {"icmp_type=136", 8}}));
  // No addresses: ARP probes, DHCP and DAD only; everything else dropped.
  auto bare = ComputeSteeringFlows({{1}, {{6, 8, "52:54:00:00:00:06", true, {}}}});
  ASSERT_TRUE(bare.ok()) << bare.status();
  std::vector<std::string> allowed;
  for (const FlowSpec& f : *bare) {
    if (f.actions == "resubmit(,1)") allowed.push_back(f.match);
  }
  EXPECT_EQ(allowed,
            (std::vector<std::string>{
                "in_port=6,dl_src=52:54:00:00:00:06,icmp6,ipv6_src=::,icmp_type=135,icmp_code=0,"
                "nd_sll=52:54:00:00:00:06",
                "in_port=6,dl_src=52:54:00:00:00:06,icmp6,ipv6_src=::,icmp_type=135,icmp_code=0,"
                "nd_sll=00:00:00:00:00:00",
                "in_port=6,dl_src=52:54:00:00:00:06,arp,arp_spa=0.0.0.0,"
                "arp_sha=52:54:00:00:00:06",
                "in_port=6,dl_src=52:54:00:00:00:06,udp,nw_src=0.0.0.0,tp_src=68,tp_dst=67"}));
}

TEST(SteeringFlows, BadOrSharedAddressesAreRejectedNamingTheVnic) {
  auto with = [](std::vector<std::string> addresses, bool excluded = true) {
    return SteeringConfig{{1},
                          {{5, 7, "52:54:00:00:00:05", false, {"198.18.10.5"}},
                           {6, 8, "52:54:00:00:00:06", excluded, std::move(addresses)}}};
  };
  const std::string vnic6 = "vNIC ofport 6 (local id 8, mac '52:54:00:00:00:06'): ";
  for (const char* bad : {"198.18.10.256", "198.18.10", "198.18.10.6/24", "198.18.10.6/128",
                          "2001:db8::6/32", "2001:db8::6/64", "2001:db8::g", "fe80::1%eth0", "",
                          " 198.18.10.6", "198.18.10.6/", "host.example"}) {
    ExpectInvalid(with({"198.18.10.6", bad}),
                  vnic6 + "address '" + bad + "' is not one IPv4 or IPv6 address");
    // Validated for a protected vNIC too: toggling exclusion must not be
    // what finds it.
    ExpectInvalid(with({bad}, false), vnic6 + "address '" + bad + "'");
  }
  ExpectInvalid(with({"198.18.10.5/32"}),
                vnic6 + "address 198.18.10.5 is bound to another vNIC (ofport 5)");
  SteeringConfig v6{{1},
                    {{5, 7, "52:54:00:00:00:05", false, {"2001:db8::5"}},
                     {6, 8, "52:54:00:00:00:06", true, {"2001:DB8:0:0::5"}}}};
  ExpectInvalid(v6, vnic6 + "address 2001:db8::5 is bound to another vNIC (ofport 5)");
}

TEST(SteeringFlows, ExcludedVnicsAreValidatedAsAnyAndKeepTheirLocalIds) {
  auto excluded = [](uint32_t port, uint16_t id, const char* mac) {
    return VnicSteering{port, id, mac, true, {}};
  };
  ExpectInvalid({{1}, {excluded(1, 7, "52:54:00:00:00:05")}}, "a firewall port's");
  ExpectInvalid({{1}, {excluded(5, 0, "52:54:00:00:00:05")}}, "local id must be in 1..2047");
  ExpectInvalid({{1}, {excluded(5, 7, "01:00:5e:00:00:01")}}, "not a unicast MAC");
  ExpectInvalid({{1}, {{5, 7, "52:54:00:00:00:05"}, excluded(6, 7, "52:54:00:00:00:06")}},
                "local id used by another vNIC");
  ExpectInvalid({{1}, {{5, 7, "52:54:00:00:00:05"}, excluded(6, 8, "52:54:00:00:00:05")}},
                "mac used by another vNIC");
  ExpectInvalid({{1}, {excluded(5, 7, "52:54:00:00:00:05")}, {}, {5}},
                "uplink ofport 5: also listed");
  // Toggling exclusion of 6 changes 6's flows and the group copies only.
  SteeringConfig c{
      {1, 2},
      {{5, 7, "52:54:00:00:00:05"}, {6, 8, "52:54:00:00:00:06"}, {9, 9, "52:54:00:00:00:09"}}};
  auto before = ComputeSteeringFlows(c);
  c.vnics[1].excluded = true;
  auto after = ComputeSteeringFlows(c);
  ASSERT_TRUE(before.ok() && after.ok());
  auto others = [](const std::vector<FlowSpec>& flows) {
    std::vector<FlowSpec> out;
    for (const FlowSpec& f : flows) {
      const bool group = f.match.find("dl_dst=01:00:00:00:00:00/") != std::string::npos;
      if (f.cookie != (kSteeringCookieBase | 6) && !group) out.push_back(f);
    }
    return out;
  };
  EXPECT_EQ(others(*before), others(*after));
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

// The exclusion list's invariants on a flow set computed from `c`: no flow
// sends a frame to a firewall port with an excluded vNIC's tag, or takes one
// back from it; an excluded vNIC has no group flow of its own; everything
// from it is dropped but what carries its MAC (port security), which goes to
// table 1 as from an uplink; unicast to it is delivered to its port, to a
// protected vNIC through that vNIC's ingress.
void ExpectExcludedVnicsBypassTheFirewall(const SteeringConfig& c,
                                          const std::vector<FlowSpec>& flows) {
  std::set<unsigned> excluded_ids;
  for (const VnicSteering& v : c.vnics) {
    if (v.excluded) excluded_ids.insert(v.local_id);
  }
  const std::set<uint32_t> fws(c.firewall_ofports.begin(), c.firewall_ofports.end());
  for (const FlowSpec& f : flows) {
    std::istringstream in(f.actions);
    unsigned tag = 0;
    for (std::string a; std::getline(in, a, ',');) {
      if (a.rfind("mod_vlan_vid:", 0) == 0) tag = std::stoul(a.substr(13));
      if (a == "strip_vlan") tag = 0;
      if (a.rfind("output:", 0) == 0 && fws.count(std::stoul(a.substr(7)))) {
        EXPECT_NE(tag, 0u) << f.ToString();
        EXPECT_EQ(excluded_ids.count(tag & kMaxLocalId), 0u) << "excluded tag in " << f.ToString();
      }
    }
    unsigned in_port = 0, vlan = 0;
    if (std::sscanf(f.match.c_str(), "in_port=%u,dl_vlan=%u", &in_port, &vlan) == 2) {
      EXPECT_EQ(excluded_ids.count(vlan & kMaxLocalId), 0u) << "excluded tag in " << f.ToString();
    }
  }
  for (const VnicSteering& v : c.vnics) {
    const std::string mac = v.mac;  // generated lower-case
    const std::string in_port = "in_port=" + std::to_string(v.ofport);
    std::vector<std::string> to_it;
    int catch_all = 0, tagged = 0;
    for (const FlowSpec& f : flows) {
      if (f.table == 1 && f.match == "dl_dst=" + mac) to_it.push_back(f.actions);
      if (f.match != in_port && f.match.rfind(in_port + ",", 0) != 0) continue;
      if (!v.excluded) continue;
      const std::string what = absl::StrFormat("vNIC %u: %s", v.ofport, f.ToString());
      EXPECT_EQ(f.table, 0) << what;  // no group flow of its own
      EXPECT_GE(f.priority, kPrioritySteer) << what;
      EXPECT_LE(f.priority, kPriorityVmTagged) << what;
      if (f.actions == "resubmit(,1)") {
        EXPECT_EQ(f.match.rfind(in_port + ",dl_src=" + mac + ",", 0), 0u) << what;
      } else {
        EXPECT_EQ(f.actions, "drop") << what;
      }
      if (f.match == in_port) {
        EXPECT_EQ(f.priority, kPrioritySteer) << what;
        ++catch_all;
      }
      if (f.match == in_port + ",vlan_tci=0x1000/0x1000") ++tagged;
    }
    const std::string want =
        v.excluded ? absl::StrFormat("output:%u", v.ofport)
                   : absl::StrFormat("mod_vlan_vid:%u,output:%u", v.local_id | kIngressVlanBit,
                                     c.firewall_ofports[v.local_id % c.firewall_ofports.size()]);
    EXPECT_EQ(to_it, std::vector<std::string>{want}) << "vNIC " << v.ofport;
    if (v.excluded) {
      EXPECT_EQ(catch_all, 1) << "vNIC " << v.ofport;
      EXPECT_EQ(tagged, 1) << "vNIC " << v.ofport;
    }
  }
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
      // A third on the exclusion list, with none, one or two addresses.
      if (rng() % 3 == 0) {
        VnicSteering& e = c.vnics.back();
        e.excluded = true;
        if (rng() % 3 != 0) {
          e.addresses.push_back(absl::StrFormat("198.18.%u.%u", id >> 8, id & 0xff));
        }
        if (rng() % 2 == 0) e.addresses.push_back(absl::StrFormat("2001:db8::%x", id));
      }
    }
    const size_t uplinks = rng() % 3;
    while (c.uplink_ofports.size() < uplinks) {
      const uint32_t port = 1 + rng() % 3000;
      if (used_ports.insert(port).second) c.uplink_ofports.push_back(port);
    }
    auto flows = ComputeSteeringFlows(c);
    ASSERT_TRUE(flows.ok()) << flows.status();
    // The reference: a broadcast goes once into every protected local vNIC's
    // ingress but the sender's, through that vNIC's owner worker's port
    // (local id modulo the ports), then to NORMAL untagged (which floods it
    // to the excluded vNICs, never back to the sender). An excluded sender's
    // is handled as an uplink's.
    auto expected = [&](uint32_t sender) {
      std::vector<std::pair<unsigned, uint32_t>> copies;
      for (const VnicSteering& v : c.vnics) {
        if (v.ofport == sender || v.excluded) continue;
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
    ExpectExcludedVnicsBypassTheFirewall(c, *flows);
    if (HasFailure()) return;  // one round's report is enough
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
  const std::vector<std::string> addresses = {"198.18.10.7", "198.18.10.17", "2001:db8::7",
                                              "fe80::5054:ff:fe00:7"};
  c.vnics.push_back({7, 9, "52:54:00:00:00:07", true, addresses});
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
    // OVS silently drops a field whose prerequisites the match lacks (the
    // flow would then match more than written): every field must survive.
    std::istringstream fields(f.match);
    for (std::string field; std::getline(fields, field, ',');) {
      EXPECT_NE(("," + canon->key + ",").find("," + field + ","), std::string::npos)
          << field << " lost from " << f.ToString() << ": " << canon->key;
    }
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
