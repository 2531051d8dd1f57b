// Store: the controller's durable state in an embedded RocksDB.
//
// What. Every object an operator or a host writes (VMs, security groups,
// policies, hosts), the global revision counter, the stable rule numbers and
// a change log for Watch.
//
// How. One RocksDB database in the data directory, default column family,
// one key prefix per kind:
//   "v/<vm id>"  Vm proto            "g/<group id>"  SecurityGroup proto
//   "p/<policy>" Policy proto        "h/<host id>"   Host proto
//   "n/<policy>\0<rule id>" fixed32 rule number (stable across updates)
//   "t/<token hash>" JoinToken       "c/<serial>"   IssuedCertificate (trust.proto)
//   "l/<rev be64><seq be32>" ChangeEvent   (change log, trimmed to kLogKeep)
//   "m/revision" fixed64, "m/next_rule_num" fixed32
// One change = one ChangeSet = one WriteBatch written with sync=true, the new
// revision inside the same batch: after Commit returns OK the change survives
// a crash (kill -9, power loss with a honest disk); before, nothing of it does.
//
// Thread safety: Commit calls must be serialized by the caller (the
// controller's single writer); Load and ChangesSince may run concurrently
// with Commit.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "dfw/v1/model.pb.h"
#include "dfw/v1/realization.pb.h"

namespace rocksdb {
class DB;
}

namespace dfw::controller {

enum class Kind : char {
  kVm = 'v',
  kGroup = 'g',
  kPolicy = 'p',
  kHost = 'h',
  kJoinToken = 't',
  kCertificate = 'c',
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
  const std::vector<dfw::v1::ChangeEvent>& events() const { return events_; }
  bool empty() const { return ops_.empty() && events_.empty(); }

 private:
  friend class Store;
  struct Op {
    std::string key;
    bool del = false;
    std::string value;
  };
  uint64_t revision_;
  std::vector<Op> ops_;
  std::vector<dfw::v1::ChangeEvent> events_;
  uint32_t next_rule_num_ = 0;
};

// The whole store, read once at start.
struct StoredState {
  uint64_t revision = 0;
  uint32_t next_rule_num = 1;
  std::vector<dfw::v1::Vm> vms;
  std::vector<dfw::v1::SecurityGroup> groups;
  std::vector<dfw::v1::Policy> policies;
  std::vector<dfw::v1::Host> hosts;
  struct RuleNum {
    std::string policy_id, rule_id;
    uint32_t num;
  };
  std::vector<RuleNum> rule_nums;
};

class Store {
 public:
  // Opens (creating if missing) the database in `dir`.
  static absl::StatusOr<std::unique_ptr<Store>> Open(const std::string& dir);
  ~Store();

  absl::StatusOr<StoredState> Load() const;
  // Writes the change atomically with a synced WAL.
  absl::Status Commit(const ChangeSet& change);
  // One stored object of a kind (NOT_FOUND if absent), and every object of a
  // kind, for the kinds StoredState does not carry (tokens, certificates).
  absl::Status Get(Kind kind, const std::string& id, google::protobuf::Message* out) const;
  absl::Status ForEach(Kind kind,
                       const std::function<absl::Status(const std::string& value)>& fn) const;
  // Change log entries with revision > from_revision, at most `limit`.
  // FAILED_PRECONDITION when from_revision is older than the retained log.
  absl::StatusOr<std::vector<dfw::v1::ChangeEvent>> ChangesSince(uint64_t from_revision,
                                                                 size_t limit) const;

  static constexpr uint64_t kLogKeep = 100000;  // revisions of change log kept

 private:
  explicit Store(std::unique_ptr<rocksdb::DB> db);
  std::unique_ptr<rocksdb::DB> db_;
};

}  // namespace dfw::controller
