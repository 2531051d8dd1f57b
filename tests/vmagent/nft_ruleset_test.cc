// The renderer: its text is accepted by the real kernel (libnftables in a
// namespace the test creates), rules expand as documented, and anything
// that cannot be expressed is INVALID_ARGUMENT naming the field.
#include "dfw/vmagent/nft_ruleset.h"

#include <gtest/gtest.h>

#include "nft_test_netns.h"

namespace dfw::vmagent {
namespace {

using testing::EnterNetns;
using testing::Netns;
using testing::NftRun;

int Count(const std::string& s, const std::string& what) {
  int n = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
  return n;
}

// `db_id`: the id of the second address set (controller ids run to 263
// bytes: "r:<policy>/<rule>/src").
v1::HostDesiredState SampleState(const std::string& db_id = "r:p1/r2/src") {
  v1::HostDesiredState st;
  st.set_revision(7);
  auto* web = st.add_address_sets();
  web->set_id("g:web");
  for (const char* p : {"198.18.1.0/24", "198.18.1.5", "198.18.2.0/24", "2001:db8:1::/48"}) {
    web->add_prefixes(p);
  }
  auto* db = st.add_address_sets();
  db->set_id(db_id);
  db->add_prefixes("198.19.0.0/16");
  auto* rs = st.add_rulesets();
  rs->set_vnic_id("vnic-1");
  rs->mutable_default_rule()->set_action(v1::ACTION_DROP);
  {  // stateful allow tcp 80,443 from web to any, IN
    auto* r = rs->add_rules();
    r->set_rule_num(10);
    r->mutable_sources()->add_address_set_ids("g:web");
    r->mutable_destinations()->set_any(true);
    auto* s = r->add_services();
    s->set_protocol(6);
    s->add_destination_ports()->set_first(80);
    auto* pr = s->add_destination_ports();
    pr->set_first(8000);
    pr->set_last(8080);
    r->set_direction(v1::DIRECTION_IN);
    r->set_action(v1::ACTION_ALLOW);
    r->set_stateful(true);
    r->set_log(true);
  }
  {  // reject anything not from web or db, both directions
    auto* r = rs->add_rules();
    r->set_rule_num(11);
    r->mutable_sources()->add_address_set_ids("g:web");
    r->mutable_sources()->add_address_set_ids(db_id);
    r->mutable_sources()->set_negate(true);
    r->set_action(v1::ACTION_REJECT);
    r->set_direction(v1::DIRECTION_BOTH);
  }
  {  // icmp echo, stateless allow, OUT
    auto* r = rs->add_rules();
    r->set_rule_num(12);
    auto* s = r->add_services();
    s->set_protocol(1);
    s->set_icmp_type(8);
    s->set_icmp_code(0);
    auto* s6 = r->add_services();
    s6->set_protocol(58);
    s6->set_icmp_type(128);
    r->set_direction(v1::DIRECTION_OUT);
    r->set_action(v1::ACTION_ALLOW);
  }
  {  // audit drop of udp 53 to db, union of two sets as destinations
    auto* r = rs->add_rules();
    r->set_rule_num(13);
    r->mutable_destinations()->add_address_set_ids("g:web");
    r->mutable_destinations()->add_address_set_ids(db_id);
    auto* s = r->add_services();
    s->set_protocol(17);
    s->add_source_ports()->set_first(53);
    r->set_action(v1::ACTION_DROP);
    r->set_mode(v1::POLICY_MODE_AUDIT);
    r->set_stateful(true);
  }
  {  // ports without protocol; sctp; gre
    auto* r = rs->add_rules();
    r->set_rule_num(14);
    auto* s = r->add_services();
    s->add_destination_ports()->set_first(9);
    r->add_services()->set_protocol(132);
    r->add_services()->set_protocol(47);
    r->set_action(v1::ACTION_DROP);
  }
  auto* rs2 = st.add_rulesets();
  rs2->set_vnic_id("vnic-2");
  rs2->mutable_default_rule()->set_action(v1::ACTION_ALLOW);
  auto* rs3 = st.add_rulesets();
  rs3->set_vnic_id("vnic-absent");
  return st;
}

RenderOptions Opts() {
  RenderOptions o;
  o.table = "dfwtest";
  o.bypass.controller_ips = {"198.18.0.1", "2001:db8::1"};
  o.bypass.controller_port = 8443;
  return o;
}

TEST(NftRuleset, ExpandsAsDocumented) {
  SetNames names;
  std::vector<std::string> skipped;
  auto t = RenderTable(SampleState(), {{"vnic-1", "veth-vm1"}, {"vnic-2", "eth1"}}, Opts(), &names,
                       &skipped);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(skipped, std::vector<std::string>{"vnic-absent"});
  EXPECT_EQ(*names.Find("g:web"), "a1");
  EXPECT_EQ(*names.Find("r:p1/r2/src"), "a2");
  const std::string& s = *t;
  // rule 10: IN only, one set x two families x one service.
  EXPECT_EQ(Count(s, "comment \"r10\""), 2);
  EXPECT_NE(s.find("ip saddr @a1_4 meta l4proto tcp tcp dport { 80, 8000-8080 } ct mark set 10 "
                   "counter log prefix \"dfw:allow:10\" group 1 accept comment \"r10\""),
            std::string::npos)
      << s;
  // rule 11: negated union = one rule per family; reject without a service:
  // a TCP reset rule and an icmpx rule; in both chains.
  EXPECT_EQ(Count(s, "comment \"r11\""), 2 * 2 * 2);
  EXPECT_NE(s.find("ip saddr != @a1_4 ip saddr != @a2_4 meta l4proto tcp counter reject with tcp "
                   "reset comment \"r11\""),
            std::string::npos);
  // rule 12: ICMP v4 only + ICMPv6 v6 only, OUT only.
  EXPECT_EQ(Count(s, "comment \"r12\""), 2);
  EXPECT_NE(s.find("meta nfproto ipv4 meta l4proto icmp icmp type 8 icmp code 0 counter accept"),
            std::string::npos);
  // rule 13: union of 2 sets as destinations x 2 families x both chains; audit.
  EXPECT_EQ(Count(s, "comment \"r13\""), 2 * 2 * 2);
  EXPECT_NE(s.find("ct mark set 13 counter log prefix \"dfw:audit:13\" group 1 accept"),
            std::string::npos);
  // default rules: vnic-1 drop (logged), vnic-2 allow (stateful).
  EXPECT_NE(s.find("counter log prefix \"dfw:drop:0\" group 1 drop comment \"r0\""),
            std::string::npos);
  EXPECT_NE(s.find("ct mark set 4294967295 counter accept comment \"r0\""), std::string::npos);
  EXPECT_NE(s.find("iifname \"veth-vm1\" jump in_1"), std::string::npos);
  EXPECT_NE(s.find("ip6 daddr 2001:db8::1 tcp dport 8443 counter accept"), std::string::npos);
}

TEST(NftRuleset, KernelAcceptsIt) {
  Netns ns("rs");
  ASSERT_TRUE(ns.ok());
  SetNames names;
  auto t = RenderTable(SampleState(), {{"vnic-1", "veth-vm1"}, {"vnic-2", "eth1"}}, Opts(), &names);
  ASSERT_TRUE(t.ok()) << t.status();
  {
    EnterNetns in(ns.name());
    ASSERT_TRUE(in.ok());
    ASSERT_EQ(NftRun(*t), "") << *t;
    // The same text again replaces the table (one transaction).
    ASSERT_EQ(NftRun(*t), "");
  }
  std::string out;
  ASSERT_EQ(ns.Exec("nft list table inet dfwtest", &out), 0) << out;
  EXPECT_NE(out.find("elements = { 198.18.1.0-198.18.2.255 }"), std::string::npos) << out;
  EXPECT_NE(out.find("tcp dport { 80, 8000-8080 }"), std::string::npos) << out;
  EXPECT_NE(out.find("reject with icmpx admin-prohibited"), std::string::npos) << out;
  EXPECT_NE(out.find("comment \"r14\""), std::string::npos) << out;
  // audit_all and no bypass render and apply too.
  RenderOptions o = Opts();
  o.audit_all = true;
  o.bypass = Bypass{};
  auto t2 = RenderTable(SampleState(), {{"vnic-1", "veth-vm1"}}, o, &names);
  ASSERT_TRUE(t2.ok());
  EXPECT_EQ(Count(*t2, "reject"), 0);
  EnterNetns in(ns.name());
  ASSERT_EQ(NftRun(*t2), "");
  // A 250-byte address set id (nft keeps 128 bytes of a comment): the
  // table still applies, the comment is cut.
  const std::string long_id = "r:" + std::string(120, 'p') + "/" + std::string(120, 'r') + "/src";
  SetNames names3;
  auto t3 = RenderTable(SampleState(long_id), {{"vnic-1", "veth-vm1"}}, Opts(), &names3);
  ASSERT_TRUE(t3.ok()) << t3.status();
  ASSERT_EQ(NftRun(*t3), "") << *t3;
}

void ExpectInvalid(const v1::HostDesiredState& st, const InterfaceMap& ifaces,
                   const std::string& field, RenderOptions o = Opts()) {
  SetNames names;
  auto t = RenderTable(st, ifaces, o, &names);
  ASSERT_FALSE(t.ok()) << field;
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(t.status().message()).find(field), std::string::npos) << t.status();
}

TEST(NftRuleset, RefusesWhatCannotBeExpressed) {
  const InterfaceMap ok_if{{"vnic-1", "eth0"}};
  // An interface name nft text cannot carry skips that vNIC alone (named in
  // `skipped`): never injected, and the other vNICs are still enforced.
  for (const std::string bad : {"eth0\" accept; drop", "eth*"}) {
    SetNames names;
    std::vector<std::string> skipped;
    auto t =
        RenderTable(SampleState(), {{"vnic-1", bad}, {"vnic-2", "eth1"}}, Opts(), &names, &skipped);
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ(skipped, (std::vector<std::string>{
                           "vnic-1", "vnic-absent"}));  // (and the one with no interface)
    EXPECT_EQ(t->find(bad), std::string::npos) << *t;
    EXPECT_NE(t->find("oifname \"eth1\""), std::string::npos) << *t;
  }
  auto st = SampleState();
  st.mutable_address_sets(0)->set_id("g:\"x");
  ExpectInvalid(st, ok_if, "address_sets[0].id");
  st = SampleState();
  st.mutable_address_sets(0)->add_prefixes("198.18.0.1/24");
  ExpectInvalid(st, ok_if, "address_sets[0].prefixes");
  st = SampleState();
  st.mutable_rulesets(0)->mutable_rules(0)->mutable_sources()->add_address_set_ids("g:nope");
  ExpectInvalid(st, ok_if, "vNIC 'vnic-1' rules[0].sources.address_set_ids[1]");
  st = SampleState();
  st.mutable_rulesets(0)->mutable_rules(1)->set_rule_num(0);
  ExpectInvalid(st, ok_if, "rules[1].rule_num");
  st = SampleState();
  auto* pr =
      st.mutable_rulesets(0)->mutable_rules(0)->mutable_services(0)->mutable_destination_ports(1);
  pr->set_first(9000);
  pr->set_last(10);
  ExpectInvalid(st, ok_if, "rules[0].services[0].destination_ports[1]");
  st = SampleState();
  st.mutable_rulesets(0)->mutable_rules(2)->mutable_services(0)->add_source_ports()->set_first(1);
  ExpectInvalid(st, ok_if, "rules[2].services[0]");
  st = SampleState();
  st.mutable_rulesets(0)->mutable_rules(0)->set_action(v1::ACTION_UNSPECIFIED);
  ExpectInvalid(st, ok_if, "rules[0].action");
  st = SampleState();
  st.mutable_rulesets(0)->mutable_rules(0)->mutable_sources()->set_any(true);
  ExpectInvalid(st, ok_if, "rules[0].sources");
  RenderOptions o = Opts();
  o.table = "dfw; flush ruleset";
  ExpectInvalid(SampleState(), ok_if, "RenderOptions.table", o);
  o = Opts();
  o.bypass.controller_ips = {"198.18.0.1; drop"};
  ExpectInvalid(SampleState(), ok_if, "controller_ips[0]", o);
}

}  // namespace
}  // namespace dfw::vmagent
