// The host agent's process edges: the dataplane, OVS, libvirt and the
// controller, each behind an interface HostAgent is given (HostAgentEdges).
//
// What. HostAgent (host_agent.h) decides what to do and in which order;
// these interfaces are everything it does to the world outside its process.
// MakeRealEdges() wraps today's classes (DataplaneClient, OvsdbMonitor +
// CreateFirewallPort + OpenFlowBridge + SetPortNoFlood, LibvirtInventory,
// ControllerSession); the unit tests (tests/hostagent/fake_edges.h) give
// fakes that record one global sequence of calls, so the ordering rules of
// the reconcile pass are asserted without OVS, libvirt, a dataplane or a
// controller.
//
// Errors. DataplaneEdge returns the dataplane's status: IsUnreachable()
// (dataplane_client.h) tells "not there, retry" from "refused" (the message
// names the vNIC or field). OvsEdge's errors name the bridge, port or flow.
//
// Thread safety. Each edge's own contract:
//  - DataplaneEdge: every method from any thread (the reconcile thread and
//    the session thread both call it).
//  - OvsEdge: Start/Stop from the agent's Start/Stop; synced() and
//    Snapshot() from any thread; the OpenFlow and port methods from one
//    thread at a time (the reconcile thread). The change callback runs on the
//    OVSDB monitor's thread.
//  - LibvirtEdge: as LibvirtInventory (the callback runs on libvirt's event
//    thread; Snapshot()/synced() from any thread).
//  - ControllerEdge: as ControllerSession (hooks run on the session thread,
//    one at a time; the rest from any thread). SetHooks() before Start().
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "dfw/hostagent/controller_session.h"
#include "dfw/hostagent/libvirt_inventory.h"
#include "dfw/ovs/openflow_bridge.h"
#include "dfw/ovs/ovsdb_monitor.h"
#include "dfw/v1/dataplane.pb.h"
#include "dfw/v1/host.pb.h"

namespace dfw::hostagent {

struct HostAgentConfig;

// The dataplane's local API (proto dfw.v1.DataplaneService).
class DataplaneEdge {
 public:
  virtual ~DataplaneEdge() = default;
  virtual absl::Status SetVnic(const v1::DataplaneVNic& vnic) = 0;
  virtual absl::Status RemoveVnic(const std::string& id) = 0;
  // A full state or a delta; returns the revision now applied.
  virtual absl::StatusOr<uint64_t> SetState(const v1::SetStateRequest& req) = 0;
  // The health probe: revision, vNICs, instance id; `digests` also the
  // digests of what is held (for a Hello: hashes the whole state).
  virtual absl::StatusOr<v1::GetStateResponse> GetState(bool digests) = 0;
  // Every tracked connection of `vnic_id`.
  virtual absl::StatusOr<v1::ExportConnectionsResponse> ExportConnections(
      const std::string& vnic_id) = 0;
  virtual absl::StatusOr<v1::ImportConnectionsResponse> ImportConnections(
      const v1::ImportConnectionsRequest& req) = 0;
  // The dataplane's counters (drops by reason, per vNIC), read when GET
  // /metrics is scraped, within `deadline`.
  virtual absl::StatusOr<v1::CountersResponse> Counters(std::chrono::milliseconds deadline) = 0;
  // Flow records after `after_seq` (at most `max`), for the flow relay
  // (flow_relay.h). A dataplane without them: UNIMPLEMENTED.
  virtual absl::StatusOr<v1::FlowRecordsResponse> FlowRecords(uint64_t after_seq, uint32_t max) {
    (void)after_seq;
    (void)max;
    return absl::UnimplementedError("dataplane FlowRecords: not available");
  }
  // One-shot captures (dataplane.proto ArmCapture, CaptureResults) for the
  // probe runner (probe_runner.h). A dataplane without them: UNIMPLEMENTED.
  virtual absl::StatusOr<v1::ArmCaptureResponse> ArmCapture(const v1::ArmCaptureRequest& req) {
    (void)req;
    return absl::UnimplementedError("dataplane ArmCapture: not available");
  }
  virtual absl::StatusOr<v1::CaptureResultsResponse> CaptureResults(
      const v1::CaptureResultsRequest& req) {
    (void)req;
    return absl::UnimplementedError("dataplane CaptureResults: not available");
  }
  virtual std::string target() const = 0;
};

// OVS: the OVSDB Interface rows, the firewall port, the steering flows and
// the ports' no-flood flag.
class OvsEdge {
 public:
  virtual ~OvsEdge() = default;
  // Starts monitoring OVSDB; `on_change` runs after each change.
  virtual void Start(std::function<void()> on_change) = 0;
  virtual void Stop() = 0;
  virtual bool synced() const = 0;
  virtual std::vector<ovs::OvsInterface> Snapshot() const = 0;
  // Creates the firewall ports if missing (idempotent).
  virtual absl::Status CreateFirewallPorts() = 0;
  // Opens an OpenFlow connection if there is none. Each new connection
  // increments openflow_epoch(): ovs-vswitchd may have restarted, so the
  // flags it keeps in memory only (no-flood) must be set again.
  virtual absl::Status ConnectOpenFlow() = 0;
  virtual bool openflow_connected() const = 0;
  virtual uint64_t openflow_epoch() const = 0;
  // Makes the steering flows equal to `desired` in one atomic bundle (or
  // nothing). On error the connection is dropped (the next ConnectOpenFlow
  // opens a new one).
  virtual absl::StatusOr<ovs::ReconcileResult> ReconcileFlows(
      const std::vector<ovs::FlowSpec>& desired) = 0;
  // NORMAL never floods to `ofport` (ovs::SetPortNoFlood), or, with
  // no_flood false, floods to it again (an excluded vNIC's port).
  virtual absl::Status SetPortNoFlood(uint32_t ofport, bool no_flood) = 0;
  // Puts `frame` on the bridge as if it came in on `ofport` (OpenFlow
  // packet-out through table 0: steering, the dataplane, OVS, as the VM's
  // own frame). Any thread: a connection of its own per call.
  virtual absl::Status PacketOut(uint32_t ofport, const std::vector<uint8_t>& frame) {
    (void)ofport;
    (void)frame;
    return absl::UnimplementedError("openflow packet-out: not available");
  }
};

// libvirt's domains (LibvirtInventory).
class LibvirtEdge {
 public:
  virtual ~LibvirtEdge() = default;
  virtual absl::Status Start(std::function<void()> on_change) = 0;
  virtual void Stop() = 0;
  virtual bool synced() const = 0;
  virtual std::vector<Domain> Snapshot() const = 0;
  // What was read and what failed (GET /metrics).
  virtual LibvirtStats stats() const { return {}; }
};

// The controller session (ControllerSession).
class ControllerEdge {
 public:
  virtual ~ControllerEdge() = default;
  virtual void SetHooks(ControllerSession::Hooks hooks) = 0;
  virtual void Start() = 0;
  virtual void Stop() = 0;
  virtual void Restart() = 0;
  virtual void SetInventory(std::vector<v1::Vm> vms) = 0;
  virtual void SendConnections(v1::ConnectionExport msg) = 0;
  // Flow records for the controller (ControllerSession::SendFlows): false
  // when no session is open (the batch is not sent).
  virtual bool SendFlows(const v1::FlowBatch& batch) {
    (void)batch;
    return false;
  }
  // A probe's report (ControllerSession::SendProbeReport): false when no
  // session is open.
  virtual bool SendProbeReport(const v1::ProbeReport& report) {
    (void)report;
    return false;
  }
  virtual uint64_t last_acked_revision() const = 0;
  virtual bool connected() const = 0;
  // Sessions opened (Hello sent) since start; each after the first is a
  // reconnect (GET /metrics).
  virtual uint64_t sessions_opened() const { return 0; }
};

// What HostAgent is given. `libvirt` null: no libvirt (OVS only);
// `controller` null: no controller.
struct HostAgentEdges {
  std::unique_ptr<DataplaneEdge> dataplane;
  std::unique_ptr<OvsEdge> ovs;
  std::unique_ptr<LibvirtEdge> libvirt;
  std::unique_ptr<ControllerEdge> controller;
};

// The real edges for `config` (dfw-hostagent's main). InvalidArgument when a
// controller is configured without credentials.
absl::StatusOr<HostAgentEdges> MakeRealEdges(const HostAgentConfig& config);

}  // namespace dfw::hostagent
