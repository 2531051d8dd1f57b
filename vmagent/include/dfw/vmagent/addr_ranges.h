// Address ranges of one address set: the prefixes a controller sends (text,
// IPv4 and IPv6 mixed) as disjoint, merged, inclusive ranges per family, the
// form an nft interval set holds (nft refuses overlapping intervals, and
// merging adjacent ones keeps the kernel's set small).
//
// What. AddrRanges keeps every prefix with a reference count (the same
// prefix may be sent twice, e.g. by two group members' addresses) and the
// merged ranges they cover. Apply() takes an AddressSetDelta's added and
// removed prefixes and returns the range-level change: the ranges that are
// no longer in the merged form and the ranges that are new. The kernel's
// set can be updated from that change alone, without reading it back
// (nft_backend.h). The cost of a change is the number of prefixes inside
// the merged ranges it touches, not the size of the set.
//
// Thread safety: none; a plain value. Callers serialize.
#pragma once

#include <compare>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "dfw/dataplane/rule_model.h"

namespace dfw::vmagent {

// An address of either family as a 128-bit number; IPv4 in the low 32 bits
// (the dataplane's type: its prefix parser is ours too).
using Addr = dataplane::Ip128;

enum class Family : uint8_t { kV4 = 0, kV6 = 1 };

// The highest address of a family (255.255.255.255, ffff:...:ffff).
Addr MaxAddr(Family f);
Addr Next(Addr a);  // a + 1 (callers check a != MaxAddr)
Addr Prev(Addr a);  // a - 1 (callers check a != 0)

// Inclusive.
struct AddrRange {
  Addr first;
  Addr last;
  auto operator<=>(const AddrRange&) const = default;
};

struct Prefix {
  Family family = Family::kV4;
  AddrRange range;
};

// "198.18.0.0/15", "2001:db8::/32", or an address alone (/32, /128). Host bits
// must be zero. INVALID_ARGUMENT names `field`.
absl::StatusOr<Prefix> ParsePrefix(std::string_view text, const std::string& field = "prefix");
// Parses an address alone (no length).
absl::StatusOr<std::pair<Family, Addr>> ParseAddr(std::string_view text,
                                                  const std::string& field = "address");
std::string FormatAddr(Family f, Addr a);
// "a" when first == last, else "first-last" (nft's range syntax).
std::string FormatRange(Family f, const AddrRange& r);
// Network byte order: 4 bytes (IPv4) or 16 (IPv6) into out; returns the length.
size_t AddrBytes(Family f, Addr a, uint8_t out[16]);

// Per family, the ranges a change removes and adds (each sorted).
struct RangeDiff {
  std::vector<AddrRange> removed[2];  // indexed by Family
  std::vector<AddrRange> added[2];
  bool empty() const {
    return removed[0].empty() && removed[1].empty() && added[0].empty() && added[1].empty();
  }
};

class AddrRanges {
 public:
  // Removals first, then additions; a prefix removed more often than it was
  // added is NOT_FOUND, a malformed one INVALID_ARGUMENT (the field names
  // "added[i]" / "removed[i]"); on error nothing changes.
  absl::StatusOr<RangeDiff> Apply(const std::vector<std::string>& added,
                                  const std::vector<std::string>& removed);
  template <typename A, typename R>
  absl::StatusOr<RangeDiff> Apply(const A& added, const R& removed) {
    return Apply(std::vector<std::string>(added.begin(), added.end()),
                 std::vector<std::string>(removed.begin(), removed.end()));
  }

  // The merged ranges of a family, sorted, disjoint and not adjacent.
  std::vector<AddrRange> Ranges(Family f) const;
  size_t range_count(Family f) const { return merged_[static_cast<int>(f)].size(); }
  // The lowest range; false when the family has none.
  bool First(Family f, AddrRange* out) const;
  bool Contains(Family f, Addr a) const;
  size_t prefix_count() const;  // distinct prefixes held

 private:
  // Per family: prefix (first, last) -> reference count; merged first -> last.
  std::map<std::pair<Addr, Addr>, uint32_t> prefixes_[2];
  std::map<Addr, Addr> merged_[2];
  struct NetDiff;
  void Recompute(Family f, AddrRange changed, NetDiff* net);
};

}  // namespace dfw::vmagent
