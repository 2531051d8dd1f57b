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
//     addresses) before any flow steers it there, imports the connections
//     the controller handed over for it (right after its SetVNic), and sets
//     `no-flood` on its OVS port (NORMAL never floods to a vNIC: broadcasts
//     reach local vNICs only through the dataplane);
//  4. reconciles the steering flows with one atomic OpenFlow bundle (correct
//     flows are kept, stale ones removed, missing ones added: a restarted
//     agent changes nothing that is right);
//  5. for a vNIC that left (its port gone, or its VM gone from libvirt),
//     exports its connections from the dataplane and sends them to the
//     controller (ConnectionExport, chunks of kExportChunk) before the
//     inventory update that removes the VM and before RemoveVNic; then the
//     dataplane forgets vNICs whose flows are gone;
//  6. reports the VMs to the controller; applies the controller's full states
//     and deltas to the dataplane and acks them;
//  7. while the controller asks (FlowWatch), relays the dataplane's flow
//     records to it (flow_relay.h, a thread of its own);
//  8. runs the controller's live traces and probes: captures armed in the
//     dataplane, a probe packet put on the bridge from the source vNIC's
//     port (probe_runner.h, a thread of its own).
// The dataplane's health probe is GetState: unreachable, or restarted (a new
// instance_id) holding a revision below the last acked one, restarts the
// session for a full state.
//
// Edges. Everything outside the process is behind the interfaces of
// agent_edges.h (dataplane, OVS, libvirt, controller), given to the
// constructor: main.cc passes MakeRealEdges(), the unit tests fakes.
//
// Holds no state a restart would lose: the dataplane persists what it
// enforces, OVS keeps ports and flows. While the controller is away the
// dataplane keeps enforcing the last state; while the dataplane is away
// steered traffic is dropped (fail closed) and the agent retries.
//
// Thread safety. Start() starts the reconcile thread, and the edges their
// threads (OVSDB monitor, libvirt's event loop, the controller session);
// they hand work to the reconcile thread through a dirty flag. A
// ConnectionImport arrives on the session thread: imported there at once
// when the dataplane knows the vNIC, else kept (under imports_mu_) for the
// reconcile thread. Stop() from any thread, once. The accessors are for
// tests and status lines (any thread). Tests may instead call StartEdges()
// and drive Pass() themselves (one thread), without Start().
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "dfw/hostagent/agent_edges.h"
#include "dfw/hostagent/agent_metrics.h"
#include "dfw/hostagent/flow_relay.h"
#include "dfw/hostagent/host_view.h"
#include "dfw/hostagent/probe_runner.h"

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
  // The firewall ports, one per dataplane worker: port k serves worker k
  // (dfw-dataplane --workers N --port-per-worker), and each vNIC is steered
  // to its owner worker's port (ovs::FirewallPortIndex). Most hosts: one.
  std::vector<std::string> firewall_ports = {"fw0"};
  // OVS is the vhost-user client of the dataplane's socket (the dataplane
  // serves it: net_virtio_user server=1), so it reconnects by itself after
  // ovs-vswitchd restarts. For this type port k gets
  // options:vhost-server-path=firewall_sockets[k].
  std::string firewall_port_type = "dpdkvhostuserclient";
  std::vector<std::string> firewall_sockets;  // e.g. "<ovs rundir>/fw0.sock"
  std::string dataplane_target;               // "unix:<path>"
  std::string controller_target;              // "host:port[,host:port...]"; empty: none
  // The session's credentials: mutual TLS from the host's SVID
  // (SvidClient::Credentials), or plaintext for an explicitly insecure
  // loopback controller. Required with a controller.
  std::shared_ptr<grpc::ChannelCredentials> controller_credentials;
  std::chrono::milliseconds resync_interval{5000};
  // How long connections handed over for a vNIC the dataplane does not know
  // yet are kept (at most kMaxPendingImportVnics vNICs).
  std::chrono::milliseconds import_ttl{60000};
};

class HostAgent {
 public:
  static constexpr int kExportChunk = 8192;  // entries per ConnectionExport / import call
  static constexpr size_t kMaxPendingImportVnics = 64;
  static constexpr size_t kMaxPendingImportEntries = 262144;  // per vNIC

  // `edges.dataplane` and `edges.ovs` are required.
  HostAgent(HostAgentConfig config, HostAgentEdges edges);
  ~HostAgent();
  HostAgent(const HostAgent&) = delete;
  HostAgent& operator=(const HostAgent&) = delete;

  // StartEdges() and the reconcile thread.
  absl::Status Start();
  void Stop();

  // Starts the edges (OVSDB monitor, libvirt) and gives the controller edge
  // its hooks. Start() calls it; tests call it and then Pass().
  absl::Status StartEdges();
  // One reconcile pass; then, once OVSDB and every libvirt URI are synced,
  // the session's start (once). The reconcile thread's loop body.
  void Pass();

  // For status lines and tests.
  bool controller_connected() const { return edges_.controller && edges_.controller->connected(); }
  uint64_t reconcile_passes() const { return passes_.load(); }
  uint64_t flow_bundles() const { return bundles_.load(); }
  MigrationStats migration_stats() const;
  // The last view computed (empty before the first pass).
  HostView LastView() const;
  // What GET /metrics shows of the agent (agent_metrics.h), read now.
  HostAgentMetrics Metrics() const;
  // The dataplane's counters (one call with `deadline`, counted as a call).
  absl::StatusOr<v1::CountersResponse> DataplaneCounters(std::chrono::milliseconds deadline);

 private:
  struct PendingImport {
    std::chrono::steady_clock::time_point since;
    std::vector<v1::ConnectionEntry> entries;
  };

  void MarkDirty();
  void Run();
  void Reconcile();
  void SyncDataplane(const HostView& view, bool inventories_synced);
  void SyncFlows(const HostView& view, const std::vector<ovs::OvsInterface>& rows);
  // Steps 5 (exports and removals) and 6 (the report).
  void ExportAndRemove(const HostView& view);
  void ExportVnic(const std::string& vnic_id);
  v1::HostHello BuildHello();
  absl::StatusOr<uint64_t> Apply(const v1::ControllerToHost& msg);
  // After the dataplane took a revision that excludes vNICs or takes them
  // off the exclusion list: waits (at most kExclusionSteeringWait) for a
  // reconcile pass to steer them accordingly; UNAVAILABLE when it did not
  // (the revision is then not acked: the agent's session starts again).
  absl::Status AwaitExclusionSteering(const v1::ControllerToHost& msg);
  static constexpr std::chrono::seconds kExclusionSteeringWait{10};
  // Session thread: a ConnectionImport chunk.
  void OnImport(const v1::ConnectionImport& msg);
  // The dataplane knows (`known`) or no longer knows `vnic_id`; when it
  // knows it, the connections kept for it are imported now.
  void SetKnown(const std::string& vnic_id, bool known);
  void ImportNow(const std::string& vnic_id, const std::vector<v1::ConnectionEntry>& entries);
  void ExpireImports();

  const HostAgentConfig config_;
  // Before edges_: the metered dataplane edge records here until destroyed.
  DataplaneCallMetrics dataplane_calls_;
  HostAgentEdges edges_;

  std::mutex mu_;  // guards dirty_, stop_
  std::condition_variable cv_;
  bool dirty_ = true;
  bool stop_ = false;
  std::thread thread_;

  // Reconcile thread only.
  bool session_started_ = false;
  bool firewall_port_created_ = false;
  std::map<uint32_t, std::string> no_flood_;  // ofport -> OVSDB row uuid set on
  std::map<uint32_t, std::string> flood_;     // excluded vNICs' ofports flooding was set on
  std::set<std::string> excluded_;            // the dataplane's excluded vNICs (GetState)
  uint64_t no_flood_epoch_ = 0;               // OvsEdge::openflow_epoch() it holds for
  std::vector<ovs::FlowSpec> installed_;
  bool have_installed_ = false;
  std::chrono::steady_clock::time_point last_flow_check_{};
  bool dataplane_up_ = false;
  uint64_t dataplane_instance_ = 0;
  uint32_t dataplane_ports_ = 0;  // firewall ports it reads (GetState); 0: not known
  std::map<std::string, v1::DataplaneVNic> pushed_;  // what the dataplane has
  std::map<std::string, std::string> vnic_vm_;       // vNIC -> VM it was last reported in
  std::set<std::string> reported_vms_;               // VM ids of the last report
  std::set<std::string> exported_;                   // vNICs whose connections were sent
  std::vector<std::string> last_errors_;

  std::mutex imports_mu_;        // guards known_, pending_
  std::set<std::string> known_;  // the keys of pushed_
  std::map<std::string, PendingImport> pending_;

  // The excluded vNICs the installed steering bypasses the dataplane for
  // (written by the reconcile thread, read by Apply on the session thread),
  // and the passes begun and completed (Apply waits for one begun after it).
  mutable std::mutex excluded_mu_;
  std::condition_variable pass_cv_;
  std::set<std::string> steered_excluded_, wanted_excluded_;
  uint64_t passes_begun_ = 0, passes_done_ = 0;
  std::atomic<bool> running_{false};  // the reconcile thread runs (Start)

  mutable std::mutex view_mu_;
  HostView last_view_;
  std::atomic<uint64_t> passes_{0};
  // A delta was refused: the next Hello carries no digests (a full state).
  std::atomic<bool> want_full_{false};
  std::atomic<uint64_t> bundles_{0};
  std::atomic<uint64_t> exports_{0}, export_failures_{0}, entries_exported_{0};
  std::atomic<uint64_t> entries_imported_{0}, entries_rejected_{0}, entries_expired_{0};
  // Flow records to the controller while it observes (with a controller).
  std::unique_ptr<FlowRelay> relay_;
  std::unique_ptr<ProbeRunner> probes_;  // live traces and probes (probe_runner.h)
  // GET /metrics: the last revision the controller sent, apply failures.
  std::atomic<uint64_t> wanted_revision_{0};
  std::array<std::atomic<uint64_t>, HostAgentMetrics::kApplyErrorCount> apply_errors_{};
};

}  // namespace dfw::hostagent
