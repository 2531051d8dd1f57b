// The gRPC side of authorization (authz.h): the caller of a call from the
// TLS peer certificate gRPC verified, and status conversion.
#pragma once

#include <grpcpp/grpcpp.h>

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "dfw/controller/authz.h"

namespace dfw::controller {

inline grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

// The leaf certificate (PEM) the peer presented, or "" (none, or plaintext).
inline std::string PeerLeafPem(const grpc::ServerContextBase& ctx) {
  auto auth = ctx.auth_context();
  if (!auth) return {};
  auto v = auth->FindPropertyValues(GRPC_X509_PEM_CERT_PROPERTY_NAME);
  if (v.empty()) return {};
  return std::string(v.front().data(), v.front().size());
}

// The caller, holding the permission PermissionForGrpc gives `method`
// ("/dfw.v1.ControllerService/PutVm"), or why not.
inline absl::StatusOr<Caller> AuthorizeGrpc(const Authorizer& authz,
                                            const grpc::ServerContextBase& ctx,
                                            std::string_view method) {
  return authz.Authorize(PeerLeafPem(ctx), PermissionForGrpc(method));
}

}  // namespace dfw::controller
