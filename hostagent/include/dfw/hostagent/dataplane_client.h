// DataplaneClient: the host agent's side of the dataplane's local API
// (proto dfw.v1.DataplaneService, served by dfw-dataplane on a unix socket).
//
// Every call has a deadline (default 5 s) and returns the dataplane's error
// as an absl::Status with its message (which names the vNIC, rule or field);
// UNAVAILABLE / DEADLINE_EXCEEDED mean the dataplane is not there (stopped,
// restarting): the caller retries later, nothing was applied.
//
// Thread safety: all methods may be called from any thread (gRPC stubs are
// thread-safe).
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "dfw/v1/dataplane.grpc.pb.h"

namespace dfw::hostagent {

class DataplaneClient {
 public:
  // `target`: gRPC target, e.g. "unix:/run/dfw/dataplane.sock".
  explicit DataplaneClient(const std::string& target,
                           std::chrono::milliseconds deadline = std::chrono::seconds(5));

  absl::Status SetVnic(const v1::DataplaneVNic& vnic);
  absl::Status RemoveVnic(const std::string& id);
  // Applies a full state or a delta; returns the revision now applied.
  absl::StatusOr<uint64_t> SetState(const v1::SetStateRequest& req);
  absl::StatusOr<v1::CountersResponse> Counters();

  const std::string& target() const { return target_; }

 private:
  std::string target_;
  std::chrono::milliseconds deadline_;
  std::unique_ptr<v1::DataplaneService::Stub> stub_;
};

// True for the codes that mean "the peer is not reachable" (retry later).
bool IsUnreachable(const absl::Status& s);

}  // namespace dfw::hostagent
