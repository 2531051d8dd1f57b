#include "dfw/hostagent/host_agent.h"

#include <google/protobuf/util/message_differencer.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "dfw/hostagent/dataplane_client.h"

namespace dfw::hostagent {

using google::protobuf::util::MessageDifferencer;
using std::chrono::steady_clock;

HostAgent::HostAgent(HostAgentConfig config, HostAgentEdges edges)
    : config_(std::move(config)), edges_(std::move(edges)) {
  if (edges_.dataplane) {
    edges_.dataplane = MeterDataplane(std::move(edges_.dataplane), &dataplane_calls_);
  }
}

HostAgent::~HostAgent() { Stop(); }

absl::Status HostAgent::StartEdges() {
  if (!edges_.dataplane || !edges_.ovs) {
    return absl::InvalidArgumentError("host agent: edges: the dataplane and OVS are required");
  }
  edges_.ovs->Start([this] { MarkDirty(); });
  if (edges_.libvirt) {
    if (auto s = edges_.libvirt->Start([this] { MarkDirty(); }); !s.ok()) return s;
  }
  if (edges_.controller) {
    ControllerSession::Hooks hooks;
    hooks.hello = [this] { return BuildHello(); };
    hooks.apply = [this](const v1::ControllerToHost& m) { return Apply(m); };
    hooks.connections = [this](const v1::ConnectionImport& m) { OnImport(m); };
    relay_ = std::make_unique<FlowRelay>(edges_.dataplane.get(), edges_.controller.get());
    hooks.flow_watch = [this](bool on) { relay_->SetEnabled(on); };
    probes_ = std::make_unique<ProbeRunner>(
        edges_.dataplane.get(), edges_.ovs.get(),
        [c = edges_.controller.get()](const v1::ProbeReport& r) { return c->SendProbeReport(r); });
    hooks.probe = [this](const v1::ProbeRequest& r) { probes_->Submit(r); };
    edges_.controller->SetHooks(std::move(hooks));
    relay_->Start();
    probes_->Start();
  }
  return absl::OkStatus();
}

absl::Status HostAgent::Start() {
  if (auto s = StartEdges(); !s.ok()) return s;
  running_ = true;
  thread_ = std::thread([this] { Run(); });
  return absl::OkStatus();
}

void HostAgent::Stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (stop_) return;
    stop_ = true;
  }
  cv_.notify_all();
  {
    std::lock_guard<std::mutex> l(excluded_mu_);
    running_ = false;
  }
  pass_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (relay_) relay_->Stop();
  if (edges_.controller) edges_.controller->Stop();
  if (probes_) probes_->Stop();  // after the session: no Submit comes any more
  if (edges_.libvirt) edges_.libvirt->Stop();
  if (edges_.ovs) edges_.ovs->Stop();
}

HostView HostAgent::LastView() const {
  std::lock_guard<std::mutex> l(view_mu_);
  return last_view_;
}

HostAgentMetrics HostAgent::Metrics() const {
  HostAgentMetrics m;
  m.controller = edges_.controller != nullptr;
  if (edges_.controller) {
    m.controller_connected = edges_.controller->connected();
    m.sessions_opened = edges_.controller->sessions_opened();
    m.realized_revision = edges_.controller->last_acked_revision();
  }
  m.wanted_revision = wanted_revision_.load(std::memory_order_relaxed);
  for (size_t i = 0; i < apply_errors_.size(); ++i) {
    m.apply_errors[i] = apply_errors_[i].load(std::memory_order_relaxed);
  }
  {
    std::lock_guard<std::mutex> l(view_mu_);
    const bool steering = !last_view_.steering.firewall_ofports.empty();
    (steering ? m.vnics_steered : m.vnics_waiting) = last_view_.vnics.size();
    m.vnics_isolated = last_view_.steering.isolated_ofports.size();
    {
      std::lock_guard<std::mutex> e(excluded_mu_);
      m.vnics_excluded = steered_excluded_.size();
    }
    if (steering) m.vnics_steered -= std::min<uint64_t>(m.vnics_steered, m.vnics_excluded);
    for (const auto& vm : last_view_.vms) {
      for (const auto& n : vm.vnics()) m.vnics_not_on_bridge += n.ovs_port().empty();
    }
    m.vms = last_view_.vms.size();
    m.view_errors = last_view_.errors.size();
  }
  m.reconcile_passes = passes_.load();
  m.flow_bundles = bundles_.load();
  m.migration = migration_stats();
  if (relay_) {
    const FlowRelay::Stats fs = relay_->stats();
    m.flow_watch = relay_->enabled();
    m.flow_records_sent = fs.records;
    m.flow_records_lost = fs.lost;
  }
  m.libvirt = edges_.libvirt != nullptr;
  if (edges_.libvirt) m.libvirt_stats = edges_.libvirt->stats();
  m.dataplane_calls = &dataplane_calls_;
  return m;
}

absl::StatusOr<v1::CountersResponse> HostAgent::DataplaneCounters(
    std::chrono::milliseconds deadline) {
  return edges_.dataplane->Counters(deadline);
}

MigrationStats HostAgent::migration_stats() const {
  MigrationStats s;
  s.exports = exports_.load();
  s.export_failures = export_failures_.load();
  s.entries_exported = entries_exported_.load();
  s.entries_imported = entries_imported_.load();
  s.entries_rejected = entries_rejected_.load();
  s.entries_expired = entries_expired_.load();
  return s;
}

void HostAgent::MarkDirty() {
  {
    std::lock_guard<std::mutex> l(mu_);
    dirty_ = true;
  }
  cv_.notify_all();
}

void HostAgent::Run() {
  for (;;) {
    {
      std::unique_lock<std::mutex> l(mu_);
      cv_.wait_for(l, config_.resync_interval, [this] { return dirty_ || stop_; });
      if (stop_) return;
      dirty_ = false;
    }
    Pass();
  }
}

void HostAgent::Pass() {
  uint64_t pass;
  {
    std::lock_guard<std::mutex> l(excluded_mu_);
    pass = ++passes_begun_;
  }
  Reconcile();
  {
    std::lock_guard<std::mutex> l(excluded_mu_);
    passes_done_ = pass;
  }
  pass_cv_.notify_all();
  // The first Hello must carry the whole inventory: a Hello without the
  // VMs would tell the controller they left this host.
  bool ready = edges_.ovs->synced() && (!edges_.libvirt || edges_.libvirt->synced());
  if (edges_.controller && ready && !session_started_) {
    edges_.controller->Start();
    session_started_ = true;
  }
}

void HostAgent::Reconcile() {
  passes_++;
  ExpireImports();
  if (!edges_.ovs->synced()) return;
  if (!firewall_port_created_) {
    if (auto s = edges_.ovs->CreateFirewallPorts(); !s.ok()) {
      spdlog::error("ovs: on {}: {}", config_.bridge, s.ToString());
      return;
    }
    firewall_port_created_ = true;
  }
  std::vector<Domain> domains;
  if (edges_.libvirt) domains = edges_.libvirt->Snapshot();
  std::vector<ovs::OvsInterface> rows = edges_.ovs->Snapshot();
  HostView view = ComputeHostView(domains, rows, config_.firewall_ports, config_.host_id);
  if (view.errors != last_errors_) {
    for (const auto& e : view.errors) spdlog::error("host view: {}", e);
    last_errors_ = view.errors;
  }
  bool inventories_synced = !edges_.libvirt || edges_.libvirt->synced();
  SyncDataplane(view, inventories_synced);
  SyncFlows(view, rows);
  if (inventories_synced) ExportAndRemove(view);
  std::lock_guard<std::mutex> l(view_mu_);
  last_view_ = std::move(view);
}

void HostAgent::SyncDataplane(const HostView& view, bool inventories_synced) {
  auto st = edges_.dataplane->GetState(false);
  if (!st.ok()) {
    if (dataplane_up_) spdlog::warn("dataplane: {}", st.status().ToString());
    dataplane_up_ = false;
    return;
  }
  bool restarted = dataplane_up_ && st->instance_id() != dataplane_instance_;
  // What the dataplane holds as excluded is what steering bypasses it for;
  // while it is unreachable the last known list stays.
  excluded_ = {st->excluded_vnics().begin(), st->excluded_vnics().end()};
  if (st->firewall_ports() != dataplane_ports_) {
    dataplane_ports_ = st->firewall_ports();
    const size_t ours = config_.firewall_ports.size();
    if (dataplane_ports_ > ours) {
      spdlog::error(
          "dataplane: its workers read {} firewall ports, this agent makes {} (--firewall-ports): "
          "what the workers without a port send back is lost; give --firewall-ports {}",
          dataplane_ports_, ours, dataplane_ports_);
    } else if (dataplane_ports_ != 0 && dataplane_ports_ < ours) {
      spdlog::warn(
          "dataplane: its workers read {} firewall ports, this agent has {} (--firewall-ports): "
          "steering to the first {} only",
          dataplane_ports_, ours, dataplane_ports_);
    }
  }
  dataplane_instance_ = st->instance_id();
  if (!dataplane_up_ || restarted) {
    spdlog::info("dataplane: reachable at {} (instance {:x}{}, revision {}, {} vNICs{})",
                 edges_.dataplane->target(), st->instance_id(), restarted ? ", restarted" : "",
                 st->applied_revision(), st->vnics_size(),
                 st->restored() ? ", restored from its state dir" : "");
    dataplane_up_ = true;
    // What the dataplane has (persisted, or from an agent before us) is what
    // we compare against; anything we no longer want is removed later.
    pushed_.clear();
    {
      std::lock_guard<std::mutex> l(imports_mu_);
      known_.clear();
    }
    for (const auto& v : st->vnics()) {
      pushed_[v.id()] = v;
      SetKnown(v.id(), true);
    }
    // A dataplane that lost its state (a restart with less than was acked,
    // or one we saw down and back) while a session runs: get a full one.
    if (edges_.controller && st->applied_revision() < edges_.controller->last_acked_revision()) {
      spdlog::warn("dataplane: holds revision {} < {} acked; asking the controller again",
                   st->applied_revision(), edges_.controller->last_acked_revision());
      edges_.controller->Restart();
    }
  } else {
    // Same instance: a vNIC it no longer has (removed by someone else) is
    // pushed again.
    std::set<std::string> has;
    for (const auto& v : st->vnics()) has.insert(v.id());
    for (auto it = pushed_.begin(); it != pushed_.end();) {
      if (has.count(it->first)) {
        ++it;
        continue;
      }
      SetKnown(it->first, false);
      it = pushed_.erase(it);
    }
  }
  for (const auto& v : view.vnics) {
    auto it = pushed_.find(v.id());
    if (it != pushed_.end() && MessageDifferencer::Equals(it->second, v)) continue;
    // Until every libvirt URI has been read, a vNIC's bound addresses may be
    // missing from the view: new vNICs go to the dataplane (so they are
    // steered, fail closed), but what it already has is not overwritten.
    if (it != pushed_.end() && !inventories_synced) continue;
    auto s = edges_.dataplane->SetVnic(v);
    if (!s.ok()) {
      spdlog::error("dataplane: vNIC {}: {}", v.id(), s.ToString());
      if (IsUnreachable(s)) {
        dataplane_up_ = false;
        return;
      }
      continue;
    }
    spdlog::info("dataplane: vNIC {} local id {} mac {} ({} addresses)", v.id(), v.local_id(),
                 v.mac(), v.bound_ips_size());
    pushed_[v.id()] = v;
    SetKnown(v.id(), true);  // imports kept for it go now, before its flows
  }
}

void HostAgent::SyncFlows(const HostView& view, const std::vector<ovs::OvsInterface>& rows) {
  // A firewall port without an ofport yet: nothing to steer to (the flows
  // installed last stay).
  if (view.steering.firewall_ofports.empty()) return;
  // Never steer a vNIC to a port the dataplane does not read: with fewer
  // ports there (e.g. one port of N queues), the first ones only.
  ovs::SteeringConfig steering = view.steering;
  if (dataplane_ports_ >= 1 && dataplane_ports_ < steering.firewall_ofports.size())
    steering.firewall_ofports.resize(dataplane_ports_);
  // vNICs on the exclusion list (the dataplane holds an excluded ruleset for
  // them): past the dataplane, behind OVS port security on the addresses the
  // dataplane accepted for them (valid, none bound to another vNIC: a bad
  // report cannot stop the steering of the whole bridge).
  std::set<std::string> excluded_ids;
  if (!excluded_.empty()) {
    std::map<uint32_t, const v1::DataplaneVNic*> by_local_id;
    for (const auto& v : view.vnics) by_local_id[v.local_id()] = &v;
    for (auto& s : steering.vnics) {
      auto it = by_local_id.find(s.local_id);
      if (it == by_local_id.end() || !excluded_.count(it->second->id())) continue;
      s.excluded = true;
      if (auto p = pushed_.find(it->second->id()); p != pushed_.end()) {
        s.addresses.assign(p->second.bound_ips().begin(), p->second.bound_ips().end());
      }
      excluded_ids.insert(it->second->id());
    }
  }
  {
    std::lock_guard<std::mutex> l(excluded_mu_);
    wanted_excluded_ = excluded_ids;  // what Apply compares the installed steering with
  }
  auto desired = ovs::ComputeSteeringFlows(steering);
  if (!desired.ok()) {
    spdlog::error("steering: {}", desired.status().ToString());
    return;
  }
  // The ports NORMAL must never flood to: the firewall port, every steered
  // vNIC (broadcasts reach them through the dataplane) and every isolated VM
  // port (nothing may reach it at all), each named by its OVSDB row (a port
  // re-created under the same ofport needs it again).
  // An excluded vNIC's port is flooded to again (set after the flows that
  // take it past the dataplane; before them it would get floods unfiltered).
  std::map<uint32_t, std::string> want_no_flood, want_flood;
  {
    std::map<int64_t, std::string> row_of;
    for (const auto& r : rows) row_of[r.ofport] = r.uuid;
    for (uint32_t fw : view.steering.firewall_ofports) want_no_flood[fw] = row_of[fw];
    for (const auto& v : steering.vnics) {
      (v.excluded ? want_flood : want_no_flood)[v.ofport] = row_of[v.ofport];
    }
    for (uint32_t p : view.steering.isolated_ofports) want_no_flood[p] = row_of[p];
  }
  auto now = steady_clock::now();
  bool due = now - last_flow_check_ >= config_.resync_interval;
  // Every `resync_interval` the flows are dumped and compared. After an
  // ovs-vswitchd restart that fails on the old connection: it is dropped and
  // a new one tried at once, which sets no-flood again (OVS kept it in
  // memory) and reinstalls the flows (the new ovs-vswitchd has none).
  // What the installed steering bypasses the dataplane for, once the flows
  // and the excluded ports' flooding match `excluded_ids` (Apply waits for it).
  auto steered = [&] {
    std::lock_guard<std::mutex> l(excluded_mu_);
    if (steered_excluded_ == excluded_ids) return;
    for (const auto& id : excluded_ids) {
      if (!steered_excluded_.count(id))
        spdlog::warn("steering: vNIC {} excluded: past the dataplane", id);
    }
    for (const auto& id : steered_excluded_) {
      if (!excluded_ids.count(id))
        spdlog::info("steering: vNIC {} through the dataplane again", id);
    }
    steered_excluded_ = excluded_ids;
  };
  if (have_installed_ && *desired == installed_ && !due && edges_.ovs->openflow_connected() &&
      no_flood_epoch_ == edges_.ovs->openflow_epoch() && no_flood_ == want_no_flood &&
      flood_ == want_flood) {
    steered();
    return;
  }
  absl::StatusOr<ovs::ReconcileResult> r;
  for (;;) {
    bool was_connected = edges_.ovs->openflow_connected();
    if (auto s = edges_.ovs->ConnectOpenFlow(); !s.ok()) {
      spdlog::error("openflow: {}", s.ToString());
      return;
    }
    if (no_flood_epoch_ != edges_.ovs->openflow_epoch()) {
      no_flood_.clear();  // ovs-vswitchd may have restarted: set it again
      flood_.clear();
      no_flood_epoch_ = edges_.ovs->openflow_epoch();
    }
    // Before the flows: a new vNIC port never gets a flood from NORMAL.
    for (auto it = no_flood_.begin(); it != no_flood_.end();) {
      it = want_no_flood.count(it->first) ? std::next(it) : no_flood_.erase(it);
    }
    for (const auto& [ofport, row] : want_no_flood) {
      auto it = no_flood_.find(ofport);
      if (it != no_flood_.end() && it->second == row) continue;
      if (auto s = edges_.ovs->SetPortNoFlood(ofport, true); !s.ok()) {
        spdlog::error("openflow: no-flood on ofport {}: {}", ofport, s.ToString());
        continue;  // retried next pass
      }
      no_flood_[ofport] = row;
    }
    r = edges_.ovs->ReconcileFlows(*desired);
    if (r.ok()) break;
    spdlog::error("openflow: reconcile: {}", r.status().ToString());
    if (!was_connected) return;  // a fresh connection failed: next pass
  }
  last_flow_check_ = now;
  if (r->bundles > 0) {
    bundles_ += r->bundles;
    spdlog::info("openflow: steering reconciled: {} kept, {} added, {} modified, {} deleted",
                 r->kept, r->added, r->modified, r->deleted);
  }
  installed_ = std::move(*desired);
  have_installed_ = true;
  // Excluded vNICs' ports: flooded to again, now that their flows bypass
  // the dataplane.
  std::erase_if(flood_, [&](const auto& kv) { return !want_flood.count(kv.first); });
  bool flood_done = true;
  for (const auto& [ofport, row] : want_flood) {
    auto it = flood_.find(ofport);
    if (it != flood_.end() && it->second == row) continue;
    if (auto s = edges_.ovs->SetPortNoFlood(ofport, false); !s.ok()) {
      spdlog::error("openflow: flood on excluded vNIC's ofport {}: {}", ofport, s.ToString());
      flood_done = false;
      continue;  // retried next pass
    }
    flood_[ofport] = row;
  }
  if (flood_done) steered();
}

void HostAgent::ExportAndRemove(const HostView& view) {
  std::set<std::string> vms_now;
  for (const auto& vm : view.vms) {
    vms_now.insert(vm.id());
    for (const auto& n : vm.vnics()) {
      vnic_vm_[n.id()] = vm.id();
      exported_.erase(n.id());  // (back) in a VM: a later departure exports again
    }
  }
  if (dataplane_up_) {
    // A VM gone from libvirt whose port is still on the bridge: its
    // connections go now, before the report that removes it.
    for (const auto& [vnic, vm] : vnic_vm_) {
      if (reported_vms_.count(vm) && !vms_now.count(vm) && pushed_.count(vnic) &&
          !exported_.count(vnic))
        ExportVnic(vnic);
    }
    // vNICs that left: their flows are gone now; their connections go to the
    // controller, then the dataplane forgets them.
    std::set<std::string> want;
    for (const auto& v : view.vnics) want.insert(v.id());
    for (auto it = pushed_.begin(); it != pushed_.end();) {
      const std::string id = it->first;
      if (want.count(id)) {
        ++it;
        continue;
      }
      if (!exported_.count(id)) ExportVnic(id);
      auto s = edges_.dataplane->RemoveVnic(id);
      if (!s.ok() && IsUnreachable(s)) {
        dataplane_up_ = false;
        break;
      }
      spdlog::info("dataplane: vNIC {} removed", id);
      it = pushed_.erase(it);
      SetKnown(id, false);
      exported_.erase(id);
      vnic_vm_.erase(id);
    }
  }
  for (auto it = vnic_vm_.begin(); it != vnic_vm_.end();) {
    bool keep = vms_now.count(it->second) || pushed_.count(it->first);
    it = keep ? std::next(it) : vnic_vm_.erase(it);
  }
  if (edges_.controller) edges_.controller->SetInventory(view.vms);
  reported_vms_ = std::move(vms_now);
}

void HostAgent::ExportVnic(const std::string& vnic_id) {
  if (!edges_.controller) return;  // nobody to hand them to
  auto vm = vnic_vm_.find(vnic_id);
  if (vm == vnic_vm_.end()) return;  // never reported in a VM: nothing moves with it
  exported_.insert(vnic_id);
  auto r = edges_.dataplane->ExportConnections(vnic_id);
  if (!r.ok()) {
    // Fail closed: the VM moves without its connections (the new host's
    // strict TCP drops their next packets); the removal goes on.
    spdlog::error("dataplane: export of vNIC {} (VM {}): {}; it is removed without them", vnic_id,
                  vm->second, r.status().ToString());
    export_failures_++;
    return;
  }
  const int n = r->entries_size();
  int i = 0;
  int chunks = 0;
  do {
    v1::ConnectionExport m;
    m.set_vm_id(vm->second);
    m.set_vnic_id(vnic_id);
    const int end = std::min(n, i + kExportChunk);
    for (; i < end; ++i) *m.add_entries() = std::move(*r->mutable_entries(i));
    if (i == n) {
      m.set_last(true);
      m.set_total(std::max<uint32_t>(r->total(), static_cast<uint32_t>(n)));
    }
    edges_.controller->SendConnections(std::move(m));
    chunks++;
  } while (i < n);
  exports_++;
  entries_exported_ += static_cast<uint64_t>(n);
  spdlog::info(
      "dataplane: vNIC {} (VM {}): {} connections exported to the controller ({} "
      "messages)",
      vnic_id, vm->second, n, chunks);
}

v1::HostHello HostAgent::BuildHello() {
  v1::HostHello hello;
  hello.mutable_host()->set_id(config_.host_id);
  hello.mutable_host()->set_hostname(config_.hostname);
  {
    std::lock_guard<std::mutex> l(view_mu_);
    for (const auto& vm : last_view_.vms) *hello.add_vms() = vm;
  }
  // The revision held and what it consists of: a controller that did not
  // send it (restarted, or newly elected) answers with what differs.
  // After a delta the dataplane refused, no digests: a full state repairs
  // whatever made it refuse (a resume would send a delta again).
  const bool digests = !want_full_.load();
  auto st = edges_.dataplane->GetState(digests);
  if (st.ok()) {
    hello.set_held_revision(st->applied_revision());
    if (digests && st->applied_revision() != 0) {
      *hello.mutable_held() = std::move(*st->mutable_held());
    }
  }
  return hello;
}

absl::StatusOr<uint64_t> HostAgent::Apply(const v1::ControllerToHost& msg) {
  v1::SetStateRequest req;
  if (msg.has_full()) {
    *req.mutable_full() = msg.full();
  } else if (msg.has_delta()) {
    *req.mutable_delta() = msg.delta();
  } else {
    apply_errors_[HostAgentMetrics::kApplyInvalid]++;
    return absl::InvalidArgumentError("controller message: neither a full state nor a delta");
  }
  wanted_revision_.store(msg.has_full() ? msg.full().revision() : msg.delta().to_revision(),
                         std::memory_order_relaxed);
  auto t0 = steady_clock::now();
  auto r = edges_.dataplane->SetState(req);
  if (!r.ok()) {
    apply_errors_[IsUnreachable(r.status()) ? HostAgentMetrics::kApplyUnreachable
                                            : HostAgentMetrics::kApplyRefused]++;
  }
  if (!r.ok() && msg.has_delta()) want_full_ = true;
  if (r.ok() && msg.has_full()) want_full_ = false;
  if (r.ok()) {
    auto us = std::chrono::duration_cast<std::chrono::microseconds>(steady_clock::now() - t0);
    spdlog::info("dataplane: revision {} enforced ({} in {} us)", *r,
                 msg.has_full() ? "full state" : "delta", us.count());
    if (auto s = AwaitExclusionSteering(msg); !s.ok()) return s;
  }
  return r;
}

absl::Status HostAgent::AwaitExclusionSteering(const v1::ControllerToHost& msg) {
  if (!running_.load()) return absl::OkStatus();  // no reconcile thread (tests driving Pass)
  std::unique_lock<std::mutex> l(excluded_mu_);
  // Does the revision exclude a vNIC, or take one off the list?
  bool touches = false;
  auto check = [&](const v1::VNicRuleset& rs) {
    touches = touches || rs.excluded() || steered_excluded_.count(rs.vnic_id()) > 0;
  };
  if (msg.has_full()) {
    touches = !steered_excluded_.empty();
    for (const auto& rs : msg.full().rulesets()) check(rs);
  } else {
    for (const auto& rs : msg.delta().rulesets_set()) check(rs);
    for (const auto& id : msg.delta().rulesets_removed()) {
      touches = touches || steered_excluded_.count(id) > 0;
    }
  }
  if (!touches) return absl::OkStatus();
  // The revision is realized once steering matches it: a pass begun after
  // the dataplane took it (it reads the dataplane's excluded vNICs).
  const uint64_t begun = passes_begun_;
  l.unlock();
  MarkDirty();
  l.lock();
  if (!pass_cv_.wait_for(l, kExclusionSteeringWait,
                         [&] { return passes_done_ > begun || !running_.load(); }) ||
      passes_done_ <= begun || steered_excluded_ != wanted_excluded_) {
    return absl::UnavailableError(
        "steering: the exclusion list's flows are not installed in OVS yet (the dataplane "
        "enforces the revision; vNICs keep their previous steering)");
  }
  return absl::OkStatus();
}

void HostAgent::OnImport(const v1::ConnectionImport& msg) {
  const std::string& id = msg.vnic_id();
  {
    std::lock_guard<std::mutex> l(imports_mu_);
    if (!known_.count(id)) {
      // Kept for the pass that gives the dataplane this vNIC (bounded).
      auto it = pending_.find(id);
      if (it == pending_.end() && pending_.size() >= kMaxPendingImportVnics) {
        spdlog::warn("import: {} vNICs already waiting; connections of vNIC {} (VM {}) dropped",
                     pending_.size(), id, msg.vm_id());
        entries_rejected_ += static_cast<uint64_t>(msg.entries_size());
        return;
      }
      if (it == pending_.end()) {
        it = pending_.emplace(id, PendingImport{steady_clock::now(), {}}).first;
      }
      size_t room = kMaxPendingImportEntries - it->second.entries.size();
      size_t take = std::min(room, static_cast<size_t>(msg.entries_size()));
      it->second.entries.insert(it->second.entries.end(), msg.entries().begin(),
                                msg.entries().begin() + static_cast<int>(take));
      entries_rejected_ += static_cast<uint64_t>(msg.entries_size()) - take;
      MarkDirty();
      return;
    }
  }
  ImportNow(id, {msg.entries().begin(), msg.entries().end()});
}

void HostAgent::SetKnown(const std::string& vnic_id, bool known) {
  std::vector<v1::ConnectionEntry> take;
  {
    std::lock_guard<std::mutex> l(imports_mu_);
    if (!known) {
      known_.erase(vnic_id);
      return;
    }
    known_.insert(vnic_id);
    auto it = pending_.find(vnic_id);
    if (it == pending_.end()) return;
    take = std::move(it->second.entries);
    pending_.erase(it);
  }
  ImportNow(vnic_id, take);
}

void HostAgent::ImportNow(const std::string& vnic_id,
                          const std::vector<v1::ConnectionEntry>& entries) {
  for (size_t i = 0; i < entries.size();) {
    v1::ImportConnectionsRequest req;
    req.set_vnic_id(vnic_id);
    const size_t end = std::min(entries.size(), i + kExportChunk);
    for (; i < end; ++i) *req.add_entries() = entries[i];
    auto r = edges_.dataplane->ImportConnections(req);
    if (!r.ok()) {
      spdlog::error("dataplane: import of {} connections for vNIC {}: {}", req.entries_size(),
                    vnic_id, r.status().ToString());
      entries_rejected_ += static_cast<uint64_t>(req.entries_size());
      continue;
    }
    entries_imported_ += r->imported();
    entries_rejected_ += r->rejected_count();
    if (r->rejected_count() > 0) {
      spdlog::warn("dataplane: vNIC {}: {} of {} connections rejected (first: {})", vnic_id,
                   r->rejected_count(), req.entries_size(),
                   r->rejected_size() > 0 ? r->rejected(0) : std::string("?"));
    }
  }
}

void HostAgent::ExpireImports() {
  auto now = steady_clock::now();
  std::lock_guard<std::mutex> l(imports_mu_);
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (now - it->second.since < config_.import_ttl) {
      ++it;
      continue;
    }
    spdlog::warn("import: vNIC {} did not come within {} ms: {} connections dropped", it->first,
                 config_.import_ttl.count(), it->second.entries.size());
    entries_expired_ += it->second.entries.size();
    it = pending_.erase(it);
  }
}

}  // namespace dfw::hostagent
