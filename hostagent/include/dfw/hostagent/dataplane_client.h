// DataplaneClient: the host agent's side of the dataplane's local API
// (proto dfw.v1.DataplaneService, served by dfw-dataplane on a unix socket).
//
// Every call has a deadline (default 5 s) and returns the dataplane's error
// as an absl::Status with its message (which names the vNIC, rule or field);
// UNAVAILABLE / DEADLINE_EXCEEDED mean the dataplane is not there (stopped,
// restarting): the caller retries later, nothing was applied.
//
// It is the real DataplaneEdge (agent_edges.h) HostAgent is given.
//
// Thread safety: all methods may be called from any thread (gRPC stubs are
// thread-safe).
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "dfw/hostagent/agent_edges.h"
#include "dfw/v1/dataplane.grpc.pb.h"

namespace dfw::hostagent {

class DataplaneClient final : public DataplaneEdge {
 public:
  // `target`: gRPC target, e.g. "unix:/run/dfw/dataplane.sock".
  explicit DataplaneClient(const std::string& target,
                           std::chrono::milliseconds deadline = std::chrono::seconds(5));

  absl::Status SetVnic(const v1::DataplaneVNic& vnic) override;
  absl::Status RemoveVnic(const std::string& id) override;
  // Applies a full state or a delta; returns the revision now applied.
  absl::StatusOr<uint64_t> SetState(const v1::SetStateRequest& req) override;
  absl::StatusOr<v1::GetStateResponse> GetState(bool digests) override;
  absl::StatusOr<v1::ExportConnectionsResponse> ExportConnections(
      const std::string& vnic_id) override;
  absl::StatusOr<v1::ImportConnectionsResponse> ImportConnections(
      const v1::ImportConnectionsRequest& req) override;
  absl::StatusOr<v1::CountersResponse> Counters(std::chrono::milliseconds deadline) override;
  absl::StatusOr<v1::FlowRecordsResponse> FlowRecords(uint64_t after_seq, uint32_t max) override;
  absl::StatusOr<v1::ArmCaptureResponse> ArmCapture(const v1::ArmCaptureRequest& req) override;
  absl::StatusOr<v1::CaptureResultsResponse> CaptureResults(
      const v1::CaptureResultsRequest& req) override;

  std::string target() const override { return target_; }

 private:
  // One unary call with the deadline (the client's unless `deadline` is
  // given); the error names `what`.
  template <typename Req, typename Resp>
  absl::StatusOr<Resp> Call(grpc::Status (v1::DataplaneService::Stub::*method)(grpc::ClientContext*,
                                                                               const Req&, Resp*),
                            const Req& req, const char* what,
                            std::chrono::milliseconds deadline = std::chrono::milliseconds(0));

  std::string target_;
  std::chrono::milliseconds deadline_;
  std::unique_ptr<v1::DataplaneService::Stub> stub_;
};

// True for the codes that mean "the peer is not reachable" (retry later).
bool IsUnreachable(const absl::Status& s);

}  // namespace dfw::hostagent
