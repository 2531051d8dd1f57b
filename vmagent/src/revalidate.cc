#include "dfw/vmagent/revalidate.h"

#include <set>

#include "dfw/vmagent/conntrack.h"
#include "dfw/vmagent/ruleset_eval.h"

namespace dfw::vmagent {

absl::StatusOr<size_t> RevalidateConnections(
    const dfw::v1::HostDesiredState& before, const NftBackend& applied,
    const std::map<std::string, std::string>& local_addresses, bool audit_all, bool all) {
  std::set<uint32_t> revalidating;  // rule_nums of revalidating policies in `before`
  for (const auto& rs : before.rulesets()) {
    for (const auto& r : rs.rules()) {
      if (r.on_change() == dfw::v1::ON_CHANGE_REVALIDATE) revalidating.insert(r.rule_num());
    }
  }
  const auto& rulesets = applied.rulesets();
  SetLookup sets = [&applied](const std::string& id) { return applied.Set(id); };
  return Conntrack::DeleteIf([&](const CtEntry& e) {
    if (e.mark == 0) return false;  // not admitted by our rules (bypass, stateless)
    if (!all && e.mark != kDefaultAllowMark && !revalidating.count(e.mark)) return false;
    auto out = local_addresses.find(e.src);
    auto in = out == local_addresses.end() ? local_addresses.find(e.dst) : local_addresses.end();
    const std::string* vnic = out != local_addresses.end()  ? &out->second
                              : in != local_addresses.end() ? &in->second
                                                            : nullptr;
    if (vnic == nullptr) return false;  // not a connection of ours
    auto rs = rulesets.find(*vnic);
    if (rs == rulesets.end()) return false;  // no rules any more: nothing to judge by
    auto src = ParseAddr(e.src);
    auto dst = ParseAddr(e.dst);
    if (!src.ok() || !dst.ok()) return false;
    FiveTuple t;
    t.family = src->first;
    t.src = src->second;
    t.dst = dst->second;
    t.proto = e.proto;
    t.sport = e.sport;
    t.dport = e.dport;
    t.in = out == local_addresses.end();
    return !Evaluate(rs->second, sets, t, audit_all).passes();
  });
}

}  // namespace dfw::vmagent
