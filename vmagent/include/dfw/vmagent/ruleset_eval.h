// A first-match reference evaluator of one vNIC's compiled rules, with the
// semantics nft_ruleset.h renders (and the dataplane's classifier has): the
// agent asks it which conntrack entries a revalidating change now denies,
// and tests use it as the model the kernel's verdicts are checked against.
//
// Thread safety: pure function of its arguments.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "dfw/v1/compiled.pb.h"
#include "dfw/vmagent/addr_ranges.h"

namespace dfw::vmagent {

struct FiveTuple {
  Family family = Family::kV4;
  Addr src, dst;
  uint8_t proto = 0;
  uint16_t sport = 0;  // ICMP/ICMPv6: the type
  uint16_t dport = 0;  // ICMP/ICMPv6: the code
  bool in = true;      // true: to the VM (input hook); false: from the VM
};

struct EvalResult {
  uint32_t rule_num = 0;  // 0 = the default rule
  dfw::v1::Action action = dfw::v1::ACTION_DROP;
  bool audit = false;    // the rule is in AUDIT mode (a deny that passes)
  bool stateful = true;  // the default rule's allow is stateful
  // What the packet meets in the kernel: ALLOW also for an audited deny.
  bool passes() const { return action == dfw::v1::ACTION_ALLOW || audit; }
};

// Sets: address set id -> its ranges (nullptr: unknown, matches nothing).
using SetLookup = std::function<const AddrRanges*(const std::string&)>;

EvalResult Evaluate(const dfw::v1::VNicRuleset& rs, const SetLookup& sets, const FiveTuple& t,
                    bool audit_all = false);

}  // namespace dfw::vmagent
