#include "dfw/vmagent/nft_ruleset.h"

#include <algorithm>
#include <optional>
#include <set>

namespace dfw::vmagent {
namespace {

using dfw::v1::CompiledEndpoints;
using dfw::v1::CompiledRule;
using dfw::v1::Service;

absl::Status Invalid(const std::string& field, const std::string& what) {
  return absl::InvalidArgumentError(field + ": " + what);
}

// A port (or ICMP type/code) list in nft syntax: "80", "1-3", "{ 80, 443 }";
// overlapping and adjacent ranges merged (nft refuses overlapping ones).
std::string PortList(std::vector<std::pair<uint32_t, uint32_t>> r) {
  std::sort(r.begin(), r.end());
  std::vector<std::pair<uint32_t, uint32_t>> m;
  for (const auto& x : r) {
    if (!m.empty() && x.first <= m.back().second + 1) {
      m.back().second = std::max(m.back().second, x.second);
    } else {
      m.push_back(x);
    }
  }
  auto one = [](const std::pair<uint32_t, uint32_t>& x) {
    return x.first == x.second ? std::to_string(x.first)
                               : std::to_string(x.first) + "-" + std::to_string(x.second);
  };
  if (m.size() == 1) return one(m[0]);
  std::string s = "{ ";
  for (size_t i = 0; i < m.size(); ++i) s += (i ? ", " : "") + one(m[i]);
  return s + " }";
}

// One service as nft matches. family: nullopt = both, else the only family it
// can match (ICMP is IPv4's, ICMPv6 IPv6's).
struct ServiceMatch {
  std::string match;  // without a trailing space; "" = any
  std::optional<Family> family;
  bool tcp_only = false;  // reject with tcp reset
  bool any_proto = false;
};

absl::StatusOr<ServiceMatch> RenderService(const Service& s, const std::string& f) {
  ServiceMatch out;
  if (s.protocol() > 255)
    return Invalid(f + ".protocol", std::to_string(s.protocol()) + " is above 255");
  const bool icmp = s.protocol() == 1 || s.protocol() == 58;
  if (icmp) {
    if (s.source_ports_size() || s.destination_ports_size()) {
      return Invalid(f, "ICMP services take icmp_type/icmp_code, not ports");
    }
    if (s.has_icmp_code() && !s.has_icmp_type())
      return Invalid(f + ".icmp_code", "needs icmp_type");
    if (s.has_icmp_type() && s.icmp_type() > 255) return Invalid(f + ".icmp_type", "is above 255");
    if (s.has_icmp_code() && s.icmp_code() > 255) return Invalid(f + ".icmp_code", "is above 255");
    const std::string kw = s.protocol() == 1 ? "icmp" : "icmpv6";
    out.family = s.protocol() == 1 ? Family::kV4 : Family::kV6;
    out.match = "meta l4proto " + kw;
    if (s.has_icmp_type()) out.match += " " + kw + " type " + std::to_string(s.icmp_type());
    if (s.has_icmp_code()) out.match += " " + kw + " code " + std::to_string(s.icmp_code());
    return out;
  }
  if (s.has_icmp_type() || s.has_icmp_code()) {
    return Invalid(f, "icmp_type/icmp_code need protocol 1 or 58");
  }
  auto ranges = [&](const auto& list, const std::string& name,
                    std::vector<std::pair<uint32_t, uint32_t>>* to) -> absl::Status {
    for (int i = 0; i < list.size(); ++i) {
      const uint32_t first = list[i].first();
      const uint32_t last = list[i].last() ? list[i].last() : first;
      if (first > 65535 || last > 65535 || first > last) {
        return Invalid(f + "." + name + "[" + std::to_string(i) + "]",
                       "range " + std::to_string(first) + ".." + std::to_string(last) +
                           " is not within 0..65535 in order");
      }
      to->emplace_back(first, last);
    }
    return absl::OkStatus();
  };
  std::vector<std::pair<uint32_t, uint32_t>> sp, dp;
  if (auto st = ranges(s.source_ports(), "source_ports", &sp); !st.ok()) return st;
  if (auto st = ranges(s.destination_ports(), "destination_ports", &dp); !st.ok()) return st;
  const uint32_t p = s.protocol();
  std::string l4;  // the payload keyword for ports
  if (p == 0) {
    out.any_proto = true;
    if (sp.empty() && dp.empty()) return out;
    // Ports without a protocol: the protocols that have ports.
    out.match = "meta l4proto { tcp, udp, sctp }";
    l4 = "th";
  } else if (p == 6 || p == 17 || p == 132) {
    l4 = p == 6 ? "tcp" : p == 17 ? "udp" : "sctp";
    out.match = "meta l4proto " + l4;
    out.tcp_only = p == 6;
  } else {
    out.match = "meta l4proto " + std::to_string(p);
    l4 = "th";
  }
  if (!sp.empty()) out.match += " " + l4 + " sport " + PortList(sp);
  if (!dp.empty()) out.match += " " + l4 + " dport " + PortList(dp);
  return out;
}

struct Verdict {
  std::string kind;  // allow, drop, reject, audit
  bool stateful = false;
  bool log = false;
};

std::string Join(const std::vector<std::string>& parts) {
  std::string s;
  for (const auto& p : parts) {
    if (p.empty()) continue;
    if (!s.empty()) s += ' ';
    s += p;
  }
  return s;
}

// The terminal statements of a rule expansion; `tcp` says whether the
// expansion matches TCP only (reject with tcp reset).
std::string Terminal(const Verdict& v, uint32_t rule_num, uint32_t mark, bool tcp,
                     const RenderOptions& o) {
  std::vector<std::string> s;
  if ((v.kind == "allow" || v.kind == "audit") && v.stateful) {
    s.push_back("ct mark set " + std::to_string(mark));
  }
  s.push_back("counter");
  if (v.log || v.kind == "audit") {
    s.push_back("log prefix \"dfw:" + v.kind + ":" + std::to_string(rule_num) + "\" group " +
                std::to_string(o.nflog_group));
  }
  if (v.kind == "allow" || v.kind == "audit") {
    s.push_back("accept");
  } else if (v.kind == "drop") {
    s.push_back("drop");
  } else {
    s.push_back(tcp ? "reject with tcp reset" : "reject with icmpx admin-prohibited");
  }
  s.push_back("comment \"r" + std::to_string(rule_num) + "\"");
  return Join(s);
}

// One endpoint's alternatives for a family: each alternative is one nft
// match (a union of sets is one rule per set; a negated union one rule).
std::vector<std::string> EndpointAlternatives(const CompiledEndpoints& e, bool source, Family f,
                                              const SetNames& names) {
  if (e.any() || e.address_set_ids_size() == 0) return {""};
  const std::string field =
      std::string(f == Family::kV4 ? "ip" : "ip6") + (source ? " saddr " : " daddr ");
  std::vector<std::string> alts;
  if (e.negate()) {
    std::vector<std::string> parts;
    for (const auto& id : e.address_set_ids()) {
      parts.push_back(field + "!= @" + SetName(*names.Find(id), f));
    }
    return {Join(parts)};
  }
  for (const auto& id : e.address_set_ids())
    alts.push_back(field + "@" + SetName(*names.Find(id), f));
  return alts;
}

absl::Status CheckEndpoints(const CompiledEndpoints& e, const std::string& f,
                            const SetNames& names) {
  if (e.any() && e.address_set_ids_size())
    return Invalid(f, "'any' and address sets are exclusive");
  if (e.negate() && (e.any() || e.address_set_ids_size() == 0)) {
    return Invalid(f, "negating 'any' matches nothing");
  }
  for (int i = 0; i < e.address_set_ids_size(); ++i) {
    if (!names.Find(e.address_set_ids(i))) {
      return Invalid(f + ".address_set_ids[" + std::to_string(i) + "]",
                     "address set '" + e.address_set_ids(i) + "' was not sent");
    }
  }
  return absl::OkStatus();
}

bool IsAny(const CompiledEndpoints& e) { return e.any() || e.address_set_ids_size() == 0; }

// Appends the expansions of one rule (or the default rule: `rule` null) to
// the chain's rules.
void Expand(const CompiledRule* rule, const std::vector<ServiceMatch>& services, const Verdict& v,
            uint32_t rule_num, uint32_t mark, const SetNames& names, const RenderOptions& o,
            std::vector<std::string>* out) {
  const bool both_any = !rule || (IsAny(rule->sources()) && IsAny(rule->destinations()));
  std::vector<ServiceMatch> svcs = services;
  if (svcs.empty()) svcs.push_back(ServiceMatch{"", std::nullopt, false, true});
  for (const ServiceMatch& s : svcs) {
    // Reject on a service that may be TCP or not: TCP gets a reset first.
    std::vector<std::pair<std::string, bool>> variants;  // extra match, tcp
    if (v.kind == "reject" && s.any_proto) {
      variants.push_back({"meta l4proto tcp", true});
      variants.push_back({"", false});
    } else {
      variants.push_back({"", s.tcp_only});
    }
    for (const auto& [extra, tcp] : variants) {
      const std::string term = Terminal(v, rule_num, mark, tcp, o);
      if (both_any && !s.family) {
        out->push_back(Join({s.match, extra, term}));
        continue;
      }
      for (Family f : {Family::kV4, Family::kV6}) {
        if (s.family && *s.family != f) continue;
        std::vector<std::string> src{""}, dst{""};
        if (rule) {
          src = EndpointAlternatives(rule->sources(), true, f, names);
          dst = EndpointAlternatives(rule->destinations(), false, f, names);
        }
        for (const auto& a : src) {
          for (const auto& b : dst) {
            const std::string fam =
                a.empty() && b.empty()
                    ? (f == Family::kV4 ? "meta nfproto ipv4" : "meta nfproto ipv6")
                    : "";
            out->push_back(Join({fam, a, b, s.match, extra, term}));
          }
        }
      }
    }
  }
}

}  // namespace

const std::string& SetNames::NameFor(const std::string& address_set_id) {
  auto it = names_.find(address_set_id);
  if (it != names_.end()) return it->second;
  return names_.emplace(address_set_id, "a" + std::to_string(next_++)).first->second;
}

const std::string* SetNames::Find(const std::string& address_set_id) const {
  auto it = names_.find(address_set_id);
  return it == names_.end() ? nullptr : &it->second;
}

void SetNames::Erase(const std::string& address_set_id) { names_.erase(address_set_id); }

uint64_t ChainIds::IdFor(const std::string& vnic_id) {
  auto it = ids_.find(vnic_id);
  if (it != ids_.end()) return it->second;
  return ids_.emplace(vnic_id, next_++).first->second;
}

const uint64_t* ChainIds::Find(const std::string& vnic_id) const {
  auto it = ids_.find(vnic_id);
  return it == ids_.end() ? nullptr : &it->second;
}

void ChainIds::Erase(const std::string& vnic_id) { ids_.erase(vnic_id); }

std::string SetName(const std::string& base, Family f) {
  return base + (f == Family::kV4 ? "_4" : "_6");
}

absl::Status CheckText(const std::string& text, const std::string& field, size_t max_len) {
  if (text.size() > max_len) {
    return Invalid(field, "'" + text.substr(0, 32) + "...' is longer than " +
                              std::to_string(max_len) + " bytes");
  }
  for (unsigned char c : text) {
    if (c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '*') {
      return Invalid(field, "character 0x" + std::to_string(c) +
                                " cannot be put in nft text (printable ASCII without \" \\ *)");
    }
  }
  return absl::OkStatus();
}

absl::Status CheckInterfaceName(const std::string& name, const std::string& field) {
  if (name.empty() || name.size() > 15)
    return Invalid(field, "interface name '" + name + "' is not 1..15 bytes");
  for (unsigned char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-' || c == '.' || c == '@' || c == ':' || c == '+';
    if (!ok)
      return Invalid(field, "interface name '" + name + "' has a character nft text cannot carry");
  }
  return absl::OkStatus();
}

absl::Status CheckTableName(const std::string& name) {
  if (name.empty() || name.size() > 32) return Invalid("RenderOptions.table", "is not 1..32 bytes");
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                    (i > 0 && c >= '0' && c <= '9');
    if (!ok) return Invalid("RenderOptions.table", "'" + name + "' is not an identifier");
  }
  return absl::OkStatus();
}

std::string BaseChainSpec(bool is_input) {
  return std::string("type filter hook ") + (is_input ? "input" : "output") +
         " priority filter; policy accept;";
}

std::string RenderSetDecl(const std::string& name, Family f, const std::string& comment,
                          const std::vector<AddrRange>& ranges) {
  // nft keeps at most 128 bytes of a comment; an address set id may be
  // longer ("r:<policy>/<rule>/src", 263): the comment is only a label
  // (SetNames maps names to ids), so a long one is cut, never refused.
  const std::string label = comment.size() <= 120 ? comment : comment.substr(0, 117) + "...";
  std::string s = "set " + name + " { type " + (f == Family::kV4 ? "ipv4_addr" : "ipv6_addr") +
                  "; flags interval; comment \"" + label + "\";";
  if (!ranges.empty()) {
    s += " elements = { ";
    for (size_t i = 0; i < ranges.size(); ++i) {
      if (i) s += ", ";
      s += FormatRange(f, ranges[i]);
    }
    s += " }";
  }
  return s + " }";
}

absl::StatusOr<VnicChains> RenderVnic(const dfw::v1::VNicRuleset& rs, const std::string& iface,
                                      uint64_t chain_id, const RenderOptions& o,
                                      const SetNames& names) {
  const std::string where = "vNIC '" + rs.vnic_id() + "'";
  VnicChains out;
  out.vnic_id = rs.vnic_id();
  out.iface = iface;
  out.id = chain_id;
  if (auto st = CheckInterfaceName(iface, where + " interface"); !st.ok()) return st;
  for (auto* chain : {&out.in, &out.out}) {
    chain->push_back("ct state invalid counter drop comment \"ct-invalid\"");
    chain->push_back("ct state established ct mark != 0 counter accept comment \"ct-established\"");
    // Related traffic passes as in the dataplane; it includes the RST/ICMP
    // our own reject sends (attached to the rejected packet's conntrack).
    chain->push_back("ct state related counter accept comment \"ct-related\"");
  }
  for (int i = 0; i < rs.rules_size(); ++i) {
    const CompiledRule& r = rs.rules(i);
    const std::string f = where + " rules[" + std::to_string(i) + "]";
    if (r.rule_num() == 0) return Invalid(f + ".rule_num", "0 is the default rule's number");
    if (r.rule_num() == kDefaultAllowMark)
      return Invalid(f + ".rule_num", "0xffffffff is reserved");
    if (auto st = CheckEndpoints(r.sources(), f + ".sources", names); !st.ok()) return st;
    if (auto st = CheckEndpoints(r.destinations(), f + ".destinations", names); !st.ok()) return st;
    std::vector<ServiceMatch> services;
    for (int k = 0; k < r.services_size(); ++k) {
      auto s = RenderService(r.services(k), f + ".services[" + std::to_string(k) + "]");
      if (!s.ok()) return s.status();
      services.push_back(*s);
    }
    Verdict v;
    switch (r.action()) {
      case dfw::v1::ACTION_ALLOW:
        v.kind = "allow";
        break;
      case dfw::v1::ACTION_DROP:
        v.kind = "drop";
        break;
      case dfw::v1::ACTION_REJECT:
        v.kind = "reject";
        break;
      default:
        return Invalid(f + ".action", "must be ALLOW, DROP or REJECT");
    }
    const bool audit = r.mode() == dfw::v1::POLICY_MODE_AUDIT || o.audit_all;
    if (v.kind != "allow" && audit) v.kind = "audit";
    v.stateful = r.stateful();
    v.log = r.log();
    const bool in = r.direction() != dfw::v1::DIRECTION_OUT;
    const bool outd = r.direction() != dfw::v1::DIRECTION_IN;
    if (in) Expand(&r, services, v, r.rule_num(), r.rule_num(), names, o, &out.in);
    if (outd) Expand(&r, services, v, r.rule_num(), r.rule_num(), names, o, &out.out);
  }
  // The default rule: DROP unless said otherwise; its allow is stateful; a
  // denying default always logs (as the dataplane's).
  Verdict d;
  const auto a = rs.has_default_rule() ? rs.default_rule().action() : dfw::v1::ACTION_DROP;
  d.kind = a == dfw::v1::ACTION_ALLOW ? "allow" : a == dfw::v1::ACTION_REJECT ? "reject" : "drop";
  d.log = !rs.has_default_rule() || rs.default_rule().log() || d.kind != "allow";
  if (d.kind != "allow" && o.audit_all) d.kind = "audit";
  d.stateful = true;
  Expand(nullptr, {}, d, 0, kDefaultAllowMark, names, o, &out.in);
  Expand(nullptr, {}, d, 0, kDefaultAllowMark, names, o, &out.out);
  return out;
}

absl::StatusOr<std::vector<std::string>> RenderBaseRules(bool is_input,
                                                         const std::vector<VnicChains>& vnics,
                                                         const RenderOptions& o) {
  std::vector<std::string> r;
  const std::string c = " counter accept comment \"bypass\"";
  r.push_back(std::string(is_input ? "iif" : "oif") + " lo" + c);
  if (o.bypass.controller_port != 0) {
    for (size_t i = 0; i < o.bypass.controller_ips.size(); ++i) {
      auto a = ParseAddr(o.bypass.controller_ips[i],
                         "RenderOptions.bypass.controller_ips[" + std::to_string(i) + "]");
      if (!a.ok()) return a.status();
      const std::string ip = a->first == Family::kV4 ? "ip" : "ip6";
      const std::string addr = FormatAddr(a->first, a->second);
      const std::string port = std::to_string(o.bypass.controller_port);
      r.push_back(is_input
                      ? ip + " saddr " + addr + " tcp sport " + port + " ct state established" + c
                      : ip + " daddr " + addr + " tcp dport " + port + c);
    }
  }
  if (o.bypass.dhcp) {
    r.push_back(is_input ? "meta nfproto ipv4 udp sport 67 udp dport 68" + c
                         : "meta nfproto ipv4 udp sport 68 udp dport 67" + c);
    r.push_back(is_input ? "meta nfproto ipv6 udp sport 547 udp dport 546" + c
                         : "meta nfproto ipv6 udp sport 546 udp dport 547" + c);
  }
  if (o.bypass.neighbour_discovery) {
    // RS, RA, NS, NA, and MLD (130-132, 143: switches that snoop MLD
    // forward multicast, ND's included, only to listeners that report).
    r.push_back("meta l4proto icmpv6 icmpv6 type { 130, 131, 132, 133, 134, 135, 136, 143 }" + c);
  }
  for (const VnicChains& v : vnics) {
    if (auto st = CheckInterfaceName(v.iface, "vNIC '" + v.vnic_id + "' interface"); !st.ok())
      return st;
    r.push_back(std::string(is_input ? "iifname \"" : "oifname \"") + v.iface + "\" jump " +
                (is_input ? "in_" : "out_") + std::to_string(v.id));
  }
  return r;
}

absl::StatusOr<std::string> RenderTable(const dfw::v1::HostDesiredState& state,
                                        const InterfaceMap& ifaces, const RenderOptions& o,
                                        SetNames* names, std::vector<std::string>* skipped,
                                        ChainIds* chains) {
  if (auto st = CheckTableName(o.table); !st.ok()) return st;
  std::string sets;
  std::set<std::string> seen;
  for (int i = 0; i < state.address_sets_size(); ++i) {
    const auto& as = state.address_sets(i);
    const std::string f = "address_sets[" + std::to_string(i) + "]";
    if (!seen.insert(as.id()).second) return Invalid(f + ".id", "'" + as.id() + "' is sent twice");
    if (auto st = CheckText(as.id(), f + ".id", 1024); !st.ok()) return st;
    AddrRanges ranges;
    auto diff = ranges.Apply(as.prefixes(), std::vector<std::string>{});
    if (!diff.ok()) return Invalid(f + ".prefixes", std::string(diff.status().message()));
    const std::string& base = names->NameFor(as.id());
    for (Family fam : {Family::kV4, Family::kV6}) {
      sets += "  " + RenderSetDecl(SetName(base, fam), fam, as.id(), ranges.Ranges(fam)) + "\n";
    }
  }
  ChainIds local;
  if (!chains) chains = &local;
  std::vector<VnicChains> vnics;
  for (const auto& rs : state.rulesets()) {
    auto it = ifaces.find(rs.vnic_id());
    // No interface, or a name nft text cannot carry (Linux allows almost
    // any byte): that vNIC alone is skipped and named, the rest enforced.
    if (it == ifaces.end() || !CheckInterfaceName(it->second, "interface").ok()) {
      if (skipped) skipped->push_back(rs.vnic_id());
      continue;
    }
    auto v = RenderVnic(rs, it->second, chains->IdFor(rs.vnic_id()), o, *names);
    if (!v.ok()) return v.status();
    vnics.push_back(std::move(*v));
  }
  std::string t = "table inet " + o.table + "\ndelete table inet " + o.table + "\ntable inet " +
                  o.table + " {\n" + sets;
  for (bool input : {true, false}) {
    auto base = RenderBaseRules(input, vnics, o);
    if (!base.ok()) return base.status();
    t += std::string("  chain ") + (input ? "input" : "output") + " {\n    " +
         BaseChainSpec(input) + "\n";
    for (const auto& r : *base) t += "    " + r + "\n";
    t += "  }\n";
  }
  for (const auto& v : vnics) {
    for (bool input : {true, false}) {
      t += std::string("  chain ") + (input ? "in_" : "out_") + std::to_string(v.id) + " {\n";
      for (const auto& r : input ? v.in : v.out) t += "    " + r + "\n";
      t += "  }\n";
    }
  }
  return t + "}\n";
}

}  // namespace dfw::vmagent
