// What a host holds after applying the controller's messages in order: its
// vNICs' rulesets and its address sets. A delta must start at the revision
// the host holds (checked), and may only change sets the host holds.
#pragma once

#include <map>
#include <set>
#include <string>

#include "dfw/proto/state_digest.h"
#include "dfw/v1/host.pb.h"
#include "gtest/gtest.h"

namespace dfw::controller::testing {

struct HostView {
  std::map<std::string, std::string> rulesets;  // vNIC -> rules (serialized, revision cleared)
  std::map<std::string, std::set<std::string>> sets;
  uint64_t revision = 0;

  static std::string Rules(dfw::v1::VNicRuleset r) {
    r.set_revision(0);
    return r.SerializeAsString();
  }
  // What a host agent reports in its Hello (the dataplane's HeldDigests).
  dfw::v1::HeldDigests Digests() const {
    dfw::v1::HeldDigests out;
    for (const auto& [vnic, bytes] : rulesets) {
      dfw::v1::VNicRuleset r;
      EXPECT_TRUE(r.ParseFromString(bytes));
      auto* h = out.add_rulesets();
      h->set_id(vnic);
      h->set_digest(proto::RulesetDigest(r));
    }
    for (const auto& [id, prefixes] : sets) {
      auto* h = out.add_address_sets();
      h->set_id(id);
      h->set_digest(proto::AddressSetDigest(id, {prefixes.begin(), prefixes.end()}));
    }
    return out;
  }
  void Apply(const dfw::v1::ControllerToHost& m) {
    if (m.has_full()) {
      rulesets.clear();
      sets.clear();
      for (const auto& r : m.full().rulesets()) rulesets[r.vnic_id()] = Rules(r);
      for (const auto& s : m.full().address_sets())
        sets[s.id()] = {s.prefixes().begin(), s.prefixes().end()};
      revision = m.full().revision();
      return;
    }
    const auto& d = m.delta();
    ASSERT_EQ(d.from_revision(), revision);
    for (const auto& r : d.rulesets_set()) rulesets[r.vnic_id()] = Rules(r);
    for (const auto& v : d.rulesets_removed()) rulesets.erase(v);
    for (const auto& s : d.address_sets_set())
      sets[s.id()] = {s.prefixes().begin(), s.prefixes().end()};
    for (const auto& x : d.address_set_deltas()) {
      ASSERT_TRUE(sets.count(x.id())) << "delta for a set the host does not hold: " << x.id();
      for (const auto& a : x.added())
        EXPECT_TRUE(sets[x.id()].insert(a).second) << x.id() << " +" << a;
      for (const auto& a : x.removed()) EXPECT_EQ(sets[x.id()].erase(a), 1u) << x.id() << " -" << a;
    }
    for (const auto& id : d.address_sets_removed()) sets.erase(id);
    revision = d.to_revision();
  }
};

}  // namespace dfw::controller::testing
