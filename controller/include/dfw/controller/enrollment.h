// Enrollment: join tokens, certificates issued from CSRs, renewal and
// revocation — the controller's side of trust.proto.
//
// What. An admin creates a one-time join token for one identity
// (spiffe://<td>/host/<id>, /vm/<uuid>, /user/<name> with a role). The
// agent or user generates its own key and sends a CSR with the token;
// Enroll checks the token (known, unused, not expired), issues a
// certificate for the token's identity (never the CSR's subject) and
// deletes the token — in one change, under the model's writer lock, so a
// token enrolls exactly once even when two callers race. Renew issues a new
// certificate for the caller's own identity and role, with the lifetime of
// the one it holds. Revoke adds a serial to the revocation list: it is
// refused from then on, also on open host sessions.
//
// How. Tokens ("t/<sha256>") and certificates ("c/<serial>") live in the
// controller's store and are written through
// ModelService::CommitAuxiliary: each is a revision of its own with a
// change log event naming the actor. Only the token's hash is stored. The
// CA (trust::CertificateAuthority) signs; without one (a controller started
// without --ca-dir) enrollment and renewal fail with FAILED_PRECONDITION.
//
// Limits: kMaxOutstandingTokens unused tokens (expired ones are deleted
// whenever a token is created); token lifetime at most 7 days,
// certificate lifetime between 5 minutes and 30 days.
//
// Thread safety: every method is safe from any thread.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "dfw/controller/authz.h"
#include "dfw/controller/model_service.h"
#include "dfw/trust/ca.h"
#include "dfw/v1/trust.pb.h"

namespace dfw::controller {

class Enrollment {
 public:
  static constexpr size_t kMaxOutstandingTokens = 10000;

  // `ca` may be null: no enrollment on this controller. `revoked` is filled
  // from the store by Load() and by every revocation.
  Enrollment(ModelService* model, std::unique_ptr<trust::CertificateAuthority> ca,
             RevocationList* revoked);
  ~Enrollment();

  // Reads the revoked serials from the store.
  absl::Status Load();

  absl::StatusOr<dfw::v1::CreateJoinTokenResponse> CreateJoinToken(
      const dfw::v1::CreateJoinTokenRequest& req);
  absl::StatusOr<dfw::v1::CertificateResponse> Enroll(const dfw::v1::EnrollRequest& req);
  absl::StatusOr<dfw::v1::CertificateResponse> Renew(const dfw::v1::RenewRequest& req,
                                                     const Caller& caller);
  absl::StatusOr<dfw::v1::ListCertificatesResponse> ListCertificates(
      const dfw::v1::ListCertificatesRequest& req) const;
  absl::StatusOr<dfw::v1::IssuedCertificate> Revoke(const dfw::v1::RevokeCertificateRequest& req,
                                                    const Caller& caller);

  const trust::CertificateAuthority* ca() const { return ca_.get(); }

 private:
  absl::StatusOr<dfw::v1::CertificateResponse> Issue(ChangeSet& cs, std::string_view csr_pem,
                                                     const trust::IssueOptions& o);
  ModelService* model_;
  std::unique_ptr<trust::CertificateAuthority> ca_;
  RevocationList* revoked_;
};

}  // namespace dfw::controller
