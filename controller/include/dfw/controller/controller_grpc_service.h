// ControllerGrpcService: dfw.v1.ControllerService over gRPC, a thin mapping
// onto ModelService (absl::Status codes become gRPC codes one to one).
// Watch streams change events from a revision, then follows new changes
// until the client cancels.
//
// Thread safety: gRPC's sync server calls it from many threads; ModelService
// is thread-safe.
#pragma once

#include "dfw/controller/model_service.h"
#include "dfw/v1/controller.grpc.pb.h"

namespace dfw::controller {

class ControllerGrpcService final : public dfw::v1::ControllerService::Service {
 public:
  explicit ControllerGrpcService(ModelService* model) : model_(model) {}

  using Ctx = grpc::ServerContext;
  grpc::Status PutVm(Ctx*, const dfw::v1::PutVmRequest*, dfw::v1::Vm*) override;
  grpc::Status GetVm(Ctx*, const dfw::v1::GetRequest*, dfw::v1::Vm*) override;
  grpc::Status ListVms(Ctx*, const dfw::v1::ListRequest*, dfw::v1::ListVmsResponse*) override;
  grpc::Status DeleteVm(Ctx*, const dfw::v1::DeleteRequest*, dfw::v1::DeleteResponse*) override;
  grpc::Status Tag(Ctx*, const dfw::v1::TagRequest*, dfw::v1::TagResponse*) override;
  grpc::Status VmGroups(Ctx*, const dfw::v1::GetRequest*, dfw::v1::VmGroupsResponse*) override;
  grpc::Status EffectiveRules(Ctx*, const dfw::v1::EffectiveRulesRequest*,
                              dfw::v1::EffectiveRulesResponse*) override;
  grpc::Status PutGroup(Ctx*, const dfw::v1::PutGroupRequest*, dfw::v1::SecurityGroup*) override;
  grpc::Status GetGroup(Ctx*, const dfw::v1::GetRequest*, dfw::v1::SecurityGroup*) override;
  grpc::Status ListGroups(Ctx*, const dfw::v1::ListRequest*,
                          dfw::v1::ListGroupsResponse*) override;
  grpc::Status DeleteGroup(Ctx*, const dfw::v1::DeleteRequest*, dfw::v1::DeleteResponse*) override;
  grpc::Status GroupMembers(Ctx*, const dfw::v1::GetRequest*, dfw::v1::GroupMembership*) override;
  grpc::Status PutPolicy(Ctx*, const dfw::v1::PutPolicyRequest*, dfw::v1::Policy*) override;
  grpc::Status GetPolicy(Ctx*, const dfw::v1::GetRequest*, dfw::v1::Policy*) override;
  grpc::Status ListPolicies(Ctx*, const dfw::v1::ListRequest*,
                            dfw::v1::ListPoliciesResponse*) override;
  grpc::Status DeletePolicy(Ctx*, const dfw::v1::DeleteRequest*,
                            dfw::v1::DeleteResponse*) override;
  grpc::Status ListHosts(Ctx*, const dfw::v1::ListRequest*, dfw::v1::ListHostsResponse*) override;
  grpc::Status Realization(Ctx*, const dfw::v1::RealizationRequest*,
                           dfw::v1::RealizationResponse*) override;
  grpc::Status Watch(Ctx*, const dfw::v1::WatchRequest*,
                     grpc::ServerWriter<dfw::v1::ChangeEvent>*) override;

 private:
  ModelService* model_;
};

}  // namespace dfw::controller
