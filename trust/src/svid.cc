#include "dfw/trust/svid.h"

#include <openssl/rand.h>
#include <openssl/sha.h>

#include <array>
#include <cstdlib>

#include "absl/strings/escaping.h"
#include "files.h"
#include "ossl.h"
#include "str_cat.h"

namespace dfw::trust {

using internal::Cat;

absl::Status WriteSvid(const std::string& dir, const Svid& svid) {
  struct File {
    const char* name;
    const std::string& content;
    mode_t mode;
  };
  const File files[] = {{kSvidKeyFile, svid.key_pem, 0600},
                        {kSvidFile, svid.cert_pem, 0644},
                        {kSvidBundleFile, svid.bundle_pem, 0644}};
  for (const File& f : files) {
    if (f.content.empty()) {
      return absl::InvalidArgumentError(Cat("svid: ", f.name, " would be empty"));
    }
  }
  if (auto s = internal::MakeDir(dir, 0700); !s.ok()) return s;
  for (const File& f : files) {
    if (auto s = internal::WriteFileAtomic(dir + "/" + f.name, f.content, f.mode); !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Svid> ReadSvid(const std::string& dir) {
  Svid out;
  for (auto [name, into] :
       {std::pair{kSvidKeyFile, &out.key_pem}, std::pair{kSvidFile, &out.cert_pem},
        std::pair{kSvidBundleFile, &out.bundle_pem}}) {
    std::string path = dir + "/" + name;
    auto content = internal::ReadFile(path);
    if (!content.ok()) return content.status();
    if (content->empty()) return absl::FailedPreconditionError(Cat(path, " is empty"));
    *into = std::move(*content);
  }
  auto cert = internal::ParseCertPem(out.cert_pem, dir + "/" + kSvidFile);
  if (!cert.ok()) return cert.status();
  auto key = internal::ParseKeyPem(out.key_pem, dir + "/" + kSvidKeyFile);
  if (!key.ok()) return key.status();
  if (X509_check_private_key(cert->get(), key->get()) != 1) {
    internal::LastError();
    return absl::FailedPreconditionError(Cat(dir, "/", kSvidKeyFile, " is not the key of ", dir,
                                             "/", kSvidFile, " (being replaced? try again)"));
  }
  if (auto roots = internal::ParseCertsPem(out.bundle_pem, dir + "/" + kSvidBundleFile);
      !roots.ok()) {
    return roots.status();
  }
  return out;
}

std::string NewJoinToken() {
  std::array<unsigned char, 32> b{};
  if (RAND_bytes(b.data(), static_cast<int>(b.size())) != 1) {
    // No randomness means no safe token; the process cannot continue correctly.
    std::abort();
  }
  return Cat("dfwjt-", absl::WebSafeBase64Escape(
                           absl::string_view(reinterpret_cast<const char*>(b.data()), b.size())));
}

std::string TokenHash(std::string_view token) {
  std::array<unsigned char, SHA256_DIGEST_LENGTH> d{};
  unsigned int len = 0;
  if (EVP_Digest(token.data(), token.size(), d.data(), &len, EVP_sha256(), nullptr) != 1) {
    std::abort();
  }
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(d.data()), len));
}

}  // namespace dfw::trust
