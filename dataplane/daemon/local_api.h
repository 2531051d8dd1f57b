// LocalApi: the dataplane's gRPC service (proto DataplaneService) on a unix
// socket, for the host agent and for operators' read-outs. Who may call it
// is decided before gRPC sees a connection (api_socket.h). Calls are
// serialised by DataplaneState's mutex; connection read-outs and flushes go
// through the worker's mailbox. Errors come back as INVALID_ARGUMENT (or
// FAILED_PRECONDITION for a delta from the wrong revision) with the message
// naming what was wrong; what was enforced stays enforced.
#pragma once

#include <grpcpp/grpcpp.h>

#include <deque>
#include <functional>
#include <mutex>
#include <string>

#include "dataplane_state.h"
#include "dfw/v1/dataplane.grpc.pb.h"
#include "port_worker.h"

namespace dfw::dataplane {

class LocalApi final : public v1::DataplaneService::Service {
 public:
  LocalApi(DataplaneState* state, Pipeline* pipeline, PortWorker* worker);

  // Moves flow records from the worker's ring to the read-out buffer and to
  // `sink` (a JSON-lines file, may be null). Called by the control thread.
  void DrainFlows(std::FILE* sink);

  // Where Counters reads api_refused_connections (ApiSocket::refused). Set
  // before the server starts; unset, the field stays 0.
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

 private:
  // The zone (local id) of a vNIC id; "" means all zones (-1).
  grpc::Status ZoneOf(const std::string& vnic_id, int* zone) const;

  DataplaneState* state_;
  Pipeline* pipeline_;
  PortWorker* worker_;
  std::mutex flows_mu_;
  std::deque<v1::FlowRecord> recent_;  // bounded read-out buffer
  std::function<uint64_t()> refused_connections_;
};

}  // namespace dfw::dataplane
