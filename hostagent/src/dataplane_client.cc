#include "dfw/hostagent/dataplane_client.h"

#include <grpcpp/grpcpp.h>

namespace dfw::hostagent {
namespace {

absl::Status FromGrpc(const grpc::Status& s, const char* what) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      std::string("dataplane ") + what + ": " + s.error_message());
}

// The dataplane's own limit (dataplane/daemon/main.cc): a full state of many
// rules, or a vNIC's exported connections (100k are ~6 MB), exceed gRPC's
// default 4 MB.
constexpr int kMaxMessageBytes = 256 << 20;

std::shared_ptr<grpc::Channel> DataplaneChannel(const std::string& target) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxMessageBytes);
  args.SetMaxSendMessageSize(kMaxMessageBytes);
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
}

}  // namespace

bool IsUnreachable(const absl::Status& s) {
  return absl::IsUnavailable(s) || absl::IsDeadlineExceeded(s) || absl::IsCancelled(s);
}

DataplaneClient::DataplaneClient(const std::string& target, std::chrono::milliseconds deadline)
    : target_(target),
      deadline_(deadline),
      stub_(v1::DataplaneService::NewStub(DataplaneChannel(target))) {}

template <typename Req, typename Resp>
absl::StatusOr<Resp> DataplaneClient::Call(
    grpc::Status (v1::DataplaneService::Stub::*method)(grpc::ClientContext*, const Req&, Resp*),
    const Req& req, const char* what, std::chrono::milliseconds deadline) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() +
                   (deadline.count() > 0 ? deadline : deadline_));
  Resp resp;
  grpc::Status gs = (stub_.get()->*method)(&ctx, req, &resp);
  if (!gs.ok()) return FromGrpc(gs, what);
  return resp;
}

absl::Status DataplaneClient::SetVnic(const v1::DataplaneVNic& vnic) {
  v1::SetVNicRequest req;
  *req.mutable_vnic() = vnic;
  return Call(&v1::DataplaneService::Stub::SetVNic, req, "SetVNic").status();
}

absl::Status DataplaneClient::RemoveVnic(const std::string& id) {
  v1::RemoveVNicRequest req;
  req.set_id(id);
  return Call(&v1::DataplaneService::Stub::RemoveVNic, req, "RemoveVNic").status();
}

absl::StatusOr<uint64_t> DataplaneClient::SetState(const v1::SetStateRequest& req) {
  auto r = Call(&v1::DataplaneService::Stub::SetState, req, "SetState");
  if (!r.ok()) return r.status();
  return r->applied_revision();
}

absl::StatusOr<v1::CountersResponse> DataplaneClient::Counters(std::chrono::milliseconds deadline) {
  return Call(&v1::DataplaneService::Stub::Counters, v1::CountersRequest(), "Counters", deadline);
}

absl::StatusOr<v1::FlowRecordsResponse> DataplaneClient::FlowRecords(uint64_t after_seq,
                                                                     uint32_t max) {
  v1::FlowRecordsRequest req;
  req.set_after_seq(after_seq);
  req.set_max(max);
  return Call(&v1::DataplaneService::Stub::FlowRecords, req, "FlowRecords");
}

absl::StatusOr<v1::ArmCaptureResponse> DataplaneClient::ArmCapture(
    const v1::ArmCaptureRequest& req) {
  return Call(&v1::DataplaneService::Stub::ArmCapture, req, "ArmCapture");
}

absl::StatusOr<v1::CaptureResultsResponse> DataplaneClient::CaptureResults(
    const v1::CaptureResultsRequest& req) {
  return Call(&v1::DataplaneService::Stub::CaptureResults, req, "CaptureResults");
}

absl::StatusOr<v1::GetStateResponse> DataplaneClient::GetState(bool digests) {
  v1::GetStateRequest req;
  req.set_digests(digests);
  return Call(&v1::DataplaneService::Stub::GetState, req, "GetState");
}

absl::StatusOr<v1::ExportConnectionsResponse> DataplaneClient::ExportConnections(
    const std::string& vnic_id) {
  v1::ExportConnectionsRequest req;
  req.set_vnic_id(vnic_id);
  return Call(&v1::DataplaneService::Stub::ExportConnections, req, "ExportConnections");
}

absl::StatusOr<v1::ImportConnectionsResponse> DataplaneClient::ImportConnections(
    const v1::ImportConnectionsRequest& req) {
  return Call(&v1::DataplaneService::Stub::ImportConnections, req, "ImportConnections");
}

}  // namespace dfw::hostagent
