// Compile side of the classifier (control thread): validates a RulesetSpec,
// builds the per-field equivalence classes and applies address-set changes
// incrementally. See classifier.h for the scheme.
#include "dfw/dataplane/ruleset_compiler.h"

#include <algorithm>
#include <string>
#include <unordered_map>
#include <utility>

#include "ruleset_impl.h"

namespace dfw::dataplane {
namespace {

constexpr uint32_t kMaxEntries = 1u << 20;
constexpr size_t kMaxMergedClasses = 4096;

template <class T>
struct Space;
template <>
struct Space<uint32_t> {
  static constexpr uint32_t kMax = 0xffffffffu;
  static uint32_t Next(uint32_t x) { return x + 1; }
  static uint32_t From(const Ip128& a) { return static_cast<uint32_t>(a.lo); }
};
template <>
struct Space<Ip128> {
  static constexpr Ip128 kMax{~0ull, ~0ull};
  static Ip128 Next(Ip128 x) {
    if (++x.lo == 0) ++x.hi;
    return x;
  }
  static Ip128 From(const Ip128& a) { return a; }
};

template <class T>
using Ranges = std::vector<std::pair<T, T>>;  // sorted, disjoint, not adjacent

template <class T>
Ranges<T> Normalize(Ranges<T> r) {
  std::sort(r.begin(), r.end());
  Ranges<T> out;
  for (const auto& x : r) {
    if (!out.empty() &&
        (out.back().second == Space<T>::kMax || x.first <= Space<T>::Next(out.back().second))) {
      out.back().second = std::max(out.back().second, x.second);
    } else {
      out.push_back(x);
    }
  }
  return out;
}

// Pieces where membership differs between two normalized range lists:
// (lo, hi, now_member).
template <class T>
struct Piece {
  T lo, hi;
  bool add;
};

template <class T>
bool Member(const Ranges<T>& r, const T& x) {
  auto it = std::upper_bound(r.begin(), r.end(), std::make_pair(x, Space<T>::kMax));
  if (it == r.begin()) return false;
  --it;
  return it->first <= x && x <= it->second;
}

template <class T>
T Prev(T x);
template <>
uint32_t Prev<uint32_t>(uint32_t x) {
  return x - 1;
}
template <>
Ip128 Prev<Ip128>(Ip128 x) {
  if (x.lo-- == 0) --x.hi;
  return x;
}

template <class T>
std::vector<Piece<T>> DiffRanges(const Ranges<T>& before, const Ranges<T>& after) {
  std::vector<T> cuts{T{}};
  for (const Ranges<T>* r : {&before, &after}) {
    for (const auto& x : *r) {
      cuts.push_back(x.first);
      if (x.second != Space<T>::kMax) cuts.push_back(Space<T>::Next(x.second));
    }
  }
  std::sort(cuts.begin(), cuts.end());
  cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());
  std::vector<Piece<T>> out;
  for (size_t i = 0; i < cuts.size(); ++i) {
    const T lo = cuts[i];
    const T hi = i + 1 < cuts.size() ? Prev(cuts[i + 1]) : Space<T>::kMax;
    const bool b = Member(before, lo);
    const bool a = Member(after, lo);
    if (a == b) continue;
    if (!out.empty() && out.back().add == a && Space<T>::Next(out.back().hi) == lo) {
      out.back().hi = hi;
    } else {
      out.push_back(Piece<T>{lo, hi, a});
    }
  }
  return out;
}

struct VecHash {
  template <class V>
  size_t operator()(const V& v) const {
    uint64_t h = 0x9e3779b97f4a7c15ull ^ v.size();
    for (auto x : v) {
      h ^= static_cast<uint64_t>(x) + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
      h *= 0xff51afd7ed558ccdull;
    }
    return static_cast<size_t>(h ^ (h >> 33));
  }
};

template <class T>
struct Intervals {
  std::vector<T> bounds;        // bounds[0] = 0
  std::vector<uint32_t> combo;  // per interval
  size_t Find(const T& x) const {
    return static_cast<size_t>(std::upper_bound(bounds.begin(), bounds.end(), x) - bounds.begin()) -
           1;
  }
  // Makes x the start of an interval; returns its index.
  size_t SplitAt(const T& x) {
    const size_t j = Find(x);
    if (bounds[j] == x) return j;
    bounds.insert(bounds.begin() + static_cast<ptrdiff_t>(j + 1), x);
    combo.insert(combo.begin() + static_cast<ptrdiff_t>(j + 1), combo[j]);
    return j + 1;
  }
};

void SetBit(std::vector<uint64_t>& v, uint32_t e) { v[e >> 6] |= 1ull << (e & 63); }

struct AddressSetState {
  std::string id;
  std::vector<IpPrefix> prefixes;
  Ranges<uint32_t> r4;
  Ranges<Ip128> r6;
};

void ComputeRanges(AddressSetState& s) {
  Ranges<uint32_t> r4;
  Ranges<Ip128> r6;
  for (const IpPrefix& p : s.prefixes) {
    if (p.family == Family::kV4) {
      r4.emplace_back(static_cast<uint32_t>(p.First().lo), static_cast<uint32_t>(p.Last().lo));
    } else {
      r6.emplace_back(p.First(), p.Last());
    }
  }
  s.r4 = Normalize(std::move(r4));
  s.r6 = Normalize(std::move(r6));
}

std::string RuleName(size_t i, const RuleSpec& r) {
  return "rule " + std::to_string(i) + " (rule_num " + std::to_string(r.rule_num) + ")";
}

}  // namespace

// A field's chunk dictionary while compiling: chunk words -> id.
struct ChunkTable {
  ChunkDict words;
  std::unordered_map<std::vector<uint64_t>, uint32_t, VecHash> ids;
  std::shared_ptr<const ChunkDict> published;
  const std::shared_ptr<const ChunkDict>& Publish() {
    if (!published || published->size() != words.size()) {
      published = std::make_shared<const ChunkDict>(words);
    }
    return published;
  }
};

// One address field (source or destination).
struct AddrField {
  ChunkTable dict;
  std::vector<std::vector<uint32_t>> pos, neg;  // set -> entries (positive / negated refs)
  std::vector<uint64_t> any_bits, neg_all;
  std::vector<std::vector<uint32_t>> combos;  // combo id -> sorted sets containing the interval
  std::unordered_map<std::vector<uint32_t>, uint32_t, VecHash> combo_ids;
  std::vector<const uint64_t*> combo_cls;  // filled by MaterializeClasses
  Intervals<uint32_t> iv4;
  Intervals<Ip128> iv6;
  std::shared_ptr<const AddrTable4> t4;
  std::shared_ptr<const AddrTable6> t6;

  bool Uses(uint32_t s) const { return !pos[s].empty() || !neg[s].empty(); }
  uint32_t ComboId(const std::vector<uint32_t>& sets) {
    auto [it, fresh] = combo_ids.emplace(sets, static_cast<uint32_t>(combos.size()));
    if (fresh) combos.push_back(sets);
    return it->second;
  }
};

struct RulesetCompiler::State {
  RulesetSpec spec;  // rules and default, kept for full recompiles
  uint32_t entries = 0, words = 0, agg_words = 0, stride = 0;
  uint32_t chunk_shift = 3, chunks = 0;
  bool overflow = false;  // a dictionary outgrew uint16 chunk ids
  bool merge_services = true;

  void SetLayout(uint32_t n_entries, uint32_t shift) {
    entries = n_entries;
    words = std::max<uint32_t>(1, (entries + 63) / 64);
    agg_words = (words + 63) / 64;
    chunk_shift = shift;
    chunks = (words + (1u << shift) - 1) >> shift;
    stride = (agg_words + (chunks + 3) / 4 + 7) / 8 * 8;
  }

  // Writes the record of the class with bit vector `bits` (words long).
  void Encode(const uint64_t* bits, uint64_t* rec, ChunkTable& t) {
    for (uint32_t w = 0; w < words; ++w) {
      if (bits[w] != 0) rec[w >> 6] |= 1ull << (w & 63);
    }
    const uint32_t c_words = 1u << chunk_shift;
    std::vector<uint64_t> key(c_words);
    for (uint32_t c = 0; c < chunks; ++c) {
      for (uint32_t j = 0; j < c_words; ++j) {
        const uint32_t w = (c << chunk_shift) + j;
        key[j] = w < words ? bits[w] : 0;
      }
      auto [it, fresh] =
          t.ids.try_emplace(key, static_cast<uint32_t>(t.words.size() >> chunk_shift));
      if (fresh) t.words.insert(t.words.end(), key.begin(), key.end());
      if (it->second > 0xffff) overflow = true;
      SetChunkId(rec, agg_words, c, static_cast<uint16_t>(it->second));
    }
  }
  std::vector<AddressSetState> sets;
  std::unordered_map<std::string, uint32_t> set_ids;
  AddrField field[2];
  std::vector<std::shared_ptr<const ClassArena>> arenas;  // address classes
  size_t compiled_arena_words = 0, update_arena_words = 0;
  std::shared_ptr<const SmallTables> small;
  std::shared_ptr<const RuleTables> rules;
  uint64_t generation = 0;

  // Fills combo_cls for combos that have no class yet, in one new arena.
  void MaterializeClasses(AddrField& f, bool update) {
    const size_t first = f.combo_cls.size();
    const size_t n = f.combos.size() - first;
    if (n == 0) return;
    auto arena = std::make_shared<ClassArena>(n * stride);
    std::vector<uint64_t> bits(words), negated(words);
    for (size_t c = 0; c < n; ++c) {
      std::fill(bits.begin(), bits.end(), 0);
      std::fill(negated.begin(), negated.end(), 0);
      for (uint32_t s : f.combos[first + c]) {
        for (uint32_t e : f.pos[s]) bits[e >> 6] |= 1ull << (e & 63);
        for (uint32_t e : f.neg[s]) negated[e >> 6] |= 1ull << (e & 63);
      }
      for (uint32_t w = 0; w < words; ++w) {
        bits[w] |= f.any_bits[w] | (f.neg_all[w] & ~negated[w]);
      }
      Encode(bits.data(), arena->data() + c * stride, f.dict);
    }
    for (size_t c = 0; c < n; ++c) f.combo_cls.push_back(arena->data() + c * stride);
    (update ? update_arena_words : compiled_arena_words) += n * stride;
    arenas.push_back(std::move(arena));
  }

  template <class T>
  void BuildIntervals(AddrField& f, Intervals<T>& iv) {
    struct Event {
      T at;
      uint32_t set;
      bool add;
    };
    std::vector<Event> ev;
    for (uint32_t s = 0; s < sets.size(); ++s) {
      if (!f.Uses(s)) continue;
      const Ranges<T>* r;
      if constexpr (std::is_same_v<T, uint32_t>) {
        r = &sets[s].r4;
      } else {
        r = &sets[s].r6;
      }
      for (const auto& x : *r) {
        ev.push_back(Event{x.first, s, true});
        if (x.second != Space<T>::kMax) ev.push_back(Event{Space<T>::Next(x.second), s, false});
      }
    }
    std::sort(ev.begin(), ev.end(), [](const Event& a, const Event& b) { return a.at < b.at; });
    iv.bounds.assign(1, T{});
    iv.combo.assign(1, f.ComboId({}));
    std::vector<uint32_t> active;
    size_t i = 0;
    while (i < ev.size()) {
      const T at = ev[i].at;
      for (; i < ev.size() && ev[i].at == at; ++i) {
        auto it = std::lower_bound(active.begin(), active.end(), ev[i].set);
        if (ev[i].add) {
          active.insert(it, ev[i].set);
        } else {
          active.erase(it);
        }
      }
      const uint32_t cid = f.ComboId(active);
      if (at == T{}) {
        iv.combo[0] = cid;
      } else if (cid != iv.combo.back()) {
        iv.bounds.push_back(at);
        iv.combo.push_back(cid);
      }
    }
  }

  std::shared_ptr<const AddrTable4> Table4(const AddrField& f) const {
    auto t = std::make_shared<AddrTable4>();
    const auto& iv = f.iv4;
    const size_t n = iv.bounds.size();
    t->bounds = iv.bounds;
    t->cls.resize(n);
    for (size_t i = 0; i < n; ++i) t->cls[i] = f.combo_cls[iv.combo[i]];
    // plain(h): the interval holding h << 16, by a pointer moving forward.
    size_t j = 0;
    auto plain = [&](uint32_t h) {
      if (h == 65536) return static_cast<uint32_t>(n - 1);
      while (j + 1 < n && iv.bounds[j + 1] <= (h << 16)) ++j;
      return static_cast<uint32_t>(j);
    };
    // Per /16: the fewest extra bits k (at most 8) that leave at most kTarget
    // candidate intervals per slice. The slice starts for k = 8 come from one
    // sweep over the /16's boundaries; coarser k take every 2^(8-k)th.
    constexpr uint32_t kTarget = 4;
    t->first.resize(65536);
    uint32_t widest = 1;
    uint32_t s8[257];
    uint32_t lo = plain(0);
    for (uint32_t h = 0; h < 65536; ++h) {
      const uint32_t hi = plain(h + 1);
      const uint32_t start = lo;
      lo = hi;
      const uint32_t range = hi - start + 1;
      if (range <= kTarget) {
        t->first[h] = start << 5;
        widest = std::max(widest, range);
        continue;
      }
      size_t q = start;
      for (uint32_t s = 0; s < 256; ++s) {
        const uint32_t x = (h << 16) | (s << 8);
        while (q + 1 < n && iv.bounds[q + 1] <= x) ++q;
        s8[s] = static_cast<uint32_t>(q);
      }
      s8[256] = hi;
      uint32_t k = 1, worst = 0;
      for (;; ++k) {
        const uint32_t step = 1u << (8 - k);
        worst = 0;
        for (uint32_t s = 0; s < 256; s += step) worst = std::max(worst, s8[s + step] - s8[s] + 1);
        if (worst <= kTarget || k == 8) break;
      }
      widest = std::max(widest, worst);
      t->first[h] = (static_cast<uint32_t>(t->second.size()) << 5) | k;
      for (uint32_t s = 0; s < 256; s += 1u << (8 - k)) t->second.push_back(s8[s]);
    }
    while ((1u << t->search_steps) < widest) ++t->search_steps;
    // Padding for the fixed search window.
    const uint32_t pad = 1u << t->search_steps;
    t->bounds.insert(t->bounds.end(), pad, t->bounds.back());
    t->cls.insert(t->cls.end(), pad, t->cls.back());
    return t;
  }

  std::shared_ptr<const AddrTable6> Table6(const AddrField& f) const {
    auto t = std::make_shared<AddrTable6>();
    t->bounds = f.iv6.bounds;
    t->cls.resize(t->bounds.size());
    for (size_t i = 0; i < t->cls.size(); ++i) t->cls[i] = f.combo_cls[f.iv6.combo[i]];
    return t;
  }

  // Ports and protocol x direction, from the entries.
  struct EntryInfo {
    uint32_t rule;
    const ServiceSpec* svc;  // nullptr: any
    RuleDirection dir;
  };

  void BuildSmall(const std::vector<EntryInfo>& ent) {
    auto st = std::make_shared<SmallTables>();
    // Dense bit vectors of the classes of sport (0), dport (1), proto x dir (2).
    std::vector<std::vector<uint64_t>> dense[3];
    std::unordered_map<std::vector<uint64_t>, uint32_t, VecHash> seen;
    std::vector<uint64_t> bits(words);
    auto intern = [&](int sub) -> uint32_t {
      auto [it, fresh] = seen.try_emplace(bits, static_cast<uint32_t>(dense[sub].size()));
      if (fresh) dense[sub].push_back(bits);
      return it->second;
    };
    // Ports: sweep over range starts/ends.
    std::vector<uint16_t>* tables[2] = {&st->sport, &st->dport};
    for (int pf = 0; pf < 2; ++pf) {
      seen.clear();
      std::vector<std::pair<uint32_t, uint32_t>> ev;  // (position, entry*2 + is_end)
      for (uint32_t e = 0; e < ent.size(); ++e) {
        Ranges<uint32_t> r;
        const std::vector<PortRange>* pr =
            ent[e].svc == nullptr ? nullptr : (pf == 0 ? &ent[e].svc->sports : &ent[e].svc->dports);
        if (pr == nullptr || pr->empty()) {
          r.emplace_back(0, 65535);
        } else {
          for (const PortRange& x : *pr) r.emplace_back(x.lo, x.hi);
          r = Normalize(std::move(r));
        }
        for (const auto& x : r) {
          ev.emplace_back(x.first, e * 2);
          ev.emplace_back(x.second + 1, e * 2 + 1);
        }
      }
      std::sort(ev.begin(), ev.end());
      std::fill(bits.begin(), bits.end(), 0);
      auto& table = *tables[pf];
      table.assign(65536, 0);
      size_t i = 0;
      uint32_t at = 0;
      while (at < 65536) {
        for (; i < ev.size() && ev[i].first == at; ++i) {
          const uint32_t e = ev[i].second >> 1;
          if (ev[i].second & 1) {
            bits[e >> 6] &= ~(1ull << (e & 63));
          } else {
            bits[e >> 6] |= 1ull << (e & 63);
          }
        }
        const uint32_t next = i < ev.size() ? std::min<uint32_t>(ev[i].first, 65536) : 65536;
        const uint32_t c = intern(pf);
        std::fill(table.begin() + at, table.begin() + next, static_cast<uint16_t>(c));
        at = next;
      }
    }
    // Protocol x direction.
    seen.clear();
    std::vector<uint32_t> proto_cls(512);
    for (uint32_t d = 0; d < 2; ++d) {
      std::vector<uint64_t> any(words);
      std::vector<std::vector<uint32_t>> by_proto(256);
      for (uint32_t e = 0; e < ent.size(); ++e) {
        if (ent[e].dir != RuleDirection::kBoth && static_cast<uint32_t>(ent[e].dir) != d) continue;
        if (ent[e].svc == nullptr || !ent[e].svc->proto) {
          SetBit(any, e);
        } else {
          by_proto[*ent[e].svc->proto].push_back(e);
        }
      }
      for (uint32_t p = 0; p < 256; ++p) {
        bits = any;
        for (uint32_t e : by_proto[p]) SetBit(bits, e);
        proto_cls[d * 256 + p] = intern(2);
      }
    }
    // Records: sport classes, then dport, then proto x direction.
    const size_t n0 = dense[0].size(), n1 = dense[1].size(), n2 = dense[2].size();
    auto arena = std::make_shared<ClassArena>((n0 + n1 + n2) * stride);
    ChunkTable dicts[3];
    size_t at = 0;
    for (int sub = 0; sub < 3; ++sub) {
      for (const auto& v : dense[sub])
        Encode(v.data(), arena->data() + (at++) * stride, dicts[sub]);
    }
    const uint64_t* base = arena->data();
    st->sport_base = base;
    st->dport_base = base + n0 * stride;
    const uint64_t* proto_base = base + (n0 + n1) * stride;
    st->proto.resize(512);
    for (uint32_t i = 0; i < 512; ++i) st->proto[i] = proto_base + proto_cls[i] * stride;
    st->sport_dict = dicts[0].Publish();
    st->dport_dict = dicts[1].Publish();
    st->proto_dict = dicts[2].Publish();
    st->arena = std::move(arena);
    MergeServices(*st, dense, proto_cls);
    small = std::move(st);
  }

  // Precomputes sport & dport & proto for every combination of their classes
  // when that stays small (bounded by kMaxMergedClasses distinct vectors).
  void MergeServices(SmallTables& st, const std::vector<std::vector<uint64_t>> (&dense)[3],
                     const std::vector<uint32_t>& proto_cls) {
    if (!merge_services) return;
    constexpr size_t kMaxCombos = 1u << 18;
    const size_t n_sport = dense[0].size(), n_dport = dense[1].size(), n_proto = dense[2].size();
    const size_t combos = n_sport * n_dport * n_proto;
    if (combos > kMaxCombos) return;
    // Budget: no more merged classes than address classes (memory stays in
    // proportion), and at least a few hundred.
    const size_t budget = std::max<size_t>(
        512,
        std::min<size_t>(kMaxMergedClasses, (field[0].combos.size() + field[1].combos.size())));
    std::vector<std::vector<uint64_t>> merged;
    std::unordered_map<std::vector<uint64_t>, uint32_t, VecHash> seen;
    std::vector<uint16_t> table(combos);
    std::vector<uint64_t> bits(words);
    for (size_t sp = 0; sp < n_sport; ++sp) {
      for (size_t dp = 0; dp < n_dport; ++dp) {
        for (size_t pr = 0; pr < n_proto; ++pr) {
          const uint64_t* a = dense[0][sp].data();
          const uint64_t* b = dense[1][dp].data();
          const uint64_t* c = dense[2][pr].data();
          for (uint32_t w = 0; w < words; ++w) bits[w] = a[w] & b[w] & c[w];
          auto [it, fresh] = seen.try_emplace(bits, static_cast<uint32_t>(merged.size()));
          if (fresh) {
            if (merged.size() >= budget) return;
            merged.push_back(bits);
          }
          table[(sp * n_dport + dp) * n_proto + pr] = static_cast<uint16_t>(it->second);
        }
      }
    }
    auto arena = std::make_shared<ClassArena>(merged.size() * stride);
    ChunkTable dict;
    for (size_t i = 0; i < merged.size(); ++i) {
      Encode(merged[i].data(), arena->data() + i * stride, dict);
    }
    st.merged = true;
    st.n_dport = static_cast<uint32_t>(n_dport);
    st.n_proto = static_cast<uint32_t>(n_proto);
    st.proto_num.assign(proto_cls.begin(), proto_cls.end());
    st.merged_cls = std::move(table);
    st.merged_base = arena->data();
    st.merged_arena = std::move(arena);
    st.merged_dict = dict.Publish();
  }
};

RulesetCompiler::RulesetCompiler(CompileOptions options)
    : options_(options), state_(std::make_unique<State>()) {}
RulesetCompiler::~RulesetCompiler() = default;

namespace {

Status ValidateEndpoint(const EndpointSpec& ep, const std::string& where,
                        const std::unordered_map<std::string, uint32_t>& set_ids) {
  if (ep.any && !ep.address_sets.empty()) {
    return Status::Error(where + ": 'any' together with address sets");
  }
  if (ep.any && ep.negate) return Status::Error(where + ": negated 'any' matches nothing");
  if (!ep.any && ep.address_sets.empty()) {
    return Status::Error(where + ": neither 'any' nor an address set");
  }
  for (const std::string& id : ep.address_sets) {
    if (!set_ids.contains(id)) {
      return Status::Error(where + ": unknown address set '" + id + "'");
    }
  }
  return Status::Ok();
}

Status ValidateService(const ServiceSpec& s, const std::string& where) {
  for (const auto* list : {&s.sports, &s.dports}) {
    for (const PortRange& r : *list) {
      if (r.lo > r.hi) {
        return Status::Error(where + ": port range " + std::to_string(r.lo) + "-" +
                             std::to_string(r.hi) + " is empty");
      }
    }
  }
  return Status::Ok();
}

}  // namespace

Status RulesetCompiler::Compile(const RulesetSpec& spec) {
  // Chunks of 8 words (one cache line); wider when a dictionary would outgrow
  // 16-bit chunk ids.
  for (uint32_t shift = std::min<uint32_t>(options_.chunk_shift, 14);; ++shift) {
    bool overflow = false;
    Status st = CompileAt(spec, shift, &overflow);
    if (!overflow) return st;
    if ((1u << shift) >= kMaxEntries / 64) {
      return Status::Error("too many distinct classes in one field");
    }
  }
}

Status RulesetCompiler::CompileAt(const RulesetSpec& spec, uint32_t chunk_shift, bool* overflow) {
  auto st = std::make_unique<State>();
  st->merge_services = options_.merge_services;
  st->spec.rules = spec.rules;
  st->spec.default_action = spec.default_action;
  st->generation = state_->generation + 1;

  for (const AddressSetSpec& as : spec.address_sets) {
    if (st->set_ids.contains(as.id)) {
      return Status::Error("address set '" + as.id + "': defined twice");
    }
    st->set_ids.emplace(as.id, static_cast<uint32_t>(st->sets.size()));
    AddressSetState s{as.id, as.prefixes, {}, {}};
    ComputeRanges(s);
    st->sets.push_back(std::move(s));
  }

  // Entries: one per (rule, service).
  std::vector<State::EntryInfo> ent;
  for (size_t i = 0; i < spec.rules.size(); ++i) {
    const RuleSpec& r = spec.rules[i];
    const std::string name = RuleName(i, r);
    if (Status s = ValidateEndpoint(r.src, name + ": source", st->set_ids); !s.ok()) return s;
    if (Status s = ValidateEndpoint(r.dst, name + ": destination", st->set_ids); !s.ok()) return s;
    if (r.services.empty()) {
      ent.push_back(State::EntryInfo{static_cast<uint32_t>(i), nullptr, r.direction});
    }
    for (size_t k = 0; k < r.services.size(); ++k) {
      if (Status s = ValidateService(r.services[k], name + ": service " + std::to_string(k));
          !s.ok()) {
        return s;
      }
      ent.push_back(State::EntryInfo{static_cast<uint32_t>(i), &r.services[k], r.direction});
    }
    if (ent.size() > kMaxEntries) {
      return Status::Error(name + ": more than " + std::to_string(kMaxEntries) +
                           " rule x service entries");
    }
  }
  st->SetLayout(static_cast<uint32_t>(ent.size()), chunk_shift);

  auto rules = std::make_shared<RuleTables>();
  rules->entry_rule.reserve(ent.size());
  for (const auto& e : ent) rules->entry_rule.push_back(e.rule);
  for (const RuleSpec& r : spec.rules) {
    rules->rule_num.push_back(r.rule_num);
    rules->action.push_back(r.action);
  }
  st->rules = std::move(rules);

  // Address fields.
  for (int fi = 0; fi < 2; ++fi) {
    AddrField& f = st->field[fi];
    f.pos.assign(st->sets.size(), {});
    f.neg.assign(st->sets.size(), {});
    f.any_bits.assign(st->words, 0);
    f.neg_all.assign(st->words, 0);
    for (uint32_t e = 0; e < ent.size(); ++e) {
      const RuleSpec& r = spec.rules[ent[e].rule];
      const EndpointSpec& ep = fi == 0 ? r.src : r.dst;
      if (ep.any) {
        SetBit(f.any_bits, e);
        continue;
      }
      if (ep.negate) SetBit(f.neg_all, e);
      for (const std::string& id : ep.address_sets) {
        auto& list = (ep.negate ? f.neg : f.pos)[st->set_ids.at(id)];
        if (list.empty() || list.back() != e) list.push_back(e);
      }
    }
    st->BuildIntervals(f, f.iv4);
    st->BuildIntervals(f, f.iv6);
    st->MaterializeClasses(f, false);
    f.t4 = st->Table4(f);
    f.t6 = st->Table6(f);
  }
  st->BuildSmall(ent);
  if (st->overflow) {
    *overflow = true;
    return Status::Ok();
  }

  state_ = std::move(st);
  Publish();
  return Status::Ok();
}

void RulesetCompiler::Publish() {
  State& st = *state_;
  auto impl = std::make_unique<Ruleset::Impl>();
  impl->words = st.words;
  impl->agg_words = st.agg_words;
  impl->stride = st.stride;
  impl->chunk_shift = st.chunk_shift;
  impl->own_src_dict = st.field[0].dict.Publish();
  impl->own_dst_dict = st.field[1].dict.Publish();
  impl->dict[0] = impl->own_src_dict->data();
  impl->dict[1] = impl->own_dst_dict->data();
  if (st.small->merged) {
    impl->dict[2] = st.small->merged_dict->data();
  } else {
    impl->dict[2] = st.small->sport_dict->data();
    impl->dict[3] = st.small->dport_dict->data();
    impl->dict[4] = st.small->proto_dict->data();
  }
  impl->num_entries = st.entries;
  impl->default_action = st.spec.default_action;
  impl->generation = st.generation;
  impl->own_src4 = st.field[0].t4;
  impl->own_dst4 = st.field[1].t4;
  impl->own_src6 = st.field[0].t6;
  impl->own_dst6 = st.field[1].t6;
  impl->own_small = st.small;
  impl->own_rules = st.rules;
  impl->arenas = st.arenas;
  impl->src4 = impl->own_src4.get();
  impl->dst4 = impl->own_dst4.get();
  impl->src6 = impl->own_src6.get();
  impl->dst6 = impl->own_dst6.get();
  impl->small = impl->own_small.get();
  impl->rules = impl->own_rules.get();
  size_t bytes = sizeof(Ruleset::Impl) + impl->src4->bytes() + impl->dst4->bytes() +
                 impl->src6->bytes() + impl->dst6->bytes() + impl->small->bytes() +
                 impl->rules->bytes();
  for (const auto& a : impl->arenas) bytes += a->bytes();
  bytes += impl->own_src_dict->capacity() * 8 + impl->own_dst_dict->capacity() * 8;
  impl->memory_bytes = bytes;
  current_ = std::shared_ptr<const Ruleset>(new Ruleset(std::move(impl)));
}

Status RulesetCompiler::ApplyAddressSetDelta(std::string_view id,
                                             const std::vector<IpPrefix>& added,
                                             const std::vector<IpPrefix>& removed) {
  std::vector<IpPrefix> now;
  auto it = state_->set_ids.find(std::string(id));
  if (it != state_->set_ids.end()) now = state_->sets[it->second].prefixes;
  auto same = [](const IpPrefix& a, const IpPrefix& b) {
    return a.family == b.family && a.len == b.len && a.addr == b.addr;
  };
  for (const IpPrefix& r : removed) {
    std::erase_if(now, [&](const IpPrefix& p) { return same(p, r); });
  }
  for (const IpPrefix& a : added) {
    if (std::none_of(now.begin(), now.end(), [&](const IpPrefix& p) { return same(p, a); })) {
      now.push_back(a);
    }
  }
  return UpdateAddressSet(id, now);
}

Status RulesetCompiler::UpdateAddressSet(std::string_view id,
                                         const std::vector<IpPrefix>& prefixes) {
  State& st = *state_;
  auto it = st.set_ids.find(std::string(id));
  if (it == st.set_ids.end()) {
    // Not referenced by any rule yet: just remember it for later compiles.
    const uint32_t s = static_cast<uint32_t>(st.sets.size());
    st.set_ids.emplace(std::string(id), s);
    AddressSetState as{std::string(id), prefixes, {}, {}};
    ComputeRanges(as);
    st.sets.push_back(std::move(as));
    for (AddrField& f : st.field) {
      f.pos.emplace_back();
      f.neg.emplace_back();
    }
    return Status::Ok();
  }
  const uint32_t s = it->second;
  AddressSetState next{std::string(id), prefixes, {}, {}};
  ComputeRanges(next);
  const auto d4 = DiffRanges(st.sets[s].r4, next.r4);
  const auto d6 = DiffRanges(st.sets[s].r6, next.r6);
  st.sets[s] = std::move(next);
  if (!current_ || (d4.empty() && d6.empty())) return Status::Ok();

  bool changed = false;
  for (AddrField& f : st.field) {
    if (!f.Uses(s)) continue;
    // Old combo -> combo with s toggled, cached for this update.
    std::unordered_map<uint64_t, uint32_t> toggled;
    auto toggle = [&](uint32_t cid, bool add) {
      const uint64_t key = (static_cast<uint64_t>(cid) << 1) | (add ? 1 : 0);
      auto t = toggled.find(key);
      if (t != toggled.end()) return t->second;
      std::vector<uint32_t> c = f.combos[cid];
      auto pos = std::lower_bound(c.begin(), c.end(), s);
      const bool has = pos != c.end() && *pos == s;
      if (add && !has) c.insert(pos, s);
      if (!add && has) c.erase(pos);
      const uint32_t out = f.ComboId(c);
      toggled.emplace(key, out);
      return out;
    };
    auto apply = [&](auto& iv, const auto& pieces) {
      using T = typename std::decay_t<decltype(iv.bounds)>::value_type;
      for (const auto& p : pieces) {
        const size_t i0 = iv.SplitAt(p.lo);
        size_t i1 = iv.bounds.size();
        if (p.hi != Space<T>::kMax) i1 = iv.SplitAt(Space<T>::Next(p.hi));
        for (size_t i = i0; i < i1; ++i) iv.combo[i] = toggle(iv.combo[i], p.add);
      }
    };
    apply(f.iv4, d4);
    apply(f.iv6, d6);
    st.MaterializeClasses(f, true);
    if (!d4.empty()) f.t4 = st.Table4(f);
    if (!d6.empty()) f.t6 = st.Table6(f);
    changed = true;
  }
  if (!changed) return Status::Ok();
  // Classes orphaned by updates pile up in arenas; once they outweigh the
  // compiled ones, start over from the spec (bounded memory).
  if (st.overflow ||
      st.update_arena_words > st.compiled_arena_words + options_.garbage_limit_words) {
    RulesetSpec spec = st.spec;
    for (const AddressSetState& as : st.sets) spec.address_sets.push_back({as.id, as.prefixes});
    return Compile(spec);
  }
  ++st.generation;
  Publish();
  return Status::Ok();
}

size_t RulesetCompiler::state_bytes() const {
  const State& st = *state_;
  auto vec = [](const auto& v) { return sizeof(v) + v.capacity() * sizeof(v[0]); };
  size_t b = sizeof(State);
  for (const AddrField& f : st.field) {
    for (const auto& v : f.pos) b += vec(v);
    for (const auto& v : f.neg) b += vec(v);
    // Each combo is held twice (vector and hash key) plus a hash node.
    for (const auto& v : f.combos) b += 2 * vec(v) + 32;
    b += vec(f.any_bits) + vec(f.neg_all) + vec(f.combo_cls);
    b += vec(f.iv4.bounds) + vec(f.iv4.combo) + vec(f.iv6.bounds) + vec(f.iv6.combo);
    b += vec(f.dict.words) + f.dict.ids.size() * ((8u << st.chunk_shift) + 64);
  }
  for (const AddressSetState& s : st.sets) {
    b += sizeof(s) + s.id.capacity() + vec(s.prefixes) + vec(s.r4) + vec(s.r6) + 48;
  }
  for (const RuleSpec& r : st.spec.rules) {
    b += sizeof(r) + vec(r.services);
    for (const ServiceSpec& s : r.services) b += vec(s.sports) + vec(s.dports);
    for (const auto* ep : {&r.src, &r.dst}) {
      for (const std::string& id : ep->address_sets) b += sizeof(id) + id.capacity();
    }
  }
  return b;
}

}  // namespace dfw::dataplane
