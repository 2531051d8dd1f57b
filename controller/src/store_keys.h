// The keys of store.h, shared by the Store backends.
#pragma once

#include <cstdint>
#include <string>

#include "dfw/controller/store.h"

namespace dfw::controller::store_keys {

inline constexpr char kRevisionKey[] = "m/revision";
inline constexpr char kNextRuleNumKey[] = "m/next_rule_num";
inline constexpr char kStoreFullPayload[] = "dfw.store_full";

inline std::string Key(Kind kind, const std::string& id) {
  std::string k(1, static_cast<char>(kind));
  k.push_back('/');
  k.append(id);
  return k;
}

inline void AppendBe(std::string* out, uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
inline uint64_t ReadBe(const char* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

inline std::string LogKey(uint64_t rev, uint32_t seq) {
  std::string k = "l/";
  AppendBe(&k, rev, 8);
  AppendBe(&k, seq, 4);
  return k;
}

}  // namespace dfw::controller::store_keys
