#include "dfw/controller/rocks_store.h"

#include <fcntl.h>
#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/write_batch.h>
#include <spdlog/spdlog.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <iterator>
#include <mutex>

#include "absl/strings/cord.h"
#include "google/protobuf/util/time_util.h"
#include "store_keys.h"
#include "str_util.h"

namespace dfw::controller {

using store_keys::AppendBe;
using store_keys::Key;
using store_keys::kNextRuleNumKey;
using store_keys::kRevisionKey;
using store_keys::kStoreFullPayload;
using store_keys::LogKey;
using store_keys::ReadBe;

namespace {

absl::Status FromRocks(const rocksdb::Status& s, const char* what) {
  return absl::InternalError(Cat("store: ", what, ": ", s.ToString()));
}

constexpr char kWatermarkMagic[] = "DFWACK01";  // 8 bytes
constexpr size_t kWatermarkSize = 32;           // magic, revision be64, ~revision be64, zeros

std::string Mib(uint64_t bytes) { return Cat(bytes >> 20, " MiB"); }

// RocksDB's info log (DIR/LOG) written with plain appends whose errors are
// ignored: RocksDB's own file logger aborts the process (an assertion in
// the packaged 7.8) at its second line once the disk is full.
class InfoLog : public rocksdb::Logger {
 public:
  explicit InfoLog(const std::string& path) : rocksdb::Logger(rocksdb::InfoLogLevel::INFO_LEVEL) {
    std::error_code ec;
    if (std::filesystem::file_size(path, ec) > kRotateBytes && !ec) {
      std::filesystem::rename(path, path + ".old", ec);
    }
    fd_ = open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  }
  ~InfoLog() override {
    if (fd_ >= 0) close(fd_);
  }
  using rocksdb::Logger::Logv;
  void Logv(const char* format, va_list ap) override {
    if (fd_ < 0) return;
    char line[2048];
    auto now = std::chrono::system_clock::now();
    std::time_t t = std::chrono::system_clock::to_time_t(now);
    std::tm tm{};
    gmtime_r(&t, &tm);
    size_t n = std::strftime(line, sizeof line, "%Y/%m/%d-%H:%M:%S ", &tm);
    int m = std::vsnprintf(line + n, sizeof line - n - 1, format, ap);
    if (m < 0) return;
    n = std::min(sizeof line - 2, n + static_cast<size_t>(m));
    line[n++] = '\n';
    (void)!write(fd_, line, n);  // a full disk drops the line
  }

 private:
  static constexpr uintmax_t kRotateBytes = 16 << 20;
  int fd_ = -1;
};

// Bytes available to this process on the filesystem holding `path` (or its
// nearest existing parent).
std::optional<uint64_t> FreeBytes(std::filesystem::path path) {
  std::error_code ec;
  while (!path.empty() && !std::filesystem::exists(path, ec)) path = path.parent_path();
  struct statvfs v {};
  if (statvfs(path.empty() ? "." : path.c_str(), &v) != 0) return std::nullopt;
  return static_cast<uint64_t>(v.f_bavail) * v.f_frsize;
}

// The watermark's revision; nullopt when the file does not exist.
absl::StatusOr<std::optional<uint64_t>> ReadWatermark(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return std::optional<uint64_t>();
    return absl::InternalError(Cat("store: cannot read ", path, ": ", std::strerror(errno)));
  }
  char buf[kWatermarkSize];
  ssize_t n = pread(fd, buf, sizeof buf, 0);
  close(fd);
  uint64_t rev = n == static_cast<ssize_t>(kWatermarkSize) ? ReadBe(buf + 8, 8) : 0;
  if (n != static_cast<ssize_t>(kWatermarkSize) || std::memcmp(buf, kWatermarkMagic, 8) != 0 ||
      ReadBe(buf + 16, 8) != ~rev) {
    return absl::DataLossError(Cat("store: ", path,
                                   " (the last acknowledged revision) is damaged: the store "
                                   "cannot be checked against it"));
  }
  return std::optional<uint64_t>(rev);
}

// The WAL files in `dir`, newest last, with their sizes.
std::string DescribeWals(const std::string& dir) {
  std::vector<std::pair<std::string, uintmax_t>> wals;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    if (e.path().extension() == ".log") {
      wals.emplace_back(e.path().string(), e.file_size(ec));
    }
  }
  std::sort(wals.begin(), wals.end());
  if (wals.empty()) return "no WAL file (*.log) in the directory";
  std::vector<std::string> parts;
  for (const auto& [name, size] : wals) parts.push_back(Cat(name, " (", size, " bytes)"));
  return Cat("WAL ", Join(parts, ", "));
}

template <typename M>
absl::Status ParseAll(rocksdb::DB* db, char prefix, std::vector<M>* out) {
  std::string p(1, prefix);
  p.push_back('/');
  std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions()));
  for (it->Seek(p); it->Valid() && it->key().starts_with(p); it->Next()) {
    M m;
    if (!m.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) {
      return absl::DataLossError(Cat("store: cannot parse ", it->key().ToString()));
    }
    out->push_back(std::move(m));
  }
  return FromIter(it->status());
}

}  // namespace

absl::Status FromIter(const rocksdb::Status& s) {
  if (s.ok()) return absl::OkStatus();
  return FromRocks(s, "iterate");
}

RocksStore::RocksStore(std::string dir, const StoreOptions& options)
    : dir_(std::move(dir)), options_(options) {}

RocksStore::~RocksStore() {
  if (watermark_fd_ >= 0) close(watermark_fd_);
  if (failed_) {
    // RocksDB 7.8 asserts when it closes a WAL writer that saw an error;
    // the WAL holds every acknowledged write: leave it as kill -9 would.
    spdlog::warn("store: {}: not closed after a failed write", dir_);
    (void)db_.release();
  }
}

bool RocksStore::read_only() const {
  std::shared_lock l(db_mu_);
  return read_only_;
}

absl::StatusOr<std::unique_ptr<rocksdb::DB>> RocksStore::OpenDb(bool read_only,
                                                                bool point_in_time) const {
  rocksdb::Options opts;
  opts.create_if_missing = true;
  opts.max_background_jobs = 2;
  opts.keep_log_file_num = 4;
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  opts.info_log = std::make_shared<InfoLog>(dir_ + "/LOG");
  // A torn last record (a crash inside an unacknowledged write) is
  // dropped; a bad record before the end fails the open.
  opts.wal_recovery_mode = point_in_time ? rocksdb::WALRecoveryMode::kPointInTimeRecovery
                                         : rocksdb::WALRecoveryMode::kTolerateCorruptedTailRecords;
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = read_only ? rocksdb::DB::OpenForReadOnly(opts, dir_, &raw)
                                : rocksdb::DB::Open(opts, dir_, &raw);
  if (!s.ok()) {
    if (s.IsCorruption()) {
      return absl::DataLossError(Cat("store: ", dir_, ": the write-ahead log is damaged (",
                                     s.ToString(), "; ", DescribeWals(dir_), ")"));
    }
    return FromRocks(s, Cat("open ", dir_).c_str());
  }
  return std::unique_ptr<rocksdb::DB>(raw);
}

uint64_t RocksStore::StoredRevision(rocksdb::DB* db) const {
  std::string v;
  rocksdb::Status s = (db ? db : db_.get())->Get(rocksdb::ReadOptions(), kRevisionKey, &v);
  return s.ok() && v.size() == 8 ? ReadBe(v.data(), 8) : 0;
}

absl::Status RocksStore::CheckAcked(uint64_t stored, std::optional<uint64_t> acked) {
  if (!acked || *acked <= stored) return absl::OkStatus();
  std::string what =
      Cat("store: ", dir_, " holds revision ", stored, " but the controller acknowledged revision ",
          *acked, " (", dir_, "/", kWatermarkFile, "): revisions ", stored + 1, "..", *acked,
          " are lost from the write-ahead log: cut, damaged or deleted (", DescribeWals(dir_), ")");
  if (!options_.accept_loss) {
    return absl::DataLossError(
        Cat(what,
            ". Refusing to start: restore the data directory from a backup, or start with "
            "--accept-store-loss to run with what the store holds (docs/architecture.md, "
            "Controller, \"Persistence\")"));
  }
  spdlog::error("STORE LOSS ACCEPTED (--accept-store-loss): {}; revisions continue from {}", what,
                *acked + 1);
  floor_ = *acked;
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<RocksStore>> RocksStore::Open(const std::string& dir,
                                                             const StoreOptions& options) {
  std::unique_ptr<RocksStore> st(new RocksStore(dir, options));
  const std::string mark_path = dir + "/" + kWatermarkFile;
  auto acked = ReadWatermark(mark_path);
  if (!acked.ok()) {
    if (!options.accept_loss) {
      return absl::DataLossError(Cat(acked.status().message(),
                                     ". Refusing to start: restore the data directory from a "
                                     "backup, or start with --accept-store-loss"));
    }
    spdlog::error("STORE LOSS ACCEPTED (--accept-store-loss): {}",
                  std::string(acked.status().message()));
    acked = std::optional<uint64_t>();
  }
  std::error_code ec;
  bool exists = std::filesystem::exists(dir + "/CURRENT", ec);
  auto free = FreeBytes(dir);
  bool full = free && *free < options.min_free_bytes;
  if (full && !exists) {
    return absl::ResourceExhaustedError(Cat("store: cannot create the store in ", dir, ": ",
                                            Mib(*free), " available, below the reserve of ",
                                            Mib(options.min_free_bytes), " (--store-min-free-mb)"));
  }
  if (exists) {
    // Checked read-only first: a refusal leaves the directory as it was.
    auto db = st->OpenDb(true, false);
    if (absl::IsDataLoss(db.status()) && options.accept_loss) {
      spdlog::error(
          "STORE LOSS ACCEPTED (--accept-store-loss): {}; opening what precedes the "
          "damage",
          std::string(db.status().message()));
      db = st->OpenDb(true, true);
    }
    if (absl::IsDataLoss(db.status())) {
      return absl::DataLossError(
          Cat(db.status().message(), ". The controller acknowledged revision ",
              acked->has_value() ? Cat(**acked) : std::string("(unknown: no watermark)"), " (",
              mark_path,
              "). Refusing to start: restore the data directory from a backup, or start with "
              "--accept-store-loss to run with the writes before the damage"));
    }
    if (!db.ok()) return db.status();
    st->db_ = std::move(*db);
    st->read_only_ = true;
    if (auto c = st->CheckAcked(st->StoredRevision(), *acked); !c.ok()) return c;
    if (!full) st->db_.reset();
  } else if (auto c = st->CheckAcked(0, *acked); !c.ok()) {
    return c;  // the watermark without the database it counted
  }
  if (full) {
    spdlog::warn(
        "store: {}: {} available, below the reserve of {} (--store-min-free-mb): "
        "opened read-only, writes are refused until space is freed",
        dir, Mib(*free), Mib(options.min_free_bytes));
    return st;
  }
  auto db = st->OpenWritable();
  if (!db.ok()) return db.status();
  st->db_ = std::move(*db);
  st->read_only_ = false;
  return st;
}

absl::StatusOr<std::unique_ptr<rocksdb::DB>> RocksStore::OpenWritable() {
  auto db = OpenDb(false, options_.accept_loss);
  if (!db.ok()) return db.status();
  uint64_t stored = StoredRevision(db->get());
  if (floor_ > stored) {
    // The accepted loss: the store continues after the last acknowledged
    // revision, so no revision is given twice.
    rocksdb::WriteOptions wo;
    wo.sync = true;
    std::string rev;
    AppendBe(&rev, floor_, 8);
    rocksdb::Status s = (*db)->Put(wo, kRevisionKey, rev);
    if (!s.ok()) return FromRocks(s, "write");
    stored = floor_;
  }
  if (watermark_fd_ < 0) {
    const std::string path = dir_ + "/" + kWatermarkFile;
    watermark_fd_ = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (watermark_fd_ < 0) {
      return absl::InternalError(Cat("store: cannot open ", path, ": ", std::strerror(errno)));
    }
    // The file's directory entry is durable too (it may have just been made).
    int dfd = open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    bool synced = dfd >= 0 && fsync(dfd) == 0;
    if (dfd >= 0) close(dfd);
    if (!synced) {
      return absl::InternalError(Cat("store: cannot sync ", dir_, ": ", std::strerror(errno)));
    }
  }
  // What the store holds now: a new store, one from before the watermark,
  // a crash between a WAL sync and the watermark's, an accepted loss.
  if (auto s = WriteWatermark(stored); !s.ok()) return s;
  return db;
}

absl::Status RocksStore::WriteWatermark(uint64_t revision) {
  std::string rec(kWatermarkMagic, 8);
  AppendBe(&rec, revision, 8);
  AppendBe(&rec, ~revision, 8);
  rec.resize(kWatermarkSize, '\0');
  if (pwrite(watermark_fd_, rec.data(), rec.size(), 0) != static_cast<ssize_t>(rec.size()) ||
      fdatasync(watermark_fd_) != 0) {
    return absl::InternalError(
        Cat("store: cannot write ", dir_, "/", kWatermarkFile, ": ", std::strerror(errno)));
  }
  watermark_ = revision;
  return absl::OkStatus();
}

// Whether a write may go to RocksDB now; reopens a read-only database
// read-write once space is back. Called by the single writer.
absl::Status RocksStore::CheckWritable() {
  if (failed_) {
    return absl::UnavailableError(Cat("store: ", dir_,
                                      ": a write failed earlier; writes are refused until the "
                                      "controller is restarted (reads still work)"));
  }
  auto free = FreeBytes(dir_);
  if (free && *free < options_.min_free_bytes) {
    absl::Status s = absl::ResourceExhaustedError(
        Cat("store: the disk of ", dir_, " is full: ", Mib(*free),
            " available, below the reserve of ", Mib(options_.min_free_bytes),
            " (--store-min-free-mb); writes are refused until space is freed, reads still work"));
    s.SetPayload(kStoreFullPayload, absl::Cord("1"));
    return s;
  }
  if (!read_only_) return absl::OkStatus();
  // Read-only does not lock the directory: the read-write database opens
  // beside it, readers keep the read-only one until the swap.
  auto db = OpenWritable();
  if (!db.ok()) {
    spdlog::error("store: {}: cannot reopen read-write: {}", dir_,
                  std::string(db.status().message()));
    return db.status();
  }
  {
    std::unique_lock l(db_mu_);
    db_ = std::move(*db);
    read_only_ = false;
  }
  spdlog::info("store: {}: space is back, reopened read-write", dir_);
  return absl::OkStatus();
}

absl::StatusOr<StoredState> RocksStore::Load() const {
  std::shared_lock l(db_mu_);
  StoredState st;
  std::string v;
  st.revision = std::max(StoredRevision(), floor_);
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), kNextRuleNumKey, &v);
  if (s.ok() && v.size() == 4) st.next_rule_num = static_cast<uint32_t>(ReadBe(v.data(), 4));
  if (auto e = ParseAll(db_.get(), 'v', &st.vms); !e.ok()) return e;
  if (auto e = ParseAll(db_.get(), 'g', &st.groups); !e.ok()) return e;
  if (auto e = ParseAll(db_.get(), 'p', &st.policies); !e.ok()) return e;
  if (auto e = ParseAll(db_.get(), 'h', &st.hosts); !e.ok()) return e;
  if (auto e = ParseAll(db_.get(), 'x', &st.exclusions); !e.ok()) return e;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (it->Seek("n/"); it->Valid() && it->key().starts_with("n/"); it->Next()) {
    std::string k = it->key().ToString().substr(2);
    size_t z = k.find('\0');
    if (z == std::string::npos || it->value().size() != 4) continue;
    st.rule_nums.push_back(
        {k.substr(0, z), k.substr(z + 1), static_cast<uint32_t>(ReadBe(it->value().data(), 4))});
  }
  if (auto e = FromIter(it->status()); !e.ok()) return e;
  return st;
}

absl::Status RocksStore::Commit(const ChangeSet& change) {
  if (auto s = CheckWritable(); !s.ok()) return s;
  rocksdb::WriteBatch batch;
  for (const auto& op : change.ops()) {
    rocksdb::Status s = op.del ? batch.Delete(op.key) : batch.Put(op.key, op.value);
    if (!s.ok()) return FromRocks(s, "batch");
  }
  uint32_t seq = 0;
  for (const auto& e : change.events()) {
    batch.Put(LogKey(change.revision(), seq++), e.SerializeAsString());
  }
  std::string rev;
  AppendBe(&rev, change.revision(), 8);
  batch.Put(kRevisionKey, rev);
  if (change.next_rule_num() != 0) {
    std::string n;
    AppendBe(&n, change.next_rule_num(), 4);
    batch.Put(kNextRuleNumKey, n);
  }
  // Trim the change log now and then, in the same atomic batch.
  if (change.revision() > kLogKeep && change.revision() % 1024 == 0) {
    batch.DeleteRange(LogKey(0, 0), LogKey(change.revision() - kLogKeep, 0));
  }
  rocksdb::WriteOptions wo;
  wo.sync = true;
  std::shared_lock l(db_mu_);
  rocksdb::Status s = db_->Write(wo, &batch);
  if (!s.ok()) {
    // Nothing of the batch is applied; the database is not written again.
    failed_ = true;
    spdlog::error("store: {}: write failed, writes are refused until a restart: {}", dir_,
                  s.ToString());
    absl::Status e = FromRocks(s, "write");
    if (s.IsNoSpace()) {
      e = absl::ResourceExhaustedError(
          Cat("store: the disk of ", dir_, " is full (", s.ToString(),
              "); writes are refused until the controller is restarted, reads still work"));
      e.SetPayload(kStoreFullPayload, absl::Cord("1"));
    }
    return e;
  }
  if (change.revision() > watermark_) {
    // After the WAL sync: never ahead of an acknowledged write. A failure
    // leaves it behind, which only weakens the check at the next start.
    if (auto w = WriteWatermark(change.revision()); !w.ok())
      spdlog::error("{}", std::string(w.message()));
  }
  return absl::OkStatus();
}

absl::Status RocksStore::Get(Kind kind, const std::string& id,
                             google::protobuf::Message* out) const {
  std::shared_lock l(db_mu_);
  std::string v;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), Key(kind, id), &v);
  if (s.IsNotFound()) return absl::NotFoundError(Cat("store: no ", Key(kind, id)));
  if (!s.ok()) return FromRocks(s, "get");
  if (!out->ParseFromString(v))
    return absl::DataLossError(Cat("store: cannot parse ", Key(kind, id)));
  return absl::OkStatus();
}

absl::Status RocksStore::ForEach(
    Kind kind, const std::function<absl::Status(const std::string& value)>& fn) const {
  std::shared_lock l(db_mu_);
  std::string p(1, static_cast<char>(kind));
  p.push_back('/');
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (it->Seek(p); it->Valid() && it->key().starts_with(p); it->Next()) {
    if (auto s = fn(it->value().ToString()); !s.ok()) return s;
  }
  return FromIter(it->status());
}

absl::StatusOr<std::vector<dfw::v1::ChangeEvent>> RocksStore::ChangesSince(uint64_t from_revision,
                                                                           size_t limit) const {
  std::shared_lock l(db_mu_);
  std::vector<dfw::v1::ChangeEvent> out;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  it->Seek("l/");
  if (it->Valid() && it->key().starts_with("l/") && it->key().size() == 14) {
    uint64_t oldest = ReadBe(it->key().data() + 2, 8);
    if (from_revision + 1 < oldest && from_revision != 0) {
      return absl::FailedPreconditionError(Cat("from_revision: ", from_revision,
                                               " is older than the retained change log (oldest ",
                                               oldest, "); list the objects again"));
    }
  }
  for (it->Seek(LogKey(from_revision + 1, 0));
       it->Valid() && it->key().starts_with("l/") && out.size() < limit; it->Next()) {
    dfw::v1::ChangeEvent e;
    if (!e.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) {
      return absl::DataLossError("store: cannot parse a change log entry");
    }
    out.push_back(std::move(e));
  }
  if (auto e = FromIter(it->status()); !e.ok()) return e;
  return out;
}

}  // namespace dfw::controller
