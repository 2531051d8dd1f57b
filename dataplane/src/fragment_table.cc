#include "dfw/dataplane/fragment_table.h"

#include <bit>

namespace dfw::dataplane {

namespace {
constexpr int kProbe = 8;
uint64_t Mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  return x;
}
}  // namespace

FragmentTable::FragmentTable(uint32_t capacity, uint32_t timeout_ms)
    : entries_(std::bit_ceil(capacity < 16 ? 16u : capacity)),
      mask_(static_cast<uint32_t>(entries_.size() - 1)),
      timeout_ms_(timeout_ms) {}

FragmentTable::Entry* FragmentTable::Find(uint16_t zone, const ParsedPacket& p, uint64_t now_ms,
                                          bool create) noexcept {
  uint64_t h = Mix(p.src.lo ^ Mix(p.dst.lo ^ p.src.hi) ^ (uint64_t{p.frag_id} << 24) ^
                   (uint64_t{zone} << 8) ^ p.proto ^ p.dst.hi);
  Entry* free_slot = nullptr;
  for (int i = 0; i < kProbe; ++i) {
    Entry& e = entries_[(h + i) & mask_];
    bool live = e.expires > now_ms;
    if (live && e.id == p.frag_id && e.zone == zone && e.proto == p.proto && e.family == p.family &&
        e.src == p.src && e.dst == p.dst) {
      return &e;
    }
    if (!live && !free_slot) free_slot = &e;
  }
  if (!create || !free_slot) return nullptr;
  *free_slot = Entry{};
  free_slot->expires = now_ms + timeout_ms_;
  free_slot->src = p.src;
  free_slot->dst = p.dst;
  free_slot->id = p.frag_id;
  free_slot->zone = zone;
  free_slot->proto = p.proto;
  free_slot->family = p.family;
  return free_slot;
}

DropReason FragmentTable::AddRange(Entry* e, uint32_t start, uint32_t end) noexcept {
  for (int i = 0; i < e->nranges; ++i) {
    if (start < e->end[i] && e->start[i] < end) return DropReason::kOverlappingFragment;
  }
  if (e->nranges == kMaxRanges) return DropReason::kFragmentTableFull;
  e->start[e->nranges] = static_cast<uint16_t>(start);
  e->end[e->nranges] = static_cast<uint16_t>(end > 65535 ? 65535 : end);
  ++e->nranges;
  return DropReason::kNone;
}

DropReason FragmentTable::RecordFirst(uint16_t zone, const ParsedPacket& p, bool allowed,
                                      DropReason reason, uint64_t now_ms) noexcept {
  Entry* e = Find(zone, p, now_ms, false);
  if (e) {
    // A second first fragment: overlapping by definition; poison the datagram.
    e->allowed = false;
    e->reason = DropReason::kOverlappingFragment;
    return DropReason::kOverlappingFragment;
  }
  e = Find(zone, p, now_ms, true);
  if (!e) return DropReason::kFragmentTableFull;
  e->allowed = allowed;
  e->reason = reason;
  return AddRange(e, 0, p.l4_len);
}

DropReason FragmentTable::Follow(uint16_t zone, const ParsedPacket& p, uint64_t now_ms) noexcept {
  Entry* e = Find(zone, p, now_ms, false);
  if (!e) return DropReason::kFragmentNoFirst;
  if (DropReason r = AddRange(e, p.frag_offset, uint32_t{p.frag_offset} + p.l4_len);
      r != DropReason::kNone) {
    e->allowed = false;  // the rest of this datagram is suspect too
    e->reason = r;
    return r;
  }
  return e->allowed ? DropReason::kNone : e->reason;
}

}  // namespace dfw::dataplane
