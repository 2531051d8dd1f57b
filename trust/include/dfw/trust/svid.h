// SVID files and join tokens: how an identity's key material sits on disk,
// and the one-time secrets hosts and users enroll with.
//
// What. The on-disk layout spiffe-helper writes, so that SPIRE can replace
// this CA later without touching the readers:
//   <dir>/svid.pem         the leaf certificate (X.509-SVID), 0644
//   <dir>/svid_key.pem     its private key, 0600
//   <dir>/svid_bundle.pem  the trust bundle (CA certificates), 0644
// A join token is "dfwjt-" followed by 43 characters of unpadded base64url
// (32 bytes from RAND_bytes); the controller stores only TokenHash (lower-case
// hex SHA-256 of the whole token), never the token.
//
// How. WriteSvid creates dir (0700) if it is missing and replaces each file
// atomically: a temporary file in dir, mode set explicitly, fsync'd, renamed,
// then the directory fsync'd. The key goes first, then the certificate, then
// the bundle, so a reader never pairs a new certificate with an old key. A
// reader can still see a new key with the old certificate for a moment:
// ReadSvid checks that the key belongs to the certificate and returns
// FailedPrecondition if not (retry later); a missing or unreadable file is an
// error that names the file.
//
// Thread safety: functions only; safe from any thread. Concurrent WriteSvid
// calls on one dir leave some complete version of each file.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace dfw::trust {

inline constexpr char kSvidFile[] = "svid.pem", kSvidKeyFile[] = "svid_key.pem",
                      kSvidBundleFile[] = "svid_bundle.pem";

struct Svid {
  std::string key_pem, cert_pem, bundle_pem;
};

absl::Status WriteSvid(const std::string& dir, const Svid& svid);
absl::StatusOr<Svid> ReadSvid(const std::string& dir);

// "dfwjt-" + 43 characters of base64url from 32 random bytes.
std::string NewJoinToken();
// Lower-case hex SHA-256 of `token` (64 characters).
std::string TokenHash(std::string_view token);

}  // namespace dfw::trust
