// LinearClassifier: the reference model. Evaluates RulesetSpec rule by rule,
// straight from the spec, with no precomputation beyond an id -> set map. It is
// what the fast classifier is tested against; it is also `dfw-classify
// --linear`. Not for the data path.
#pragma once

#include <string>
#include <unordered_map>
#include <vector>

#include "dfw/dataplane/rule_model.h"

namespace dfw::dataplane {

class LinearClassifier {
 public:
  static constexpr uint32_t kNoMatch = 0xffffffffu;
  explicit LinearClassifier(RulesetSpec spec);
  // Index of the first matching rule, or kNoMatch.
  uint32_t Classify(const FlowKey& key) const;
  void SetAddressSet(const std::string& id, std::vector<IpPrefix> prefixes);
  const RulesetSpec& spec() const { return spec_; }

 private:
  // Set ids resolved to indices into spec_.address_sets (unknown ids dropped).
  struct Resolved {
    std::vector<size_t> src, dst;
  };
  bool EndpointMatches(const EndpointSpec& ep, const std::vector<size_t>& sets, Family f,
                       const Ip128& a) const;
  void Resolve();
  RulesetSpec spec_;
  std::unordered_map<std::string, size_t> set_index_;
  std::vector<Resolved> resolved_;
};

}  // namespace dfw::dataplane
