#include "dataplane_state.h"

#include <arpa/inet.h>

#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>

#include "dfw/dataplane/conn_table.h"

namespace dfw::dataplane {
namespace {

Status Err(const std::string& where, const std::string& what) {
  return Status::Error(where + ": " + what);
}

Action ActionOf(v1::Action a) {
  return a == v1::ACTION_ALLOW    ? Action::kAllow
         : a == v1::ACTION_REJECT ? Action::kReject
                                  : Action::kDrop;
}

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

Status ServiceFromProto(const v1::Service& s, const std::string& f, ServiceSpec* out) {
  if (s.protocol() > 255)
    return Err(f + ".protocol", std::to_string(s.protocol()) + " is above 255");
  bool icmp = s.protocol() == 1 || s.protocol() == 58;
  if (icmp) {
    if (s.source_ports_size() || s.destination_ports_size()) {
      return Err(f, "ICMP services take icmp_type/icmp_code, not ports");
    }
    if (s.has_icmp_code() && !s.has_icmp_type()) return Err(f + ".icmp_code", "needs icmp_type");
    if (s.has_icmp_type() && s.icmp_type() > 255) return Err(f + ".icmp_type", "is above 255");
    if (s.has_icmp_code() && s.icmp_code() > 255) return Err(f + ".icmp_code", "is above 255");
    std::optional<uint8_t> t, c;
    if (s.has_icmp_type()) t = static_cast<uint8_t>(s.icmp_type());
    if (s.has_icmp_code()) c = static_cast<uint8_t>(s.icmp_code());
    *out = ServiceSpec::Icmp(static_cast<uint8_t>(s.protocol()), t, c);
    return Status::Ok();
  }
  if (s.has_icmp_type() || s.has_icmp_code())
    return Err(f, "icmp_type/icmp_code need protocol 1 or 58");
  ServiceSpec spec;
  if (s.protocol() != 0) spec.proto = static_cast<uint8_t>(s.protocol());
  auto ranges = [&](const auto& list, const std::string& name, std::vector<PortRange>* to) {
    for (int i = 0; i < list.size(); ++i) {
      uint32_t first = list[i].first(), last = list[i].last() ? list[i].last() : list[i].first();
      std::string rf = f + "." + name + "[" + std::to_string(i) + "]";
      if (first > 65535 || last > 65535 || first > last) {
        return Err(rf, "range " + std::to_string(first) + ".." + std::to_string(last) +
                           " is not within 0..65535 in order");
      }
      to->push_back(PortRange{static_cast<uint16_t>(first), static_cast<uint16_t>(last)});
    }
    return Status::Ok();
  };
  if (auto st = ranges(s.source_ports(), "source_ports", &spec.sports); !st.ok()) return st;
  if (auto st = ranges(s.destination_ports(), "destination_ports", &spec.dports); !st.ok())
    return st;
  *out = spec;
  return Status::Ok();
}

}  // namespace

Status RulesetSpecFromProto(const v1::VNicRuleset& rs,
                            const std::map<std::string, v1::AddressSet>& sets, RulesetSpec* spec,
                            std::vector<RuleMeta>* meta) {
  std::string where = "vNIC '" + rs.vnic_id() + "'";
  std::set<std::string> used;
  for (int i = 0; i < rs.rules_size(); ++i) {
    const auto& r = rs.rules(i);
    std::string f = where + " rules[" + std::to_string(i) + "]";
    RuleSpec rule;
    rule.rule_num = r.rule_num();
    auto endpoints = [&](const v1::CompiledEndpoints& e, const std::string& name,
                         EndpointSpec* to) {
      to->any = e.any() || e.address_set_ids_size() == 0;
      to->negate = e.negate();
      if (e.any() && e.address_set_ids_size()) {
        return Err(f + "." + name, "'any' and address sets are exclusive");
      }
      for (const auto& id : e.address_set_ids()) {
        if (!sets.count(id)) return Err(f + "." + name, "address set '" + id + "' was not sent");
        to->address_sets.push_back(id);
        used.insert(id);
      }
      if (e.negate() && to->any) return Err(f + "." + name, "negating 'any' matches nothing");
      return Status::Ok();
    };
    if (auto st = endpoints(r.sources(), "sources", &rule.src); !st.ok()) return st;
    if (auto st = endpoints(r.destinations(), "destinations", &rule.dst); !st.ok()) return st;
    for (int k = 0; k < r.services_size(); ++k) {
      ServiceSpec s;
      if (auto st = ServiceFromProto(r.services(k), f + ".services[" + std::to_string(k) + "]", &s);
          !st.ok()) {
        return st;
      }
      rule.services.push_back(s);
    }
    switch (r.direction()) {
      case v1::DIRECTION_IN:
        rule.direction = RuleDirection::kIn;
        break;
      case v1::DIRECTION_OUT:
        rule.direction = RuleDirection::kOut;
        break;
      default:
        rule.direction = RuleDirection::kBoth;
        break;
    }
    if (r.action() == v1::ACTION_UNSPECIFIED)
      return Err(f + ".action", "must be ALLOW, DROP or REJECT");
    rule.action = ActionOf(r.action());
    spec->rules.push_back(rule);
    RuleMeta m;
    m.rule_num = r.rule_num();
    m.action = rule.action;
    m.stateful = r.stateful();
    m.audit = r.mode() == v1::POLICY_MODE_AUDIT;
    m.revalidate = r.on_change() == v1::ON_CHANGE_REVALIDATE;
    m.log = r.log();
    meta->push_back(m);
  }
  for (const auto& id : used) {
    AddressSetSpec as;
    as.id = id;
    const auto& src = sets.at(id);
    for (int i = 0; i < src.prefixes_size(); ++i) {
      auto p = IpPrefix::Parse(src.prefixes(i));
      if (!p) {
        return Err("address set '" + id + "' prefixes[" + std::to_string(i) + "]",
                   "'" + src.prefixes(i) + "' is not a prefix (or has host bits set)");
      }
      as.prefixes.push_back(*p);
    }
    spec->address_sets.push_back(std::move(as));
  }
  spec->default_action =
      rs.has_default_rule() ? ActionOf(rs.default_rule().action()) : Action::kDrop;
  if (rs.has_default_rule() && rs.default_rule().action() == v1::ACTION_UNSPECIFIED) {
    spec->default_action = Action::kDrop;
  }
  return Status::Ok();
}

struct DataplaneState::Compiled {
  RulesetCompiler compiler;
  std::vector<RuleMeta> meta;
  Action default_action = Action::kDrop;
  bool default_log = true;
  uint32_t generation = 0;
};

DataplaneState::DataplaneState(VnicTable* vnics, std::string state_path)
    : table_(vnics), path_(std::move(state_path)) {}
DataplaneState::~DataplaneState() = default;

Status DataplaneState::Compile(const v1::VNicRuleset& ruleset,
                               const std::map<std::string, v1::AddressSet>& sets,
                               std::unique_ptr<Compiled>* out) const {
  RulesetSpec spec;
  auto c = std::make_unique<Compiled>();
  if (auto st = RulesetSpecFromProto(ruleset, sets, &spec, &c->meta); !st.ok()) return st;
  if (auto st = c->compiler.Compile(spec); !st.ok()) {
    return Err("vNIC '" + ruleset.vnic_id() + "'", st.message());
  }
  c->default_action = spec.default_action;
  c->default_log = !ruleset.has_default_rule() || ruleset.default_rule().log() ||
                   spec.default_action != Action::kAllow;
  *out = std::move(c);
  return Status::Ok();
}

void DataplaneState::Publish(const std::string& vnic_id) {
  auto vit = vnics_.find(vnic_id);
  if (vit == vnics_.end()) return;  // rules for a vNIC not plugged here (yet)
  const v1::DataplaneVNic& v = vit->second;
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
  std::sort(st->bound_v4.begin(), st->bound_v4.end());
  std::sort(st->bound_v6.begin(), st->bound_v6.end());
  auto cit = compiled_.find(vnic_id);
  if (cit != compiled_.end()) {
    Compiled& c = *cit->second;
    auto pol = std::make_shared<VnicPolicy>();
    pol->ruleset = c.compiler.ruleset();
    pol->rules = c.meta;
    pol->default_action = c.default_action;
    pol->default_log = c.default_log;
    pol->generation = c.generation;
    pol->revision = revision_;
    st->policy = std::move(pol);
  }
  table_->Publish(std::move(st));
}

Status DataplaneState::SetVnic(const v1::DataplaneVNic& vnic) {
  std::lock_guard<std::mutex> lock(mu_);
  std::string f = "vnic '" + vnic.id() + "'";
  if (vnic.id().empty()) return Err("vnic.id", "must not be empty");
  if (vnic.local_id() < 1 || vnic.local_id() > kMaxLocalId) {
    return Err(f + ".local_id", std::to_string(vnic.local_id()) + " is not within 1..2047");
  }
  uint8_t mac[6];
  if (!ParseMac(vnic.mac(), mac))
    return Err(f + ".mac", "'" + vnic.mac() + "' is not a MAC address");
  for (int i = 0; i < vnic.bound_ips_size(); ++i) {
    auto p = IpPrefix::Parse(vnic.bound_ips(i));
    if (!p || p->len != (p->family == Family::kV4 ? 32 : 128)) {
      return Err(f + ".bound_ips[" + std::to_string(i) + "]",
                 "'" + vnic.bound_ips(i) + "' is not one address");
    }
  }
  for (const auto& [id, other] : vnics_) {
    if (id != vnic.id() && other.local_id() == vnic.local_id()) {
      return Err(f + ".local_id",
                 std::to_string(vnic.local_id()) + " is used by vNIC '" + id + "'");
    }
  }
  auto old = vnics_.find(vnic.id());
  if (old != vnics_.end() && old->second.local_id() != vnic.local_id()) {
    table_->Remove(static_cast<uint16_t>(old->second.local_id()));
  }
  vnics_[vnic.id()] = vnic;
  Publish(vnic.id());
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
  std::lock_guard<std::mutex> lock(mu_);
  std::map<std::string, v1::AddressSet> sets;
  for (const auto& s : state.address_sets()) sets[s.id()] = s;
  std::map<std::string, std::unique_ptr<Compiled>> compiled;
  std::map<std::string, v1::VNicRuleset> rulesets;
  for (const auto& rs : state.rulesets()) {
    std::unique_ptr<Compiled> c;
    if (auto st = Compile(rs, sets, &c); !st.ok()) return st;  // nothing changed yet
    rulesets[rs.vnic_id()] = rs;
    compiled[rs.vnic_id()] = std::move(c);
  }
  // All compiled: swap in and publish.
  revision_ = state.revision();
  sets_ = std::move(sets);
  rulesets_ = std::move(rulesets);
  std::set<std::string> touched;
  for (auto& [id, c] : compiled) touched.insert(id);
  for (auto& [id, c] : compiled_) touched.insert(id);
  compiled_ = std::move(compiled);
  for (auto& [id, c] : compiled_) c->generation = NextGeneration();
  rule_names_.clear();
  for (const auto& [id, rs] : rulesets_) {
    for (const auto& r : rs.rules()) rule_names_[r.rule_num()] = {r.policy_id(), r.rule_id()};
  }
  for (const auto& id : touched) Publish(id);
  return Persist();
}

Status DataplaneState::ApplyDelta(const v1::HostDelta& d) {
  std::lock_guard<std::mutex> lock(mu_);
  if (d.from_revision() != revision_) {
    return Err("delta", "from_revision " + std::to_string(d.from_revision()) +
                            " does not match the applied revision " + std::to_string(revision_) +
                            "; send the full state");
  }
  // Work on copies; swap in only when everything compiled.
  auto sets = sets_;
  for (const auto& s : d.address_sets_set()) sets[s.id()] = s;
  std::set<std::string> changed_sets;
  for (const auto& s : d.address_sets_set()) changed_sets.insert(s.id());
  for (const auto& sd : d.address_set_deltas()) {
    auto it = sets.find(sd.id());
    if (it == sets.end()) return Err("address_set_deltas '" + sd.id() + "'", "unknown address set");
    std::set<std::string> cur(it->second.prefixes().begin(), it->second.prefixes().end());
    for (const auto& p : sd.removed()) cur.erase(p);
    for (const auto& p : sd.added()) cur.insert(p);
    it->second.clear_prefixes();
    for (const auto& p : cur) it->second.add_prefixes(p);
    changed_sets.insert(sd.id());
  }
  for (const auto& id : d.address_sets_removed()) {
    sets.erase(id);
    changed_sets.insert(id);
  }
  auto rulesets = rulesets_;
  for (const auto& rs : d.rulesets_set()) rulesets[rs.vnic_id()] = rs;
  for (const auto& id : d.rulesets_removed()) rulesets.erase(id);
  // Recompile every vNIC whose ruleset changed or that references a changed set.
  std::map<std::string, std::unique_ptr<Compiled>> recompiled;
  for (const auto& [id, rs] : rulesets) {
    bool dirty = std::any_of(d.rulesets_set().begin(), d.rulesets_set().end(),
                             [&](const v1::VNicRuleset& x) { return x.vnic_id() == id; });
    for (const auto& r : rs.rules()) {
      for (const auto* e : {&r.sources(), &r.destinations()}) {
        for (const auto& sid : e->address_set_ids()) dirty = dirty || changed_sets.count(sid);
      }
    }
    if (!dirty) continue;
    std::unique_ptr<Compiled> c;
    if (auto st = Compile(rs, sets, &c); !st.ok()) return st;
    recompiled[id] = std::move(c);
  }
  revision_ = d.to_revision();
  sets_ = std::move(sets);
  rulesets_ = std::move(rulesets);
  std::set<std::string> touched;
  for (const auto& id : d.rulesets_removed()) {
    compiled_.erase(id);
    touched.insert(id);
  }
  for (auto& [id, c] : recompiled) {
    c->generation = NextGeneration();
    compiled_[id] = std::move(c);
    touched.insert(id);
  }
  for (const auto& [id, rs] : rulesets_) {
    for (const auto& r : rs.rules()) rule_names_[r.rule_num()] = {r.policy_id(), r.rule_id()};
  }
  for (const auto& id : touched) Publish(id);
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
  if (path_.empty()) return Status::Ok();
  v1::DataplanePersistedState ps;
  for (const auto& [id, v] : vnics_) *ps.add_vnics() = v;
  auto* st = ps.mutable_state();
  st->set_revision(revision_);
  for (const auto& [id, rs] : rulesets_) *st->add_rulesets() = rs;
  for (const auto& [id, s] : sets_) *st->add_address_sets() = s;
  std::string tmp = path_ + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out || !ps.SerializeToOstream(&out)) return Err(tmp, "cannot write the state file");
    out.flush();
    if (!out) return Err(tmp, "cannot write the state file");
  }
  if (std::rename(tmp.c_str(), path_.c_str()) != 0)
    return Err(path_, "cannot replace the state file");
  return Status::Ok();
}

Status DataplaneState::Load() {
  if (path_.empty()) return Status::Ok();
  std::ifstream in(path_, std::ios::binary);
  if (!in) return Status::Ok();  // first start
  v1::DataplanePersistedState ps;
  if (!ps.ParseFromIstream(&in)) return Err(path_, "is not a dataplane state file");
  for (const auto& v : ps.vnics()) {
    if (auto st = SetVnic(v); !st.ok()) return st;
  }
  Status st = ApplyFull(ps.state());
  if (st.ok()) {
    std::lock_guard<std::mutex> lock(mu_);
    restored_ = true;
  }
  return st;
}

}  // namespace dfw::dataplane
