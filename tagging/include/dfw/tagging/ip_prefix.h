// IpPrefix: an IPv4 or IPv6 prefix in canonical form, the unit of a group's
// effective address set.
//
// A value type: 17 bytes of address and length plus a family flag, ordered and
// hashable, so address sets can be counted and diffed. Parsing is strict:
// "198.18.0.0/15" and "2001:db8::/32" parse; a bare address is a host prefix
// (/32 or /128); host bits set past the length are an error, not silently
// cleared, because an operator who wrote 198.18.0.5/24 meant something.
//
// Thread safety: a plain value; const methods are safe from any thread.
#pragma once

#include <array>
#include <compare>
#include <cstdint>
#include <ostream>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace dfw::tagging {

class IpPrefix {
 public:
  IpPrefix() = default;

  // Parses "a.b.c.d[/len]" or an IPv6 address "[/len]".
  static absl::StatusOr<IpPrefix> Parse(std::string_view text);
  // Parses one address (no length) into a host prefix.
  static absl::StatusOr<IpPrefix> ParseAddress(std::string_view text);
  static IpPrefix V4(uint32_t host_order_addr, uint8_t len = 32);

  bool is_v4() const { return v4_; }
  uint8_t length() const { return len_; }
  bool is_host() const { return len_ == (v4_ ? 32 : 128); }
  // Network-order bytes; IPv4 uses the first 4.
  const std::array<uint8_t, 16>& bytes() const { return addr_; }
  // Does this prefix contain `other` (same family, shorter or equal length)?
  bool Contains(const IpPrefix& other) const;

  // Canonical text: always with the length, "198.18.0.5/32".
  std::string ToString() const;

  // IPv4 before IPv6, then by address, then shorter first.
  std::strong_ordering operator<=>(const IpPrefix& o) const {
    if (v4_ != o.v4_) return v4_ ? std::strong_ordering::less : std::strong_ordering::greater;
    if (auto c = addr_ <=> o.addr_; c != 0) return c;
    return len_ <=> o.len_;
  }
  bool operator==(const IpPrefix&) const = default;
  friend void PrintTo(const IpPrefix& p, std::ostream* os) { *os << p.ToString(); }

  template <typename H>
  friend H AbslHashValue(H h, const IpPrefix& p) {
    return H::combine(std::move(h), p.addr_, p.len_, p.v4_);
  }

 private:
  std::array<uint8_t, 16> addr_{};
  uint8_t len_ = 0;
  bool v4_ = true;
};

}  // namespace dfw::tagging
