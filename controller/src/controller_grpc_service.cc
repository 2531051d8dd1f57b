#include "dfw/controller/controller_grpc_service.h"

namespace dfw::controller {
namespace {

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

template <typename T>
grpc::Status Reply(absl::StatusOr<T> r, T* out) {
  if (!r.ok()) return ToGrpc(r.status());
  *out = std::move(*r);
  return grpc::Status::OK;
}

}  // namespace

using namespace dfw::v1;

grpc::Status ControllerGrpcService::PutVm(Ctx*, const PutVmRequest* r, Vm* o) {
  return Reply(model_->PutVm(*r), o);
}
grpc::Status ControllerGrpcService::GetVm(Ctx*, const GetRequest* r, Vm* o) {
  return Reply(model_->GetVm(r->id()), o);
}
grpc::Status ControllerGrpcService::ListVms(Ctx*, const ListRequest* r, ListVmsResponse* o) {
  return Reply(model_->ListVms(*r), o);
}
grpc::Status ControllerGrpcService::DeleteVm(Ctx*, const DeleteRequest* r, DeleteResponse* o) {
  return Reply(model_->DeleteVm(*r), o);
}
grpc::Status ControllerGrpcService::Tag(Ctx*, const TagRequest* r, TagResponse* o) {
  return Reply(model_->Tag(*r), o);
}
grpc::Status ControllerGrpcService::VmGroups(Ctx*, const GetRequest* r, VmGroupsResponse* o) {
  return Reply(model_->VmGroups(r->id()), o);
}
grpc::Status ControllerGrpcService::EffectiveRules(Ctx*, const EffectiveRulesRequest* r,
                                                   EffectiveRulesResponse* o) {
  return Reply(model_->EffectiveRules(*r), o);
}
grpc::Status ControllerGrpcService::PutGroup(Ctx*, const PutGroupRequest* r, SecurityGroup* o) {
  return Reply(model_->PutGroup(*r), o);
}
grpc::Status ControllerGrpcService::GetGroup(Ctx*, const GetRequest* r, SecurityGroup* o) {
  return Reply(model_->GetGroup(r->id()), o);
}
grpc::Status ControllerGrpcService::ListGroups(Ctx*, const ListRequest* r,
                                               ListGroupsResponse* o) {
  return Reply(model_->ListGroups(*r), o);
}
grpc::Status ControllerGrpcService::DeleteGroup(Ctx*, const DeleteRequest* r,
                                                DeleteResponse* o) {
  return Reply(model_->DeleteGroup(*r), o);
}
grpc::Status ControllerGrpcService::GroupMembers(Ctx*, const GetRequest* r, GroupMembership* o) {
  return Reply(model_->GroupMembers(r->id()), o);
}
grpc::Status ControllerGrpcService::PutPolicy(Ctx*, const PutPolicyRequest* r, Policy* o) {
  return Reply(model_->PutPolicy(*r), o);
}
grpc::Status ControllerGrpcService::GetPolicy(Ctx*, const GetRequest* r, Policy* o) {
  return Reply(model_->GetPolicy(r->id()), o);
}
grpc::Status ControllerGrpcService::ListPolicies(Ctx*, const ListRequest* r,
                                                 ListPoliciesResponse* o) {
  return Reply(model_->ListPolicies(*r), o);
}
grpc::Status ControllerGrpcService::DeletePolicy(Ctx*, const DeleteRequest* r,
                                                 DeleteResponse* o) {
  return Reply(model_->DeletePolicy(*r), o);
}
grpc::Status ControllerGrpcService::ListHosts(Ctx*, const ListRequest*, ListHostsResponse* o) {
  return Reply(model_->ListHosts(), o);
}
grpc::Status ControllerGrpcService::Realization(Ctx*, const RealizationRequest* r,
                                                RealizationResponse* o) {
  return Reply(model_->Realization(*r), o);
}

grpc::Status ControllerGrpcService::Watch(Ctx* ctx, const WatchRequest* r,
                                          grpc::ServerWriter<ChangeEvent>* w) {
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
