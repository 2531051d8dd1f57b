#include "dfw/vmagent/guest_agent.h"

#include "dfw/base/metrics.h"

#include <arpa/inet.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include <google/protobuf/util/message_differencer.h>
#include <nlohmann/json.hpp>

#include "dfw/hostagent/controller_session.h"
#include "dfw/vmagent/conntrack.h"
#include "dfw/vmagent/flow_monitor.h"
#include "dfw/vmagent/nft_backend.h"
#include "dfw/vmagent/nft_monitor.h"
#include "dfw/vmagent/revalidate.h"

namespace dfw::vmagent {
namespace {

constexpr auto kForeignChainsEvery = std::chrono::seconds(10);
// Changes by others come in bursts (nft -f of a file, a flush and a load):
// the repair waits this long after the last one, then verifies once.
constexpr auto kRepairSettle = std::chrono::milliseconds(50);

std::string Str(const absl::Status& s) { return std::string(s.message()); }

}  // namespace

absl::Status ApplyDeltaToState(const dfw::v1::HostDelta& d, dfw::v1::HostDesiredState* state) {
  if (d.from_revision() != state->revision()) {
    return absl::FailedPreconditionError(
        "delta: from_revision " + std::to_string(d.from_revision()) +
        " does not match the applied revision " + std::to_string(state->revision()) +
        "; send the full state");
  }
  std::map<std::string, dfw::v1::AddressSet> sets;
  for (const auto& s : state->address_sets()) sets[s.id()] = s;
  for (const auto& s : d.address_sets_set()) sets[s.id()] = s;
  for (const auto& sd : d.address_set_deltas()) {
    auto it = sets.find(sd.id());
    if (it == sets.end()) {
      return absl::InvalidArgumentError("address_set_deltas '" + sd.id() +
                                        "': unknown address set");
    }
    std::set<std::string> cur(it->second.prefixes().begin(), it->second.prefixes().end());
    for (const auto& p : sd.removed()) cur.erase(p);
    for (const auto& p : sd.added()) cur.insert(p);
    it->second.clear_prefixes();
    for (const auto& p : cur) it->second.add_prefixes(p);
  }
  for (const auto& id : d.address_sets_removed()) sets.erase(id);
  std::map<std::string, dfw::v1::VNicRuleset> rulesets;
  for (const auto& rs : state->rulesets()) rulesets[rs.vnic_id()] = rs;
  for (const auto& rs : d.rulesets_set()) rulesets[rs.vnic_id()] = rs;
  for (const auto& id : d.rulesets_removed()) rulesets.erase(id);
  state->set_revision(d.to_revision());
  state->clear_address_sets();
  for (auto& [id, s] : sets) *state->add_address_sets() = std::move(s);
  state->clear_rulesets();
  for (auto& [id, rs] : rulesets) *state->add_rulesets() = std::move(rs);
  return absl::OkStatus();
}

GuestAgent::GuestAgent(GuestAgentConfig cfg) : cfg_(std::move(cfg)) {}

GuestAgent::~GuestAgent() { Stop(); }

absl::Status GuestAgent::Start() {
  auto uuid = ReadVmUuid(cfg_.facts);
  if (!uuid.ok()) return uuid.status();
  uuid_ = *uuid;
  st_.vm_id = uuid_;
  RefreshFacts();
  backend_ = std::make_unique<NftBackend>();
  if (cfg_.render.table.empty()) cfg_.render.table = "dfw";

  NftMonitorOptions mo;
  mo.table = cfg_.render.table;
  monitor_ = std::make_unique<NftMonitor>(mo, [this](std::string what) {
    {
      std::lock_guard<std::mutex> l(hk_mu_);
      pending_repairs_.push_back(std::move(what));
    }
    hk_cv_.notify_all();
  });
  if (auto s = monitor_->Start(); !s.ok()) {
    return absl::Status(s.code(), "nf_tables monitor: " + Str(s));
  }
  if (auto s = Conntrack::EnableAccounting(); !s.ok()) {
    spdlog::warn(
        "vmagent: conntrack accounting stays off ({}): ended flow records carry no "
        "packet counts",
        Str(s));
  }
  FlowMonitorOptions fo;
  fo.nflog_group = cfg_.render.nflog_group;
  std::shared_ptr<std::ofstream> out;
  if (!cfg_.flow_log.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(std::filesystem::path(cfg_.flow_log).parent_path(), ec);
    out = std::make_shared<std::ofstream>(cfg_.flow_log, std::ios::app);
    if (!*out) return absl::PermissionDeniedError("--flow-log: cannot open " + cfg_.flow_log);
  }
  flows_ = std::make_unique<FlowMonitor>(fo, [out](const std::string& line) {
    if (!out) return;
    *out << line << '\n';
    out->flush();
  });
  {
    std::lock_guard<std::mutex> l(mu_);
    std::map<uint32_t, std::string> by_index;
    for (const auto& i : interfaces_) {
      by_index[static_cast<uint32_t>(i.ifindex)] = VnicIdFor(uuid_, i.name);
    }
    flows_->SetInterfaces(by_index);
  }
  if (auto s = flows_->Start(); !s.ok()) {
    return absl::Status(s.code(), "flow monitor: " + Str(s));
  }

  hostagent::ControllerSession::Hooks hooks;
  hooks.hello = [this] { return Hello(); };
  hooks.apply = [this](const dfw::v1::ControllerToHost& m) { return Apply(m); };
  session_ = std::make_unique<hostagent::ControllerSession>(cfg_.controller_target,
                                                            cfg_.credentials, hooks);
  session_->Start();
  housekeeping_ = std::thread([this] { Housekeeping(); });
  return absl::OkStatus();
}

void GuestAgent::Stop() {
  {
    std::lock_guard<std::mutex> l(hk_mu_);
    if (stop_ && !housekeeping_.joinable()) return;
    stop_ = true;
  }
  hk_cv_.notify_all();
  if (session_) session_->Stop();
  if (housekeeping_.joinable()) housekeeping_.join();
  if (monitor_) monitor_->Stop();
  if (flows_) flows_->Stop();
  WriteStatus();
}

dfw::v1::HostHello GuestAgent::Hello() {
  std::lock_guard<std::mutex> l(mu_);
  dfw::v1::HostHello h;
  h.mutable_host()->set_id("guest:" + uuid_);
  h.mutable_host()->set_hostname(vm_.guest().hostname());
  *h.add_vms() = vm_;
  h.set_held_revision(have_state_ ? state_.revision() : 0);
  return h;
}

RenderOptions GuestAgent::CurrentRender() const {
  RenderOptions o = cfg_.render;
  o.audit_all = audit_all_;
  return o;
}

absl::StatusOr<uint64_t> GuestAgent::Apply(const dfw::v1::ControllerToHost& msg) {
  std::lock_guard<std::mutex> l(mu_);
  dfw::v1::HostDesiredState before = state_;
  dfw::v1::HostDesiredState next;
  if (msg.has_full()) {
    next = msg.full();
  } else if (msg.has_delta()) {
    if (!have_state_) {
      return absl::FailedPreconditionError("delta: no full state applied yet; send the full state");
    }
    next = state_;
    if (auto s = ApplyDeltaToState(msg.delta(), &next); !s.ok()) return s;
  } else {
    return absl::InvalidArgumentError("msg: neither a full state nor a delta");
  }
  if (!have_state_ && cfg_.audit_first.count() > 0) {
    audit_all_ = true;
    audit_until_ = std::chrono::steady_clock::now() + cfg_.audit_first;
    spdlog::warn("vmagent: audit-first: for {} ms every drop and reject only logs",
                 cfg_.audit_first.count());
  }
  absl::Status s;
  if (msg.has_full() || !have_state_) {
    s = backend_->ApplyFull(next, ifaces_, CurrentRender());
  } else {
    s = backend_->ApplyDelta(msg.delta(), ifaces_);
    if (!s.ok() && s.code() != absl::StatusCode::kInvalidArgument) {
      // A delta is two transactions (rules, then elements): when the second
      // failed the kernel holds the new rules and the old elements. The
      // whole next state, in one transaction, puts both right.
      spdlog::warn("vmagent: delta to revision {} failed ({}); applying the whole state",
                   next.revision(), Str(s));
      s = backend_->ApplyFull(next, ifaces_, CurrentRender());
    }
  }
  if (!s.ok()) {
    kernel_dirty_ = have_state_;  // retried from state_ by housekeeping
    std::string in_force =
        have_state_ ? "revision " + std::to_string(state_.revision()) + " is still in force"
                    : "the table was not changed";
    st_.last_error = Str(s) + "; " + in_force;
    spdlog::error("vmagent: applying revision {} failed: {}", next.revision(), st_.last_error);
    return absl::Status(s.code(), st_.last_error);
  }
  if (!have_state_) first_state_at_ = std::chrono::steady_clock::now();
  state_ = std::move(next);
  have_state_ = true;
  kernel_dirty_ = false;
  if (!backend_->skipped().empty()) {
    std::string list;
    for (const auto& v : backend_->skipped()) list += (list.empty() ? "" : ", ") + v;
    spdlog::warn(
        "vmagent: revision {}: not enforced (no interface here, or a name nft cannot "
        "carry): {}",
        state_.revision(), list);
  }
  st_.applied_revision = state_.revision();
  st_.last_error.clear();
  if (flows_) {
    std::set<uint32_t> rejects;
    for (const auto& rs : state_.rulesets()) {
      for (const auto& r : rs.rules()) {
        if (r.action() == dfw::v1::ACTION_REJECT) rejects.insert(r.rule_num());
      }
    }
    flows_->SetRejectRules(std::move(rejects));
  }
  Revalidate(before);
  return state_.revision();
}

size_t GuestAgent::Revalidate(const dfw::v1::HostDesiredState& before, bool all) {
  // Our interfaces' addresses tell a connection's vNIC and direction.
  std::map<std::string, std::string> local;  // address -> vNIC id
  for (const auto& i : interfaces_) {
    for (const auto& a : i.addresses) local[a] = VnicIdFor(uuid_, i.name);
  }
  auto deleted = RevalidateConnections(before, *backend_, local, audit_all_, all);
  if (!deleted.ok()) {
    spdlog::warn("vmagent: revalidation: {}", Str(deleted.status()));
    return 0;
  }
  if (*deleted > 0) {
    st_.revalidated_deleted += *deleted;
    spdlog::info("vmagent: revision {}: {} connections the rules in force deny were cut",
                 state_.revision(), *deleted);
  }
  return *deleted;
}

void GuestAgent::RefreshFacts() {
  auto ifs = ListInterfaces(cfg_.facts);
  if (!ifs.ok()) {
    spdlog::warn("vmagent: interfaces: {}", Str(ifs.status()));
    return;
  }
  dfw::v1::Vm vm =
      FactsToVm(uuid_, Hostname(cfg_.facts), ReadOsPrettyName(cfg_.facts.os_release), *ifs);
  InterfaceMap ifaces;
  std::map<uint32_t, std::string> by_index;
  for (const auto& i : *ifs) {
    ifaces[VnicIdFor(uuid_, i.name)] = i.name;
    by_index[static_cast<uint32_t>(i.ifindex)] = VnicIdFor(uuid_, i.name);
  }
  bool changed, ifaces_changed;
  {
    std::lock_guard<std::mutex> l(mu_);
    changed = !google::protobuf::util::MessageDifferencer::Equals(vm, vm_);
    ifaces_changed = ifaces != ifaces_;
    vm_ = vm;
    interfaces_ = *ifs;
    ifaces_ = ifaces;
    if (ifaces_changed && have_state_) {
      // A vNIC's interface appeared or was renamed: its chains follow.
      if (auto s = backend_->ApplyFull(state_, ifaces_, CurrentRender()); !s.ok()) {
        spdlog::error("vmagent: re-rendering for new interfaces failed: {} (retrying)", Str(s));
        kernel_dirty_ = true;
      }
    }
  }
  if (flows_ && ifaces_changed) flows_->SetInterfaces(by_index);
  if (changed && session_) session_->SetInventory({vm});
}

void GuestAgent::RepairIfNeeded(const std::string& what) {
  std::lock_guard<std::mutex> l(mu_);
  if (!have_state_) return;  // nothing of ours to keep
  // Another process changed our table: apply it again whole. Verify()
  // names what it sees missing, but compares counts and names only (an
  // element removed, a rule replaced by another keep the counts), so the
  // table is re-applied whatever it says.
  absl::Status v = backend_->Verify();
  std::string found = v.ok() ? "rule and set counts intact" : Str(v);
  auto t0 = std::chrono::steady_clock::now();
  absl::Status s = backend_->ApplyFull(state_, ifaces_, CurrentRender());
  auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
          .count();
  ++st_.repairs;
  st_.last_repair = found + " after: " + what + (s.ok() ? "" : "; repair failed: " + Str(s));
  if (s.ok()) {
    kernel_dirty_ = false;
    spdlog::warn("vmagent: table inet {} repaired in {} ms: {} (after: {})", cfg_.render.table, ms,
                 found, what);
  } else {
    kernel_dirty_ = true;
    spdlog::error("vmagent: table inet {} could not be repaired: {} (it was: {}); retrying",
                  cfg_.render.table, Str(s), found);
  }
}

void GuestAgent::Housekeeping() {
  auto next_facts = std::chrono::steady_clock::now();
  auto next_status = next_facts;
  auto next_chains = next_facts;
  std::set<std::string> known_foreign;
  for (;;) {
    std::vector<std::string> repairs;
    {
      std::unique_lock<std::mutex> l(hk_mu_);
      auto wake = std::min({next_facts, next_status, next_chains});
      hk_cv_.wait_until(l, wake, [&] { return stop_ || !pending_repairs_.empty(); });
      if (stop_) return;
      if (!pending_repairs_.empty()) {
        l.unlock();
        std::this_thread::sleep_for(kRepairSettle);
        l.lock();
        repairs.swap(pending_repairs_);
      }
    }
    if (!repairs.empty()) {
      std::string what = repairs.front();
      if (repairs.size() > 1) what += " (and " + std::to_string(repairs.size() - 1) + " more)";
      RepairIfNeeded(what);
      next_chains = std::chrono::steady_clock::now();
    }
    auto now = std::chrono::steady_clock::now();
    {
      std::lock_guard<std::mutex> l(mu_);
      if (audit_all_ && now >= audit_until_) {
        RenderOptions enforce = cfg_.render;
        enforce.audit_all = false;
        absl::Status s =
            have_state_ ? backend_->ApplyFull(state_, ifaces_, enforce) : absl::OkStatus();
        if (s.ok()) {
          audit_all_ = false;
          kernel_dirty_ = false;
          // What audit let through is not admitted by the rules: every
          // connection is judged again, as after a revalidating change.
          size_t cut = Revalidate(state_, /*all=*/true);
          spdlog::warn(
              "vmagent: audit-first over: rules enforce now ({} connections they deny "
              "were cut)",
              cut);
        } else {
          spdlog::error(
              "vmagent: audit-first over, but enforcing failed: {} (still audit "
              "only; retrying)",
              Str(s));
        }
      } else if (kernel_dirty_ && have_state_) {
        absl::Status s = backend_->ApplyFull(state_, ifaces_, CurrentRender());
        if (s.ok()) {
          kernel_dirty_ = false;
          spdlog::warn("vmagent: revision {} applied again after an earlier failure",
                       state_.revision());
        }
      }
    }
    {
      std::lock_guard<std::mutex> l(mu_);
      if (!strict_tcp_done_ && have_state_ && !audit_all_ && cfg_.strict_tcp_after.count() >= 0 &&
          now >= first_state_at_ + cfg_.strict_tcp_after) {
        strict_tcp_done_ = true;
        std::ofstream f("/proc/sys/net/netfilter/nf_conntrack_tcp_loose");
        f << "0\n";
        f.flush();
        if (f) {
          spdlog::info(
              "vmagent: strict TCP: nf_conntrack_tcp_loose=0 (a segment of no known "
              "connection is invalid)");
        } else {
          spdlog::warn(
              "vmagent: cannot set nf_conntrack_tcp_loose=0: mid-stream segments "
              "stay loose (a new connection)");
        }
      }
    }
    if (now >= next_facts) {
      RefreshFacts();
      next_facts = now + cfg_.facts_interval;
    }
    if (now >= next_chains) {
      auto chains = NftMonitor::ListForeignBaseChains(cfg_.render.table);
      std::vector<std::string> lines;
      if (chains.ok()) {
        for (const auto& c : *chains) {
          if (!c.on_input_or_output) continue;
          std::string line = c.family + " " + c.table + " " + c.chain + " hook " + c.hook +
                             " priority " + std::to_string(c.priority) + " policy " + c.policy;
          if (!known_foreign.count(line)) {
            spdlog::warn(
                "vmagent: another table's base chain on our hooks: {} (its drop wins "
                "over our accept)",
                line);
          }
          lines.push_back(line);
        }
        known_foreign = std::set<std::string>(lines.begin(), lines.end());
      }
      std::lock_guard<std::mutex> l(mu_);
      st_.foreign_base_chains = lines;
      next_chains = now + kForeignChainsEvery;
    }
    if (now >= next_status) {
      WriteStatus();
      next_status = now + cfg_.status_interval;
    }
  }
}

GuestAgentStatus GuestAgent::status() const {
  std::lock_guard<std::mutex> l(mu_);
  GuestAgentStatus s = st_;
  s.connected = session_ && session_->connected();
  s.audit_all = audit_all_;
  return s;
}

GuestAgent::Counters GuestAgent::ReadCounters() const {
  Counters out;
  std::lock_guard<std::mutex> l(mu_);
  if (!backend_ || !have_state_) return out;
  std::map<uint32_t, std::pair<std::string, std::string>> names;  // rule_num -> policy, rule
  for (const auto& rs : state_.rulesets()) {
    for (const auto& r : rs.rules()) names[r.rule_num()] = {r.policy_id(), r.rule_id()};
  }
  auto c = backend_->Counters();
  if (!c.ok()) return out;
  out.read = true;
  for (const auto& [num, rc] : c->rules) {
    auto n = names.find(num);
    out.rules.push_back({num, n == names.end() ? std::string() : n->second.first,
                         n == names.end() ? std::string("default") : n->second.second, rc.packets,
                         rc.bytes});
  }
  for (const auto& [reason, n] : c->drops) out.drops[reason] = n.packets;
  return out;
}

std::string GuestAgent::StatusJson() const {
  using nlohmann::json;
  GuestAgentStatus s = status();
  json j;
  j["vm"] = s.vm_id;
  j["host_id"] = "guest:" + s.vm_id;
  j["connected"] = s.connected;
  j["applied_revision"] = s.applied_revision;
  j["audit_all"] = s.audit_all;
  j["repairs"] = s.repairs;
  j["last_repair"] = s.last_repair;
  j["revalidated_deleted"] = s.revalidated_deleted;
  j["foreign_base_chains"] = s.foreign_base_chains;
  j["last_error"] = s.last_error;
  json rules = json::array();
  json drops = json::object();
  const Counters c = ReadCounters();
  for (const auto& r : c.rules) {
    rules.push_back({{"rule", r.rule_num},
                     {"name", r.policy.empty() ? r.rule : r.policy + "/" + r.rule},
                     {"packets", r.packets},
                     {"bytes", r.bytes}});
  }
  for (const auto& [reason, n] : c.drops) drops[reason] = n;
  j["rules"] = rules;
  j["drops"] = drops;
  if (flows_) {
    FlowMonitorStats f = flows_->stats();
    j["flow_records"] = f.records;
    j["flow_records_lost"] = f.queue_drops + f.nflog_overruns + f.conntrack_overruns;
  }
  return j.dump();
}

std::string GuestAgent::MetricsText() const {
  const GuestAgentStatus s = status();
  const Counters c = ReadCounters();
  metrics::Exposition e;
  auto one = [&](const char* name, const char* type, const char* help, double v) {
    e.Family(name, type, help);
    e.Sample(name, {}, v);
  };
  auto d = [](uint64_t v) { return static_cast<double>(v); };
  one("dfw_vmagent_controller_connected", "gauge",
      "1 while the session with the controller is open.", s.connected ? 1 : 0);
  one("dfw_vmagent_applied_revision", "gauge", "The revision nftables enforces.",
      d(s.applied_revision));
  one("dfw_vmagent_audit_all", "gauge", "1 during --audit-first: every drop and reject only logs.",
      s.audit_all ? 1 : 0);
  one("dfw_vmagent_repairs_total", "counter",
      "Times another process changed the agent's table and the agent put it back.", d(s.repairs));
  one("dfw_vmagent_revalidated_deleted_total", "counter",
      "Connections cut because the rules in force no longer allow them.", d(s.revalidated_deleted));
  one("dfw_vmagent_foreign_base_chains", "gauge",
      "Other tables' base chains on the agent's hooks (their drop wins over its accept).",
      d(s.foreign_base_chains.size()));
  one("dfw_vmagent_nft_up", "gauge",
      "1 when this scrape read the table's counters (else no rule or drop value is shown).",
      c.read ? 1 : 0);
  if (c.read) {
    // By policy and rule id (the default rule: policy "", rule "default");
    // the nft rules of one rule number are summed by the backend.
    metrics::RuleHits rules;
    for (const auto& r : c.rules) rules.Add(r.policy, r.rule, r.packets, r.bytes);
    rules.Write(e, "dfw_vmagent_",
                "Packets each policy rule matched in the guest's table, by policy and rule id.");
    e.Family("dfw_vmagent_drops_total", "counter",
             "Packets the guest's table dropped, by reason (a reason appears once counted).");
    for (const auto& [reason, n] : c.drops)
      e.Sample("dfw_vmagent_drops_total", {{"reason", reason}}, d(n));
  }
  if (flows_) {
    FlowMonitorStats f = flows_->stats();
    one("dfw_vmagent_flow_records_total", "counter", "Flow records written.", d(f.records));
    one("dfw_vmagent_flow_records_lost_total", "counter",
        "Flow records lost (queue full, NFLOG or conntrack event overruns).",
        d(f.queue_drops + f.nflog_overruns + f.conntrack_overruns));
  }
  return e.text();
}

void GuestAgent::WriteStatus() {
  if (cfg_.status_file.empty()) return;
  std::string tmp = cfg_.status_file + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    if (!f) return;
    f << StatusJson() << '\n';
  }
  std::error_code ec;
  std::filesystem::rename(tmp, cfg_.status_file, ec);
}

}  // namespace dfw::vmagent
