// Internal layout of a compiled Ruleset, shared by the compiler (which builds
// it) and classify.cc (which reads it). See classifier.h for the scheme.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "dfw/dataplane/classifier.h"

namespace dfw::dataplane {

// A class is `stride` uint64 words: `agg_words` aggregate words, then `words`
// bit-vector words. Class storage lives in arenas shared between Rulesets.
using ClassArena = std::vector<uint64_t>;

// IPv4 address table: intervals [bounds[i], bounds[i+1]) -> cls[i]. first[h]
// is the interval holding h << 16; first[65536] = the last interval. A lookup
// searches [first[h], first[h + 1]] in search_steps halvings (enough for the
// widest /16).
struct AddrTable4 {
  std::vector<uint32_t> bounds;
  std::vector<const uint64_t*> cls;
  std::vector<uint32_t> first;
  uint32_t search_steps = 0;
  size_t bytes() const { return bounds.capacity() * 4 + cls.capacity() * 8 + first.capacity() * 4; }
};

struct AddrTable6 {
  std::vector<Ip128> bounds;
  std::vector<const uint64_t*> cls;
  size_t bytes() const { return bounds.capacity() * 16 + cls.capacity() * 8; }
};

// Ports (direct, by class number into `arena`) and protocol x direction.
struct SmallTables {
  std::shared_ptr<const ClassArena> arena;
  const uint64_t* sport_base = nullptr;  // class n of sport is sport_base + n * stride
  const uint64_t* dport_base = nullptr;
  std::vector<uint16_t> sport;         // 65536 class numbers
  std::vector<uint16_t> dport;         // 65536 class numbers
  std::vector<const uint64_t*> proto;  // 512: dir * 256 + proto

  // Merged service field, when the compiler found it small: the three
  // service classes ANDed ahead of time, so a lookup ANDs three vectors
  // (source, destination, service) instead of five. The class of a key is
  // merged_base + merged[(sport[] * n_dport + dport[]) * n_proto + proto_num[]].
  bool merged = false;
  uint32_t n_dport = 0, n_proto = 0;
  std::vector<uint16_t> proto_num;  // 512: dir * 256 + proto -> class number
  std::vector<uint16_t> merged_cls;
  std::shared_ptr<const ClassArena> merged_arena;
  const uint64_t* merged_base = nullptr;

  size_t bytes() const {
    return arena->capacity() * 8 + sport.capacity() * 2 + dport.capacity() * 2 +
           proto.capacity() * 8 + proto_num.capacity() * 2 + merged_cls.capacity() * 2 +
           (merged_arena ? merged_arena->capacity() * 8 : 0);
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
  uint32_t stride = 0;     // words + agg_words
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

  std::shared_ptr<const AddrTable4> own_src4, own_dst4;
  std::shared_ptr<const AddrTable6> own_src6, own_dst6;
  std::shared_ptr<const SmallTables> own_small;
  std::shared_ptr<const RuleTables> own_rules;
  std::vector<std::shared_ptr<const ClassArena>> arenas;  // address classes
  size_t memory_bytes = 0;
};

}  // namespace dfw::dataplane
