#include "dfw/dataplane/rule_proto.h"

#include <cstdint>
#include <optional>

namespace dfw::dataplane {
namespace {

Status Err(const std::string& where, const std::string& what) {
  return Status::Error(where + ": " + what);
}

Action ActionOf(v1::Action a) {
  return a == v1::ACTION_ALLOW    ? Action::kAllow
         : a == v1::ACTION_REJECT ? Action::kReject
                                  : Action::kDrop;
}

Status ServiceFromProto(const v1::Service& s, const std::string& f, ServiceSpec* out) {
  if (s.protocol() > 255)
    return Err(f + ".protocol", std::to_string(s.protocol()) + " is above 255");
  bool icmp = s.protocol() == 1 || s.protocol() == 58;
  if (icmp) {
    if (s.source_ports_size() || s.destination_ports_size()) {
      return Err(f, "ICMP services take icmp_type/icmp_code, not ports");
    }
    if (s.has_icmp_code() && !s.has_icmp_type()) return Err(f + ".icmp_code", "needs icmp_type");
    if (s.has_icmp_type() && s.icmp_type() > 255) return Err(f + ".icmp_type", "is above 255");
    if (s.has_icmp_code() && s.icmp_code() > 255) return Err(f + ".icmp_code", "is above 255");
    std::optional<uint8_t> t, c;
    if (s.has_icmp_type()) t = static_cast<uint8_t>(s.icmp_type());
    if (s.has_icmp_code()) c = static_cast<uint8_t>(s.icmp_code());
    *out = ServiceSpec::Icmp(static_cast<uint8_t>(s.protocol()), t, c);
    return Status::Ok();
  }
  if (s.has_icmp_type() || s.has_icmp_code())
    return Err(f, "icmp_type/icmp_code need protocol 1 or 58");
  ServiceSpec spec;
  if (s.protocol() != 0) spec.proto = static_cast<uint8_t>(s.protocol());
  auto ranges = [&](const auto& list, const std::string& name, std::vector<PortRange>* to) {
    for (int i = 0; i < list.size(); ++i) {
      uint32_t first = list[i].first(), last = list[i].last() ? list[i].last() : list[i].first();
      std::string rf = f + "." + name + "[" + std::to_string(i) + "]";
      if (first > 65535 || last > 65535 || first > last) {
        return Err(rf, "range " + std::to_string(first) + ".." + std::to_string(last) +
                           " is not within 0..65535 in order");
      }
      to->push_back(PortRange{static_cast<uint16_t>(first), static_cast<uint16_t>(last)});
    }
    return Status::Ok();
  };
  if (auto st = ranges(s.source_ports(), "source_ports", &spec.sports); !st.ok()) return st;
  if (auto st = ranges(s.destination_ports(), "destination_ports", &spec.dports); !st.ok())
    return st;
  *out = spec;
  return Status::Ok();
}

}  // namespace

Status RulesetSpecFromProto(const v1::VNicRuleset& rs,
                            const std::map<std::string, v1::AddressSet>& sets, RulesetSpec* spec,
                            std::vector<RuleMeta>* meta) {
  return RulesetSpecFromProto(
      rs, rs.vnic_id(),
      [&sets](const std::string& id) -> const v1::AddressSet* {
        auto it = sets.find(id);
        return it == sets.end() ? nullptr : &it->second;
      },
      spec, meta);
}

Status RulesetSpecFromProto(const v1::VNicRuleset& rs, const std::string& vnic_id,
                            const std::function<const v1::AddressSet*(const std::string&)>& sets,
                            RulesetSpec* spec, std::vector<RuleMeta>* meta) {
  std::string where = "vNIC '" + vnic_id + "'";
  std::map<std::string, const v1::AddressSet*> found;
  std::map<uint32_t, int> nums;  // rule_num -> first index
  for (int i = 0; i < rs.rules_size(); ++i) {
    const auto& r = rs.rules(i);
    std::string f = where + " rules[" + std::to_string(i) + "]";
    // A rule number names one rule (counters, flow records, connections).
    if (auto [it, fresh] = nums.emplace(r.rule_num(), i); !fresh) {
      return Err(f + ".rule_num", std::to_string(r.rule_num()) + " is also rules[" +
                                      std::to_string(it->second) + "]'s");
    }
    RuleSpec rule;
    rule.rule_num = r.rule_num();
    auto endpoints = [&](const v1::CompiledEndpoints& e, const std::string& name,
                         EndpointSpec* to) {
      to->any = e.any() || e.address_set_ids_size() == 0;
      to->negate = e.negate();
      if (e.any() && e.address_set_ids_size()) {
        return Err(f + "." + name, "'any' and address sets are exclusive");
      }
      for (const auto& id : e.address_set_ids()) {
        const v1::AddressSet* set = sets(id);
        if (!set) return Err(f + "." + name, "address set '" + id + "' was not sent");
        to->address_sets.push_back(id);
        found.emplace(id, set);
      }
      if (e.negate() && to->any) return Err(f + "." + name, "negating 'any' matches nothing");
      return Status::Ok();
    };
    if (auto st = endpoints(r.sources(), "sources", &rule.src); !st.ok()) return st;
    if (auto st = endpoints(r.destinations(), "destinations", &rule.dst); !st.ok()) return st;
    for (int k = 0; k < r.services_size(); ++k) {
      ServiceSpec s;
      if (auto st = ServiceFromProto(r.services(k), f + ".services[" + std::to_string(k) + "]", &s);
          !st.ok()) {
        return st;
      }
      rule.services.push_back(s);
    }
    switch (r.direction()) {
      case v1::DIRECTION_IN:
        rule.direction = RuleDirection::kIn;
        break;
      case v1::DIRECTION_OUT:
        rule.direction = RuleDirection::kOut;
        break;
      default:
        rule.direction = RuleDirection::kBoth;
        break;
    }
    if (r.action() == v1::ACTION_UNSPECIFIED)
      return Err(f + ".action", "must be ALLOW, DROP or REJECT");
    rule.action = ActionOf(r.action());
    spec->rules.push_back(rule);
    RuleMeta m;
    m.rule_num = r.rule_num();
    m.action = rule.action;
    m.stateful = r.stateful();
    m.audit = r.mode() == v1::POLICY_MODE_AUDIT;
    m.revalidate = r.on_change() == v1::ON_CHANGE_REVALIDATE;
    m.log = r.log();
    meta->push_back(m);
  }
  for (const auto& [id, set] : found) {
    AddressSetSpec as;
    as.id = id;
    if (auto st = ParsePrefixes(*set, &as.prefixes); !st.ok()) return st;
    spec->address_sets.push_back(std::move(as));
  }
  spec->default_action =
      rs.has_default_rule() ? ActionOf(rs.default_rule().action()) : Action::kDrop;
  if (rs.has_default_rule() && rs.default_rule().action() == v1::ACTION_UNSPECIFIED) {
    spec->default_action = Action::kDrop;
  }
  return Status::Ok();
}

Status ParsePrefixes(const v1::AddressSet& set, std::vector<IpPrefix>* out) {
  out->clear();
  out->reserve(static_cast<size_t>(set.prefixes_size()));
  for (int i = 0; i < set.prefixes_size(); ++i) {
    auto p = IpPrefix::Parse(set.prefixes(i));
    if (!p) {
      return Err("address set '" + set.id() + "' prefixes[" + std::to_string(i) + "]",
                 "'" + set.prefixes(i) + "' is not a prefix (or has host bits set)");
    }
    out->push_back(*p);
  }
  return Status::Ok();
}

}  // namespace dfw::dataplane
