// FragmentTable: non-first fragments follow the verdict of their first.
//
// The first fragment of a datagram (the one with the L4 header) is judged by
// the whole pipeline; its verdict is remembered here under (zone, family,
// src, dst, protocol, fragment id) with the byte ranges seen so far. A later
// fragment takes that verdict, unless it overlaps a range already seen
// (overlapping fragments are how filters are evaded: dropped, RFC 5722), or
// its first fragment was never seen (dropped: we do not reassemble, and a
// fragment that arrives before its first is rare enough to lose).
//
// Fixed size, open addressing, entries expire after `timeout_ms`.
// Thread safety: owned by one worker thread.
#pragma once

#include <cstdint>
#include <vector>

#include "dfw/dataplane/drop_reason.h"
#include "dfw/dataplane/packet_parser.h"

namespace dfw::dataplane {

class FragmentTable {
 public:
  static constexpr int kMaxRanges = 8;
  explicit FragmentTable(uint32_t capacity = 4096, uint32_t timeout_ms = 5000);

  // After the first fragment's verdict: remember it. `allowed` false stores a
  // drop with `reason` so the rest of the datagram is dropped for the same one.
  // Returns kNone, or a reason to drop the first fragment itself (a duplicate
  // first fragment overlaps; a full table).
  DropReason RecordFirst(uint16_t zone, const ParsedPacket& p, bool allowed, DropReason reason,
                         uint64_t now_ms) noexcept;
  // For a non-first fragment: kNone to forward, else the reason to drop.
  DropReason Follow(uint16_t zone, const ParsedPacket& p, uint64_t now_ms) noexcept;

 private:
  struct Entry {
    uint64_t expires = 0;  // 0: free
    Ip128 src, dst;
    uint32_t id = 0;
    uint16_t zone = 0;
    uint8_t proto = 0;
    Family family = Family::kV4;
    bool allowed = false;
    DropReason reason = DropReason::kNone;
    uint8_t nranges = 0;
    uint16_t start[kMaxRanges] = {}, end[kMaxRanges] = {};  // [start, end) in bytes
  };
  Entry* Find(uint16_t zone, const ParsedPacket& p, uint64_t now_ms, bool create) noexcept;
  static DropReason AddRange(Entry* e, uint32_t start, uint32_t end) noexcept;

  std::vector<Entry> entries_;
  uint32_t mask_;
  uint32_t timeout_ms_;
};

}  // namespace dfw::dataplane
