// MembershipIndex implementation. The design essay is in the header; this file
// follows its order: slots and indexes, evaluation, propagation up the group
// DAG, vNIC/address reference counting, then the public mutations.
#include "dfw/tagging/membership_index.h"

#include <algorithm>
#include <bit>
#include <functional>
#include <map>
#include <numeric>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/container/inlined_vector.h"
#include "dfw/tagging/str_cat.h"

namespace dfw::tagging {
namespace {

using VmIdx = uint32_t;
using GroupIdx = uint32_t;
using TagId = uint32_t;
using ScopeId = uint32_t;
using VnicId = uint32_t;  // interned vNIC id: one row per vNIC a VM owns or a group names
constexpr uint32_t kNoVm = UINT32_MAX;

struct CompiledCond {
  Condition::Kind kind;
  uint32_t id = 0;  // TagId, ScopeId or GroupIdx (member_of)
  StringMatch match;
  // kGuestOs: the verdict for each interned OS string (few distinct ones),
  // kept complete by every mutation so evaluation is a lookup.
  std::vector<uint8_t> os_verdict;
};

struct VmRec {
  VmSpec spec;
  bool live = false;
  std::string name_lower, os_lower;
  uint32_t os_id = 0;
  // Inline so that evaluating a condition touches one cache line, not two.
  absl::InlinedVector<TagId, 12> tags;      // sorted
  absl::InlinedVector<ScopeId, 12> scopes;  // sorted, unique
  std::vector<GroupIdx> groups;             // sorted; a VM is in tens of groups, not thousands
  std::vector<VnicId> vnic_ids;             // parallel to spec.vnics
};

// A vNIC row lives while a VM owns it or a group's static closure names it.
struct VnicRow {
  std::string id;
  VmIdx owner = kNoVm;                     // VM that owns it (its addresses are known), or none
  uint32_t slot = 0;                       // index into the owner's spec.vnics
  uint32_t holds = 0;                      // owner (1) + groups whose static closure names it
  absl::InlinedVector<IpPrefix, 2> addrs;  // the owner's bound addresses
  std::vector<GroupIdx> closure_groups;
};

struct GroupRec {
  GroupSpec spec;
  bool live = false;
  std::vector<std::vector<CompiledCond>> conj;
  std::vector<GroupIdx> includes;  // included groups
  std::vector<GroupIdx> children;  // includes ∪ member_of targets, unique
  std::vector<GroupIdx> parents;   // groups that reference this one, unique
  std::vector<TagId> tag_refs;
  std::vector<ScopeId> scope_refs;
  bool name_cond = false, os_cond = false;
  // Each conjunction's anchor (State::anchor_*): the one condition a VM new
  // to the index must meet for the conjunction to hold.
  std::vector<TagId> anchor_tags;
  std::vector<ScopeId> anchor_scopes;
  bool anchor_name = false, anchor_os = false;
  uint32_t rank = 0;
  absl::flat_hash_set<VmIdx> members;
  absl::flat_hash_map<VnicId, uint32_t> vnic_refs;
  absl::flat_hash_map<IpPrefix, uint32_t> addr_refs;
  std::vector<std::string> vnic_closure;  // static vNICs of this and included groups
  std::vector<IpPrefix> prefix_closure;   // static prefixes of this and included groups
};

// Debian's Abseil has its own string_view; hash lookups take that one.
absl::string_view Key(std::string_view s) { return absl::string_view(s.data(), s.size()); }

template <typename T>
void EraseValue(std::vector<T>& v, const T& x) {
  v.erase(std::remove(v.begin(), v.end(), x), v.end());
}

template <typename T>
void SortUnique(T& v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
}

// Accumulates one mutation's effect, netted per (group, member).
class DeltaBuilder {
 public:
  void Vm(const std::string& g, const std::string& vm, int d) { Net(groups_[g].vms, vm, d); }
  void Vnic(const std::string& g, const std::string& n, int d) { Net(groups_[g].vnics, n, d); }
  void Addr(const std::string& g, const IpPrefix& a, int d) { Net(groups_[g].addrs, a, d); }
  void Created(const std::string& g) { groups_[g].created = true; }
  void Deleted(const std::string& g) { groups_[g].deleted = true; }

  MembershipDelta Finish() {
    MembershipDelta out;
    for (auto& [id, acc] : groups_) {
      GroupDelta d;
      d.group_id = id;
      d.group_created = acc.created;
      d.group_deleted = acc.deleted;
      Split(acc.vms, &d.vms_added, &d.vms_removed);
      Split(acc.vnics, &d.vnics_added, &d.vnics_removed);
      Split(acc.addrs, &d.addresses_added, &d.addresses_removed);
      if (d.group_created && d.group_deleted) continue;
      if (!d.empty()) out.groups.push_back(std::move(d));
    }
    std::sort(out.groups.begin(), out.groups.end(),
              [](const GroupDelta& a, const GroupDelta& b) { return a.group_id < b.group_id; });
    return out;
  }

 private:
  struct Acc {
    absl::flat_hash_map<std::string, int> vms, vnics;
    absl::flat_hash_map<IpPrefix, int> addrs;
    bool created = false, deleted = false;
  };
  template <typename K>
  static void Net(absl::flat_hash_map<K, int>& m, const K& k, int d) {
    auto it = m.try_emplace(k, 0).first;
    it->second += d;
    if (it->second == 0) m.erase(it);
  }
  template <typename K>
  static void Split(const absl::flat_hash_map<K, int>& m, std::vector<K>* add,
                    std::vector<K>* rem) {
    for (const auto& [k, n] : m) (n > 0 ? add : rem)->push_back(k);
    std::sort(add->begin(), add->end());
    std::sort(rem->begin(), rem->end());
  }
  std::map<std::string, Acc> groups_;
};

}  // namespace

const GroupDelta* MembershipDelta::Find(std::string_view group_id) const {
  auto it =
      std::lower_bound(groups.begin(), groups.end(), group_id,
                       [](const GroupDelta& d, std::string_view id) { return d.group_id < id; });
  return (it != groups.end() && it->group_id == group_id) ? &*it : nullptr;
}

struct MembershipIndex::State {
  std::vector<VmRec> vms;
  std::vector<VmIdx> free_vms;
  absl::flat_hash_map<std::string, VmIdx> vm_by_id;
  std::vector<GroupRec> groups;
  std::vector<GroupIdx> free_groups;
  absl::flat_hash_map<std::string, GroupIdx> group_by_id;

  absl::flat_hash_map<std::pair<std::string, std::string>, TagId> tag_ids;
  std::vector<absl::flat_hash_set<VmIdx>> tag_vms;
  std::vector<std::vector<GroupIdx>> tag_groups;
  absl::flat_hash_map<std::string, ScopeId> scope_ids;
  std::vector<absl::flat_hash_set<VmIdx>> scope_vms;
  std::vector<std::vector<GroupIdx>> scope_groups;
  // Lower-case name -> VMs, ordered so that a prefix is a range.
  std::map<std::string, absl::flat_hash_set<VmIdx>, std::less<>> name_vms;
  absl::flat_hash_map<std::string, absl::flat_hash_set<VmIdx>> os_vms;  // lower-case OS
  absl::flat_hash_set<GroupIdx> name_groups, os_groups;
  // Anchors: per conjunction without a member_of condition, its most
  // selective tag condition (fewest VMs when linked), else scope, else name,
  // else OS condition. Conditions are all positive, so a VM new to the index
  // can only meet a conjunction whose anchor it meets; a conjunction with a
  // member_of condition is reached through its child (Propagate), an
  // inclusion the same way. UpsertVm of a new VM evaluates these groups
  // only, not every group that names one of its tags (tag_groups).
  std::vector<std::vector<GroupIdx>> anchor_tag_groups, anchor_scope_groups;
  absl::flat_hash_set<GroupIdx> anchor_name_groups, anchor_os_groups;
  absl::flat_hash_map<std::string, uint32_t> os_ids;  // lower-case OS -> id, never shrinks
  std::vector<std::string> os_names;
  std::vector<uint32_t> vm_os_id;  // VmRec::os_id again, compact, for candidate filtering
  absl::flat_hash_map<std::string, std::vector<GroupIdx>> static_vm_groups;
  std::vector<VnicRow> vnics;
  std::vector<VnicId> free_vnics;
  absl::flat_hash_map<std::string, VnicId> vnic_by_id;

  DeltaBuilder* delta = nullptr;  // null while loading

  // ---------------------------------------------------------------- interning
  TagId InternTag(const Tag& t) {
    auto [it, fresh] = tag_ids.try_emplace({t.scope, t.value}, static_cast<TagId>(tag_vms.size()));
    if (fresh) {
      tag_vms.emplace_back();
      tag_groups.emplace_back();
      anchor_tag_groups.emplace_back();
    }
    return it->second;
  }
  ScopeId InternScope(const std::string& s) {
    auto [it, fresh] = scope_ids.try_emplace(s, static_cast<ScopeId>(scope_vms.size()));
    if (fresh) {
      scope_vms.emplace_back();
      scope_groups.emplace_back();
      anchor_scope_groups.emplace_back();
    }
    return it->second;
  }

  // A new OS string extends every OS condition's verdict table.
  uint32_t InternOs(const std::string& os) {
    auto [it, fresh] = os_ids.try_emplace(os, static_cast<uint32_t>(os_names.size()));
    if (fresh) {
      os_names.push_back(os);
      for (GroupIdx gi : os_groups) {
        for (auto& conj : groups[gi].conj) {
          for (auto& c : conj) {
            if (c.kind == Condition::Kind::kGuestOs) c.os_verdict.push_back(c.match.Matches(os));
          }
        }
      }
    }
    return it->second;
  }

  // --------------------------------------------------------------- evaluation
  bool CondHolds(const CompiledCond& c, const VmRec& vm, VmIdx v) const {
    switch (c.kind) {
      case Condition::Kind::kTag:
        return std::binary_search(vm.tags.begin(), vm.tags.end(), c.id);
      case Condition::Kind::kTagScope:
        return std::binary_search(vm.scopes.begin(), vm.scopes.end(), c.id);
      case Condition::Kind::kVmName:
        return c.match.Matches(vm.name_lower);
      case Condition::Kind::kGuestOs:
        return c.os_verdict[vm.os_id];
      case Condition::Kind::kMemberOf:
        return groups[c.id].members.contains(v);
    }
    return false;
  }

  // Index of the first reason `v` belongs to `g`: -3 static, -2 included, >=0
  // conjunction; -1 when it does not.
  int Reason(const GroupRec& g, VmIdx v, GroupIdx* through = nullptr) const {
    const VmRec& vm = vms[v];
    if (!vm.live) return -1;
    if (!g.spec.static_vms.empty() &&
        std::binary_search(g.spec.static_vms.begin(), g.spec.static_vms.end(), vm.spec.id)) {
      return -3;
    }
    for (GroupIdx inc : g.includes) {
      if (groups[inc].members.contains(v)) {
        if (through) *through = inc;
        return -2;
      }
    }
    for (size_t i = 0; i < g.conj.size(); ++i) {
      bool all = true;
      for (const auto& c : g.conj[i]) {
        if (!CondHolds(c, vm, v)) {
          all = false;
          break;
        }
      }
      if (all) return static_cast<int>(i);
    }
    return -1;
  }
  bool Eval(const GroupRec& g, VmIdx v) const { return Reason(g, v) != -1; }

  template <typename F>
  void ForEachLiveVm(F&& f) const {
    for (VmIdx v = 0; v < vms.size(); ++v) {
      if (vms[v].live) f(v);
    }
  }

  // Calls f(v, sure) for every VM that could be a member of `g` (some more
  // than once): for each conjunction, the smallest posting list among its
  // conditions; plus static and included members. `sure` means v is a member
  // (it passed every condition of a conjunction already), so Eval would only
  // confirm it. A conjunction with no indexed condition makes every VM a
  // candidate (f is then called once per live VM and nothing else).
  template <typename F>
  void ForEachCandidate(const GroupRec& g, F&& f) const {
    static const absl::flat_hash_set<VmIdx> kEmpty;
    // Per conjunction: the smallest posting list, filtered by the others
    // (hash probes into posting lists stay in cache; touching a VM does not).
    struct Source {
      std::vector<const absl::flat_hash_set<VmIdx>*> sets;  // smallest first
      std::vector<const CompiledCond*> os;                  // OS conditions, by verdict table
      bool sure = false;  // no condition left unchecked (a name other than equals)
    };
    std::vector<Source> sources;
    std::vector<const CompiledCond*> os_only, name_only;
    for (const auto& conj : g.conj) {
      std::vector<const absl::flat_hash_set<VmIdx>*> indexed;
      std::vector<const CompiledCond*> os_conds;
      const CompiledCond* os = nullptr;
      const CompiledCond* name = nullptr;
      for (const auto& c : conj) {
        const absl::flat_hash_set<VmIdx>* src = nullptr;
        switch (c.kind) {
          case Condition::Kind::kTag:
            src = &tag_vms[c.id];
            break;
          case Condition::Kind::kTagScope:
            src = &scope_vms[c.id];
            break;
          case Condition::Kind::kMemberOf:
            src = &groups[c.id].members;
            break;
          case Condition::Kind::kVmName:
            if (c.match.op == StringOp::kEquals) {
              auto it = name_vms.find(c.match.value);
              src = it == name_vms.end() ? &kEmpty : &it->second;
            } else {
              name = &c;
            }
            break;
          case Condition::Kind::kGuestOs:
            os = &c;
            os_conds.push_back(&c);
            break;
        }
        if (src) indexed.push_back(src);
      }
      if (!indexed.empty()) {
        std::sort(indexed.begin(), indexed.end(),
                  [](const auto* a, const auto* b) { return a->size() < b->size(); });
        sources.push_back({std::move(indexed), std::move(os_conds), name == nullptr});
      } else if (os) {
        os_only.push_back(os);  // through the (small) set of distinct OS strings
      } else if (name) {
        name_only.push_back(name);  // through the name index: a range for prefixes
      } else {
        ForEachLiveVm([&](VmIdx v) { f(v, false); });
        return;
      }
    }
    for (const auto& id : g.spec.static_vms) {
      if (auto it = vm_by_id.find(id); it != vm_by_id.end()) f(it->second, false);
    }
    for (GroupIdx inc : g.includes) {
      for (VmIdx v : groups[inc].members) f(v, false);
    }
    for (const auto& src : sources) {
      for (VmIdx v : *src.sets[0]) {
        bool all = true;
        for (size_t k = 1; k < src.sets.size() && all; ++k) all = src.sets[k]->contains(v);
        for (size_t k = 0; k < src.os.size() && all; ++k) all = src.os[k]->os_verdict[vm_os_id[v]];
        if (all) f(v, src.sure);
      }
    }
    for (const CompiledCond* c : name_only) {
      if (c->match.op == StringOp::kStartsWith) {
        for (auto it = name_vms.lower_bound(c->match.value);
             it != name_vms.end() && std::string_view(it->first).starts_with(c->match.value);
             ++it) {
          for (VmIdx v : it->second) f(v, false);
        }
      } else {
        for (const auto& [vm_name, set] : name_vms) {
          if (c->match.Matches(vm_name)) {
            for (VmIdx v : set) f(v, false);
          }
        }
      }
    }
    for (const CompiledCond* os : os_only) {
      for (const auto& [os_name, set] : os_vms) {
        if (os->match.Matches(os_name)) {
          for (VmIdx v : set) f(v, false);
        }
      }
    }
  }

  // ------------------------------------------------------- vNICs and addresses
  VnicId HoldVnic(const std::string& id) {
    auto [it, fresh] = vnic_by_id.try_emplace(id, 0);
    if (fresh) {
      if (!free_vnics.empty()) {
        it->second = free_vnics.back();
        free_vnics.pop_back();
      } else {
        it->second = static_cast<VnicId>(vnics.size());
        vnics.emplace_back();
      }
      vnics[it->second] = VnicRow{id};
    }
    ++vnics[it->second].holds;
    return it->second;
  }
  void ReleaseVnic(VnicId n) {
    if (--vnics[n].holds != 0) return;
    vnic_by_id.erase(vnics[n].id);
    vnics[n] = VnicRow{};
    free_vnics.push_back(n);
  }
  // The addresses of a vNIC whose owner is known, else null.
  const absl::InlinedVector<IpPrefix, 2>* KnownVnic(VnicId n) const {
    const VnicRow& r = vnics[n];
    return r.owner == kNoVm ? nullptr : &r.addrs;
  }
  void AddAddr(GroupRec& g, const IpPrefix& a) {
    if (++g.addr_refs[a] == 1 && delta) delta->Addr(g.spec.id, a, +1);
  }
  void RemoveAddr(GroupRec& g, const IpPrefix& a) {
    auto it = g.addr_refs.find(a);
    if (--it->second == 0) {
      g.addr_refs.erase(it);
      if (delta) delta->Addr(g.spec.id, a, -1);
    }
  }
  void IncVnic(GroupRec& g, VnicId id) {
    if (++g.vnic_refs[id] != 1) return;
    if (delta) delta->Vnic(g.spec.id, vnics[id].id, +1);
    if (const auto* addrs = KnownVnic(id)) {
      for (const auto& a : *addrs) AddAddr(g, a);
    }
  }
  void DecVnic(GroupRec& g, VnicId id) {
    auto it = g.vnic_refs.find(id);
    if (--it->second != 0) return;
    g.vnic_refs.erase(it);
    if (delta) delta->Vnic(g.spec.id, vnics[id].id, -1);
    if (const auto* addrs = KnownVnic(id)) {
      for (const auto& a : *addrs) RemoveAddr(g, a);
    }
  }
  bool VnicPresent(const GroupRec& g, VnicId id) const { return g.vnic_refs.contains(id); }

  void SetMember(GroupIdx gi, VmIdx v, bool member) {
    GroupRec& g = groups[gi];
    VmRec& vm = vms[v];
    if (member) {
      g.members.insert(v);
      vm.groups.insert(std::upper_bound(vm.groups.begin(), vm.groups.end(), gi), gi);
      for (VnicId n : vm.vnic_ids) IncVnic(g, n);
    } else {
      g.members.erase(v);
      vm.groups.erase(std::lower_bound(vm.groups.begin(), vm.groups.end(), gi));
      for (VnicId n : vm.vnic_ids) DecVnic(g, n);
    }
    if (delta) delta->Vm(g.spec.id, vm.spec.id, member ? +1 : -1);
  }

  // A VM's vNICs leave every group (its memberships stay): used before its
  // vNICs change. Attach is the mirror image. See the header for the counts.
  void DetachVnics(VmIdx v) {
    VmRec& vm = vms[v];
    for (size_t i = 0; i < vm.vnic_ids.size(); ++i) {
      VnicId id = vm.vnic_ids[i];
      const VNicSpec& n = vm.spec.vnics[i];
      for (GroupIdx gi : vm.groups) DecVnic(groups[gi], id);
      for (GroupIdx gi : vnics[id].closure_groups) {
        if (VnicPresent(groups[gi], id)) {
          for (const auto& a : n.addresses) RemoveAddr(groups[gi], a);
        }
      }
      vnics[id].owner = kNoVm;
      vnics[id].addrs.clear();
      ReleaseVnic(id);
    }
    vm.spec.vnics.clear();
    vm.vnic_ids.clear();
  }
  void AttachVnics(VmIdx v, std::vector<VNicSpec> specs) {
    VmRec& vm = vms[v];
    vm.spec.vnics = std::move(specs);
    vm.vnic_ids.clear();
    for (uint32_t i = 0; i < vm.spec.vnics.size(); ++i) {
      const auto& n = vm.spec.vnics[i];
      VnicId id = HoldVnic(n.id);
      vm.vnic_ids.push_back(id);
      for (GroupIdx gi : vnics[id].closure_groups) {
        if (VnicPresent(groups[gi], id)) {
          for (const auto& a : n.addresses) AddAddr(groups[gi], a);
        }
      }
      vnics[id].owner = v;
      vnics[id].slot = i;
      vnics[id].addrs.assign(n.addresses.begin(), n.addresses.end());
      for (GroupIdx gi : vm.groups) IncVnic(groups[gi], id);
    }
  }

  // -------------------------------------------------------------- propagation
  // Re-checks each (group, VMs) seed and, where membership flips, the parents
  // of that group for that VM, in topological order (children first).
  void Propagate(std::map<std::pair<uint32_t, GroupIdx>, absl::flat_hash_set<VmIdx>> pending) {
    while (!pending.empty()) {
      auto node = pending.extract(pending.begin());
      GroupIdx gi = node.key().second;
      GroupRec& g = groups[gi];
      if (!g.live) continue;
      for (VmIdx v : node.mapped()) {
        bool now = Eval(g, v);
        if (now == g.members.contains(v)) continue;
        SetMember(gi, v, now);
        for (GroupIdx p : g.parents) pending[{groups[p].rank, p}].insert(v);
      }
    }
  }

  // --------------------------------------------------------- group structure
  // Topological ranks: every group ranks above everything it references.
  void Rerank() {
    std::vector<uint32_t> indeg(groups.size(), 0);
    std::vector<GroupIdx> ready;
    for (GroupIdx gi = 0; gi < groups.size(); ++gi) {
      if (!groups[gi].live) continue;
      indeg[gi] = static_cast<uint32_t>(groups[gi].children.size());
      if (indeg[gi] == 0) ready.push_back(gi);
    }
    uint32_t rank = 0;
    while (!ready.empty()) {
      GroupIdx gi = ready.back();
      ready.pop_back();
      groups[gi].rank = rank++;
      for (GroupIdx p : groups[gi].parents) {
        if (--indeg[p] == 0) ready.push_back(p);
      }
    }
  }

  // Would `g` (with the given references) close a cycle? Returns the cycle.
  std::vector<std::string> FindCycle(const std::string& id,
                                     const std::vector<std::string>& refs) const {
    // DFS from each reference over existing children, looking for `id`.
    absl::flat_hash_set<GroupIdx> seen;
    std::vector<std::string> path{id};
    std::function<bool(GroupIdx)> dfs = [&](GroupIdx gi) -> bool {
      const GroupRec& g = groups[gi];
      path.push_back(g.spec.id);
      if (g.spec.id == id) return true;
      if (seen.insert(gi).second) {
        for (GroupIdx c : g.children) {
          if (dfs(c)) return true;
        }
      }
      path.pop_back();
      return false;
    };
    for (const auto& r : refs) {
      auto it = group_by_id.find(r);
      if (it != group_by_id.end() && dfs(it->second)) return path;
    }
    return {};
  }

  absl::Status CheckReferences(const GroupSpec& spec) const {
    for (size_t i = 0; i < spec.included_groups.size(); ++i) {
      if (!group_by_id.contains(spec.included_groups[i])) {
        return absl::InvalidArgumentError(
            Cat("static_members.group_ids: group '", spec.included_groups[i], "' does not exist"));
      }
    }
    for (size_t i = 0; i < spec.criteria.size(); ++i) {
      for (size_t j = 0; j < spec.criteria[i].size(); ++j) {
        const auto& c = spec.criteria[i][j];
        if (c.kind == Condition::Kind::kMemberOf && !group_by_id.contains(c.group)) {
          return absl::InvalidArgumentError(Cat("criteria[", i, "].conditions[", j,
                                                "].member_of_group: group '", c.group,
                                                "' does not exist"));
        }
      }
    }
    return absl::OkStatus();
  }

  // Links a validated spec into slot `gi` (indexes and edges), no evaluation.
  void Link(GroupIdx gi, GroupSpec spec) {
    GroupRec& g = groups[gi];
    g.spec = std::move(spec);
    g.live = true;
    g.conj.clear();
    g.includes.clear();
    g.children.clear();
    g.tag_refs.clear();
    g.scope_refs.clear();
    g.name_cond = g.os_cond = false;
    for (const auto& id : g.spec.included_groups) g.includes.push_back(group_by_id.at(id));
    g.children = g.includes;
    for (const auto& conj : g.spec.criteria) {
      std::vector<CompiledCond> cc;
      for (const auto& c : conj) {
        CompiledCond x{c.kind, 0, c.match};
        switch (c.kind) {
          case Condition::Kind::kTag:
            x.id = InternTag(c.tag);
            g.tag_refs.push_back(x.id);
            break;
          case Condition::Kind::kTagScope:
            x.id = InternScope(c.tag.scope);
            g.scope_refs.push_back(x.id);
            break;
          case Condition::Kind::kVmName:
            g.name_cond = true;
            break;
          case Condition::Kind::kGuestOs:
            g.os_cond = true;
            for (const auto& os : os_names) x.os_verdict.push_back(c.match.Matches(os));
            break;
          case Condition::Kind::kMemberOf:
            x.id = group_by_id.at(c.group);
            g.children.push_back(x.id);
            break;
        }
        cc.push_back(std::move(x));
      }
      // Cheapest tests first: tag lookups, then membership, then strings.
      std::stable_sort(cc.begin(), cc.end(), [](const CompiledCond& a, const CompiledCond& b) {
        auto cost = [](Condition::Kind k) {
          return k == Condition::Kind::kTag || k == Condition::Kind::kTagScope ? 0
                 : k == Condition::Kind::kMemberOf                             ? 1
                                                                               : 2;
        };
        return cost(a.kind) < cost(b.kind);
      });
      SetAnchor(g, g.conj.emplace_back(std::move(cc)));
    }
    SortUnique(g.children);
    SortUnique(g.tag_refs);
    SortUnique(g.scope_refs);
    SortUnique(g.anchor_tags);
    SortUnique(g.anchor_scopes);
    Lists(gi, g.tag_refs, g.scope_refs, g.name_cond, g.os_cond, tag_groups, scope_groups,
          name_groups, os_groups, true);
    Lists(gi, g.anchor_tags, g.anchor_scopes, g.anchor_name, g.anchor_os, anchor_tag_groups,
          anchor_scope_groups, anchor_name_groups, anchor_os_groups, true);
    for (const auto& id : g.spec.static_vms) static_vm_groups[id].push_back(gi);
    for (GroupIdx c : g.children) groups[c].parents.push_back(gi);
  }

  // Adds `gi` to (or removes it from) the group lists of these tags,
  // scopes, and of name and OS conditions.
  static void Lists(GroupIdx gi, const std::vector<TagId>& tags, const std::vector<ScopeId>& scopes,
                    bool name, bool os, std::vector<std::vector<GroupIdx>>& by_tag,
                    std::vector<std::vector<GroupIdx>>& by_scope,
                    absl::flat_hash_set<GroupIdx>& names, absl::flat_hash_set<GroupIdx>& oses,
                    bool add) {
    for (TagId t : tags) add ? by_tag[t].push_back(gi) : EraseValue(by_tag[t], gi);
    for (ScopeId sc : scopes) add ? by_scope[sc].push_back(gi) : EraseValue(by_scope[sc], gi);
    if (add) {
      if (name) names.insert(gi);
      if (os) oses.insert(gi);
    } else {
      names.erase(gi);
      oses.erase(gi);
    }
  }

  void SetAnchor(GroupRec& g, const std::vector<CompiledCond>& conj) {
    const CompiledCond* best = nullptr;
    auto vms_of = [&](const CompiledCond& c) {
      return c.kind == Condition::Kind::kTag ? tag_vms[c.id].size() : scope_vms[c.id].size();
    };
    // A tag before a scope, then the fewest VMs.
    auto rank = [&](const CompiledCond& c) {
      return std::pair(c.kind == Condition::Kind::kTag ? 0 : 1, vms_of(c));
    };
    for (const auto& c : conj) {
      if (c.kind == Condition::Kind::kMemberOf) return;  // reached through the child
      if (c.kind != Condition::Kind::kTag && c.kind != Condition::Kind::kTagScope) continue;
      if (best == nullptr || rank(c) < rank(*best)) best = &c;
    }
    if (best != nullptr) {
      (best->kind == Condition::Kind::kTag ? g.anchor_tags : g.anchor_scopes).push_back(best->id);
      return;
    }
    bool name = std::any_of(conj.begin(), conj.end(),
                            [](const auto& c) { return c.kind == Condition::Kind::kVmName; });
    (name ? g.anchor_name : g.anchor_os) = true;
  }

  void Unlink(GroupIdx gi) {
    GroupRec& g = groups[gi];
    Lists(gi, g.tag_refs, g.scope_refs, g.name_cond, g.os_cond, tag_groups, scope_groups,
          name_groups, os_groups, false);
    Lists(gi, g.anchor_tags, g.anchor_scopes, g.anchor_name, g.anchor_os, anchor_tag_groups,
          anchor_scope_groups, anchor_name_groups, anchor_os_groups, false);
    for (const auto& id : g.spec.static_vms) {
      auto it = static_vm_groups.find(Key(id));
      EraseValue(it->second, gi);
      if (it->second.empty()) static_vm_groups.erase(it);
    }
    for (GroupIdx c : g.children) EraseValue(groups[c].parents, gi);
  }

  // Recomputes the static closures of `gi` and every group that includes it,
  // applying the vNIC and prefix differences.
  void RefreshClosures(GroupIdx start) {
    std::map<uint32_t, GroupIdx> todo{{groups[start].rank, start}};
    while (!todo.empty()) {
      GroupIdx gi = todo.begin()->second;
      todo.erase(todo.begin());
      GroupRec& g = groups[gi];
      std::vector<std::string> vn = g.live ? g.spec.static_vnics : std::vector<std::string>{};
      std::vector<IpPrefix> px = g.live ? g.spec.static_prefixes : std::vector<IpPrefix>{};
      if (g.live) {
        for (GroupIdx inc : g.includes) {
          vn.insert(vn.end(), groups[inc].vnic_closure.begin(), groups[inc].vnic_closure.end());
          px.insert(px.end(), groups[inc].prefix_closure.begin(), groups[inc].prefix_closure.end());
        }
      }
      SortUnique(vn);
      SortUnique(px);
      if (vn == g.vnic_closure && px == g.prefix_closure) continue;
      std::vector<std::string> vn_add, vn_del;
      std::set_difference(vn.begin(), vn.end(), g.vnic_closure.begin(), g.vnic_closure.end(),
                          std::back_inserter(vn_add));
      std::set_difference(g.vnic_closure.begin(), g.vnic_closure.end(), vn.begin(), vn.end(),
                          std::back_inserter(vn_del));
      std::vector<IpPrefix> px_add, px_del;
      std::set_difference(px.begin(), px.end(), g.prefix_closure.begin(), g.prefix_closure.end(),
                          std::back_inserter(px_add));
      std::set_difference(g.prefix_closure.begin(), g.prefix_closure.end(), px.begin(), px.end(),
                          std::back_inserter(px_del));
      for (const auto& name : vn_add) {
        VnicId id = HoldVnic(name);
        vnics[id].closure_groups.push_back(gi);
        IncVnic(g, id);
      }
      for (const auto& name : vn_del) {
        VnicId id = vnic_by_id.at(name);
        EraseValue(vnics[id].closure_groups, gi);
        DecVnic(g, id);
        ReleaseVnic(id);
      }
      for (const auto& a : px_add) AddAddr(g, a);
      for (const auto& a : px_del) RemoveAddr(g, a);
      g.vnic_closure = std::move(vn);
      g.prefix_closure = std::move(px);
      for (GroupIdx p : g.parents) {
        if (std::find(groups[p].includes.begin(), groups[p].includes.end(), gi) !=
            groups[p].includes.end()) {
          todo[groups[p].rank] = p;
        }
      }
    }
  }

  // ---------------------------------------------------------------- VM side
  void IndexVm(VmIdx v, bool add) {
    VmRec& vm = vms[v];
    for (TagId t : vm.tags) add ? (void)tag_vms[t].insert(v) : (void)tag_vms[t].erase(v);
    for (ScopeId s : vm.scopes) add ? (void)scope_vms[s].insert(v) : (void)scope_vms[s].erase(v);
    if (add) {
      name_vms[vm.name_lower].insert(v);
      os_vms[vm.os_lower].insert(v);
    } else {
      if (auto it = name_vms.find(vm.name_lower); it != name_vms.end()) {
        it->second.erase(v);
        if (it->second.empty()) name_vms.erase(it);
      }
      if (auto it = os_vms.find(vm.os_lower); it != os_vms.end()) {
        it->second.erase(v);
        if (it->second.empty()) os_vms.erase(it);
      }
    }
  }

  // Everything of `spec` but its vNICs: copied from a const spec, moved from
  // an rvalue (Load's, which it owns).
  template <typename Spec>
  void SetVmFacts(VmIdx v, Spec&& spec) {
    VmRec& vm = vms[v];
    vm.spec.id = std::forward<Spec>(spec).id;
    vm.spec.name = std::forward<Spec>(spec).name;
    vm.spec.host = std::forward<Spec>(spec).host;
    vm.spec.guest_os = std::forward<Spec>(spec).guest_os;
    vm.spec.hostname = std::forward<Spec>(spec).hostname;
    vm.spec.tags = std::forward<Spec>(spec).tags;
    vm.name_lower = AsciiLower(vm.spec.name);
    vm.os_lower = AsciiLower(vm.spec.guest_os);
    vm.os_id = InternOs(vm.os_lower);
    if (vm_os_id.size() <= v) vm_os_id.resize(vms.size());
    vm_os_id[v] = vm.os_id;
    vm.tags.clear();
    vm.scopes.clear();
    for (const auto& t : vm.spec.tags) {
      vm.tags.push_back(InternTag(t));
      vm.scopes.push_back(InternScope(t.scope));
    }
    SortUnique(vm.tags);
    SortUnique(vm.scopes);
  }

  absl::Status CheckVnicOwnership(const VmSpec& spec) const {
    for (size_t i = 0; i < spec.vnics.size(); ++i) {
      auto it = vnic_by_id.find(spec.vnics[i].id);
      if (it == vnic_by_id.end()) continue;
      VmIdx owner = vnics[it->second].owner;
      if (owner != kNoVm && vms[owner].spec.id != spec.id) {
        return absl::InvalidArgumentError(Cat("vnics[", i, "].id: vNIC '", spec.vnics[i].id,
                                              "' belongs to VM '", vms[owner].spec.id, "'"));
      }
    }
    return absl::OkStatus();
  }

  size_t ApproxBytes() const;
};

// ------------------------------------------------------------------- public

MembershipIndex::MembershipIndex() : s_(std::make_unique<State>()) {}
MembershipIndex::~MembershipIndex() = default;

absl::Status MembershipIndex::Load(std::vector<VmSpec> vms, std::vector<GroupSpec> groups) {
  // Validate the whole set before touching anything.
  absl::flat_hash_set<absl::string_view> vm_ids, vnic_ids;  // views into `vms`
  vm_ids.reserve(vms.size());
  for (size_t i = 0; i < vms.size(); ++i) {
    if (!vm_ids.insert(Key(vms[i].id)).second) {
      return absl::InvalidArgumentError(Cat("vms[", i, "].id: '", vms[i].id, "' appears twice"));
    }
    for (size_t j = 0; j < vms[i].vnics.size(); ++j) {
      if (!vnic_ids.insert(Key(vms[i].vnics[j].id)).second) {
        return absl::InvalidArgumentError(
            Cat("vms[", i, "].vnics[", j, "].id: vNIC '", vms[i].vnics[j].id, "' appears twice"));
      }
    }
  }
  absl::flat_hash_map<std::string, size_t> pos;
  for (size_t i = 0; i < groups.size(); ++i) {
    if (!pos.emplace(groups[i].id, i).second) {
      return absl::InvalidArgumentError(
          Cat("groups[", i, "].id: '", groups[i].id, "' appears twice"));
    }
  }
  for (size_t i = 0; i < groups.size(); ++i) {
    for (const auto& r : groups[i].References()) {
      if (!pos.contains(r)) {
        return absl::InvalidArgumentError(
            Cat("group '", groups[i].id, "': references group '", r, "' which does not exist"));
      }
    }
  }
  // Order groups children-first; leftovers are on a cycle.
  std::vector<std::vector<size_t>> parents(groups.size());
  std::vector<size_t> indeg(groups.size());
  for (size_t i = 0; i < groups.size(); ++i) {
    auto refs = groups[i].References();
    indeg[i] = refs.size();
    for (const auto& r : refs) parents[pos[r]].push_back(i);
  }
  std::vector<size_t> order, ready;
  for (size_t i = 0; i < groups.size(); ++i) {
    if (indeg[i] == 0) ready.push_back(i);
  }
  while (!ready.empty()) {
    size_t i = ready.back();
    ready.pop_back();
    order.push_back(i);
    for (size_t p : parents[i]) {
      if (--indeg[p] == 0) ready.push_back(p);
    }
  }
  if (order.size() != groups.size()) {
    // Walk references among the leftovers until one repeats: that is a cycle.
    size_t at = 0;
    while (indeg[at] == 0) ++at;
    std::vector<size_t> path;
    absl::flat_hash_map<size_t, size_t> where;
    while (!where.contains(at)) {
      where[at] = path.size();
      path.push_back(at);
      for (const auto& r : groups[at].References()) {
        if (indeg[pos[r]] != 0) {
          at = pos[r];
          break;
        }
      }
    }
    std::vector<std::string> names;
    for (size_t k = where[at]; k < path.size(); ++k) names.push_back(groups[path[k]].id);
    names.push_back(groups[at].id);
    return absl::InvalidArgumentError(Cat("group references form a cycle: ", Join(names, " -> ")));
  }

  auto fresh = std::make_unique<State>();
  State& s = *fresh;
  s.vms.resize(vms.size());
  s.vm_by_id.reserve(vms.size());
  s.vnic_by_id.reserve(vnic_ids.size());
  for (VmIdx v = 0; v < vms.size(); ++v) {
    s.vm_by_id.emplace(vms[v].id, v);
    s.SetVmFacts(v, std::move(vms[v]));  // the vNICs stay, for AttachVnics
    s.vms[v].spec.tags.shrink_to_fit();  // as a copy would be: not the caller's spare room
    s.vms[v].live = true;
  }
  {
    // Size the posting lists once instead of growing them 1M times.
    std::vector<size_t> tag_n(s.tag_vms.size()), scope_n(s.scope_vms.size());
    for (const VmRec& vm : s.vms) {
      for (TagId t : vm.tags) ++tag_n[t];
      for (ScopeId sc : vm.scopes) ++scope_n[sc];
    }
    for (TagId t = 0; t < tag_n.size(); ++t) s.tag_vms[t].reserve(tag_n[t]);
    for (ScopeId sc = 0; sc < scope_n.size(); ++sc) s.scope_vms[sc].reserve(scope_n[sc]);
  }
  // IndexVm, but the name index is filled in name order, each name placed
  // at the end (inserting by key compares some 17 names per VM).
  std::vector<std::pair<std::string_view, VmIdx>> names;
  names.reserve(vms.size());
  for (VmIdx v = 0; v < vms.size(); ++v) {
    const VmRec& vm = s.vms[v];
    for (TagId t : vm.tags) s.tag_vms[t].insert(v);
    for (ScopeId sc : vm.scopes) s.scope_vms[sc].insert(v);
    s.os_vms[vm.os_lower].insert(v);
    names.emplace_back(vm.name_lower, v);
    s.AttachVnics(v, std::move(vms[v].vnics));
  }
  std::sort(names.begin(), names.end());
  for (const auto& [name, v] : names) {
    auto at = s.name_vms.end();
    if (at == s.name_vms.begin() || std::prev(at)->first != name) {
      at = s.name_vms.emplace_hint(at, std::string(name), absl::flat_hash_set<VmIdx>{});
    } else {
      --at;
    }
    at->second.insert(v);
  }
  s.groups.resize(groups.size());
  for (GroupIdx k = 0; k < order.size(); ++k) {
    s.group_by_id[groups[order[k]].id] = k;
    s.Link(k, std::move(groups[order[k]]));
    s.groups[k].rank = k;
  }
  // Each VM's vNICs and each vNIC's bound addresses, packed: counting a
  // group's vNICs and addresses below reads these, not each member's VmRec
  // and VnicRow (a cache miss each).
  std::vector<size_t> nic_begin(s.vms.size() + 1), addr_begin(s.vnics.size() + 1);
  std::vector<VnicId> nics;
  std::vector<IpPrefix> addrs;
  for (VmIdx v = 0; v < s.vms.size(); ++v) {
    nics.insert(nics.end(), s.vms[v].vnic_ids.begin(), s.vms[v].vnic_ids.end());
    nic_begin[v + 1] = nics.size();
  }
  for (VnicId n = 0; n < s.vnics.size(); ++n) {
    if (const auto* a = s.KnownVnic(n)) addrs.insert(addrs.end(), a->begin(), a->end());
    addr_begin[n + 1] = addrs.size();
  }
  // Groups in topological order (member_of and inclusion read the members of
  // groups below). A group's members, then its vNIC and address counts while
  // its tables are in cache; every group's members are kept, group after
  // group, for the VMs' group lists.
  std::vector<VmIdx> all;
  std::vector<size_t> all_begin{0};
  for (GroupIdx gi = 0; gi < s.groups.size(); ++gi) {
    GroupRec& g = s.groups[gi];
    auto first = static_cast<std::ptrdiff_t>(all.size());
    s.ForEachCandidate(g, [&](VmIdx v, bool sure) {
      if (sure || s.Eval(g, v)) all.push_back(v);
    });
    std::sort(all.begin() + first, all.end());
    all.erase(std::unique(all.begin() + first, all.end()), all.end());
    size_t n_in = all.size() - first;
    g.members.reserve(n_in);
    g.vnic_refs.reserve(n_in);
    g.addr_refs.reserve(n_in);
    g.members.insert(all.begin() + first, all.end());
    for (auto it = all.begin() + first; it != all.end(); ++it) {
      for (size_t k = nic_begin[*it]; k < nic_begin[*it + 1]; ++k) {
        if (++g.vnic_refs[nics[k]] != 1) continue;
        for (size_t j = addr_begin[nics[k]]; j < addr_begin[nics[k] + 1]; ++j)
          s.AddAddr(g, addrs[j]);
      }
    }
    s.RefreshClosures(gi);
    all_begin.push_back(all.size());
  }
  // Each VM's group list in one VM-ordered pass (a counting sort of `all` by
  // VM): sorted, since groups were visited in slot order.
  std::vector<size_t> vm_begin(s.vms.size() + 1);
  for (VmIdx v : all) ++vm_begin[v + 1];
  std::partial_sum(vm_begin.begin(), vm_begin.end(), vm_begin.begin());
  std::vector<GroupIdx> by_vm(all.size());
  std::vector<size_t> at(vm_begin.begin(), vm_begin.end() - 1);
  for (GroupIdx gi = 0; gi < s.groups.size(); ++gi) {
    for (size_t k = all_begin[gi]; k < all_begin[gi + 1]; ++k) by_vm[at[all[k]]++] = gi;
  }
  for (VmIdx v = 0; v < s.vms.size(); ++v) {
    // The capacity inserting one by one would have left: room for changes.
    size_t n = vm_begin[v + 1] - vm_begin[v];
    if (n != 0) s.vms[v].groups.reserve(std::bit_ceil(n));
    s.vms[v].groups.assign(by_vm.begin() + vm_begin[v], by_vm.begin() + vm_begin[v + 1]);
  }
  s_ = std::move(fresh);
  return absl::OkStatus();
}

absl::StatusOr<MembershipDelta> MembershipIndex::UpsertVm(VmSpec spec) {
  State& s = *s_;
  if (spec.id.empty()) return absl::InvalidArgumentError("id: must not be empty");
  if (auto st = s.CheckVnicOwnership(spec); !st.ok()) return st;
  DeltaBuilder delta;
  s.delta = &delta;

  auto it = s.vm_by_id.find(spec.id);
  bool fresh = it == s.vm_by_id.end();
  VmIdx v;
  absl::flat_hash_set<GroupIdx> seeds;
  if (fresh) {
    if (!s.free_vms.empty()) {
      v = s.free_vms.back();
      s.free_vms.pop_back();
    } else {
      v = static_cast<VmIdx>(s.vms.size());
      s.vms.emplace_back();
    }
    s.vm_by_id[spec.id] = v;
    s.SetVmFacts(v, spec);
    s.vms[v].live = true;
    s.IndexVm(v, true);
    // Only the groups whose anchors it meets (State::anchor_*).
    for (TagId t : s.vms[v].tags) {
      seeds.insert(s.anchor_tag_groups[t].begin(), s.anchor_tag_groups[t].end());
    }
    for (ScopeId sc : s.vms[v].scopes) {
      seeds.insert(s.anchor_scope_groups[sc].begin(), s.anchor_scope_groups[sc].end());
    }
    seeds.insert(s.anchor_name_groups.begin(), s.anchor_name_groups.end());
    seeds.insert(s.anchor_os_groups.begin(), s.anchor_os_groups.end());
    if (auto sv = s.static_vm_groups.find(spec.id); sv != s.static_vm_groups.end()) {
      seeds.insert(sv->second.begin(), sv->second.end());
    }
  } else {
    v = it->second;
    VmRec& vm = s.vms[v];
    auto old_tags = vm.tags;
    auto old_scopes = vm.scopes;
    std::string old_name = vm.name_lower, old_os = vm.os_lower;
    s.IndexVm(v, false);
    s.SetVmFacts(v, spec);
    s.IndexVm(v, true);
    std::vector<TagId> dt;
    std::set_symmetric_difference(old_tags.begin(), old_tags.end(), vm.tags.begin(), vm.tags.end(),
                                  std::back_inserter(dt));
    std::vector<ScopeId> ds;
    std::set_symmetric_difference(old_scopes.begin(), old_scopes.end(), vm.scopes.begin(),
                                  vm.scopes.end(), std::back_inserter(ds));
    for (TagId t : dt) seeds.insert(s.tag_groups[t].begin(), s.tag_groups[t].end());
    for (ScopeId sc : ds) seeds.insert(s.scope_groups[sc].begin(), s.scope_groups[sc].end());
    if (old_name != vm.name_lower) seeds.insert(s.name_groups.begin(), s.name_groups.end());
    if (old_os != vm.os_lower) seeds.insert(s.os_groups.begin(), s.os_groups.end());
  }

  // vNICs: when they change, detach the old ones first so memberships flip
  // without them, then attach the new ones to the final memberships.
  VmRec& vm = s.vms[v];
  bool vnics_same =
      !fresh && vm.spec.vnics.size() == spec.vnics.size() &&
      std::equal(vm.spec.vnics.begin(), vm.spec.vnics.end(), spec.vnics.begin(),
                 [](const VNicSpec& a, const VNicSpec& b) {
                   return a.id == b.id && a.mac == b.mac && a.addresses == b.addresses;
                 });
  if (!vnics_same) s.DetachVnics(v);
  std::map<std::pair<uint32_t, GroupIdx>, absl::flat_hash_set<VmIdx>> pending;
  for (GroupIdx gi : seeds) pending[{s.groups[gi].rank, gi}].insert(v);
  s.Propagate(std::move(pending));
  if (!vnics_same) s.AttachVnics(v, std::move(spec.vnics));
  s.delta = nullptr;
  return delta.Finish();
}

absl::StatusOr<MembershipDelta> MembershipIndex::RemoveVm(std::string_view vm_id) {
  State& s = *s_;
  auto it = s.vm_by_id.find(Key(vm_id));
  if (it == s.vm_by_id.end()) {
    return absl::NotFoundError(Cat("VM '", vm_id, "' does not exist"));
  }
  VmIdx v = it->second;
  DeltaBuilder delta;
  s.delta = &delta;
  s.DetachVnics(v);
  // Every group drops it; nothing needs re-evaluation.
  std::vector<GroupIdx> gs(s.vms[v].groups.begin(), s.vms[v].groups.end());
  for (GroupIdx gi : gs) s.SetMember(gi, v, false);
  s.IndexVm(v, false);
  s.vm_by_id.erase(it);
  s.vms[v] = VmRec{};
  s.free_vms.push_back(v);
  s.delta = nullptr;
  return delta.Finish();
}

absl::StatusOr<MembershipDelta> MembershipIndex::ChangeTags(std::string_view vm_id,
                                                            const std::vector<Tag>& set,
                                                            const std::vector<Tag>& unset) {
  const VmSpec* cur = FindVm(vm_id);
  if (!cur) return absl::NotFoundError(Cat("VM '", vm_id, "' does not exist"));
  VmSpec next = *cur;
  for (const Tag& u : unset) {
    std::erase_if(next.tags, [&](const Tag& t) {
      return t.scope == u.scope && (u.value.empty() || t.value == u.value);
    });
  }
  next.tags.insert(next.tags.end(), set.begin(), set.end());
  SortUnique(next.tags);
  return UpsertVm(std::move(next));
}

absl::StatusOr<MembershipDelta> MembershipIndex::UpsertGroup(GroupSpec spec) {
  State& s = *s_;
  if (auto st = s.CheckReferences(spec); !st.ok()) return st;
  auto refs = spec.References();
  if (std::binary_search(refs.begin(), refs.end(), spec.id)) {
    return absl::InvalidArgumentError(Cat("group '", spec.id, "' references itself"));
  }
  auto it = s.group_by_id.find(spec.id);
  bool fresh = it == s.group_by_id.end();
  if (!fresh) {
    auto cycle = s.FindCycle(spec.id, refs);
    if (!cycle.empty()) {
      return absl::InvalidArgumentError(
          Cat("group references form a cycle: ", Join(cycle, " -> ")));
    }
  }
  DeltaBuilder delta;
  s.delta = &delta;
  GroupIdx gi;
  if (fresh) {
    if (!s.free_groups.empty()) {
      gi = s.free_groups.back();
      s.free_groups.pop_back();
    } else {
      gi = static_cast<GroupIdx>(s.groups.size());
      s.groups.emplace_back();
    }
    s.group_by_id[spec.id] = gi;
    delta.Created(spec.id);
  } else {
    gi = it->second;
    s.Unlink(gi);
  }
  s.Link(gi, std::move(spec));
  s.Rerank();
  s.RefreshClosures(gi);
  absl::flat_hash_set<VmIdx> cand(s.groups[gi].members.begin(), s.groups[gi].members.end());
  s.ForEachCandidate(s.groups[gi], [&](VmIdx v, bool) { cand.insert(v); });
  std::map<std::pair<uint32_t, GroupIdx>, absl::flat_hash_set<VmIdx>> pending;
  pending[{s.groups[gi].rank, gi}] = std::move(cand);
  s.Propagate(std::move(pending));
  s.delta = nullptr;
  return delta.Finish();
}

absl::StatusOr<MembershipDelta> MembershipIndex::RemoveGroup(std::string_view group_id) {
  State& s = *s_;
  auto it = s.group_by_id.find(Key(group_id));
  if (it == s.group_by_id.end()) {
    return absl::NotFoundError(Cat("group '", group_id, "' does not exist"));
  }
  GroupIdx gi = it->second;
  auto referrers = Referrers(group_id);
  if (!referrers.empty()) {
    return absl::FailedPreconditionError(
        Cat("group '", group_id, "' is referenced by group(s) ", Join(referrers, ", ")));
  }
  DeltaBuilder delta;
  s.delta = &delta;
  GroupRec& g = s.groups[gi];
  std::vector<VmIdx> members(g.members.begin(), g.members.end());
  for (VmIdx v : members) s.SetMember(gi, v, false);
  s.Unlink(gi);
  g.live = false;
  s.RefreshClosures(gi);  // drops its static vNICs and prefixes
  delta.Deleted(g.spec.id);
  s.group_by_id.erase(it);
  s.groups[gi] = GroupRec{};
  s.free_groups.push_back(gi);
  s.delta = nullptr;
  return delta.Finish();
}

bool MembershipIndex::HasGroup(std::string_view id) const {
  return s_->group_by_id.contains(Key(id));
}
bool MembershipIndex::HasVm(std::string_view id) const { return s_->vm_by_id.contains(Key(id)); }

const VmSpec* MembershipIndex::FindVm(std::string_view id) const {
  auto it = s_->vm_by_id.find(Key(id));
  return it == s_->vm_by_id.end() ? nullptr : &s_->vms[it->second].spec;
}

const GroupSpec* MembershipIndex::FindGroup(std::string_view id) const {
  auto it = s_->group_by_id.find(Key(id));
  return it == s_->group_by_id.end() ? nullptr : &s_->groups[it->second].spec;
}

absl::StatusOr<GroupMembers> MembershipIndex::Members(std::string_view id) const {
  auto it = s_->group_by_id.find(Key(id));
  if (it == s_->group_by_id.end()) {
    return absl::NotFoundError(Cat("group '", id, "' does not exist"));
  }
  const GroupRec& g = s_->groups[it->second];
  GroupMembers out;
  out.group_id = g.spec.id;
  for (VmIdx v : g.members) out.vm_ids.push_back(s_->vms[v].spec.id);
  for (const auto& [n, c] : g.vnic_refs) out.vnic_ids.push_back(s_->vnics[n].id);
  for (const auto& [a, c] : g.addr_refs) out.addresses.push_back(a);
  std::sort(out.vm_ids.begin(), out.vm_ids.end());
  std::sort(out.vnic_ids.begin(), out.vnic_ids.end());
  std::sort(out.addresses.begin(), out.addresses.end());
  return out;
}

absl::StatusOr<std::vector<MembershipReason>> MembershipIndex::GroupsOf(
    std::string_view vm_id) const {
  auto it = s_->vm_by_id.find(Key(vm_id));
  if (it == s_->vm_by_id.end()) {
    return absl::NotFoundError(Cat("VM '", vm_id, "' does not exist"));
  }
  std::vector<MembershipReason> out;
  for (GroupIdx gi : s_->vms[it->second].groups) {
    const GroupRec& g = s_->groups[gi];
    GroupIdx through = 0;
    int r = s_->Reason(g, it->second, &through);
    MembershipReason m;
    m.group_id = g.spec.id;
    if (r == -3) {
      m.via = MembershipReason::Via::kStaticVm;
    } else if (r == -2) {
      m.via = MembershipReason::Via::kIncludedGroup;
      m.through_group = s_->groups[through].spec.id;
    } else {
      m.via = MembershipReason::Via::kCriteria;
      m.conjunction = static_cast<uint32_t>(r);
    }
    out.push_back(std::move(m));
  }
  std::sort(out.begin(), out.end(), [](const MembershipReason& a, const MembershipReason& b) {
    return a.group_id < b.group_id;
  });
  return out;
}

std::vector<std::string> MembershipIndex::Referrers(std::string_view id) const {
  std::vector<std::string> out;
  auto it = s_->group_by_id.find(Key(id));
  if (it == s_->group_by_id.end()) return out;
  for (GroupIdx p : s_->groups[it->second].parents) out.push_back(s_->groups[p].spec.id);
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::string> MembershipIndex::GroupIds() const {
  std::vector<std::string> out;
  for (const auto& [id, gi] : s_->group_by_id) out.push_back(id);
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::string> MembershipIndex::VmIds() const {
  std::vector<std::string> out;
  for (const auto& [id, v] : s_->vm_by_id) out.push_back(id);
  std::sort(out.begin(), out.end());
  return out;
}

size_t MembershipIndex::State::ApproxBytes() const {
  // flat_hash containers: one slot (value + 1 control byte) per bucket.
  auto set_bytes = [](const auto& c, size_t slot) { return c.capacity() * (slot + 1); };
  size_t b = vms.capacity() * sizeof(VmRec) + groups.capacity() * sizeof(GroupRec);
  for (const auto& vm : vms) {
    b += vm.groups.capacity() * sizeof(GroupIdx) + vm.tags.capacity() * sizeof(TagId) +
         vm.scopes.capacity() * sizeof(ScopeId) + vm.spec.tags.capacity() * sizeof(Tag);
    for (const auto& t : vm.spec.tags) b += t.scope.capacity() + t.value.capacity();
    b += vm.spec.vnics.capacity() * sizeof(VNicSpec);
    for (const auto& n : vm.spec.vnics) b += n.addresses.capacity() * sizeof(IpPrefix);
  }
  for (const auto& g : groups) {
    b += set_bytes(g.members, sizeof(VmIdx)) +
         set_bytes(g.vnic_refs, sizeof(std::pair<VnicId, uint32_t>)) +
         set_bytes(g.addr_refs, sizeof(std::pair<IpPrefix, uint32_t>));
  }
  for (const auto& t : tag_vms) b += set_bytes(t, sizeof(VmIdx));
  for (const auto& t : scope_vms) b += set_bytes(t, sizeof(VmIdx));
  b += set_bytes(vm_by_id, sizeof(std::pair<std::string, VmIdx>)) +
       set_bytes(vnic_by_id, sizeof(std::pair<std::string, VnicId>)) +
       vnics.capacity() * sizeof(VnicRow) +
       set_bytes(tag_ids, sizeof(std::pair<std::pair<std::string, std::string>, TagId>));
  return b;
}

IndexStats MembershipIndex::Stats() const {
  IndexStats st;
  st.vms = s_->vm_by_id.size();
  st.groups = s_->group_by_id.size();
  for (const auto& g : s_->groups) {
    st.memberships += g.members.size();
    st.vnic_refs += g.vnic_refs.size();
    st.address_refs += g.addr_refs.size();
  }
  st.approx_bytes = s_->ApproxBytes();
  return st;
}

}  // namespace dfw::tagging
