// The real edges (agent_edges.h): thin wrappers of today's classes.
#include "dfw/hostagent/agent_edges.h"

#include "absl/strings/str_cat.h"

#include "dfw/hostagent/dataplane_client.h"
#include "dfw/hostagent/host_agent.h"

namespace dfw::hostagent {
namespace {

class RealOvs final : public OvsEdge {
 public:
  explicit RealOvs(const HostAgentConfig& c)
      : db_socket_(c.ovsdb_socket),
        bridge_(c.bridge),
        ports_(c.firewall_ports),
        type_(c.firewall_port_type),
        openflow_target_(c.openflow_target) {
    options_.resize(ports_.size());
    for (size_t k = 0; k < ports_.size(); ++k) {
      if (c.firewall_port_type == "dpdkvhostuserclient" && k < c.firewall_sockets.size())
        options_[k]["vhost-server-path"] = c.firewall_sockets[k];
    }
  }
  void Start(std::function<void()> on_change) override {
    monitor_ = std::make_unique<ovs::OvsdbMonitor>(db_socket_);
    monitor_->SetCallback([cb = std::move(on_change)](const ovs::InterfaceDelta&) { cb(); });
    monitor_->Start();
  }
  void Stop() override {
    if (monitor_) monitor_->Stop();
  }
  bool synced() const override { return monitor_ && monitor_->synced(); }
  std::vector<ovs::OvsInterface> Snapshot() const override {
    return monitor_ ? monitor_->Snapshot() : std::vector<ovs::OvsInterface>{};
  }
  absl::Status CreateFirewallPorts() override {
    for (size_t k = 0; k < ports_.size(); ++k) {
      if (auto s = ovs::CreateFirewallPort(db_socket_, bridge_, ports_[k], type_, options_[k]);
          !s.ok())
        return absl::Status(s.code(), absl::StrCat("firewall port ", ports_[k], ": ", s.message()));
    }
    return absl::OkStatus();
  }
  absl::Status ConnectOpenFlow() override {
    if (of_) return absl::OkStatus();
    auto of = ovs::OpenFlowBridge::Connect(openflow_target_);
    if (!of.ok()) return of.status();
    of_ = std::move(*of);
    epoch_++;
    return absl::OkStatus();
  }
  bool openflow_connected() const override { return of_ != nullptr; }
  uint64_t openflow_epoch() const override { return epoch_; }
  absl::StatusOr<ovs::ReconcileResult> ReconcileFlows(
      const std::vector<ovs::FlowSpec>& desired) override {
    if (!of_)
      return absl::FailedPreconditionError("openflow: not connected to " + openflow_target_);
    auto r = of_->Reconcile(desired);
    if (!r.ok()) of_.reset();
    return r;
  }
  absl::Status SetPortNoFlood(uint32_t ofport, bool no_flood) override {
    return ovs::SetPortNoFlood(openflow_target_, ofport, no_flood);
  }
  absl::Status PacketOut(uint32_t ofport, const std::vector<uint8_t>& frame) override {
    // Its own connection: the reconcile thread owns the other one.
    auto of = ovs::OpenFlowBridge::Connect(openflow_target_);
    if (!of.ok()) return of.status();
    return (*of)->PacketOut(ofport, frame);
  }

 private:
  const std::string db_socket_, bridge_;
  const std::vector<std::string> ports_;
  const std::string type_, openflow_target_;
  std::vector<std::map<std::string, std::string>> options_;  // per port
  std::unique_ptr<ovs::OvsdbMonitor> monitor_;
  std::unique_ptr<ovs::OpenFlowBridge> of_;
  uint64_t epoch_ = 0;
};

class RealLibvirt final : public LibvirtEdge {
 public:
  explicit RealLibvirt(std::vector<std::string> uris) : inv_(std::move(uris)) {}
  absl::Status Start(std::function<void()> on_change) override {
    inv_.SetCallback(std::move(on_change));
    return inv_.Start();
  }
  void Stop() override { inv_.Stop(); }
  bool synced() const override { return inv_.synced(); }
  std::vector<Domain> Snapshot() const override { return inv_.Snapshot(); }
  LibvirtStats stats() const override { return inv_.stats(); }

 private:
  LibvirtInventory inv_;
};

class RealController final : public ControllerEdge {
 public:
  RealController(std::string target, std::shared_ptr<grpc::ChannelCredentials> creds)
      : session_(std::move(target), std::move(creds), ControllerSession::Hooks{}) {}
  void SetHooks(ControllerSession::Hooks hooks) override { session_.SetHooks(std::move(hooks)); }
  void Start() override { session_.Start(); }
  void Stop() override { session_.Stop(); }
  void Restart() override { session_.Restart(); }
  void SetInventory(std::vector<v1::Vm> vms) override { session_.SetInventory(std::move(vms)); }
  void SendConnections(v1::ConnectionExport msg) override {
    session_.SendConnections(std::move(msg));
  }
  bool SendFlows(const v1::FlowBatch& batch) override { return session_.SendFlows(batch); }
  bool SendProbeReport(const v1::ProbeReport& report) override {
    return session_.SendProbeReport(report);
  }
  uint64_t last_acked_revision() const override { return session_.last_acked_revision(); }
  bool connected() const override { return session_.connected(); }
  uint64_t sessions_opened() const override { return session_.sessions_opened(); }

 private:
  ControllerSession session_;
};

}  // namespace

absl::StatusOr<HostAgentEdges> MakeRealEdges(const HostAgentConfig& config) {
  HostAgentEdges e;
  e.dataplane = std::make_unique<DataplaneClient>(config.dataplane_target);
  e.ovs = std::make_unique<RealOvs>(config);
  if (!config.libvirt_uris.empty()) e.libvirt = std::make_unique<RealLibvirt>(config.libvirt_uris);
  if (!config.controller_target.empty()) {
    if (!config.controller_credentials) {
      return absl::InvalidArgumentError("controller_credentials: none for controller " +
                                        config.controller_target +
                                        " (TLS or explicit --insecure); nothing started");
    }
    e.controller =
        std::make_unique<RealController>(config.controller_target, config.controller_credentials);
  }
  return e;
}

}  // namespace dfw::hostagent
