#include "dfw/trust/peer.h"

#include "ossl.h"
#include "str_cat.h"

namespace dfw::trust {

using internal::Cat;

using internal::X509Ptr;

namespace {

struct ShallowStackFree {
  void operator()(STACK_OF(X509) * s) const { sk_X509_free(s); }
};

template <typename T>
absl::Status Refuse(const T& why) {
  return absl::UnauthenticatedError(Cat("peer certificate refused: ", why));
}

}  // namespace

absl::StatusOr<PeerIdentity> InspectLeaf(std::string_view cert_pem, std::string_view trust_domain,
                                         bool require_client_auth) {
  auto cert = internal::ParseCertPem(cert_pem, "peer certificate");
  if (!cert.ok()) return cert.status();
  X509* x = cert->get();

  int crit = -1;
  internal::BasicConstraintsPtr bc(
      static_cast<BASIC_CONSTRAINTS*>(X509_get_ext_d2i(x, NID_basic_constraints, &crit, nullptr)));
  if (!bc && crit != -1) {
    internal::LastError();
    return Refuse("unreadable or repeated basicConstraints extension");
  }
  if (bc && bc->ca) return Refuse("it is a CA certificate (basicConstraints CA:TRUE), not a leaf");

  auto uris = internal::UriSans(x);
  if (!uris.ok()) return Refuse(uris.status().message());
  if (uris->empty()) return Refuse("no URI SAN (it must carry exactly one SPIFFE ID)");
  if (uris->size() > 1) {
    return Refuse(Cat(uris->size(), " URI SANs (it must carry exactly one SPIFFE ID)"));
  }
  auto id = ParseSpiffeId(uris->front());
  if (!id.ok()) return Refuse(Cat("URI SAN is not a SPIFFE ID: ", id.status().message()));
  if (id->trust_domain != trust_domain) {
    return Refuse(Cat(id->ToString(), " is in trust domain '", id->trust_domain, "', not '",
                      trust_domain, "'"));
  }

  if (require_client_auth) {
    crit = -1;
    internal::EkuPtr eku(
        static_cast<EXTENDED_KEY_USAGE*>(X509_get_ext_d2i(x, NID_ext_key_usage, &crit, nullptr)));
    if (!eku && crit != -1) internal::LastError();
    bool client = false;
    for (int i = 0; eku && i < sk_ASN1_OBJECT_num(eku.get()); ++i) {
      client = client || OBJ_obj2nid(sk_ASN1_OBJECT_value(eku.get(), i)) == NID_client_auth;
    }
    if (!client) return Refuse("no clientAuth extended key usage");
  }

  PeerIdentity out;
  X509_NAME* subject = X509_get_subject_name(x);
  int ou_at = X509_NAME_get_index_by_NID(subject, NID_organizationalUnitName, -1);
  if (ou_at >= 0) {
    if (X509_NAME_get_index_by_NID(subject, NID_organizationalUnitName, ou_at) >= 0) {
      return Refuse("more than one OU (role) in the subject");
    }
    const ASN1_STRING* v = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, ou_at));
    std::string_view ou(reinterpret_cast<const char*>(ASN1_STRING_get0_data(v)),
                        static_cast<size_t>(ASN1_STRING_length(v)));
    auto role = ParseRole(ou);
    if (!role.ok()) {
      return Refuse(Cat("unknown role in the subject OU: ", role.status().message()));
    }
    if (id->kind != IdKind::kUser) {
      return Refuse(Cat("role '", ou, "' on ", id->ToString(), ": only users have a role"));
    }
    out.role = *role;
  }

  auto nb = internal::FromAsn1Time(X509_get0_notBefore(x));
  if (!nb.ok()) return nb.status();
  auto na = internal::FromAsn1Time(X509_get0_notAfter(x));
  if (!na.ok()) return na.status();
  out.id = std::move(*id);
  out.serial_hex = internal::SerialHex(X509_get0_serialNumber(x));
  out.not_before = *nb;
  out.not_after = *na;
  return out;
}

absl::Status VerifyChain(std::string_view cert_pem, std::string_view bundle_pem,
                         Clock::time_point at) {
  auto chain = internal::ParseCertsPem(cert_pem, "certificate");
  if (!chain.ok()) return chain.status();
  auto roots = internal::ParseCertsPem(bundle_pem, "trust bundle");
  if (!roots.ok()) return roots.status();
  internal::X509StorePtr store(X509_STORE_new());
  if (!store) return internal::OsslFailure("X509_STORE_new");
  for (auto& r : *roots) {
    if (X509_STORE_add_cert(store.get(), r.get()) != 1) {
      return internal::OsslFailure("adding a bundle certificate");
    }
  }
  // The stack only borrows the certificates, which `chain` owns.
  std::unique_ptr<STACK_OF(X509), ShallowStackFree> untrusted(sk_X509_new_null());
  if (!untrusted) return internal::OsslFailure("sk_X509_new_null");
  for (size_t i = 1; i < chain->size(); ++i) {
    if (sk_X509_push(untrusted.get(), (*chain)[i].get()) <= 0) {
      return internal::OsslFailure("sk_X509_push");
    }
  }
  internal::X509StoreCtxPtr ctx(X509_STORE_CTX_new());
  if (!ctx ||
      X509_STORE_CTX_init(ctx.get(), store.get(), chain->front().get(), untrusted.get()) != 1) {
    return internal::OsslFailure("X509_STORE_CTX_init");
  }
  X509_STORE_CTX_set_time(ctx.get(), 0, Clock::to_time_t(at));
  if (X509_verify_cert(ctx.get()) != 1) {
    int err = X509_STORE_CTX_get_error(ctx.get());
    internal::LastError();
    return absl::UnauthenticatedError(Cat("certificate does not verify against the bundle: ",
                                          X509_verify_cert_error_string(err)));
  }
  return absl::OkStatus();
}

absl::StatusOr<SpiffeId> SpiffeIdOf(std::string_view cert_pem) {
  auto cert = internal::ParseCertPem(cert_pem, "certificate");
  if (!cert.ok()) return cert.status();
  auto uris = internal::UriSans(cert->get());
  if (!uris.ok()) return uris.status();
  if (uris->size() != 1) {
    return absl::InvalidArgumentError(
        Cat("certificate: ", uris->size(), " URI SANs (it must carry exactly one SPIFFE ID)"));
  }
  auto id = ParseSpiffeId(uris->front());
  if (!id.ok()) {
    return absl::InvalidArgumentError(
        Cat("certificate: URI SAN is not a SPIFFE ID: ", id.status().message()));
  }
  return id;
}

absl::StatusOr<Clock::time_point> NotAfter(std::string_view cert_pem) {
  auto cert = internal::ParseCertPem(cert_pem, "certificate");
  if (!cert.ok()) return cert.status();
  return internal::FromAsn1Time(X509_get0_notAfter(cert->get()));
}

absl::StatusOr<Clock::time_point> NotBefore(std::string_view cert_pem) {
  auto cert = internal::ParseCertPem(cert_pem, "certificate");
  if (!cert.ok()) return cert.status();
  return internal::FromAsn1Time(X509_get0_notBefore(cert->get()));
}

}  // namespace dfw::trust
