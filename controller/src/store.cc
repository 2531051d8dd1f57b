#include "dfw/controller/store.h"

#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/write_batch.h>

#include <chrono>

#include "google/protobuf/util/time_util.h"
#include "str_util.h"

namespace dfw::controller {
namespace {

constexpr char kRevisionKey[] = "m/revision";
constexpr char kNextRuleNumKey[] = "m/next_rule_num";

std::string Key(Kind kind, const std::string& id) {
  std::string k(1, static_cast<char>(kind));
  k.push_back('/');
  k.append(id);
  return k;
}

void AppendBe(std::string* out, uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
uint64_t ReadBe(const char* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

std::string LogKey(uint64_t rev, uint32_t seq) {
  std::string k = "l/";
  AppendBe(&k, rev, 8);
  AppendBe(&k, seq, 4);
  return k;
}

absl::Status FromRocks(const rocksdb::Status& s, const char* what) {
  return absl::InternalError(Cat("store: ", what, ": ", s.ToString()));
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

namespace {
thread_local std::string t_actor;
}  // namespace

ActorScope::ActorScope(std::string actor) : previous_(std::move(t_actor)) {
  t_actor = std::move(actor);
}
ActorScope::~ActorScope() { t_actor = std::move(previous_); }
const std::string& ActorScope::Current() { return t_actor; }

void ChangeSet::Put(Kind kind, const std::string& id, const google::protobuf::Message& value) {
  ops_.push_back({Key(kind, id), false, value.SerializeAsString()});
}
void ChangeSet::Delete(Kind kind, const std::string& id) {
  ops_.push_back({Key(kind, id), true, {}});
}
void ChangeSet::PutRuleNum(const std::string& policy_id, const std::string& rule_id, uint32_t num) {
  std::string k = "n/" + policy_id;
  k.push_back('\0');
  k.append(rule_id);
  std::string v;
  AppendBe(&v, num, 4);
  ops_.push_back({std::move(k), false, std::move(v)});
}
void ChangeSet::AddEvent(dfw::v1::ChangeEvent::Kind kind, const std::string& id, bool deleted) {
  dfw::v1::ChangeEvent e;
  e.set_revision(revision_);
  e.set_kind(kind);
  e.set_id(id);
  e.set_deleted(deleted);
  e.set_actor(t_actor.empty() ? "controller" : t_actor);
  *e.mutable_time() = google::protobuf::util::TimeUtil::GetCurrentTime();
  events_.push_back(std::move(e));
}

Store::Store(std::unique_ptr<rocksdb::DB> db) : db_(std::move(db)) {}
Store::~Store() = default;

absl::StatusOr<std::unique_ptr<Store>> Store::Open(const std::string& dir) {
  rocksdb::Options opts;
  opts.create_if_missing = true;
  opts.max_background_jobs = 2;
  opts.keep_log_file_num = 4;
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(opts, dir, &raw);
  if (!s.ok()) return FromRocks(s, Cat("open ", dir).c_str());
  return std::unique_ptr<Store>(new Store(std::unique_ptr<rocksdb::DB>(raw)));
}

absl::StatusOr<StoredState> Store::Load() const {
  StoredState st;
  std::string v;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), kRevisionKey, &v);
  if (s.ok() && v.size() == 8) st.revision = ReadBe(v.data(), 8);
  s = db_->Get(rocksdb::ReadOptions(), kNextRuleNumKey, &v);
  if (s.ok() && v.size() == 4) st.next_rule_num = static_cast<uint32_t>(ReadBe(v.data(), 4));
  if (auto e = ParseAll(db_.get(), 'v', &st.vms); !e.ok()) return e;
  if (auto e = ParseAll(db_.get(), 'g', &st.groups); !e.ok()) return e;
  if (auto e = ParseAll(db_.get(), 'p', &st.policies); !e.ok()) return e;
  if (auto e = ParseAll(db_.get(), 'h', &st.hosts); !e.ok()) return e;
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

absl::Status Store::Commit(const ChangeSet& change) {
  rocksdb::WriteBatch batch;
  for (const auto& op : change.ops_) {
    rocksdb::Status s = op.del ? batch.Delete(op.key) : batch.Put(op.key, op.value);
    if (!s.ok()) return FromRocks(s, "batch");
  }
  uint32_t seq = 0;
  for (const auto& e : change.events_) {
    batch.Put(LogKey(change.revision_, seq++), e.SerializeAsString());
  }
  std::string rev;
  AppendBe(&rev, change.revision_, 8);
  batch.Put(kRevisionKey, rev);
  if (change.next_rule_num_ != 0) {
    std::string n;
    AppendBe(&n, change.next_rule_num_, 4);
    batch.Put(kNextRuleNumKey, n);
  }
  // Trim the change log now and then, in the same atomic batch.
  if (change.revision_ > kLogKeep && change.revision_ % 1024 == 0) {
    batch.DeleteRange(LogKey(0, 0), LogKey(change.revision_ - kLogKeep, 0));
  }
  rocksdb::WriteOptions wo;
  wo.sync = true;
  rocksdb::Status s = db_->Write(wo, &batch);
  if (!s.ok()) return FromRocks(s, "write");
  return absl::OkStatus();
}

absl::Status Store::Get(Kind kind, const std::string& id, google::protobuf::Message* out) const {
  std::string v;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), Key(kind, id), &v);
  if (s.IsNotFound()) return absl::NotFoundError(Cat("store: no ", Key(kind, id)));
  if (!s.ok()) return FromRocks(s, "get");
  if (!out->ParseFromString(v))
    return absl::DataLossError(Cat("store: cannot parse ", Key(kind, id)));
  return absl::OkStatus();
}

absl::Status Store::ForEach(Kind kind,
                            const std::function<absl::Status(const std::string& value)>& fn) const {
  std::string p(1, static_cast<char>(kind));
  p.push_back('/');
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (it->Seek(p); it->Valid() && it->key().starts_with(p); it->Next()) {
    if (auto s = fn(it->value().ToString()); !s.ok()) return s;
  }
  return FromIter(it->status());
}

absl::StatusOr<std::vector<dfw::v1::ChangeEvent>> Store::ChangesSince(uint64_t from_revision,
                                                                      size_t limit) const {
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
