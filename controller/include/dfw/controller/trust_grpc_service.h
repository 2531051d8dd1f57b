// TrustGrpcService: dfw.v1.TrustService (trust.proto) over gRPC, a thin
// mapping onto Enrollment. Enroll is the one call a peer without a client
// certificate may make (the join token is its proof); Renew is for the
// caller's own identity; the rest need an admin (authz.h).
//
// Thread safety: gRPC's sync server calls it from many threads; Enrollment
// and Authorizer are thread-safe.
#pragma once

#include "dfw/controller/authz.h"
#include "dfw/controller/enrollment.h"
#include "dfw/v1/trust.grpc.pb.h"

namespace dfw::controller {

class TrustGrpcService final : public dfw::v1::TrustService::Service {
 public:
  TrustGrpcService(Enrollment* enrollment, const Authorizer* authz)
      : enrollment_(enrollment), authz_(authz) {}

  using Ctx = grpc::ServerContext;
  grpc::Status Enroll(Ctx*, const dfw::v1::EnrollRequest*, dfw::v1::CertificateResponse*) override;
  grpc::Status Renew(Ctx*, const dfw::v1::RenewRequest*, dfw::v1::CertificateResponse*) override;
  grpc::Status CreateJoinToken(Ctx*, const dfw::v1::CreateJoinTokenRequest*,
                               dfw::v1::CreateJoinTokenResponse*) override;
  grpc::Status ListCertificates(Ctx*, const dfw::v1::ListCertificatesRequest*,
                                dfw::v1::ListCertificatesResponse*) override;
  grpc::Status RevokeCertificate(Ctx*, const dfw::v1::RevokeCertificateRequest*,
                                 dfw::v1::IssuedCertificate*) override;

 private:
  Enrollment* enrollment_;
  const Authorizer* authz_;
};

}  // namespace dfw::controller
