#include "dfw/vmagent/ruleset_eval.h"

namespace dfw::vmagent {
namespace {

bool EndpointMatches(const v1::CompiledEndpoints& e, const SetLookup& sets, Family f, Addr a) {
  if (e.any() || e.address_set_ids_size() == 0) return true;
  bool in = false;
  for (const auto& id : e.address_set_ids()) {
    const AddrRanges* r = sets(id);
    if (r && r->Contains(f, a)) {
      in = true;
      break;
    }
  }
  return e.negate() ? !in : in;
}

template <typename L>
bool InRanges(const L& list, uint16_t v) {
  if (list.empty()) return true;
  for (const auto& r : list) {
    const uint32_t last = r.last() ? r.last() : r.first();
    if (v >= r.first() && v <= last) return true;
  }
  return false;
}

bool ServiceMatches(const v1::Service& s, const FiveTuple& t) {
  const uint32_t p = s.protocol();
  if (p == 1 || p == 58) {
    if (t.proto != p || (p == 1) != (t.family == Family::kV4)) return false;
    if (s.has_icmp_type() && t.sport != s.icmp_type()) return false;
    if (s.has_icmp_code() && t.dport != s.icmp_code()) return false;
    return true;
  }
  const bool ports = s.source_ports_size() || s.destination_ports_size();
  if (p == 0) {
    if (!ports) return true;
    if (t.proto != 6 && t.proto != 17 && t.proto != 132) return false;
  } else if (t.proto != p) {
    return false;
  }
  return InRanges(s.source_ports(), t.sport) && InRanges(s.destination_ports(), t.dport);
}

}  // namespace

EvalResult Evaluate(const v1::VNicRuleset& rs, const SetLookup& sets, const FiveTuple& t,
                    bool audit_all) {
  for (const auto& r : rs.rules()) {
    if (r.direction() == v1::DIRECTION_IN && !t.in) continue;
    if (r.direction() == v1::DIRECTION_OUT && t.in) continue;
    if (!EndpointMatches(r.sources(), sets, t.family, t.src)) continue;
    if (!EndpointMatches(r.destinations(), sets, t.family, t.dst)) continue;
    bool svc = r.services_size() == 0;
    for (const auto& s : r.services()) {
      if (ServiceMatches(s, t)) {
        svc = true;
        break;
      }
    }
    if (!svc) continue;
    EvalResult e;
    e.rule_num = r.rule_num();
    e.action = r.action();
    e.audit = e.action != v1::ACTION_ALLOW && (r.mode() == v1::POLICY_MODE_AUDIT || audit_all);
    e.stateful = r.stateful();
    return e;
  }
  EvalResult d;
  const auto a = rs.has_default_rule() ? rs.default_rule().action() : v1::ACTION_DROP;
  d.action = a == v1::ACTION_UNSPECIFIED ? v1::ACTION_DROP : a;
  d.audit = d.action != v1::ACTION_ALLOW && audit_all;
  return d;
}

}  // namespace dfw::vmagent
