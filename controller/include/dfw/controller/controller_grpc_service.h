// ControllerGrpcService: dfw.v1.ControllerService over gRPC, a thin mapping
// onto ModelService (absl::Status codes become gRPC codes one to one).
// Watch streams change events from a revision, then follows new changes
// until the client cancels.
//
// Every call is authorized first (authz.h: the method's permission, from
// the peer's certificate) and runs with the caller as the change's actor.
//
// Thread safety: gRPC's sync server calls it from many threads; ModelService
// and Authorizer are thread-safe.
#pragma once

#include <string_view>

#include "dfw/controller/authz.h"
#include "dfw/controller/model_service.h"
#include "dfw/v1/controller.grpc.pb.h"

namespace dfw::controller {

class ControllerGrpcService final : public dfw::v1::ControllerService::Service {
 public:
  ControllerGrpcService(ModelService* model, const Authorizer* authz)
      : model_(model), authz_(authz) {}

  using Ctx = grpc::ServerContext;
  grpc::Status PutVm(Ctx*, const dfw::v1::PutVmRequest*, dfw::v1::Vm*) override;
  grpc::Status GetVm(Ctx*, const dfw::v1::GetRequest*, dfw::v1::Vm*) override;
  grpc::Status ListVms(Ctx*, const dfw::v1::ListRequest*, dfw::v1::ListVmsResponse*) override;
  grpc::Status DeleteVm(Ctx*, const dfw::v1::DeleteRequest*, dfw::v1::DeleteResponse*) override;
  grpc::Status Tag(Ctx*, const dfw::v1::TagRequest*, dfw::v1::TagResponse*) override;
  grpc::Status VmGroups(Ctx*, const dfw::v1::GetRequest*, dfw::v1::VmGroupsResponse*) override;
  grpc::Status EffectiveRules(Ctx*, const dfw::v1::EffectiveRulesRequest*,
                              dfw::v1::EffectiveRulesResponse*) override;
  grpc::Status Trace(Ctx*, const dfw::v1::TraceRequest*, dfw::v1::TraceResponse*) override;
  grpc::Status ProbeFlow(Ctx*, const dfw::v1::ProbeFlowRequest*,
                         dfw::v1::ProbeFlowResponse*) override;
  grpc::Status PutGroup(Ctx*, const dfw::v1::PutGroupRequest*, dfw::v1::SecurityGroup*) override;
  grpc::Status GetGroup(Ctx*, const dfw::v1::GetRequest*, dfw::v1::SecurityGroup*) override;
  grpc::Status ListGroups(Ctx*, const dfw::v1::ListRequest*, dfw::v1::ListGroupsResponse*) override;
  grpc::Status DeleteGroup(Ctx*, const dfw::v1::DeleteRequest*, dfw::v1::DeleteResponse*) override;
  grpc::Status GroupMembers(Ctx*, const dfw::v1::GetRequest*, dfw::v1::GroupMembership*) override;
  grpc::Status PutPolicy(Ctx*, const dfw::v1::PutPolicyRequest*, dfw::v1::Policy*) override;
  grpc::Status PreviewPolicy(Ctx*, const dfw::v1::PreviewPolicyRequest*,
                             dfw::v1::PolicyImpact*) override;
  grpc::Status GetPolicy(Ctx*, const dfw::v1::GetRequest*, dfw::v1::Policy*) override;
  grpc::Status ListPolicies(Ctx*, const dfw::v1::ListRequest*,
                            dfw::v1::ListPoliciesResponse*) override;
  grpc::Status DeletePolicy(Ctx*, const dfw::v1::DeleteRequest*, dfw::v1::DeleteResponse*) override;
  grpc::Status ListHosts(Ctx*, const dfw::v1::ListRequest*, dfw::v1::ListHostsResponse*) override;
  grpc::Status DeleteHost(Ctx*, const dfw::v1::DeleteRequest*, dfw::v1::DeleteResponse*) override;
  grpc::Status AddExclusion(Ctx*, const dfw::v1::Exclusion*, dfw::v1::Exclusion*) override;
  grpc::Status PreviewGroup(Ctx*, const dfw::v1::PreviewGroupRequest*,
                            dfw::v1::GroupImpact*) override;
  grpc::Status PreviewTag(Ctx*, const dfw::v1::TagRequest*, dfw::v1::GroupImpact*) override;
  grpc::Status ListExclusions(Ctx*, const dfw::v1::ListRequest*,
                              dfw::v1::ListExclusionsResponse*) override;
  grpc::Status DeleteExclusion(Ctx*, const dfw::v1::DeleteExclusionRequest*,
                               dfw::v1::DeleteResponse*) override;
  grpc::Status Realization(Ctx*, const dfw::v1::RealizationRequest*,
                           dfw::v1::RealizationResponse*) override;
  grpc::Status Watch(Ctx*, const dfw::v1::WatchRequest*,
                     grpc::ServerWriter<dfw::v1::ChangeEvent>*) override;

 private:
  // Authorizes `method` (its name in the service), then replies with call().
  template <typename T, typename F>
  grpc::Status Serve(Ctx* ctx, std::string_view method, F&& call, T* out);
  ModelService* model_;
  const Authorizer* authz_;
};

}  // namespace dfw::controller
