#include "dfw/controller/store.h"

#include <sstream>

#include "dfw/controller/etcd_store.h"
#include "dfw/controller/rocks_store.h"
#include "google/protobuf/util/time_util.h"
#include "store_keys.h"
#include "str_util.h"

namespace dfw::controller {

using store_keys::AppendBe;
using store_keys::Key;

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

void ChangeSet::Append(ChangeSet&& other) {
  ops_.insert(ops_.end(), std::make_move_iterator(other.ops_.begin()),
              std::make_move_iterator(other.ops_.end()));
  events_.insert(events_.end(), std::make_move_iterator(other.events_.begin()),
                 std::make_move_iterator(other.events_.end()));
  if (other.next_rule_num_ != 0) next_rule_num_ = other.next_rule_num_;
  other.ops_.clear();
  other.events_.clear();
}

bool IsStoreFull(const absl::Status& s) {
  return s.code() == absl::StatusCode::kResourceExhausted &&
         s.GetPayload(store_keys::kStoreFullPayload).has_value();
}

absl::StatusOr<std::vector<std::string>> ParseEtcdEndpoints(const std::string& list) {
  std::vector<std::string> out;
  std::stringstream ss(list);
  std::string ep;
  while (std::getline(ss, ep, ',')) {
    if (ep.rfind("http://", 0) == 0) ep = ep.substr(7);
    if (ep.rfind("https://", 0) == 0) ep = ep.substr(8);
    size_t colon = ep.rfind(':');
    if (ep.empty() || colon == std::string::npos || colon == 0 || colon + 1 == ep.size() ||
        ep.find_first_not_of("0123456789", colon + 1) != std::string::npos) {
      return absl::InvalidArgumentError(
          Cat("etcd endpoints: '", ep, "' is not host:port (in '", list, "')"));
    }
    out.push_back(ep);
  }
  if (out.empty()) return absl::InvalidArgumentError("etcd endpoints: none given");
  return out;
}

absl::StatusOr<std::unique_ptr<Store>> Store::Open(const std::string& dir,
                                                   const StoreOptions& options) {
  auto s = RocksStore::Open(dir, options);
  if (!s.ok()) return s.status();
  return std::unique_ptr<Store>(std::move(*s));
}

}  // namespace dfw::controller
