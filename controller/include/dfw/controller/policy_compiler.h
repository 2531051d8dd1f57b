// PolicyCompiler: policies + group memberships -> each vNIC's ordered rule
// list (VNicRuleset) and each host's share of it (span), kept incrementally.
//
// What. A rule applies to the vNICs in its applied-to groups: the rule's own
// applied_to_group_ids, else the policy's, else the groups named in the rule's
// sources and destinations, else (no group at all) every vNIC. A vNIC's
// ruleset is every enabled rule that applies to it, ordered by category, then
// policy priority, then policy id, then rule order. Endpoints compile to
// address sets: "g:<group>" (the group's effective addresses, shared by every
// rule naming the group) and "r:<policy>/<rule>/<src|dst>" (a rule's literal
// prefixes). A host needs the rulesets of its vNICs and every address set
// those rulesets name, nothing else.
//
// How. The compiler keeps vNIC -> groups (fed by MembershipDelta), group ->
// rules applying to it, vNIC -> host, vNIC -> current ruleset (shared
// immutable rule entries, so an unchanged ruleset is detected by pointer),
// and per host a reference count of each address set. A change marks the
// vNICs whose applied-to membership or host changed, and collects the
// address changes of groups; Flush() recomputes only the marked vNICs, then
// turns group address changes into AddressSetDeltas for exactly the hosts
// that reference the group (a host that starts referencing a set gets it
// whole instead). The result is a ChangeFanout: per host, what changed.
//
// Thread safety: the controller calls mutators under its writer lock and
// const methods under its reader lock; const methods may run concurrently
// (the one cache they fill has its own mutex). It reads the MembershipIndex
// it was given, which must outlive it.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "dfw/tagging/membership_index.h"
#include "dfw/v1/compiled.pb.h"
#include "dfw/v1/model.pb.h"

namespace dfw::controller {

// What one change did to one host. Turned into a HostDelta by BuildDelta.
// Address-set content changes are not copied per host: each set keeps a
// short journal of its deltas, and `sets_touched` names the sets whose
// journals BuildDelta must read for this host.
struct HostChanges {
  std::set<std::string> rulesets_set;      // vNICs whose ruleset to send whole
  std::set<std::string> rulesets_removed;  // vNICs no longer enforced on the host
  std::set<std::string> sets_full;         // address sets to send whole
  std::set<std::string> sets_removed;
  std::set<std::string> sets_touched;  // referenced sets whose content changed
  struct SetDelta {
    std::set<tagging::IpPrefix> added, removed;
  };
  bool empty() const {
    return rulesets_set.empty() && rulesets_removed.empty() && sets_full.empty() &&
           sets_removed.empty() && sets_touched.empty();
  }
};
using ChangeFanout = std::map<std::string, HostChanges>;  // by host id

// Folds `c` (a later change) into `acc`, netting what cancels out.
void MergeChanges(HostChanges* acc, const HostChanges& c);

// What a policy change would do to one vNIC's ruleset (PolicyCompiler::
// PreviewPolicy): rule ids of the policy the vNIC gains, loses or keeps
// changed (compiled content or literal prefixes), and whether the rules it
// keeps (any policy's) come in another order.
struct VnicImpact {
  std::string vnic_id, host_id;
  size_t rules_before = 0, rules_after = 0;
  std::vector<std::string> added, removed, changed;
  bool reordered = false;
  // On the exclusion list: no rule of the change reaches it (the lists
  // above stay empty).
  bool excluded = false;
  // Rules (any policy's, "policy/rule") in force on the vNIC before the
  // change whose policy revalidates: the ruleset changes, so the dataplane
  // re-checks each connection they admitted at its next packet and cuts
  // those the new rules deny.
  std::vector<std::string> revalidating;
};

struct CompilerStats {
  size_t policies = 0, rules = 0, vnics_with_rules = 0, compiled_rule_refs = 0;
  size_t hosts = 0, host_set_refs = 0;
};

class PolicyCompiler {
 public:
  explicit PolicyCompiler(const tagging::MembershipIndex* index);
  ~PolicyCompiler();

  // Start: policies (validated) and rule numbers from the store; computes
  // every vNIC's ruleset from the index's current memberships.
  void Load(const std::vector<dfw::v1::Policy>& policies,
            const std::vector<std::pair<std::string, uint32_t>>& rule_nums,  // "p\0r" -> num
            uint32_t next_rule_num, const std::vector<tagging::VmSpec>& vms, uint64_t revision);

  // Rule numbers for rules of `p` that have none yet; returns the new ones
  // ("policy\0rule", num) so the caller persists them with the change.
  std::vector<std::pair<std::string, uint32_t>> AllocateRuleNums(const dfw::v1::Policy& p);
  // Undoes AllocateRuleNums (its result) when the change was not stored.
  void ForgetRuleNums(const std::vector<std::pair<std::string, uint32_t>>& fresh);
  uint32_t next_rule_num() const { return next_rule_num_; }
  // Rule numbers another controller allocated and stored (a standby
  // following the store): "policy\0rule" -> num, and the next free one.
  void AdoptRuleNum(const std::string& key, uint32_t num);
  void AdoptNextRuleNum(uint32_t next);

  // The exclusion list (model.proto, Exclusion): a vNIC is excluded when its
  // id or its VM's id is listed. An excluded vNIC's ruleset has no rules,
  // the default rule ALLOW and `excluded` set; it still counts as a member
  // of its groups (others' rules about it are unchanged). Marks the vNICs
  // whose exclusion changes (Flush sends them). Before Load: taken as the
  // starting list.
  void SetExclusion(bool vm, const std::string& id, bool excluded);
  bool IsExcluded(const std::string& vnic_id) const;
  // The vNICs known to the compiler that `id` covers (a VM's vNICs, or the
  // vNIC itself when some VM has it), sorted.
  std::vector<std::string> VnicsCovered(bool vm, const std::string& id) const;
  // The host holding vNIC `id`'s ruleset ("" if none).
  std::string HostOfVnic(const std::string& id) const;
  size_t excluded_vnics() const;

  // Change inputs. Call in the order the index applied them, then Flush once.
  void OnVmChanged(const tagging::VmSpec* before, const tagging::VmSpec* after, ChangeFanout* out);
  void OnMembershipDelta(const tagging::MembershipDelta& delta);
  void UpsertPolicy(const dfw::v1::Policy& p, ChangeFanout* out);
  // forget_rule_nums: false keeps the rules' numbers (as the store does: a
  // standby following it).
  void RemovePolicy(const std::string& policy_id, ChangeFanout* out, bool forget_rule_nums = true);
  void Flush(uint64_t revision, ChangeFanout* out);

  // Read side.
  dfw::v1::HostDesiredState FullState(const std::string& host, uint64_t revision) const;
  // The delta for `host` from from_revision (what it holds) to to_revision
  // (the current revision).
  dfw::v1::HostDelta BuildDelta(const std::string& host, const HostChanges& c,
                                uint64_t from_revision, uint64_t to_revision) const;
  // What `host` must be sent to go from what it holds (`held`: digests by
  // object, dfw/proto/state_digest.h) to its current state: the rulesets
  // and sets that differ or are missing, whole, and those held that it no
  // longer needs, removed. The digests of a reconnecting host whose state
  // this process did not send (a restart, a failover): a delta from them
  // replaces a full state. A held id given twice counts once (the last).
  HostChanges DiffHeld(const std::string& host, const dfw::v1::HeldDigests& held) const;
  // Rulesets of these vNICs (those known) and the address sets they name.
  void EffectiveRules(const std::vector<std::string>& vnic_ids,
                      google::protobuf::RepeatedPtrField<dfw::v1::VNicRuleset>* rulesets,
                      google::protobuf::RepeatedPtrField<dfw::v1::AddressSet>* sets) const;
  // What storing `after` as policy `policy_id` (nullptr: deleting it) would
  // do to each enforced vNIC (one with a host) whose ruleset it changes,
  // by vNIC id; nothing is changed. `after` must be valid (ValidatePolicy);
  // its new rules count as numbered.
  std::vector<VnicImpact> PreviewPolicy(const std::string& policy_id,
                                        const dfw::v1::Policy* after) const;
  // What a membership change (the index's delta of a group change not made)
  // would do: each enforced vNIC whose rules change because it joins or
  // leaves a group rules are applied to (added/removed as "policy/rule";
  // an excluded vNIC is listed with `excluded` only), and in *sets each
  // changed group whose address set hosts hold, with those hosts. Nothing
  // is changed.
  struct SetImpact {
    std::string group_id;
    size_t added = 0, removed = 0;
    std::vector<std::string> hosts;  // sorted
  };
  std::vector<VnicImpact> PreviewMembership(const tagging::MembershipDelta& delta,
                                            std::vector<SetImpact>* sets) const;
  // Policies whose rules or applied-to name the group, sorted.
  std::vector<std::string> PoliciesReferencing(const std::string& group_id) const;
  // Hosts holding at least one vNIC the policy's enabled rules apply to
  // (the policy's span); empty for an unknown policy.
  std::set<std::string> HostsOfPolicy(const std::string& policy_id) const;
  CompilerStats Stats() const;

 private:
  struct RuleEntry;
  struct VNicRules;
  struct PolicyEntry;

  // `p` compiled (its enabled rules, with the numbers allocated so far, and
  // its literal sets' text); changes nothing.
  std::unique_ptr<PolicyEntry> Compile(const dfw::v1::Policy& p) const;
  std::vector<std::string> AffectedVnics(const PolicyEntry& pe) const;
  void MarkVnicsOfGroup(const std::string& group);
  void Detach(const std::string& vnic, ChangeFanout* out);
  void Recompute(const std::string& vnic, uint64_t revision, ChangeFanout* out);
  // The rules applying to a vNIC in these applied-to groups (null: none),
  // in evaluation order, each once.
  std::vector<std::shared_ptr<const RuleEntry>> RulesOf(
      const absl::flat_hash_set<std::string>* groups) const;
  void AddRefs(const std::string& host, const VNicRules& r, ChangeFanout* out);
  void DropRefs(const std::string& host, const VNicRules& r, ChangeFanout* out);
  std::shared_ptr<const std::vector<std::string>> SetContents(const std::string& set_id) const;
  void FillRuleset(const std::string& vnic, const VNicRules& r, dfw::v1::VNicRuleset* out) const;

  const tagging::MembershipIndex* index_;
  dfw::v1::DefaultRule default_rule_;
  std::map<std::string, std::unique_ptr<PolicyEntry>> policies_;
  absl::flat_hash_map<std::string, std::vector<std::shared_ptr<const RuleEntry>>> by_group_;
  std::vector<std::shared_ptr<const RuleEntry>> all_vnics_rules_;
  std::unordered_map<std::string, uint32_t> rule_nums_;
  uint32_t next_rule_num_ = 1;

  absl::flat_hash_map<std::string, absl::flat_hash_set<std::string>> vnic_groups_;
  // The exclusion list, and each known vNIC's VM (OnVmChanged).
  absl::flat_hash_set<std::string> excluded_vms_, excluded_vnic_ids_;
  absl::flat_hash_map<std::string, std::string> vnic_vm_;
  absl::flat_hash_map<std::string, std::string> vnic_host_;
  absl::flat_hash_map<std::string, std::set<std::string>> host_vnics_;
  absl::flat_hash_map<std::string, std::shared_ptr<const VNicRules>> vnic_rules_;
  absl::flat_hash_map<std::string, std::string> vnic_attached_host_;  // host holding its ruleset
  absl::flat_hash_map<std::string, absl::flat_hash_map<std::string, uint32_t>> host_set_refs_;
  absl::flat_hash_map<std::string, absl::flat_hash_set<std::string>> set_hosts_;
  absl::flat_hash_map<std::string, std::shared_ptr<const std::vector<std::string>>> literal_sets_;
  // Canonical text of group address sets, filled by readers (several sender
  // threads at once), hence its own lock; writers invalidate entries.
  mutable std::mutex cache_mu_;
  mutable absl::flat_hash_map<std::string, std::shared_ptr<const std::vector<std::string>>>
      group_addr_cache_;
  // DiffHeld's digest of each set's content, valid while SetContents
  // returns the same content object (held here, so its address cannot be
  // reused): a reconnect storm digests each set once, not once per host.
  // One entry per set id DiffHeld has seen.
  struct SetDigest {
    std::shared_ptr<const std::vector<std::string>> content;
    std::string digest;
  };
  mutable absl::flat_hash_map<std::string, SetDigest> set_digests_;  // under cache_mu_
  std::string SetContentDigest(const std::string& set_id) const;
  // Per address set: its recent content deltas by revision. A host whose
  // last revision is older than the journal reaches gets the set whole.
  struct SetJournal {
    std::deque<std::pair<uint64_t, std::shared_ptr<const HostChanges::SetDelta>>> entries;
    uint64_t last_change = 0;
    uint64_t complete_after = 0;  // entries cover every change after this revision
  };
  absl::flat_hash_map<std::string, SetJournal> journals_;
  static constexpr size_t kJournalEntries = 64;

  // Pending work of the current change.
  absl::flat_hash_set<std::string> dirty_vnics_;
  std::map<std::string, HostChanges::SetDelta> pending_set_deltas_;  // by set id
  std::set<std::string> changed_literal_sets_;
};

}  // namespace dfw::controller
