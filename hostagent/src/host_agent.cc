#include "dfw/hostagent/host_agent.h"

#include <google/protobuf/util/message_differencer.h>
#include <spdlog/spdlog.h>

#include <set>

namespace dfw::hostagent {

using google::protobuf::util::MessageDifferencer;
using std::chrono::steady_clock;

HostAgent::HostAgent(HostAgentConfig config)
    : config_(std::move(config)), dataplane_(config_.dataplane_target) {}

HostAgent::~HostAgent() { Stop(); }

absl::Status HostAgent::Start() {
  ovsdb_ = std::make_unique<ovs::OvsdbMonitor>(config_.ovsdb_socket);
  ovsdb_->SetCallback([this](const ovs::InterfaceDelta&) { MarkDirty(); });
  ovsdb_->Start();
  if (!config_.libvirt_uris.empty()) {
    libvirt_ = std::make_unique<LibvirtInventory>(config_.libvirt_uris);
    libvirt_->SetCallback([this] { MarkDirty(); });
    if (auto s = libvirt_->Start(); !s.ok()) return s;
  }
  if (!config_.controller_target.empty()) {
    if (!config_.controller_credentials) {
      return absl::InvalidArgumentError("controller: no credentials (TLS or explicit --insecure)");
    }
    session_ = std::make_unique<ControllerSession>(
        config_.controller_target, config_.controller_credentials,
        ControllerSession::Hooks{[this] { return BuildHello(); },
                                 [this](const v1::ControllerToHost& m) { return Apply(m); }});
  }
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
  if (thread_.joinable()) thread_.join();
  if (session_) session_->Stop();
  if (libvirt_) libvirt_->Stop();
  if (ovsdb_) ovsdb_->Stop();
}

HostView HostAgent::LastView() const {
  std::lock_guard<std::mutex> l(view_mu_);
  return last_view_;
}

void HostAgent::MarkDirty() {
  {
    std::lock_guard<std::mutex> l(mu_);
    dirty_ = true;
  }
  cv_.notify_all();
}

void HostAgent::Run() {
  bool session_started = false;
  for (;;) {
    {
      std::unique_lock<std::mutex> l(mu_);
      cv_.wait_for(l, config_.resync_interval, [this] { return dirty_ || stop_; });
      if (stop_) return;
      dirty_ = false;
    }
    Reconcile();
    // The first Hello must carry the whole inventory: a Hello without the
    // VMs would tell the controller they left this host.
    bool ready = ovsdb_->synced() && (!libvirt_ || libvirt_->synced());
    if (session_ && ready && !session_started) {
      session_->Start();
      session_started = true;
    }
  }
}

void HostAgent::Reconcile() {
  passes_++;
  if (!ovsdb_->synced()) return;
  if (!firewall_port_created_) {
    std::map<std::string, std::string> options;
    if (config_.firewall_port_type == "dpdkvhostuserclient" && !config_.firewall_socket.empty())
      options["vhost-server-path"] = config_.firewall_socket;
    auto s = ovs::CreateFirewallPort(config_.ovsdb_socket, config_.bridge, config_.firewall_port,
                                     config_.firewall_port_type, options);
    if (!s.ok()) {
      spdlog::error("ovs: firewall port {} on {}: {}", config_.firewall_port, config_.bridge,
                    s.ToString());
      return;
    }
    firewall_port_created_ = true;
  }
  std::vector<Domain> domains;
  if (libvirt_) domains = libvirt_->Snapshot();
  HostView view =
      ComputeHostView(domains, ovsdb_->Snapshot(), config_.firewall_port, config_.host_id);
  if (view.errors != last_errors_) {
    for (const auto& e : view.errors) spdlog::error("host view: {}", e);
    last_errors_ = view.errors;
  }
  bool inventories_synced = !libvirt_ || libvirt_->synced();
  SyncDataplane(view, inventories_synced);
  SyncFlows(view);
  // vNICs that left: their flows are gone now; the dataplane forgets them.
  if (dataplane_up_ && inventories_synced) {
    std::set<std::string> want;
    for (const auto& v : view.vnics) want.insert(v.id());
    for (auto it = pushed_.begin(); it != pushed_.end();) {
      if (want.count(it->first)) {
        ++it;
        continue;
      }
      auto s = dataplane_.RemoveVnic(it->first);
      if (!s.ok() && IsUnreachable(s)) {
        dataplane_up_ = false;
        break;
      }
      spdlog::info("dataplane: vNIC {} removed", it->first);
      it = pushed_.erase(it);
    }
  }
  if (session_ && inventories_synced) session_->SetInventory(view.vms);
  std::lock_guard<std::mutex> l(view_mu_);
  last_view_ = std::move(view);
}

void HostAgent::SyncDataplane(const HostView& view, bool inventories_synced) {
  auto counters = dataplane_.Counters();
  if (!counters.ok()) {
    if (dataplane_up_) spdlog::warn("dataplane: {}", counters.status().ToString());
    dataplane_up_ = false;
    return;
  }
  if (!dataplane_up_) {
    spdlog::info("dataplane: reachable at {} (revision {}, {} vNICs)", dataplane_.target(),
                 counters->applied_revision(), counters->vnics_size());
    dataplane_up_ = true;
    // What the dataplane has (persisted, or from an agent before us) is what
    // we compare against; anything we no longer want is removed later.
    pushed_.clear();
    for (const auto& v : counters->vnics()) pushed_[v.vnic_id()] = v1::DataplaneVNic();
    // A dataplane that lost its state while a session runs: get a full one.
    if (session_ && counters->applied_revision() < session_->last_acked_revision()) {
      spdlog::warn("dataplane: holds revision {} < {} acked; asking the controller again",
                   counters->applied_revision(), session_->last_acked_revision());
      session_->Restart();
    }
  } else {
    // A dataplane restarted between two passes keeps its persisted vNICs;
    // one that lost them gets them again.
    std::set<std::string> has;
    for (const auto& v : counters->vnics()) has.insert(v.vnic_id());
    for (auto it = pushed_.begin(); it != pushed_.end();) {
      it = has.count(it->first) ? std::next(it) : pushed_.erase(it);
    }
  }
  for (const auto& v : view.vnics) {
    auto it = pushed_.find(v.id());
    if (it != pushed_.end() && MessageDifferencer::Equals(it->second, v)) continue;
    // Until every libvirt URI has been read, a vNIC's bound addresses may be
    // missing from the view: new vNICs go to the dataplane (so they are
    // steered, fail closed), but what it already has is not overwritten.
    if (it != pushed_.end() && !inventories_synced) continue;
    auto s = dataplane_.SetVnic(v);
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
  }
}

void HostAgent::SyncFlows(const HostView& view) {
  if (view.firewall_ofport <= 0) return;  // no firewall port yet: nothing to steer to
  auto desired = ovs::ComputeSteeringFlows(view.steering);
  if (!desired.ok()) {
    spdlog::error("steering: {}", desired.status().ToString());
    return;
  }
  auto now = steady_clock::now();
  bool due = now - last_flow_check_ >= config_.resync_interval;
  // Every `resync_interval` the flows are dumped and compared. After an
  // ovs-vswitchd restart that fails on the old connection: it is dropped and
  // a new one tried at once, which reinstalls the flows (the new
  // ovs-vswitchd has none) and sets no-flood again (OVS kept it in memory).
  if (have_installed_ && *desired == installed_ && !due && of_ &&
      no_flood_ofport_ == view.firewall_ofport)
    return;
  absl::StatusOr<ovs::ReconcileResult> r;
  for (bool was_connected = of_ != nullptr;; was_connected = false) {
    if (!of_) {
      auto of = ovs::OpenFlowBridge::Connect(config_.openflow_target);
      if (!of.ok()) {
        spdlog::error("openflow: {}", of.status().ToString());
        return;
      }
      of_ = std::move(*of);
      no_flood_ofport_ = -1;  // ovs-vswitchd may have restarted: set it again
    }
    r = of_->Reconcile(*desired);
    if (r.ok()) break;
    spdlog::error("openflow: reconcile: {}", r.status().ToString());
    of_.reset();
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
  if (no_flood_ofport_ != view.firewall_ofport) {
    auto s =
        ovs::SetPortNoFlood(config_.openflow_target, static_cast<uint32_t>(view.firewall_ofport));
    if (s.ok()) {
      no_flood_ofport_ = view.firewall_ofport;
    } else {
      spdlog::error("openflow: no-flood on the firewall port: {}", s.ToString());
    }
  }
}

v1::HostHello HostAgent::BuildHello() {
  v1::HostHello hello;
  hello.mutable_host()->set_id(config_.host_id);
  hello.mutable_host()->set_hostname(config_.hostname);
  {
    std::lock_guard<std::mutex> l(view_mu_);
    for (const auto& vm : last_view_.vms) *hello.add_vms() = vm;
  }
  auto counters = dataplane_.Counters();
  hello.set_held_revision(counters.ok() ? counters->applied_revision() : 0);
  return hello;
}

absl::StatusOr<uint64_t> HostAgent::Apply(const v1::ControllerToHost& msg) {
  v1::SetStateRequest req;
  if (msg.has_full()) {
    *req.mutable_full() = msg.full();
  } else if (msg.has_delta()) {
    *req.mutable_delta() = msg.delta();
  } else {
    return absl::InvalidArgumentError("controller message: neither a full state nor a delta");
  }
  auto t0 = steady_clock::now();
  auto r = dataplane_.SetState(req);
  if (r.ok()) {
    auto us = std::chrono::duration_cast<std::chrono::microseconds>(steady_clock::now() - t0);
    spdlog::info("dataplane: revision {} enforced ({} in {} us)", *r,
                 msg.has_full() ? "full state" : "delta", us.count());
  }
  return r;
}

}  // namespace dfw::hostagent
