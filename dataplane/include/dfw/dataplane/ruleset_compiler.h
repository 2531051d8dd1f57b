// RulesetCompiler: turns a vNIC's ordered rules and the address sets they
// reference into an immutable Ruleset (classifier.h), and applies address-set
// changes incrementally.
//
// Control thread only: a RulesetCompiler is not thread-safe. It keeps the
// state needed for incremental updates (intervals per address-set combination)
// beside the published Rulesets; each Compile/UpdateAddressSet produces a new
// Ruleset that shares unchanged tables with the previous one. Errors name the
// rule (index and rule_num) or the address set, and the field.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "dfw/dataplane/classifier.h"
#include "dfw/dataplane/rule_model.h"

namespace dfw::dataplane {

class Status {
 public:
  static Status Ok() { return Status(); }
  static Status Error(std::string message) { return Status(std::move(message)); }
  bool ok() const { return message_.empty(); }
  const std::string& message() const { return message_; }

 private:
  Status() = default;
  explicit Status(std::string m) : message_(m.empty() ? "error" : std::move(m)) {}
  std::string message_;
};

// Layout knobs; the defaults are what the dataplane uses. Tests vary them to
// cover every lookup path.
struct CompileOptions {
  // Precompute sport & dport & protocol classes into one field when the
  // number of distinct results stays small (three vectors ANDed per lookup
  // instead of five).
  bool merge_services = true;
  // log2 of the words per dictionary chunk (3: one cache line). Raised
  // automatically when a field has more than 65536 distinct chunks.
  uint32_t chunk_shift = 3;
  // Address-set updates add classes and orphan old ones; once the words they
  // added exceed the compiled ones by this much, the next update recompiles
  // in full (memory stays bounded).
  size_t garbage_limit_words = 1u << 16;
};

class RulesetCompiler {
 public:
  explicit RulesetCompiler(CompileOptions options = CompileOptions());
  ~RulesetCompiler();
  RulesetCompiler(const RulesetCompiler&) = delete;
  RulesetCompiler& operator=(const RulesetCompiler&) = delete;

  // Full compile. On error the previous ruleset() stays.
  Status Compile(const RulesetSpec& spec);

  // Replaces the prefixes of an address set (new ids are added). Only the
  // address fields that reference the set are touched.
  Status UpdateAddressSet(std::string_view id, const std::vector<IpPrefix>& prefixes);
  Status ApplyAddressSetDelta(std::string_view id, const std::vector<IpPrefix>& added,
                              const std::vector<IpPrefix>& removed);

  // Approximate bytes of the control-side state kept for incremental updates
  // (not shared with the data path; Ruleset::memory_bytes counts that).
  size_t state_bytes() const;

  // The current Ruleset (nullptr before the first successful Compile).
  std::shared_ptr<const Ruleset> ruleset() const { return current_; }

  struct State;  // src/ruleset_compiler.cc

 private:
  void Publish();
  Status CompileAt(const RulesetSpec& spec, uint32_t chunk_shift, bool* overflow);
  CompileOptions options_;
  std::unique_ptr<State> state_;
  std::shared_ptr<const Ruleset> current_;
};

}  // namespace dfw::dataplane
