#include "ossl.h"

#include <cctype>

#include "absl/strings/ascii.h"
#include "str_cat.h"

namespace dfw::trust::internal {

std::string LastError() {
  unsigned long e = ERR_peek_last_error();
  ERR_clear_error();
  if (e == 0) return "no OpenSSL error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof(buf));
  return buf;
}

absl::Status OsslFailure(std::string_view what) {
  return absl::InternalError(Cat(what, ": ", LastError()));
}

BioPtr MemBio(std::string_view data) {
  return BioPtr(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
}

std::string BioContents(BIO* bio) {
  char* p = nullptr;
  long n = BIO_get_mem_data(bio, &p);
  return n > 0 ? std::string(p, static_cast<size_t>(n)) : std::string();
}

absl::StatusOr<std::vector<X509Ptr>> ParseCertsPem(std::string_view pem, std::string_view what) {
  if (pem.size() > (1u << 24)) {
    return absl::InvalidArgumentError(Cat(what, ": ", pem.size(), " bytes is too large"));
  }
  BioPtr bio = MemBio(pem);
  if (!bio) return OsslFailure(Cat(what, ": BIO_new_mem_buf"));
  std::vector<X509Ptr> out;
  while (X509* x = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) {
    out.emplace_back(x);
  }
  std::string err = LastError();  // the end of input shows up as "no start line"
  if (out.empty()) {
    return absl::InvalidArgumentError(
        Cat(what, ": no PEM certificate (BEGIN CERTIFICATE) found: ", err));
  }
  return out;
}

absl::StatusOr<X509Ptr> ParseCertPem(std::string_view pem, std::string_view what) {
  auto certs = ParseCertsPem(pem, what);
  if (!certs.ok()) return certs.status();
  return std::move(certs->front());
}

absl::StatusOr<PkeyPtr> ParseKeyPem(std::string_view pem, std::string_view what) {
  BioPtr bio = MemBio(pem);
  if (!bio) return OsslFailure(Cat(what, ": BIO_new_mem_buf"));
  PkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (!key) {
    return absl::InvalidArgumentError(Cat(what, ": no PEM private key found: ", LastError()));
  }
  return key;
}

absl::StatusOr<std::string> CertToPem(X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1) return OsslFailure("PEM_write_bio_X509");
  return BioContents(bio.get());
}

absl::StatusOr<std::string> KeyToPem(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio ||
      PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    return OsslFailure("PEM_write_bio_PrivateKey");
  }
  return BioContents(bio.get());
}

absl::StatusOr<PkeyPtr> NewEcKey(const char* curve) {
  PkeyPtr key(EVP_EC_gen(curve));
  if (!key) return OsslFailure(Cat("generating an EC ", curve, " key"));
  return key;
}

std::string SerialHex(const ASN1_INTEGER* serial) {
  BnPtr bn(ASN1_INTEGER_to_BN(serial, nullptr));
  if (!bn) {
    ERR_clear_error();
    return "";
  }
  char* hex = BN_bn2hex(bn.get());
  if (!hex) {
    ERR_clear_error();
    return "";
  }
  std::string out = absl::AsciiStrToLower(hex);
  OPENSSL_free(hex);
  return out;
}

absl::StatusOr<std::chrono::system_clock::time_point> FromAsn1Time(const ASN1_TIME* t) {
  struct tm tm {};
  if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) {
    return absl::InvalidArgumentError(
        Cat("certificate has an unreadable validity time: ", LastError()));
  }
  time_t secs = timegm(&tm);
  return std::chrono::system_clock::from_time_t(secs);
}

}  // namespace dfw::trust::internal

namespace dfw::trust::internal {

absl::StatusOr<std::vector<std::string>> UriSans(X509* cert) {
  int crit = -1;
  GeneralNamesPtr names(
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, &crit, nullptr)));
  std::vector<std::string> out;
  if (!names) {
    if (crit == -1) return out;  // no SAN extension
    std::string err = LastError();
    return absl::InvalidArgumentError(
        crit == -2 ? "certificate has more than one subjectAltName extension"
                   : Cat("certificate has an unreadable subjectAltName: ", err));
  }
  for (int i = 0; i < sk_GENERAL_NAME_num(names.get()); ++i) {
    const GENERAL_NAME* gn = sk_GENERAL_NAME_value(names.get(), i);
    if (gn->type != GEN_URI) continue;
    const ASN1_STRING* s = gn->d.uniformResourceIdentifier;
    out.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                     static_cast<size_t>(ASN1_STRING_length(s)));
  }
  return out;
}

}  // namespace dfw::trust::internal
