#include "dataplane_state.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <limits>
#include <set>
#include <vector>

#include "dfw/dataplane/conn_table.h"
#include "dfw/proto/state_digest.h"
#include "durable_file.h"

namespace dfw::dataplane {
namespace {

Status Err(const std::string& where, const std::string& what) {
  return Status::Error(where + ": " + what);
}

// The state file is at most what one gRPC message may carry (main.cc).
constexpr off_t kMaxStateFileBytes = off_t{256} << 20;
// No revision follows it: refused, so a delta can never wrap.
constexpr uint64_t kMaxRevision = std::numeric_limits<uint64_t>::max();

bool ParseMac(const std::string& s, uint8_t out[6]) {
  unsigned b[6];
  char tail;
  if (s.size() != 17 || sscanf(s.c_str(), "%2x:%2x:%2x:%2x:%2x:%2x%c", &b[0], &b[1], &b[2], &b[3],
                               &b[4], &b[5], &tail) != 6) {
    return false;
  }
  for (int i = 0; i < 6; ++i) out[i] = static_cast<uint8_t>(b[i]);
  return true;
}

std::string MacText(const uint8_t m[6]) {
  char buf[18];
  std::snprintf(buf, sizeof(buf), "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4],
                m[5]);
  return buf;
}

// Ids in `list` (rulesets by vNIC id, address sets by id): none empty, none
// twice. `field` names the list, `key` the id's field.
template <typename List, typename Id>
Status CheckIds(const List& list, const std::string& field, const std::string& key, Id id) {
  std::map<std::string, int> seen;
  for (int i = 0; i < list.size(); ++i) {
    const std::string& v = id(list[i]);
    std::string f = field + "[" + std::to_string(i) + "]." + key;
    if (v.empty()) return Err(f, "must not be empty");
    auto [it, fresh] = seen.emplace(v, i);
    if (!fresh) {
      return Err(
          f, "'" + v + "' appears twice (also " + field + "[" + std::to_string(it->second) + "])");
    }
  }
  return Status::Ok();
}

// A state's or delta's rulesets (by vNIC id) and address sets (by id).
template <typename Rulesets, typename Sets>
Status CheckRulesetAndSetIds(const Rulesets& rulesets, const std::string& rulesets_field,
                             const Sets& sets, const std::string& sets_field) {
  if (auto st =
          CheckIds(rulesets, rulesets_field, "vnic_id",
                   [](const v1::VNicRuleset& r) -> const std::string& { return r.vnic_id(); });
      !st.ok()) {
    return st;
  }
  return CheckIds(sets, sets_field, "id",
                  [](const v1::AddressSet& a) -> const std::string& { return a.id(); });
}

// The ruleset as vNICs share it: without the vNIC id and the revision.
v1::VNicRuleset SharedContent(const v1::VNicRuleset& rs) {
  v1::VNicRuleset content = rs;
  content.clear_vnic_id();
  content.clear_revision();
  return content;
}

}  // namespace

// One compiled ruleset and the vNICs that enforce it.
struct DataplaneState::Compiled {
  v1::VNicRuleset content;  // vnic_id and revision unset (persisted once)
  RulesetCompiler compiler;
  std::vector<RuleMeta> meta;
  std::set<std::string> set_ids;  // the address sets its rules name
  Action default_action = Action::kDrop;
  bool default_log = true;
  uint32_t generation = 0;
  std::set<std::string> vnics;               // ids of the vNICs bound to it
  std::shared_ptr<const VnicPolicy> policy;  // what those vNICs are published with
};

DataplaneState::DataplaneState(VnicTable* vnics, std::string state_path)
    : table_(vnics), path_(std::move(state_path)) {}
DataplaneState::~DataplaneState() = default;

Status DataplaneState::Compile(const v1::VNicRuleset& ruleset, const std::string& vnic_id,
                               const SetLookup& sets, std::unique_ptr<Compiled>* out) const {
  if (ruleset.excluded() &&
      (ruleset.rules_size() != 0 || ruleset.default_rule().action() != v1::ACTION_ALLOW)) {
    return Err("vNIC '" + vnic_id + "'",
               "an excluded ruleset carries no rules and the default rule ALLOW");
  }
  RulesetSpec spec;
  auto c = std::make_unique<Compiled>();
  if (auto st = RulesetSpecFromProto(ruleset, vnic_id, sets, &spec, &c->meta); !st.ok()) return st;
  if (auto st = c->compiler.Compile(spec); !st.ok()) {
    return Err("vNIC '" + vnic_id + "'", st.message());
  }
  for (const auto& as : spec.address_sets) c->set_ids.insert(as.id);
  c->default_action = spec.default_action;
  c->default_log = !ruleset.has_default_rule() || ruleset.default_rule().log() ||
                   spec.default_action != Action::kAllow;
  *out = std::move(c);
  return Status::Ok();
}

void DataplaneState::Refresh(Compiled* c) {
  auto pol = std::make_shared<VnicPolicy>();
  pol->ruleset = c->compiler.ruleset();
  pol->rules = c->meta;
  pol->default_action = c->default_action;
  pol->default_log = c->default_log;
  pol->generation = c->generation;
  pol->revision = revision_;
  c->policy = std::move(pol);
}

std::unique_ptr<VnicState> DataplaneState::BuildVnicState(const v1::DataplaneVNic& v) const {
  auto st = std::make_unique<VnicState>();
  st->id = v.id();
  st->local_id = static_cast<uint16_t>(v.local_id());
  ParseMac(v.mac(), st->mac);
  for (const auto& ip : v.bound_ips()) {
    auto p = IpPrefix::Parse(ip);
    if (!p) continue;  // validated in SetVnic
    if (p->family == Family::kV4) {
      st->bound_v4.push_back(static_cast<uint32_t>(p->addr.lo));
    } else {
      st->bound_v6.push_back(p->addr);
    }
  }
  st->IndexBoundV4();
  std::sort(st->bound_v6.begin(), st->bound_v6.end());
  auto b = by_vnic_.find(v.id());
  if (b != by_vnic_.end()) st->policy = b->second.compiled->policy;
  return st;
}

void DataplaneState::Publish(const std::set<std::string>& vnic_ids) {
  std::vector<std::unique_ptr<VnicState>> states;
  for (const auto& id : vnic_ids) {
    auto v = vnics_.find(id);
    if (v != vnics_.end()) states.push_back(BuildVnicState(v->second));
    // else: rules for a vNIC not plugged here (yet)
  }
  if (!states.empty()) table_->Publish(std::move(states));
}

void DataplaneState::RebuildRuleNames() {
  rule_names_.clear();
  for (const auto& [key, c] : shared_) {
    for (const auto& r : c->content.rules()) {
      rule_names_[r.rule_num()] = {r.policy_id(), r.rule_id()};
    }
  }
}

size_t DataplaneState::shared_rulesets() const {
  std::lock_guard<std::mutex> lock(mu_);
  return shared_.size();
}

std::vector<std::string> DataplaneState::ExcludedVnics() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> out;
  for (const auto& [vnic, b] : by_vnic_) {
    if (b.compiled && b.compiled->content.excluded()) out.push_back(vnic);
  }
  return out;
}

v1::HeldDigests DataplaneState::HeldDigests(uint64_t* revision) const {
  std::lock_guard<std::mutex> lock(mu_);
  *revision = revision_;
  v1::HeldDigests out;
  if (need_full_) return out;                     // it takes no delta: nothing to resume from
  std::map<const Compiled*, std::string> digest;  // one hash per shared ruleset
  for (const auto& [vnic, b] : by_vnic_) {
    if (!b.compiled) continue;
    auto [it, fresh] = digest.try_emplace(b.compiled);
    if (fresh) it->second = proto::RulesetDigest(b.compiled->content);
    auto* h = out.add_rulesets();
    h->set_id(vnic);
    h->set_digest(it->second);
  }
  for (const auto& [id, set] : sets_) {
    auto* h = out.add_address_sets();
    h->set_id(id);
    h->set_digest(proto::AddressSetDigest(set));
  }
  return out;
}

Status DataplaneState::SetVnic(const v1::DataplaneVNic& vnic) {
  std::lock_guard<std::mutex> lock(mu_);
  if (vnic.id().empty()) return Err("vnic.id", "must not be empty");
  return SetVnicLocked(vnic, "vnic '" + vnic.id() + "'");
}

Status DataplaneState::SetVnicLocked(const v1::DataplaneVNic& vnic, const std::string& f) {
  if (vnic.id().empty()) return Err(f + ".id", "must not be empty");
  if (vnic.local_id() < 1 || vnic.local_id() > kMaxLocalId) {
    return Err(f + ".local_id", std::to_string(vnic.local_id()) + " is not within 1..2047");
  }
  uint8_t mac[6];
  if (!ParseMac(vnic.mac(), mac))
    return Err(f + ".mac", "'" + vnic.mac() + "' is not a MAC address");
  // Spoofguard trusts this MAC as the VM's own source: a group address or
  // the all-zero one is no VM's.
  if (mac[0] & 1) return Err(f + ".mac", MacText(mac) + " is a multicast address");
  if (std::all_of(mac, mac + 6, [](uint8_t b) { return b == 0; }))
    return Err(f + ".mac", MacText(mac) + " is the all-zero address");
  std::vector<IpPrefix> ips;
  for (int i = 0; i < vnic.bound_ips_size(); ++i) {
    auto p = IpPrefix::Parse(vnic.bound_ips(i));
    if (!p || p->len != (p->family == Family::kV4 ? 32 : 128)) {
      return Err(f + ".bound_ips[" + std::to_string(i) + "]",
                 "'" + vnic.bound_ips(i) + "' is not one address");
    }
    ips.push_back(*p);
  }
  // The steering id, the MAC and each address belong to one vNIC here: two
  // vNICs with one address could each send as the other.
  for (const auto& [id, other] : vnics_) {
    if (id == vnic.id()) continue;
    if (other.local_id() == vnic.local_id()) {
      return Err(f + ".local_id",
                 std::to_string(vnic.local_id()) + " is used by vNIC '" + id + "'");
    }
    uint8_t other_mac[6];
    if (ParseMac(other.mac(), other_mac) && std::equal(mac, mac + 6, other_mac))
      return Err(f + ".mac", MacText(mac) + " is bound to vNIC '" + id + "'");
    for (const auto& ip : other.bound_ips()) {
      auto p = IpPrefix::Parse(ip);
      if (!p) continue;
      for (size_t i = 0; i < ips.size(); ++i) {
        if (ips[i].family == p->family && ips[i].addr == p->addr) {
          return Err(f + ".bound_ips[" + std::to_string(i) + "]",
                     vnic.bound_ips(static_cast<int>(i)) + " is bound to vNIC '" + id + "'");
        }
      }
    }
  }
  auto old = vnics_.find(vnic.id());
  if (old != vnics_.end() && old->second.local_id() != vnic.local_id()) {
    table_->Remove(static_cast<uint16_t>(old->second.local_id()));
  }
  vnics_[vnic.id()] = vnic;
  Publish({vnic.id()});
  return Persist();
}

Status DataplaneState::RemoveVnic(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = vnics_.find(id);
  if (it == vnics_.end()) return Err("vnic '" + id + "'", "not known here");
  table_->Remove(static_cast<uint16_t>(it->second.local_id()));
  vnics_.erase(it);
  return Persist();
}

Status DataplaneState::ApplyFull(const v1::HostDesiredState& state) {
  std::vector<FullEntry> entries;
  entries.reserve(static_cast<size_t>(state.rulesets_size()));
  for (int i = 0; i < state.rulesets_size(); ++i) {
    const auto& rs = state.rulesets(i);
    entries.push_back({&rs, rs.vnic_id(), rs.revision(), "rulesets[" + std::to_string(i) + "]"});
  }
  std::lock_guard<std::mutex> lock(mu_);
  return ApplyFullLocked(state.revision(), state.address_sets(), entries);
}

Status DataplaneState::ApplyFullLocked(
    uint64_t revision, const google::protobuf::RepeatedPtrField<v1::AddressSet>& sets_in,
    const std::vector<FullEntry>& entries) {
  // A full state replaces whatever is held, also at a lower revision: the
  // controller sends one exactly when the host's revision proves nothing (a
  // first contact, its own restart, a store restored from a backup whose
  // revisions restarted lower). Refusing it would leave this host enforcing
  // a policy nobody wants any more. Only the last revision is reserved.
  if (revision == kMaxRevision) {
    return Err("revision", std::to_string(revision) + " is reserved (no delta could follow it)");
  }
  std::map<std::string, size_t> seen;
  for (size_t i = 0; i < entries.size(); ++i) {
    const FullEntry& e = entries[i];
    if (e.vnic_id.empty()) return Err(e.field + ".vnic_id", "must not be empty");
    if (auto [it, fresh] = seen.emplace(e.vnic_id, i); !fresh) {
      return Err(e.field + ".vnic_id",
                 "'" + e.vnic_id + "' appears twice (also " + entries[it->second].field + ")");
    }
  }
  if (auto st = CheckIds(sets_in, "address_sets", "id",
                         [](const v1::AddressSet& a) -> const std::string& { return a.id(); });
      !st.ok()) {
    return st;
  }
  std::map<std::string, v1::AddressSet> sets;
  std::vector<IpPrefix> prefixes;
  for (const auto& set : sets_in) {
    if (auto st = ParsePrefixes(set, &prefixes); !st.ok()) return st;
    sets[set.id()] = set;
  }
  const SetLookup lookup = [&sets](const std::string& id) -> const v1::AddressSet* {
    auto it = sets.find(id);
    return it == sets.end() ? nullptr : &it->second;
  };
  // Each distinct ruleset compiled once, afresh (nothing held is reused: a
  // full state also repairs whatever a failed delta left).
  std::map<std::string, std::unique_ptr<Compiled>> shared;
  std::map<std::string, Binding> by_vnic;
  for (const FullEntry& e : entries) {
    std::string key = proto::RulesetContentKey(*e.ruleset);
    auto it = shared.find(key);
    if (it == shared.end()) {
      std::unique_ptr<Compiled> c;
      if (auto st = Compile(*e.ruleset, e.vnic_id, lookup, &c); !st.ok()) return st;
      c->content = SharedContent(*e.ruleset);
      it = shared.emplace(std::move(key), std::move(c)).first;
    }
    it->second->vnics.insert(e.vnic_id);
    by_vnic[e.vnic_id] = Binding{it->second.get(), e.revision};
  }
  // All compiled: swap in and publish.
  if (revision < revision_) {
    std::fprintf(stderr,
                 "dfw-dataplane: a full state at revision %llu replaces revision %llu (the "
                 "revision goes back)\n",
                 static_cast<unsigned long long>(revision),
                 static_cast<unsigned long long>(revision_));
  }
  revision_ = revision;
  sets_ = std::move(sets);
  std::set<std::string> touched;
  for (const auto& [id, b] : by_vnic_) touched.insert(id);
  for (const auto& [id, b] : by_vnic) touched.insert(id);
  // The old compiled rulesets go; their Rulesets live on in the published
  // policies until Publish replaces those.
  shared_ = std::move(shared);
  by_vnic_ = std::move(by_vnic);
  for (auto& [key, c] : shared_) {
    c->generation = NextGeneration();
    Refresh(c.get());
  }
  need_full_ = false;
  RebuildRuleNames();
  Publish(touched);
  return Persist();
}

Status DataplaneState::ApplyDelta(const v1::HostDelta& d) {
  std::lock_guard<std::mutex> lock(mu_);
  if (need_full_) {
    return Err("delta", "from_revision " + std::to_string(d.from_revision()) +
                            ": an earlier delta failed halfway; send the full state");
  }
  if (d.from_revision() != revision_) {
    return Err("delta", "from_revision " + std::to_string(d.from_revision()) +
                            " does not match the applied revision " + std::to_string(revision_) +
                            "; send the full state");
  }
  // Forward only: a delta never takes the revision back (a full state may),
  // and the last revision is reserved, so no delta wraps.
  if (d.to_revision() <= d.from_revision()) {
    return Err("delta.to_revision", std::to_string(d.to_revision()) + " is not above " +
                                        std::to_string(d.from_revision()) +
                                        ", the revision it is from");
  }
  if (d.to_revision() == kMaxRevision) {
    return Err("delta.to_revision",
               std::to_string(d.to_revision()) + " is reserved (no delta could follow it)");
  }
  if (auto st = CheckRulesetAndSetIds(d.rulesets_set(), "delta.rulesets_set", d.address_sets_set(),
                                      "delta.address_sets_set");
      !st.ok()) {
    return st;
  }

  // 1. The new content of each changed address set, checked. Nothing held is
  //    copied: `current` sees the held sets through the changes.
  struct SetChange {
    bool removed = false;
    v1::AddressSet set;
    std::vector<IpPrefix> prefixes;
  };
  std::map<std::string, SetChange> changes;
  auto current = [&](const std::string& id) -> const v1::AddressSet* {
    auto c = changes.find(id);
    if (c != changes.end()) return c->second.removed ? nullptr : &c->second.set;
    auto s = sets_.find(id);
    return s == sets_.end() ? nullptr : &s->second;
  };
  for (const auto& set : d.address_sets_set()) changes[set.id()] = SetChange{false, set, {}};
  for (const auto& sd : d.address_set_deltas()) {
    const v1::AddressSet* cur = current(sd.id());
    if (!cur) return Err("address_set_deltas '" + sd.id() + "'", "unknown address set");
    std::set<std::string> next(cur->prefixes().begin(), cur->prefixes().end());
    for (const auto& p : sd.removed()) next.erase(p);
    for (const auto& p : sd.added()) next.insert(p);
    v1::AddressSet set;
    set.set_id(sd.id());
    for (const auto& p : next) set.add_prefixes(p);
    changes[sd.id()] = SetChange{false, std::move(set), {}};
  }
  for (const auto& id : d.address_sets_removed()) changes[id] = SetChange{true, {}, {}};
  for (auto& [id, ch] : changes) {
    if (ch.removed) continue;
    if (auto st = ParsePrefixes(ch.set, &ch.prefixes); !st.ok()) return st;
  }

  // 2. The vNICs whose ruleset is set or removed, and the compiled ruleset
  //    each gets: one held with the same content (shared), or compiled now
  //    against the new sets.
  std::map<std::string, std::unique_ptr<Compiled>> fresh;  // by content key
  std::map<std::string, Binding> rebound;                  // compiled null: removed
  for (const auto& rs : d.rulesets_set()) {
    std::string key = proto::RulesetContentKey(rs);
    Compiled* c = nullptr;
    if (auto held = shared_.find(key); held != shared_.end()) {
      c = held->second.get();
    } else if (auto f = fresh.find(key); f != fresh.end()) {
      c = f->second.get();
    } else {
      std::unique_ptr<Compiled> n;
      if (auto st = Compile(rs, rs.vnic_id(), current, &n); !st.ok()) return st;
      n->content = SharedContent(rs);
      c = n.get();
      fresh.emplace(std::move(key), std::move(n));
    }
    rebound[rs.vnic_id()] = Binding{c, rs.revision()};
  }
  for (const auto& id : d.rulesets_removed()) rebound[id] = Binding{};

  // 3. The held rulesets that still have a vNIC after the delta and name a
  //    changed set: each is updated once, in place, below. One that names a
  //    removed set is refused here, before anything changed.
  std::map<Compiled*, size_t> users;
  for (const auto& [key, c] : shared_) users[c.get()] = c->vnics.size();
  for (const auto& [id, b] : rebound) {
    if (auto old = by_vnic_.find(id); old != by_vnic_.end()) --users[old->second.compiled];
    if (auto u = users.find(b.compiled); b.compiled && u != users.end()) ++u->second;
  }
  auto some_vnic = [&](const Compiled* c) {
    for (const auto& id : c->vnics) {
      auto r = rebound.find(id);
      if (r == rebound.end() || r->second.compiled == c) return id;
    }
    for (const auto& [id, b] : rebound) {
      if (b.compiled == c) return id;
    }
    return std::string();
  };
  std::vector<Compiled*> to_update;
  for (const auto& [c, n] : users) {
    if (n == 0) continue;
    bool named = false;
    for (const auto& id : c->set_ids) {
      auto ch = changes.find(id);
      if (ch == changes.end()) continue;
      if (ch->second.removed) {
        return Err("delta.address_sets_removed",
                   "'" + id + "' is still named by the rules of vNIC '" + some_vnic(c) + "'");
      }
      named = true;
    }
    if (named) to_update.push_back(c);
  }

  // 4. Nothing is refused past this point. The incremental updates change the
  //    held compilers; should one fail (never expected), deltas are refused
  //    until a full state, and what was published stays in force.
  std::set<Compiled*> refresh;
  for (Compiled* c : to_update) {
    const Ruleset* before = c->compiler.ruleset().get();
    for (const auto& id : c->set_ids) {
      auto ch = changes.find(id);
      if (ch == changes.end()) continue;
      if (auto st = c->compiler.UpdateAddressSet(id, ch->second.prefixes); !st.ok()) {
        need_full_ = true;
        return Err("address set '" + id + "'",
                   st.message() + " (incremental update of vNIC '" + some_vnic(c) +
                       "''s rules failed: every vNIC keeps its policy; send the full state)");
      }
    }
    if (c->compiler.ruleset().get() != before) refresh.insert(c);
  }

  // 5. Commit and publish: the vNICs rebound, and those of every ruleset
  //    that changed.
  revision_ = d.to_revision();
  for (auto& [id, ch] : changes) {
    if (ch.removed) {
      sets_.erase(id);
    } else {
      sets_[id] = std::move(ch.set);
    }
  }
  for (auto& [key, c] : fresh) {
    refresh.insert(c.get());
    for (const auto& r : c->content.rules())
      rule_names_[r.rule_num()] = {r.policy_id(), r.rule_id()};
  }
  shared_.merge(fresh);
  std::set<std::string> touched;
  for (const auto& [id, b] : rebound) {
    if (auto old = by_vnic_.find(id); old != by_vnic_.end()) {
      old->second.compiled->vnics.erase(id);
      by_vnic_.erase(old);
    }
    if (b.compiled) {
      b.compiled->vnics.insert(id);
      by_vnic_[id] = b;
    }
    touched.insert(id);
  }
  for (Compiled* c : refresh) {
    c->generation = NextGeneration();
    Refresh(c);
    touched.insert(c->vnics.begin(), c->vnics.end());
  }
  // Rulesets no vNIC has any more.
  std::erase_if(shared_, [](const auto& kv) { return kv.second->vnics.empty(); });
  Publish(touched);
  return Persist();
}

uint32_t DataplaneState::NextGeneration() {
  if (next_generation_ == 0 || next_generation_ == kConnGenerationImported) next_generation_ = 1;
  return next_generation_++;
}

bool DataplaneState::restored() const {
  std::lock_guard<std::mutex> lock(mu_);
  return restored_;
}

uint64_t DataplaneState::applied_revision() const {
  std::lock_guard<std::mutex> lock(mu_);
  return revision_;
}

std::string DataplaneState::VnicIdOf(uint16_t local_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [id, v] : vnics_) {
    if (v.local_id() == local_id) return id;
  }
  return "";
}

std::vector<v1::DataplaneVNic> DataplaneState::Vnics() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<v1::DataplaneVNic> out;
  for (const auto& [id, v] : vnics_) out.push_back(v);
  return out;
}

std::pair<std::string, std::string> DataplaneState::RuleOf(uint32_t rule_num) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = rule_names_.find(rule_num);
  return it == rule_names_.end() ? std::pair<std::string, std::string>{} : it->second;
}

Status DataplaneState::Persist() const {
  if (path_.empty() || loading_) return Status::Ok();
  v1::DataplanePersistedState ps;
  for (const auto& [id, v] : vnics_) *ps.add_vnics() = v;
  auto* st = ps.mutable_state();
  st->set_revision(revision_);
  for (const auto& [id, s] : sets_) *st->add_address_sets() = s;
  // Each distinct ruleset once, with the vNICs that enforce it.
  for (const auto& [key, c] : shared_) {
    auto* pr = ps.add_shared_rulesets();
    *pr->mutable_ruleset() = c->content;
    for (const auto& id : c->vnics) {
      pr->add_vnic_ids(id);
      pr->add_revisions(by_vnic_.at(id).revision);
    }
  }
  std::string data;
  if (!ps.SerializeToString(&data)) return Err(path_, "cannot serialize the state");
  return WriteFileDurably(path_, data);
}

Status DataplaneState::Load() {
  if (path_.empty()) return Status::Ok();
  std::string data;
  bool missing = false;
  if (Status st = ReadSmallFile(path_, kMaxStateFileBytes, "a saved state", &data, &missing);
      !st.ok())
    return st;
  if (missing) return Status::Ok();  // first start
  v1::DataplanePersistedState ps;
  if (!ps.ParseFromString(data)) return Err(path_, "is not a dataplane state file");
  // Nothing is written while loading: a file refused halfway (its rulesets,
  // after its vNICs) stays as it was for the operator to look at.
  {
    std::lock_guard<std::mutex> lock(mu_);
    loading_ = true;
  }
  Status st = LoadParsed(ps);
  std::lock_guard<std::mutex> lock(mu_);
  loading_ = false;
  restored_ = st.ok();
  return st;
}

Status DataplaneState::LoadParsed(const v1::DataplanePersistedState& ps) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    std::set<std::string> ids;
    for (int i = 0; i < ps.vnics_size(); ++i) {
      const std::string f = "vnics[" + std::to_string(i) + "]";
      if (!ids.insert(ps.vnics(i).id()).second)
        return Err(path_, f + ".id: '" + ps.vnics(i).id() + "' appears twice");
      if (auto st = SetVnicLocked(ps.vnics(i), f); !st.ok()) return Err(path_, st.message());
    }
  }
  // The rulesets: one per vNIC (files written before shared_rulesets) and
  // the shared ones, each with its vNICs.
  std::vector<FullEntry> entries;
  for (int i = 0; i < ps.state().rulesets_size(); ++i) {
    const auto& rs = ps.state().rulesets(i);
    entries.push_back(
        {&rs, rs.vnic_id(), rs.revision(), "state.rulesets[" + std::to_string(i) + "]"});
  }
  for (int i = 0; i < ps.shared_rulesets_size(); ++i) {
    const auto& pr = ps.shared_rulesets(i);
    for (int j = 0; j < pr.vnic_ids_size(); ++j) {
      entries.push_back(
          {&pr.ruleset(), pr.vnic_ids(j), j < pr.revisions_size() ? pr.revisions(j) : 0,
           "shared_rulesets[" + std::to_string(i) + "].vnic_ids[" + std::to_string(j) + "]"});
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (Status st = ApplyFullLocked(ps.state().revision(), ps.state().address_sets(), entries);
      !st.ok()) {
    return Err(path_, st.message());
  }
  return Status::Ok();
}

}  // namespace dfw::dataplane
