#include "dfw/hostagent/dataplane_client.h"

#include <grpcpp/grpcpp.h>

namespace dfw::hostagent {
namespace {

absl::Status FromGrpc(const grpc::Status& s, const char* what) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      std::string("dataplane ") + what + ": " + s.error_message());
}

}  // namespace

bool IsUnreachable(const absl::Status& s) {
  return absl::IsUnavailable(s) || absl::IsDeadlineExceeded(s) || absl::IsCancelled(s);
}

DataplaneClient::DataplaneClient(const std::string& target, std::chrono::milliseconds deadline)
    : target_(target),
      deadline_(deadline),
      stub_(v1::DataplaneService::NewStub(
          grpc::CreateChannel(target, grpc::InsecureChannelCredentials()))) {}

#define DFW_DP_CALL(method, req, resp)                                   \
  grpc::ClientContext ctx;                                               \
  ctx.set_deadline(std::chrono::system_clock::now() + deadline_);        \
  grpc::Status gs = stub_->method(&ctx, req, &resp)

absl::Status DataplaneClient::SetVnic(const v1::DataplaneVNic& vnic) {
  v1::SetVNicRequest req;
  *req.mutable_vnic() = vnic;
  v1::DataplaneVNic resp;
  DFW_DP_CALL(SetVNic, req, resp);
  return FromGrpc(gs, "SetVNic");
}

absl::Status DataplaneClient::RemoveVnic(const std::string& id) {
  v1::RemoveVNicRequest req;
  req.set_id(id);
  v1::SetStateResponse resp;
  DFW_DP_CALL(RemoveVNic, req, resp);
  return FromGrpc(gs, "RemoveVNic");
}

absl::StatusOr<uint64_t> DataplaneClient::SetState(const v1::SetStateRequest& req) {
  v1::SetStateResponse resp;
  DFW_DP_CALL(SetState, req, resp);
  if (!gs.ok()) return FromGrpc(gs, "SetState");
  return resp.applied_revision();
}

absl::StatusOr<v1::CountersResponse> DataplaneClient::Counters() {
  v1::CountersRequest req;
  v1::CountersResponse resp;
  DFW_DP_CALL(Counters, req, resp);
  if (!gs.ok()) return FromGrpc(gs, "Counters");
  return resp;
}

#undef DFW_DP_CALL

}  // namespace dfw::hostagent
