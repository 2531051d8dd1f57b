// The reference model: rule by rule, straight from the spec.
#include "dfw/dataplane/linear_classifier.h"

namespace dfw::dataplane {
namespace {

bool InRanges(const std::vector<PortRange>& rs, uint16_t v) {
  if (rs.empty()) return true;
  for (const PortRange& r : rs) {
    if (r.lo <= v && v <= r.hi) return true;
  }
  return false;
}

bool ServiceMatches(const ServiceSpec& s, const FlowKey& k) {
  if (s.proto && *s.proto != k.proto) return false;
  return InRanges(s.sports, k.sport) && InRanges(s.dports, k.dport);
}

}  // namespace

LinearClassifier::LinearClassifier(RulesetSpec spec) : spec_(std::move(spec)) {
  for (size_t i = 0; i < spec_.address_sets.size(); ++i) set_index_[spec_.address_sets[i].id] = i;
  Resolve();
}

void LinearClassifier::Resolve() {
  resolved_.clear();
  auto resolve = [&](const EndpointSpec& ep) {
    std::vector<size_t> out;
    for (const std::string& id : ep.address_sets) {
      auto it = set_index_.find(id);
      if (it != set_index_.end()) out.push_back(it->second);
    }
    return out;
  };
  for (const RuleSpec& r : spec_.rules)
    resolved_.push_back(Resolved{resolve(r.src), resolve(r.dst)});
}

void LinearClassifier::SetAddressSet(const std::string& id, std::vector<IpPrefix> prefixes) {
  auto it = set_index_.find(id);
  if (it == set_index_.end()) {
    set_index_[id] = spec_.address_sets.size();
    spec_.address_sets.push_back(AddressSetSpec{id, std::move(prefixes)});
    Resolve();
  } else {
    spec_.address_sets[it->second].prefixes = std::move(prefixes);
  }
}

bool LinearClassifier::EndpointMatches(const EndpointSpec& ep, const std::vector<size_t>& sets,
                                       Family f, const Ip128& a) const {
  if (ep.any) return !ep.negate;
  bool in = false;
  for (size_t set : sets) {
    for (const IpPrefix& p : spec_.address_sets[set].prefixes) {
      if (p.Contains(f, a)) {
        in = true;
        break;
      }
    }
    if (in) break;
  }
  return in != ep.negate;
}

uint32_t LinearClassifier::Classify(const FlowKey& k) const {
  for (size_t i = 0; i < spec_.rules.size(); ++i) {
    const RuleSpec& r = spec_.rules[i];
    if (r.direction != RuleDirection::kBoth &&
        static_cast<uint8_t>(r.direction) != static_cast<uint8_t>(k.dir)) {
      continue;
    }
    if (!EndpointMatches(r.src, resolved_[i].src, k.family, k.src) ||
        !EndpointMatches(r.dst, resolved_[i].dst, k.family, k.dst)) {
      continue;
    }
    bool svc = r.services.empty();
    for (const ServiceSpec& s : r.services) {
      if (ServiceMatches(s, k)) {
        svc = true;
        break;
      }
    }
    if (svc) return static_cast<uint32_t>(i);
  }
  return kNoMatch;
}

}  // namespace dfw::dataplane
