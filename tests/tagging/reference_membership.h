// A deliberately naive membership model for tests: every group re-evaluated
// from its definition over every VM, straight from the formulas in
// membership_index.h, with no indexes and no incremental state.
#pragma once

#include <map>
#include <string>

#include "dfw/tagging/membership_index.h"
#include "dfw/tagging/model.h"

namespace dfw::tagging::testing {

struct ReferenceModel {
  std::map<std::string, VmSpec> vms;
  std::map<std::string, GroupSpec> groups;

  // Every group's effective members. Groups must form a DAG.
  std::map<std::string, GroupMembers> Evaluate() const;
  // Would adding/replacing `g` close a cycle (given the other groups)?
  bool WouldCycle(const GroupSpec& g) const;
};

// The delta between two evaluations, in MembershipIndex's form (without the
// created/deleted flags, which the caller sets).
MembershipDelta Diff(const std::map<std::string, GroupMembers>& before,
                     const std::map<std::string, GroupMembers>& after);

}  // namespace dfw::tagging::testing
