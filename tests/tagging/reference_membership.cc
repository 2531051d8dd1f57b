#include "reference_membership.h"

#include <algorithm>
#include <functional>
#include <set>

namespace dfw::tagging::testing {
namespace {

bool ConditionHolds(const Condition& c, const VmSpec& vm,
                    const std::function<const std::set<std::string>&(const std::string&)>& vms_of) {
  switch (c.kind) {
    case Condition::Kind::kTag:
      return std::find(vm.tags.begin(), vm.tags.end(), c.tag) != vm.tags.end();
    case Condition::Kind::kTagScope:
      return std::any_of(vm.tags.begin(), vm.tags.end(),
                         [&](const Tag& t) { return t.scope == c.tag.scope; });
    case Condition::Kind::kVmName:
      return c.match.Matches(AsciiLower(vm.name));
    case Condition::Kind::kGuestOs:
      return c.match.Matches(AsciiLower(vm.guest_os));
    case Condition::Kind::kMemberOf:
      return vms_of(c.group).contains(vm.id);
  }
  return false;
}

}  // namespace

std::map<std::string, GroupMembers> ReferenceModel::Evaluate() const {
  std::map<std::string, std::set<std::string>> vm_memo, vnic_memo;
  std::map<std::string, std::set<IpPrefix>> addr_memo;
  std::map<std::string, const VNicSpec*> vnic_by_id;
  for (const auto& [id, vm] : vms) {
    for (const auto& n : vm.vnics) vnic_by_id[n.id] = &n;
  }

  std::function<const std::set<std::string>&(const std::string&)> vms_of =
      [&](const std::string& gid) -> const std::set<std::string>& {
    if (auto it = vm_memo.find(gid); it != vm_memo.end()) return it->second;
    const GroupSpec& g = groups.at(gid);
    std::set<std::string> out;
    for (const auto& [id, vm] : vms) {
      bool in = std::find(g.static_vms.begin(), g.static_vms.end(), id) != g.static_vms.end();
      for (const auto& inc : g.included_groups) in = in || vms_of(inc).contains(id);
      for (const auto& conj : g.criteria) {
        in = in ||
             std::all_of(conj.begin(), conj.end(),
                         // Clang before 16 cannot capture a structured binding.
                         [&, &v = vm](const Condition& c) { return ConditionHolds(c, v, vms_of); });
      }
      if (in) out.insert(id);
    }
    return vm_memo[gid] = std::move(out);
  };
  std::function<const std::set<std::string>&(const std::string&)> vnics_of =
      [&](const std::string& gid) -> const std::set<std::string>& {
    if (auto it = vnic_memo.find(gid); it != vnic_memo.end()) return it->second;
    const GroupSpec& g = groups.at(gid);
    std::set<std::string> out(g.static_vnics.begin(), g.static_vnics.end());
    for (const auto& vm_id : vms_of(gid)) {
      for (const auto& n : vms.at(vm_id).vnics) out.insert(n.id);
    }
    for (const auto& inc : g.included_groups) {
      const auto& sub = vnics_of(inc);
      out.insert(sub.begin(), sub.end());
    }
    return vnic_memo[gid] = std::move(out);
  };
  std::function<const std::set<IpPrefix>&(const std::string&)> addrs_of =
      [&](const std::string& gid) -> const std::set<IpPrefix>& {
    if (auto it = addr_memo.find(gid); it != addr_memo.end()) return it->second;
    const GroupSpec& g = groups.at(gid);
    std::set<IpPrefix> out(g.static_prefixes.begin(), g.static_prefixes.end());
    for (const auto& n : vnics_of(gid)) {
      if (auto it = vnic_by_id.find(n); it != vnic_by_id.end()) {
        out.insert(it->second->addresses.begin(), it->second->addresses.end());
      }
    }
    for (const auto& inc : g.included_groups) {
      const auto& sub = addrs_of(inc);
      out.insert(sub.begin(), sub.end());
    }
    return addr_memo[gid] = std::move(out);
  };

  std::map<std::string, GroupMembers> result;
  for (const auto& [id, g] : groups) {
    GroupMembers m;
    m.group_id = id;
    const auto& v = vms_of(id);
    m.vm_ids.assign(v.begin(), v.end());
    const auto& n = vnics_of(id);
    m.vnic_ids.assign(n.begin(), n.end());
    const auto& a = addrs_of(id);
    m.addresses.assign(a.begin(), a.end());
    result[id] = std::move(m);
  }
  return result;
}

bool ReferenceModel::WouldCycle(const GroupSpec& g) const {
  std::set<std::string> seen;
  std::function<bool(const std::string&)> reaches = [&](const std::string& id) -> bool {
    if (id == g.id) return true;
    if (!seen.insert(id).second) return false;
    auto it = groups.find(id);
    if (it == groups.end()) return false;
    for (const auto& r : it->second.References()) {
      if (reaches(r)) return true;
    }
    return false;
  };
  for (const auto& r : g.References()) {
    if (reaches(r)) return true;
  }
  return false;
}

namespace {
template <typename T>
void SetDiff(const std::vector<T>& a, const std::vector<T>& b, std::vector<T>* only_a,
             std::vector<T>* only_b) {
  std::set_difference(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(*only_a));
  std::set_difference(b.begin(), b.end(), a.begin(), a.end(), std::back_inserter(*only_b));
}
}  // namespace

MembershipDelta Diff(const std::map<std::string, GroupMembers>& before,
                     const std::map<std::string, GroupMembers>& after) {
  std::set<std::string> ids;
  for (const auto& [id, m] : before) ids.insert(id);
  for (const auto& [id, m] : after) ids.insert(id);
  MembershipDelta out;
  static const GroupMembers kNone;
  for (const auto& id : ids) {
    const GroupMembers& b = before.contains(id) ? before.at(id) : kNone;
    const GroupMembers& a = after.contains(id) ? after.at(id) : kNone;
    GroupDelta d;
    d.group_id = id;
    SetDiff(a.vm_ids, b.vm_ids, &d.vms_added, &d.vms_removed);
    SetDiff(a.vnic_ids, b.vnic_ids, &d.vnics_added, &d.vnics_removed);
    SetDiff(a.addresses, b.addresses, &d.addresses_added, &d.addresses_removed);
    d.group_created = !before.contains(id) && after.contains(id);
    d.group_deleted = before.contains(id) && !after.contains(id);
    if (!d.empty()) out.groups.push_back(std::move(d));
  }
  return out;
}

}  // namespace dfw::tagging::testing
