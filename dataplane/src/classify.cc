// Lookup side of the classifier (the data path): no allocation, no failure,
// no locks, no virtual calls. See classifier.h for the scheme.
#include <algorithm>
#include <cstdint>

#include "dfw/dataplane/classifier.h"
#include "ruleset_impl.h"

namespace dfw::dataplane {
namespace {

constexpr uint32_t kFields = 5;
// Keys processed together, stage by stage, so that the cache misses of one
// stage overlap across keys (the table walks are latency-bound).
constexpr uint32_t kChunk = 32;

inline void Prefetch(const void* p) { __builtin_prefetch(p, 0, 3); }

// IPv4 table walk (see AddrTable4), split in steps so that a burst can
// interleave them. Step 1: the first-level entry gives the start interval, or
// where in `second` to read it.
inline uint32_t Start4(const AddrTable4& t, uint32_t x, const uint32_t** second) {
  const uint32_t e = t.first[x >> 16];
  const uint32_t k = e & 31;
  *second = k != 0 ? &t.second[(e >> 5) + ((x & 0xffff) >> (16 - k))] : nullptr;
  return e >> 5;
}

// Step 2: from the start interval, exactly search_steps branch-free halvings
// over a power-of-two window (bounds is padded so the window fits).
inline uint32_t Search4(const AddrTable4& t, uint32_t base, uint32_t x) {
  const uint32_t* b = t.bounds.data();
  for (uint32_t half = (1u << t.search_steps) >> 1; half != 0; half >>= 1) {
    base = b[base + half] <= x ? base + half : base;
  }
  return base;
}

inline const uint64_t* Lookup6(const AddrTable6& t, const Ip128& x) {
  const auto it = std::upper_bound(t.bounds.begin(), t.bounds.end(), x);
  return t.cls[static_cast<size_t>(it - t.bounds.begin()) - 1];
}

struct Slot {
  const uint64_t* c[kFields];
  const uint32_t* src_second;  // IPv4: where the start interval is, if not in src_iv
  const uint32_t* dst_second;
  uint32_t src_iv, dst_iv;  // IPv4 start interval, then interval
  uint32_t svc;             // merged service: index into merged_cls
  uint32_t agg;             // aggregate word being walked
  uint64_t cand;            // its remaining candidate bits
};

// The lookup's view of the classes: records, dictionaries, chunking.
struct View {
  const uint64_t* dict[kFields];
  uint32_t aw;
  uint32_t shift;
  uint32_t mask;
};

// Aggregate word a, ANDed over the first K classes.
template <uint32_t K>
inline uint64_t AndAgg(const uint64_t* const* c, uint32_t a) {
  uint64_t x = c[0][a] & c[1][a] & c[2][a];
  if constexpr (K == 5) x &= c[3][a] & c[4][a];
  return x;
}

// Address of bit-vector word w of class record `rec` in dictionary `dict`.
inline const uint64_t* WordPtr(const View& v, const uint64_t* rec, const uint64_t* dict,
                               uint32_t w) {
  return dict + ((static_cast<size_t>(ChunkId(rec, v.aw, w >> v.shift)) << v.shift) | (w & v.mask));
}

// Bit-vector word w, ANDed over the first K classes.
template <uint32_t K>
inline uint64_t AndWord(const View& v, const uint64_t* const* c, uint32_t w) {
  uint64_t x = *WordPtr(v, c[0], v.dict[0], w) & *WordPtr(v, c[1], v.dict[1], w) &
               *WordPtr(v, c[2], v.dict[2], w);
  if constexpr (K == 5) x &= *WordPtr(v, c[3], v.dict[3], w) & *WordPtr(v, c[4], v.dict[4], w);
  return x;
}

// Continues the walk from slot.agg / slot.cand; returns the first entry.
// (Settling candidates four at a time, or a whole 8-word chunk at a time,
// measured slower than this plain loop.)
template <uint32_t K>
inline uint32_t FirstEntry(const View& v, const Slot& slot) {
  uint32_t a = slot.agg;
  uint64_t g = slot.cand;
  while (true) {
    while (g != 0) {
      const uint32_t w = a * 64 + static_cast<uint32_t>(__builtin_ctzll(g));
      const uint64_t x = AndWord<K>(v, slot.c, w);
      if (x != 0) return w * 64 + static_cast<uint32_t>(__builtin_ctzll(x));
      g &= g - 1;
    }
    if (++a >= v.aw) return Ruleset::kNoMatch;
    g = AndAgg<K>(slot.c, a);
  }
}

template <uint32_t K>
void ClassifyK(const Ruleset::Impl& m, const FlowKey* keys, uint32_t* out, uint32_t n) {
  constexpr uint32_t kNoMatch = Ruleset::kNoMatch;
  const SmallTables& s = *m.small;
  const AddrTable4& src4 = *m.src4;
  const AddrTable4& dst4 = *m.dst4;
  const uint32_t stride = m.stride;
  View v;
  for (uint32_t f = 0; f < kFields; ++f) v.dict[f] = m.dict[f];
  v.aw = m.agg_words;
  v.shift = m.chunk_shift;
  v.mask = (1u << m.chunk_shift) - 1;
  const uint32_t* entry_rule = m.rules->entry_rule.data();
  Slot slot[kChunk];

  for (uint32_t done = 0; done < n; done += kChunk) {
    const FlowKey* k = keys + done;
    const uint32_t cnt = std::min(kChunk, n - done);
    // 1. First-level address tables and port tables.
    for (uint32_t i = 0; i < cnt; ++i) {
      if (k[i].family == Family::kV4) {
        Prefetch(&src4.first[static_cast<uint32_t>(k[i].src.lo) >> 16]);
        Prefetch(&dst4.first[static_cast<uint32_t>(k[i].dst.lo) >> 16]);
      }
      Prefetch(&s.sport[k[i].sport]);
      Prefetch(&s.dport[k[i].dport]);
    }
    // 2. IPv4 first level, whole IPv6 lookup; service class numbers.
    for (uint32_t i = 0; i < cnt; ++i) {
      Slot& sl = slot[i];
      if (k[i].family == Family::kV4) {
        sl.src_iv = Start4(src4, static_cast<uint32_t>(k[i].src.lo), &sl.src_second);
        sl.dst_iv = Start4(dst4, static_cast<uint32_t>(k[i].dst.lo), &sl.dst_second);
        if (sl.src_second != nullptr) Prefetch(sl.src_second);
        if (sl.dst_second != nullptr) Prefetch(sl.dst_second);
      } else {
        sl.c[0] = Lookup6(*m.src6, k[i].src);
        sl.c[1] = Lookup6(*m.dst6, k[i].dst);
        Prefetch(sl.c[0]);
        Prefetch(sl.c[1]);
      }
      const uint32_t pd = static_cast<uint32_t>(k[i].dir) * 256 + k[i].proto;
      if constexpr (K == 3) {
        sl.svc =
            (s.sport[k[i].sport] * s.n_dport + s.dport[k[i].dport]) * s.n_proto + s.proto_num[pd];
        Prefetch(&s.merged_cls[sl.svc]);
      } else {
        sl.c[2] = s.sport_base + static_cast<size_t>(s.sport[k[i].sport]) * stride;
        sl.c[3] = s.dport_base + static_cast<size_t>(s.dport[k[i].dport]) * stride;
        sl.c[4] = s.proto[pd];
        Prefetch(sl.c[2]);
        Prefetch(sl.c[3]);
        Prefetch(sl.c[4]);
      }
    }
    // 3. IPv4 start intervals; service classes.
    for (uint32_t i = 0; i < cnt; ++i) {
      Slot& sl = slot[i];
      if (k[i].family == Family::kV4) {
        if (sl.src_second != nullptr) sl.src_iv = *sl.src_second;
        if (sl.dst_second != nullptr) sl.dst_iv = *sl.dst_second;
        Prefetch(&src4.bounds[sl.src_iv]);
        Prefetch(&dst4.bounds[sl.dst_iv]);
      }
      if constexpr (K == 3) {
        sl.c[2] = s.merged_base + static_cast<size_t>(s.merged_cls[sl.svc]) * stride;
        Prefetch(sl.c[2]);
      }
    }
    // 4. IPv4 interval search.
    for (uint32_t i = 0; i < cnt; ++i) {
      Slot& sl = slot[i];
      if (k[i].family == Family::kV4) {
        sl.src_iv = Search4(src4, sl.src_iv, static_cast<uint32_t>(k[i].src.lo));
        sl.dst_iv = Search4(dst4, sl.dst_iv, static_cast<uint32_t>(k[i].dst.lo));
        Prefetch(&src4.cls[sl.src_iv]);
        Prefetch(&dst4.cls[sl.dst_iv]);
      }
    }
    // 5. Address classes.
    for (uint32_t i = 0; i < cnt; ++i) {
      Slot& sl = slot[i];
      if (k[i].family == Family::kV4) {
        sl.c[0] = src4.cls[sl.src_iv];
        sl.c[1] = dst4.cls[sl.dst_iv];
        Prefetch(sl.c[0]);
        Prefetch(sl.c[1]);
      }
    }
    // 6. First aggregate word; fetch the bit-vector words it points at.
    for (uint32_t i = 0; i < cnt; ++i) {
      Slot& sl = slot[i];
      sl.agg = 0;
      sl.cand = AndAgg<K>(sl.c, 0);
      if (sl.cand != 0) {
        const uint32_t w = static_cast<uint32_t>(__builtin_ctzll(sl.cand));
        for (uint32_t f = 0; f < K; ++f) Prefetch(WordPtr(v, sl.c[f], v.dict[f], w));
      }
    }
    // 7. Walk.
    for (uint32_t i = 0; i < cnt; ++i) {
      const uint32_t e = FirstEntry<K>(v, slot[i]);
      out[done + i] = e == kNoMatch ? kNoMatch : entry_rule[e];
    }
  }
}

}  // namespace

void Ruleset::Classify(const FlowKey* keys, uint32_t* out, uint32_t n) const noexcept {
  if (impl_->small->merged) {
    ClassifyK<3>(*impl_, keys, out, n);
  } else {
    ClassifyK<5>(*impl_, keys, out, n);
  }
}

uint32_t Ruleset::num_rules() const noexcept {
  return static_cast<uint32_t>(impl_->rules->rule_num.size());
}
uint32_t Ruleset::rule_num(uint32_t index) const noexcept { return impl_->rules->rule_num[index]; }
Action Ruleset::action(uint32_t index) const noexcept {
  return index == kNoMatch ? impl_->default_action : impl_->rules->action[index];
}
Action Ruleset::default_action() const noexcept { return impl_->default_action; }
size_t Ruleset::memory_bytes() const noexcept { return impl_->memory_bytes; }
uint32_t Ruleset::num_entries() const noexcept { return impl_->num_entries; }
uint64_t Ruleset::generation() const noexcept { return impl_->generation; }

Ruleset::Ruleset(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Ruleset::~Ruleset() = default;

}  // namespace dfw::dataplane
