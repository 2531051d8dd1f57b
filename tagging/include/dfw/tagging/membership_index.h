// MembershipIndex: which VMs, vNICs and addresses each security group holds,
// kept exact under every change, with the exact delta each change causes.
//
// What. A group's effective members (model.proto, SecurityGroup):
//   VMs       = static VMs ∪ VMs of included groups ∪ VMs matching any conjunction
//   vNICs     = vNICs of those VMs ∪ static vNICs (of this and included groups)
//   addresses = bound IPs of those vNICs ∪ static prefixes (of this and included groups)
// Conditions: tag equals (or any value of a scope), VM name and guest OS string
// matches (ASCII case ignored), member of group G. References between groups
// (member_of and inclusion) form a DAG; a change that would close a cycle is
// rejected with the cycle spelled out.
//
// How. VMs and groups get dense integer slots. Inverted indexes map each tag,
// tag scope and VM name to its VMs, and each tag / scope to the groups whose
// criteria mention it, so a change only visits what it can affect:
//   - a VM change re-evaluates that VM against the groups that mention its old
//     or new tags (plus name / OS groups if those changed), then walks up the
//     group DAG in topological order, re-checking only parents of groups whose
//     membership of that VM flipped;
//   - a group change re-evaluates that group over candidate VMs taken from the
//     smallest posting list of each conjunction, then propagates the same way.
// vNIC and address sets are reference-counted per group, so a vNIC reachable
// two ways, or an address bound to two vNICs, leaves only when its last reason
// does. Every mutation returns a MembershipDelta: per group, the VMs, vNICs
// and addresses that joined and left, netted (a leave and re-join cancel).
//
// Errors. Every mutation validates first and changes nothing when it fails:
// unknown group references, cycles, a vNIC id claimed by two VMs, deleting a
// group that others reference (the error names them).
//
// Thread safety: none inside. One writer at a time (the controller's
// serialized change path); const methods may run concurrently with each other
// but not with a mutation.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "dfw/tagging/ip_prefix.h"
#include "dfw/tagging/model.h"

namespace dfw::tagging {

// What one change did to one group. Vectors are sorted.
struct GroupDelta {
  std::string group_id;
  std::vector<std::string> vms_added, vms_removed;
  std::vector<std::string> vnics_added, vnics_removed;
  std::vector<IpPrefix> addresses_added, addresses_removed;
  bool group_created = false;
  bool group_deleted = false;
  bool empty() const {
    return vms_added.empty() && vms_removed.empty() && vnics_added.empty() &&
           vnics_removed.empty() && addresses_added.empty() && addresses_removed.empty() &&
           !group_created && !group_deleted;
  }
  bool operator==(const GroupDelta&) const = default;
};

struct MembershipDelta {
  std::vector<GroupDelta> groups;  // sorted by group_id, only groups that changed
  bool empty() const { return groups.empty(); }
  const GroupDelta* Find(std::string_view group_id) const;
};

// A group's effective membership. Vectors are sorted.
struct GroupMembers {
  std::string group_id;
  std::vector<std::string> vm_ids;
  std::vector<std::string> vnic_ids;
  std::vector<IpPrefix> addresses;
  bool operator==(const GroupMembers&) const = default;
};

// Why a VM is in a group (the first reason found, in this order).
struct MembershipReason {
  enum class Via { kStaticVm, kIncludedGroup, kCriteria };
  std::string group_id;
  Via via = Via::kCriteria;
  uint32_t conjunction = 0;   // kCriteria: index into the group's criteria
  std::string through_group;  // kIncludedGroup: which included group
};

struct IndexStats {
  size_t vms = 0;
  size_t groups = 0;
  size_t memberships = 0;   // (group, VM) pairs
  size_t vnic_refs = 0;     // (group, vNIC) pairs
  size_t address_refs = 0;  // (group, address) pairs
  size_t approx_bytes = 0;  // estimate of the index's heap use
};

class MembershipIndex {
 public:
  MembershipIndex();
  ~MembershipIndex();
  MembershipIndex(const MembershipIndex&) = delete;
  MembershipIndex& operator=(const MembershipIndex&) = delete;

  // Replaces everything: one validation of the whole set (references, cycles,
  // unique vNIC ids), then one full evaluation in topological order. On error
  // the index is unchanged. Returns no delta; it is the start.
  absl::Status Load(std::vector<VmSpec> vms, std::vector<GroupSpec> groups);

  // Adds or replaces a VM (tags, name, guest facts, vNICs and their IPs).
  absl::StatusOr<MembershipDelta> UpsertVm(VmSpec vm);
  absl::StatusOr<MembershipDelta> RemoveVm(std::string_view vm_id);
  // Tag workflow: add `set` and remove `unset` on one VM. An unset tag with an
  // empty value removes every tag of that scope.
  absl::StatusOr<MembershipDelta> ChangeTags(std::string_view vm_id, const std::vector<Tag>& set,
                                             const std::vector<Tag>& unset);

  // Adds or replaces a group. References must exist; no cycle.
  absl::StatusOr<MembershipDelta> UpsertGroup(GroupSpec group);
  // Fails with FAILED_PRECONDITION naming the referencing groups if any.
  absl::StatusOr<MembershipDelta> RemoveGroup(std::string_view group_id);

  // Read side.
  bool HasGroup(std::string_view group_id) const;
  bool HasVm(std::string_view vm_id) const;
  absl::StatusOr<GroupMembers> Members(std::string_view group_id) const;
  absl::StatusOr<std::vector<MembershipReason>> GroupsOf(std::string_view vm_id) const;
  const VmSpec* FindVm(std::string_view vm_id) const;
  const GroupSpec* FindGroup(std::string_view group_id) const;
  // Groups that reference `group_id` (member_of or inclusion), sorted.
  std::vector<std::string> Referrers(std::string_view group_id) const;
  std::vector<std::string> GroupIds() const;  // sorted
  std::vector<std::string> VmIds() const;     // sorted
  IndexStats Stats() const;

 private:
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace dfw::tagging
