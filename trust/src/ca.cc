#include "dfw/trust/ca.h"

#include <openssl/rand.h>
#include <unistd.h>

#include <array>

#include "absl/strings/str_join.h"
#include "files.h"
#include "ossl.h"
#include "str_cat.h"

namespace dfw::trust {

using internal::Cat;

using internal::Asn1IntPtr;
using internal::Asn1StringPtr;
using internal::BioPtr;
using internal::BnPtr;
using internal::GeneralNamesPtr;
using internal::OsslFailure;
using internal::PkeyPtr;
using internal::X509Ptr;
using internal::X509ReqPtr;
using X509NamePtr = std::unique_ptr<X509_NAME, internal::OsslDeleter<X509_NAME_free>>;

namespace {

constexpr auto kCaValidity = std::chrono::hours(24 * 3653);  // 10 years
constexpr auto kSkew = std::chrono::seconds(60);
constexpr size_t kMaxCn = 64;  // ub-common-name (RFC 5280)

std::string Cn(std::string_view s) { return std::string(s.substr(0, kMaxCn)); }

absl::StatusOr<Asn1IntPtr> RandomSerial() {
  std::array<unsigned char, 16> b{};
  bool zero = true;
  while (zero) {  // a serial must be positive
    if (RAND_bytes(b.data(), static_cast<int>(b.size())) != 1) return OsslFailure("RAND_bytes");
    for (unsigned char c : b) zero = zero && c == 0;
  }
  BnPtr bn(BN_bin2bn(b.data(), static_cast<int>(b.size()), nullptr));
  if (!bn) return OsslFailure("BN_bin2bn");
  Asn1IntPtr serial(BN_to_ASN1_INTEGER(bn.get(), nullptr));
  if (!serial) return OsslFailure("BN_to_ASN1_INTEGER");
  return serial;
}

absl::StatusOr<X509NamePtr> MakeName(std::string_view cn, std::string_view ou) {
  X509NamePtr name(X509_NAME_new());
  if (!name) return OsslFailure("X509_NAME_new");
  auto add = [&](int nid, std::string_view v) {
    return X509_NAME_add_entry_by_NID(name.get(), nid, MBSTRING_UTF8,
                                      reinterpret_cast<const unsigned char*>(v.data()),
                                      static_cast<int>(v.size()), -1, 0) == 1;
  };
  if (!add(NID_commonName, Cn(cn))) return OsslFailure(Cat("subject CN '", cn, "'"));
  if (!ou.empty() && !add(NID_organizationalUnitName, ou)) {
    return OsslFailure(Cat("subject OU '", ou, "'"));
  }
  return name;
}

absl::Status AddExt(X509* x, X509V3_CTX* ctx, int nid, const char* value) {
  internal::X509ExtPtr ext(X509V3_EXT_nconf_nid(nullptr, ctx, nid, value));
  if (!ext) return OsslFailure(Cat("extension ", OBJ_nid2sn(nid), " '", value, "'"));
  if (X509_add_ext(x, ext.get(), -1) != 1) {
    return OsslFailure(Cat("adding extension ", OBJ_nid2sn(nid)));
  }
  return absl::OkStatus();
}

absl::Status SetDates(X509* x, time_t nb, time_t na) {
  if (!ASN1_TIME_set(X509_getm_notBefore(x), nb)) return OsslFailure("setting notBefore");
  if (!ASN1_TIME_set(X509_getm_notAfter(x), na)) return OsslFailure("setting notAfter");
  return absl::OkStatus();
}

// Appends a GENERAL_NAME of `type` holding `value` (taken).
absl::Status PushName(GENERAL_NAMES* names, int type, Asn1StringPtr value) {
  GENERAL_NAME* gn = GENERAL_NAME_new();
  if (!gn) return OsslFailure("GENERAL_NAME_new");
  GENERAL_NAME_set0_value(gn, type, value.release());
  if (sk_GENERAL_NAME_push(names, gn) <= 0) {
    GENERAL_NAME_free(gn);
    return OsslFailure("sk_GENERAL_NAME_push");
  }
  return absl::OkStatus();
}

absl::Status PushIa5(GENERAL_NAMES* names, int type, std::string_view text) {
  Asn1StringPtr s(ASN1_IA5STRING_new());
  if (!s || ASN1_STRING_set(s.get(), text.data(), static_cast<int>(text.size())) != 1) {
    return OsslFailure("ASN1_IA5STRING");
  }
  return PushName(names, type, std::move(s));
}

absl::Status ValidateDnsSan(std::string_view d) {
  if (d.empty() || d.size() > 253) {
    return absl::InvalidArgumentError(
        Cat("DNS SAN '", d.substr(0, 300), "' must be 1..253 characters"));
  }
  for (char c : d) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '.' || c == '*') {
      continue;
    }
    return absl::InvalidArgumentError(
        Cat("DNS SAN '", d, "' has a character other than A-Z a-z 0-9 - . *"));
  }
  return absl::OkStatus();
}

absl::Status CheckSubjectKey(EVP_PKEY* key) {
  int id = EVP_PKEY_get_base_id(key);
  if (id == EVP_PKEY_EC) {
    char group[80] = {};
    size_t len = 0;
    if (EVP_PKEY_get_group_name(key, group, sizeof(group), &len) != 1) {
      return absl::InvalidArgumentError(
          Cat("CSR: EC key without a named curve: ", internal::LastError()));
    }
    std::string_view g(group, len);
    if (g == "prime256v1" || g == "P-256" || g == "secp384r1" || g == "P-384") {
      return absl::OkStatus();
    }
    return absl::InvalidArgumentError(
        Cat("CSR: EC curve '", g, "' is not allowed (P-256 or P-384)"));
  }
  if (id == EVP_PKEY_RSA) {
    int bits = EVP_PKEY_get_bits(key);
    if (bits < 2048) {
      return absl::InvalidArgumentError(
          Cat("CSR: RSA key of ", bits, " bits is too small (at least 2048)"));
    }
    return absl::OkStatus();
  }
  const char* type = EVP_PKEY_get0_type_name(key);
  return absl::InvalidArgumentError(Cat("CSR: key type '", type ? type : "unknown",
                                        "' is not allowed (EC P-256/P-384 or RSA >= 2048)"));
}

}  // namespace

struct CertificateAuthority::Impl {
  X509Ptr cert;
  PkeyPtr key;
};

CertificateAuthority::CertificateAuthority(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CertificateAuthority::~CertificateAuthority() = default;

absl::StatusOr<std::unique_ptr<CertificateAuthority>> CertificateAuthority::Init(
    const std::string& dir, const std::string& trust_domain) {
  if (auto s = ValidateTrustDomain(trust_domain); !s.ok()) return s;
  const std::string cert_path = dir + "/" + kCaCertFile;
  const std::string key_path = dir + "/" + kCaKeyFile;
  for (const std::string& p : {cert_path, key_path}) {
    if (internal::Exists(p)) {
      return absl::AlreadyExistsError(
          Cat("ca: ", p, " already exists; refusing to replace an existing CA"));
    }
  }
  if (auto s = internal::MakeDir(dir, 0700); !s.ok()) return s;

  auto key = internal::NewEcKey("P-256");
  if (!key.ok()) return key.status();
  X509Ptr x(X509_new());
  if (!x) return OsslFailure("X509_new");
  auto serial = RandomSerial();
  if (!serial.ok()) return serial.status();
  auto name = MakeName(Cat("dfw CA ", trust_domain), "");
  if (!name.ok()) return name.status();
  const auto now = Clock::now();
  if (X509_set_version(x.get(), X509_VERSION_3) != 1 ||
      X509_set_serialNumber(x.get(), serial->get()) != 1 ||
      X509_set_subject_name(x.get(), name->get()) != 1 ||
      X509_set_issuer_name(x.get(), name->get()) != 1 ||
      X509_set_pubkey(x.get(), key->get()) != 1) {
    return OsslFailure("building the CA certificate");
  }
  if (auto s =
          SetDates(x.get(), Clock::to_time_t(now - kSkew), Clock::to_time_t(now + kCaValidity));
      !s.ok()) {
    return s;
  }
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, x.get(), x.get(), nullptr, nullptr, 0);
  for (auto [nid, value] : {std::pair{NID_basic_constraints, "critical,CA:TRUE,pathlen:0"},
                            std::pair{NID_key_usage, "critical,keyCertSign,cRLSign"},
                            std::pair{NID_subject_key_identifier, "hash"}}) {
    if (auto s = AddExt(x.get(), &ctx, nid, value); !s.ok()) return s;
  }
  GeneralNamesPtr sans(sk_GENERAL_NAME_new_null());
  if (!sans) return OsslFailure("sk_GENERAL_NAME_new_null");
  if (auto s = PushIa5(sans.get(), GEN_URI, Cat("spiffe://", trust_domain)); !s.ok()) {
    return s;
  }
  if (X509_add1_ext_i2d(x.get(), NID_subject_alt_name, sans.get(), 0, X509V3_ADD_DEFAULT) != 1) {
    return OsslFailure("adding the CA's URI SAN");
  }
  if (X509_sign(x.get(), key->get(), EVP_sha256()) <= 0) return OsslFailure("signing the CA");

  auto key_pem = internal::KeyToPem(key->get());
  if (!key_pem.ok()) return key_pem.status();
  auto cert_pem = internal::CertToPem(x.get());
  if (!cert_pem.ok()) return cert_pem.status();
  if (auto s = internal::WriteFileAtomic(key_path, *key_pem, 0600, /*exclusive=*/true); !s.ok()) {
    return s;
  }
  if (auto s = internal::WriteFileAtomic(cert_path, *cert_pem, 0644, /*exclusive=*/true); !s.ok()) {
    ::unlink(key_path.c_str());  // do not leave half a CA behind
    return s;
  }
  auto impl = std::make_unique<Impl>();
  impl->cert = std::move(x);
  impl->key = std::move(*key);
  std::unique_ptr<CertificateAuthority> ca(new CertificateAuthority(std::move(impl)));
  ca->dir_ = dir;
  ca->trust_domain_ = trust_domain;
  ca->bundle_pem_ = std::move(*cert_pem);
  return ca;
}

absl::StatusOr<std::unique_ptr<CertificateAuthority>> CertificateAuthority::Load(
    const std::string& dir) {
  const std::string cert_path = dir + "/" + kCaCertFile;
  const std::string key_path = dir + "/" + kCaKeyFile;
  auto cert_pem = internal::ReadFile(cert_path);
  if (!cert_pem.ok()) return cert_pem.status();
  auto key_pem = internal::ReadFile(key_path);
  if (!key_pem.ok()) return key_pem.status();
  auto cert = internal::ParseCertPem(*cert_pem, cert_path);
  if (!cert.ok()) return cert.status();
  auto key = internal::ParseKeyPem(*key_pem, key_path);
  if (!key.ok()) return key.status();
  if (X509_check_private_key(cert->get(), key->get()) != 1) {
    return absl::InvalidArgumentError(
        Cat("ca: ", key_path, " is not the key of ", cert_path, ": ", internal::LastError()));
  }
  if (X509_check_ca(cert->get()) == 0) {
    return absl::InvalidArgumentError(Cat("ca: ", cert_path, " is not a CA certificate"));
  }
  auto uris = internal::UriSans(cert->get());
  if (!uris.ok()) {
    return absl::InvalidArgumentError(Cat("ca: ", cert_path, ": ", uris.status().message()));
  }
  if (uris->size() != 1) {
    return absl::InvalidArgumentError(
        Cat("ca: ", cert_path, " has ", uris->size(),
            " URI SANs; expected exactly one, spiffe://<trust domain>"));
  }
  std::string_view uri = uris->front();
  constexpr std::string_view kScheme = "spiffe://";
  if (!uri.starts_with(kScheme)) {
    return absl::InvalidArgumentError(
        Cat("ca: ", cert_path, ": URI SAN '", uri, "' is not spiffe://<trust domain>"));
  }
  std::string td(uri.substr(kScheme.size()));
  if (auto s = ValidateTrustDomain(td); !s.ok()) {
    return absl::InvalidArgumentError(
        Cat("ca: ", cert_path, ": URI SAN '", uri, "': ", s.message()));
  }
  auto impl = std::make_unique<Impl>();
  impl->cert = std::move(*cert);
  impl->key = std::move(*key);
  std::unique_ptr<CertificateAuthority> ca(new CertificateAuthority(std::move(impl)));
  ca->dir_ = dir;
  ca->trust_domain_ = std::move(td);
  auto pem = internal::CertToPem(ca->impl_->cert.get());  // normalized: one certificate
  if (!pem.ok()) return pem.status();
  ca->bundle_pem_ = std::move(*pem);
  return ca;
}

namespace {

// Issues a leaf for `subject_key` signed by (ca_cert, ca_key). `o` is validated here.
absl::StatusOr<Issued> IssueLeaf(X509* ca_cert, EVP_PKEY* ca_key, const std::string& td,
                                 EVP_PKEY* subject_key, const IssueOptions& o) {
  if (o.id.trust_domain != td) {
    return absl::InvalidArgumentError(Cat("trust domain '", o.id.trust_domain, "' of ",
                                          o.id.ToString(), " is not this CA's ('", td, "')"));
  }
  if (auto s = ValidateIdName(o.id.name); !s.ok()) return s;
  if (o.role != Role::kNone && o.id.kind != IdKind::kUser) {
    return absl::InvalidArgumentError(
        Cat("role '", RoleName(o.role), "' for ", o.id.ToString(), ": only users have a role"));
  }
  if (o.validity <= std::chrono::seconds(0)) {
    return absl::InvalidArgumentError(
        Cat("validity must be positive (got ", o.validity.count(), " s)"));
  }
  for (const auto& d : o.dns_sans) {
    if (auto s = ValidateDnsSan(d); !s.ok()) return s;
  }

  const auto now = Clock::now();
  const time_t nb = Clock::to_time_t(o.not_before.value_or(now - kSkew));
  const time_t na = Clock::to_time_t(o.not_before.value_or(now) + o.validity);

  X509Ptr x(X509_new());
  if (!x) return OsslFailure("X509_new");
  auto serial = RandomSerial();
  if (!serial.ok()) return serial.status();
  auto name = MakeName(o.id.name, o.role == Role::kNone ? "" : RoleName(o.role));
  if (!name.ok()) return name.status();
  if (X509_set_version(x.get(), X509_VERSION_3) != 1 ||
      X509_set_serialNumber(x.get(), serial->get()) != 1 ||
      X509_set_subject_name(x.get(), name->get()) != 1 ||
      X509_set_issuer_name(x.get(), X509_get_subject_name(ca_cert)) != 1 ||
      X509_set_pubkey(x.get(), subject_key) != 1) {
    return OsslFailure("building the certificate");
  }
  if (auto s = SetDates(x.get(), nb, na); !s.ok()) return s;

  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, ca_cert, x.get(), nullptr, nullptr, 0);
  std::vector<std::string> eku;
  if (o.client_auth) eku.push_back("clientAuth");
  if (o.server_auth) eku.push_back("serverAuth");
  std::string eku_value = absl::StrJoin(eku, ",");
  std::vector<std::pair<int, const char*>> exts = {
      {NID_basic_constraints, o.ca_true ? "critical,CA:TRUE" : "critical,CA:FALSE"},
      {NID_key_usage, "critical,digitalSignature"},
      {NID_subject_key_identifier, "hash"},
      {NID_authority_key_identifier, "keyid:always"},
  };
  if (!eku.empty()) exts.emplace_back(NID_ext_key_usage, eku_value.c_str());
  for (auto [nid, value] : exts) {
    if (auto s = AddExt(x.get(), &ctx, nid, value); !s.ok()) return s;
  }

  GeneralNamesPtr sans(sk_GENERAL_NAME_new_null());
  if (!sans) return OsslFailure("sk_GENERAL_NAME_new_null");
  if (!o.omit_uri_san) {
    if (auto s = PushIa5(sans.get(), GEN_URI, o.id.ToString()); !s.ok()) return s;
  }
  for (const auto& u : o.extra_uri_sans) {
    if (auto s = PushIa5(sans.get(), GEN_URI, u); !s.ok()) return s;
  }
  for (const auto& d : o.dns_sans) {
    if (auto s = PushIa5(sans.get(), GEN_DNS, d); !s.ok()) return s;
  }
  for (const auto& ip : o.ip_sans) {
    Asn1StringPtr addr(a2i_IPADDRESS(ip.c_str()));
    if (!addr) {
      internal::LastError();
      return absl::InvalidArgumentError(
          Cat("IP SAN '", ip.substr(0, 100), "' is not an IPv4 or IPv6 address"));
    }
    if (auto s = PushName(sans.get(), GEN_IPADD, std::move(addr)); !s.ok()) return s;
  }
  if (sk_GENERAL_NAME_num(sans.get()) > 0 &&
      X509_add1_ext_i2d(x.get(), NID_subject_alt_name, sans.get(), 0, X509V3_ADD_DEFAULT) != 1) {
    return OsslFailure("adding subjectAltName");
  }
  if (X509_sign(x.get(), ca_key, EVP_sha256()) <= 0) return OsslFailure("signing the certificate");

  auto pem = internal::CertToPem(x.get());
  if (!pem.ok()) return pem.status();
  Issued out;
  out.cert_pem = std::move(*pem);
  out.serial_hex = internal::SerialHex(X509_get0_serialNumber(x.get()));
  out.not_before = Clock::from_time_t(nb);
  out.not_after = Clock::from_time_t(na);
  return out;
}

}  // namespace

absl::StatusOr<Issued> CertificateAuthority::IssueFromCsr(std::string_view csr_pem,
                                                          const IssueOptions& o) {
  BioPtr bio = internal::MemBio(csr_pem);
  if (!bio) return OsslFailure("BIO_new_mem_buf");
  X509ReqPtr req(PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr));
  if (!req) {
    return absl::InvalidArgumentError(
        Cat("CSR: no PEM certificate request (BEGIN CERTIFICATE REQUEST) found: ",
            internal::LastError()));
  }
  EVP_PKEY* pub = X509_REQ_get0_pubkey(req.get());
  if (!pub) {
    return absl::InvalidArgumentError(Cat("CSR: unreadable public key: ", internal::LastError()));
  }
  if (X509_REQ_verify(req.get(), pub) != 1) {
    return absl::InvalidArgumentError(
        Cat("CSR: signature does not verify with the CSR's own key (no proof of "
            "possession): ",
            internal::LastError()));
  }
  if (auto s = CheckSubjectKey(pub); !s.ok()) return s;
  std::lock_guard<std::mutex> lock(mu_);
  return IssueLeaf(impl_->cert.get(), impl_->key.get(), trust_domain_, pub, o);
}

absl::StatusOr<KeyAndCert> CertificateAuthority::IssueWithNewKey(const IssueOptions& o) {
  auto key = internal::NewEcKey("P-256");
  if (!key.ok()) return key.status();
  auto key_pem = internal::KeyToPem(key->get());
  if (!key_pem.ok()) return key_pem.status();
  std::lock_guard<std::mutex> lock(mu_);
  auto issued = IssueLeaf(impl_->cert.get(), impl_->key.get(), trust_domain_, key->get(), o);
  if (!issued.ok()) return issued.status();
  return KeyAndCert{std::move(*key_pem), std::move(*issued)};
}

bool IsDnsHostName(std::string_view name) {
  if (name.empty() || name.size() > 253) return false;
  std::string_view last;
  for (std::string_view rest = name;;) {
    size_t dot = rest.find('.');
    std::string_view label = rest.substr(0, dot);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') {
      return false;
    }
    for (char c : label) {
      bool ok =
          (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
      if (!ok) return false;
    }
    last = label;
    if (dot == std::string_view::npos) break;
    rest.remove_prefix(dot + 1);
  }
  return last.find_first_not_of("0123456789") != std::string_view::npos;
}

IssueOptions EnrolledLeafOptions(const SpiffeId& id) {
  IssueOptions o;
  o.id = id;
  if (id.kind == IdKind::kHost) {
    o.server_auth = true;
    if (IsDnsHostName(id.name)) o.dns_sans = {id.name};
  }
  return o;
}

absl::StatusOr<KeyAndCsr> GenerateKeyAndCsr(std::string_view common_name) {
  if (common_name.size() > kMaxCn) {
    return absl::InvalidArgumentError(Cat("CSR common name '", common_name, "' is ",
                                          common_name.size(), " bytes; at most ", kMaxCn));
  }
  auto key = internal::NewEcKey("P-256");
  if (!key.ok()) return key.status();
  X509ReqPtr req(X509_REQ_new());
  if (!req) return OsslFailure("X509_REQ_new");
  X509NamePtr name(X509_NAME_new());
  if (!name) return OsslFailure("X509_NAME_new");
  if (!common_name.empty() &&
      X509_NAME_add_entry_by_NID(name.get(), NID_commonName, MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(common_name.data()),
                                 static_cast<int>(common_name.size()), -1, 0) != 1) {
    return OsslFailure(Cat("CSR common name '", common_name, "'"));
  }
  if (X509_REQ_set_version(req.get(), X509_REQ_VERSION_1) != 1 ||
      X509_REQ_set_subject_name(req.get(), name.get()) != 1 ||
      X509_REQ_set_pubkey(req.get(), key->get()) != 1) {
    return OsslFailure("building the CSR");
  }
  if (X509_REQ_sign(req.get(), key->get(), EVP_sha256()) <= 0)
    return OsslFailure("signing the CSR");
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509_REQ(bio.get(), req.get()) != 1) {
    return OsslFailure("PEM_write_bio_X509_REQ");
  }
  auto key_pem = internal::KeyToPem(key->get());
  if (!key_pem.ok()) return key_pem.status();
  return KeyAndCsr{std::move(*key_pem), internal::BioContents(bio.get())};
}

}  // namespace dfw::trust
