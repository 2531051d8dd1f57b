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
// A damaged WAL is not opened silently (issue 15). RocksDB replays its WAL
// up to the first bad record and opens, and a WAL cut at a record boundary
// or deleted looks like a shorter history: acknowledged writes would be
// gone and their revisions reused. So the store keeps its own record of
// the last acknowledged revision outside RocksDB, the watermark file
// (kWatermarkFile in the data dir: one 32-byte record rewritten in place
// with pwrite + fdatasync after each committed change, after the WAL sync:
// it is never ahead of an acknowledged write; a crash between the two
// leaves it one change behind, which is harmless). Open checks the
// database read-only first (nothing in the directory changes when it
// refuses): a corrupt WAL record, or "m/revision" below the watermark, is
// refused with a message naming the files and both revisions, unless
// StoreOptions::accept_loss (--accept-store-loss), which opens what can be
// read (point-in-time recovery), logs the loss loudly and continues the
// revision from the watermark so no revision is reused. A store without a
// watermark file (first start, or a store from before the watermark) gets
// one.
//
// A full disk is not met by RocksDB (whose error paths abort in the
// packaged 7.8 build). Commit refuses a change while the filesystem of the
// data dir has less than StoreOptions::min_free_bytes available
// (RESOURCE_EXHAUSTED; IsStoreFull), and Open on such a filesystem opens
// the database read-only: reads work, writes are refused, and the first
// write after space is back reopens it read-write. RocksDB's info log
// (DIR/LOG) is written by a logger of ours that drops lines on a full disk
// (RocksDB's own aborts at its second failed line). A write RocksDB fails
// anyway (an IO error) is returned (nothing of it applied) and every later
// write is refused (UNAVAILABLE) until the controller restarts: the
// database is not closed after such an error (RocksDB 7.8 asserts when it
// closes a WAL writer that saw one); the WAL holds every acknowledged
// write, as after kill -9.
//
// Thread safety: Commit calls must be serialized by the caller (the
// controller's single writer); Load and ChangesSince may run concurrently
// with Commit.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <shared_mutex>
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
  // Appends `other`'s writes and events after this one's (same revision).
  void Append(ChangeSet&& other);
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

class Store {
 public:
  // Opens (creating if missing) the database in `dir`.
  static absl::StatusOr<std::unique_ptr<Store>> Open(const std::string& dir,
                                                     const StoreOptions& options = {});
  ~Store();

  static constexpr char kWatermarkFile[] = "dfw-acked-revision";
  // Opened read-only (the disk was full at start) and not reopened yet.
  bool read_only() const;

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
  Store(std::string dir, const StoreOptions& options);
  absl::StatusOr<std::unique_ptr<rocksdb::DB>> OpenDb(bool read_only, bool point_in_time) const;
  absl::StatusOr<std::unique_ptr<rocksdb::DB>> OpenWritable();
  absl::Status CheckAcked(uint64_t stored, std::optional<uint64_t> acked);
  absl::Status CheckWritable();
  absl::Status WriteWatermark(uint64_t revision);
  uint64_t StoredRevision(rocksdb::DB* db = nullptr) const;

  const std::string dir_;
  const StoreOptions options_;
  // Readers share it; reopening the database (read-only -> read-write)
  // takes it exclusively.
  mutable std::shared_mutex db_mu_;
  std::unique_ptr<rocksdb::DB> db_;
  bool read_only_ = false;
  bool failed_ = false;  // a write failed: no more writes to db_
  uint64_t floor_ = 0;   // revisions continue above it (accepted loss)
  int watermark_fd_ = -1;
  uint64_t watermark_ = 0;
};

}  // namespace dfw::controller
