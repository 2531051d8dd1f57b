// The classifier's view of a compiled ruleset (dfw.v1.VNicRuleset and the
// address sets it names, from the controller) as the dataplane enforces it:
// RulesetSpec for the classifier and RuleMeta (action, audit, stateful,
// revalidate, log) per rule, in the ruleset's order.
//
// Shared by dfw-dataplane (which compiles the result) and the controller's
// trace (which evaluates it with LinearClassifier, the classifier's reference
// model), so both read a ruleset with one set of rules: a rule number named
// twice, an address set not sent, 'any' with sets, a negated 'any', a service
// out of range or an unspecified action is refused, with an error naming the
// vNIC, the rule's index and the field.
//
// Thread safety: pure functions of their arguments.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "dfw/dataplane/rule_model.h"
#include "dfw/dataplane/ruleset_compiler.h"
#include "dfw/dataplane/vnic_table.h"
#include "dfw/v1/compiled.pb.h"

namespace dfw::dataplane {

// Errors name the ruleset's vnic_id. This form finds the address sets in
// `sets` (by id).
Status RulesetSpecFromProto(const v1::VNicRuleset& rs,
                            const std::map<std::string, v1::AddressSet>& sets, RulesetSpec* spec,
                            std::vector<RuleMeta>* meta);
// Errors name `vnic_id`; `sets` returns nullptr for a set that was not sent.
Status RulesetSpecFromProto(const v1::VNicRuleset& rs, const std::string& vnic_id,
                            const std::function<const v1::AddressSet*(const std::string&)>& sets,
                            RulesetSpec* spec, std::vector<RuleMeta>* meta);

// An address set's prefixes, each checked (no host bits set); the error
// names the set and the prefix's index.
Status ParsePrefixes(const v1::AddressSet& set, std::vector<IpPrefix>* out);

}  // namespace dfw::dataplane
