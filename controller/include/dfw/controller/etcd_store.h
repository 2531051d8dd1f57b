// EtcdStore: the Store (store.h) in an etcd v3 cluster, for controllers in
// high availability (issue 15); and EtcdLeaderElection, which of them writes.
//
// Keys. Those of store.h under a prefix (EtcdOptions::prefix, "/dfw/" by
// default): "/dfw/v/<vm id>", "/dfw/m/revision", ... The same bytes as in
// RocksDB, so a store moves between the backends by copying keys.
//
// One change = one etcd transaction (Txn). It compares "m/revision" with the
// revision before the change (so two writers can never both commit revision
// N) and, with a leader guard set, the create-revision of the leader key
// with the one this controller created: a deposed leader (its lease
// expired, another controller elected) has its write refused by etcd itself
// (FAILED_PRECONDITION "not the leader"), whatever its own clock thinks. The
// puts and deletes of the change, its change log entries, the revision and
// the next rule number are the transaction's operations. etcd caps them
// (--max-txn-ops, 128 by default; --max-request-bytes, 1.5 MiB): a change
// above EtcdOptions::max_txn_ops or max_request_bytes is refused before it
// is sent (RESOURCE_EXHAUSTED naming the limit and the etcd flag to raise),
// never split: a split change would be visible half-written to a standby and
// after a failover. A transaction whose outcome is unknown (the connection
// dropped after sending it) is resolved by reading "m/revision" and the
// change's first log key back, so an applied change is never reported as
// failed nor written twice.
//
// Reads are linearizable (etcd's default): Load pages through the prefix at
// one etcd revision, so it sees one consistent snapshot.
//
// Durability is etcd's: a change acknowledged by a quorum survives the loss
// of a minority of members. A full disk (etcd's NOSPACE alarm) refuses
// writes with etcd's error while reads go on.
//
// Transport: plaintext only when every endpoint is a loopback address;
// otherwise TLS with EtcdOptions' CA (and client certificate, when etcd
// requires one). Every endpoint is tried in turn when one is unreachable.
//
// Thread safety: as Store (Commit from one writer; reads from any thread).
// EtcdLeaderElection: Campaign from one thread; leader() from any.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "dfw/controller/store.h"

namespace grpc {
class ClientContext;
}  // namespace grpc

namespace dfw::controller {

class EtcdClient;

struct EtcdOptions {
  std::vector<std::string> endpoints;  // host:port of the etcd members
  std::string prefix = "/dfw/";
  // TLS to etcd (required unless every endpoint is loopback): the CA that
  // signed etcd's certificates, and this controller's client certificate
  // and key when etcd asks for one (--client-cert-auth).
  std::string ca_file, cert_file, key_file;
  // etcd's transaction limits (its --max-txn-ops and --max-request-bytes).
  size_t max_txn_ops = 128;
  size_t max_request_bytes = 1536 * 1024;
  // Deadline of one etcd call.
  std::chrono::milliseconds timeout{5000};
};

// Parses "host:port,host:port" into endpoints (INVALID_ARGUMENT naming the
// bad one).
absl::StatusOr<std::vector<std::string>> ParseEtcdEndpoints(const std::string& list);

class EtcdStore : public Store {
 public:
  static absl::StatusOr<std::unique_ptr<EtcdStore>> Open(const EtcdOptions& options);
  ~EtcdStore() override;

  bool read_only() const override { return false; }
  std::string Describe() const override;

  absl::StatusOr<StoredState> Load() const override;
  absl::Status Commit(const ChangeSet& change) override;
  absl::Status Get(Kind kind, const std::string& id, google::protobuf::Message* out) const override;
  absl::Status ForEach(
      Kind kind, const std::function<absl::Status(const std::string& value)>& fn) const override;
  absl::StatusOr<std::vector<dfw::v1::ChangeEvent>> ChangesSince(uint64_t from_revision,
                                                                 size_t limit) const override;

  // From now on every Commit is refused unless `key` still has this
  // create-revision (the leader key EtcdLeaderElection holds).
  void SetLeaderGuard(const std::string& key, int64_t create_revision);

  // Follows the store (a standby keeping its model warm): an etcd watch on
  // the prefix from etcd revision `after` + 1 (a Load's
  // StoredState::backend_revision, or the last change's). Each transaction
  // that made a model revision reaches `fn` whole, in order (etcd never
  // splits one revision's events between watch responses); other writes
  // under the prefix (the leader key) are skipped. A broken stream, or a
  // member that lost its cluster's leader, moves the watch to the next
  // endpoint from the last change seen. Returns OK when `fn` returns false
  // or StopFollowing is called (also before Follow starts), and
  // FAILED_PRECONDITION when etcd compacted its history past the last
  // change seen (the follower must Load again).
  absl::Status Follow(int64_t after, const std::function<bool(StoredChange)>& fn);
  // Ends Follow (from any thread); for good: Follow returns at once after.
  void StopFollowing();
  // The model revision stored now ("m/revision"; a linearizable read).
  absl::StatusOr<uint64_t> Revision() const;

 private:
  explicit EtcdStore(const EtcdOptions& options);
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> RangePrefix(
      const std::string& prefix, const std::string& from, size_t limit, int64_t* revision) const;

  const EtcdOptions options_;
  std::unique_ptr<EtcdClient> client_;
  std::string guard_key_;  // full key; empty: no guard
  int64_t guard_create_revision_ = 0;
  std::mutex follow_mu_;
  bool follow_stopped_ = false;
  grpc::ClientContext* follow_ctx_ = nullptr;  // the watch's, while one is open
};

// Leader election on an etcd lease: the leader key ("<prefix>leader")
// exists while its creator's lease lives, and holds the leader's addresses
// (LeaderInfo). Campaign blocks until this controller creates it (only
// when absent, in one transaction) and keeps the lease alive from a
// thread; when a keep-alive fails past the lease's TTL, or etcd answers
// that the lease is gone, on_lost runs once (the controller then exits: a
// deposed leader must not serve). While another controller leads,
// Campaign polls the key and on_leader_seen reports who leads.
class EtcdLeaderElection {
 public:
  struct LeaderInfo {
    std::string name;  // this controller's name (--name), for logs
    std::string grpc;  // addresses clients use to reach it
    std::string http;
  };

  EtcdLeaderElection(const EtcdOptions& options, LeaderInfo self, std::chrono::seconds ttl);
  ~EtcdLeaderElection();

  // Blocks until this controller leads, or Stop. on_leader_seen is called
  // with the current leader whenever it changes while waiting.
  absl::Status Campaign(const std::function<void(const LeaderInfo&)>& on_leader_seen,
                        std::function<void(const std::string& why)> on_lost);
  // The leader key and its create-revision once Campaign returned OK (for
  // EtcdStore::SetLeaderGuard).
  const std::string& key() const { return key_; }
  int64_t create_revision() const { return create_revision_; }
  // Gives up: wakes Campaign, revokes the lease (the key goes at once, a
  // standby takes over without waiting for the TTL).
  void Stop();

  static std::string Encode(const LeaderInfo& info);
  static LeaderInfo Decode(const std::string& value);

 private:
  void KeepAlive();
  std::chrono::milliseconds RoundTrip() const;

  const EtcdOptions options_;
  const LeaderInfo self_;
  const std::chrono::seconds ttl_;
  const std::string key_;
  std::unique_ptr<EtcdClient> client_;
  int64_t lease_ = 0;
  int64_t create_revision_ = 0;
  std::function<void(const std::string&)> on_lost_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread keepalive_;
};

}  // namespace dfw::controller
