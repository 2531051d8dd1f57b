// DataplaneState: the dataplane's control side. It holds what the host agent
// told it — each vNIC (steering id, MAC, bound addresses) and the desired
// state (per-vNIC rulesets, address sets) at a controller revision —
// validates and compiles it, publishes each vNIC's immutable VnicState to the
// workers, and persists it so a restarted dataplane enforces the last state
// before any agent reconnects.
//
// Rulesets with the same content (rules and default rule: not the vNIC id or
// revision) are compiled once and shared by their vNICs, as VPP's lookup
// contexts are: one Ruleset, one VnicPolicy. An address-set change reaches
// each shared ruleset that names the set once, through the compiler's
// incremental update (RulesetCompiler::UpdateAddressSet), not a recompile;
// a full state compiles every distinct ruleset afresh.
//
// Every change is validated and compiled completely before anything is
// published: a bad ruleset or a delta from the wrong revision is refused with
// an error naming the vNIC, rule or field, and what was in force stays in
// force. A vNIC with no ruleset is published without a policy: it drops
// everything (fail closed).
//
// Thread safety: one control thread (the local API serialises calls with a
// mutex); the workers only see published VnicStates.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "dfw/dataplane/rule_proto.h"
#include "dfw/dataplane/ruleset_compiler.h"
#include "dfw/dataplane/vnic_table.h"
#include "dfw/v1/dataplane.pb.h"

namespace dfw::dataplane {

class DataplaneState {
 public:
  // `state_path` empty: nothing persisted.
  DataplaneState(VnicTable* vnics, std::string state_path);
  ~DataplaneState();

  // Loads and enforces the persisted state, if any. A missing file is a
  // first start, not an error; anything else that is not a valid saved state
  // is (a directory, a FIFO, 0 bytes, over 256 MiB, not parsable, or
  // refused by the checks of SetVnic and ApplyFull): dfw-dataplane then
  // refuses to start.
  Status Load();

  // Refused (naming the field): an empty id, a local id outside 1..2047, a
  // MAC that is not one, multicast or all-zero, an address that is not one,
  // and a local id, MAC or address another vNIC has.
  Status SetVnic(const v1::DataplaneVNic& vnic);
  Status RemoveVnic(const std::string& id);
  // A full state replaces what is held at any revision but 2^64-1 (also a
  // lower one: see ApplyFull); a delta must be from the applied revision
  // (else the message names from_revision: FAILED_PRECONDITION) and go
  // forward, to at most 2^64-2. Both refuse an empty or repeated vNIC id
  // among the rulesets, an empty or repeated address-set id, and a rule
  // number twice in one ruleset.
  Status ApplyFull(const v1::HostDesiredState& state);
  Status ApplyDelta(const v1::HostDelta& delta);

  uint64_t applied_revision() const;
  // Load() found a persisted state and enforced it.
  bool restored() const;
  // vNIC id by local id ("" if none), and the list of vNICs.
  std::string VnicIdOf(uint16_t local_id) const;
  std::vector<v1::DataplaneVNic> Vnics() const;
  // rule_num -> (policy id, rule id) of the current rulesets.
  std::pair<std::string, std::string> RuleOf(uint32_t rule_num) const;
  // vNICs whose ruleset is excluded (VNicRuleset.excluded: the host agent
  // steers them past the dataplane), sorted.
  std::vector<std::string> ExcludedVnics() const;
  // Distinct compiled rulesets held (vNICs with the same rules share one).
  size_t shared_rulesets() const;
  // The digest of each ruleset (by vNIC) and address set held
  // (dfw/proto/state_digest.h): what a reconnecting host agent tells its
  // controller it holds, with the revision they are of. One hash per shared
  // ruleset, one per set. None while deltas are refused (an incremental
  // update failed halfway): the controller then sends a full state.
  v1::HeldDigests HeldDigests(uint64_t* revision) const;

 private:
  struct Compiled;
  // A vNIC's ruleset: the shared compiled content and the revision the
  // controller gave this vNIC's copy.
  struct Binding {
    Compiled* compiled = nullptr;
    uint64_t revision = 0;
  };
  // One vNIC's ruleset of a full state (sent, or read from the state file).
  struct FullEntry {
    const v1::VNicRuleset* ruleset;
    std::string vnic_id;
    uint64_t revision;
    std::string field;  // for errors: where it came from
  };
  using SetLookup = std::function<const v1::AddressSet*(const std::string&)>;

  Status SetVnicLocked(const v1::DataplaneVNic& vnic, const std::string& field);
  Status LoadParsed(const v1::DataplanePersistedState& ps);
  Status ApplyFullLocked(uint64_t revision,
                         const google::protobuf::RepeatedPtrField<v1::AddressSet>& sets,
                         const std::vector<FullEntry>& entries);
  // Writes the state file: a temporary file, fsync, rename, fsync of the
  // directory.
  Status Persist() const;
  // Compiles `ruleset` (errors name vNIC `vnic_id`) against the sets
  // `sets` finds; no publication.
  Status Compile(const v1::VNicRuleset& ruleset, const std::string& vnic_id, const SetLookup& sets,
                 std::unique_ptr<Compiled>* out) const;
  // A new VnicPolicy for `c` at the current revision, for its vNICs.
  void Refresh(Compiled* c);
  // Publishes the given vNICs (known here) with their current rulesets.
  void Publish(const std::set<std::string>& vnic_ids);
  std::unique_ptr<VnicState> BuildVnicState(const v1::DataplaneVNic& v) const;
  void RebuildRuleNames();
  // The next ruleset generation: never 0 (a policy's default) nor
  // kConnGenerationImported (imported connections revalidate against it).
  uint32_t NextGeneration();

  VnicTable* table_;
  std::string path_;
  mutable std::mutex mu_;
  uint64_t revision_ = 0;
  uint32_t next_generation_ = 1;
  bool restored_ = false;
  bool loading_ = false;  // Load(): nothing persisted until it succeeded
  // An incremental update failed halfway (never expected): compilers may be
  // ahead of sets_, so deltas are refused until a full state rebuilds them.
  bool need_full_ = false;
  std::map<std::string, v1::DataplaneVNic> vnics_;
  std::map<std::string, v1::AddressSet> sets_;
  std::map<std::string, std::unique_ptr<Compiled>> shared_;  // by content key
  std::map<std::string, Binding> by_vnic_;                   // by vNIC id
  std::map<uint32_t, std::pair<std::string, std::string>> rule_names_;
};

}  // namespace dfw::dataplane
