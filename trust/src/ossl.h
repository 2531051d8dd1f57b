// Internal: RAII owners for OpenSSL objects, PEM/DER and time conversions, and
// the error text of the last OpenSSL failure. Not installed, not public.
#pragma once

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <chrono>
#include <ctime>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace dfw::trust::internal {

template <auto Free>
struct OsslDeleter {
  template <typename T>
  void operator()(T* p) const {
    Free(p);
  }
};

using BioPtr = std::unique_ptr<BIO, OsslDeleter<BIO_free_all>>;
using BnPtr = std::unique_ptr<BIGNUM, OsslDeleter<BN_free>>;
using Asn1IntPtr = std::unique_ptr<ASN1_INTEGER, OsslDeleter<ASN1_INTEGER_free>>;
using Asn1StringPtr = std::unique_ptr<ASN1_STRING, OsslDeleter<ASN1_STRING_free>>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, OsslDeleter<EVP_PKEY_free>>;
using PkeyCtxPtr = std::unique_ptr<EVP_PKEY_CTX, OsslDeleter<EVP_PKEY_CTX_free>>;
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, OsslDeleter<EVP_MD_CTX_free>>;
using X509Ptr = std::unique_ptr<X509, OsslDeleter<X509_free>>;
using X509ReqPtr = std::unique_ptr<X509_REQ, OsslDeleter<X509_REQ_free>>;
using X509ExtPtr = std::unique_ptr<X509_EXTENSION, OsslDeleter<X509_EXTENSION_free>>;
using X509StorePtr = std::unique_ptr<X509_STORE, OsslDeleter<X509_STORE_free>>;
using X509StoreCtxPtr = std::unique_ptr<X509_STORE_CTX, OsslDeleter<X509_STORE_CTX_free>>;
using GeneralNamePtr = std::unique_ptr<GENERAL_NAME, OsslDeleter<GENERAL_NAME_free>>;
using GeneralNamesPtr = std::unique_ptr<GENERAL_NAMES, OsslDeleter<GENERAL_NAMES_free>>;
using BasicConstraintsPtr = std::unique_ptr<BASIC_CONSTRAINTS, OsslDeleter<BASIC_CONSTRAINTS_free>>;
using EkuPtr = std::unique_ptr<EXTENDED_KEY_USAGE, OsslDeleter<EXTENDED_KEY_USAGE_free>>;

// The last OpenSSL error on this thread as text ("error:...:reason"), or
// "no OpenSSL error" when the queue is empty; clears the queue.
std::string LastError();
// absl::InternalError("<what>: <LastError()>").
absl::Status OsslFailure(std::string_view what);

// A read-only memory BIO over `data` (which must outlive it).
BioPtr MemBio(std::string_view data);
// Everything written to a memory BIO.
std::string BioContents(BIO* bio);

// The first certificate in `pem`; InvalidArgument naming `what` if none.
absl::StatusOr<X509Ptr> ParseCertPem(std::string_view pem, std::string_view what);
// Every certificate in `pem` (at least one).
absl::StatusOr<std::vector<X509Ptr>> ParseCertsPem(std::string_view pem, std::string_view what);
absl::StatusOr<PkeyPtr> ParseKeyPem(std::string_view pem, std::string_view what);

absl::StatusOr<std::string> CertToPem(X509* cert);
absl::StatusOr<std::string> KeyToPem(EVP_PKEY* key);  // PKCS#8, unencrypted

// A new EC key on `curve` ("P-256").
absl::StatusOr<PkeyPtr> NewEcKey(const char* curve);

// Lower-case hex of a certificate serial, without leading zero bytes.
std::string SerialHex(const ASN1_INTEGER* serial);

absl::StatusOr<std::chrono::system_clock::time_point> FromAsn1Time(const ASN1_TIME* t);

}  // namespace dfw::trust::internal

namespace dfw::trust::internal {

// The URI SANs of `cert`, in order; an error if the SAN extension is present
// twice or unreadable. No SAN extension: an empty list.
absl::StatusOr<std::vector<std::string>> UriSans(X509* cert);

}  // namespace dfw::trust::internal
