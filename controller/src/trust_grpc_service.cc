#include "dfw/controller/trust_grpc_service.h"

#include "grpc_auth.h"

namespace dfw::controller {
namespace {

// Authorizes the method, then replies with call(caller).
template <typename T, typename F>
grpc::Status Serve(const Authorizer& authz, grpc::ServerContext* ctx, const char* method, F&& call,
                   T* out) {
  auto caller = AuthorizeGrpc(authz, *ctx, std::string("/dfw.v1.TrustService/") + method);
  if (!caller.ok()) return ToGrpc(caller.status());
  ActorScope actor(caller->actor);
  absl::StatusOr<T> r = call(*caller);
  if (!r.ok()) return ToGrpc(r.status());
  *out = std::move(*r);
  return grpc::Status::OK;
}

}  // namespace

using namespace dfw::v1;

grpc::Status TrustGrpcService::Enroll(Ctx* ctx, const EnrollRequest* r, CertificateResponse* o) {
  return Serve(
      *authz_, ctx, "Enroll", [&](const Caller&) { return enrollment_->Enroll(*r); }, o);
}
grpc::Status TrustGrpcService::Renew(Ctx* ctx, const RenewRequest* r, CertificateResponse* o) {
  return Serve(
      *authz_, ctx, "Renew", [&](const Caller& c) { return enrollment_->Renew(*r, c); }, o);
}
grpc::Status TrustGrpcService::CreateJoinToken(Ctx* ctx, const CreateJoinTokenRequest* r,
                                               CreateJoinTokenResponse* o) {
  return Serve(
      *authz_, ctx, "CreateJoinToken",
      [&](const Caller&) { return enrollment_->CreateJoinToken(*r); }, o);
}
grpc::Status TrustGrpcService::ListCertificates(Ctx* ctx, const ListCertificatesRequest* r,
                                                ListCertificatesResponse* o) {
  return Serve(
      *authz_, ctx, "ListCertificates",
      [&](const Caller&) { return enrollment_->ListCertificates(*r); }, o);
}
grpc::Status TrustGrpcService::RevokeCertificate(Ctx* ctx, const RevokeCertificateRequest* r,
                                                 IssuedCertificate* o) {
  return Serve(
      *authz_, ctx, "RevokeCertificate",
      [&](const Caller& c) { return enrollment_->Revoke(*r, c); }, o);
}

}  // namespace dfw::controller
