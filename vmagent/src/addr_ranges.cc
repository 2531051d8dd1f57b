#include "dfw/vmagent/addr_ranges.h"

#include <arpa/inet.h>

#include <set>

namespace dfw::vmagent {
namespace {

int Idx(Family f) { return static_cast<int>(f); }

}  // namespace

Addr MaxAddr(Family f) { return f == Family::kV4 ? Addr{0, 0xffffffffull} : Addr{~0ull, ~0ull}; }

Addr Next(Addr a) {
  if (++a.lo == 0) ++a.hi;
  return a;
}

Addr Prev(Addr a) {
  if (a.lo-- == 0) --a.hi;
  return a;
}

absl::StatusOr<Prefix> ParsePrefix(std::string_view text, const std::string& field) {
  // The dataplane's parser: the guest reads prefixes exactly as it does.
  auto p = dataplane::IpPrefix::Parse(text);
  if (!p) {
    return absl::InvalidArgumentError(field + ": '" + std::string(text) +
                                      "' is not an address, or a prefix with a valid length "
                                      "and its host bits zero");
  }
  return Prefix{p->family == dataplane::Family::kV4 ? Family::kV4 : Family::kV6,
                AddrRange{p->First(), p->Last()}};
}

absl::StatusOr<std::pair<Family, Addr>> ParseAddr(std::string_view text, const std::string& field) {
  if (text.find('/') != std::string_view::npos) {
    return absl::InvalidArgumentError(field + ": '" + std::string(text) +
                                      "' is a prefix, not an address");
  }
  auto p = ParsePrefix(text, field);
  if (!p.ok()) return p.status();
  return std::make_pair(p->family, p->range.first);
}

size_t AddrBytes(Family f, Addr a, uint8_t out[16]) {
  if (f == Family::kV4) {
    for (int i = 0; i < 4; ++i) out[i] = static_cast<uint8_t>(a.lo >> (24 - 8 * i));
    return 4;
  }
  for (int i = 0; i < 8; ++i) out[i] = static_cast<uint8_t>(a.hi >> (56 - 8 * i));
  for (int i = 0; i < 8; ++i) out[8 + i] = static_cast<uint8_t>(a.lo >> (56 - 8 * i));
  return 16;
}

std::string FormatAddr(Family f, Addr a) {
  char buf[INET6_ADDRSTRLEN];
  uint8_t b[16];
  AddrBytes(f, a, b);
  inet_ntop(f == Family::kV4 ? AF_INET : AF_INET6, b, buf, sizeof(buf));
  return buf;
}

std::string FormatRange(Family f, const AddrRange& r) {
  if (r.first == r.last) return FormatAddr(f, r.first);
  return FormatAddr(f, r.first) + "-" + FormatAddr(f, r.last);
}

std::vector<AddrRange> AddrRanges::Ranges(Family f) const {
  std::vector<AddrRange> out;
  out.reserve(merged_[Idx(f)].size());
  for (const auto& [first, last] : merged_[Idx(f)]) out.push_back({first, last});
  return out;
}

bool AddrRanges::First(Family f, AddrRange* out) const {
  const auto& m = merged_[Idx(f)];
  if (m.empty()) return false;
  *out = AddrRange{m.begin()->first, m.begin()->second};
  return true;
}

bool AddrRanges::Contains(Family f, Addr a) const {
  const auto& m = merged_[Idx(f)];
  auto it = m.upper_bound(a);
  if (it == m.begin()) return false;
  --it;
  return a <= it->second;
}

size_t AddrRanges::prefix_count() const { return prefixes_[0].size() + prefixes_[1].size(); }

// Net range changes of one Apply(): a range removed then added again (or the
// reverse) cancels out.
struct AddrRanges::NetDiff {
  std::set<AddrRange> removed[2], added[2];
  void Remove(int f, AddrRange r) {
    if (!added[f].erase(r)) removed[f].insert(r);
  }
  void Add(int f, AddrRange r) {
    if (!removed[f].erase(r)) added[f].insert(r);
  }
};

// Recomputes the merged ranges around `changed` (a prefix just added or
// dropped). The region is `changed` joined with every merged range that
// overlaps or touches it; no prefix crosses the region's edges (a prefix is
// inside one merged range), so the new merged ranges of the region come from
// the prefixes that start inside it.
void AddrRanges::Recompute(Family f, AddrRange changed, NetDiff* net) {
  auto& merged = merged_[Idx(f)];
  auto& prefixes = prefixes_[Idx(f)];
  Addr a = changed.first, b = changed.last;
  // The first merged range that may touch: the one starting at or before a.
  auto it = merged.upper_bound(a);
  if (it != merged.begin()) {
    auto prev = std::prev(it);
    if (prev->second >= a || Next(prev->second) == a) it = prev;
  }
  const bool b_is_max = b == MaxAddr(f);
  const Addr after_b = b_is_max ? b : Next(b);
  while (it != merged.end() && it->first <= after_b) {
    if (it->first < a) a = it->first;
    if (it->second > b) b = it->second;
    net->Remove(Idx(f), AddrRange{it->first, it->second});
    it = merged.erase(it);
  }
  bool have = false;
  AddrRange cur;
  for (auto p = prefixes.lower_bound({a, Addr{}}); p != prefixes.end() && p->first.first <= b;
       ++p) {
    const Addr pf = p->first.first, pl = p->first.second;
    if (have && (pf <= cur.last || (cur.last != MaxAddr(f) && Next(cur.last) == pf))) {
      if (pl > cur.last) cur.last = pl;
      continue;
    }
    if (have) {
      merged.emplace(cur.first, cur.last);
      net->Add(Idx(f), cur);
    }
    cur = AddrRange{pf, pl};
    have = true;
  }
  if (have) {
    merged.emplace(cur.first, cur.last);
    net->Add(Idx(f), cur);
  }
}

absl::StatusOr<RangeDiff> AddrRanges::Apply(const std::vector<std::string>& added,
                                            const std::vector<std::string>& removed) {
  std::vector<Prefix> add, rem;
  std::map<std::pair<int, std::pair<Addr, Addr>>, uint32_t> need;
  for (size_t i = 0; i < removed.size(); ++i) {
    const std::string field = "removed[" + std::to_string(i) + "]";
    auto p = ParsePrefix(removed[i], field);
    if (!p.ok()) return p.status();
    const auto key = std::make_pair(p->range.first, p->range.last);
    const auto& m = prefixes_[Idx(p->family)];
    auto found = m.find(key);
    uint32_t& n = need[{Idx(p->family), key}];
    if (found == m.end() || found->second <= n) {
      return absl::NotFoundError(field + ": '" + removed[i] + "' is not in the set");
    }
    ++n;
    rem.push_back(*p);
  }
  for (size_t i = 0; i < added.size(); ++i) {
    auto p = ParsePrefix(added[i], "added[" + std::to_string(i) + "]");
    if (!p.ok()) return p.status();
    add.push_back(*p);
  }
  NetDiff net;
  for (const Prefix& p : rem) {
    auto& m = prefixes_[Idx(p.family)];
    auto it = m.find({p.range.first, p.range.last});
    if (--it->second == 0) {
      m.erase(it);
      Recompute(p.family, p.range, &net);
    }
  }
  for (const Prefix& p : add) {
    uint32_t& n = prefixes_[Idx(p.family)][{p.range.first, p.range.last}];
    if (n++ == 0) Recompute(p.family, p.range, &net);
  }
  RangeDiff out;
  for (int f = 0; f < 2; ++f) {
    out.removed[f].assign(net.removed[f].begin(), net.removed[f].end());
    out.added[f].assign(net.added[f].begin(), net.added[f].end());
  }
  return out;
}

}  // namespace dfw::vmagent
