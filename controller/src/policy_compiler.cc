#include "dfw/controller/policy_compiler.h"

#include <algorithm>
#include <tuple>

#include "dfw/proto/state_digest.h"
#include "str_util.h"

namespace dfw::controller {

struct PolicyCompiler::RuleEntry {
  std::tuple<int, int, std::string, int> order;  // category, priority, policy, index
  dfw::v1::CompiledRule compiled;
  std::vector<std::string> set_ids;     // address sets the rule names
  std::vector<std::string> applied_to;  // groups; empty with all == true: every vNIC
  bool all = false;
};

struct PolicyCompiler::VNicRules {
  std::vector<std::shared_ptr<const RuleEntry>> rules;  // evaluation order
  uint64_t revision = 0;
  bool excluded = false;  // on the exclusion list: no rules, default ALLOW
};

struct PolicyCompiler::PolicyEntry {
  dfw::v1::Policy policy;
  std::vector<std::shared_ptr<const RuleEntry>> rules;
  std::vector<std::string> literal_set_ids;
  // Each literal set's canonical prefixes (parallel to literal_set_ids).
  std::vector<std::shared_ptr<const std::vector<std::string>>> literal_texts;
};

namespace {

std::string NumKey(const std::string& policy, const std::string& rule) {
  std::string k = policy;
  k.push_back('\0');
  k.append(rule);
  return k;
}

void Insert(std::vector<std::string>* v, const std::string& s) {
  if (std::find(v->begin(), v->end(), s) == v->end()) v->push_back(s);
}

}  // namespace

PolicyCompiler::PolicyCompiler(const tagging::MembershipIndex* index) : index_(index) {
  default_rule_.set_action(dfw::v1::ACTION_DROP);
}
PolicyCompiler::~PolicyCompiler() = default;

void PolicyCompiler::Load(const std::vector<dfw::v1::Policy>& policies,
                          const std::vector<std::pair<std::string, uint32_t>>& rule_nums,
                          uint32_t next_rule_num, const std::vector<tagging::VmSpec>& vms,
                          uint64_t revision) {
  for (const auto& [k, n] : rule_nums) rule_nums_[k] = n;
  next_rule_num_ = std::max<uint32_t>(next_rule_num, 1);
  for (const auto& g : index_->GroupIds()) {
    auto m = index_->Members(g);
    if (!m.ok()) continue;
    for (const auto& v : m->vnic_ids) vnic_groups_[v].insert(g);
  }
  ChangeFanout ignored;
  for (const auto& vm : vms) OnVmChanged(nullptr, &vm, &ignored);
  for (const auto& p : policies) {
    AllocateRuleNums(p);
    UpsertPolicy(p, &ignored);
  }
  dirty_vnics_.clear();
  for (const auto& [v, h] : vnic_host_) dirty_vnics_.insert(v);
  Flush(revision, &ignored);
}

std::vector<std::pair<std::string, uint32_t>> PolicyCompiler::AllocateRuleNums(
    const dfw::v1::Policy& p) {
  std::vector<std::pair<std::string, uint32_t>> fresh;
  for (const auto& r : p.rules()) {
    std::string k = NumKey(p.id(), r.id());
    if (rule_nums_.count(k)) continue;
    rule_nums_[k] = next_rule_num_;
    fresh.emplace_back(k, next_rule_num_);
    ++next_rule_num_;
  }
  return fresh;
}

void PolicyCompiler::ForgetRuleNums(const std::vector<std::pair<std::string, uint32_t>>& fresh) {
  for (const auto& [k, n] : fresh) rule_nums_.erase(k);
  if (!fresh.empty()) next_rule_num_ = fresh.front().second;
}

void PolicyCompiler::AdoptRuleNum(const std::string& key, uint32_t num) { rule_nums_[key] = num; }

void PolicyCompiler::AdoptNextRuleNum(uint32_t next) {
  next_rule_num_ = std::max<uint32_t>(next, 1);
}

void PolicyCompiler::OnVmChanged(const tagging::VmSpec* before, const tagging::VmSpec* after,
                                 ChangeFanout* out) {
  auto host_of = [](const tagging::VmSpec* vm, const std::string& vnic) -> const std::string* {
    if (!vm) return nullptr;
    for (const auto& n : vm->vnics) {
      if (n.id == vnic) return &vm->host;
    }
    return nullptr;
  };
  if (before) {
    for (const auto& n : before->vnics) {
      const std::string* nh = host_of(after, n.id);
      if (nh && *nh == before->host) continue;
      auto it = host_vnics_.find(before->host);
      if (it != host_vnics_.end()) {
        it->second.erase(n.id);
        if (it->second.empty()) host_vnics_.erase(it);
      }
      vnic_host_.erase(n.id);
      Detach(n.id, out);
    }
    for (const auto& n : before->vnics) {
      auto it = vnic_vm_.find(n.id);
      if (it != vnic_vm_.end() && it->second == before->id) vnic_vm_.erase(it);
    }
  }
  if (after) {
    for (const auto& n : after->vnics) vnic_vm_[n.id] = after->id;
  }
  if (after && !after->host.empty()) {
    for (const auto& n : after->vnics) {
      vnic_host_[n.id] = after->host;
      host_vnics_[after->host].insert(n.id);
      dirty_vnics_.insert(n.id);
    }
  }
}

std::vector<std::shared_ptr<const PolicyCompiler::RuleEntry>> PolicyCompiler::RulesOf(
    const absl::flat_hash_set<std::string>* groups) const {
  std::vector<std::shared_ptr<const RuleEntry>> rules = all_vnics_rules_;
  if (groups != nullptr) {
    for (const auto& g : *groups) {
      auto bg = by_group_.find(g);
      if (bg != by_group_.end()) rules.insert(rules.end(), bg->second.begin(), bg->second.end());
    }
  }
  std::sort(rules.begin(), rules.end(),
            [](const auto& a, const auto& b) { return a->order < b->order; });
  rules.erase(std::unique(rules.begin(), rules.end()), rules.end());
  return rules;
}

void PolicyCompiler::SetExclusion(bool vm, const std::string& id, bool excluded) {
  auto& set = vm ? excluded_vms_ : excluded_vnic_ids_;
  if (excluded ? !set.insert(id).second : set.erase(id) == 0) return;
  for (auto& v : VnicsCovered(vm, id)) dirty_vnics_.insert(std::move(v));
}

bool PolicyCompiler::IsExcluded(const std::string& vnic_id) const {
  if (excluded_vnic_ids_.contains(vnic_id)) return true;
  if (excluded_vms_.empty()) return false;
  auto it = vnic_vm_.find(vnic_id);
  return it != vnic_vm_.end() && excluded_vms_.contains(it->second);
}

std::vector<std::string> PolicyCompiler::VnicsCovered(bool vm, const std::string& id) const {
  std::vector<std::string> out;
  if (!vm) {
    if (vnic_vm_.contains(id)) out.push_back(id);
    return out;
  }
  for (const auto& [v, owner] : vnic_vm_) {  // rare (an exclusion change): a scan
    if (owner == id) out.push_back(v);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string PolicyCompiler::HostOfVnic(const std::string& id) const {
  auto it = vnic_host_.find(id);
  return it == vnic_host_.end() ? std::string() : it->second;
}

size_t PolicyCompiler::excluded_vnics() const {
  if (excluded_vms_.empty() && excluded_vnic_ids_.empty()) return 0;
  size_t n = 0;
  for (const auto& [v, owner] : vnic_vm_) n += IsExcluded(v);
  return n;
}

void PolicyCompiler::OnMembershipDelta(const tagging::MembershipDelta& delta) {
  for (const auto& gd : delta.groups) {
    bool applied = by_group_.contains(gd.group_id);
    for (const auto& v : gd.vnics_added) {
      vnic_groups_[v].insert(gd.group_id);
      if (applied) dirty_vnics_.insert(v);
    }
    for (const auto& v : gd.vnics_removed) {
      auto it = vnic_groups_.find(v);
      if (it != vnic_groups_.end()) {
        it->second.erase(gd.group_id);
        if (it->second.empty()) vnic_groups_.erase(it);
      }
      if (applied) dirty_vnics_.insert(v);
    }
    if (!gd.addresses_added.empty() || !gd.addresses_removed.empty() || gd.group_deleted) {
      std::lock_guard<std::mutex> l(cache_mu_);
      group_addr_cache_.erase(gd.group_id);
    }
    if (gd.group_deleted) journals_.erase("g:" + gd.group_id);
    if (gd.addresses_added.empty() && gd.addresses_removed.empty()) continue;
    auto& pd = pending_set_deltas_["g:" + gd.group_id];
    for (const auto& a : gd.addresses_added) {
      if (!pd.removed.erase(a)) pd.added.insert(a);
    }
    for (const auto& a : gd.addresses_removed) {
      if (!pd.added.erase(a)) pd.removed.insert(a);
    }
  }
}

std::vector<std::string> PolicyCompiler::AffectedVnics(const PolicyEntry& pe) const {
  std::vector<std::string> out;
  std::set<std::string> groups;
  for (const auto& r : pe.rules) {
    if (r->all) {
      for (const auto& [v, h] : vnic_host_) out.push_back(v);
      return out;
    }
    groups.insert(r->applied_to.begin(), r->applied_to.end());
  }
  for (const auto& g : groups) {
    auto m = index_->Members(g);
    if (!m.ok()) continue;
    out.insert(out.end(), m->vnic_ids.begin(), m->vnic_ids.end());
  }
  return out;
}

std::unique_ptr<PolicyCompiler::PolicyEntry> PolicyCompiler::Compile(
    const dfw::v1::Policy& p) const {
  auto pe = std::make_unique<PolicyEntry>();
  pe->policy = p;
  for (int i = 0; i < p.rules_size(); ++i) {
    const auto& r = p.rules(i);
    if (r.disabled()) continue;
    auto e = std::make_shared<RuleEntry>();
    e->order = {static_cast<int>(p.category()), p.priority(), p.id(), i};
    auto& c = e->compiled;
    auto num = rule_nums_.find(NumKey(p.id(), r.id()));
    c.set_rule_num(num == rule_nums_.end() ? 0 : num->second);
    c.set_policy_id(p.id());
    c.set_rule_id(r.id());
    auto compile_ep = [&](const dfw::v1::Endpoints& ep, const char* side,
                          dfw::v1::CompiledEndpoints* ce) {
      ce->set_any(ep.any());
      ce->set_negate(ep.negate());
      for (const auto& g : ep.group_ids()) {
        std::string id = "g:" + g;
        ce->add_address_set_ids(id);
        Insert(&e->set_ids, id);
      }
      if (ep.ip_prefixes_size() > 0) {
        std::vector<tagging::IpPrefix> pre;
        for (const auto& s : ep.ip_prefixes()) {
          auto parsed = tagging::IpPrefix::Parse(s);
          if (parsed.ok()) pre.push_back(*parsed);
        }
        std::sort(pre.begin(), pre.end());
        pre.erase(std::unique(pre.begin(), pre.end()), pre.end());
        auto text = std::make_shared<std::vector<std::string>>();
        for (const auto& x : pre) text->push_back(x.ToString());
        std::string id = Cat("r:", p.id(), "/", r.id(), "/", side);
        ce->add_address_set_ids(id);
        Insert(&e->set_ids, id);
        pe->literal_set_ids.push_back(id);
        pe->literal_texts.push_back(std::move(text));
      }
    };
    compile_ep(r.sources(), "src", c.mutable_sources());
    compile_ep(r.destinations(), "dst", c.mutable_destinations());
    *c.mutable_services() = r.services();
    c.set_direction(r.direction() == dfw::v1::DIRECTION_UNSPECIFIED ? dfw::v1::DIRECTION_BOTH
                                                                    : r.direction());
    c.set_action(r.action());
    c.set_log(r.log());
    c.set_stateful(p.stateful());
    c.set_mode(p.mode() == dfw::v1::POLICY_MODE_UNSPECIFIED ? dfw::v1::POLICY_MODE_ENFORCE
                                                            : p.mode());
    c.set_on_change(p.on_change() == dfw::v1::ON_CHANGE_UNSPECIFIED ? dfw::v1::ON_CHANGE_KEEP
                                                                    : p.on_change());
    if (r.applied_to_group_ids_size() > 0) {
      for (const auto& g : r.applied_to_group_ids()) Insert(&e->applied_to, g);
    } else if (p.applied_to_group_ids_size() > 0) {
      for (const auto& g : p.applied_to_group_ids()) Insert(&e->applied_to, g);
    } else {
      for (const auto& g : r.sources().group_ids()) Insert(&e->applied_to, g);
      for (const auto& g : r.destinations().group_ids()) Insert(&e->applied_to, g);
    }
    e->all = e->applied_to.empty();
    pe->rules.push_back(std::move(e));
  }
  return pe;
}

void PolicyCompiler::UpsertPolicy(const dfw::v1::Policy& p, ChangeFanout* out) {
  (void)out;
  std::unique_ptr<PolicyEntry> pe = Compile(p);
  for (size_t i = 0; i < pe->literal_set_ids.size(); ++i) {
    const std::string& id = pe->literal_set_ids[i];
    auto old = literal_sets_.find(id);
    if (old == literal_sets_.end() || *old->second != *pe->literal_texts[i]) {
      changed_literal_sets_.insert(id);
    }
    literal_sets_[id] = pe->literal_texts[i];
  }

  auto old = policies_.find(p.id());
  std::vector<std::string> affected = AffectedVnics(*pe);
  if (old != policies_.end()) {
    auto more = AffectedVnics(*old->second);
    affected.insert(affected.end(), more.begin(), more.end());
    for (const auto& id : old->second->literal_set_ids) {
      if (std::find(pe->literal_set_ids.begin(), pe->literal_set_ids.end(), id) ==
          pe->literal_set_ids.end()) {
        literal_sets_.erase(id);
      }
    }
  }
  RemovePolicy(p.id(), nullptr);  // unindexes the old entries (no literal cleanup needed now)
  for (const auto& e : pe->rules) {
    if (e->all) {
      all_vnics_rules_.push_back(e);
    } else {
      for (const auto& g : e->applied_to) by_group_[g].push_back(e);
    }
  }
  policies_[p.id()] = std::move(pe);
  for (auto& v : affected) dirty_vnics_.insert(std::move(v));
}

void PolicyCompiler::RemovePolicy(const std::string& policy_id, ChangeFanout* out,
                                  bool forget_rule_nums) {
  auto it = policies_.find(policy_id);
  if (it == policies_.end()) return;
  const PolicyEntry& pe = *it->second;
  if (out != nullptr) {  // a real removal: mark its vNICs, drop its literal sets
    for (auto& v : AffectedVnics(pe)) dirty_vnics_.insert(std::move(v));
    for (const auto& id : pe.literal_set_ids) literal_sets_.erase(id);
  }
  auto owned = [&](const std::shared_ptr<const RuleEntry>& e) {
    return std::get<2>(e->order) == policy_id;
  };
  for (const auto& e : pe.rules) {
    if (e->all) {
      std::erase_if(all_vnics_rules_, owned);
      continue;
    }
    for (const auto& g : e->applied_to) {
      auto bg = by_group_.find(g);
      if (bg == by_group_.end()) continue;
      std::erase_if(bg->second, owned);
      if (bg->second.empty()) by_group_.erase(bg);
    }
  }
  if (out != nullptr && forget_rule_nums) {
    for (const auto& r : pe.policy.rules()) rule_nums_.erase(NumKey(policy_id, r.id()));
  }
  policies_.erase(it);
}

void PolicyCompiler::Detach(const std::string& vnic, ChangeFanout* out) {
  auto it = vnic_rules_.find(vnic);
  if (it == vnic_rules_.end()) return;
  auto ah = vnic_attached_host_.find(vnic);
  std::string host = ah->second;
  DropRefs(host, *it->second, out);
  auto& hc = (*out)[host];
  hc.rulesets_set.erase(vnic);
  hc.rulesets_removed.insert(vnic);
  vnic_rules_.erase(it);
  vnic_attached_host_.erase(ah);
}

void PolicyCompiler::AddRefs(const std::string& host, const VNicRules& r, ChangeFanout* out) {
  auto& refs = host_set_refs_[host];
  for (const auto& e : r.rules) {
    for (const auto& id : e->set_ids) {
      if (++refs[id] != 1) continue;
      set_hosts_[id].insert(host);
      auto& hc = (*out)[host];
      hc.sets_removed.erase(id);
      hc.sets_full.insert(id);
    }
  }
}

void PolicyCompiler::DropRefs(const std::string& host, const VNicRules& r, ChangeFanout* out) {
  auto hr = host_set_refs_.find(host);
  if (hr == host_set_refs_.end()) return;
  for (const auto& e : r.rules) {
    for (const auto& id : e->set_ids) {
      auto it = hr->second.find(id);
      if (it == hr->second.end() || --it->second != 0) continue;
      hr->second.erase(it);
      auto sh = set_hosts_.find(id);
      if (sh != set_hosts_.end()) {
        sh->second.erase(host);
        if (sh->second.empty()) set_hosts_.erase(sh);
      }
      auto& hc = (*out)[host];
      hc.sets_full.erase(id);
      hc.sets_removed.insert(id);
    }
  }
  if (hr->second.empty()) host_set_refs_.erase(hr);
}

void PolicyCompiler::Recompute(const std::string& vnic, uint64_t revision, ChangeFanout* out) {
  auto hit = vnic_host_.find(vnic);
  if (hit == vnic_host_.end() || hit->second.empty()) {
    Detach(vnic, out);
    return;
  }
  const std::string& host = hit->second;
  const bool excluded = IsExcluded(vnic);
  std::vector<std::shared_ptr<const RuleEntry>> rules;
  if (!excluded) {
    auto gi = vnic_groups_.find(vnic);
    rules = RulesOf(gi == vnic_groups_.end() ? nullptr : &gi->second);
  }

  auto old = vnic_rules_.find(vnic);
  if (old != vnic_rules_.end()) {
    const std::string& ah = vnic_attached_host_[vnic];
    if (ah == host && old->second->rules == rules && old->second->excluded == excluded) return;
    Detach(vnic, out);
  }
  auto nr = std::make_shared<VNicRules>();
  nr->rules = std::move(rules);
  nr->revision = revision;
  nr->excluded = excluded;
  AddRefs(host, *nr, out);
  vnic_rules_[vnic] = nr;
  vnic_attached_host_[vnic] = host;
  auto& hc = (*out)[host];
  hc.rulesets_removed.erase(vnic);
  hc.rulesets_set.insert(vnic);
}

void PolicyCompiler::Flush(uint64_t revision, ChangeFanout* out) {
  for (const auto& v : dirty_vnics_) Recompute(v, revision, out);
  dirty_vnics_.clear();
  for (auto& [id, d] : pending_set_deltas_) {
    if (d.added.empty() && d.removed.empty()) continue;
    auto& j = journals_[id];
    j.entries.emplace_back(revision, std::make_shared<const HostChanges::SetDelta>(std::move(d)));
    j.last_change = revision;
    while (j.entries.size() > kJournalEntries) {
      j.complete_after = j.entries.front().first;
      j.entries.pop_front();
    }
    auto sh = set_hosts_.find(id);
    if (sh == set_hosts_.end()) continue;
    for (const auto& h : sh->second) (*out)[h].sets_touched.insert(id);
  }
  pending_set_deltas_.clear();
  for (const auto& id : changed_literal_sets_) {
    auto sh = set_hosts_.find(id);
    if (sh == set_hosts_.end()) continue;
    for (const auto& h : sh->second) (*out)[h].sets_full.insert(id);
  }
  changed_literal_sets_.clear();
  std::erase_if(*out, [](const auto& kv) { return kv.second.empty(); });
}

std::shared_ptr<const std::vector<std::string>> PolicyCompiler::SetContents(
    const std::string& set_id) const {
  if (set_id.rfind("g:", 0) == 0) {
    std::string g = set_id.substr(2);
    {
      std::lock_guard<std::mutex> l(cache_mu_);
      auto c = group_addr_cache_.find(g);
      if (c != group_addr_cache_.end()) return c->second;
    }
    auto v = std::make_shared<std::vector<std::string>>();
    auto m = index_->Members(g);
    if (m.ok()) {
      v->reserve(m->addresses.size());
      for (const auto& a : m->addresses) v->push_back(a.ToString());
    }
    std::lock_guard<std::mutex> l(cache_mu_);
    group_addr_cache_[g] = v;
    return v;
  }
  auto it = literal_sets_.find(set_id);
  if (it != literal_sets_.end()) return it->second;
  return std::make_shared<std::vector<std::string>>();
}

void PolicyCompiler::FillRuleset(const std::string& vnic, const VNicRules& r,
                                 dfw::v1::VNicRuleset* out) const {
  out->set_vnic_id(vnic);
  out->set_revision(r.revision);
  if (r.excluded) {
    out->set_excluded(true);
    out->mutable_default_rule()->set_action(dfw::v1::ACTION_ALLOW);
    return;
  }
  out->mutable_rules()->Reserve(static_cast<int>(r.rules.size()));
  for (const auto& e : r.rules) *out->add_rules() = e->compiled;
  *out->mutable_default_rule() = default_rule_;
}

dfw::v1::HostDesiredState PolicyCompiler::FullState(const std::string& host,
                                                    uint64_t revision) const {
  dfw::v1::HostDesiredState st;
  st.set_revision(revision);
  auto hv = host_vnics_.find(host);
  if (hv != host_vnics_.end()) {
    for (const auto& v : hv->second) {
      auto r = vnic_rules_.find(v);
      if (r == vnic_rules_.end()) continue;
      FillRuleset(v, *r->second, st.add_rulesets());
    }
  }
  auto refs = host_set_refs_.find(host);
  if (refs != host_set_refs_.end()) {
    std::vector<std::string> ids;
    for (const auto& [id, n] : refs->second) ids.push_back(id);
    std::sort(ids.begin(), ids.end());
    for (const auto& id : ids) {
      auto* s = st.add_address_sets();
      s->set_id(id);
      auto c = SetContents(id);
      s->mutable_prefixes()->Add(c->begin(), c->end());
    }
  }
  return st;
}

std::string PolicyCompiler::SetContentDigest(const std::string& set_id) const {
  auto content = SetContents(set_id);
  std::lock_guard<std::mutex> l(cache_mu_);
  SetDigest& d = set_digests_[set_id];
  if (d.content != content) {
    d.digest = proto::AddressSetDigest(set_id, *content);
    d.content = std::move(content);
  }
  return d.digest;
}

HostChanges PolicyCompiler::DiffHeld(const std::string& host,
                                     const dfw::v1::HeldDigests& held) const {
  HostChanges c;
  absl::flat_hash_map<std::string_view, std::string_view> rulesets, sets;
  for (const auto& h : held.rulesets()) rulesets[h.id()] = h.digest();
  for (const auto& h : held.address_sets()) sets[h.id()] = h.digest();
  auto hv = host_vnics_.find(host);
  if (hv != host_vnics_.end()) {
    dfw::v1::VNicRuleset rs;
    for (const auto& v : hv->second) {
      auto r = vnic_rules_.find(v);
      if (r == vnic_rules_.end()) continue;
      bool same = false;
      if (auto h = rulesets.find(v); h != rulesets.end()) {
        rs.Clear();
        FillRuleset(v, *r->second, &rs);
        same = proto::RulesetDigest(rs) == h->second;
        rulesets.erase(h);
      }
      if (!same) c.rulesets_set.insert(v);
    }
  }
  for (const auto& [v, d] : rulesets) c.rulesets_removed.emplace(v);
  auto refs = host_set_refs_.find(host);
  if (refs != host_set_refs_.end()) {
    for (const auto& [id, n] : refs->second) {
      bool same = false;
      if (auto h = sets.find(id); h != sets.end()) {
        same = SetContentDigest(id) == h->second;
        sets.erase(h);
      }
      if (!same) c.sets_full.insert(id);
    }
  }
  for (const auto& [id, d] : sets) c.sets_removed.emplace(id);
  return c;
}

dfw::v1::HostDelta PolicyCompiler::BuildDelta(const std::string& host, const HostChanges& c,
                                              uint64_t from_revision, uint64_t to_revision) const {
  dfw::v1::HostDelta d;
  d.set_from_revision(from_revision);
  d.set_to_revision(to_revision);
  for (const auto& v : c.rulesets_set) {
    auto r = vnic_rules_.find(v);
    if (r != vnic_rules_.end()) FillRuleset(v, *r->second, d.add_rulesets_set());
  }
  for (const auto& v : c.rulesets_removed) d.add_rulesets_removed(v);
  std::vector<std::string> whole(c.sets_full.begin(), c.sets_full.end());
  if (!c.sets_touched.empty()) {
    auto refs = host_set_refs_.find(host);
    for (const auto& id : c.sets_touched) {  // sorted
      if (c.sets_full.count(id)) continue;
      if (refs == host_set_refs_.end() || !refs->second.contains(id)) continue;
      auto jt = journals_.find(id);
      if (jt == journals_.end() || jt->second.last_change <= from_revision) continue;
      const SetJournal& j = jt->second;
      if (j.complete_after > from_revision) {  // the journal no longer reaches back
        whole.push_back(id);
        continue;
      }
      HostChanges::SetDelta net;
      for (const auto& [rev, e] : j.entries) {
        if (rev <= from_revision || rev > to_revision) continue;
        for (const auto& a : e->added) {
          if (!net.removed.erase(a)) net.added.insert(a);
        }
        for (const auto& a : e->removed) {
          if (!net.added.erase(a)) net.removed.insert(a);
        }
      }
      if (net.added.empty() && net.removed.empty()) continue;
      auto* x = d.add_address_set_deltas();
      x->set_id(id);
      for (const auto& a : net.added) x->add_added(a.ToString());
      for (const auto& a : net.removed) x->add_removed(a.ToString());
    }
  }
  std::sort(whole.begin(), whole.end());
  for (const auto& id : whole) {
    auto* s = d.add_address_sets_set();
    s->set_id(id);
    auto cont = SetContents(id);
    s->mutable_prefixes()->Add(cont->begin(), cont->end());
  }
  for (const auto& id : c.sets_removed) d.add_address_sets_removed(id);
  return d;
}

void PolicyCompiler::EffectiveRules(
    const std::vector<std::string>& vnic_ids,
    google::protobuf::RepeatedPtrField<dfw::v1::VNicRuleset>* rulesets,
    google::protobuf::RepeatedPtrField<dfw::v1::AddressSet>* sets) const {
  std::set<std::string> set_ids;
  for (const auto& v : vnic_ids) {
    VNicRules r;
    auto cached = vnic_rules_.find(v);
    if (cached != vnic_rules_.end()) {
      r = *cached->second;
    } else if (IsExcluded(v)) {
      r.excluded = true;
    } else {  // a vNIC on no host: computed on the spot
      auto gi = vnic_groups_.find(v);
      r.rules = RulesOf(gi == vnic_groups_.end() ? nullptr : &gi->second);
    }
    FillRuleset(v, r, rulesets->Add());
    for (const auto& e : r.rules) set_ids.insert(e->set_ids.begin(), e->set_ids.end());
  }
  for (const auto& id : set_ids) {
    auto* s = sets->Add();
    s->set_id(id);
    auto c = SetContents(id);
    s->mutable_prefixes()->Add(c->begin(), c->end());
  }
}

std::vector<VnicImpact> PolicyCompiler::PreviewMembership(const tagging::MembershipDelta& delta,
                                                          std::vector<SetImpact>* sets) const {
  // Each vNIC's applied-to groups it would join and leave.
  std::map<std::string, std::pair<std::set<std::string>, std::set<std::string>>> moves;
  for (const auto& gd : delta.groups) {
    if (!by_group_.contains(gd.group_id)) continue;  // no rule is applied to it
    for (const auto& v : gd.vnics_added) moves[v].first.insert(gd.group_id);
    for (const auto& v : gd.vnics_removed) moves[v].second.insert(gd.group_id);
  }
  auto key = [](const std::shared_ptr<const RuleEntry>& e) {
    return e->compiled.policy_id() + "/" + e->compiled.rule_id();
  };
  std::vector<VnicImpact> out;
  for (const auto& [v, move] : moves) {
    auto host = vnic_host_.find(v);
    if (host == vnic_host_.end() || host->second.empty()) continue;  // enforced nowhere
    VnicImpact im;
    im.vnic_id = v;
    im.host_id = host->second;
    if (IsExcluded(v)) {
      im.excluded = true;
      out.push_back(std::move(im));
      continue;
    }
    absl::flat_hash_set<std::string> groups;
    if (auto gi = vnic_groups_.find(v); gi != vnic_groups_.end()) groups = gi->second;
    const auto now = RulesOf(&groups);
    for (const auto& g : move.second) groups.erase(g);
    for (const auto& g : move.first) groups.insert(g);
    const auto then = RulesOf(&groups);
    std::set<std::string> k_now, k_then;
    for (const auto& e : now) k_now.insert(key(e));
    for (const auto& e : then) k_then.insert(key(e));
    std::set_difference(k_then.begin(), k_then.end(), k_now.begin(), k_now.end(),
                        std::back_inserter(im.added));
    std::set_difference(k_now.begin(), k_now.end(), k_then.begin(), k_then.end(),
                        std::back_inserter(im.removed));
    if (im.added.empty() && im.removed.empty()) continue;
    im.rules_before = now.size();
    im.rules_after = then.size();
    out.push_back(std::move(im));
  }
  for (const auto& gd : delta.groups) {
    if (gd.addresses_added.empty() && gd.addresses_removed.empty()) continue;
    auto sh = set_hosts_.find("g:" + gd.group_id);
    if (sh == set_hosts_.end() || sh->second.empty()) continue;
    SetImpact si;
    si.group_id = gd.group_id;
    si.added = gd.addresses_added.size();
    si.removed = gd.addresses_removed.size();
    si.hosts.assign(sh->second.begin(), sh->second.end());
    std::sort(si.hosts.begin(), si.hosts.end());
    sets->push_back(std::move(si));
  }
  return out;
}

std::vector<VnicImpact> PolicyCompiler::PreviewPolicy(const std::string& policy_id,
                                                      const dfw::v1::Policy* after) const {
  auto it = policies_.find(policy_id);
  const PolicyEntry* before = it == policies_.end() ? nullptr : it->second.get();
  std::unique_ptr<PolicyEntry> next = after == nullptr ? nullptr : Compile(*after);
  std::set<std::string> vnics;
  if (before != nullptr) {
    for (auto& v : AffectedVnics(*before)) vnics.insert(std::move(v));
  }
  if (next != nullptr) {
    for (auto& v : AffectedVnics(*next)) vnics.insert(std::move(v));
  }
  // A literal set's text in the entry that names it.
  auto text_of = [](const PolicyEntry& pe, const std::string& id) {
    for (size_t i = 0; i < pe.literal_set_ids.size(); ++i) {
      if (pe.literal_set_ids[i] == id) return pe.literal_texts[i];
    }
    return std::shared_ptr<const std::vector<std::string>>();
  };
  // The same rule, compiled alike, naming the same sets with the same
  // literal prefixes (its place in the order aside).
  auto same = [&](const RuleEntry& a, const RuleEntry& b) {
    if (a.set_ids != b.set_ids ||
        a.compiled.SerializeAsString() != b.compiled.SerializeAsString()) {
      return false;
    }
    for (const auto& id : a.set_ids) {
      if (id.rfind("r:", 0) != 0) continue;
      auto ta = text_of(*before, id), tb = text_of(*next, id);
      if (!ta || !tb || *ta != *tb) return false;
    }
    return true;
  };
  auto key = [](const RuleEntry& e) {
    return std::make_pair(e.compiled.policy_id(), e.compiled.rule_id());
  };
  std::vector<VnicImpact> out;
  for (const auto& v : vnics) {
    auto host = vnic_host_.find(v);
    if (host == vnic_host_.end() || host->second.empty()) continue;  // enforced nowhere
    if (IsExcluded(v)) {
      VnicImpact im;
      im.vnic_id = v;
      im.host_id = host->second;
      im.excluded = true;
      out.push_back(std::move(im));
      continue;
    }
    auto groups = vnic_groups_.find(v);
    auto applies = [&](const RuleEntry& e) {
      if (e.all) return true;
      if (groups == vnic_groups_.end()) return false;
      for (const auto& g : e.applied_to) {
        if (groups->second.contains(g)) return true;
      }
      return false;
    };
    // The vNIC's rules now and as Recompute would make them after.
    std::vector<const RuleEntry*> now, then;
    auto cur = vnic_rules_.find(v);
    if (cur != vnic_rules_.end()) {
      for (const auto& e : cur->second->rules) {
        now.push_back(e.get());
        if (e->compiled.policy_id() != policy_id) then.push_back(e.get());
      }
    }
    std::map<std::string, const RuleEntry*> was, will;  // the policy's, by rule id
    for (const RuleEntry* e : now) {
      if (e->compiled.policy_id() == policy_id) was[e->compiled.rule_id()] = e;
    }
    if (next != nullptr) {
      for (const auto& e : next->rules) {
        if (!applies(*e)) continue;
        will[e->compiled.rule_id()] = e.get();
        then.push_back(e.get());
      }
    }
    std::sort(then.begin(), then.end(), [](auto* a, auto* b) { return a->order < b->order; });
    VnicImpact im;
    for (const auto& [id, e] : will) {
      auto w = was.find(id);
      if (w == was.end()) {
        im.added.push_back(id);
      } else if (!same(*w->second, *e)) {
        im.changed.push_back(id);
      }
    }
    for (const auto& [id, e] : was) {
      if (!will.count(id)) im.removed.push_back(id);
    }
    // Reordered: the rules it keeps, in another order.
    std::set<std::pair<std::string, std::string>> kept_now, kept_then;
    for (const RuleEntry* e : now) kept_now.insert(key(*e));
    for (const RuleEntry* e : then) kept_then.insert(key(*e));
    std::vector<std::pair<std::string, std::string>> order_now, order_then;
    for (const RuleEntry* e : now) {
      if (kept_then.count(key(*e))) order_now.push_back(key(*e));
    }
    for (const RuleEntry* e : then) {
      if (kept_now.count(key(*e))) order_then.push_back(key(*e));
    }
    im.reordered = order_now != order_then;
    if (im.added.empty() && im.removed.empty() && im.changed.empty() && !im.reordered) continue;
    im.vnic_id = v;
    im.host_id = host->second;
    im.rules_before = now.size();
    im.rules_after = then.size();
    for (const RuleEntry* e : now) {
      if (e->compiled.on_change() == dfw::v1::ON_CHANGE_REVALIDATE) {
        im.revalidating.push_back(Cat(e->compiled.policy_id(), "/", e->compiled.rule_id()));
      }
    }
    out.push_back(std::move(im));
  }
  return out;
}

std::set<std::string> PolicyCompiler::HostsOfPolicy(const std::string& policy_id) const {
  std::set<std::string> out;
  auto it = policies_.find(policy_id);
  if (it == policies_.end()) return out;
  for (const auto& v : AffectedVnics(*it->second)) {
    auto h = vnic_attached_host_.find(v);
    if (h != vnic_attached_host_.end()) out.insert(h->second);
  }
  return out;
}

std::vector<std::string> PolicyCompiler::PoliciesReferencing(const std::string& group_id) const {
  std::vector<std::string> out;
  auto names = [&](const google::protobuf::RepeatedPtrField<std::string>& ids) {
    return std::find(ids.begin(), ids.end(), group_id) != ids.end();
  };
  for (const auto& [id, pe] : policies_) {
    const auto& p = pe->policy;
    bool hit = names(p.applied_to_group_ids());
    for (const auto& r : p.rules()) {
      if (hit) break;
      hit = names(r.sources().group_ids()) || names(r.destinations().group_ids()) ||
            names(r.applied_to_group_ids());
    }
    if (hit) out.push_back(id);
  }
  return out;
}

CompilerStats PolicyCompiler::Stats() const {
  CompilerStats s;
  s.policies = policies_.size();
  for (const auto& [id, pe] : policies_) s.rules += pe->rules.size();
  s.vnics_with_rules = vnic_rules_.size();
  for (const auto& [v, r] : vnic_rules_) s.compiled_rule_refs += r->rules.size();
  s.hosts = host_vnics_.size();
  for (const auto& [h, refs] : host_set_refs_) s.host_set_refs += refs.size();
  return s;
}

}  // namespace dfw::controller
