// Store: the controller's durable state.
//
// What. Every object an operator or a host writes (VMs, security groups,
// policies, hosts), the global revision counter, the stable rule numbers and
// a change log for Watch.
//
// How. One key space, one key prefix per kind (the same in every backend):
//   "v/<vm id>"  Vm proto            "g/<group id>"  SecurityGroup proto
//   "p/<policy>" Policy proto        "h/<host id>"   Host proto
//   "n/<policy>\0<rule id>" fixed32 rule number (stable across updates)
//   "t/<token hash>" JoinToken       "c/<serial>"   IssuedCertificate (trust.proto)
//   "x/vm:<vm id>", "x/vnic:<vnic id>" Exclusion (the exclusion list)
//   "l/<rev be64><seq be32>" ChangeEvent   (change log, trimmed to kLogKeep)
//   "m/revision" fixed64, "m/next_rule_num" fixed32
// One change = one ChangeSet written atomically with the new revision:
// after Commit returns OK the change is durable; before, nothing of it is
// visible. The backends: RocksStore (rocks_store.h: one RocksDB in the data
// directory, the default) and EtcdStore (etcd_store.h: the keys under a
// prefix in an etcd cluster, for controllers in high availability).
//
// Thread safety: Commit calls must be serialized by the caller (the
// controller's single writer); Load, Get, ForEach and ChangesSince may run
// concurrently with Commit.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "dfw/v1/model.pb.h"
#include "dfw/v1/realization.pb.h"

namespace dfw::controller {

enum class Kind : char {
  kVm = 'v',
  kGroup = 'g',
  kPolicy = 'p',
  kHost = 'h',
  kJoinToken = 't',
  kCertificate = 'c',
  kExclusion = 'x',
};

// Who is changing the model on this thread: the transports (gRPC, REST, host
// sessions) set it for the duration of a call; every change log event the
// thread writes carries it (ChangeEvent.actor). Empty outside a scope: the
// event then says "controller".
class ActorScope {
 public:
  explicit ActorScope(std::string actor);
  ~ActorScope();
  ActorScope(const ActorScope&) = delete;
  ActorScope& operator=(const ActorScope&) = delete;
  static const std::string& Current();

 private:
  std::string previous_;
};

// Everything one accepted change writes.
class ChangeSet {
 public:
  explicit ChangeSet(uint64_t revision) : revision_(revision) {}
  uint64_t revision() const { return revision_; }
  void Put(Kind kind, const std::string& id, const google::protobuf::Message& value);
  void Delete(Kind kind, const std::string& id);
  void PutRuleNum(const std::string& policy_id, const std::string& rule_id, uint32_t num);
  void SetNextRuleNum(uint32_t next) { next_rule_num_ = next; }
  void AddEvent(dfw::v1::ChangeEvent::Kind kind, const std::string& id, bool deleted);
  // Appends `other`'s writes and events after this one's (same revision).
  void Append(ChangeSet&& other);
  const std::vector<dfw::v1::ChangeEvent>& events() const { return events_; }
  bool empty() const { return ops_.empty() && events_.empty(); }

  // What a backend writes: the objects' puts and deletes in order, then
  // the events (the change log) and the next rule number (0: unchanged).
  struct Op {
    std::string key;
    bool del = false;
    std::string value;
  };
  const std::vector<Op>& ops() const { return ops_; }
  uint32_t next_rule_num() const { return next_rule_num_; }

 private:
  uint64_t revision_;
  std::vector<Op> ops_;
  std::vector<dfw::v1::ChangeEvent> events_;
  uint32_t next_rule_num_ = 0;
};

// The whole store, read once at start.
struct StoredState {
  uint64_t revision = 0;
  // The backend's own revision of this snapshot (etcd's; 0 for RocksDB):
  // where a standby following the store starts (EtcdStore::Follow).
  int64_t backend_revision = 0;
  uint32_t next_rule_num = 1;
  std::vector<dfw::v1::Vm> vms;
  std::vector<dfw::v1::SecurityGroup> groups;
  std::vector<dfw::v1::Policy> policies;
  std::vector<dfw::v1::Host> hosts;
  std::vector<dfw::v1::Exclusion> exclusions;
  struct RuleNum {
    std::string policy_id, rule_id;
    uint32_t num;
  };
  std::vector<RuleNum> rule_nums;
};

// One change another writer committed, as it wrote it (a standby following
// the leader, EtcdStore::Follow): the model revision it made and its object,
// rule-number and metadata keys (store_keys layout, without the backend's
// prefix), in the order written; change log keys are left out.
struct StoredChange {
  uint64_t revision = 0;
  int64_t backend_revision = 0;
  std::vector<ChangeSet::Op> ops;
};

struct StoreOptions {
  // Writes are refused while the data dir's filesystem has less available
  // (--store-min-free-mb); 0: no check.
  uint64_t min_free_bytes = 64ull << 20;
  // Open a damaged store anyway (--accept-store-loss): what is readable,
  // the loss logged, revisions continued after the last acknowledged one.
  bool accept_loss = false;
};

// The error of a write refused for lack of disk space (RESOURCE_EXHAUSTED,
// HTTP 507 over REST).
bool IsStoreFull(const absl::Status& s);

// The store's interface. Two backends keep the same keys (layout above):
// RocksStore (rocks_store.h), the embedded default for one controller, and
// EtcdStore (etcd_store.h), for several controllers on an etcd cluster.
class Store {
 public:
  // Opens (creating if missing) the embedded RocksDB store in `dir`
  // (RocksStore).
  static absl::StatusOr<std::unique_ptr<Store>> Open(const std::string& dir,
                                                     const StoreOptions& options = {});
  virtual ~Store() = default;

  // Writes are refused for now (the disk was full at start and is still).
  virtual bool read_only() const = 0;
  // Where the store is, for logs: a directory, or etcd endpoints and prefix.
  virtual std::string Describe() const = 0;

  virtual absl::StatusOr<StoredState> Load() const = 0;
  // Writes the change atomically and durably: after OK it survives a crash
  // of the controller (and, for etcd, of a minority of the cluster); on an
  // error nothing of it is written.
  virtual absl::Status Commit(const ChangeSet& change) = 0;
  // One stored object of a kind (NOT_FOUND if absent), and every object of a
  // kind, for the kinds StoredState does not carry (tokens, certificates).
  virtual absl::Status Get(Kind kind, const std::string& id,
                           google::protobuf::Message* out) const = 0;
  virtual absl::Status ForEach(
      Kind kind, const std::function<absl::Status(const std::string& value)>& fn) const = 0;
  // Change log entries with revision > from_revision, at most `limit`.
  // FAILED_PRECONDITION when from_revision is older than the retained log.
  virtual absl::StatusOr<std::vector<dfw::v1::ChangeEvent>> ChangesSince(uint64_t from_revision,
                                                                         size_t limit) const = 0;

  static constexpr uint64_t kLogKeep = 100000;  // revisions of change log kept
};

}  // namespace dfw::controller
