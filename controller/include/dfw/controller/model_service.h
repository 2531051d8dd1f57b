// ModelService: the controller's one model layer. The gRPC ControllerService,
// the REST handlers and the host sessions all call these methods, so the two
// APIs cannot drift.
//
// What. VMs (and the tag workflow), security groups, policies and hosts;
// the computed views (group members, a VM's groups and why, effective
// rules); revisions with optimistic concurrency; the change log; host
// sessions (inventory in, desired state out, acks); realization status.
// A VM's tags have two sources, the host's report of its libvirt metadata
// (Vm.host_tags) and the API (Vm.api_tags); Vm.tags is the effective set,
// the API winning per scope (docs/architecture.md, "Tags: API and libvirt
// metadata"). The API cannot remove a metadata-only tag (FAILED_PRECONDITION).
//
// How. One writer at a time (writer lock). A change is: validate every field
// (INVALID_ARGUMENT naming the field) -> check expected_revision
// (FAILED_PRECONDITION) -> apply to the MembershipIndex (which validates
// references and cycles and returns the membership delta) -> one Store
// WriteBatch with a synced WAL (on failure the index change is undone) ->
// PolicyCompiler recomputes only what the delta touches -> each affected
// host's changes are merged into its HostFeed -> realization records the
// revision and which hosts must ack it. Every method makes its change as
// one ModelService::Change (model_service.cc): its index steps carry their
// undo, run when the change is not committed, and Commit is the one tail
// (write, then tables and compiler, flush, publish, realization). Readers
// share the lock.
//
// Status codes: INVALID_ARGUMENT (400), NOT_FOUND (404), ALREADY_EXISTS
// (409, create of an existing id), FAILED_PRECONDITION (409: revision
// conflict, or a referenced object), INTERNAL (500: store failure),
// RESOURCE_EXHAUSTED (507: the store's disk is full, Store), UNAVAILABLE
// (503: the store refuses writes after a failed one, until a restart).
//
// Thread safety: every public method is safe from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "dfw/base/metrics.h"
#include "dfw/controller/flow_hub.h"
#include "dfw/controller/host_feed.h"
#include "dfw/controller/policy_compiler.h"
#include "dfw/controller/probe_hub.h"
#include "dfw/controller/store.h"
#include "dfw/controller/vm_handover.h"
#include "dfw/tagging/membership_index.h"
#include "dfw/v1/controller.pb.h"
#include "dfw/v1/host.pb.h"

namespace dfw::controller {

struct ModelStats {
  uint64_t revision = 0;
  size_t vms = 0, groups = 0, policies = 0, hosts = 0, connected_hosts = 0;
  // Exclusion list entries, and the vNICs they cover now.
  size_t exclusions = 0, excluded_vnics = 0;
  // VMs a host reported that another connected host holds (refused, kept
  // with their host), since the controller started.
  uint64_t refused_vm_claims = 0;
  HandoverStats handover;
  tagging::IndexStats index;
  CompilerStats compiler;
};

// Bucket bounds (seconds) of the realization histogram (accepted -> last
// affected host acked): 5 ms .. 5 min.
inline std::vector<double> RealizationBuckets() {
  return {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300};
}

// What GET /metrics shows of the model (ModelService::Metrics, read when
// scraped; docs/architecture.md, "Metrics").
struct ModelMetrics {
  ModelStats stats;
  // Hosts whose realized revision is below the one they must reach
  // (connected or not), and the age of the oldest revision this process
  // recorded that some affected host has not acked (0 when none; after a
  // restart the hosts are pending with no record until they ack).
  size_t hosts_pending = 0;
  double oldest_unrealized_seconds = 0;
  // Feed depth (HostFeed::depth): objects merged and not yet sent, summed
  // over hosts and the largest; feeds owing a message.
  size_t feed_objects = 0, feed_objects_max = 0, feeds_owed = 0;
  uint64_t store_commits = 0, store_commit_failures = 0;
  metrics::Histogram::Snapshot store_commit_seconds;
  // Accepted -> last affected host acked, for revisions that affected at
  // least one host.
  metrics::Histogram::Snapshot realization_seconds;
  struct Host {
    std::string id;
    bool connected = false;
    uint64_t realized_revision = 0, want_revision = 0;
    size_t feed_objects = 0;
  };
  std::vector<Host> hosts;  // only when asked for (cardinality), by id
};

class ModelService {
 public:
  // Opens the store in data_dir and rebuilds memberships and rulesets.
  static absl::StatusOr<std::unique_ptr<ModelService>> Open(const std::string& data_dir,
                                                            const StoreOptions& store = {});
  // The same over an opened store (RocksStore, EtcdStore).
  static absl::StatusOr<std::unique_ptr<ModelService>> Open(std::unique_ptr<Store> store);
  ~ModelService();

  // create_only: fail with ALREADY_EXISTS when the id exists (REST POST).
  absl::StatusOr<dfw::v1::Vm> PutVm(const dfw::v1::PutVmRequest& req, bool create_only = false);
  absl::StatusOr<dfw::v1::Vm> GetVm(const std::string& id) const;
  absl::StatusOr<dfw::v1::ListVmsResponse> ListVms(const dfw::v1::ListRequest& req) const;
  absl::StatusOr<dfw::v1::DeleteResponse> DeleteVm(const dfw::v1::DeleteRequest& req);
  absl::StatusOr<dfw::v1::TagResponse> Tag(const dfw::v1::TagRequest& req);
  // The impact preview of a Tag request (REST ?dry_run=true, `dfwctl vm tag
  // ... --dry-run`): validated as Tag, then what its membership changes do,
  // as PreviewGroup says it (group_id empty; every group whose members
  // change in groups_changed). Nothing is stored or sent.
  absl::StatusOr<dfw::v1::GroupImpact> PreviewTag(const dfw::v1::TagRequest& req);
  absl::StatusOr<dfw::v1::VmGroupsResponse> VmGroups(const std::string& vm_id) const;
  absl::StatusOr<dfw::v1::EffectiveRulesResponse> EffectiveRules(
      const dfw::v1::EffectiveRulesRequest& req) const;
  // Which stage and rule decide a new connection between two VMs, from the
  // rules as compiled now, with each enforcing host's realization (trace.h).
  absl::StatusOr<dfw::v1::TraceResponse> Trace(const dfw::v1::TraceRequest& req) const;
  // A trace with packets (controller.proto ProbeFlowRequest; probe_flow.cc):
  // Trace's answer, then one-shot captures armed by the hosts enforcing
  // each end (the receiver's first, when the ends are on two hosts), the
  // probe packet sent by the sender's host with `inject`, and each host's
  // results awaited (no lock held meanwhile). Blocks up to the timeout plus
  // a few seconds. FAILED_PRECONDITION: inject from a VM no connected host
  // of ours holds.
  absl::StatusOr<dfw::v1::ProbeFlowResponse> ProbeFlow(const dfw::v1::ProbeFlowRequest& req);
  // A host's probe report (the session thread).
  void ProbeReport(const std::string& host_id, const dfw::v1::ProbeReport& report) {
    probe_hub_.Report(host_id, report);
  }

  absl::StatusOr<dfw::v1::SecurityGroup> PutGroup(const dfw::v1::PutGroupRequest& req,
                                                  bool create_only = false);
  absl::StatusOr<dfw::v1::SecurityGroup> GetGroup(const std::string& id) const;
  absl::StatusOr<dfw::v1::ListGroupsResponse> ListGroups(const dfw::v1::ListRequest& req) const;
  absl::StatusOr<dfw::v1::DeleteResponse> DeleteGroup(const dfw::v1::DeleteRequest& req);
  absl::StatusOr<dfw::v1::GroupMembership> GroupMembers(const std::string& id) const;
  // The impact preview of a group change (GroupImpact): validated exactly as
  // PutGroup would validate it (the same errors), then the VMs it gains and
  // loses, the including groups that change with it, every enforced vNIC
  // whose rules change (joining or leaving a group rules are applied to),
  // the address sets hosts would be sent and those hosts. Nothing is stored
  // or sent; it takes the writer lock for the index's delta.
  absl::StatusOr<dfw::v1::GroupImpact> PreviewGroup(const dfw::v1::PreviewGroupRequest& req);

  absl::StatusOr<dfw::v1::Policy> PutPolicy(const dfw::v1::PutPolicyRequest& req,
                                            bool create_only = false);
  absl::StatusOr<dfw::v1::Policy> GetPolicy(const std::string& id) const;
  absl::StatusOr<dfw::v1::ListPoliciesResponse> ListPolicies(const dfw::v1::ListRequest& req) const;
  // The impact preview of a policy change (PreviewPolicyRequest): validated
  // exactly as PutPolicy / DeletePolicy would validate it (the same errors),
  // then every enforced vNIC whose ruleset it would change, with its rule
  // counts before and after against the budget, the rules added, removed,
  // changed and the revalidating rules whose connections get re-checked,
  // and the hosts that would be sent a change with their realization.
  // Nothing is stored or sent. Live connection counts are not in it: the
  // controller holds none (each host's dataplane does).
  absl::StatusOr<dfw::v1::PolicyImpact> PreviewPolicy(
      const dfw::v1::PreviewPolicyRequest& req) const;
  // PreviewPolicy's rules-per-vNIC budget when the request sets none: the
  // ruleset size the dataplane's address-set figures are measured at
  // (docs/PERFORMANCE.md, 500 vNICs x 4,000 rules).
  static constexpr uint32_t kDefaultRulesPerVnicBudget = 4000;

  absl::StatusOr<dfw::v1::DeleteResponse> DeletePolicy(const dfw::v1::DeleteRequest& req);

  // The exclusion list (model.proto, Exclusion). AddExclusion: exactly one
  // of vm_id and vnic_id (INVALID_ARGUMENT naming the field), a reason of
  // 1..256 printable characters, the VM or vNIC known (NOT_FOUND), not
  // listed yet (ALREADY_EXISTS); one change (change log KIND_EXCLUSION, its
  // actor recorded in the entry): the vNICs it covers get an excluded
  // ruleset and their hosts steer them past the dataplane. An entry stays
  // when its VM leaves (it covers the VM again when it comes back).
  // DeleteExclusion: id "vm:<id>" or "vnic:<id>" (NOT_FOUND when absent).
  absl::StatusOr<dfw::v1::Exclusion> AddExclusion(const dfw::v1::Exclusion& req);
  absl::StatusOr<dfw::v1::ListExclusionsResponse> ListExclusions() const;
  absl::StatusOr<dfw::v1::DeleteResponse> DeleteExclusion(const std::string& id);
  static constexpr size_t kMaxExclusions = 1000;
  static constexpr size_t kMaxExclusionReason = 256;

  absl::StatusOr<dfw::v1::ListHostsResponse> ListHosts() const;
  // Removes a host that is not connected (FAILED_PRECONDITION while it is):
  // its record and every VM whose host it is, as one change (one revision,
  // change log events for the host and each VM); it then leaves ListHosts
  // and realization. NOT_FOUND when nothing names the host. A host that
  // connects again later registers anew.
  absl::StatusOr<dfw::v1::DeleteResponse> DeleteHost(const std::string& host_id);
  // Realization: a policy counts only the hosts holding at least one vNIC
  // it applies to, so a host with no VMs (or none in the policy's span)
  // never holds a policy back. A host counts as having realized revision R
  // only once it acked R (or a later revision) to this controller process,
  // or reconnected holding exactly the revision this process last sent it;
  // after a restart every host is pending until it acks again.
  absl::StatusOr<dfw::v1::RealizationResponse> Realization(
      const dfw::v1::RealizationRequest& req) const;

  // Change log after from_revision (at most limit events).
  absl::StatusOr<std::vector<dfw::v1::ChangeEvent>> Changes(uint64_t from_revision,
                                                            size_t limit) const;
  // Blocks until the revision exceeds `revision` or the timeout passes.
  uint64_t WaitForRevisionAbove(uint64_t revision, std::chrono::milliseconds timeout) const;
  uint64_t revision() const;

  // Host sessions. AttachHost applies the hello's inventory as one change
  // and binds the session to the host's feed (kept across sessions): when
  // the hello's held_revision is the last revision this controller sent the
  // host, the host gets one delta with what changed meanwhile (and that
  // revision counts as acked); else, when the hello carries the digests of
  // what it holds (a controller restart, a failover), a delta of the
  // objects that differ from its current state (`resumed`); else a full
  // state (and held_revision counts for nothing: only the ack of the full
  // state proves it). Returns the
  // feed and the session's generation; nothing is sent until the caller
  // Kick()s the feed. A new host beyond kMaxHosts: RESOURCE_EXHAUSTED.
  //
  // A host reports only its own VMs. A VM in a Hello or InventoryUpdate
  // that another *connected* host holds is refused alone: it stays with
  // its host, the rest of the report is applied, and the refusal is
  // counted (Host.refused_vm_claims in ListHosts, ModelStats) and logged.
  // A VM whose host is not connected (or that has none) may be claimed:
  // that is how a VM that moved while its old host was down is picked up.
  //
  // A guest agent's session (host id kGuestHostPrefix + VM id) reports its
  // one VM, and what it reports is a claim (host.proto): its tags are
  // dropped (a guest does not tag itself), its name is kept only for a VM
  // new to the controller, its addresses are marked ADDRESS_SOURCE_GUEST_AGENT
  // and quarantined (BoundAddress.quarantined, out of every group) when
  // another VM holds the same address. A hypervisor's report of an address
  // a guest holds quarantines the guest's (the hypervisor's inventory is
  // the operator's; the guest's is the guest's word).
  // Live migration (vm_handover.h): the refused report of a connected host
  // is kept as its claim; when the owner's report lets the VM go, the
  // newest claim of a connected host takes it over in the same change
  // (never removed, never two owners), and the connections the owner
  // exported (AddConnectionExport) go to the new owner's feed ahead of the
  // revision that gives it the VM's rules. A stale report of the old host
  // only claims: it cannot take the VM back while the new owner keeps it.
  // vms_removed only removes VMs of the reporting host.
  struct Attached {
    std::shared_ptr<HostFeed> feed;
    uint64_t generation = 0;
    bool full = false;     // a full state follows
    bool resumed = false;  // a delta from the host's digests follows
    size_t differing = 0;  // when resumed: objects sent whole or removed
  };
  absl::StatusOr<Attached> AttachHost(const dfw::v1::HostHello& hello, std::function<void()> wake,
                                      std::function<bool(dfw::v1::ControllerToHost)> deliver);
  // Several Hellos as one change (the registration storm: HostSessionService
  // batches the Hellos that queue up while a change is applied). The result
  // is each Hello's, in order, exactly as if they had been attached one at a
  // time in that order (a VM two of them report goes to the first; the
  // second's report of it is a refused claim), except that every effective
  // change is stored as one store write at one revision, compiled once,
  // and each affected host's feed gets one merge for the whole batch: a
  // connected host gets at most one delta for it, a host of the batch one
  // full state at that revision (or later). A Hello that fails validation
  // fails alone (nothing of it applied); a store failure fails every Hello
  // of the batch and undoes them all. `actor` names the reporter in the
  // change log (empty: the calling thread's ActorScope).
  struct HostHelloRequest {
    dfw::v1::HostHello hello;
    std::string actor;
    std::function<void()> wake;
    std::function<bool(dfw::v1::ControllerToHost)> deliver;
  };
  std::vector<absl::StatusOr<Attached>> AttachHosts(std::vector<HostHelloRequest> hellos);
  absl::Status UpdateInventory(const std::string& host_id, const dfw::v1::InventoryUpdate& update);
  // One chunk of the connections a host exports for a vNIC of a VM it holds
  // (host.proto, ConnectionExport), kept for the VM's next owner. One for a
  // VM the host does not hold is ignored (logged): a move already decided
  // is not undone by it. INVALID_ARGUMENT: no vm_id or vnic_id.
  absl::Status AddConnectionExport(const std::string& host_id, dfw::v1::ConnectionExport msg);
  // An ack for a revision above the last one this controller sent the host
  // (HostFeed::last_sent) is refused with INVALID_ARGUMENT and changes
  // nothing; the session then ends with that status.
  absl::Status Ack(const std::string& host_id, const dfw::v1::Ack& ack);
  void DetachHost(const std::string& host_id, uint64_t generation);
  // The feed's next message, built under the reader lock (sender threads).
  std::optional<dfw::v1::ControllerToHost> NextMessage(HostFeed* feed) const;

  // Flow records a host relays (FlowBatch) while someone observes: each
  // resolved under the reader lock — its vNIC's VM (id, name) among the
  // host's VMs, the VM's groups, its policy's name, the VM holding the
  // other end's address (an index of every VM's addresses, rebuilt when the
  // revision moved on; quarantined addresses left out) — and added to
  // flow_hub(), with the batch's lost count. A record of a vNIC the host does
  // not hold keeps empty names.
  void RelayFlows(const std::string& host_id, dfw::v1::FlowBatch batch);
  // Readers (REST GET /api/v1/flows) read here; a read makes the hub ask
  // every hypervisor's session for records (SetFlowWatch).
  FlowHub& flow_hub() { return flow_hub_; }
  // Tells every hypervisor session (not guest agents: they have no
  // dataplane records) to send flow records or stop; sessions bound later
  // are told the same.
  void SetFlowWatch(bool on);

  ModelStats Stats() const;
  // Under the reader lock; the per-host list only when `per_host`.
  ModelMetrics Metrics(bool per_host) const;

  // Size limits on what the API (REST and gRPC: PutVm, Tag, PutGroup) may
  // write; beyond them INVALID_ARGUMENT names the field and the limit
  // ("vm.vnics: 17 vNICs; at most 16"). Host inventory reports are not
  // held to them. Policy limits: policy_validator.h.
  static constexpr size_t kMaxTagsPerVm = 64;  // API tags of one VM
  static constexpr size_t kMaxVnicsPerVm = 16;
  static constexpr size_t kMaxAddressesPerVnic = 64;
  static constexpr size_t kMaxStaticPrefixesPerGroup = 4096;
  static constexpr size_t kMaxStaticMembersPerGroup = 4096;  // each of vm_ids, vnic_ids
  static constexpr size_t kMaxIncludedGroupsPerGroup = 256;
  static constexpr size_t kMaxCriteriaPerGroup = 64;  // conjunctions; conditions per conjunction

  // Registered hosts at most (a per-identity limit hook for later): a Hello
  // from a new host id beyond it is refused with RESOURCE_EXHAUSTED.
  static constexpr size_t kMaxHosts = 10000;
  // The host id of a guest agent's session: "guest:<vm id>".
  static constexpr std::string_view kGuestHostPrefix = "guest:";
  static bool IsGuestHost(std::string_view host_id) {
    return host_id.substr(0, kGuestHostPrefix.size()) == kGuestHostPrefix;
  }

  // A standby's warm model (controller_server.h): applies a change another
  // controller committed to the store (EtcdStore::Follow) to the index, the
  // compiler and the tables exactly as a Load of the store after it would
  // find them (docs/architecture.md, "Warm standbys"). Nothing is written
  // and no host is sent anything. The change's revision must follow this
  // model's (FAILED_PRECONDITION otherwise); any other error (an object
  // that does not parse, an index refusal) leaves the model unusable: the
  // caller opens the store again.
  absl::Status ApplyFollowed(const StoredChange& change);
  // The backend revision (StoredState::backend_revision) of the store
  // snapshot this model was opened from: where following starts.
  int64_t opened_backend_revision() const { return opened_backend_revision_; }
  // A followed model taking over: every known host is pending at the
  // current revision until it acks to this process, as after Open.
  void PrepareToLead();

  // A change that touches no rule (an enrollment token, a certificate
  // issued or revoked): `fill` adds its writes and change log events under
  // the writer lock; the change then commits as one batch at the next
  // revision, so it is ordered and audited like any other change. Returns
  // that revision (the current one when `fill` added nothing: no commit).
  // `fill` failing changes nothing.
  absl::StatusOr<uint64_t> CommitAuxiliary(const std::function<absl::Status(ChangeSet&)>& fill);
  const Store& store() const { return *store_; }

 private:
  ModelService();
  struct HostState;
  struct RevisionRecord;

  struct InventoryBatch;
  struct VmChange;
  // One change: its store writes, the index steps made (with their undo)
  // and what to tell the tables and the compiler once written (the .cc).
  class Change;
  // Writes the change and, only then, applies its steps, flushes the
  // compiler, publishes to the host feeds and records the revision; on a
  // store error undoes its steps and changes nothing (writer lock held).
  absl::Status Commit(Change& change);
  // The written change's steps, flush and revision; the publication to the
  // host feeds and realization only when `publish` (a followed change: no).
  void Apply(Change& change, bool publish);

  // The policy change's checks (mu_ held, either mode): the fields
  // (ValidatePolicy, referenced groups), create_only, expected_revision.
  absl::Status CheckPutPolicy(const dfw::v1::Policy* p, uint64_t expected_revision,
                              bool create_only) const;
  absl::Status CheckDeletePolicy(const std::string& id, uint64_t expected_revision) const;
  // PutGroup's checks: the fields (no lock), then (mu_ held) create_only,
  // expected_revision and the groups it names; an index refusal's status.
  static absl::StatusOr<tagging::GroupSpec> CheckPutGroupFields(
      const dfw::v1::PutGroupRequest& req);
  absl::Status CheckPutGroup(const dfw::v1::PutGroupRequest& req, bool create_only) const;
  static absl::Status GroupIndexError(const absl::Status& st);
  // Tag, or (preview set) its preview: the same steps, undone.
  absl::StatusOr<dfw::v1::TagResponse> TagOrPreview(const dfw::v1::TagRequest& req,
                                                    dfw::v1::GroupImpact* preview);
  // A membership delta's impact (mu_ held): `id` the group changed ("" for
  // a tag change: every changed group goes to groups_changed).
  void FillMembershipImpact(const tagging::MembershipDelta& delta, const std::string& id,
                            dfw::v1::GroupImpact* out) const;
  // One host's realization toward `want` (rmu_ held); hs null: a host this
  // process never saw (DISCONNECTED).
  static void FillHostRealization(const std::string& id, const HostState* hs, uint64_t want,
                                  dfw::v1::HostRealization* out);

  // Writer-path helpers (writer lock held).
  // One host's report as its own change.
  absl::Status ApplyInventory(const std::string& host_id, const std::vector<dfw::v1::Vm>& vms_set,
                              const std::vector<std::string>& vms_removed);
  // Validates one host's report and applies it to the index, vms_ and
  // host_records_ as part of `batch` (a later report of the batch sees it);
  // on error nothing of this report is applied. Not stored until
  // CommitInventory, which stores the batch as one change at one revision
  // (or, on a store error, undoes every report of it).
  absl::Status StageInventory(const std::string& host_id, const std::vector<dfw::v1::Vm>& vms_set,
                              const std::vector<std::string>& vms_removed, bool replace_host,
                              const dfw::v1::Host* host_record, InventoryBatch& batch);
  absl::Status CommitInventory(InventoryBatch& batch);
  // Binds a session whose Hello is applied to its host's feed (rmu_ held).
  Attached BindSessionLocked(HostHelloRequest& req);
  void Publish(ChangeFanout& fanout, uint64_t revision);
  // Queues the connections exported for `vm_id` on the feed of its new
  // owner `to` (creating the host's feed when its session is not bound yet).
  void SendImports(const std::string& vm_id, const std::string& to,
                   std::chrono::steady_clock::time_point now);
  // Raises hs.acked to `revision` and settles the revision records it
  // completes (rmu_ held).
  void AdvanceAcked(HostState& hs, uint64_t revision);
  void Committed(uint64_t revision);
  // store_->Commit, counted and timed for GET /metrics.
  absl::Status StoreCommit(const ChangeSet& cs);

  std::unique_ptr<Store> store_;
  mutable std::shared_mutex mu_;  // writer lock / readers
  uint64_t revision_ = 0;
  int64_t opened_backend_revision_ = 0;
  std::unique_ptr<tagging::MembershipIndex> index_;
  std::unique_ptr<PolicyCompiler> compiler_;
  // VMs by id, and each host's VM ids: a host's report finds the VMs it no
  // longer lists, and a hypervisor's the guest-reported VMs, without a scan
  // of every VM (that made the registration storm O(hosts x VMs)).
  class VmTable {
   public:
    using Map = std::map<std::string, dfw::v1::Vm>;
    const Map& all() const { return vms_; }
    Map::const_iterator find(const std::string& id) const { return vms_.find(id); }
    Map::const_iterator begin() const { return vms_.begin(); }
    Map::const_iterator end() const { return vms_.end(); }
    size_t size() const { return vms_.size(); }
    size_t count(const std::string& id) const { return vms_.count(id); }
    const dfw::v1::Vm& at(const std::string& id) const { return vms_.at(id); }
    void Put(dfw::v1::Vm vm);
    // The VM's last value (nullopt: there was none).
    std::optional<dfw::v1::Vm> Erase(const std::string& id);
    // Ids of the VMs whose host is `host` (sorted).
    const std::set<std::string>& OfHost(const std::string& host) const;
    // Hosts with at least one VM whose id starts with `prefix`, and their VMs.
    template <typename F>
    void ForHostsWithPrefix(std::string_view prefix, F&& f) const {
      for (auto it = by_host_.lower_bound(std::string(prefix));
           it != by_host_.end() && it->first.compare(0, prefix.size(), prefix) == 0; ++it) {
        f(it->first, it->second);
      }
    }

   private:
    Map vms_;
    std::map<std::string, std::set<std::string>> by_host_;
  };
  VmTable vms_;
  std::map<std::string, dfw::v1::SecurityGroup> groups_;
  std::map<std::string, dfw::v1::Policy> policies_;
  std::map<std::string, dfw::v1::Exclusion> exclusions_;  // by "vm:<id>" / "vnic:<id>"
  // An exclusion list entry's output fields filled (covered vNICs, hosts).
  dfw::v1::Exclusion ExclusionView(const dfw::v1::Exclusion& e) const;
  std::map<std::string, dfw::v1::Host> host_records_;
  VmHandover handover_;  // claims of moving VMs and their connections

  // Sessions and realization (own lock; taken after mu_ when both are held).
  mutable std::mutex rmu_;
  std::map<std::string, std::unique_ptr<HostState>> hosts_;
  std::map<uint64_t, std::unique_ptr<RevisionRecord>> revisions_;
  uint64_t refused_vm_claims_ = 0;

  // GET /metrics: updated where the work happens, read when scraped.
  std::atomic<uint64_t> store_commits_{0}, store_commit_failures_{0};
  metrics::Histogram store_commit_seconds_{metrics::LatencyBuckets()};
  metrics::Histogram realization_seconds_{RealizationBuckets()};
  // A revision record's last affected host acked (or left): its latency.
  void RevisionDone(RevisionRecord& rec, std::chrono::steady_clock::time_point now);

  std::atomic<bool> flow_watch_{false};
  // RelayFlows' address -> (VM id, name), of revision peer_revision_ (taken
  // under the reader lock, then peer_mu_).
  std::mutex peer_mu_;
  uint64_t peer_revision_ = UINT64_MAX;
  std::unordered_map<std::string, std::pair<std::string, std::string>> peer_vm_;
  FlowHub flow_hub_{[this](bool on) { SetFlowWatch(on); }};
  ProbeHub probe_hub_;
  bool HostConnected(const std::string& host_id) const;
  // Queues `req` on a connected hypervisor's feed (UNAVAILABLE otherwise).
  absl::Status SendProbe(const std::string& host_id, dfw::v1::ProbeRequest req);

  std::atomic<uint64_t> watch_revision_{0};
  mutable std::mutex watch_mu_;
  mutable std::condition_variable watch_cv_;
};

}  // namespace dfw::controller
