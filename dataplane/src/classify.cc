// Lookup side of the classifier (the data path): no allocation, no failure,
// no locks, no virtual calls. See classifier.h for the scheme.
#include <algorithm>
#include <cstdint>

#include "dfw/dataplane/classifier.h"
#include "ruleset_impl.h"

namespace dfw::dataplane {
namespace {

constexpr uint32_t kFields = 5;
constexpr uint32_t kChunk = 16;  // keys whose classes are fetched ahead of the AND pass

inline const uint64_t* Lookup4(const AddrTable4& t, uint32_t x) {
  const uint32_t h = x >> 16;
  uint32_t lo = t.first[h];
  uint32_t hi = t.first[h + 1];
  const uint32_t* b = t.bounds.data();
  // The interval holding x is in [lo, hi]: the last one whose start is <= x.
  while (lo < hi) {
    const uint32_t mid = (lo + hi + 1) >> 1;
    if (b[mid] <= x) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return t.cls[lo];
}

inline const uint64_t* Lookup6(const AddrTable6& t, const Ip128& x) {
  const auto it = std::upper_bound(t.bounds.begin(), t.bounds.end(), x);
  return t.cls[static_cast<size_t>(it - t.bounds.begin()) - 1];
}

inline void Prefetch(const void* p) { __builtin_prefetch(p, 0, 3); }

inline uint32_t FirstEntry(const Ruleset::Impl& m, const uint64_t* const* c) {
  const uint32_t aw = m.agg_words;
  const uint64_t* c0 = c[0];
  const uint64_t* c1 = c[1];
  const uint64_t* c2 = c[2];
  const uint64_t* c3 = c[3];
  const uint64_t* c4 = c[4];
  for (uint32_t a = 0; a < aw; ++a) {
    uint64_t g = c0[a] & c1[a] & c2[a] & c3[a] & c4[a];
    while (g != 0) {
      const uint32_t w = aw + a * 64 + static_cast<uint32_t>(__builtin_ctzll(g));
      const uint64_t x = c0[w] & c1[w] & c2[w] & c3[w] & c4[w];
      if (x != 0) {
        return (w - aw) * 64 + static_cast<uint32_t>(__builtin_ctzll(x));
      }
      g &= g - 1;
    }
  }
  return Ruleset::kNoMatch;
}

}  // namespace

void Ruleset::Classify(const FlowKey* keys, uint32_t* out, uint32_t n) const noexcept {
  const Impl& m = *impl_;
  const SmallTables& s = *m.small;
  const uint32_t stride = m.stride;
  const uint32_t* entry_rule = m.rules->entry_rule.data();
  const uint64_t* cls[kChunk][kFields];

  for (uint32_t done = 0; done < n; done += kChunk) {
    const uint32_t cnt = std::min(kChunk, n - done);
    for (uint32_t i = 0; i < cnt; ++i) {
      const FlowKey& k = keys[done + i];
      const uint64_t** c = cls[i];
      if (k.family == Family::kV4) {
        c[0] = Lookup4(*m.src4, static_cast<uint32_t>(k.src.lo));
        c[1] = Lookup4(*m.dst4, static_cast<uint32_t>(k.dst.lo));
      } else {
        c[0] = Lookup6(*m.src6, k.src);
        c[1] = Lookup6(*m.dst6, k.dst);
      }
      c[2] = s.sport_base + static_cast<size_t>(s.sport[k.sport]) * stride;
      c[3] = s.dport_base + static_cast<size_t>(s.dport[k.dport]) * stride;
      c[4] = s.proto[static_cast<uint32_t>(k.dir) * 256 + k.proto];
      for (uint32_t f = 0; f < kFields; ++f) Prefetch(c[f]);
    }
    for (uint32_t i = 0; i < cnt; ++i) {
      const uint32_t e = FirstEntry(m, cls[i]);
      out[done + i] = e == kNoMatch ? kNoMatch : entry_rule[e];
    }
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
