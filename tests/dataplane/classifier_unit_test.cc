// Hand-written cases: semantics of the model, errors, and edge cases.
#include <gtest/gtest.h>

#include "dfw/dataplane/classifier.h"
#include "dfw/dataplane/ruleset_compiler.h"

namespace dfw::dataplane {
namespace {

IpPrefix P(const char* s) {
  auto p = IpPrefix::Parse(s);
  EXPECT_TRUE(p.has_value()) << s;
  return p.value_or(IpPrefix{});
}

EndpointSpec Sets(std::vector<std::string> ids, bool negate = false) {
  EndpointSpec e;
  e.any = false;
  e.address_sets = std::move(ids);
  e.negate = negate;
  return e;
}

ServiceSpec Tcp(uint16_t lo, uint16_t hi) {
  ServiceSpec s;
  s.proto = 6;
  s.dports.push_back(PortRange{lo, hi});
  return s;
}

FlowKey V6Key(const char* src, const char* dst, uint8_t proto, uint16_t sp, uint16_t dp) {
  FlowKey k;
  k.family = Family::kV6;
  k.src = P(src).addr;
  k.dst = P(dst).addr;
  k.proto = proto;
  k.sport = sp;
  k.dport = dp;
  return k;
}

uint32_t V4(const char* s) { return static_cast<uint32_t>(P(s).addr.lo); }

TEST(IpPrefixTest, ParseAndPrint) {
  EXPECT_EQ(P("198.18.0.0/15").ToString(), "198.18.0.0/15");
  EXPECT_EQ(P("2001:db8::/32").ToString(), "2001:db8::/32");
  EXPECT_EQ(P("10.1.2.3").len, 32);
  EXPECT_FALSE(IpPrefix::Parse("10.1.2.3/8").has_value());  // host bits
  EXPECT_FALSE(IpPrefix::Parse("10.1.2/8").has_value());
  EXPECT_FALSE(IpPrefix::Parse("10.0.0.0/33").has_value());
  EXPECT_TRUE(P("0.0.0.0/0").Contains(Family::kV4, Ip128{0, 0xffffffff}));
  EXPECT_FALSE(P("0.0.0.0/0").Contains(Family::kV6, Ip128{0, 1}));
}

TEST(ClassifierTest, FirstMatchDefaultDirectionNegationIcmpIpv6) {
  RulesetSpec spec;
  spec.address_sets = {{"web", {P("10.0.1.0/24"), P("2001:db8:1::/48")}},
                       {"db", {P("10.0.2.5/32")}},
                       {"admin", {P("10.0.9.0/24")}}};
  RuleSpec r0;  // web -> db tcp 5432, out only
  r0.rule_num = 100;
  r0.src = Sets({"web"});
  r0.dst = Sets({"db"});
  r0.services = {Tcp(5432, 5432)};
  r0.direction = RuleDirection::kOut;
  r0.action = Action::kAllow;
  RuleSpec r1;  // not admin -> web ssh: reject
  r1.rule_num = 101;
  r1.src = Sets({"admin"}, true);
  r1.dst = Sets({"web"});
  r1.services = {Tcp(22, 22)};
  r1.action = Action::kReject;
  RuleSpec r2;  // any -> any icmp echo request (type 8), ICMPv6 echo (128)
  r2.rule_num = 102;
  r2.services = {ServiceSpec::Icmp(1, 8, std::nullopt), ServiceSpec::Icmp(58, 128, 0)};
  spec.rules = {r0, r1, r2};
  spec.default_action = Action::kDrop;

  RulesetCompiler c;
  ASSERT_TRUE(c.Compile(spec).ok());
  const Ruleset& rs = *c.ruleset();
  EXPECT_EQ(
      rs.ClassifyOne(FlowKey::V4(V4("10.0.1.7"), V4("10.0.2.5"), 40000, 5432, 6, Direction::kOut)),
      0u);
  EXPECT_EQ(
      rs.ClassifyOne(FlowKey::V4(V4("10.0.1.7"), V4("10.0.2.5"), 40000, 5432, 6, Direction::kIn)),
      Ruleset::kNoMatch);
  EXPECT_EQ(rs.action(Ruleset::kNoMatch), Action::kDrop);
  EXPECT_EQ(rs.ClassifyOne(FlowKey::V4(V4("10.0.8.1"), V4("10.0.1.1"), 1, 22, 6)), 1u);
  EXPECT_EQ(rs.ClassifyOne(FlowKey::V4(V4("10.0.9.1"), V4("10.0.1.1"), 1, 22, 6)),
            Ruleset::kNoMatch);
  EXPECT_EQ(rs.action(1), Action::kReject);
  EXPECT_EQ(rs.rule_num(1), 101u);
  // IPv6 source outside admin (a v4-only set) is "not admin".
  EXPECT_EQ(rs.ClassifyOne(V6Key("2001:db8:2::1", "2001:db8:1::80", 6, 1000, 22)), 1u);
  EXPECT_EQ(rs.ClassifyOne(FlowKey::V4(V4("1.2.3.4"), V4("5.6.7.8"), 8, 0, 1)), 2u);
  EXPECT_EQ(rs.ClassifyOne(FlowKey::V4(V4("1.2.3.4"), V4("5.6.7.8"), 8, 3, 1)), 2u);
  EXPECT_EQ(rs.ClassifyOne(FlowKey::V4(V4("1.2.3.4"), V4("5.6.7.8"), 0, 0, 1)), Ruleset::kNoMatch);
  EXPECT_EQ(rs.ClassifyOne(V6Key("::1", "::2", 58, 128, 0)), 2u);
  EXPECT_EQ(rs.ClassifyOne(V6Key("::1", "::2", 58, 128, 1)), Ruleset::kNoMatch);

  // An address joining "db" is seen at once by the next Ruleset.
  const FlowKey k = FlowKey::V4(V4("10.0.1.7"), V4("10.0.2.6"), 1, 5432, 6, Direction::kOut);
  EXPECT_EQ(rs.ClassifyOne(k), Ruleset::kNoMatch);
  ASSERT_TRUE(c.ApplyAddressSetDelta("db", {P("10.0.2.6/32")}, {}).ok());
  EXPECT_EQ(c.ruleset()->ClassifyOne(k), 0u);
  ASSERT_TRUE(c.ApplyAddressSetDelta("db", {}, {P("10.0.2.6/32")}).ok());
  EXPECT_EQ(c.ruleset()->ClassifyOne(k), Ruleset::kNoMatch);
}

TEST(ClassifierTest, EmptyRulesetIsAllDefault) {
  RulesetSpec spec;
  spec.default_action = Action::kAllow;
  RulesetCompiler c;
  ASSERT_TRUE(c.Compile(spec).ok());
  EXPECT_EQ(c.ruleset()->ClassifyOne(FlowKey::V4(1, 2, 3, 4, 6)), Ruleset::kNoMatch);
  EXPECT_EQ(c.ruleset()->action(Ruleset::kNoMatch), Action::kAllow);
}

TEST(ClassifierTest, NewSetIdIsAcceptedAndUsableAfterRecompile) {
  RulesetCompiler c;
  ASSERT_TRUE(c.Compile(RulesetSpec{}).ok());
  EXPECT_TRUE(c.UpdateAddressSet("later", {P("10.0.0.0/8")}).ok());
}

TEST(CompileErrorTest, NamesRuleAndField) {
  RulesetSpec spec;
  spec.address_sets = {{"a", {P("10.0.0.0/8")}}};
  RuleSpec ok;
  ok.rule_num = 7;
  RuleSpec bad = ok;
  bad.rule_num = 9;
  bad.dst = Sets({"nope"});
  spec.rules = {ok, bad};
  RulesetCompiler c;
  Status st = c.Compile(spec);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("rule 1 (rule_num 9)"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("destination"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("'nope'"), std::string::npos) << st.message();
  EXPECT_EQ(c.ruleset(), nullptr);  // nothing published

  spec.rules[1].dst = EndpointSpec{};
  spec.rules[1].services = {Tcp(90, 80)};
  st = c.Compile(spec);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("service 0: port range 90-80"), std::string::npos) << st.message();

  spec.rules[1].services.clear();
  spec.rules[1].src.negate = true;
  st = c.Compile(spec);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("source: negated 'any'"), std::string::npos) << st.message();

  spec.rules[1].src = EndpointSpec{};
  spec.address_sets.push_back(spec.address_sets[0]);
  st = c.Compile(spec);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("address set 'a': defined twice"), std::string::npos);
}

}  // namespace
}  // namespace dfw::dataplane
