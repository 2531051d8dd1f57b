// AddrRanges against a brute-force reference: random prefix adds/removes in
// a small window of the address space, merged ranges compared with a bitmap,
// and the returned diffs replayed on the previous ranges.
#include "dfw/vmagent/addr_ranges.h"

#include <gtest/gtest.h>

#include <map>
#include <random>
#include <set>

namespace dfw::vmagent {
namespace {

// Ranges of a bitmap (bit i = base + i), merged.
std::vector<AddrRange> FromBitmap(const std::vector<int>& count, Addr base) {
  std::vector<AddrRange> out;
  for (size_t i = 0; i < count.size();) {
    if (!count[i]) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j + 1 < count.size() && count[j + 1]) ++j;
    out.push_back({Addr{base.hi, base.lo + i}, Addr{base.hi, base.lo + j}});
    i = j + 1;
  }
  return out;
}

std::vector<AddrRange> Replay(std::vector<AddrRange> old, const std::vector<AddrRange>& rem,
                              const std::vector<AddrRange>& add) {
  std::set<AddrRange> s(old.begin(), old.end());
  for (const auto& r : rem) {
    EXPECT_EQ(s.erase(r), 1u) << "diff removes a range that was not there";
  }
  for (const auto& r : add) {
    EXPECT_TRUE(s.insert(r).second) << "diff adds a range that was there";
  }
  return {s.begin(), s.end()};
}

TEST(AddrRanges, ParseAndFormat) {
  auto p = ParsePrefix("198.18.0.0/15");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(FormatRange(Family::kV4, p->range), "198.18.0.0-198.19.255.255");
  EXPECT_FALSE(ParsePrefix("198.18.0.1/15").ok());
  EXPECT_FALSE(ParsePrefix("198.18.0.0/33").ok());
  EXPECT_FALSE(ParsePrefix("198.18.0.0/").ok());
  EXPECT_FALSE(ParsePrefix("nonsense").ok());
  auto q = ParsePrefix("2001:db8::/32");
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(q->family, Family::kV6);
  EXPECT_EQ(FormatAddr(Family::kV6, q->range.last), "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff");
  auto all = ParsePrefix("::/0");
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->range.last, MaxAddr(Family::kV6));
  EXPECT_EQ(ParsePrefix("198.18.0.7")->range.first, ParsePrefix("198.18.0.7")->range.last);
}

TEST(AddrRanges, MergesNestedAdjacentAndCountsReferences) {
  AddrRanges r;
  auto d = r.Apply(std::vector<std::string>{"198.18.0.0/25", "198.18.0.128/25", "198.18.0.5",
                                            "198.18.0.5", "198.18.2.0/24"},
                   std::vector<std::string>{});
  ASSERT_TRUE(d.ok());
  ASSERT_EQ(r.range_count(Family::kV4), 2u);
  EXPECT_EQ(FormatRange(Family::kV4, r.Ranges(Family::kV4)[0]), "198.18.0.0-198.18.0.255");
  // Removing one of two references changes nothing.
  d = r.Apply(std::vector<std::string>{}, std::vector<std::string>{"198.18.0.5"});
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(d->empty());
  d = r.Apply(std::vector<std::string>{}, std::vector<std::string>{"198.18.0.128/25"});
  ASSERT_TRUE(d.ok());
  ASSERT_EQ(d->removed[0].size(), 1u);
  ASSERT_EQ(d->added[0].size(), 1u);
  EXPECT_EQ(FormatRange(Family::kV4, d->added[0][0]), "198.18.0.0-198.18.0.127");
  // A removal of something absent fails and changes nothing.
  auto bad = r.Apply(std::vector<std::string>{"198.18.9.0/24"},
                     std::vector<std::string>{"198.18.0.5", "198.18.0.5"});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(std::string(bad.status().message()).find("removed[1]"), std::string::npos);
  EXPECT_EQ(r.range_count(Family::kV4), 2u);
  EXPECT_FALSE(r.Contains(Family::kV4, ParsePrefix("198.18.9.1")->range.first));
  // The top of the address space.
  d = r.Apply(std::vector<std::string>{"255.255.255.0/24", "ffff::/16"},
              std::vector<std::string>{});
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(r.Ranges(Family::kV4).back().last, MaxAddr(Family::kV4));
  EXPECT_EQ(r.Ranges(Family::kV6).back().last, MaxAddr(Family::kV6));
}

void RandomRun(Family f, uint32_t seed) {
  std::mt19937 rng(seed);
  // A 1024-address window; prefixes /22../32 inside it (v4) or /118../128 (v6),
  // the window at the top of the space every other seed (max address).
  const unsigned width = f == Family::kV4 ? 32 : 128;
  const bool top = seed % 2 == 1;
  Addr base = f == Family::kV4 ? Addr{0, top ? 0xfffffc00ull : 0xc6120000ull}
                               : Addr{top ? ~0ull : 0x20010db800000000ull, top ? ~0ull - 1023 : 0};
  std::vector<int> count(1024, 0);
  std::vector<std::string> held;
  AddrRanges r;
  std::vector<AddrRange> prev;
  for (int step = 0; step < 400; ++step) {
    std::vector<std::string> add, rem;
    const int n = 1 + static_cast<int>(rng() % 4);
    std::vector<int> next = count;
    std::vector<std::string> next_held = held;
    for (int k = 0; k < n; ++k) {
      if (!next_held.empty() && rng() % 2) {
        const size_t i = rng() % next_held.size();
        rem.push_back(next_held[i]);
        next_held.erase(next_held.begin() + static_cast<long>(i));
      } else {
        const unsigned host = rng() % 11;  // 0..10 host bits
        const uint64_t off = (rng() % 1024) & ~((1ull << host) - 1);
        const Addr a{base.hi, base.lo + off};
        const std::string text = FormatAddr(f, a) + "/" + std::to_string(width - host);
        add.push_back(text);
      }
    }
    // Removals first, then additions (the API's order).
    for (const auto& t : rem) {
      auto p = ParsePrefix(t);
      for (uint64_t x = p->range.first.lo - base.lo; x <= p->range.last.lo - base.lo; ++x)
        --next[x];
    }
    for (const auto& t : add) {
      auto p = ParsePrefix(t);
      for (uint64_t x = p->range.first.lo - base.lo; x <= p->range.last.lo - base.lo; ++x)
        ++next[x];
      next_held.push_back(t);
    }
    auto d = r.Apply(add, rem);
    ASSERT_TRUE(d.ok()) << d.status();
    count = next;
    held = next_held;
    const auto want = FromBitmap(count, base);
    ASSERT_EQ(r.Ranges(f), want) << "seed " << seed << " step " << step;
    ASSERT_EQ(Replay(prev, d->removed[static_cast<int>(f)], d->added[static_cast<int>(f)]), want);
    ASSERT_TRUE(d->removed[1 - static_cast<int>(f)].empty());
    prev = want;
    for (int probe = 0; probe < 8; ++probe) {
      const uint64_t x = rng() % 1024;
      ASSERT_EQ(r.Contains(f, Addr{base.hi, base.lo + x}), count[x] > 0);
    }
  }
}

TEST(AddrRanges, RandomV4AgainstBitmap) {
  for (uint32_t seed = 1; seed <= 20; ++seed) RandomRun(Family::kV4, seed);
}

TEST(AddrRanges, RandomV6AgainstBitmap) {
  for (uint32_t seed = 1; seed <= 20; ++seed) RandomRun(Family::kV6, seed);
}

}  // namespace
}  // namespace dfw::vmagent
