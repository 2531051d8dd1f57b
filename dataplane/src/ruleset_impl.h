// Internal layout of a compiled Ruleset, shared by the compiler (which builds
// it) and classify.cc (which reads it). See classifier.h for the scheme.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "dfw/dataplane/classifier.h"

namespace dfw::dataplane {

// Equivalence classes. A class is a record of `stride` words (a multiple of 8:
// whole, aligned cache lines): `agg_words` aggregate words (bit w set when
// bit-vector word w is non-zero), then one uint16 chunk id per 2^chunk_shift
// bit-vector words. Chunk id c stands for words [c << chunk_shift, ...) of the
// field's dictionary. The classes of one field share most of their words (the
// same wildcard rules appear in all of them), so the dictionary is small and
// a whole class is one cache line for ~10k rules.
class ClassArena {
 public:
  explicit ClassArena(size_t words) : storage_(words + 8, 0) {
    const auto p = reinterpret_cast<uintptr_t>(storage_.data());
    base_ = storage_.data() + ((64 - p % 64) % 64) / 8;
  }
  ClassArena(const ClassArena&) = delete;
  ClassArena& operator=(const ClassArena&) = delete;
  uint64_t* data() { return base_; }
  const uint64_t* data() const { return base_; }
  size_t bytes() const { return storage_.capacity() * 8; }

 private:
  std::vector<uint64_t> storage_;
  uint64_t* base_;
};

using ChunkDict = std::vector<uint64_t>;

inline uint16_t ChunkId(const uint64_t* rec, uint32_t agg_words, uint32_t i) {
  uint16_t v;
  std::memcpy(&v, reinterpret_cast<const char*>(rec + agg_words) + 2 * static_cast<size_t>(i), 2);
  return v;
}

inline void SetChunkId(uint64_t* rec, uint32_t agg_words, uint32_t i, uint16_t v) {
  std::memcpy(reinterpret_cast<char*>(rec + agg_words) + 2 * static_cast<size_t>(i), &v, 2);
}

// IPv4 address table: intervals [bounds[i], bounds[i+1]) -> cls[i].
// first[h] describes the /16 h: low 5 bits k, high bits v. k = 0: v is the
// interval holding h << 16. k > 0 (a /16 with many boundaries; k <= 8): the next k
// bits of the address pick second[v + j], the interval holding the start of
// that 2^-k slice. From there a branch-free search of exactly search_steps
// halvings over a power-of-two window finds the interval; bounds and cls are
// padded with 2^search_steps copies of the last entry so the window never
// leaves the arrays.
struct AddrTable4 {
  std::vector<uint32_t> bounds;
  std::vector<const uint64_t*> cls;
  std::vector<uint32_t> first;
  std::vector<uint32_t> second;
  uint32_t search_steps = 0;
  size_t bytes() const {
    return bounds.capacity() * 4 + cls.capacity() * 8 + first.capacity() * 4 +
           second.capacity() * 4;
  }
};

struct AddrTable6 {
  std::vector<Ip128> bounds;
  std::vector<const uint64_t*> cls;
  size_t bytes() const { return bounds.capacity() * 16 + cls.capacity() * 8; }
};

// Ports (direct, by class number) and protocol x direction.
struct SmallTables {
  std::shared_ptr<const ClassArena> arena;
  const uint64_t* sport_base = nullptr;  // class n of sport is sport_base + n * stride
  const uint64_t* dport_base = nullptr;
  std::vector<uint16_t> sport;         // 65536 class numbers
  std::vector<uint16_t> dport;         // 65536 class numbers
  std::vector<const uint64_t*> proto;  // 512: dir * 256 + proto
  std::shared_ptr<const ChunkDict> sport_dict, dport_dict, proto_dict;

  // Merged service field, when the compiler found it small: the three
  // service classes ANDed ahead of time, so a lookup ANDs three vectors
  // (source, destination, service) instead of five. The class of a key is
  // merged_base + merged[(sport[] * n_dport + dport[]) * n_proto + proto_num[]] * stride.
  bool merged = false;
  uint32_t n_dport = 0, n_proto = 0;
  std::vector<uint16_t> proto_num;  // 512: dir * 256 + proto -> class number
  std::vector<uint16_t> merged_cls;
  std::shared_ptr<const ClassArena> merged_arena;
  const uint64_t* merged_base = nullptr;
  std::shared_ptr<const ChunkDict> merged_dict;

  size_t bytes() const {
    size_t b = arena->bytes() + sport.capacity() * 2 + dport.capacity() * 2 + proto.capacity() * 8 +
               proto_num.capacity() * 2 + merged_cls.capacity() * 2;
    for (const auto* d : {&sport_dict, &dport_dict, &proto_dict, &merged_dict}) {
      if (*d) b += (*d)->capacity() * 8;
    }
    if (merged_arena) b += merged_arena->bytes();
    return b;
  }
};

struct RuleTables {
  std::vector<uint32_t> entry_rule;  // entry -> rule index
  std::vector<uint32_t> rule_num;
  std::vector<Action> action;
  size_t bytes() const {
    return entry_rule.capacity() * 4 + rule_num.capacity() * 4 + action.capacity();
  }
};

struct Ruleset::Impl {
  uint32_t words = 0;      // bit-vector words per class
  uint32_t agg_words = 0;  // aggregate words per class
  uint32_t stride = 0;     // record words per class
  uint32_t chunk_shift = 0;
  uint32_t num_entries = 0;
  Action default_action = Action::kDrop;
  uint64_t generation = 0;

  // Raw views for the lookup (owned below).
  const AddrTable4* src4 = nullptr;
  const AddrTable4* dst4 = nullptr;
  const AddrTable6* src6 = nullptr;
  const AddrTable6* dst6 = nullptr;
  const SmallTables* small = nullptr;
  const RuleTables* rules = nullptr;
  // Dictionaries in lookup field order: source, destination, then the merged
  // service field, or sport, dport, proto x direction.
  const uint64_t* dict[5] = {};

  std::shared_ptr<const AddrTable4> own_src4, own_dst4;
  std::shared_ptr<const AddrTable6> own_src6, own_dst6;
  std::shared_ptr<const ChunkDict> own_src_dict, own_dst_dict;
  std::shared_ptr<const SmallTables> own_small;
  std::shared_ptr<const RuleTables> own_rules;
  std::vector<std::shared_ptr<const ClassArena>> arenas;  // address classes
  size_t memory_bytes = 0;
};

}  // namespace dfw::dataplane
