#include "random_rules.h"

#include <string>

namespace dfw::dataplane::testing {
namespace {

Ip128 Random128(std::mt19937_64& r) { return Ip128{r(), r()}; }

}  // namespace

RandomRules::RandomRules(uint64_t seed, RandomRulesOptions opt) : rng_(seed), opt_(opt) {
  for (int i = 0; i < 6; ++i) {
    anchors4_.push_back(Ip128{0, rng_() & 0xffffffffull});
    anchors6_.push_back(Random128(rng_));
  }
  anchors4_.push_back(Ip128{0, 0});
  anchors4_.push_back(Ip128{0, 0xffffffffull});
}

Ip128 RandomRules::Around(Family f) {
  // An anchor with some low bits scrambled: nearby prefixes overlap and nest.
  const auto& anchors = f == Family::kV4 ? anchors4_ : anchors6_;
  Ip128 a = anchors[rng_() % anchors.size()];
  const int width = f == Family::kV4 ? 32 : 128;
  const int scramble = static_cast<int>(rng_() % (width - 7));
  for (int b = 0; b < scramble; ++b) {
    if (rng_() & 1) {
      if (b < 64) {
        a.lo ^= 1ull << b;
      } else {
        a.hi ^= 1ull << (b - 64);
      }
    }
  }
  if (f == Family::kV4) a = Ip128{0, a.lo & 0xffffffffull};
  return a;
}

IpPrefix RandomRules::MakePrefix(Family f) {
  const Ip128 a = Around(f);
  // Favour the interesting lengths; short prefixes are rare (as in real
  // groups), else most packets would stop at the first few rules.
  if (f == Family::kV4) {
    static constexpr uint8_t kLens[] = {16, 20, 24, 24, 28, 30, 31, 32, 32, 32};
    uint8_t len = static_cast<uint8_t>(12 + rng_() % 21);
    if (rng_() & 1) len = kLens[rng_() % std::size(kLens)];
    if (rng_() % 50 == 0) len = static_cast<uint8_t>(rng_() % 9);
    return IpPrefix::V4(static_cast<uint32_t>(a.lo), len);
  }
  static constexpr uint8_t kLens6[] = {48, 56, 63, 64, 65, 96, 120, 127, 128, 128};
  uint8_t len = static_cast<uint8_t>(40 + rng_() % 89);
  if (rng_() & 1) len = kLens6[rng_() % std::size(kLens6)];
  if (rng_() % 50 == 0) len = static_cast<uint8_t>(rng_() % 33);
  return IpPrefix::V6(a, len);
}

std::vector<IpPrefix> RandomRules::MakePrefixes(uint32_t n) {
  std::vector<IpPrefix> out;
  for (uint32_t i = 0; i < n; ++i) {
    const bool v6 = opt_.ipv6 && rng_() % 3 == 0;
    out.push_back(MakePrefix(v6 ? Family::kV6 : Family::kV4));
  }
  return out;
}

uint16_t RandomRules::Port() {
  static constexpr uint16_t kPorts[] = {0,   1,    22,   53,   79,    80,   81,
                                        443, 1023, 1024, 8080, 65534, 65535};
  return (rng_() % 3 != 0) ? kPorts[rng_() % std::size(kPorts)] : static_cast<uint16_t>(rng_());
}

uint8_t RandomRules::Proto() {
  static constexpr uint8_t kProtos[] = {6, 6, 17, 17, 1, 58, 132, 47};
  return (rng_() % 8 != 0) ? kProtos[rng_() % std::size(kProtos)] : static_cast<uint8_t>(rng_());
}

PortRange RandomRules::Range() {
  // Mostly one port or a narrow range; sometimes a wide one between two
  // interesting ports.
  uint16_t a = Port(), b = a;
  const uint32_t kind = rng_() % 10;
  if (kind >= 4 && kind < 8) b = static_cast<uint16_t>(std::min<uint32_t>(65535, a + rng_() % 200));
  if (kind >= 8) b = Port();
  if (a > b) std::swap(a, b);
  return PortRange{a, b};
}

RulesetSpec RandomRules::MakeSpec() {
  RulesetSpec spec;
  for (uint32_t s = 0; s < opt_.sets; ++s) {
    spec.address_sets.push_back(
        AddressSetSpec{"set" + std::to_string(s), MakePrefixes(1 + rng_() % 6)});
  }
  std::uniform_real_distribution<double> u(0, 1);
  auto endpoint = [&]() {
    EndpointSpec ep;
    if (u(rng_) < opt_.p_any) return ep;
    ep.any = false;
    const uint32_t n = 1 + rng_() % 3;
    for (uint32_t i = 0; i < n; ++i)
      ep.address_sets.push_back("set" + std::to_string(rng_() % opt_.sets));
    ep.negate = u(rng_) < opt_.p_negate;
    return ep;
  };
  for (uint32_t i = 0; i < opt_.rules; ++i) {
    RuleSpec r;
    r.rule_num = 1000 + i;
    r.src = endpoint();
    r.dst = endpoint();
    const uint32_t ns = rng_() % 20 == 0 ? 0 : 1 + rng_() % opt_.max_services;
    for (uint32_t k = 0; k < ns; ++k) {
      ServiceSpec s;
      const uint32_t kind = rng_() % 12;
      if (kind == 0) {
        // any protocol
      } else if (kind <= 2) {
        const uint8_t p = (rng_() & 1) ? 1 : 58;
        std::optional<uint8_t> type, code;
        if (rng_() % 3 != 0) type = static_cast<uint8_t>(rng_() % 4 == 0 ? 0 : 8 + rng_() % 3);
        if (type && rng_() % 2 == 0) code = static_cast<uint8_t>(rng_() % 3);
        s = ServiceSpec::Icmp(p, type, code);
      } else {
        s.proto = Proto();
        const uint32_t nsp = rng_() % 4 == 0 ? 1 + rng_() % 2 : 0;
        const uint32_t ndp = rng_() % 8 != 0 ? 1 + rng_() % 3 : 0;
        for (uint32_t j = 0; j < nsp; ++j) s.sports.push_back(Range());
        for (uint32_t j = 0; j < ndp; ++j) s.dports.push_back(Range());
      }
      r.services.push_back(s);
    }
    r.direction = static_cast<RuleDirection>(rng_() % 3);
    r.action = static_cast<Action>(rng_() % 3);
    spec.rules.push_back(std::move(r));
  }
  return spec;
}

Ip128 RandomRules::PointIn(const IpPrefix& p) {
  const Ip128 last = p.Last();
  Ip128 r = Random128(rng_);
  // Keep the prefix bits, randomise the host bits; sometimes take an edge.
  const uint32_t edge = rng_() % 4;
  if (edge == 0) return p.First();
  if (edge == 1) return last;
  Ip128 host{last.hi ^ p.addr.hi, last.lo ^ p.addr.lo};
  return Ip128{p.addr.hi | (r.hi & host.hi), p.addr.lo | (r.lo & host.lo)};
}

FlowKey RandomRules::MakeKey(const RulesetSpec& spec) {
  FlowKey k;
  k.dir = static_cast<Direction>(rng_() & 1);
  k.family = (opt_.ipv6 && rng_() % 3 == 0) ? Family::kV6 : Family::kV4;
  k.src = Around(k.family);
  k.dst = Around(k.family);
  k.proto = Proto();
  k.sport = Port();
  k.dport = Port();
  if (spec.rules.empty() || (rng_() & 1)) return k;
  const RuleSpec& r = spec.rules[rng_() % spec.rules.size()];
  auto pick = [&](const EndpointSpec& ep, Ip128* out) {
    if (ep.any || ep.negate || ep.address_sets.empty()) return;
    const std::string& id = ep.address_sets[rng_() % ep.address_sets.size()];
    for (const AddressSetSpec& s : spec.address_sets) {
      if (s.id != id || s.prefixes.empty()) continue;
      const IpPrefix& p = s.prefixes[rng_() % s.prefixes.size()];
      if (p.family != k.family) return;
      *out = PointIn(p);
      return;
    }
  };
  // Choose the family from the source set when it has one.
  if (!r.src.any && !r.src.negate && !r.src.address_sets.empty()) {
    for (const AddressSetSpec& s : spec.address_sets) {
      if (s.id == r.src.address_sets[0] && !s.prefixes.empty()) {
        k.family = s.prefixes[rng_() % s.prefixes.size()].family;
        k.src = Around(k.family);
        k.dst = Around(k.family);
      }
    }
  }
  pick(r.src, &k.src);
  pick(r.dst, &k.dst);
  if (r.direction != RuleDirection::kBoth) k.dir = static_cast<Direction>(r.direction);
  if (!r.services.empty()) {
    const ServiceSpec& s = r.services[rng_() % r.services.size()];
    if (s.proto) k.proto = *s.proto;
    auto in = [&](const std::vector<PortRange>& rs, uint16_t* port) {
      if (rs.empty()) return;
      const PortRange& pr = rs[rng_() % rs.size()];
      *port = static_cast<uint16_t>(pr.lo + rng_() % (uint32_t{pr.hi} - pr.lo + 1));
    };
    in(s.sports, &k.sport);
    in(s.dports, &k.dport);
  }
  return k;
}

}  // namespace dfw::dataplane::testing
