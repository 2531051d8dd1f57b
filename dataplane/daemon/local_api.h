// LocalApi: the dataplane's gRPC service (proto DataplaneService) on a unix
// socket, for the host agent and for operators' read-outs. Who may call it
// is decided before gRPC sees a connection (api_socket.h). Calls are
// serialised by DataplaneState's mutex; connection read-outs, flushes,
// exports and imports go through the mailbox of the worker that owns the
// vNIC (OwnerWorker: its connections are in that worker's table only; a
// read-out or flush of all vNICs asks every worker). Counters are the sums
// over the workers. GetState is the agent's health probe: no counters, a
// random instance_id drawn when the LocalApi is made (once per start).
// Export/Import of an unknown (or empty) vnic_id: NOT_FOUND (INVALID_ARGUMENT). Errors come back as
// INVALID_ARGUMENT (or FAILED_PRECONDITION for a delta from the wrong revision) with the message
// naming what was wrong; what was enforced stays enforced.
#pragma once

#include <grpcpp/grpcpp.h>

#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "dataplane_state.h"
#include "dfw/v1/dataplane.grpc.pb.h"
#include "port_worker.h"

namespace dfw::dataplane {

class LocalApi final : public v1::DataplaneService::Service {
 public:
  // pipelines[w] is worker w's; the two vectors have the same size (>= 1).
  LocalApi(DataplaneState* state, std::vector<Pipeline*> pipelines,
           std::vector<PortWorker*> workers);

  // Moves flow records from the worker's ring to the read-out buffer and to
  // `sink` (a JSON-lines file, may be null). Called by the control thread.
  void DrainFlows(std::FILE* sink);

  // Where Counters reads api_refused_connections (ApiSocket::refused). Set
  // before the server starts; unset, the field stays 0.
  // The firewall ports the workers read, reported by GetState (default 1).
  // Set before the server starts.
  void SetFirewallPorts(uint32_t ports) { firewall_ports_ = ports; }
  void SetRefusedConnections(std::function<uint64_t()> refused) {
    refused_connections_ = std::move(refused);
  }

  grpc::Status SetVNic(grpc::ServerContext*, const v1::SetVNicRequest*,
                       v1::DataplaneVNic*) override;
  grpc::Status RemoveVNic(grpc::ServerContext*, const v1::RemoveVNicRequest*,
                          v1::SetStateResponse*) override;
  grpc::Status SetState(grpc::ServerContext*, const v1::SetStateRequest*,
                        v1::SetStateResponse*) override;
  grpc::Status Counters(grpc::ServerContext*, const v1::CountersRequest*,
                        v1::CountersResponse*) override;
  grpc::Status Connections(grpc::ServerContext*, const v1::ConnectionsRequest*,
                           v1::ConnectionsResponse*) override;
  grpc::Status Flush(grpc::ServerContext*, const v1::FlushRequest*, v1::FlushResponse*) override;
  grpc::Status FlowRecords(grpc::ServerContext*, const v1::FlowRecordsRequest*,
                           v1::FlowRecordsResponse*) override;
  grpc::Status GetState(grpc::ServerContext*, const v1::GetStateRequest*,
                        v1::GetStateResponse*) override;
  grpc::Status ExportConnections(grpc::ServerContext*, const v1::ExportConnectionsRequest*,
                                 v1::ExportConnectionsResponse*) override;
  grpc::Status ImportConnections(grpc::ServerContext*, const v1::ImportConnectionsRequest*,
                                 v1::ImportConnectionsResponse*) override;

  grpc::Status ArmCapture(grpc::ServerContext*, const v1::ArmCaptureRequest*,
                          v1::ArmCaptureResponse*) override;
  grpc::Status CaptureResults(grpc::ServerContext*, const v1::CaptureResultsRequest*,
                              v1::CaptureResultsResponse*) override;
  // The workers' capture table (capture.h); without one, ArmCapture is
  // UNAVAILABLE. Set before the server starts.
  void SetCaptures(CaptureTable* captures) { captures_ = captures; }
  // Moves the captures that met a frame or passed their deadline to the
  // ended results (their slots freed for new ones). The control loop calls
  // it often (an armed capture costs the workers a compare per frame).
  void SweepCaptures();

  uint64_t instance_id() const { return instance_id_; }

 private:
  // The zone (local id) of a vNIC id; "" means all zones (-1).
  grpc::Status ZoneOf(const std::string& vnic_id, int* zone) const;
  // The zone of exactly one vNIC: empty is INVALID_ARGUMENT, unknown NOT_FOUND.
  grpc::Status ZoneOfOne(const std::string& vnic_id, uint16_t* zone) const;

  uint32_t Owner(uint32_t zone) const {
    return OwnerWorker(zone, static_cast<uint32_t>(workers_.size()));
  }

  DataplaneState* state_;
  std::vector<Pipeline*> pipelines_;
  std::vector<PortWorker*> workers_;
  std::mutex flows_mu_;
  std::deque<v1::FlowRecord> recent_;  // bounded read-out buffer, consecutive seqs
  uint64_t last_seq_ = 0;              // the newest record's seq
  std::function<uint64_t()> refused_connections_;
  // Captures: armed ones by id (with their table handle), then ended ones.
  struct ArmedCapture {
    uint64_t id;
    uint32_t handle;
    v1::CaptureFilter filter;
    uint64_t armed_ms;
  };
  static constexpr size_t kEndedCaptures = 64;
  void SweepCapturesLocked(uint64_t now_ms);
  v1::CaptureResult CaptureResultOf(const ArmedCapture& a, const CaptureTable::Status& st) const;
  CaptureTable* captures_ = nullptr;
  std::mutex captures_mu_;  // the capture table's control side
  std::vector<ArmedCapture> armed_captures_;
  std::deque<v1::CaptureResult> ended_captures_;
  uint64_t next_capture_id_ = 1;
  const uint64_t instance_id_;
  uint32_t firewall_ports_ = 1;
};

// ConnectionEntry <-> ConnExport. FromProto checks what the narrower C++
// fields cannot hold (address lengths and families, ranges); the rest is
// ValidateConnExport's, at import. Errors name the ConnectionEntry field.
void ConnectionEntryToProto(const ConnExport& c, v1::ConnectionEntry* out);
Status ConnectionEntryFromProto(const v1::ConnectionEntry& in, ConnExport* out);

}  // namespace dfw::dataplane
