#include "dfw/tagging/ip_prefix.h"

#include <arpa/inet.h>

#include <charconv>

#include "dfw/tagging/str_cat.h"

namespace dfw::tagging {

absl::StatusOr<IpPrefix> IpPrefix::ParseAddress(std::string_view text) {
  if (text.empty()) return absl::InvalidArgumentError("empty address");
  if (text.size() > INET6_ADDRSTRLEN) {
    return absl::InvalidArgumentError(Cat("'", text, "' is too long for an IP address"));
  }
  std::string s(text);
  IpPrefix p;
  if (s.find(':') == std::string::npos) {
    if (inet_pton(AF_INET, s.c_str(), p.addr_.data()) != 1) {
      return absl::InvalidArgumentError(Cat("'", text, "' is not an IPv4 address"));
    }
    p.v4_ = true;
    p.len_ = 32;
  } else {
    if (inet_pton(AF_INET6, s.c_str(), p.addr_.data()) != 1) {
      return absl::InvalidArgumentError(Cat("'", text, "' is not an IPv6 address"));
    }
    p.v4_ = false;
    p.len_ = 128;
  }
  return p;
}

absl::StatusOr<IpPrefix> IpPrefix::Parse(std::string_view text) {
  size_t slash = text.find('/');
  auto addr = ParseAddress(text.substr(0, slash));
  if (!addr.ok()) return addr.status();
  if (slash == std::string_view::npos) return addr;
  std::string_view len_text = text.substr(slash + 1);
  unsigned len = 0;
  auto [ptr, ec] = std::from_chars(len_text.data(), len_text.data() + len_text.size(), len);
  unsigned max = addr->v4_ ? 32 : 128;
  if (len_text.empty() || ec != std::errc() || ptr != len_text.data() + len_text.size() ||
      len > max) {
    return absl::InvalidArgumentError(Cat("'", text, "': prefix length must be a number 0..", max));
  }
  IpPrefix p = *addr;
  p.len_ = static_cast<uint8_t>(len);
  for (unsigned bit = len; bit < max; ++bit) {
    if (p.addr_[bit / 8] & (0x80 >> (bit % 8))) {
      IpPrefix net = p;
      for (unsigned b = len; b < max; ++b) net.addr_[b / 8] &= ~(0x80 >> (b % 8));
      return absl::InvalidArgumentError(
          Cat("'", text, "' has host bits set; did you mean ", net.ToString(), "?"));
    }
  }
  return p;
}

IpPrefix IpPrefix::V4(uint32_t a, uint8_t len) {
  IpPrefix p;
  p.addr_[0] = a >> 24;
  p.addr_[1] = a >> 16;
  p.addr_[2] = a >> 8;
  p.addr_[3] = a;
  p.len_ = len;
  p.v4_ = true;
  for (unsigned b = len; b < 32; ++b) p.addr_[b / 8] &= ~(0x80 >> (b % 8));
  return p;
}

bool IpPrefix::Contains(const IpPrefix& other) const {
  if (v4_ != other.v4_ || other.len_ < len_) return false;
  for (unsigned bit = 0; bit < len_; ++bit) {
    uint8_t m = 0x80 >> (bit % 8);
    if ((addr_[bit / 8] & m) != (other.addr_[bit / 8] & m)) return false;
  }
  return true;
}

std::string IpPrefix::ToString() const {
  char buf[INET6_ADDRSTRLEN];
  inet_ntop(v4_ ? AF_INET : AF_INET6, addr_.data(), buf, sizeof(buf));
  return Cat(buf, "/", len_);
}

}  // namespace dfw::tagging
