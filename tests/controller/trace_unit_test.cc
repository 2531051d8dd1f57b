// The trace's decision as a unit: TraceStageOf on random compiled rulesets
// and random first packets, against a reference written straight from the
// meaning compiled.proto and model.proto give each field (first matching
// rule in order, else the default rule; an audited deny passes). The trace
// reads rulesets with the dataplane's reader and evaluates them with its
// reference classifier: this checks that chain against the documents.
// TraceFlowOf: the request's fields, their defaults and the errors naming them.
#include <arpa/inet.h>

#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "dfw/controller/trace.h"
#include "gtest/gtest.h"

namespace dfw::controller {
namespace {

// Addresses in 198.18.0.0/24 and 2001:db8::/120: small pools so that sets,
// prefixes and flows meet often.
struct Addr {
  bool v6 = false;
  uint8_t low = 0;  // the last byte; the rest is the pool's
};

std::string Text(Addr a) {
  char buf[INET6_ADDRSTRLEN];
  if (!a.v6) {
    std::snprintf(buf, sizeof buf, "198.18.0.%u", a.low);
    return buf;
  }
  in6_addr x{};
  inet_pton(AF_INET6, "2001:db8::", &x);
  x.s6_addr[15] = a.low;
  inet_ntop(AF_INET6, &x, buf, sizeof buf);
  return buf;
}

// A prefix of the pool: the last byte's top (len - 24 or len - 120) bits.
struct Prefix {
  bool v6 = false;
  uint8_t low = 0;
  int bits = 8;  // how many of the last byte's bits count (0..8)
  std::string ToText() const {
    return Text({v6, low}) + "/" + std::to_string((v6 ? 120 : 24) + bits);
  }
  bool Contains(Addr a) const {
    if (a.v6 != v6) return false;
    const uint8_t mask = static_cast<uint8_t>(bits == 0 ? 0 : 0xFF << (8 - bits));
    return (a.low & mask) == low;
  }
};

struct RefService {
  uint32_t proto = 0;
  std::vector<std::pair<uint32_t, uint32_t>> sports, dports;
  std::optional<uint32_t> type, code;
};

struct RefEndpoint {
  bool any = true, negate = false;
  std::vector<std::string> sets;
};

struct RefRule {
  RefEndpoint src, dst;
  std::vector<RefService> services;
  v1::Direction dir = v1::DIRECTION_BOTH;
  v1::Action action = v1::ACTION_ALLOW;
  bool audit = false;
};

struct Case {
  v1::VNicRuleset rs;
  std::map<std::string, v1::AddressSet> sets;
  std::map<std::string, std::vector<Prefix>> set_prefixes;
  std::vector<RefRule> rules;
  v1::Action default_action = v1::ACTION_DROP;
};

uint16_t kPorts[] = {22, 53, 80, 443, 5432, 8080, 49152};

Case RandomCase(std::mt19937& rng) {
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<unsigned>(n)); };
  Case c;
  c.rs.set_vnic_id("vnic-under-test");
  c.rs.set_revision(7);
  const int nsets = 1 + pick(4);
  for (int s = 0; s < nsets; ++s) {
    std::string id = "g:set" + std::to_string(s);
    v1::AddressSet set;
    set.set_id(id);
    c.set_prefixes[id];  // a set may be empty
    const int np = pick(4);
    for (int p = 0; p < np; ++p) {
      Prefix x;
      x.v6 = pick(3) == 0;
      x.bits = pick(9);
      const uint8_t mask = static_cast<uint8_t>(x.bits == 0 ? 0 : 0xFF << (8 - x.bits));
      x.low = static_cast<uint8_t>(pick(16) & mask);
      set.add_prefixes(x.ToText());
      c.set_prefixes[id].push_back(x);
    }
    c.sets[id] = set;
  }
  const int nrules = pick(8);
  for (int i = 0; i < nrules; ++i) {
    RefRule ref;
    auto* r = c.rs.add_rules();
    r->set_rule_num(static_cast<uint32_t>(100 + i));
    r->set_policy_id("p" + std::to_string(pick(3)));
    r->set_rule_id("r" + std::to_string(i));
    auto endpoint = [&](v1::CompiledEndpoints* e, RefEndpoint* re) {
      if (pick(3) == 0) {
        e->set_any(pick(2) == 0);  // 'any', or simply no sets: the same
        return;
      }
      re->any = false;
      const int k = 1 + pick(2);
      for (int j = 0; j < k; ++j) {
        std::string id = "g:set" + std::to_string(pick(nsets));
        e->add_address_set_ids(id);
        re->sets.push_back(id);
      }
      re->negate = pick(4) == 0;
      e->set_negate(re->negate);
    };
    endpoint(r->mutable_sources(), &ref.src);
    endpoint(r->mutable_destinations(), &ref.dst);
    const int nsvc = pick(3);
    for (int k = 0; k < nsvc; ++k) {
      RefService rsv;
      auto* s = r->add_services();
      const uint32_t protos[] = {0, 6, 17, 132, 1, 58, 47};
      rsv.proto = protos[pick(7)];
      s->set_protocol(rsv.proto);
      if (rsv.proto == 6 || rsv.proto == 17 || rsv.proto == 132) {
        auto ranges = [&](auto* list, std::vector<std::pair<uint32_t, uint32_t>>* to) {
          const int n = pick(3);
          for (int j = 0; j < n; ++j) {
            uint32_t first = kPorts[pick(7)];
            uint32_t last = pick(2) ? first : first + static_cast<uint32_t>(pick(3000));
            auto* pr = list->Add();
            pr->set_first(first);
            if (last != first || pick(2)) pr->set_last(last);
            to->emplace_back(first, last);
          }
        };
        ranges(s->mutable_source_ports(), &rsv.sports);
        ranges(s->mutable_destination_ports(), &rsv.dports);
      } else if ((rsv.proto == 1 || rsv.proto == 58) && pick(2)) {
        rsv.type = rsv.proto == 1 ? (pick(2) ? 8u : 0u) : (pick(2) ? 128u : 129u);
        s->set_icmp_type(*rsv.type);
        if (pick(2)) {
          rsv.code = static_cast<uint32_t>(pick(2));
          s->set_icmp_code(*rsv.code);
        }
      }
      ref.services.push_back(rsv);
    }
    const v1::Direction dirs[] = {v1::DIRECTION_UNSPECIFIED, v1::DIRECTION_IN, v1::DIRECTION_OUT,
                                  v1::DIRECTION_BOTH};
    ref.dir = dirs[pick(4)];
    r->set_direction(ref.dir);
    const v1::Action actions[] = {v1::ACTION_ALLOW, v1::ACTION_DROP, v1::ACTION_REJECT};
    ref.action = actions[pick(3)];
    r->set_action(ref.action);
    ref.audit = pick(4) == 0;
    r->set_mode(ref.audit ? v1::POLICY_MODE_AUDIT : v1::POLICY_MODE_ENFORCE);
    r->set_stateful(true);
    c.rules.push_back(ref);
  }
  const v1::Action defaults[] = {v1::ACTION_UNSPECIFIED, v1::ACTION_ALLOW, v1::ACTION_DROP,
                                 v1::ACTION_REJECT};
  const v1::Action d = defaults[pick(4)];
  c.rs.mutable_default_rule()->set_action(d);
  c.default_action = d == v1::ACTION_UNSPECIFIED ? v1::ACTION_DROP : d;
  return c;
}

struct RefFlow {
  Addr src, dst;
  uint32_t proto = 6;
  uint32_t sport = 0, dport = 0;  // ICMP: type, code
  bool egress = true;
};

// The reference: the documented meaning of each field, rule by rule.
struct RefDecision {
  int rule = -1;  // index, -1: the default rule
  v1::Action action = v1::ACTION_DROP;
  bool audit = false, passes = false;
};

RefDecision Reference(const Case& c, const RefFlow& f) {
  auto in_sets = [&](const RefEndpoint& e, Addr a) {
    if (e.any) return true;
    bool in = false;
    for (const auto& id : e.sets)
      for (const auto& p : c.set_prefixes.at(id)) in |= p.Contains(a);
    return in != e.negate;
  };
  auto in_ranges = [](const std::vector<std::pair<uint32_t, uint32_t>>& rs, uint32_t port) {
    if (rs.empty()) return true;
    for (const auto& [lo, hi] : rs)
      if (port >= lo && port <= hi) return true;
    return false;
  };
  auto service = [&](const RefService& s) {
    if (s.proto == 0) return true;
    if (s.proto != f.proto) return false;
    if (s.proto == 1 || s.proto == 58)
      return (!s.type || *s.type == f.sport) && (!s.code || *s.code == f.dport);
    return in_ranges(s.sports, f.sport) && in_ranges(s.dports, f.dport);
  };
  for (size_t i = 0; i < c.rules.size(); ++i) {
    const RefRule& r = c.rules[i];
    if (r.dir == v1::DIRECTION_IN && f.egress) continue;
    if (r.dir == v1::DIRECTION_OUT && !f.egress) continue;
    if (!in_sets(r.src, f.src) || !in_sets(r.dst, f.dst)) continue;
    bool svc = r.services.empty();
    for (const auto& s : r.services) svc |= service(s);
    if (!svc) continue;
    RefDecision d;
    d.rule = static_cast<int>(i);
    d.action = r.action;
    d.audit = r.audit && r.action != v1::ACTION_ALLOW;
    d.passes = r.action == v1::ACTION_ALLOW || d.audit;
    return d;
  }
  RefDecision d;
  d.action = c.default_action;
  d.passes = d.action == v1::ACTION_ALLOW;
  return d;
}

TEST(TraceStageOf, AgreesWithTheDocumentedMeaningOnRandomRulesets) {
  std::mt19937 rng(20261205);
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<unsigned>(n)); };
  int matched = 0, defaulted = 0, audited = 0;
  for (int round = 0; round < 3000; ++round) {
    Case c = RandomCase(rng);
    auto sets = [&](const std::string& id) -> const v1::AddressSet* {
      auto it = c.sets.find(id);
      return it == c.sets.end() ? nullptr : &it->second;
    };
    for (int k = 0; k < 10; ++k) {
      RefFlow f;
      f.src.v6 = f.dst.v6 = pick(3) == 0;
      f.src.low = static_cast<uint8_t>(pick(16));
      f.dst.low = static_cast<uint8_t>(pick(16));
      f.egress = pick(2) == 0;
      const uint32_t protos[] = {6, 17, 132, 1, 58, 47};
      f.proto = protos[pick(6)];
      TraceFlow flow;
      flow.src = Text(f.src);
      flow.dst = Text(f.dst);
      flow.protocol = static_cast<uint8_t>(f.proto);
      flow.egress = f.egress;
      if (f.proto == 1 || f.proto == 58) {
        f.sport = f.proto == 1 ? (pick(2) ? 8u : 0u) : (pick(2) ? 128u : 129u);
        f.dport = static_cast<uint32_t>(pick(2));
      } else if (f.proto != 47) {
        f.sport = pick(2) ? 49152u : kPorts[pick(7)];
        f.dport = pick(4) == 0 ? static_cast<uint32_t>(1 + pick(65535)) : kPorts[pick(7)] + pick(2);
      }
      flow.sport = static_cast<uint16_t>(f.sport);
      flow.dport = static_cast<uint16_t>(f.dport);

      v1::TraceStage st;
      ASSERT_TRUE(TraceStageOf(c.rs, sets, flow, &st).ok());
      const RefDecision want = Reference(c, f);
      const std::string where = "round " + std::to_string(round) + " flow " + std::to_string(k) +
                                ": " + c.rs.DebugString() + " " + flow.src + " -> " + flow.dst +
                                " proto " + std::to_string(f.proto) + " " +
                                std::to_string(f.sport) + "/" + std::to_string(f.dport) +
                                (f.egress ? " egress" : " ingress");
      ASSERT_EQ(st.default_rule(), want.rule < 0) << where;
      if (want.rule >= 0) {
        const auto& r = c.rs.rules(want.rule);
        ASSERT_EQ(st.rule_num(), r.rule_num()) << where;
        ASSERT_EQ(st.policy_id(), r.policy_id()) << where;
        ASSERT_EQ(st.rule_id(), r.rule_id()) << where;
        ++matched;
      } else {
        ASSERT_EQ(st.rule_num(), 0u) << where;
        ++defaulted;
      }
      ASSERT_EQ(st.action(), want.action) << where;
      ASSERT_EQ(st.audit(), want.audit) << where;
      ASSERT_EQ(st.passes(), want.passes) << where;
      ASSERT_FALSE(st.explanation().empty());
      audited += want.audit;
    }
  }
  // The random cases reached every kind of decision.
  EXPECT_GT(matched, 5000);
  EXPECT_GT(defaulted, 5000);
  EXPECT_GT(audited, 200);
}

TEST(TraceStageOf, ExplainsTheDecisionForPeople) {
  v1::VNicRuleset rs;
  rs.set_vnic_id("db-1-nic0");
  auto* r = rs.add_rules();
  r->set_rule_num(3);
  r->set_policy_id("web-to-db");
  r->set_rule_id("allow-pg");
  r->mutable_sources()->set_any(true);
  r->mutable_destinations()->set_any(true);
  auto* s = r->add_services();
  s->set_protocol(6);
  s->add_destination_ports()->set_first(5432);
  r->set_direction(v1::DIRECTION_IN);
  r->set_action(v1::ACTION_ALLOW);
  auto none = [](const std::string&) -> const v1::AddressSet* { return nullptr; };
  TraceFlow f;
  f.src = "198.18.0.1";
  f.dst = "198.18.0.2";
  f.dport = 5432;
  f.egress = false;
  v1::TraceStage st;
  ASSERT_TRUE(TraceStageOf(rs, none, f, &st).ok());
  EXPECT_EQ(st.explanation(),
            "ingress of vNIC db-1-nic0: rule allow-pg (#3) of policy web-to-db allows");
  f.egress = true;  // the rule is for traffic entering the VM only
  ASSERT_TRUE(TraceStageOf(rs, none, f, &st).ok());
  EXPECT_TRUE(st.default_rule());
  EXPECT_EQ(st.explanation(), "egress of vNIC db-1-nic0: no rule matches; the default rule drops");
}

TEST(TraceStageOf, RefusesWhatTheDataplaneWouldRefuseAndBadAddresses) {
  v1::VNicRuleset rs;
  rs.set_vnic_id("v");
  auto* r = rs.add_rules();
  r->set_rule_num(1);
  r->add_services()->set_protocol(6);
  r->mutable_sources()->add_address_set_ids("g:missing");
  r->set_action(v1::ACTION_ALLOW);
  auto none = [](const std::string&) -> const v1::AddressSet* { return nullptr; };
  TraceFlow f;
  f.src = "198.18.0.1";
  f.dst = "198.18.0.2";
  f.dport = 80;
  v1::TraceStage st;
  auto s = TraceStageOf(rs, none, f, &st);
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_NE(s.message().find("address set 'g:missing' was not sent"), std::string::npos)
      << s.message();

  rs.mutable_rules(0)->mutable_sources()->Clear();
  ASSERT_TRUE(TraceStageOf(rs, none, f, &st).ok());
  f.dst = "2001:db8::2";
  s = TraceStageOf(rs, none, f, &st);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("different families"), std::string::npos) << s.message();
  f.dst = "198.18.0.0/24";
  s = TraceStageOf(rs, none, f, &st);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("to_ip"), std::string::npos) << s.message();
}

TEST(TraceFlowOf, DefaultsAndFieldErrors) {
  v1::TraceRequest req;
  req.set_protocol(6);
  req.set_destination_port(5432);
  auto f = TraceFlowOf(req, "198.18.0.1", "198.18.0.2");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->protocol, 6);
  EXPECT_EQ(f->sport, 49152);  // an ephemeral source port
  EXPECT_EQ(f->dport, 5432);
  req.set_source_port(1234);
  EXPECT_EQ(TraceFlowOf(req, "a", "b")->sport, 1234);

  v1::TraceRequest icmp;
  icmp.set_protocol(1);
  f = TraceFlowOf(icmp, "a", "b");
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->sport, 8);  // echo request
  EXPECT_EQ(f->dport, 0);
  icmp.set_protocol(58);
  EXPECT_EQ(TraceFlowOf(icmp, "a", "b")->sport, 128);
  icmp.set_icmp_type(3);
  icmp.set_has_icmp_type(true);
  icmp.set_icmp_code(4);
  f = TraceFlowOf(icmp, "a", "b");
  EXPECT_EQ(f->sport, 3);
  EXPECT_EQ(f->dport, 4);

  v1::TraceRequest gre;
  gre.set_protocol(47);
  f = TraceFlowOf(gre, "a", "b");
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->sport, 0);
  EXPECT_EQ(f->dport, 0);

  auto field_of = [](const v1::TraceRequest& r) {
    auto s = TraceFlowOf(r, "a", "b").status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    std::string m(s.message());
    return m.substr(0, m.find(':'));
  };
  v1::TraceRequest bad;
  EXPECT_EQ(field_of(bad), "protocol");  // 0: none given
  bad.set_protocol(256);
  EXPECT_EQ(field_of(bad), "protocol");
  bad.set_protocol(6);
  EXPECT_EQ(field_of(bad), "destination_port");  // TCP needs one
  bad.set_destination_port(70000);
  EXPECT_EQ(field_of(bad), "destination_port");
  bad.set_destination_port(80);
  bad.set_source_port(70000);
  EXPECT_EQ(field_of(bad), "source_port");
  bad.set_source_port(0);
  bad.set_has_icmp_type(true);
  EXPECT_EQ(field_of(bad), "icmp_type");  // not for TCP
  v1::TraceRequest icmp_ports;
  icmp_ports.set_protocol(1);
  icmp_ports.set_destination_port(80);
  EXPECT_EQ(field_of(icmp_ports), "destination_port");
  icmp_ports.set_destination_port(0);
  icmp_ports.set_icmp_type(300);
  EXPECT_EQ(field_of(icmp_ports), "icmp_type");
  v1::TraceRequest gre_ports;
  gre_ports.set_protocol(47);
  gre_ports.set_destination_port(1);
  EXPECT_EQ(field_of(gre_ports), "destination_port");
}

}  // namespace
}  // namespace dfw::controller
