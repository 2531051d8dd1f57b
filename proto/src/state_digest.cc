#include "dfw/proto/state_digest.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <openssl/sha.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace dfw::proto {
namespace {

std::string Sha256(const std::string& bytes) {
  std::string out(kDigestBytes, '\0');
  SHA256(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(),
         reinterpret_cast<unsigned char*>(out.data()));
  return out;
}

}  // namespace

std::string RulesetContentKey(const v1::VNicRuleset& rs) {
  std::string key;
  {
    google::protobuf::io::StringOutputStream out(&key);
    google::protobuf::io::CodedOutputStream coded(&out);
    auto put = [&coded](const google::protobuf::MessageLite& m) {
      coded.WriteVarint64(m.ByteSizeLong());
      m.SerializeWithCachedSizes(&coded);
    };
    // An excluded ruleset (no rules, default ALLOW) must never share a key
    // with an enforced one of the same content: it starts with 11 bytes of
    // 0xff, which no key of length-prefixed messages can (a varint has at
    // most 10 bytes).
    if (rs.excluded()) coded.WriteString(std::string(11, '\xff') + "excluded");
    for (const auto& r : rs.rules()) put(r);
    put(rs.default_rule());
  }
  return key;
}

std::string RulesetDigest(const v1::VNicRuleset& rs) { return Sha256(RulesetContentKey(rs)); }

namespace {

std::string SetDigest(const std::string& id, std::vector<const std::string*> p) {
  std::sort(p.begin(), p.end(), [](const std::string* a, const std::string* b) { return *a < *b; });
  p.erase(std::unique(p.begin(), p.end(),
                      [](const std::string* a, const std::string* b) { return *a == *b; }),
          p.end());
  // Length-prefixed, so no choice of id or prefix text can make two
  // different sets encode alike.
  std::string bytes;
  auto put = [&bytes](const std::string& s) {
    uint64_t n = s.size();
    bytes.append(reinterpret_cast<const char*>(&n), sizeof(n));
    bytes.append(s);
  };
  put(id);
  for (const std::string* s : p) put(*s);
  return Sha256(bytes);
}

}  // namespace

std::string AddressSetDigest(const v1::AddressSet& set) {
  std::vector<const std::string*> p;
  p.reserve(static_cast<size_t>(set.prefixes_size()));
  for (const auto& s : set.prefixes()) p.push_back(&s);
  return SetDigest(set.id(), std::move(p));
}

std::string AddressSetDigest(const std::string& id, const std::vector<std::string>& prefixes) {
  std::vector<const std::string*> p;
  p.reserve(prefixes.size());
  for (const auto& s : prefixes) p.push_back(&s);
  return SetDigest(id, std::move(p));
}

}  // namespace dfw::proto
