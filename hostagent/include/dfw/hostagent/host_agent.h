// HostAgent: dfw-hostagent's core — keeps this hypervisor's firewall in step
// with libvirt, OVS, the dataplane and the controller.
//
// What it does, each time something changes (and every few seconds, to
// repair drift):
//  1. makes sure the firewall port (the dataplane's vhost-user port, OVS the
//     client of the dataplane's socket) exists on the bridge and is
//     `no-flood` (again after ovs-vswitchd restarted: OVS keeps no-flood in
//     memory only);
//  2. joins libvirt's domains with OVS's Interface rows (host_view.h);
//  3. tells the dataplane each vNIC (steering id = ofport, MAC, bound
//     addresses) before any flow steers it there, and forgets vNICs that left;
//  4. reconciles the steering flows with one atomic OpenFlow bundle (correct
//     flows are kept, stale ones removed, missing ones added: a restarted
//     agent changes nothing that is right);
//  5. reports the VMs to the controller; applies the controller's full states
//     and deltas to the dataplane and acks them.
//
// Holds no state a restart would lose: the dataplane persists what it
// enforces, OVS keeps ports and flows. While the controller is away the
// dataplane keeps enforcing the last state; while the dataplane is away
// steered traffic is dropped (fail closed) and the agent retries.
//
// Thread safety. Start() starts the reconcile thread, the OVSDB monitor's
// thread, libvirt's event thread and the controller session's thread; they
// hand work to the reconcile thread through a dirty flag. Stop() from any
// thread, once. The accessors are for tests and status lines.
#pragma once

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "dfw/hostagent/controller_session.h"
#include "dfw/hostagent/dataplane_client.h"
#include "dfw/hostagent/host_view.h"
#include "dfw/hostagent/libvirt_inventory.h"
#include "dfw/ovs/openflow_bridge.h"
#include "dfw/ovs/ovsdb_monitor.h"

namespace grpc {
class ChannelCredentials;
}

namespace dfw::hostagent {

struct HostAgentConfig {
  std::string host_id;
  std::string hostname;
  std::vector<std::string> libvirt_uris;  // empty: no libvirt (OVS only)
  std::string ovsdb_socket;               // ovsdb-server's unix socket path
  std::string openflow_target;            // "unix:<rundir>/<bridge>.mgmt"
  std::string bridge = "br-dfw";
  std::string firewall_port = "fw0";
  // OVS is the vhost-user client of the dataplane's socket (the dataplane
  // serves it: net_virtio_user server=1), so it reconnects by itself after
  // ovs-vswitchd restarts. For this type the port gets
  // options:vhost-server-path=firewall_socket.
  std::string firewall_port_type = "dpdkvhostuserclient";
  std::string firewall_socket;    // e.g. "<ovs rundir>/fw0.sock"
  std::string dataplane_target;   // "unix:<path>"
  std::string controller_target;  // "host:port"; empty: no controller
  // The session's credentials: mutual TLS from the host's SVID
  // (SvidClient::Credentials), or plaintext for an explicitly insecure
  // loopback controller. Required with a controller.
  std::shared_ptr<grpc::ChannelCredentials> controller_credentials;
  std::chrono::milliseconds resync_interval{5000};
};

class HostAgent {
 public:
  explicit HostAgent(HostAgentConfig config);
  ~HostAgent();
  HostAgent(const HostAgent&) = delete;
  HostAgent& operator=(const HostAgent&) = delete;

  absl::Status Start();
  void Stop();

  // For status lines and tests.
  bool controller_connected() const { return session_ && session_->connected(); }
  uint64_t reconcile_passes() const { return passes_.load(); }
  uint64_t flow_bundles() const { return bundles_.load(); }
  // The last view computed (empty before the first pass).
  HostView LastView() const;

 private:
  void MarkDirty();
  void Run();
  void Reconcile();
  void SyncDataplane(const HostView& view, bool inventories_synced);
  void SyncFlows(const HostView& view);
  v1::HostHello BuildHello();
  absl::StatusOr<uint64_t> Apply(const v1::ControllerToHost& msg);

  const HostAgentConfig config_;
  DataplaneClient dataplane_;
  std::unique_ptr<ovs::OvsdbMonitor> ovsdb_;
  std::unique_ptr<LibvirtInventory> libvirt_;
  std::unique_ptr<ControllerSession> session_;

  std::mutex mu_;  // guards dirty_, stop_
  std::condition_variable cv_;
  bool dirty_ = true;
  bool stop_ = false;
  std::thread thread_;

  // Reconcile thread only.
  bool firewall_port_created_ = false;
  std::unique_ptr<ovs::OpenFlowBridge> of_;
  int64_t no_flood_ofport_ = -1;
  std::vector<ovs::FlowSpec> installed_;
  bool have_installed_ = false;
  std::chrono::steady_clock::time_point last_flow_check_{};
  bool dataplane_up_ = false;
  std::map<std::string, v1::DataplaneVNic> pushed_;  // what the dataplane has from us
  std::vector<std::string> last_errors_;

  mutable std::mutex view_mu_;
  HostView last_view_;
  std::atomic<uint64_t> passes_{0};
  std::atomic<uint64_t> bundles_{0};
};

}  // namespace dfw::hostagent
