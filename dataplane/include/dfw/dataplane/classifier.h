// Dataplane classifier: the per-vNIC ruleset lookup that decides the first
// packet of every connection.
//
// What: a vNIC's ordered rules (rule_model.h) are compiled by RulesetCompiler
// (ruleset_compiler.h) into an immutable Ruleset; Ruleset::Classify maps a
// burst of FlowKeys to the index of the first matching rule (or kNoMatch, which
// means the default action).
//
// How: a bit-vector scheme over five fields (source address, destination
// address, source port, destination port, protocol x direction), in the manner
// of Lakshman/Stiliadis and the Aggregated Bit Vector of Baboescu/Varghese. Each
// rule is expanded into one "entry" per service; entries are numbered in
// evaluation order. Per field the value space is cut into elementary intervals,
// and intervals that match the same entries share one equivalence class: a
// bit vector with bit e set when entry e matches in that field, preceded by an
// aggregate vector (bit w set when word w is non-zero). A lookup finds the
// classes (IPv4: a 64k-entry first level, a second level for dense /16s, then
// a short branch-free search; IPv6: a binary search; ports: direct 64k
// tables; protocol x direction: a 512-entry table), ANDs their aggregate
// vectors and walks the set bits in order, ANDing bit-vector words until the
// first non-zero one: its lowest bit is the first matching entry. Unions
// inside a field (a rule over three address sets and two port ranges) cost
// nothing: they are all in the same bit vector. When few, the three service
// fields are precomputed into one (three vectors ANDed instead of five). A
// class is stored as one cache line of aggregate bits and 16-bit ids of
// 8-word chunks in a per-field dictionary: classes share most words, so a
// 10k-rule set takes 2-3 MB. Keys of a burst go through the lookup in stages,
// each prefetching for the next.
//
// Address sets: address classes are built from "which address sets contain
// this interval", not from rules, so an IP joining a set referenced by
// thousands of rules only splits an interval and adds a class or two; the
// compiler rebuilds that one field's table and shares the rest with the
// previous Ruleset (RulesetCompiler::UpdateAddressSet).
//
// Thread safety: a Ruleset is immutable once published. Any number of lcores
// may call Classify on the same Ruleset concurrently, without locks. Compile
// and updates run on one control thread and produce a new Ruleset, which the
// caller publishes (e.g. with rte_rcu_qsbr) and frees once no reader holds it.
// Classify never allocates, never fails, throws nothing and makes no virtual
// call; it lives in classify.cc, compile in ruleset_compiler.cc.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "dfw/dataplane/rule_model.h"

namespace dfw::dataplane {

class Ruleset {
 public:
  static constexpr uint32_t kNoMatch = 0xffffffffu;
  // Recommended burst; any n works.
  static constexpr uint32_t kBurst = 32;

  ~Ruleset();
  Ruleset(const Ruleset&) = delete;
  Ruleset& operator=(const Ruleset&) = delete;

  // For each keys[i], out[i] = index (0-based, evaluation order) of the first
  // matching rule, or kNoMatch. Thread-safe, lock-free, allocation-free.
  void Classify(const FlowKey* keys, uint32_t* out, uint32_t n) const noexcept;
  uint32_t ClassifyOne(const FlowKey& key) const noexcept {
    uint32_t r;
    Classify(&key, &r, 1);
    return r;
  }

  uint32_t num_rules() const noexcept;
  uint32_t rule_num(uint32_t index) const noexcept;  // RuleSpec::rule_num
  Action action(uint32_t index) const noexcept;      // index may be kNoMatch
  Action default_action() const noexcept;
  // Bytes held by this Ruleset's lookup tables (shared parts included).
  size_t memory_bytes() const noexcept;
  // Number of entries (rules x services) and equivalence classes, for reports.
  uint32_t num_entries() const noexcept;
  uint64_t generation() const noexcept;

  struct Impl;  // src/ruleset_impl.h

 private:
  friend class RulesetCompiler;
  explicit Ruleset(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace dfw::dataplane
