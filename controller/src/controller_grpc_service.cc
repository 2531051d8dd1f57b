#include "dfw/controller/controller_grpc_service.h"

#include "grpc_auth.h"

namespace dfw::controller {

template <typename T, typename F>
grpc::Status ControllerGrpcService::Serve(Ctx* ctx, std::string_view method, F&& call, T* out) {
  auto caller = AuthorizeGrpc(*authz_, *ctx, std::string("/dfw.v1.ControllerService/") += method);
  if (!caller.ok()) return ToGrpc(caller.status());
  ActorScope actor(caller->actor);
  absl::StatusOr<T> r = call();
  if (!r.ok()) return ToGrpc(r.status());
  *out = std::move(*r);
  return grpc::Status::OK;
}

using namespace dfw::v1;

grpc::Status ControllerGrpcService::PutVm(Ctx* ctx, const PutVmRequest* r, Vm* o) {
  return Serve(
      ctx, "PutVm", [&] { return model_->PutVm(*r); }, o);
}
grpc::Status ControllerGrpcService::GetVm(Ctx* ctx, const GetRequest* r, Vm* o) {
  return Serve(
      ctx, "GetVm", [&] { return model_->GetVm(r->id()); }, o);
}
grpc::Status ControllerGrpcService::ListVms(Ctx* ctx, const ListRequest* r, ListVmsResponse* o) {
  return Serve(
      ctx, "ListVms", [&] { return model_->ListVms(*r); }, o);
}
grpc::Status ControllerGrpcService::DeleteVm(Ctx* ctx, const DeleteRequest* r, DeleteResponse* o) {
  return Serve(
      ctx, "DeleteVm", [&] { return model_->DeleteVm(*r); }, o);
}
grpc::Status ControllerGrpcService::Tag(Ctx* ctx, const TagRequest* r, TagResponse* o) {
  return Serve(
      ctx, "Tag", [&] { return model_->Tag(*r); }, o);
}
grpc::Status ControllerGrpcService::VmGroups(Ctx* ctx, const GetRequest* r, VmGroupsResponse* o) {
  return Serve(
      ctx, "VmGroups", [&] { return model_->VmGroups(r->id()); }, o);
}
grpc::Status ControllerGrpcService::EffectiveRules(Ctx* ctx, const EffectiveRulesRequest* r,
                                                   EffectiveRulesResponse* o) {
  return Serve(
      ctx, "EffectiveRules", [&] { return model_->EffectiveRules(*r); }, o);
}

grpc::Status ControllerGrpcService::Trace(Ctx* ctx, const TraceRequest* r, TraceResponse* o) {
  return Serve(
      ctx, "Trace", [&] { return model_->Trace(*r); }, o);
}

grpc::Status ControllerGrpcService::ProbeFlow(Ctx* ctx, const ProbeFlowRequest* r,
                                              ProbeFlowResponse* o) {
  return Serve(
      ctx, "ProbeFlow", [&] { return model_->ProbeFlow(*r); }, o);
}
grpc::Status ControllerGrpcService::PutGroup(Ctx* ctx, const PutGroupRequest* r, SecurityGroup* o) {
  return Serve(
      ctx, "PutGroup", [&] { return model_->PutGroup(*r); }, o);
}
grpc::Status ControllerGrpcService::GetGroup(Ctx* ctx, const GetRequest* r, SecurityGroup* o) {
  return Serve(
      ctx, "GetGroup", [&] { return model_->GetGroup(r->id()); }, o);
}
grpc::Status ControllerGrpcService::ListGroups(Ctx* ctx, const ListRequest* r,
                                               ListGroupsResponse* o) {
  return Serve(
      ctx, "ListGroups", [&] { return model_->ListGroups(*r); }, o);
}
grpc::Status ControllerGrpcService::DeleteGroup(Ctx* ctx, const DeleteRequest* r,
                                                DeleteResponse* o) {
  return Serve(
      ctx, "DeleteGroup", [&] { return model_->DeleteGroup(*r); }, o);
}
grpc::Status ControllerGrpcService::GroupMembers(Ctx* ctx, const GetRequest* r,
                                                 GroupMembership* o) {
  return Serve(
      ctx, "GroupMembers", [&] { return model_->GroupMembers(r->id()); }, o);
}
grpc::Status ControllerGrpcService::PutPolicy(Ctx* ctx, const PutPolicyRequest* r, Policy* o) {
  return Serve(
      ctx, "PutPolicy", [&] { return model_->PutPolicy(*r); }, o);
}
grpc::Status ControllerGrpcService::PreviewPolicy(Ctx* ctx, const PreviewPolicyRequest* r,
                                                  PolicyImpact* o) {
  return Serve(
      ctx, "PreviewPolicy", [&] { return model_->PreviewPolicy(*r); }, o);
}
grpc::Status ControllerGrpcService::GetPolicy(Ctx* ctx, const GetRequest* r, Policy* o) {
  return Serve(
      ctx, "GetPolicy", [&] { return model_->GetPolicy(r->id()); }, o);
}
grpc::Status ControllerGrpcService::ListPolicies(Ctx* ctx, const ListRequest* r,
                                                 ListPoliciesResponse* o) {
  return Serve(
      ctx, "ListPolicies", [&] { return model_->ListPolicies(*r); }, o);
}
grpc::Status ControllerGrpcService::DeletePolicy(Ctx* ctx, const DeleteRequest* r,
                                                 DeleteResponse* o) {
  return Serve(
      ctx, "DeletePolicy", [&] { return model_->DeletePolicy(*r); }, o);
}
grpc::Status ControllerGrpcService::ListHosts(Ctx* ctx, const ListRequest*, ListHostsResponse* o) {
  return Serve(
      ctx, "ListHosts", [&] { return model_->ListHosts(); }, o);
}
grpc::Status ControllerGrpcService::DeleteHost(Ctx* ctx, const DeleteRequest* r,
                                               DeleteResponse* o) {
  return Serve(
      ctx, "DeleteHost",
      [&]() -> absl::StatusOr<DeleteResponse> {
        if (r->expected_revision() != 0) {
          return absl::InvalidArgumentError("expected_revision: hosts have no revision");
        }
        return model_->DeleteHost(r->id());
      },
      o);
}
grpc::Status ControllerGrpcService::PreviewGroup(Ctx* ctx, const dfw::v1::PreviewGroupRequest* r,
                                                 dfw::v1::GroupImpact* o) {
  return Serve(
      ctx, "PreviewGroup", [&] { return model_->PreviewGroup(*r); }, o);
}
grpc::Status ControllerGrpcService::PreviewTag(Ctx* ctx, const TagRequest* r,
                                               dfw::v1::GroupImpact* o) {
  return Serve(
      ctx, "PreviewTag", [&] { return model_->PreviewTag(*r); }, o);
}
grpc::Status ControllerGrpcService::AddExclusion(Ctx* ctx, const dfw::v1::Exclusion* r,
                                                 dfw::v1::Exclusion* o) {
  return Serve(
      ctx, "AddExclusion", [&] { return model_->AddExclusion(*r); }, o);
}
grpc::Status ControllerGrpcService::ListExclusions(Ctx* ctx, const ListRequest*,
                                                   dfw::v1::ListExclusionsResponse* o) {
  return Serve(
      ctx, "ListExclusions", [&] { return model_->ListExclusions(); }, o);
}
grpc::Status ControllerGrpcService::DeleteExclusion(Ctx* ctx,
                                                    const dfw::v1::DeleteExclusionRequest* r,
                                                    DeleteResponse* o) {
  return Serve(
      ctx, "DeleteExclusion", [&] { return model_->DeleteExclusion(r->id()); }, o);
}
grpc::Status ControllerGrpcService::Realization(Ctx* ctx, const RealizationRequest* r,
                                                RealizationResponse* o) {
  return Serve(
      ctx, "Realization", [&] { return model_->Realization(*r); }, o);
}

grpc::Status ControllerGrpcService::Watch(Ctx* ctx, const WatchRequest* r,
                                          grpc::ServerWriter<ChangeEvent>* w) {
  auto caller = AuthorizeGrpc(*authz_, *ctx, "/dfw.v1.ControllerService/Watch");
  if (!caller.ok()) return ToGrpc(caller.status());
  uint64_t from = r->from_revision();
  while (!ctx->IsCancelled()) {
    auto events = model_->Changes(from, 1000);
    if (!events.ok()) return ToGrpc(events.status());
    for (const auto& e : *events) {
      if (!w->Write(e)) return grpc::Status::OK;
      from = e.revision();
    }
    if (events->size() < 1000) model_->WaitForRevisionAbove(from, std::chrono::milliseconds(500));
  }
  return grpc::Status::OK;
}

}  // namespace dfw::controller
