#include "dfw/dataplane/rule_model.h"

#include <arpa/inet.h>

#include <charconv>
#include <cstring>

namespace dfw::dataplane {
namespace {

Ip128 HostMask(Family f, uint8_t len) {
  // Bits below the prefix, within the family's width.
  const int width = f == Family::kV4 ? 32 : 128;
  const int host = width - len;
  Ip128 m;
  if (host >= 64) {
    m.lo = ~0ull;
    m.hi = host >= 128 ? ~0ull : ((1ull << (host - 64)) - 1);
  } else {
    m.lo = host == 0 ? 0 : ((1ull << host) - 1);
  }
  if (f == Family::kV4) {
    m.hi = 0;
    m.lo &= 0xffffffffull;
  }
  return m;
}

}  // namespace

IpPrefix IpPrefix::V4(uint32_t addr, uint8_t len) {
  IpPrefix p;
  p.family = Family::kV4;
  p.len = len > 32 ? 32 : len;
  const Ip128 m = HostMask(Family::kV4, p.len);
  p.addr.lo = addr & ~m.lo & 0xffffffffull;
  return p;
}

IpPrefix IpPrefix::V6(Ip128 addr, uint8_t len) {
  IpPrefix p;
  p.family = Family::kV6;
  p.len = len > 128 ? 128 : len;
  const Ip128 m = HostMask(Family::kV6, p.len);
  p.addr.hi = addr.hi & ~m.hi;
  p.addr.lo = addr.lo & ~m.lo;
  return p;
}

Ip128 IpPrefix::Last() const {
  const Ip128 m = HostMask(family, len);
  return Ip128{addr.hi | m.hi, addr.lo | m.lo};
}

bool IpPrefix::Contains(Family f, const Ip128& a) const {
  if (f != family) return false;
  if (family == Family::kV4) {
    const uint32_t m = len == 0 ? 0 : ~0u << (32 - len);
    return (static_cast<uint32_t>(a.lo) & m) == static_cast<uint32_t>(addr.lo);
  }
  const uint64_t mhi = len == 0 ? 0 : (len >= 64 ? ~0ull : ~0ull << (64 - len));
  const uint64_t mlo = len <= 64 ? 0 : (len == 128 ? ~0ull : ~0ull << (128 - len));
  return (a.hi & mhi) == addr.hi && (a.lo & mlo) == addr.lo;
}

std::optional<IpPrefix> IpPrefix::Parse(std::string_view text) {
  const size_t slash = text.find('/');
  const std::string addr_text(text.substr(0, slash));
  const bool v6 = addr_text.find(':') != std::string::npos;
  unsigned len = v6 ? 128 : 32;
  if (slash != std::string_view::npos) {
    const std::string_view l = text.substr(slash + 1);
    auto [ptr, ec] = std::from_chars(l.data(), l.data() + l.size(), len);
    if (ec != std::errc() || ptr != l.data() + l.size() || l.empty() || len > (v6 ? 128u : 32u)) {
      return std::nullopt;
    }
  }
  IpPrefix p;
  if (v6) {
    unsigned char b[16];
    if (inet_pton(AF_INET6, addr_text.c_str(), b) != 1) return std::nullopt;
    Ip128 a;
    for (int i = 0; i < 8; ++i) a.hi = (a.hi << 8) | b[i];
    for (int i = 8; i < 16; ++i) a.lo = (a.lo << 8) | b[i];
    p = V6(a, static_cast<uint8_t>(len));
    if (p.addr != a) return std::nullopt;
  } else {
    unsigned char b[4];
    if (inet_pton(AF_INET, addr_text.c_str(), b) != 1) return std::nullopt;
    const uint32_t a =
        (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) | b[3];
    p = V4(a, static_cast<uint8_t>(len));
    if (p.addr.lo != a) return std::nullopt;
  }
  return p;
}

std::string IpPrefix::ToString() const {
  char buf[INET6_ADDRSTRLEN];
  if (family == Family::kV4) {
    const uint32_t a = static_cast<uint32_t>(addr.lo);
    unsigned char b[4] = {static_cast<unsigned char>(a >> 24), static_cast<unsigned char>(a >> 16),
                          static_cast<unsigned char>(a >> 8), static_cast<unsigned char>(a)};
    inet_ntop(AF_INET, b, buf, sizeof(buf));
  } else {
    unsigned char b[16];
    for (int i = 0; i < 8; ++i) b[i] = static_cast<unsigned char>(addr.hi >> (56 - 8 * i));
    for (int i = 0; i < 8; ++i) b[8 + i] = static_cast<unsigned char>(addr.lo >> (56 - 8 * i));
    inet_ntop(AF_INET6, b, buf, sizeof(buf));
  }
  return std::string(buf) + "/" + std::to_string(len);
}

ServiceSpec ServiceSpec::Icmp(uint8_t proto, std::optional<uint8_t> type,
                              std::optional<uint8_t> code) {
  ServiceSpec s;
  s.proto = proto;
  if (type) s.sports.push_back(PortRange{*type, *type});
  if (code) s.dports.push_back(PortRange{*code, *code});
  return s;
}

}  // namespace dfw::dataplane
