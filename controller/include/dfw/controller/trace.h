// Trace: which rule of which policy decides a new connection at one vNIC,
// answered from the policy as the controller compiled it.
//
// What. TraceStageOf evaluates one vNIC's compiled ruleset (the very
// VNicRuleset and address sets a host is sent) for the first packet of a
// connection and fills a TraceStage: the first matching rule (number,
// policy, rule id, action, audit mode) or the default rule, whether the
// packet passes, and a line for people. An audited deny passes, as in the
// dataplane. ModelService::Trace runs it for the sender's egress and the
// receiver's ingress and adds who enforces each end and at which revision.
//
// How. The ruleset is read by the dataplane's own reader (rule_proto.h:
// the same refusals, the same defaults) and evaluated by its reference
// classifier (LinearClassifier, the model the fast classifier is tested
// against), so a trace cannot disagree with the dataplane about what a
// rule means. The guest agent's nftables rules are checked against the
// same semantics (vmagent/ruleset_eval.h).
//
// Thread safety: pure functions of their arguments.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "dfw/v1/compiled.pb.h"
#include "dfw/v1/controller.pb.h"

namespace dfw::controller {

// The first packet of a connection as one vNIC sees it.
struct TraceFlow {
  std::string src, dst;  // addresses, one family
  uint8_t protocol = 6;
  uint16_t sport = 49152, dport = 0;  // ICMP: type and code
  bool egress = true;                 // leaving the vNIC's VM (else entering it)
};

// The flow a TraceRequest asks about between two addresses (its protocol,
// ports or ICMP type and code, with their defaults); errors name the field.
absl::StatusOr<TraceFlow> TraceFlowOf(const dfw::v1::TraceRequest& req, const std::string& src,
                                      const std::string& dst);

// Fills `out`'s decision fields (rule_num, policy_id, rule_id, default_rule,
// action, audit, passes, explanation) for `flow` at the vNIC whose ruleset
// is `rs`; `sets` finds the address sets it names (nullptr: not known).
// An error (a ruleset the dataplane would refuse, a bad address) names it.
absl::Status TraceStageOf(const dfw::v1::VNicRuleset& rs,
                          const std::function<const dfw::v1::AddressSet*(const std::string&)>& sets,
                          const TraceFlow& flow, dfw::v1::TraceStage* out);

}  // namespace dfw::controller
