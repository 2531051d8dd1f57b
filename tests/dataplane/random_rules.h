// Random rule sets and packets for testing the classifier against the linear
// reference: overlapping prefixes (IPv4 and IPv6, drawn around a few anchors so
// they nest), shared address sets, negation, wildcards, port ranges, mixed
// protocols including ICMP, and directions.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "dfw/dataplane/rule_model.h"

namespace dfw::dataplane::testing {

struct RandomRulesOptions {
  uint32_t rules = 500;
  uint32_t sets = 40;
  bool ipv6 = true;  // mix IPv6 prefixes into the sets (else IPv4 only)
  double p_any = 0.3;
  double p_negate = 0.1;
  uint32_t max_services = 3;
};

class RandomRules {
 public:
  RandomRules(uint64_t seed, RandomRulesOptions opt);
  RulesetSpec MakeSpec();
  // A prefix list for an address set (used by the update tests too).
  std::vector<IpPrefix> MakePrefixes(uint32_t n);
  IpPrefix MakePrefix(Family f);
  // Half the packets fall inside a random rule, half are random around the anchors.
  FlowKey MakeKey(const RulesetSpec& spec);
  std::mt19937_64& rng() { return rng_; }

 private:
  Ip128 Around(Family f);
  Ip128 PointIn(const IpPrefix& p);
  uint16_t Port();
  uint8_t Proto();
  PortRange Range();
  std::mt19937_64 rng_;
  RandomRulesOptions opt_;
  std::vector<Ip128> anchors4_, anchors6_;
};

}  // namespace dfw::dataplane::testing
