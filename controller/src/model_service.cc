#include "dfw/controller/model_service.h"

#include <algorithm>
#include <optional>
#include <set>

#include <spdlog/spdlog.h>

#include "dfw/controller/policy_validator.h"
#include "dfw/controller/tag_sources.h"
#include "dfw/controller/trace.h"
#include "dfw/proto/state_digest.h"
#include "dfw/tagging/proto_convert.h"
#include "google/protobuf/util/message_differencer.h"
#include "google/protobuf/util/time_util.h"
#include "store_keys.h"
#include "str_util.h"

namespace dfw::controller {

using dfw::v1::ChangeEvent;
using google::protobuf::util::TimeUtil;
using Clock = std::chrono::steady_clock;
using tag_sources::ApiTagsAfterTag;
using tag_sources::ApiTagsForPut;
using tag_sources::MigrateTagSources;
using tag_sources::SetTagSources;
using tag_sources::TagList;
using tag_sources::TagsOf;

struct ModelService::HostState {
  std::string id;
  std::shared_ptr<HostFeed> feed;
  // The revision the host must reach: the last change that affected it, its
  // last attach, or (after a controller restart) the revision the store
  // opened at, so that it is pending until it acks to this process.
  uint64_t want = 0;
  // Highest revision the host proved to this process: an ack of a revision
  // the feed sent, or a reconnect holding exactly the last revision sent.
  uint64_t acked = 0;
  bool error = false;
  std::string error_text;
  google::protobuf::Timestamp last_ack;
  bool connected = false;
  uint64_t refused_claims = 0;  // VMs it reported that another connected host holds
  std::string last_refused_claim;
};

// Hosts as pointers (HostState never moves): 8 bytes per affected host, so
// a change that touches 1,000 hosts costs 8 KB of bookkeeping.
struct ModelService::RevisionRecord {
  Clock::time_point accepted;
  std::optional<Clock::time_point> done;
  std::vector<const HostState*> affected;  // sorted
  size_t pending = 0;
};

namespace {

constexpr size_t kRevisionRecordsKept = 4096;
constexpr uint32_t kDefaultPageSize = 1000;
constexpr uint32_t kMaxPageSize = 10000;

absl::Status Prefixed(const absl::Status& s, const std::string& prefix) {
  if (s.ok() || prefix.empty()) return s;
  return absl::Status(s.code(), Cat(prefix, s.message()));
}

absl::Status AtMost(int n, size_t max, const std::string& field, const char* what) {
  if (static_cast<size_t>(n) <= max) return absl::OkStatus();
  return absl::InvalidArgumentError(Cat(field, ": ", n, " ", what, "; at most ", max));
}

// The API's size limits on one VM (ModelService::kMaxTagsPerVm...).
absl::Status CheckVmLimits(const dfw::v1::Vm& vm) {
  using M = ModelService;
  if (auto s = AtMost(vm.tags_size(), M::kMaxTagsPerVm, "vm.tags", "tags"); !s.ok()) return s;
  if (auto s = AtMost(vm.vnics_size(), M::kMaxVnicsPerVm, "vm.vnics", "vNICs"); !s.ok()) return s;
  for (int i = 0; i < vm.vnics_size(); ++i) {
    if (auto s = AtMost(vm.vnics(i).addresses_size(), M::kMaxAddressesPerVnic,
                        Cat("vm.vnics[", i, "].addresses"), "addresses");
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

absl::Status CheckGroupLimits(const dfw::v1::SecurityGroup& g) {
  using M = ModelService;
  const auto& sm = g.static_members();
  const std::string f = "group.static_members.";
  if (auto s = AtMost(sm.ip_prefixes_size(), M::kMaxStaticPrefixesPerGroup, f + "ip_prefixes",
                      "prefixes");
      !s.ok()) {
    return s;
  }
  if (auto s = AtMost(sm.vm_ids_size(), M::kMaxStaticMembersPerGroup, f + "vm_ids", "VMs");
      !s.ok()) {
    return s;
  }
  if (auto s = AtMost(sm.vnic_ids_size(), M::kMaxStaticMembersPerGroup, f + "vnic_ids", "vNICs");
      !s.ok()) {
    return s;
  }
  if (auto s =
          AtMost(sm.group_ids_size(), M::kMaxIncludedGroupsPerGroup, f + "group_ids", "groups");
      !s.ok()) {
    return s;
  }
  if (auto s = AtMost(g.criteria_size(), M::kMaxCriteriaPerGroup, "group.criteria", "conjunctions");
      !s.ok()) {
    return s;
  }
  for (int i = 0; i < g.criteria_size(); ++i) {
    if (auto s = AtMost(g.criteria(i).conditions_size(), M::kMaxCriteriaPerGroup,
                        Cat("group.criteria[", i, "].conditions"), "conditions");
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

absl::Status CheckExpected(uint64_t expected, const char* what, const std::string& id,
                           const uint64_t* current) {
  if (expected == 0) return absl::OkStatus();
  if (current == nullptr) {
    return absl::FailedPreconditionError(
        Cat("expected_revision: ", expected, " but ", what, " '", id, "' does not exist"));
  }
  if (*current != expected) {
    return absl::FailedPreconditionError(Cat("expected_revision: ", expected, " but ", what, " '",
                                             id, "' is at revision ", *current));
  }
  return absl::OkStatus();
}

template <typename M, typename Resp, typename AddFn>
absl::StatusOr<Resp> Page(const std::map<std::string, M>& all, const dfw::v1::ListRequest& req,
                          AddFn add) {
  uint32_t size = req.page_size() == 0 ? kDefaultPageSize : req.page_size();
  if (size > kMaxPageSize) {
    return absl::InvalidArgumentError(Cat("page_size: ", size, " is above ", kMaxPageSize));
  }
  Resp resp;
  auto it = req.page_token().empty() ? all.begin() : all.upper_bound(req.page_token());
  uint32_t n = 0;
  for (; it != all.end() && n < size; ++it, ++n) add(&resp, it->second);
  if (it != all.end() && n > 0) resp.set_next_page_token(std::prev(it)->first);
  return resp;
}

}  // namespace

void ModelService::VmTable::Put(dfw::v1::Vm vm) {
  auto it = vms_.find(vm.id());
  if (it != vms_.end() && it->second.host() != vm.host()) {
    auto h = by_host_.find(it->second.host());
    if (h != by_host_.end() && h->second.erase(vm.id()) && h->second.empty()) by_host_.erase(h);
  }
  by_host_[vm.host()].insert(vm.id());
  std::string id = vm.id();
  vms_[id] = std::move(vm);
}

std::optional<dfw::v1::Vm> ModelService::VmTable::Erase(const std::string& id) {
  auto it = vms_.find(id);
  if (it == vms_.end()) return std::nullopt;
  auto h = by_host_.find(it->second.host());
  if (h != by_host_.end() && h->second.erase(id) && h->second.empty()) by_host_.erase(h);
  std::optional<dfw::v1::Vm> old = std::move(it->second);
  vms_.erase(it);
  return old;
}

const std::set<std::string>& ModelService::VmTable::OfHost(const std::string& host) const {
  static const std::set<std::string> kNone;
  auto it = by_host_.find(host);
  return it == by_host_.end() ? kNone : it->second;
}

ModelService::ModelService() = default;
ModelService::~ModelService() {
  std::lock_guard<std::mutex> l(rmu_);
  for (auto& [id, hs] : hosts_) {
    if (hs->feed) hs->feed->Detach(hs->feed->generation());
  }
}

// ------------------------------------------------------------ the change

// A VM changed in the index: before -> after (nullopt: absent), the
// membership delta, and its stored value after (nullopt: deleted).
struct ModelService::VmChange {
  std::string id;
  std::optional<tagging::VmSpec> before, after;
  tagging::MembershipDelta delta;
  std::optional<dfw::v1::Vm> proto_after;
};

// One change to the model, made under the writer lock (model_service.h,
// "How"): each step changes the index at once and records how to undo it;
// Commit writes `cs` to the store and only then tells the tables and the
// compiler, in the order the steps were staged, flushes the compiler,
// publishes to the host feeds and records the revision for realization. A
// Change that is not committed (an early return, a step or the store
// failing) undoes its steps, in reverse, when it goes out of scope, so no
// caller writes an undo path of its own.
class ModelService::Change {
 public:
  Change(ModelService* m, uint64_t revision) : cs(revision), m_(m) {}
  ~Change() { Undo(); }
  Change(const Change&) = delete;
  Change& operator=(const Change&) = delete;

  uint64_t revision() const { return cs.revision(); }
  // Upserts `spec` in the index (the index's error, nothing staged, when
  // it refuses) and `stored` in the store; once written vms_ takes `stored`
  // too, unless `table` is false (the caller staged vms_ itself).
  absl::Status UpsertVm(tagging::VmSpec spec, const dfw::v1::Vm& stored, bool table = true) {
    VmChange c;
    c.id = spec.id;
    if (const auto* b = m_->index_->FindVm(c.id)) c.before = *b;
    auto delta = m_->index_->UpsertVm(std::move(spec));
    if (!delta.ok()) return delta.status();
    c.delta = std::move(*delta);
    c.after = *m_->index_->FindVm(c.id);
    cs.Put(Kind::kVm, c.id, stored);
    cs.AddEvent(ChangeEvent::KIND_VM, c.id, false);
    if (table) c.proto_after = stored;
    Vm(std::move(c), table);
    return absl::OkStatus();
  }
  // Removes VM `id`, which the index holds, from the index and the store.
  absl::Status RemoveVm(const std::string& id, bool table = true) {
    VmChange c;
    c.id = id;
    c.before = *m_->index_->FindVm(id);
    auto delta = m_->index_->RemoveVm(id);
    if (!delta.ok()) return delta.status();
    c.delta = std::move(*delta);
    cs.Delete(Kind::kVm, id);
    cs.AddEvent(ChangeEvent::KIND_VM, id, true);
    Vm(std::move(c), table);
    return absl::OkStatus();
  }
  // Upserts group `spec` in the index (the index's error, nothing staged,
  // when it refuses) and `stored` in the store; once written groups_ takes
  // `stored` too.
  absl::Status UpsertGroup(tagging::GroupSpec spec, const dfw::v1::SecurityGroup& stored) {
    std::string id = spec.id;
    std::optional<tagging::GroupSpec> before;
    if (const auto* b = m_->index_->FindGroup(id)) before = *b;
    auto delta = m_->index_->UpsertGroup(std::move(spec));
    if (!delta.ok()) return delta.status();
    cs.Put(Kind::kGroup, id, stored);
    cs.AddEvent(ChangeEvent::KIND_GROUP, id, false);
    Group(id, std::move(before), std::move(*delta), stored);
    return absl::OkStatus();
  }
  // Removes group `id`, which the index holds, from the index and the store.
  absl::Status RemoveGroup(const std::string& id) {
    tagging::GroupSpec before = *m_->index_->FindGroup(id);
    auto delta = m_->index_->RemoveGroup(id);
    if (!delta.ok()) return delta.status();
    cs.Delete(Kind::kGroup, id);
    cs.AddEvent(ChangeEvent::KIND_GROUP, id, true);
    Group(id, std::move(before), std::move(*delta), std::nullopt);
    return absl::OkStatus();
  }
  // Other steps: an undo of something done now; once written, a step
  // before the compiler's flush, and one after it (before the publication).
  void OnUndo(std::function<void()> f) { undo_.push_back(std::move(f)); }
  void OnCommit(std::function<void(ChangeFanout&)> f) { apply_.push_back(std::move(f)); }
  void AfterFlush(std::function<void(ChangeFanout&)> f) { flushed_.push_back(std::move(f)); }
  // Takes `other`'s writes and steps after this one's (same revision);
  // `other` is left empty.
  void Append(Change&& other) {
    cs.Append(std::move(other.cs));
    auto move_all = [](auto& to, auto& from) {
      for (auto& f : from) to.push_back(std::move(f));
      from.clear();
    };
    move_all(undo_, other.undo_);
    move_all(apply_, other.apply_);
    move_all(flushed_, other.flushed_);
    move_all(deltas_, other.deltas_);
  }
  // Undoes every step now, in reverse (nothing was written).
  void Undo() {
    for (auto it = undo_.rbegin(); it != undo_.rend(); ++it) (*it)();
    Clear();
  }
  // Forgets every step (they were applied, or undone).
  void Clear() {
    undo_.clear();
    apply_.clear();
    flushed_.clear();
    deltas_.clear();
  }
  // The steps' membership deltas as one (a preview's; the steps must touch
  // different VMs and groups, as one Tag request's do).
  tagging::MembershipDelta MergedDelta() const {
    std::map<std::string, tagging::GroupDelta> by_group;
    for (const auto& d : deltas_) {
      for (const auto& gd : d->groups) {
        auto& to = by_group[gd.group_id];
        to.group_id = gd.group_id;
        auto add = [](auto& a, const auto& b) { a.insert(a.end(), b.begin(), b.end()); };
        add(to.vms_added, gd.vms_added);
        add(to.vms_removed, gd.vms_removed);
        add(to.vnics_added, gd.vnics_added);
        add(to.vnics_removed, gd.vnics_removed);
        add(to.addresses_added, gd.addresses_added);
        add(to.addresses_removed, gd.addresses_removed);
        to.group_created |= gd.group_created;
        to.group_deleted |= gd.group_deleted;
      }
    }
    tagging::MembershipDelta out;
    for (auto& [id, gd] : by_group) out.groups.push_back(std::move(gd));
    return out;
  }

  ChangeSet cs;

 private:
  friend class ModelService;
  // VM c.id changed in the index; once written the compiler is told and,
  // when `table` (else the caller staged vms_ itself), vms_ takes
  // c.proto_after (nullopt: the VM goes).
  void Vm(VmChange c, bool table = true) {
    auto p = std::make_shared<VmChange>(std::move(c));
    deltas_.push_back(std::shared_ptr<const tagging::MembershipDelta>(p, &p->delta));
    ModelService* m = m_;
    undo_.push_back([m, p] {
      if (p->before) {
        (void)m->index_->UpsertVm(*p->before);
      } else {
        (void)m->index_->RemoveVm(p->id);
      }
    });
    apply_.push_back([m, p, table](ChangeFanout& out) {
      m->compiler_->OnVmChanged(p->before ? &*p->before : nullptr, p->after ? &*p->after : nullptr,
                                &out);
      m->compiler_->OnMembershipDelta(p->delta);
      if (!table) return;
      if (p->proto_after) {
        m->vms_.Put(*p->proto_after);
      } else {
        m->vms_.Erase(p->id);
      }
    });
  }
  // Group `id` upserted in (or removed from) the index, `before` its spec
  // until then; once written groups_ takes `after` (nullopt: erased).
  void Group(const std::string& id, std::optional<tagging::GroupSpec> before,
             tagging::MembershipDelta delta, std::optional<dfw::v1::SecurityGroup> after) {
    auto d = std::make_shared<tagging::MembershipDelta>(std::move(delta));
    deltas_.push_back(d);
    ModelService* m = m_;
    undo_.push_back([m, id, before = std::move(before)] {
      if (before) {
        (void)m->index_->UpsertGroup(*before);
      } else {
        (void)m->index_->RemoveGroup(id);
      }
    });
    apply_.push_back([m, id, d, after = std::move(after)](ChangeFanout&) {
      if (after) {
        m->groups_[id] = *after;
      } else {
        m->groups_.erase(id);
      }
      m->compiler_->OnMembershipDelta(*d);
    });
  }
  ModelService* m_;
  std::vector<std::function<void()>> undo_;
  std::vector<std::function<void(ChangeFanout&)>> apply_, flushed_;
  // The index's membership deltas of the steps so far, in order (previews).
  std::vector<std::shared_ptr<const tagging::MembershipDelta>> deltas_;
};

absl::Status ModelService::StoreCommit(const ChangeSet& cs) {
  auto start = Clock::now();
  absl::Status s = store_->Commit(cs);
  store_commit_seconds_.Observe(std::chrono::duration<double>(Clock::now() - start).count());
  (s.ok() ? store_commits_ : store_commit_failures_).fetch_add(1, std::memory_order_relaxed);
  return s;
}

absl::Status ModelService::Commit(Change& c) {
  if (auto s = StoreCommit(c.cs); !s.ok()) {
    c.Undo();
    return s;
  }
  Apply(c, /*publish=*/true);
  return absl::OkStatus();
}

void ModelService::Apply(Change& c, bool publish) {
  const uint64_t rev = c.revision();
  ChangeFanout fanout;
  for (auto& f : c.apply_) f(fanout);
  compiler_->Flush(rev, &fanout);
  for (auto& f : c.flushed_) f(fanout);
  Committed(rev);
  if (publish) Publish(fanout, rev);
  c.Clear();
}

absl::StatusOr<std::unique_ptr<ModelService>> ModelService::Open(const std::string& data_dir,
                                                                 const StoreOptions& options) {
  auto store = Store::Open(data_dir, options);
  if (!store.ok()) return store.status();
  return Open(std::move(*store));
}

absl::StatusOr<std::unique_ptr<ModelService>> ModelService::Open(std::unique_ptr<Store> store) {
  std::unique_ptr<ModelService> m(new ModelService());
  m->store_ = std::move(store);
  auto st = m->store_->Load();
  if (!st.ok()) return st.status();
  m->revision_ = st->revision;
  m->opened_backend_revision_ = st->backend_revision;
  m->watch_revision_ = st->revision;
  std::vector<tagging::VmSpec> vms;
  std::vector<tagging::GroupSpec> groups;
  for (auto& vm : st->vms) {
    MigrateTagSources(&vm);
    auto spec = tagging::VmFromProto(vm);
    if (!spec.ok()) return Prefixed(spec.status(), Cat("stored VM '", vm.id(), "': "));
    vms.push_back(std::move(*spec));
    m->vms_.Put(std::move(vm));
  }
  for (auto& g : st->groups) {
    auto spec = tagging::GroupFromProto(g);
    if (!spec.ok()) return Prefixed(spec.status(), Cat("stored group '", g.id(), "': "));
    groups.push_back(std::move(*spec));
    m->groups_[g.id()] = std::move(g);
  }
  m->index_ = std::make_unique<tagging::MembershipIndex>();
  if (auto s = m->index_->Load(vms, std::move(groups)); !s.ok()) return s;
  std::vector<std::pair<std::string, uint32_t>> nums;
  for (const auto& rn : st->rule_nums) {
    std::string k = rn.policy_id;
    k.push_back('\0');
    k.append(rn.rule_id);
    nums.emplace_back(std::move(k), rn.num);
  }
  m->compiler_ = std::make_unique<PolicyCompiler>(m->index_.get());
  for (auto& e : st->exclusions) {
    const bool vm = !e.vm_id().empty();
    m->compiler_->SetExclusion(vm, vm ? e.vm_id() : e.vnic_id(), true);
    std::string key = vm ? Cat("vm:", e.vm_id()) : Cat("vnic:", e.vnic_id());
    m->exclusions_[key] = std::move(e);
  }
  m->compiler_->Load(st->policies, nums, st->next_rule_num, vms, m->revision_);
  for (auto& p : st->policies) m->policies_[p.id()] = std::move(p);
  for (auto& h : st->hosts) {
    h.set_connected(false);
    auto hs = std::make_unique<HostState>();
    hs->id = h.id();
    // Sessions are not persisted: what a host enforces is proven only by
    // its acks to this process (a reconnect gets a full state and acks it).
    hs->want = m->revision_;
    m->hosts_[h.id()] = std::move(hs);
    m->host_records_[h.id()] = std::move(h);
  }
  return m;
}

// ---------------------------------------------------- following the store

absl::Status ModelService::ApplyFollowed(const StoredChange& stored) {
  std::unique_lock l(mu_);
  if (stored.revision != revision_ + 1) {
    return absl::FailedPreconditionError(
        Cat("follow: revision ", stored.revision, " does not follow this model's ", revision_));
  }
  // The change's last write of each key is its outcome (as in the store).
  std::map<std::string, const ChangeSet::Op*> last;
  for (const auto& op : stored.ops) last[op.key] = &op;
  std::vector<const ChangeSet::Op*> vms, group_puts, group_dels, policies, hosts, exclusion_ops;
  for (const auto& [key, op] : last) {
    if (key.size() < 2 || key[1] != '/') continue;
    switch (key[0]) {
      case 'v':
        vms.push_back(op);
        break;
      case 'g':
        (op->del ? group_dels : group_puts).push_back(op);
        break;
      case 'p':
        policies.push_back(op);
        break;
      case 'h':
        hosts.push_back(op);
        break;
      case 'x':
        exclusion_ops.push_back(op);
        break;
      case 'n': {
        // Never deleted: numbers stay stored after their policy goes.
        const std::string k = key.substr(2);
        if (!op->del && op->value.size() == 4 && k.find('\0') != std::string::npos) {
          compiler_->AdoptRuleNum(k,
                                  static_cast<uint32_t>(store_keys::ReadBe(op->value.data(), 4)));
        }
        break;
      }
      case 'm':
        if (key == store_keys::kNextRuleNumKey && op->value.size() == 4) {
          compiler_->AdoptNextRuleNum(
              static_cast<uint32_t>(store_keys::ReadBe(op->value.data(), 4)));
        }
        break;
      default:
        break;  // tokens and certificates: Enrollment reads them when leading
    }
  }
  auto parse = [](const ChangeSet::Op& op, google::protobuf::Message* m) -> absl::Status {
    if (!m->ParseFromString(op.value)) {
      return absl::DataLossError(Cat("follow: cannot parse ", op.key));
    }
    return absl::OkStatus();
  };
  auto id_of = [](const ChangeSet::Op& op) { return op.key.substr(2); };
  // The leader's change again, as the same steps (its writes are already
  // stored): groups put first (a VM's or policy's change may need a new
  // group), then VMs, policies, and the groups deleted last.
  Change change(this, stored.revision);
  for (const auto* op : group_puts) {
    dfw::v1::SecurityGroup g;
    if (auto s = parse(*op, &g); !s.ok()) return s;
    auto spec = tagging::GroupFromProto(g);
    absl::Status st = spec.ok() ? change.UpsertGroup(std::move(*spec), g) : spec.status();
    if (!st.ok()) return Prefixed(st, Cat("follow: group '", g.id(), "': "));
  }
  for (const auto* op : vms) {
    const std::string id = id_of(*op);
    if (op->del) {
      if (index_->FindVm(id) == nullptr) continue;
      if (auto s = change.RemoveVm(id); !s.ok()) return s;
      continue;
    }
    dfw::v1::Vm vm;
    if (auto s = parse(*op, &vm); !s.ok()) return s;
    MigrateTagSources(&vm);
    auto spec = tagging::VmFromProto(vm);
    absl::Status st = spec.ok() ? change.UpsertVm(std::move(*spec), std::move(vm)) : spec.status();
    if (!st.ok()) return Prefixed(st, Cat("follow: vm '", id, "': "));
  }
  for (const auto* op : policies) {
    const std::string id = id_of(*op);
    if (op->del) {
      change.OnCommit([this, id](ChangeFanout& fanout) {
        if (policies_.erase(id) != 0) compiler_->RemovePolicy(id, &fanout, false);
      });
      continue;
    }
    dfw::v1::Policy p;
    if (auto s = parse(*op, &p); !s.ok()) return s;
    change.OnCommit([this, p = std::move(p)](ChangeFanout& fanout) {
      compiler_->UpsertPolicy(p, &fanout);
      policies_[p.id()] = p;
    });
  }
  for (const auto* op : exclusion_ops) {
    const std::string key = id_of(*op);
    std::optional<dfw::v1::Exclusion> e;
    if (!op->del) {
      e.emplace();
      if (auto s = parse(*op, &*e); !s.ok()) return s;
    }
    change.OnCommit([this, key, e = std::move(e)](ChangeFanout&) {
      auto it = exclusions_.find(key);
      if (it != exclusions_.end()) {
        const bool vm = !it->second.vm_id().empty();
        compiler_->SetExclusion(vm, vm ? it->second.vm_id() : it->second.vnic_id(), false);
        exclusions_.erase(it);
      }
      if (!e) return;
      const bool vm = !e->vm_id().empty();
      compiler_->SetExclusion(vm, vm ? e->vm_id() : e->vnic_id(), true);
      exclusions_[key] = *e;
    });
  }
  for (const auto* op : group_dels) {
    const std::string id = id_of(*op);
    if (index_->FindGroup(id) == nullptr) continue;
    if (auto s = change.RemoveGroup(id); !s.ok()) {
      return Prefixed(s, Cat("follow: group '", id, "': "));
    }
  }
  for (const auto* op : hosts) {
    const std::string id = id_of(*op);
    std::optional<dfw::v1::Host> h;
    if (!op->del) {
      h.emplace();
      if (auto s = parse(*op, &*h); !s.ok()) return s;
      h->set_connected(false);  // not to this process
    }
    change.OnCommit([this, id, h = std::move(h)](ChangeFanout&) {
      if (h) {
        host_records_[id] = *h;
        return;
      }
      host_records_.erase(id);
      std::lock_guard<std::mutex> rl(rmu_);
      hosts_.erase(id);
    });
  }
  Apply(change, /*publish=*/false);  // no feed here: nothing is sent
  return absl::OkStatus();
}

void ModelService::PrepareToLead() {
  std::shared_lock l(mu_);
  std::lock_guard<std::mutex> rl(rmu_);
  for (const auto& [id, h] : host_records_) {
    auto& hs = hosts_[id];
    if (!hs) {
      hs = std::make_unique<HostState>();
      hs->id = id;
    }
    hs->want = revision_;
  }
}

uint64_t ModelService::revision() const {
  std::shared_lock l(mu_);
  return revision_;
}

absl::StatusOr<uint64_t> ModelService::CommitAuxiliary(
    const std::function<absl::Status(ChangeSet&)>& fill) {
  std::unique_lock l(mu_);
  Change change(this, revision_ + 1);
  if (auto s = fill(change.cs); !s.ok()) return s;
  if (change.cs.empty()) return revision_;  // nothing to change: no revision
  if (auto s = Commit(change); !s.ok()) return s;
  return revision_;
}

void ModelService::Committed(uint64_t revision) {
  revision_ = revision;
  watch_revision_.store(revision);
  std::lock_guard<std::mutex> l(watch_mu_);
  watch_cv_.notify_all();
}

uint64_t ModelService::WaitForRevisionAbove(uint64_t revision,
                                            std::chrono::milliseconds timeout) const {
  std::unique_lock<std::mutex> l(watch_mu_);
  watch_cv_.wait_for(l, timeout, [&] { return watch_revision_.load() > revision; });
  return watch_revision_.load();
}

void ModelService::Publish(ChangeFanout& fanout, uint64_t revision) {
  auto rec = std::make_unique<RevisionRecord>();
  rec->accepted = Clock::now();
  std::lock_guard<std::mutex> l(rmu_);
  rec->affected.reserve(fanout.size());
  for (auto& [host, changes] : fanout) {
    auto& hs = hosts_[host];
    if (!hs) {
      hs = std::make_unique<HostState>();
      hs->id = host;
    }
    hs->want = revision;
    rec->affected.push_back(hs.get());
    if (hs->feed) hs->feed->Merge(changes);  // the message is built by a sender thread
  }
  std::sort(rec->affected.begin(), rec->affected.end());
  rec->pending = rec->affected.size();
  if (rec->pending == 0) rec->done = rec->accepted;
  revisions_[revision] = std::move(rec);
  while (revisions_.size() > kRevisionRecordsKept) revisions_.erase(revisions_.begin());
}

// ------------------------------------------------------------------- VMs

absl::StatusOr<dfw::v1::Vm> ModelService::PutVm(const dfw::v1::PutVmRequest& req,
                                                bool create_only) {
  if (!req.has_vm()) return absl::InvalidArgumentError("vm: required");
  if (auto s = CheckVmLimits(req.vm()); !s.ok()) return s;
  auto spec = tagging::VmFromProto(req.vm());
  if (!spec.ok()) return Prefixed(spec.status(), "vm.");
  if (!req.vm().host().empty()) {
    if (auto s = ValidateObjectId(req.vm().host(), "vm.host"); !s.ok()) return s;
  }
  std::unique_lock l(mu_);
  auto old = vms_.find(req.vm().id());
  if (create_only && old != vms_.end()) {
    return absl::AlreadyExistsError(Cat("vm.id: VM '", req.vm().id(), "' already exists"));
  }
  uint64_t cur = old == vms_.end() ? 0 : old->second.revision();
  if (auto s = CheckExpected(req.expected_revision(), "VM", req.vm().id(),
                             old == vms_.end() ? nullptr : &cur);
      !s.ok()) {
    return s;
  }
  // `tags` is the effective set wanted; the host's metadata tags stay its own.
  TagList api = spec->tags, host;
  if (old != vms_.end()) {
    auto a = ApiTagsForPut(spec->tags, old->second);
    if (!a.ok()) return a.status();
    api = std::move(*a);
    host = TagsOf(old->second.host_tags());
  }
  dfw::v1::Vm out = req.vm();
  spec->tags = SetTagSources(api, host, &out);
  Change change(this, revision_ + 1);
  out.set_revision(change.revision());
  if (auto s = change.UpsertVm(std::move(*spec), out); !s.ok()) return Prefixed(s, "vm.");
  if (auto s = Commit(change); !s.ok()) return s;
  return out;
}

absl::StatusOr<dfw::v1::Vm> ModelService::GetVm(const std::string& id) const {
  std::shared_lock l(mu_);
  auto it = vms_.find(id);
  if (it == vms_.end()) return absl::NotFoundError(Cat("id: VM '", id, "' does not exist"));
  return it->second;
}

absl::StatusOr<dfw::v1::ListVmsResponse> ModelService::ListVms(
    const dfw::v1::ListRequest& req) const {
  std::shared_lock l(mu_);
  return Page<dfw::v1::Vm, dfw::v1::ListVmsResponse>(
      vms_.all(), req,
      [](dfw::v1::ListVmsResponse* r, const dfw::v1::Vm& v) { *r->add_vms() = v; });
}

absl::StatusOr<dfw::v1::DeleteResponse> ModelService::DeleteVm(const dfw::v1::DeleteRequest& req) {
  std::unique_lock l(mu_);
  auto old = vms_.find(req.id());
  if (old == vms_.end()) return absl::NotFoundError(Cat("id: VM '", req.id(), "' does not exist"));
  uint64_t cur = old->second.revision();
  if (auto s = CheckExpected(req.expected_revision(), "VM", req.id(), &cur); !s.ok()) return s;
  Change change(this, revision_ + 1);
  if (auto s = change.RemoveVm(req.id()); !s.ok()) return s;
  if (auto s = Commit(change); !s.ok()) return s;
  dfw::v1::DeleteResponse resp;
  resp.set_revision(revision_);
  return resp;
}

absl::StatusOr<dfw::v1::TagResponse> ModelService::Tag(const dfw::v1::TagRequest& req) {
  return TagOrPreview(req, nullptr);
}

absl::StatusOr<dfw::v1::GroupImpact> ModelService::PreviewTag(const dfw::v1::TagRequest& req) {
  dfw::v1::GroupImpact out;
  if (auto r = TagOrPreview(req, &out); !r.ok()) return r.status();
  return out;
}

absl::StatusOr<dfw::v1::TagResponse> ModelService::TagOrPreview(const dfw::v1::TagRequest& req,
                                                                dfw::v1::GroupImpact* preview) {
  if (req.vm_ids_size() == 0) return absl::InvalidArgumentError("vm_ids: list at least one VM");
  if (req.set_size() == 0 && req.remove_size() == 0) {
    return absl::InvalidArgumentError("set: give tags to set or to remove");
  }
  if (req.expected_revision() != 0 && req.vm_ids_size() != 1) {
    return absl::InvalidArgumentError("expected_revision: only with a single VM");
  }
  if (auto s = AtMost(req.set_size(), kMaxTagsPerVm, "set", "tags"); !s.ok()) return s;
  if (auto s = AtMost(req.remove_size(), kMaxTagsPerVm, "remove", "tags"); !s.ok()) return s;
  std::vector<tagging::Tag> set, unset;
  for (int i = 0; i < req.set_size(); ++i) {
    if (auto s = tagging::ValidateTag(req.set(i), Cat("set[", i, "]")); !s.ok()) return s;
    set.push_back({req.set(i).scope(), req.set(i).value()});
  }
  for (int i = 0; i < req.remove_size(); ++i) {
    if (auto s = tagging::ValidateTag(req.remove(i), Cat("remove[", i, "]")); !s.ok()) return s;
    unset.push_back({req.remove(i).scope(), req.remove(i).value()});
  }
  std::unique_lock l(mu_);
  std::set<std::string> seen;
  for (int i = 0; i < req.vm_ids_size(); ++i) {
    if (!vms_.count(req.vm_ids(i))) {
      return absl::NotFoundError(Cat("vm_ids[", i, "]: VM '", req.vm_ids(i), "' does not exist"));
    }
    if (!seen.insert(req.vm_ids(i)).second) {
      return absl::InvalidArgumentError(
          Cat("vm_ids[", i, "]: '", req.vm_ids(i), "' is listed twice"));
    }
  }
  if (req.expected_revision() != 0) {
    uint64_t cur = vms_.at(req.vm_ids(0)).revision();
    if (auto s = CheckExpected(req.expected_revision(), "VM", req.vm_ids(0), &cur); !s.ok()) {
      return s;
    }
  }
  Change change(this, revision_ + 1);
  const uint64_t rev = change.revision();
  dfw::v1::TagResponse resp;
  resp.set_revision(rev);
  for (const auto& id : req.vm_ids()) {
    dfw::v1::Vm out = vms_.at(id);
    auto api = ApiTagsAfterTag(out, set, unset);
    if (api.ok() && api->size() > kMaxTagsPerVm) {
      api = absl::InvalidArgumentError(
          Cat("set: VM '", id, "' would hold ", api->size(), " API tags; at most ", kMaxTagsPerVm));
    }
    if (!api.ok()) return api.status();
    tagging::VmSpec next = *index_->FindVm(id);
    next.tags = SetTagSources(*api, TagsOf(out.host_tags()), &out);
    out.set_revision(rev);
    if (auto s = change.UpsertVm(std::move(next), out); !s.ok()) return s;
    *resp.add_vms() = std::move(out);
  }
  if (preview != nullptr) {  // the index's delta read, then undone (not committed)
    FillMembershipImpact(change.MergedDelta(), "", preview);
    change.Undo();
    return resp;
  }
  if (auto s = Commit(change); !s.ok()) return s;
  return resp;
}

absl::StatusOr<dfw::v1::VmGroupsResponse> ModelService::VmGroups(const std::string& vm_id) const {
  std::shared_lock l(mu_);
  auto reasons = index_->GroupsOf(vm_id);
  if (!reasons.ok()) return absl::NotFoundError(Cat("id: VM '", vm_id, "' does not exist"));
  dfw::v1::VmGroupsResponse resp;
  resp.set_vm_id(vm_id);
  for (const auto& r : *reasons) {
    auto* g = resp.add_groups();
    g->set_group_id(r.group_id);
    switch (r.via) {
      case tagging::MembershipReason::Via::kStaticVm:
        g->set_via(dfw::v1::GroupReason::VIA_STATIC_VM);
        break;
      case tagging::MembershipReason::Via::kIncludedGroup:
        g->set_via(dfw::v1::GroupReason::VIA_INCLUDED_GROUP);
        g->set_through_group(r.through_group);
        break;
      case tagging::MembershipReason::Via::kCriteria:
        g->set_via(dfw::v1::GroupReason::VIA_CRITERIA);
        g->set_conjunction(r.conjunction);
        break;
    }
  }
  return resp;
}

absl::StatusOr<dfw::v1::EffectiveRulesResponse> ModelService::EffectiveRules(
    const dfw::v1::EffectiveRulesRequest& req) const {
  if (req.vm_id().empty() == req.vnic_id().empty()) {
    return absl::InvalidArgumentError("vm_id: give exactly one of vm_id and vnic_id");
  }
  std::shared_lock l(mu_);
  std::vector<std::string> vnics;
  if (!req.vm_id().empty()) {
    const auto* vm = index_->FindVm(req.vm_id());
    if (!vm) return absl::NotFoundError(Cat("vm_id: VM '", req.vm_id(), "' does not exist"));
    for (const auto& n : vm->vnics) vnics.push_back(n.id);
  } else {
    bool known = false;  // a linear scan: vNIC ids are not indexed by owner here
    for (auto it = vms_.begin(); it != vms_.end() && !known; ++it) {
      for (const auto& n : it->second.vnics()) known = known || n.id() == req.vnic_id();
    }
    if (!known) {
      return absl::NotFoundError(Cat("vnic_id: vNIC '", req.vnic_id(), "' does not exist"));
    }
    vnics.push_back(req.vnic_id());
  }
  dfw::v1::EffectiveRulesResponse resp;
  compiler_->EffectiveRules(vnics, resp.mutable_rulesets(), resp.mutable_address_sets());
  return resp;
}

// ----------------------------------------------------------------- groups

absl::StatusOr<dfw::v1::SecurityGroup> ModelService::PutGroup(const dfw::v1::PutGroupRequest& req,
                                                              bool create_only) {
  auto spec = CheckPutGroupFields(req);
  if (!spec.ok()) return spec.status();
  std::unique_lock l(mu_);
  if (auto s = CheckPutGroup(req, create_only); !s.ok()) return s;
  Change change(this, revision_ + 1);
  dfw::v1::SecurityGroup out = req.group();
  out.set_revision(change.revision());
  if (auto st = change.UpsertGroup(std::move(*spec), out); !st.ok()) return GroupIndexError(st);
  if (auto s = Commit(change); !s.ok()) return s;
  return out;
}

absl::StatusOr<tagging::GroupSpec> ModelService::CheckPutGroupFields(
    const dfw::v1::PutGroupRequest& req) {
  if (!req.has_group()) return absl::InvalidArgumentError("group: required");
  if (auto s = CheckGroupLimits(req.group()); !s.ok()) return s;
  auto spec = tagging::GroupFromProto(req.group());
  if (!spec.ok()) return Prefixed(spec.status(), "group.");
  if (auto s = ValidateObjectId(req.group().id(), "group.id"); !s.ok()) return s;
  return spec;
}

absl::Status ModelService::GroupIndexError(const absl::Status& st) {
  if (st.code() == absl::StatusCode::kNotFound) {
    return absl::InvalidArgumentError(Cat("group: ", st.message()));
  }
  return Prefixed(st, "group.");
}

absl::Status ModelService::CheckPutGroup(const dfw::v1::PutGroupRequest& req,
                                         bool create_only) const {
  const std::string& id = req.group().id();
  auto old = groups_.find(id);
  if (create_only && old != groups_.end()) {
    return absl::AlreadyExistsError(Cat("group.id: group '", id, "' already exists"));
  }
  uint64_t cur = old == groups_.end() ? 0 : old->second.revision();
  if (auto s = CheckExpected(req.expected_revision(), "group", id,
                             old == groups_.end() ? nullptr : &cur);
      !s.ok()) {
    return s;
  }
  // References to missing groups are reported on the field that names them.
  for (const auto& [field, ids] :
       {std::pair{"group.static_members.group_ids", &req.group().static_members().group_ids()}}) {
    for (int i = 0; i < ids->size(); ++i) {
      if (!groups_.count((*ids)[i])) {
        return absl::InvalidArgumentError(
            Cat(field, "[", i, "]: group '", (*ids)[i], "' does not exist"));
      }
    }
  }
  for (int i = 0; i < req.group().criteria_size(); ++i) {
    const auto& conj = req.group().criteria(i);
    for (int j = 0; j < conj.conditions_size(); ++j) {
      const auto& c = conj.conditions(j);
      if (c.has_member_of_group() && !groups_.count(c.member_of_group())) {
        return absl::InvalidArgumentError(Cat("group.criteria[", i, "].conditions[", j,
                                              "].member_of_group: group '", c.member_of_group(),
                                              "' does not exist"));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<dfw::v1::GroupImpact> ModelService::PreviewGroup(
    const dfw::v1::PreviewGroupRequest& req) {
  dfw::v1::PutGroupRequest put;
  *put.mutable_group() = req.group();
  put.set_expected_revision(req.expected_revision());
  auto spec = CheckPutGroupFields(put);
  if (!spec.ok()) return spec.status();
  // The writer lock: the index takes the change to give its delta and is
  // put back before anyone else reads it.
  std::unique_lock l(mu_);
  if (auto s = CheckPutGroup(put, req.create_only()); !s.ok()) return s;
  const std::string& id = req.group().id();
  dfw::v1::GroupImpact out;
  out.set_creates(index_->FindGroup(id) == nullptr);
  // The change's index step, its delta read, then undone (never committed).
  Change change(this, revision_ + 1);
  if (auto st = change.UpsertGroup(std::move(*spec), req.group()); !st.ok()) {
    return GroupIndexError(st);
  }
  FillMembershipImpact(change.MergedDelta(), id, &out);
  change.Undo();
  return out;
}

void ModelService::FillMembershipImpact(const tagging::MembershipDelta& delta,
                                        const std::string& id, dfw::v1::GroupImpact* impact) const {
  dfw::v1::GroupImpact& out = *impact;
  std::vector<PolicyCompiler::SetImpact> sets;
  std::vector<VnicImpact> vnics = compiler_->PreviewMembership(delta, &sets);
  out.set_revision(revision_);
  out.set_group_id(id);
  std::set<std::string> hosts;
  for (const auto& gd : delta.groups) {
    if (!id.empty() && gd.group_id == id) {
      out.mutable_vms_added()->Add(gd.vms_added.begin(), gd.vms_added.end());
      out.mutable_vms_removed()->Add(gd.vms_removed.begin(), gd.vms_removed.end());
    } else if (!gd.vms_added.empty() || !gd.vms_removed.empty()) {
      out.add_groups_changed(gd.group_id);
    }
  }
  for (const auto& v : vnics) {
    if (v.excluded) {
      out.add_excluded_vnic_ids(v.vnic_id);
      continue;
    }
    auto* o = out.add_vnics();
    o->set_vnic_id(v.vnic_id);
    o->set_host_id(v.host_id);
    o->set_rules_before(static_cast<uint32_t>(v.rules_before));
    o->set_rules_after(static_cast<uint32_t>(v.rules_after));
    o->mutable_rules_added()->Add(v.added.begin(), v.added.end());
    o->mutable_rules_removed()->Add(v.removed.begin(), v.removed.end());
    hosts.insert(v.host_id);
    for (const auto& vm_id : vms_.OfHost(v.host_id)) {
      const dfw::v1::Vm& vm = vms_.at(vm_id);
      for (const auto& n : vm.vnics()) {
        if (n.id() != v.vnic_id) continue;
        o->set_vm_id(vm.id());
        o->set_vm_name(vm.name());
      }
    }
  }
  for (const auto& s : sets) {
    auto* o = out.add_address_sets();
    o->set_group_id(s.group_id);
    o->set_addresses_added(static_cast<uint32_t>(s.added));
    o->set_addresses_removed(static_cast<uint32_t>(s.removed));
    o->mutable_host_ids()->Add(s.hosts.begin(), s.hosts.end());
    hosts.insert(s.hosts.begin(), s.hosts.end());
  }
  std::lock_guard<std::mutex> r(rmu_);
  for (const auto& h : hosts) {
    auto it = hosts_.find(h);
    const HostState* hs = it == hosts_.end() ? nullptr : it->second.get();
    FillHostRealization(h, hs, hs ? hs->want : 0, out.add_hosts());
  }
}

absl::StatusOr<dfw::v1::SecurityGroup> ModelService::GetGroup(const std::string& id) const {
  std::shared_lock l(mu_);
  auto it = groups_.find(id);
  if (it == groups_.end()) return absl::NotFoundError(Cat("id: group '", id, "' does not exist"));
  return it->second;
}

absl::StatusOr<dfw::v1::ListGroupsResponse> ModelService::ListGroups(
    const dfw::v1::ListRequest& req) const {
  std::shared_lock l(mu_);
  return Page<dfw::v1::SecurityGroup, dfw::v1::ListGroupsResponse>(
      groups_, req, [](dfw::v1::ListGroupsResponse* r, const dfw::v1::SecurityGroup& g) {
        *r->add_groups() = g;
      });
}

absl::StatusOr<dfw::v1::DeleteResponse> ModelService::DeleteGroup(
    const dfw::v1::DeleteRequest& req) {
  std::unique_lock l(mu_);
  auto old = groups_.find(req.id());
  if (old == groups_.end()) {
    return absl::NotFoundError(Cat("id: group '", req.id(), "' does not exist"));
  }
  uint64_t cur = old->second.revision();
  if (auto s = CheckExpected(req.expected_revision(), "group", req.id(), &cur); !s.ok()) return s;
  auto users = compiler_->PoliciesReferencing(req.id());
  auto groups = index_->Referrers(req.id());
  if (!users.empty() || !groups.empty()) {
    std::vector<std::string> who;
    for (const auto& p : users) who.push_back("policy '" + p + "'");
    for (const auto& g : groups) who.push_back("group '" + g + "'");
    return absl::FailedPreconditionError(
        Cat("id: group '", req.id(), "' is referenced by ", Join(who, ", ")));
  }
  Change change(this, revision_ + 1);
  if (auto s = change.RemoveGroup(req.id()); !s.ok()) return s;
  if (auto s = Commit(change); !s.ok()) return s;
  dfw::v1::DeleteResponse resp;
  resp.set_revision(revision_);
  return resp;
}

absl::StatusOr<dfw::v1::GroupMembership> ModelService::GroupMembers(const std::string& id) const {
  std::shared_lock l(mu_);
  auto m = index_->Members(id);
  if (!m.ok()) return absl::NotFoundError(Cat("id: group '", id, "' does not exist"));
  dfw::v1::GroupMembership out;
  tagging::MembersToProto(*m, &out);
  out.set_revision(revision_);
  return out;
}

// --------------------------------------------------------------- policies

absl::Status ModelService::CheckPutPolicy(const dfw::v1::Policy* p, uint64_t expected_revision,
                                          bool create_only) const {
  if (p == nullptr) return absl::InvalidArgumentError("policy: required");
  auto s =
      ValidatePolicy(*p, [&](std::string_view g) { return groups_.count(std::string(g)) > 0; });
  if (!s.ok()) return Prefixed(s, "policy.");
  auto old = policies_.find(p->id());
  if (create_only && old != policies_.end()) {
    return absl::AlreadyExistsError(Cat("policy.id: policy '", p->id(), "' already exists"));
  }
  uint64_t cur = old == policies_.end() ? 0 : old->second.revision();
  return CheckExpected(expected_revision, "policy", p->id(),
                       old == policies_.end() ? nullptr : &cur);
}

absl::Status ModelService::CheckDeletePolicy(const std::string& id,
                                             uint64_t expected_revision) const {
  auto old = policies_.find(id);
  if (old == policies_.end()) {
    return absl::NotFoundError(Cat("id: policy '", id, "' does not exist"));
  }
  uint64_t cur = old->second.revision();
  return CheckExpected(expected_revision, "policy", id, &cur);
}

absl::StatusOr<dfw::v1::PolicyImpact> ModelService::PreviewPolicy(
    const dfw::v1::PreviewPolicyRequest& req) const {
  std::shared_lock l(mu_);
  const bool deletes = req.change_case() == dfw::v1::PreviewPolicyRequest::kDeletePolicyId;
  const std::string& id = deletes ? req.delete_policy_id() : req.policy().id();
  if (deletes) {
    if (auto s = CheckDeletePolicy(id, req.expected_revision()); !s.ok()) return s;
  } else if (auto s = CheckPutPolicy(req.has_policy() ? &req.policy() : nullptr,
                                     req.expected_revision(), req.create_only());
             !s.ok()) {
    return s;
  }
  dfw::v1::PolicyImpact out;
  out.set_revision(revision_);
  out.set_policy_id(id);
  out.set_deletes(deletes);
  out.set_creates(!deletes && !policies_.count(id));
  const uint32_t budget =
      req.rules_per_vnic_budget() ? req.rules_per_vnic_budget() : kDefaultRulesPerVnicBudget;
  out.set_rules_per_vnic_budget(budget);
  std::vector<VnicImpact> vnics = compiler_->PreviewPolicy(id, deletes ? nullptr : &req.policy());
  // Excluded vNICs: the change does nothing to them; said apart.
  std::erase_if(vnics, [&out](const VnicImpact& v) {
    if (v.excluded) out.add_excluded_vnic_ids(v.vnic_id);
    return v.excluded;
  });
  // Each listed vNIC's VM, from its host's VMs.
  std::map<std::string, const dfw::v1::Vm*> vm_of;
  std::set<std::string> hosts;
  for (const auto& v : vnics) hosts.insert(v.host_id);
  for (const auto& h : hosts) {
    for (const auto& vm_id : vms_.OfHost(h)) {
      const dfw::v1::Vm& vm = vms_.at(vm_id);
      for (const auto& n : vm.vnics()) vm_of[n.id()] = &vm;
    }
  }
  auto ids = [](const std::vector<std::string>& v,
                google::protobuf::RepeatedPtrField<std::string>* f) { f->Add(v.begin(), v.end()); };
  for (const auto& v : vnics) {
    auto* o = out.add_vnics();
    o->set_vnic_id(v.vnic_id);
    o->set_host_id(v.host_id);
    if (auto vm = vm_of.find(v.vnic_id); vm != vm_of.end()) {
      o->set_vm_id(vm->second->id());
      o->set_vm_name(vm->second->name());
    }
    o->set_rules_before(static_cast<uint32_t>(v.rules_before));
    o->set_rules_after(static_cast<uint32_t>(v.rules_after));
    ids(v.added, o->mutable_rules_added());
    ids(v.removed, o->mutable_rules_removed());
    ids(v.changed, o->mutable_rules_changed());
    ids(v.revalidating, o->mutable_revalidating_rules());
    o->set_reordered(v.reordered);
    o->set_over_budget(v.rules_after > budget);
    out.set_vnics_over_budget(out.vnics_over_budget() + (o->over_budget() ? 1 : 0));
    out.set_max_rules_after(std::max(out.max_rules_after(), o->rules_after()));
    out.set_vnics_revalidating(out.vnics_revalidating() + (v.revalidating.empty() ? 0 : 1));
  }
  std::lock_guard<std::mutex> r(rmu_);
  for (const auto& h : hosts) {
    auto it = hosts_.find(h);
    const HostState* hs = it == hosts_.end() ? nullptr : it->second.get();
    FillHostRealization(h, hs, hs ? hs->want : 0, out.add_hosts());
  }
  return out;
}

absl::StatusOr<dfw::v1::Policy> ModelService::PutPolicy(const dfw::v1::PutPolicyRequest& req,
                                                        bool create_only) {
  std::unique_lock l(mu_);
  if (auto e = CheckPutPolicy(req.has_policy() ? &req.policy() : nullptr, req.expected_revision(),
                              create_only);
      !e.ok()) {
    return e;
  }
  const std::string& id = req.policy().id();
  Change change(this, revision_ + 1);
  dfw::v1::Policy out = req.policy();
  out.set_revision(change.revision());
  change.cs.Put(Kind::kPolicy, id, out);
  change.cs.AddEvent(ChangeEvent::KIND_POLICY, id, false);
  auto fresh = compiler_->AllocateRuleNums(out);
  for (const auto& [k, n] : fresh) {
    size_t z = k.find('\0');
    change.cs.PutRuleNum(k.substr(0, z), k.substr(z + 1), n);
  }
  if (!fresh.empty()) change.cs.SetNextRuleNum(compiler_->next_rule_num());
  // Not stored: allocated again next time.
  change.OnUndo([this, fresh] { compiler_->ForgetRuleNums(fresh); });
  change.OnCommit([this, out](ChangeFanout& fanout) {
    policies_[out.id()] = out;
    compiler_->UpsertPolicy(out, &fanout);
  });
  if (auto e = Commit(change); !e.ok()) return e;
  return out;
}

absl::StatusOr<dfw::v1::Policy> ModelService::GetPolicy(const std::string& id) const {
  std::shared_lock l(mu_);
  auto it = policies_.find(id);
  if (it == policies_.end())
    return absl::NotFoundError(Cat("id: policy '", id, "' does not exist"));
  return it->second;
}

absl::StatusOr<dfw::v1::ListPoliciesResponse> ModelService::ListPolicies(
    const dfw::v1::ListRequest& req) const {
  std::shared_lock l(mu_);
  return Page<dfw::v1::Policy, dfw::v1::ListPoliciesResponse>(
      policies_, req,
      [](dfw::v1::ListPoliciesResponse* r, const dfw::v1::Policy& p) { *r->add_policies() = p; });
}

absl::StatusOr<dfw::v1::DeleteResponse> ModelService::DeletePolicy(
    const dfw::v1::DeleteRequest& req) {
  std::unique_lock l(mu_);
  if (auto s = CheckDeletePolicy(req.id(), req.expected_revision()); !s.ok()) return s;
  Change change(this, revision_ + 1);
  change.cs.Delete(Kind::kPolicy, req.id());
  change.cs.AddEvent(ChangeEvent::KIND_POLICY, req.id(), true);
  change.OnCommit([this, id = req.id()](ChangeFanout& fanout) {
    policies_.erase(id);
    compiler_->RemovePolicy(id, &fanout);
  });
  if (auto s = Commit(change); !s.ok()) return s;
  dfw::v1::DeleteResponse resp;
  resp.set_revision(revision_);
  return resp;
}

// ---------------------------------------------------------- exclusion list

namespace {
absl::Status ValidateExclusion(const dfw::v1::Exclusion& e) {
  if (e.vm_id().empty() == e.vnic_id().empty()) {
    return absl::InvalidArgumentError(
        "exclusion: give exactly one of vm_id and vnic_id (a VM, or one vNIC)");
  }
  if (!e.vm_id().empty()) {
    if (auto s = tagging::ValidateId(e.vm_id(), "exclusion.vm_id"); !s.ok()) return s;
  } else if (auto s = tagging::ValidateId(e.vnic_id(), "exclusion.vnic_id"); !s.ok()) {
    return s;
  }
  if (e.reason().empty() || e.reason().size() > ModelService::kMaxExclusionReason) {
    return absl::InvalidArgumentError(Cat("exclusion.reason: ", e.reason().size(),
                                          " characters; give why, in 1..",
                                          ModelService::kMaxExclusionReason));
  }
  for (unsigned char ch : e.reason()) {
    if (ch < 0x20 || ch == 0x7f) {
      return absl::InvalidArgumentError(
          "exclusion.reason: control characters are not allowed (one printable line)");
    }
  }
  return absl::OkStatus();
}
}  // namespace

dfw::v1::Exclusion ModelService::ExclusionView(const dfw::v1::Exclusion& e) const {
  dfw::v1::Exclusion out = e;
  std::vector<std::string> vnics;  // the VM's (now), or the one vNIC when some VM has it
  if (!e.vm_id().empty()) {
    if (auto it = vms_.find(e.vm_id()); it != vms_.end()) {
      for (const auto& n : it->second.vnics()) vnics.push_back(n.id());
    }
    std::sort(vnics.begin(), vnics.end());
  } else {
    vnics = compiler_->VnicsCovered(false, e.vnic_id());
  }
  std::set<std::string> hosts;
  for (const auto& v : vnics) {
    out.add_covered_vnic_ids(v);
    if (std::string h = compiler_->HostOfVnic(v); !h.empty()) hosts.insert(std::move(h));
  }
  for (const auto& h : hosts) out.add_host_ids(h);
  return out;
}

absl::StatusOr<dfw::v1::Exclusion> ModelService::AddExclusion(const dfw::v1::Exclusion& req) {
  if (auto s = ValidateExclusion(req); !s.ok()) return s;
  std::unique_lock l(mu_);
  const bool vm = !req.vm_id().empty();
  const std::string& id = vm ? req.vm_id() : req.vnic_id();
  const std::string key = Cat(vm ? "vm:" : "vnic:", id);
  if (exclusions_.count(key)) {
    return absl::AlreadyExistsError(Cat("exclusion '", key, "' is already on the list"));
  }
  if (exclusions_.size() >= kMaxExclusions) {
    return absl::ResourceExhaustedError(Cat("exclusion: the list holds ", exclusions_.size(),
                                            " entries; at most ", kMaxExclusions));
  }
  if (vm ? !vms_.count(id) : compiler_->VnicsCovered(false, id).empty()) {
    return absl::NotFoundError(Cat(vm ? "exclusion.vm_id: vm '" : "exclusion.vnic_id: vNIC '", id,
                                   "' is not in the inventory"));
  }
  dfw::v1::Exclusion stored;
  stored.set_vm_id(req.vm_id());
  stored.set_vnic_id(req.vnic_id());
  stored.set_reason(req.reason());
  stored.set_created_by(ActorScope::Current().empty() ? "controller" : ActorScope::Current());
  stored.set_created_unix_ms(std::chrono::duration_cast<std::chrono::milliseconds>(
                                 std::chrono::system_clock::now().time_since_epoch())
                                 .count());
  stored.set_revision(revision_ + 1);
  Change change(this, revision_ + 1);
  change.cs.Put(Kind::kExclusion, key, stored);
  change.cs.AddEvent(ChangeEvent::KIND_EXCLUSION, key, false);
  change.OnCommit([this, vm, id, key, stored](ChangeFanout&) {
    exclusions_[key] = stored;
    compiler_->SetExclusion(vm, id, true);
  });
  if (auto s = Commit(change); !s.ok()) return s;
  spdlog::warn("exclusion: {} added by {} ({}): its vNICs are no longer filtered", key,
               stored.created_by(), stored.reason());
  return ExclusionView(stored);
}

absl::StatusOr<dfw::v1::ListExclusionsResponse> ModelService::ListExclusions() const {
  std::shared_lock l(mu_);
  dfw::v1::ListExclusionsResponse out;
  for (const auto& [key, e] : exclusions_) *out.add_exclusions() = ExclusionView(e);
  return out;
}

absl::StatusOr<dfw::v1::DeleteResponse> ModelService::DeleteExclusion(const std::string& id) {
  std::unique_lock l(mu_);
  auto it = exclusions_.find(id);
  if (it == exclusions_.end()) {
    return absl::NotFoundError(
        Cat("id: exclusion '", id, "' is not on the list (ids: vm:<vm id>, vnic:<vnic id>)"));
  }
  const bool vm = !it->second.vm_id().empty();
  const std::string target = vm ? it->second.vm_id() : it->second.vnic_id();
  Change change(this, revision_ + 1);
  change.cs.Delete(Kind::kExclusion, id);
  change.cs.AddEvent(ChangeEvent::KIND_EXCLUSION, id, true);
  change.OnCommit([this, vm, id, target](ChangeFanout&) {
    exclusions_.erase(id);
    compiler_->SetExclusion(vm, target, false);
  });
  if (auto s = Commit(change); !s.ok()) return s;
  spdlog::warn("exclusion: {} removed by {}: its vNICs are filtered again", id,
               ActorScope::Current().empty() ? "controller" : ActorScope::Current());
  dfw::v1::DeleteResponse resp;
  resp.set_revision(revision_);
  return resp;
}

// ------------------------------------------------------ hosts, realization

namespace {
dfw::v1::RealizationState HostStateFor(bool connected, bool error, uint64_t acked, uint64_t want) {
  if (acked >= want) return dfw::v1::REALIZATION_STATE_REALIZED;
  if (!connected) return dfw::v1::REALIZATION_STATE_DISCONNECTED;
  if (error) return dfw::v1::REALIZATION_STATE_ERROR;
  return dfw::v1::REALIZATION_STATE_PENDING;
}

// A policy's state from its hosts' states: an error anywhere, else pending
// on a connected host, else waiting for a disconnected one.
dfw::v1::RealizationState PolicyStateFor(const dfw::v1::PolicyRealization& pr) {
  bool all = true, any_error = false, any_pending = false;
  for (const auto& h : pr.hosts()) {
    all = all && h.state() == dfw::v1::REALIZATION_STATE_REALIZED;
    any_error = any_error || h.state() == dfw::v1::REALIZATION_STATE_ERROR;
    any_pending = any_pending || h.state() == dfw::v1::REALIZATION_STATE_PENDING;
  }
  if (all) return dfw::v1::REALIZATION_STATE_REALIZED;
  if (any_error) return dfw::v1::REALIZATION_STATE_ERROR;
  if (any_pending) return dfw::v1::REALIZATION_STATE_PENDING;
  return dfw::v1::REALIZATION_STATE_DISCONNECTED;
}
}  // namespace

void ModelService::FillHostRealization(const std::string& id, const HostState* hs, uint64_t want,
                                       dfw::v1::HostRealization* out) {
  out->set_host_id(id);
  if (hs == nullptr) {  // named by a VM, never seen by this process
    out->set_state(dfw::v1::REALIZATION_STATE_DISCONNECTED);
    return;
  }
  out->set_state(HostStateFor(hs->connected, hs->error, hs->acked, want));
  out->set_realized_revision(hs->acked);
  if (hs->error) out->set_error(hs->error_text);
  if (hs->last_ack.seconds() != 0) *out->mutable_last_ack() = hs->last_ack;
}

absl::StatusOr<dfw::v1::ListHostsResponse> ModelService::ListHosts() const {
  std::shared_lock l(mu_);
  std::lock_guard<std::mutex> r(rmu_);
  dfw::v1::ListHostsResponse resp;
  for (const auto& [id, rec] : host_records_) {
    auto* h = resp.add_hosts();
    *h = rec;
    auto it = hosts_.find(id);
    if (it != hosts_.end()) {
      h->set_realized_revision(it->second->acked);
      h->set_connected(it->second->connected);
      h->set_refused_vm_claims(it->second->refused_claims);
      h->set_last_refused_claim(it->second->last_refused_claim);
    }
  }
  return resp;
}

absl::StatusOr<dfw::v1::RealizationResponse> ModelService::Realization(
    const dfw::v1::RealizationRequest& req) const {
  std::shared_lock l(mu_);
  std::lock_guard<std::mutex> r(rmu_);
  dfw::v1::RealizationResponse resp;
  resp.set_current_revision(revision_);
  for (const auto& [id, hs] : hosts_) FillHostRealization(id, hs.get(), hs->want, resp.add_hosts());
  std::vector<const dfw::v1::Policy*> ps;
  if (!req.policy_id().empty()) {
    auto it = policies_.find(req.policy_id());
    if (it == policies_.end()) {
      return absl::NotFoundError(Cat("policy_id: policy '", req.policy_id(), "' does not exist"));
    }
    ps.push_back(&it->second);
  } else {
    for (const auto& [id, p] : policies_) ps.push_back(&p);
  }
  for (const auto* p : ps) {
    auto* pr = resp.add_policies();
    pr->set_policy_id(p->id());
    pr->set_revision(p->revision());
    auto rec = revisions_.find(p->revision());
    if (rec == revisions_.end()) {
      // Older than the records kept, or from before a restart: judge by the
      // hosts that hold a vNIC the policy applies to now. A host without
      // one (no VMs, or none in the span) does not hold the policy back.
      for (const auto& host : compiler_->HostsOfPolicy(p->id())) {
        auto h = hosts_.find(host);
        const HostState* hs = h == hosts_.end() ? nullptr : h->second.get();
        FillHostRealization(host, hs, hs ? std::min(p->revision(), hs->want) : 0, pr->add_hosts());
      }
      pr->set_state(PolicyStateFor(*pr));
      continue;
    }
    for (const HostState* h : rec->second->affected) {
      FillHostRealization(h->id, h, p->revision(), pr->add_hosts());
    }
    if (rec->second->pending == 0) {
      pr->set_state(dfw::v1::REALIZATION_STATE_REALIZED);
      if (rec->second->done) {
        pr->set_realization_micros(
            static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                      *rec->second->done - rec->second->accepted)
                                      .count()));
      }
    } else {
      pr->set_state(PolicyStateFor(*pr));
    }
  }
  return resp;
}

// ------------------------------------------------------------------ trace

absl::StatusOr<dfw::v1::TraceResponse> ModelService::Trace(const dfw::v1::TraceRequest& req) const {
  if (req.from_vm_id().empty()) return absl::InvalidArgumentError("from_vm_id: required");
  if (req.to_vm_id().empty()) return absl::InvalidArgumentError("to_vm_id: required");
  std::shared_lock l(mu_);
  auto vm_of = [&](const std::string& id, const char* field) -> absl::StatusOr<const dfw::v1::Vm*> {
    auto it = vms_.find(id);
    if (it == vms_.end()) return absl::NotFoundError(Cat(field, ": VM '", id, "' does not exist"));
    return &it->second;
  };
  auto from = vm_of(req.from_vm_id(), "from_vm_id");
  if (!from.ok()) return from.status();
  auto to = vm_of(req.to_vm_id(), "to_vm_id");
  if (!to.ok()) return to.status();

  // Each end's vNIC and address: the one asked for (any spelling of one of
  // the VM's addresses), else the first of its first vNIC with one (the
  // sender's in the receiver's family).
  struct End {
    const dfw::v1::VNic* vnic = nullptr;
    const dfw::v1::BoundAddress* addr = nullptr;
  };
  auto end_of = [](const dfw::v1::Vm& vm, const std::string& want, const char* field,
                   std::optional<bool> v6) -> absl::StatusOr<End> {
    std::optional<tagging::IpPrefix> asked;
    if (!want.empty()) {
      auto p = tagging::IpPrefix::ParseAddress(want);
      if (!p.ok())
        return absl::InvalidArgumentError(Cat(field, ": '", want, "' is not an address"));
      asked = *p;
    }
    for (const auto& n : vm.vnics()) {
      for (const auto& a : n.addresses()) {
        auto p = tagging::IpPrefix::ParseAddress(a.ip());
        if (!p.ok()) continue;
        if (asked ? *p == *asked : (!v6 || !p->is_v4() == *v6)) return End{&n, &a};
      }
    }
    if (asked) {
      return absl::InvalidArgumentError(
          Cat(field, ": ", want, " is not an address of VM '", vm.id(), "'"));
    }
    return absl::InvalidArgumentError(Cat(field, ": VM '", vm.id(), "' has no ",
                                          v6 ? (*v6 ? "IPv6 " : "IPv4 ") : "",
                                          "address on any vNIC"));
  };
  auto dst = end_of(**to, req.to_ip(), "to_ip", std::nullopt);
  if (!dst.ok()) return dst.status();
  auto dst_family = tagging::IpPrefix::ParseAddress(dst->addr->ip());
  auto src = end_of(**from, req.from_ip(), "from_ip", !dst_family->is_v4());
  if (!src.ok()) return src.status();
  auto flow = TraceFlowOf(req, src->addr->ip(), dst->addr->ip());
  if (!flow.ok()) return flow.status();

  dfw::v1::EffectiveRulesResponse rules;
  compiler_->EffectiveRules({src->vnic->id(), dst->vnic->id()}, rules.mutable_rulesets(),
                            rules.mutable_address_sets());
  std::map<std::string, const dfw::v1::AddressSet*> sets;
  for (const auto& s : rules.address_sets()) sets.emplace(s.id(), &s);
  auto find_set = [&sets](const std::string& id) -> const dfw::v1::AddressSet* {
    auto it = sets.find(id);
    return it == sets.end() ? nullptr : it->second;
  };

  dfw::v1::TraceResponse resp;
  std::lock_guard<std::mutex> r(rmu_);
  resp.set_revision(revision_);
  resp.set_allowed(true);
  resp.set_action(dfw::v1::ACTION_ALLOW);
  for (int k = 0; k < 2; ++k) {
    const bool egress = k == 0;
    const dfw::v1::Vm& vm = egress ? **from : **to;
    const End& e = egress ? *src : *dst;
    auto* st = resp.add_stages();
    st->set_kind(egress ? dfw::v1::TraceStage::KIND_EGRESS : dfw::v1::TraceStage::KIND_INGRESS);
    st->set_vm_id(vm.id());
    st->set_vm_name(vm.name());
    st->set_vnic_id(e.vnic->id());
    st->set_address(e.addr->ip());
    st->set_enforcement(vm.enforcement());
    st->set_host_id(vm.host());
    st->set_enforced(!vm.host().empty());
    std::string note;
    if (st->enforced()) {
      auto h = hosts_.find(vm.host());
      const HostState* hsp = h == hosts_.end() ? nullptr : h->second.get();
      FillHostRealization(vm.host(), hsp, hsp ? hsp->want : 0, st->mutable_host());
      if (hsp == nullptr) {
        note = Cat("; host ", vm.host(), " has never connected to this controller");
      } else {
        const HostState& hs = *hsp;
        if (!hs.connected) {
          note = Cat("; host ", vm.host(), " is not connected: it enforces what it realized last",
                     hs.acked ? Cat(" (revision ", hs.acked, ")") : std::string(),
                     ", which may be older than this");
        } else if (hs.acked < hs.want) {
          note = Cat("; host ", vm.host(), " has realized revision ", hs.acked, " of ", hs.want,
                     ": it may still enforce an older ruleset");
        }
      }
    }
    if (e.addr->quarantined()) {
      note += Cat("; ", e.addr->ip(), " is quarantined (", e.addr->quarantine_reason(),
                  "): in no group's address set");
    }
    if (!st->enforced()) {
      st->set_action(dfw::v1::ACTION_ALLOW);
      st->set_passes(true);
      st->set_explanation(Cat(egress ? "egress" : "ingress", " of VM ", vm.id(),
                              ": no host of ours enforces it, so nothing filters this end", note));
      continue;
    }
    const dfw::v1::VNicRuleset& rs = rules.rulesets(k);
    st->set_has_ruleset(true);
    st->set_ruleset_revision(rs.revision());
    TraceFlow f = *flow;
    f.egress = egress;
    if (auto s = TraceStageOf(rs, find_set, f, st); !s.ok()) return s;
    st->set_explanation(st->explanation() + note);
    if (!st->passes() && resp.allowed()) {
      resp.set_allowed(false);
      resp.set_decided_by(st->kind());
      resp.set_action(st->action());
    }
  }
  return resp;
}

absl::StatusOr<std::vector<dfw::v1::ChangeEvent>> ModelService::Changes(uint64_t from_revision,
                                                                        size_t limit) const {
  return store_->ChangesSince(from_revision, limit);
}

// ----------------------------------------------------------- host sessions

namespace {

// An address's one spelling ("2001:DB8:0::5" and "2001:db8::5" are one
// address): collisions are found on it, never on the text a reporter sent.
std::string CanonicalAddress(const std::string& ip) {
  auto p = tagging::IpPrefix::ParseAddress(ip);
  if (!p.ok()) return ip;  // refused later by VmFromProto, with the field
  std::string s = p->ToString();
  return s.substr(0, s.find('/'));
}

// Address -> the VM holding it (first seen), over every VM but `except`
// and the quarantined addresses.
std::map<std::string, std::string> AddressHolders(const std::map<std::string, dfw::v1::Vm>& vms,
                                                  const std::set<std::string>& except) {
  std::map<std::string, std::string> out;
  for (const auto& [id, vm] : vms) {
    if (except.count(id)) continue;
    for (const auto& n : vm.vnics()) {
      for (const auto& a : n.addresses()) {
        if (!a.quarantined()) out.emplace(CanonicalAddress(a.ip()), id);
      }
    }
  }
  return out;
}

// A guest agent's report is the guest's word (model_service.h): no tags,
// the name only for a new VM, every address a guest-agent address and
// quarantined when another VM holds it.
void SanitizeGuestReport(dfw::v1::Vm* vm, const dfw::v1::Vm* old,
                         const std::map<std::string, std::string>& holders) {
  vm->clear_tags();
  vm->clear_host_tags();
  if (old != nullptr && !old->name().empty()) vm->set_name(old->name());
  vm->set_enforcement(dfw::v1::ENFORCEMENT_GUEST);
  for (auto& n : *vm->mutable_vnics()) {
    for (auto& a : *n.mutable_addresses()) {
      a.set_ip(CanonicalAddress(a.ip()));
      a.set_source(dfw::v1::ADDRESS_SOURCE_GUEST_AGENT);
      a.set_quarantined(false);
      a.clear_quarantine_reason();
      auto it = holders.find(a.ip());
      if (it != holders.end()) {
        a.set_quarantined(true);
        a.set_quarantine_reason(Cat("vm '", it->second, "' also holds ", a.ip()));
      }
    }
  }
}

}  // namespace

// Host reports staged for one change (ModelService::StageInventory): the
// store writes, the index changes in the order applied, and what vms_ and
// host_records_ held before, to undo them when the change is not stored.
struct ModelService::InventoryBatch {
  InventoryBatch(ModelService* m, uint64_t revision) : change(m, revision) {}
  bool effective = false;           // a VM or host record changed: a new revision
  std::vector<dfw::v1::Vm> silent;  // stored without a revision when nothing is effective
  std::vector<std::pair<std::string, std::string>> moved;  // (vm, new host)
  std::set<std::string> attaching;  // hosts whose Hello is staged: they count as connected
  std::vector<std::pair<std::string, std::optional<dfw::v1::Vm>>> vms_before;
  std::vector<std::pair<std::string, std::optional<dfw::v1::Host>>> hosts_before;
  Clock::time_point now = Clock::now();
  // The reports' writes and index steps, at the batch's revision. Last, so
  // that an uncommitted batch undoes its index steps first.
  Change change;

  void SetVm(VmTable& vms, const std::string& id, const std::optional<dfw::v1::Vm>& vm) {
    std::optional<dfw::v1::Vm> before;
    if (vm) {
      auto it = vms.find(id);
      if (it != vms.end()) before = it->second;
      vms.Put(*vm);
    } else {
      before = vms.Erase(id);
    }
    vms_before.emplace_back(id, std::move(before));
  }
  void SetHost(std::map<std::string, dfw::v1::Host>& hosts, dfw::v1::Host h) {
    auto it = hosts.find(h.id());
    hosts_before.emplace_back(
        h.id(), it == hosts.end() ? std::nullopt : std::optional(std::move(it->second)));
    std::string id = h.id();
    hosts[id] = std::move(h);
  }
  // Puts vms_ and host_records_ back as they were before the batch.
  void Undo(VmTable& vms, std::map<std::string, dfw::v1::Host>& hosts) {
    for (auto it = vms_before.rbegin(); it != vms_before.rend(); ++it) {
      if (it->second) {
        vms.Put(std::move(*it->second));
      } else {
        vms.Erase(it->first);
      }
    }
    for (auto it = hosts_before.rbegin(); it != hosts_before.rend(); ++it) {
      if (it->second) {
        hosts[it->first] = std::move(*it->second);
      } else {
        hosts.erase(it->first);
      }
    }
    vms_before.clear();
    hosts_before.clear();
  }
};

absl::Status ModelService::ApplyInventory(const std::string& host_id,
                                          const std::vector<dfw::v1::Vm>& vms_set,
                                          const std::vector<std::string>& vms_removed) {
  InventoryBatch batch(this, revision_ + 1);
  if (auto s = StageInventory(host_id, vms_set, vms_removed, false, nullptr, batch); !s.ok()) {
    return s;
  }
  return CommitInventory(batch);
}

absl::Status ModelService::StageInventory(const std::string& host_id,
                                          const std::vector<dfw::v1::Vm>& vms_set,
                                          const std::vector<std::string>& vms_removed,
                                          bool replace_host, const dfw::v1::Host* host_record,
                                          InventoryBatch& batch) {
  const auto now = batch.now;
  // Validate every VM first: nothing is applied when one is wrong.
  std::vector<tagging::VmSpec> specs;
  std::vector<dfw::v1::Vm> protos;
  std::vector<dfw::v1::Vm> silent;  // changed, but nothing effective
  std::set<std::string> listed;
  std::vector<std::string> refused;  // VMs another connected host holds
  auto connected = [&](const std::string& host) {
    if (batch.attaching.count(host)) return true;
    std::lock_guard<std::mutex> r(rmu_);
    auto it = hosts_.find(host);
    return it != hosts_.end() && it->second->connected;
  };
  const bool guest = IsGuestHost(host_id);
  std::map<std::string, std::string> holders;
  if (guest) {
    std::set<std::string> reported;
    for (const auto& vm : vms_set) reported.insert(vm.id());
    holders = AddressHolders(vms_.all(), reported);
  }
  for (size_t i = 0; i < vms_set.size(); ++i) {
    dfw::v1::Vm vm = vms_set[i];
    vm.set_host(host_id);
    vm.set_revision(0);
    if (guest) {
      auto o = vms_.find(vm.id());
      SanitizeGuestReport(&vm, o == vms_.end() ? nullptr : &o->second, holders);
    } else {
      vm.set_enforcement(dfw::v1::ENFORCEMENT_HYPERVISOR);
      for (auto& n : *vm.mutable_vnics()) {
        for (auto& a : *n.mutable_addresses()) {
          a.set_quarantined(false);
          a.clear_quarantine_reason();
        }
      }
    }
    auto spec = tagging::VmFromProto(vm);
    if (!spec.ok()) return Prefixed(spec.status(), Cat("vms[", i, "]."));
    if (!listed.insert(vm.id()).second) {
      return absl::InvalidArgumentError(Cat("vms[", i, "].id: '", vm.id(), "' is listed twice"));
    }
    // The report's tags are the metadata's: they replace host_tags whole.
    auto old = vms_.find(vm.id());
    // A host reports only its own VMs: one another connected host holds
    // stays there (a VM whose host is away may move: model_service.h).
    if (old != vms_.end() && !old->second.host().empty() && old->second.host() != host_id &&
        connected(old->second.host())) {
      refused.push_back(
          Cat("vm '", vm.id(), "' is held by connected host '", old->second.host(), "'"));
      handover_.Claim(vm, now);  // it takes the VM over when the owner lets it go
      continue;
    }
    TagList api = old == vms_.end() ? TagList{} : TagsOf(old->second.api_tags());
    spec->tags = SetTagSources(api, spec->tags, &vm);
    if (old != vms_.end()) {
      dfw::v1::Vm cmp = old->second;
      cmp.set_revision(0);
      if (google::protobuf::util::MessageDifferencer::Equals(cmp, vm)) continue;
      *cmp.mutable_host_tags() = vm.host_tags();
      if (google::protobuf::util::MessageDifferencer::Equals(cmp, vm)) {
        // Only host values the API overrides changed: stored, no revision.
        cmp.set_revision(old->second.revision());
        silent.push_back(std::move(cmp));
        continue;
      }
    }
    specs.push_back(std::move(*spec));
    protos.push_back(std::move(vm));
  }
  if (!guest) {
    // A hypervisor's addresses win over a guest's claim: a guest VM holding
    // one of them has it quarantined in the same change.
    std::map<std::string, std::string> reported;
    for (const auto& vm : protos) {
      for (const auto& n : vm.vnics()) {
        for (const auto& a : n.addresses()) reported.emplace(CanonicalAddress(a.ip()), vm.id());
      }
    }
    auto quarantine = [&](const std::string& id) {
      if (listed.count(id)) return;
      dfw::v1::Vm vm = vms_.at(id);
      bool changed = false;
      for (auto& n : *vm.mutable_vnics()) {
        for (auto& a : *n.mutable_addresses()) {
          auto it = reported.find(CanonicalAddress(a.ip()));
          if (a.quarantined() || it == reported.end()) continue;
          a.set_quarantined(true);
          a.set_quarantine_reason(Cat("vm '", it->second, "' also holds ", a.ip()));
          changed = true;
        }
      }
      if (!changed) return;
      vm.set_revision(0);
      auto spec = tagging::VmFromProto(vm);
      if (!spec.ok()) return;  // it was valid when stored; never expected
      spdlog::warn("host {} reports addresses guest VM {} claimed: the guest's are quarantined",
                   host_id, id);
      specs.push_back(std::move(*spec));
      protos.push_back(std::move(vm));
    };
    if (!reported.empty()) {
      vms_.ForHostsWithPrefix(kGuestHostPrefix,
                              [&](const std::string&, const std::set<std::string>& ids) {
                                for (const auto& id : ids) quarantine(id);
                              });
    }
  }
  if (!refused.empty()) {
    std::lock_guard<std::mutex> r(rmu_);
    auto& hs = hosts_[host_id];
    if (!hs) {
      hs = std::make_unique<HostState>();
      hs->id = host_id;
    }
    for (const auto& why : refused) {
      spdlog::warn("host {} reported a VM it does not hold, refused: {}", host_id, why);
    }
    hs->refused_claims += refused.size();
    hs->last_refused_claim = refused.back();
    refused_vm_claims_ += refused.size();
  }
  std::vector<std::string> removals;
  if (replace_host) {
    handover_.KeepClaims(host_id, [&](const std::string& id) { return listed.count(id) > 0; });
    for (const auto& id : vms_.OfHost(host_id)) {
      if (!listed.count(id)) removals.push_back(id);
    }
  }
  std::set<std::string> removing;
  for (const auto& id : vms_removed) {
    handover_.Unclaim(id, host_id);
    // Only the host's own VMs (one that moved on is no longer its to remove).
    auto it = vms_.find(id);
    if (it != vms_.end() && it->second.host() == host_id && !listed.count(id) &&
        removing.insert(id).second) {
      removals.push_back(id);
    }
  }
  // A VM its owner lets go while another connected host reports it moves to
  // that host in this same change (vm_handover.h): it is not removed.
  for (auto it = removals.begin(); it != removals.end();) {
    auto claim = handover_.TakeClaim(*it, host_id, connected);
    if (!claim) {
      ++it;
      continue;
    }
    auto spec = tagging::VmFromProto(*claim);
    if (!spec.ok()) {  // valid when it was reported; never expected
      ++it;
      continue;
    }
    spec->tags = SetTagSources(TagsOf(vms_.at(*it).api_tags()), spec->tags, &*claim);
    spdlog::info("vm {} moves from host {} to host {}", *it, host_id, claim->host());
    specs.push_back(std::move(*spec));
    protos.push_back(std::move(*claim));
    it = removals.erase(it);
  }
  bool host_changed = false;
  if (host_record != nullptr) {
    auto it = host_records_.find(host_id);
    host_changed =
        it == host_records_.end() || it->second.hostname() != host_record->hostname() ||
        it->second.kind() != (guest ? dfw::v1::HOST_KIND_GUEST : dfw::v1::HOST_KIND_HYPERVISOR);
  }
  if (specs.empty() && removals.empty() && !host_changed) {
    // Nothing effective: stored with the batch, at no new revision of its own.
    for (auto& vm : silent) {
      batch.change.cs.Put(Kind::kVm, vm.id(), vm);
      std::string id = vm.id();
      batch.SetVm(vms_, id, vm);
      batch.silent.push_back(std::move(vm));
    }
    return absl::OkStatus();
  }

  // This report is a Change of its own first: a VM the index refuses
  // leaves nothing of the report in the batch (its steps are undone).
  const uint64_t rev = batch.change.revision();
  Change report(this, rev);
  for (const auto& vm : silent) report.cs.Put(Kind::kVm, vm.id(), vm);
  std::vector<std::pair<std::string, std::optional<dfw::v1::Vm>>> staged;  // vms_ after it
  std::vector<std::pair<std::string, std::string>> moved;                  // (vm, new host)
  for (const auto& vm : protos) {
    auto o = vms_.find(vm.id());
    if (o == vms_.end() || o->second.host() != vm.host()) moved.emplace_back(vm.id(), vm.host());
  }
  for (size_t i = 0; i < specs.size(); ++i) {
    protos[i].set_revision(rev);
    // vms_ is staged below, with the batch's undo.
    if (auto st = report.UpsertVm(std::move(specs[i]), protos[i], /*table=*/false); !st.ok()) {
      return Prefixed(st, Cat("vms[", i, "]."));
    }
    staged.emplace_back(protos[i].id(), std::move(protos[i]));
  }
  for (const auto& id : removals) {
    if (auto st = report.RemoveVm(id, /*table=*/false); !st.ok()) return st;
    staged.emplace_back(id, std::nullopt);
  }
  if (host_changed) {
    dfw::v1::Host h;
    h.set_id(host_id);
    h.set_hostname(host_record->hostname());
    h.set_kind(guest ? dfw::v1::HOST_KIND_GUEST : dfw::v1::HOST_KIND_HYPERVISOR);
    report.cs.Put(Kind::kHost, host_id, h);
    report.cs.AddEvent(ChangeEvent::KIND_HOST, host_id, false);
    batch.SetHost(host_records_, std::move(h));
  }
  // Staged: the model shows the report now (a later report of the batch
  // reads it); CommitInventory stores it or puts everything back.
  batch.change.Append(std::move(report));
  for (auto& vm : silent) {
    std::string id = vm.id();
    batch.SetVm(vms_, id, vm);
  }
  for (const auto& [id, vm] : staged) batch.SetVm(vms_, id, vm);
  batch.moved.insert(batch.moved.end(), moved.begin(), moved.end());
  batch.effective = true;
  return absl::OkStatus();
}

absl::Status ModelService::CommitInventory(InventoryBatch& batch) {
  if (!batch.effective) {
    if (batch.silent.empty()) return absl::OkStatus();
    ChangeSet cs(revision_);
    for (const auto& vm : batch.silent) cs.Put(Kind::kVm, vm.id(), vm);
    if (auto s = StoreCommit(cs); !s.ok()) {
      batch.Undo(vms_, host_records_);
      return s;
    }
    return absl::OkStatus();
  }
  if (auto s = Commit(batch.change); !s.ok()) {
    batch.Undo(vms_, host_records_);  // the index steps are undone
    return s;
  }
  // Still under the writer lock: the new owner's feed holds the imports
  // before a sender can build the delta with the VM's rules.
  for (const auto& [vm_id, to] : batch.moved) SendImports(vm_id, to, batch.now);
  return absl::OkStatus();
}

void ModelService::SendImports(const std::string& vm_id, const std::string& to,
                               Clock::time_point now) {
  auto imports = handover_.TakeImports(vm_id, to, now);
  if (imports.empty()) return;
  size_t entries = 0;
  for (const auto& m : imports) entries += m.entries_size();
  spdlog::info("vm {}: {} connections from host {} handed to host {}", vm_id, entries,
               imports.front().from_host(), to);
  std::lock_guard<std::mutex> r(rmu_);
  auto& hs = hosts_[to];
  if (!hs) {
    hs = std::make_unique<HostState>();
    hs->id = to;
  }
  if (!hs->feed) hs->feed = std::make_shared<HostFeed>(to);
  for (auto& m : imports) hs->feed->QueueImport(std::move(m));
}

absl::Status ModelService::AddConnectionExport(const std::string& host_id,
                                               dfw::v1::ConnectionExport msg) {
  std::unique_lock l(mu_);
  auto it = vms_.find(msg.vm_id());
  bool own_vnic = false;
  if (it != vms_.end() && it->second.host() == host_id) {
    for (const auto& n : it->second.vnics()) own_vnic = own_vnic || n.id() == msg.vnic_id();
  }
  if (!own_vnic) {
    // A race with a move the controller already decided (or a confused
    // agent): the entries are not this host's to hand on.
    spdlog::warn("host {}: connections of vm '{}' vNIC '{}' ignored: not a vNIC of a VM it holds",
                 host_id, msg.vm_id(), msg.vnic_id());
    return absl::OkStatus();
  }
  return handover_.AddExport(host_id, std::move(msg), Clock::now());
}

absl::StatusOr<ModelService::Attached> ModelService::AttachHost(
    const dfw::v1::HostHello& hello, std::function<void()> wake,
    std::function<bool(dfw::v1::ControllerToHost)> deliver) {
  std::vector<HostHelloRequest> one(1);
  one[0].hello = hello;
  one[0].actor = ActorScope::Current();
  one[0].wake = std::move(wake);
  one[0].deliver = std::move(deliver);
  return std::move(AttachHosts(std::move(one))[0]);
}

std::vector<absl::StatusOr<ModelService::Attached>> ModelService::AttachHosts(
    std::vector<HostHelloRequest> hellos) {
  std::vector<absl::StatusOr<Attached>> out(hellos.size(),
                                            absl::InternalError("hello: not applied"));
  std::vector<bool> staged(hellos.size(), false);
  std::unique_lock l(mu_);
  InventoryBatch batch(this, revision_ + 1);
  for (size_t i = 0; i < hellos.size(); ++i) {
    const dfw::v1::HostHello& hello = hellos[i].hello;
    const std::string& host_id = hello.host().id();
    if (auto s = ValidateObjectId(host_id, "host.id"); !s.ok()) {
      out[i] = s;
      continue;
    }
    // host_records_ already holds the hosts staged before this one.
    if (!host_records_.count(host_id) && host_records_.size() >= kMaxHosts) {
      out[i] = absl::ResourceExhaustedError(Cat("host.id: host '", host_id, "' would be host ",
                                                host_records_.size() + 1, ", above the limit of ",
                                                kMaxHosts, "; remove hosts that are gone first"));
      continue;
    }
    ActorScope actor(hellos[i].actor);  // the change log names who reported
    std::vector<dfw::v1::Vm> vms(hello.vms().begin(), hello.vms().end());
    if (auto s = StageInventory(host_id, vms, {}, true, &hello.host(), batch); !s.ok()) {
      out[i] = s;  // this report alone: nothing of it was staged
      continue;
    }
    // Connected from here on for the reports staged after it, as it would
    // be had its Hello been applied alone, before theirs.
    batch.attaching.insert(host_id);
    staged[i] = true;
  }
  if (auto s = CommitInventory(batch); !s.ok()) {
    for (size_t i = 0; i < hellos.size(); ++i) {
      if (staged[i]) out[i] = s;
    }
    return out;
  }
  std::lock_guard<std::mutex> r(rmu_);
  for (size_t i = 0; i < hellos.size(); ++i) {
    if (!staged[i]) continue;
    out[i] = BindSessionLocked(hellos[i]);
  }
  return out;
}

namespace {

// Digests a resume can trust: each of the size SHA-256 gives, with an id.
bool UsableDigests(const dfw::v1::HeldDigests& held) {
  auto ok = [](const auto& objs) {
    return std::all_of(objs.begin(), objs.end(), [](const dfw::v1::HeldObject& o) {
      return !o.id().empty() && o.digest().size() == proto::kDigestBytes;
    });
  };
  return (held.rulesets_size() > 0 || held.address_sets_size() > 0) && ok(held.rulesets()) &&
         ok(held.address_sets());
}

}  // namespace

ModelService::Attached ModelService::BindSessionLocked(HostHelloRequest& req) {
  const std::string& host_id = req.hello.host().id();
  Attached out;
  auto& hs = hosts_[host_id];
  if (!hs) {
    hs = std::make_unique<HostState>();
    hs->id = host_id;
  }
  if (!hs->feed) hs->feed = std::make_shared<HostFeed>(host_id);
  out.feed = hs->feed;
  const uint64_t sent = hs->feed->last_sent();
  const uint64_t held = req.hello.held_revision();
  out.generation = hs->feed->Attach(std::move(req.wake), std::move(req.deliver));
  if (!IsGuestHost(host_id)) hs->feed->SetFlowWatch(flow_watch_.load());
  hs->connected = true;
  // Nothing is sent until the caller Kick()s the feed once bound.
  if (held != 0 && held == sent) {
    // Resuming what this process last sent: the changes merged into the
    // feed while the host was away, and only those (each raised `want` in
    // Publish). Revisions that concerned no host (a group nothing uses, a
    // tag no group reads) leave nothing to send and nothing to ack, so
    // waiting for them would leave the host pending for ever. Holding
    // exactly what was sent is as good as its ack.
    AdvanceAcked(*hs, sent);
    return out;
  }
  // A revision this process did not send (it restarted, took over as
  // leader, or the host's dataplane restored an older state): the host's
  // digests say what it holds, and a delta of what differs from its current
  // state takes it to the current revision. A delta must go forward, so at
  // the current revision only an exact match resumes (nothing to send: as
  // good as an ack). Without usable digests, or holding a revision above
  // ours (another history), a full state; a held revision proves nothing
  // there, only the full state's ack will.
  if (held != 0 && held <= revision_ && UsableDigests(req.hello.held())) {
    HostChanges diff = compiler_->DiffHeld(host_id, req.hello.held());
    if (held < revision_ || diff.empty()) {
      out.resumed = true;
      out.differing = diff.rulesets_set.size() + diff.rulesets_removed.size() +
                      diff.sets_full.size() + diff.sets_removed.size();
      hs->feed->Resume(held, std::move(diff));
      hs->want = revision_;
      if (held == revision_) AdvanceAcked(*hs, held);
      return out;
    }
  }
  out.full = true;
  hs->feed->RequestFull();
  hs->want = revision_;  // a full state is built at the current revision
  return out;
}

absl::Status ModelService::UpdateInventory(const std::string& host_id,
                                           const dfw::v1::InventoryUpdate& update) {
  std::unique_lock l(mu_);
  std::vector<dfw::v1::Vm> vms(update.vms_set().begin(), update.vms_set().end());
  std::vector<std::string> removed(update.vms_removed().begin(), update.vms_removed().end());
  return ApplyInventory(host_id, vms, removed);
}

absl::Status ModelService::Ack(const std::string& host_id, const dfw::v1::Ack& ack) {
  std::lock_guard<std::mutex> r(rmu_);
  auto it = hosts_.find(host_id);
  if (it == hosts_.end() || !it->second->feed) {
    return absl::FailedPreconditionError(Cat("ack: host '", host_id, "' has no session"));
  }
  HostState& hs = *it->second;
  // A host acks only what it was sent: a higher revision would report as
  // realized a state it never received.
  uint64_t sent = hs.feed->last_sent();
  if (ack.revision() > sent) {
    return absl::InvalidArgumentError(Cat("ack: revision ", ack.revision(),
                                          " was never sent to host ", host_id, " (last sent ", sent,
                                          ")"));
  }
  hs.last_ack = TimeUtil::GetCurrentTime();
  if (!ack.ok()) {
    hs.error = true;
    hs.error_text = ack.error();
    return absl::OkStatus();
  }
  hs.error = false;
  hs.error_text.clear();
  AdvanceAcked(hs, ack.revision());
  return absl::OkStatus();
}

void ModelService::AdvanceAcked(HostState& hs, uint64_t revision) {
  if (revision <= hs.acked) return;
  uint64_t prev = hs.acked;
  hs.acked = revision;
  auto now = Clock::now();
  for (auto rit = revisions_.upper_bound(prev); rit != revisions_.end() && rit->first <= revision;
       ++rit) {
    auto& rec = *rit->second;
    if (rec.pending > 0 && std::binary_search(rec.affected.begin(), rec.affected.end(), &hs) &&
        --rec.pending == 0) {
      RevisionDone(rec, now);
    }
  }
}

void ModelService::RevisionDone(RevisionRecord& rec, Clock::time_point now) {
  rec.done = now;
  realization_seconds_.Observe(std::chrono::duration<double>(now - rec.accepted).count());
}

void ModelService::DetachHost(const std::string& host_id, uint64_t generation) {
  std::lock_guard<std::mutex> r(rmu_);
  auto it = hosts_.find(host_id);
  if (it == hosts_.end() || !it->second->feed) return;
  // The feed stays (it keeps merging for a reconnect with held_revision).
  if (it->second->feed->generation_matches(generation)) {
    it->second->connected = false;
    probe_hub_.HostLost(host_id);  // its probes' askers stop waiting
  }
  it->second->feed->Detach(generation);
}

bool ModelService::HostConnected(const std::string& host_id) const {
  std::lock_guard<std::mutex> r(rmu_);
  auto it = hosts_.find(host_id);
  return it != hosts_.end() && it->second->connected;
}

absl::Status ModelService::SendProbe(const std::string& host_id, dfw::v1::ProbeRequest req) {
  std::lock_guard<std::mutex> r(rmu_);
  auto it = hosts_.find(host_id);
  if (it == hosts_.end() || !it->second->connected || !it->second->feed) {
    return absl::UnavailableError(Cat("host ", host_id, " is not connected"));
  }
  it->second->feed->QueueProbe(std::move(req));
  return absl::OkStatus();
}

absl::StatusOr<dfw::v1::DeleteResponse> ModelService::DeleteHost(const std::string& host_id) {
  std::unique_lock l(mu_);
  bool known = host_records_.count(host_id) > 0;
  {
    std::lock_guard<std::mutex> r(rmu_);
    auto it = hosts_.find(host_id);
    if (it != hosts_.end()) {
      known = true;
      if (it->second->connected) {
        return absl::FailedPreconditionError(
            Cat("id: host '", host_id,
                "' is connected; stop its agent (or revoke its certificate) first"));
      }
    }
  }
  const auto& held = vms_.OfHost(host_id);
  std::vector<std::string> vm_ids(held.begin(), held.end());
  if (!known && vm_ids.empty()) {
    return absl::NotFoundError(Cat("id: host '", host_id, "' does not exist"));
  }
  Change change(this, revision_ + 1);
  for (const auto& id : vm_ids) {
    if (auto st = change.RemoveVm(id); !st.ok()) return st;
  }
  if (host_records_.count(host_id)) change.cs.Delete(Kind::kHost, host_id);
  change.cs.AddEvent(ChangeEvent::KIND_HOST, host_id, true);
  change.AfterFlush([this, host_id](ChangeFanout& fanout) {
    fanout.erase(host_id);  // its rulesets go with it; nobody is left to tell
    host_records_.erase(host_id);
  });
  if (auto s = Commit(change); !s.ok()) return s;
  {
    std::lock_guard<std::mutex> r(rmu_);
    auto it = hosts_.find(host_id);
    if (it != hosts_.end()) {
      // No revision waits for it any more (records hold it by pointer).
      const HostState* gone = it->second.get();
      auto now = Clock::now();
      for (auto& [revision, rec] : revisions_) {
        auto pos = std::lower_bound(rec->affected.begin(), rec->affected.end(), gone);
        if (pos == rec->affected.end() || *pos != gone) continue;
        rec->affected.erase(pos);
        if (gone->acked < revision && rec->pending > 0 && --rec->pending == 0) {
          RevisionDone(*rec, now);
        }
      }
      if (it->second->feed) it->second->feed->Detach(it->second->feed->generation());
      hosts_.erase(it);
    }
  }
  dfw::v1::DeleteResponse resp;
  resp.set_revision(revision_);
  return resp;
}

std::optional<dfw::v1::ControllerToHost> ModelService::NextMessage(HostFeed* feed) const {
  std::shared_lock l(mu_);
  return feed->Take(*compiler_, revision_);
}

ModelStats ModelService::Stats() const {
  std::shared_lock l(mu_);
  ModelStats s;
  s.revision = revision_;
  s.vms = vms_.size();
  s.groups = groups_.size();
  s.policies = policies_.size();
  s.exclusions = exclusions_.size();
  s.excluded_vnics = compiler_->excluded_vnics();
  s.index = index_->Stats();
  s.compiler = compiler_->Stats();
  std::lock_guard<std::mutex> r(rmu_);
  s.hosts = hosts_.size();
  for (const auto& [id, hs] : hosts_) s.connected_hosts += hs->connected ? 1 : 0;
  s.refused_vm_claims = refused_vm_claims_;
  s.handover = handover_.stats();
  return s;
}

ModelMetrics ModelService::Metrics(bool per_host) const {
  ModelMetrics m;
  m.stats = Stats();
  std::shared_lock l(mu_);
  std::lock_guard<std::mutex> r(rmu_);
  auto now = Clock::now();
  for (const auto& [revision, rec] : revisions_) {  // by revision: the first pending is the oldest
    if (rec->pending == 0) continue;
    m.oldest_unrealized_seconds = std::chrono::duration<double>(now - rec->accepted).count();
    break;
  }
  for (const auto& [id, hs] : hosts_) {
    if (hs->acked < hs->want) ++m.hosts_pending;
    HostFeed::Depth d;
    if (hs->feed) d = hs->feed->depth();
    m.feed_objects += d.objects;
    m.feed_objects_max = std::max(m.feed_objects_max, d.objects);
    m.feeds_owed += d.owed ? 1 : 0;
    if (per_host) {
      m.hosts.push_back({id, hs->connected, hs->acked, hs->want, d.objects});
    }
  }
  m.store_commits = store_commits_.load(std::memory_order_relaxed);
  m.store_commit_failures = store_commit_failures_.load(std::memory_order_relaxed);
  m.store_commit_seconds = store_commit_seconds_.Read();
  m.realization_seconds = realization_seconds_.Read();
  return m;
}

void ModelService::SetFlowWatch(bool on) {
  std::lock_guard<std::mutex> r(rmu_);
  flow_watch_ = on;
  for (auto& [id, hs] : hosts_) {
    if (hs->feed && !IsGuestHost(id)) hs->feed->SetFlowWatch(on);
  }
}

void ModelService::RelayFlows(const std::string& host_id, dfw::v1::FlowBatch batch) {
  std::vector<dfw::v1::ObservedFlow> out;
  out.reserve(static_cast<size_t>(batch.records_size()));
  {
    std::shared_lock l(mu_);
    std::map<std::string, const dfw::v1::Vm*> vm_of;  // the host's vNICs
    for (const auto& id : vms_.OfHost(host_id)) {
      const dfw::v1::Vm& vm = vms_.at(id);
      for (const auto& n : vm.vnics()) vm_of[n.id()] = &vm;
    }
    std::map<std::string, std::vector<std::string>> groups_of;  // by VM id, filled as met
    auto groups = [&](const std::string& vm_id) -> const std::vector<std::string>& {
      auto [g, fresh] = groups_of.try_emplace(vm_id);
      if (fresh) {
        if (auto reasons = index_->GroupsOf(vm_id); reasons.ok()) {
          for (const auto& reason : *reasons) g->second.push_back(reason.group_id);
          std::sort(g->second.begin(), g->second.end());
          g->second.erase(std::unique(g->second.begin(), g->second.end()), g->second.end());
        }
      }
      return g->second;
    };
    std::lock_guard<std::mutex> peers(peer_mu_);
    if (peer_revision_ != revision_) {
      peer_vm_.clear();
      for (const auto& [id, vm] : vms_.all()) {
        for (const auto& n : vm.vnics()) {
          for (const auto& a : n.addresses()) {
            if (!a.quarantined()) peer_vm_[a.ip()] = {vm.id(), vm.name()};
          }
        }
      }
      peer_revision_ = revision_;
    }
    for (auto& in : *batch.mutable_records()) {
      dfw::v1::ObservedFlow f;
      f.set_host_id(host_id);
      f.mutable_record()->Swap(&in);  // moved, not copied
      const dfw::v1::FlowRecord& rec = f.record();
      if (auto it = vm_of.find(rec.vnic_id()); it != vm_of.end()) {
        const dfw::v1::Vm& vm = *it->second;
        f.set_vm_id(vm.id());
        f.set_vm_name(vm.name());
        for (const auto& id : groups(vm.id())) f.add_groups(id);
      }
      // The other end: "1.2.3.4:80" or "[2001:db8::1]:80".
      const std::string& peer = rec.direction() == dfw::v1::DIRECTION_IN ? rec.src() : rec.dst();
      std::string_view ip(peer);
      ip = ip.substr(0, std::min(ip.size(), ip.rfind(':')));
      if (ip.size() >= 2 && ip.front() == '[' && ip.back() == ']') ip = ip.substr(1, ip.size() - 2);
      if (auto p = peer_vm_.find(std::string(ip)); p != peer_vm_.end()) {
        f.set_peer_vm_id(p->second.first);
        f.set_peer_vm_name(p->second.second);
        for (const auto& id : groups(p->second.first)) f.add_peer_groups(id);
      }
      if (!rec.policy_id().empty()) {
        if (auto p = policies_.find(rec.policy_id()); p != policies_.end()) {
          f.set_policy_name(p->second.display_name());
        }
      }
      out.push_back(std::move(f));
    }
  }
  flow_hub_.Add(host_id, std::move(out), batch.lost());
}

}  // namespace dfw::controller
