#include "dataplane_state.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <set>
#include <vector>

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

// The state file is at most what one gRPC message may carry (main.cc).
constexpr off_t kMaxStateFileBytes = off_t{256} << 20;
// No revision follows it: refused, so a delta can never wrap.
constexpr uint64_t kMaxRevision = std::numeric_limits<uint64_t>::max();

std::string Errno(const std::string& what) { return what + ": " + std::strerror(errno); }

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
  std::map<uint32_t, int> nums;  // rule_num -> first index
  for (int i = 0; i < rs.rules_size(); ++i) {
    const auto& r = rs.rules(i);
    std::string f = where + " rules[" + std::to_string(i) + "]";
    // A rule number names one rule (counters, flow records, connections).
    if (auto [it, fresh] = nums.emplace(r.rule_num(), i); !fresh) {
      return Err(f + ".rule_num", std::to_string(r.rule_num()) + " is also rules[" +
                                      std::to_string(it->second) + "]'s");
    }
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
  // A full state replaces whatever is held, also at a lower revision: the
  // controller sends one exactly when the host's revision proves nothing (a
  // first contact, its own restart, a store restored from a backup whose
  // revisions restarted lower). Refusing it would leave this host enforcing
  // a policy nobody wants any more. Only the last revision is reserved.
  if (state.revision() == kMaxRevision) {
    return Err("revision",
               std::to_string(state.revision()) + " is reserved (no delta could follow it)");
  }
  if (auto st =
          CheckRulesetAndSetIds(state.rulesets(), "rulesets", state.address_sets(), "address_sets");
      !st.ok()) {
    return st;
  }
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
  if (state.revision() < revision_) {
    std::fprintf(stderr,
                 "dfw-dataplane: a full state at revision %llu replaces revision %llu (the "
                 "revision goes back)\n",
                 static_cast<unsigned long long>(state.revision()),
                 static_cast<unsigned long long>(revision_));
  }
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
    bool dirty =
        std::any_of(d.rulesets_set().begin(), d.rulesets_set().end(),
                    // Clang before 16 cannot capture a structured binding.
                    [&vnic = id](const v1::VNicRuleset& x) { return x.vnic_id() == vnic; });
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
  if (path_.empty() || loading_) return Status::Ok();
  v1::DataplanePersistedState ps;
  for (const auto& [id, v] : vnics_) *ps.add_vnics() = v;
  auto* st = ps.mutable_state();
  st->set_revision(revision_);
  for (const auto& [id, rs] : rulesets_) *st->add_rulesets() = rs;
  for (const auto& [id, s] : sets_) *st->add_address_sets() = s;
  std::string data;
  if (!ps.SerializeToString(&data)) return Err(path_, "cannot serialize the state");
  // Durable before it replaces the old file: the new contents reach the disk
  // (fsync), then the rename, then the directory entry (fsync of the
  // directory). A crash leaves the old state or the new one, never a
  // truncated file.
  const std::string tmp = path_ + ".tmp";
  const int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Err(tmp, Errno("cannot write the state file"));
  auto fail = [&](const std::string& what) {
    Status st = Err(tmp, Errno(what));
    close(fd);
    unlink(tmp.c_str());
    return st;
  };
  for (size_t done = 0; done < data.size();) {
    const ssize_t n = write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return fail("cannot write the state file");
    done += static_cast<size_t>(n);
  }
  if (fsync(fd) != 0) return fail("cannot sync the state file");
  if (close(fd) != 0) {
    Status st = Err(tmp, Errno("cannot write the state file"));
    unlink(tmp.c_str());
    return st;
  }
  if (std::rename(tmp.c_str(), path_.c_str()) != 0) {
    Status st = Err(path_, Errno("cannot replace the state file"));
    unlink(tmp.c_str());
    return st;
  }
  const size_t slash = path_.rfind('/');
  const std::string dir = slash == std::string::npos ? "."
                          : slash == 0               ? "/"
                                                     : path_.substr(0, slash);
  const int dfd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return Err(dir, Errno("cannot sync the state directory"));
  const bool synced = fsync(dfd) == 0;
  Status result = synced ? Status::Ok() : Err(dir, Errno("cannot sync the state directory"));
  close(dfd);
  return result;
}

Status DataplaneState::Load() {
  if (path_.empty()) return Status::Ok();
  // O_NONBLOCK: a FIFO put there must not hang the start.
  const int fd = open(path_.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT) return Status::Ok();  // first start
  if (fd < 0) return Err(path_, Errno("cannot read the state file"));
  struct stat sb;
  std::string data;
  Status read = Status::Ok();
  if (fstat(fd, &sb) != 0) {
    read = Err(path_, Errno("cannot read the state file"));
  } else if (!S_ISREG(sb.st_mode)) {
    read = Err(path_, std::string("is ") +
                          (S_ISDIR(sb.st_mode) ? "a directory" : "not a regular file") +
                          ", not a saved state");
  } else if (sb.st_size == 0) {
    // What a write cut short by a crash may leave, never a saved state: even
    // an empty one is 2 bytes (Persist always writes the `state` field). A
    // first start has no file at all.
    read = Err(path_, "is empty (0 bytes), not a saved state");
  } else if (sb.st_size > kMaxStateFileBytes) {
    read = Err(path_, std::to_string(sb.st_size) + " bytes is above the " +
                          std::to_string(kMaxStateFileBytes) + " a state file may have");
  } else {
    data.resize(static_cast<size_t>(sb.st_size));
    for (size_t done = 0; done < data.size() && read.ok();) {
      const ssize_t n = ::read(fd, data.data() + done, data.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) read = Err(path_, Errno("cannot read the state file"));
      if (n == 0) data.resize(done);  // shrank meanwhile: parsed as it is
      done += n > 0 ? static_cast<size_t>(n) : 0;
      if (n == 0) break;
    }
  }
  close(fd);
  if (!read.ok()) return read;
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
  if (Status st = ApplyFull(ps.state()); !st.ok()) return Err(path_, "state." + st.message());
  return Status::Ok();
}

}  // namespace dfw::dataplane
