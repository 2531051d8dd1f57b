// RocksStore: the Store (store.h) in an embedded RocksDB, the default
// backend of a single controller.
//
// One RocksDB database in the data directory, default column family, the
// keys of store.h.
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
// Thread safety: as Store.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <string>

#include "dfw/controller/store.h"

namespace rocksdb {
class DB;
}

namespace dfw::controller {

class RocksStore : public Store {
 public:
  // Opens (creating if missing) the database in `dir`.
  static absl::StatusOr<std::unique_ptr<RocksStore>> Open(const std::string& dir,
                                                          const StoreOptions& options = {});
  ~RocksStore() override;

  static constexpr char kWatermarkFile[] = "dfw-acked-revision";
  // Opened read-only (the disk was full at start) and not reopened yet.
  bool read_only() const override;
  std::string Describe() const override { return dir_; }

  absl::StatusOr<StoredState> Load() const override;
  // Writes the change atomically with a synced WAL.
  absl::Status Commit(const ChangeSet& change) override;
  absl::Status Get(Kind kind, const std::string& id, google::protobuf::Message* out) const override;
  absl::Status ForEach(
      Kind kind, const std::function<absl::Status(const std::string& value)>& fn) const override;
  absl::StatusOr<std::vector<dfw::v1::ChangeEvent>> ChangesSince(uint64_t from_revision,
                                                                 size_t limit) const override;

 private:
  RocksStore(std::string dir, const StoreOptions& options);
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
