#include "dfw/controller/enrollment.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

#include "absl/strings/ascii.h"
#include "dfw/trust/svid.h"
#include "google/protobuf/util/time_util.h"
#include "str_util.h"

namespace dfw::controller {

using google::protobuf::util::TimeUtil;
using std::chrono::seconds;

namespace {

constexpr seconds kDefaultTokenTtl{3600};
constexpr seconds kMaxTokenTtl{7 * 24 * 3600};
constexpr seconds kDefaultCertTtl{24 * 3600};
constexpr seconds kMinCertTtl{300};
constexpr seconds kMaxCertTtl{30 * 24 * 3600};

google::protobuf::Timestamp ToTs(trust::Clock::time_point t) {
  return TimeUtil::TimeTToTimestamp(trust::Clock::to_time_t(t));
}
trust::Clock::time_point FromTs(const google::protobuf::Timestamp& t) {
  return trust::Clock::from_time_t(TimeUtil::TimestampToTimeT(t));
}

absl::StatusOr<trust::IdKind> KindOf(dfw::v1::IdentityKind k) {
  switch (k) {
    case dfw::v1::IDENTITY_KIND_HOST:
      return trust::IdKind::kHost;
    case dfw::v1::IDENTITY_KIND_VM:
      return trust::IdKind::kVm;
    case dfw::v1::IDENTITY_KIND_USER:
      return trust::IdKind::kUser;
    default:
      return absl::InvalidArgumentError("kind: must be host, vm or user");
  }
}

// What the certificate of `id` carries (trust::EnrolledLeafOptions: hosts
// get serverAuth and, when their id is a DNS name, a DNS SAN equal to it),
// the same at enrollment and renewal. A host id that is not a DNS name is
// logged: its agent's HTTPS listener cannot be verified by name.
trust::IssueOptions OptionsFor(const trust::SpiffeId& id, const char* what) {
  trust::IssueOptions o = trust::EnrolledLeafOptions(id);
  if (id.kind == trust::IdKind::kHost && o.dns_sans.empty()) {
    spdlog::warn(
        "dfw-controller: {}: host id '{}' is not a DNS name (RFC 1123); its certificate has no "
        "DNS SAN, so a standard TLS client (Prometheus, curl) cannot verify its agent by name",
        what, id.name);
  }
  return o;
}

}  // namespace

Enrollment::Enrollment(ModelService* model, std::unique_ptr<trust::CertificateAuthority> ca,
                       RevocationList* revoked)
    : model_(model), ca_(std::move(ca)), revoked_(revoked) {}
Enrollment::~Enrollment() = default;

absl::Status Enrollment::Load() {
  return model_->store().ForEach(Kind::kCertificate, [&](const std::string& v) {
    dfw::v1::IssuedCertificate c;
    if (!c.ParseFromString(v)) return absl::DataLossError("store: cannot parse a certificate");
    if (c.revoked()) revoked_->Add(c.serial());
    return absl::OkStatus();
  });
}

absl::StatusOr<dfw::v1::CreateJoinTokenResponse> Enrollment::CreateJoinToken(
    const dfw::v1::CreateJoinTokenRequest& req) {
  if (!ca_) return absl::FailedPreconditionError("ca: this controller has no CA (--ca-dir)");
  auto kind = KindOf(req.kind());
  if (!kind.ok()) return kind.status();
  if (auto s = trust::ValidateIdName(req.name()); !s.ok()) {
    return absl::InvalidArgumentError(Cat("name: ", s.message()));
  }
  trust::Role role = trust::Role::kNone;
  if (*kind == trust::IdKind::kUser) {
    auto r = trust::ParseRole(req.role());
    if (!r.ok()) return absl::InvalidArgumentError(Cat("role: ", r.status().message()));
    role = *r;
  } else if (!req.role().empty()) {
    return absl::InvalidArgumentError("role: only users have a role");
  }
  seconds ttl = req.ttl_seconds() == 0 ? kDefaultTokenTtl : seconds(req.ttl_seconds());
  if (ttl > kMaxTokenTtl) {
    return absl::InvalidArgumentError(Cat("ttl_seconds: at most ", kMaxTokenTtl.count()));
  }
  seconds cert_ttl =
      req.cert_ttl_seconds() == 0 ? kDefaultCertTtl : seconds(req.cert_ttl_seconds());
  if (cert_ttl < kMinCertTtl || cert_ttl > kMaxCertTtl) {
    return absl::InvalidArgumentError(Cat("cert_ttl_seconds: must be between ", kMinCertTtl.count(),
                                          " and ", kMaxCertTtl.count()));
  }
  trust::SpiffeId id{ca_->trust_domain(), *kind, req.name()};
  std::string token = trust::NewJoinToken();
  std::string hash = trust::TokenHash(token);
  dfw::v1::JoinToken stored;
  stored.set_token_hash(hash);
  stored.set_spiffe_id(id.ToString());
  if (role != trust::Role::kNone) stored.set_role(trust::RoleName(role));
  *stored.mutable_expires_at() = ToTs(trust::Clock::now() + ttl);
  stored.set_cert_ttl_seconds(static_cast<uint32_t>(cert_ttl.count()));
  stored.set_created_by(ActorScope::Current());
  auto rev = model_->CommitAuxiliary([&](ChangeSet& cs) -> absl::Status {
    size_t outstanding = 0;
    auto now = trust::Clock::now();
    // Expired tokens are dropped on the way (in the same change).
    auto s = model_->store().ForEach(Kind::kJoinToken, [&](const std::string& v) {
      dfw::v1::JoinToken t;
      if (!t.ParseFromString(v)) return absl::OkStatus();
      if (FromTs(t.expires_at()) > now) {
        ++outstanding;
      } else {
        cs.Delete(Kind::kJoinToken, t.token_hash());
      }
      return absl::OkStatus();
    });
    if (!s.ok()) return s;
    if (outstanding >= kMaxOutstandingTokens) {
      return absl::ResourceExhaustedError(Cat("join-tokens: ", outstanding,
                                              " unused tokens outstanding (limit ",
                                              kMaxOutstandingTokens, ")"));
    }
    cs.Put(Kind::kJoinToken, hash, stored);
    cs.AddEvent(dfw::v1::ChangeEvent::KIND_JOIN_TOKEN, hash.substr(0, 12), false);
    return absl::OkStatus();
  });
  if (!rev.ok()) return rev.status();
  dfw::v1::CreateJoinTokenResponse out;
  out.set_token(token);
  out.set_token_id(hash.substr(0, 12));
  out.set_spiffe_id(stored.spiffe_id());
  *out.mutable_expires_at() = stored.expires_at();
  return out;
}

absl::StatusOr<dfw::v1::CertificateResponse> Enrollment::Issue(ChangeSet& cs,
                                                               std::string_view csr_pem,
                                                               const trust::IssueOptions& o) {
  auto issued = ca_->IssueFromCsr(csr_pem, o);
  if (!issued.ok()) return absl::InvalidArgumentError(Cat("csr_pem: ", issued.status().message()));
  dfw::v1::IssuedCertificate rec;
  rec.set_serial(issued->serial_hex);
  rec.set_spiffe_id(o.id.ToString());
  if (o.role != trust::Role::kNone) rec.set_role(trust::RoleName(o.role));
  *rec.mutable_not_before() = ToTs(issued->not_before);
  *rec.mutable_not_after() = ToTs(issued->not_after);
  rec.set_issued_to(ActorScope::Current().empty() ? o.id.ToString() : ActorScope::Current());
  cs.Put(Kind::kCertificate, rec.serial(), rec);
  cs.AddEvent(dfw::v1::ChangeEvent::KIND_CERTIFICATE, rec.serial(), false);
  dfw::v1::CertificateResponse out;
  out.set_cert_pem(issued->cert_pem);
  out.set_bundle_pem(ca_->bundle_pem());
  out.set_spiffe_id(rec.spiffe_id());
  out.set_serial(rec.serial());
  *out.mutable_not_after() = rec.not_after();
  return out;
}

absl::StatusOr<dfw::v1::CertificateResponse> Enrollment::Enroll(const dfw::v1::EnrollRequest& req) {
  if (!ca_) return absl::FailedPreconditionError("ca: this controller has no CA (--ca-dir)");
  if (req.token().empty()) return absl::InvalidArgumentError("token: required");
  if (req.csr_pem().empty()) return absl::InvalidArgumentError("csr_pem: required");
  std::string hash = trust::TokenHash(req.token());
  dfw::v1::CertificateResponse out;
  auto rev = model_->CommitAuxiliary([&](ChangeSet& cs) -> absl::Status {
    dfw::v1::JoinToken t;
    auto s = model_->store().Get(Kind::kJoinToken, hash, &t);
    if (absl::IsNotFound(s)) {
      return absl::UnauthenticatedError("token: unknown or already used");
    }
    if (!s.ok()) return s;
    if (FromTs(t.expires_at()) < trust::Clock::now()) {
      return absl::UnauthenticatedError(
          Cat("token: expired at ", TimeUtil::ToString(t.expires_at()), "; create a new one"));
    }
    auto id = trust::ParseSpiffeId(t.spiffe_id());
    if (!id.ok()) return absl::InternalError(Cat("stored token: ", id.status().message()));
    trust::IssueOptions o = OptionsFor(*id, "enroll");
    if (!t.role().empty()) {
      auto r = trust::ParseRole(t.role());
      if (!r.ok()) return absl::InternalError(Cat("stored token: ", r.status().message()));
      o.role = *r;
    }
    o.validity = seconds(t.cert_ttl_seconds() ? t.cert_ttl_seconds() : kDefaultCertTtl.count());
    ActorScope actor(t.spiffe_id());  // the change log names who enrolled
    auto c = Issue(cs, req.csr_pem(), o);
    if (!c.ok()) return c.status();
    cs.Delete(Kind::kJoinToken, hash);
    cs.AddEvent(dfw::v1::ChangeEvent::KIND_JOIN_TOKEN, hash.substr(0, 12), true);
    out = std::move(*c);
    return absl::OkStatus();
  });
  if (!rev.ok()) return rev.status();
  return out;
}

absl::StatusOr<dfw::v1::CertificateResponse> Enrollment::Renew(const dfw::v1::RenewRequest& req,
                                                               const Caller& caller) {
  if (!ca_) return absl::FailedPreconditionError("ca: this controller has no CA (--ca-dir)");
  if (!caller.peer) {
    return absl::FailedPreconditionError("renew: needs the certificate being renewed");
  }
  if (req.csr_pem().empty()) return absl::InvalidArgumentError("csr_pem: required");
  trust::IssueOptions o = OptionsFor(caller.peer->id, "renew");
  o.role = caller.peer->role;
  auto held = std::chrono::duration_cast<seconds>(caller.peer->not_after - caller.peer->not_before);
  // not_before was back-dated by the skew allowance; keep the lifetime issued.
  o.validity = std::clamp(held - seconds(60), kMinCertTtl, kMaxCertTtl);
  dfw::v1::CertificateResponse out;
  auto rev = model_->CommitAuxiliary([&](ChangeSet& cs) -> absl::Status {
    auto c = Issue(cs, req.csr_pem(), o);
    if (!c.ok()) return c.status();
    out = std::move(*c);
    return absl::OkStatus();
  });
  if (!rev.ok()) return rev.status();
  return out;
}

absl::StatusOr<dfw::v1::ListCertificatesResponse> Enrollment::ListCertificates(
    const dfw::v1::ListCertificatesRequest& req) const {
  dfw::v1::ListCertificatesResponse out;
  auto now = trust::Clock::now();
  auto s = model_->store().ForEach(Kind::kCertificate, [&](const std::string& v) {
    dfw::v1::IssuedCertificate c;
    if (!c.ParseFromString(v)) return absl::DataLossError("store: cannot parse a certificate");
    if (req.include_expired() || FromTs(c.not_after()) > now) *out.add_certificates() = c;
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return out;
}

absl::StatusOr<dfw::v1::IssuedCertificate> Enrollment::Revoke(
    const dfw::v1::RevokeCertificateRequest& req, const Caller& caller) {
  if (req.serial().empty() || req.serial().size() > 64 ||
      req.serial().find_first_not_of("0123456789abcdefABCDEF") != std::string::npos) {
    return absl::InvalidArgumentError("serial: must be the certificate's serial in hex");
  }
  // Serials are compared as issued: lower-case hex without leading zero bytes.
  std::string serial = absl::AsciiStrToLower(req.serial());
  while (serial.size() > 2 && serial.compare(0, 2, "00") == 0) serial.erase(0, 2);
  dfw::v1::IssuedCertificate rec;
  auto rev = model_->CommitAuxiliary([&](ChangeSet& cs) -> absl::Status {
    auto s = model_->store().Get(Kind::kCertificate, serial, &rec);
    if (absl::IsNotFound(s)) {
      // Issued offline (dfwctl ca init) or lost: revoke the serial all the same.
      rec.Clear();
      rec.set_serial(serial);
    } else if (!s.ok()) {
      return s;
    }
    if (rec.revoked()) return absl::OkStatus();  // idempotent: nothing to write
    rec.set_revoked(true);
    rec.set_revoked_by(caller.actor);
    *rec.mutable_revoked_at() = ToTs(trust::Clock::now());
    cs.Put(Kind::kCertificate, rec.serial(), rec);
    cs.AddEvent(dfw::v1::ChangeEvent::KIND_CERTIFICATE, rec.serial(), true);
    return absl::OkStatus();
  });
  if (!rev.ok()) return rev.status();
  revoked_->Add(rec.serial());
  return rec;
}

}  // namespace dfw::controller
