// CaptureTable implementation; the protocol is the header's.
#include "dfw/dataplane/capture.h"

#include "dfw/dataplane/vnic_table.h"

namespace dfw::dataplane {

bool CaptureTable::Meets(const CaptureFilter& f, const ParsedPacket& p) noexcept {
  if (p.local_id != f.local_id || p.dir != f.dir) return false;
  if (f.proto != 0 && p.proto != f.proto) return false;
  if ((f.has_src || f.has_dst) && (p.l3 == L3Kind::kArp || p.family != f.family)) return false;
  if (f.has_src && p.src != f.src) return false;
  if (f.has_dst && p.dst != f.dst) return false;
  // Ports only where the frame has them (not a non-first fragment).
  if (f.sport != 0 || f.dport != 0) {
    if (p.fragment && !p.first_fragment) return false;
    if (f.sport != 0 && p.sport != f.sport) return false;
    if (f.dport != 0 && p.dport != f.dport) return false;
  }
  return true;
}

void CaptureTable::Offer(const ParsedPacket& p, CaptureHit hit) noexcept {
  for (Slot& s : slots_) {
    uint64_t w = s.word.load(std::memory_order_acquire);
    if (KindOf(w) != kArmedKind || !Meets(s.filter, p)) continue;
    uint64_t claimed = (w & ~uint64_t{3}) | kClaimedKind;
    if (!s.word.compare_exchange_strong(w, claimed, std::memory_order_acq_rel)) continue;
    hit.family = p.family;
    hit.proto = p.proto;
    hit.src = p.src;
    hit.dst = p.dst;
    hit.sport = p.sport;
    hit.dport = p.dport;
    s.hit = hit;
    s.word.store((w & ~uint64_t{3}) | kMetKind, std::memory_order_release);
    armed_.fetch_sub(1, std::memory_order_relaxed);
  }
}

std::optional<uint32_t> CaptureTable::Arm(const CaptureFilter& f, uint64_t deadline_ms) {
  Slot* free = nullptr;
  uint32_t index = 0;
  for (uint32_t i = 0; i < kSlots; ++i) {
    if (slots_[i].in_use) continue;
    free = &slots_[i];
    index = i;
    break;
  }
  if (!free) return std::nullopt;
  if (free->dirty) {
    // A worker may still be comparing a frame with the filter this slot
    // held: wait out one grace period (it frees every dirty free slot).
    vnics_->Synchronize();
    for (Slot& s : slots_) {
      if (!s.in_use) s.dirty = false;
    }
  }
  free->filter = f;
  free->hit = CaptureHit{};
  free->deadline_ms = deadline_ms;
  free->in_use = true;
  free->expired = false;
  free->dirty = true;
  uint64_t gen = (free->word.load(std::memory_order_relaxed) >> 2) + 1;
  uint64_t w = gen << 2 | kArmedKind;
  armed_.fetch_add(1, std::memory_order_relaxed);
  free->word.store(w, std::memory_order_release);
  return HandleOf(index, w);
}

CaptureTable::Slot* CaptureTable::SlotOf(uint32_t handle, uint64_t* word) {
  Slot& s = slots_[handle & (kSlots - 1)];
  uint64_t w = s.word.load(std::memory_order_acquire);
  if (!s.in_use || HandleOf(handle & (kSlots - 1), w) != handle) return nullptr;
  *word = w;
  return &s;
}

CaptureTable::Status CaptureTable::Poll(uint32_t handle, uint64_t now_ms) {
  Status st;
  uint64_t w = 0;
  Slot* s = SlotOf(handle, &w);
  if (!s) return st;
  st.filter = s->filter;
  st.deadline_ms = s->deadline_ms;
  if (KindOf(w) == kArmedKind && now_ms > s->deadline_ms) {
    // Unmet at its deadline: disarm, unless a worker claims it meanwhile.
    if (s->word.compare_exchange_strong(w, (w & ~uint64_t{3}) | kFreeKind,
                                        std::memory_order_acq_rel)) {
      armed_.fetch_sub(1, std::memory_order_relaxed);
      s->expired = true;
    }
  }
  while (KindOf(w) == kClaimedKind) w = s->word.load(std::memory_order_acquire);
  if (KindOf(w) == kMetKind) {
    st.state = State::kMet;
    st.hit = s->hit;
  } else if (s->expired) {
    st.state = State::kExpired;
  } else {
    st.state = State::kArmed;
  }
  return st;
}

void CaptureTable::Release(uint32_t handle) {
  uint64_t w = 0;
  Slot* s = SlotOf(handle, &w);
  if (!s) return;
  for (;;) {
    if (KindOf(w) == kArmedKind) {
      if (s->word.compare_exchange_strong(w, (w & ~uint64_t{3}) | kFreeKind,
                                          std::memory_order_acq_rel)) {
        armed_.fetch_sub(1, std::memory_order_relaxed);
        break;
      }
      continue;  // w reloaded: claimed or met meanwhile
    }
    if (KindOf(w) == kClaimedKind) {  // a worker is writing the hit
      w = s->word.load(std::memory_order_acquire);
      continue;
    }
    s->word.store((w & ~uint64_t{3}) | kFreeKind, std::memory_order_release);
    break;
  }
  s->in_use = false;
  s->expired = false;
}

}  // namespace dfw::dataplane
