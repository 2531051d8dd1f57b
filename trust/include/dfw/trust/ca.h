// CertificateAuthority: the product's small X.509 CA, which issues the
// SPIFFE X.509-SVIDs (spiffe_id.h) that every mutual-TLS connection is
// authenticated with.
//
// What. One self-signed EC P-256 root per trust domain, kept in a directory:
//   <dir>/ca.pem      the CA certificate (CA:TRUE, keyCertSign|cRLSign, 10
//                     years, subject CN "dfw CA <td>", URI SAN spiffe://<td>);
//                     this is the trust bundle peers are given
//   <dir>/ca_key.pem  its private key, mode 0600 (the directory is 0700)
// Leaves are issued either from a CSR (the holder keeps its key: enrollment
// and renewal) or with a freshly generated key (bootstrap: the controller's
// own certificate and the first admin). A leaf carries exactly one URI SAN,
// the SPIFFE ID, is CA:FALSE with keyUsage digitalSignature and extended key
// usage clientAuth (plus serverAuth for a server), has a random 128-bit
// serial, and names the holder in its subject: CN = the ID's name, OU = the
// user's role (the way Kubernetes puts groups in O). Dates are whole seconds:
// notBefore = o.not_before (default now - 60 s, for clock skew) and notAfter =
// (o.not_before, or now) + o.validity.
//
// How. OpenSSL 3 (libcrypto). A CSR is only proof of possession: its
// self-signature and key type (EC P-256/P-384, RSA >= 2048) are checked, its
// subject and requested extensions are ignored; what the certificate says
// comes from IssueOptions, which the caller (the enrollment service) decides.
// The test knobs at the end of IssueOptions make deliberately bad leaves for
// the negative tests of peer.h and of the servers; nothing else sets them.
//
// Errors: AlreadyExists (Init over an existing CA), NotFound (Load of a
// missing file), InvalidArgument (a bad CSR, ID, SAN or option; the message
// names it), Internal (an OpenSSL failure, with OpenSSL's error text).
//
// Thread safety: Init/Load are plain factories. IssueFromCsr and
// IssueWithNewKey are safe from any thread (a mutex inside serializes
// signing); the accessors return immutable data.
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "dfw/trust/spiffe_id.h"

namespace dfw::trust {

using Clock = std::chrono::system_clock;

inline constexpr char kCaCertFile[] = "ca.pem";
inline constexpr char kCaKeyFile[] = "ca_key.pem";

struct IssueOptions {
  SpiffeId id;
  // Written as the subject's OU (Kubernetes puts groups in O the same way).
  // Users only: a role on another kind is refused.
  Role role = Role::kNone;
  std::chrono::seconds validity{24 * 3600};
  // Default: now - 60 s (clock skew).
  std::optional<Clock::time_point> not_before;
  // Extra SANs for a server certificate (controller): DNS names and IPv4/IPv6
  // addresses; each is checked (an invalid one is an InvalidArgument).
  std::vector<std::string> dns_sans, ip_sans;
  // EKU serverAuth added (controller); clientAuth is always added unless:
  bool server_auth = false;

  // Test knobs, used only by the negative-matrix tests to make bad certificates:
  bool client_auth = true;                  // false: no clientAuth EKU (serverAuth only, or none)
  bool ca_true = false;                     // basicConstraints CA:TRUE on a leaf
  bool omit_uri_san = false;                // no URI SAN at all
  std::vector<std::string> extra_uri_sans;  // added after the SPIFFE ID (two URI SANs)
};

struct Issued {
  std::string cert_pem;
  std::string serial_hex;  // lower case, no leading zero bytes (the same as peer.h's)
  Clock::time_point not_before, not_after;
};

struct KeyAndCert {
  std::string key_pem;  // PKCS#8 PEM, unencrypted
  Issued cert;
};

class CertificateAuthority {
 public:
  // Creates `dir` (0700) holding a new CA for `trust_domain`. Refuses
  // (AlreadyExists) if ca.pem or ca_key.pem exists there.
  static absl::StatusOr<std::unique_ptr<CertificateAuthority>> Init(
      const std::string& dir, const std::string& trust_domain);
  // Loads the CA in `dir`; the trust domain is read from the CA certificate's
  // URI SAN. Checks that the key matches the certificate and that it is a CA.
  static absl::StatusOr<std::unique_ptr<CertificateAuthority>> Load(const std::string& dir);

  ~CertificateAuthority();
  CertificateAuthority(const CertificateAuthority&) = delete;
  CertificateAuthority& operator=(const CertificateAuthority&) = delete;

  const std::string& trust_domain() const { return trust_domain_; }
  // The CA certificate, PEM (what peers trust).
  const std::string& bundle_pem() const { return bundle_pem_; }
  const std::string& dir() const { return dir_; }

  // Verifies the CSR's self-signature and key (EC P-256/P-384 or RSA >= 2048),
  // ignores its subject and extensions, and issues a leaf for o.id, whose
  // trust domain must be the CA's.
  absl::StatusOr<Issued> IssueFromCsr(std::string_view csr_pem, const IssueOptions& o);
  // A new EC P-256 key and a leaf for it.
  absl::StatusOr<KeyAndCert> IssueWithNewKey(const IssueOptions& o);

 private:
  struct Impl;
  explicit CertificateAuthority(std::unique_ptr<Impl> impl);

  std::unique_ptr<Impl> impl_;
  std::string dir_, trust_domain_, bundle_pem_;
  std::mutex mu_;
};

// Whether `name` is a DNS host name a TLS client can check a certificate
// against (RFC 1123): 1..253 characters, dot-separated labels of 1..63
// characters of [A-Za-z0-9-] that neither start nor end with '-', and a last
// label that is not all digits (so that an IPv4 literal such as "10.0.0.1" is
// not taken for a name, RFC 3696 section 2).
bool IsDnsHostName(std::string_view name);

// The issuance policy for certificates the controller issues from a join
// token or renews (Enrollment), by the kind of `id`; the caller adds the
// role (users) and the validity:
//   host  clientAuth (its host session) and serverAuth (its agent serves GET
//         /metrics over HTTPS), and a DNS SAN equal to the host id when
//         IsDnsHostName(id.name) (otherwise no DNS SAN: a standard TLS client
//         cannot then verify the agent by name). The host id is what the join
//         token was bound to, so the name is as trustworthy as the SPIFFE ID;
//         nothing is taken from the CSR.
//   vm, user, controller  clientAuth only, no DNS or IP SAN (least
//         privilege; the controller's own server certificate is issued by
//         `dfwctl ca init`, not through this).
IssueOptions EnrolledLeafOptions(const SpiffeId& id);

struct KeyAndCsr {
  std::string key_pem, csr_pem;
};
// A new EC P-256 key and a CSR for it, signed with it, subject CN =
// common_name (at most 64 characters; the CA ignores it anyway).
absl::StatusOr<KeyAndCsr> GenerateKeyAndCsr(std::string_view common_name);

}  // namespace dfw::trust
