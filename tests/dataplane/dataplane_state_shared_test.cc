// DataplaneState's shared rulesets and incremental address-set updates
// (issue 14): vNICs with the same rules share one compiled Ruleset; an
// address-set change reaches each shared ruleset once, in place; and what the
// workers see after any sequence of full states and deltas classifies every
// packet as the linear reference does on the same rules and sets. No DPDK
// here: it runs in test_dataplane_dpdk with the other DataplaneState tests.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <string>

#include "dataplane_state.h"
#include "dfw/dataplane/linear_classifier.h"
#include "dfw/proto/state_digest.h"
#include "random_rules.h"

namespace dfw::dataplane {
namespace {

namespace fs = std::filesystem;
using testing::RandomRules;
using testing::RandomRulesOptions;

constexpr int kVnics = 12;

std::string VnicId(int i) { return "vnic-" + std::to_string(i); }

v1::DataplaneVNic Vnic(int i) {
  v1::DataplaneVNic v;
  v.set_id(VnicId(i));
  v.set_local_id(static_cast<uint32_t>(i + 1));
  char mac[18];
  std::snprintf(mac, sizeof(mac), "52:54:00:00:01:%02x", i + 1);
  v.set_mac(mac);
  v.add_bound_ips("198.18.7." + std::to_string(i + 1));
  return v;
}

// A random ruleset over address sets s0..s{sets-1}: sets, any, negation,
// services with port ranges and ICMP, every action and direction.
v1::VNicRuleset RandomRuleset(std::mt19937_64& rng, int rules, int sets, uint32_t first_num) {
  v1::VNicRuleset rs;
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<uint64_t>(n)); };
  for (int i = 0; i < rules; ++i) {
    auto* r = rs.add_rules();
    r->set_rule_num(first_num + static_cast<uint32_t>(i));
    r->set_policy_id("p" + std::to_string(first_num));
    r->set_rule_id("r" + std::to_string(i));
    for (auto* e : {r->mutable_sources(), r->mutable_destinations()}) {
      if (pick(4) == 0) {
        e->set_any(true);
        continue;
      }
      for (int k = 0, n = 1 + pick(2); k < n; ++k)
        e->add_address_set_ids("s" + std::to_string(pick(sets)));
      e->set_negate(pick(8) == 0);
    }
    for (int k = 0, n = pick(3); k < n; ++k) {
      auto* s = r->add_services();
      switch (pick(4)) {
        case 0:
          s->set_protocol(1);
          if (pick(2)) s->set_icmp_type(static_cast<uint32_t>(pick(3) * 8));
          break;
        case 1:
          s->set_protocol(17);
          break;
        default: {
          s->set_protocol(6);
          auto* p = s->add_destination_ports();
          p->set_first(static_cast<uint32_t>(pick(4) * 1000));
          p->set_last(p->first() + static_cast<uint32_t>(pick(2000)));
        }
      }
    }
    r->set_direction(static_cast<v1::Direction>(pick(3)));  // unspecified (both), in, out
    r->set_action(pick(3) == 0   ? v1::ACTION_DROP
                  : pick(4) == 0 ? v1::ACTION_REJECT
                                 : v1::ACTION_ALLOW);
    r->set_stateful(pick(2) == 0);
  }
  rs.mutable_default_rule()->set_action(pick(2) ? v1::ACTION_DROP : v1::ACTION_ALLOW);
  return rs;
}

// The reference: the rulesets and sets the host should enforce, by id.
struct Model {
  uint64_t revision = 0;
  std::map<std::string, v1::VNicRuleset> rulesets;
  std::map<std::string, v1::AddressSet> sets;
};

// What the state reports holding (HeldDigests, for the host agent's Hello)
// is the model's rulesets and sets, digested one by one, at its revision.
void ExpectHeld(const DataplaneState& s, const Model& m) {
  uint64_t revision = 0;
  v1::HeldDigests held = s.HeldDigests(&revision);
  EXPECT_EQ(revision, m.revision);
  std::map<std::string, std::string> rulesets, sets;
  for (const auto& h : held.rulesets()) EXPECT_TRUE(rulesets.emplace(h.id(), h.digest()).second);
  for (const auto& h : held.address_sets()) EXPECT_TRUE(sets.emplace(h.id(), h.digest()).second);
  std::map<std::string, std::string> want_rulesets, want_sets;
  for (const auto& [id, rs] : m.rulesets) want_rulesets[id] = proto::RulesetDigest(rs);
  for (const auto& [id, set] : m.sets) want_sets[id] = proto::AddressSetDigest(set);
  EXPECT_EQ(rulesets, want_rulesets);
  EXPECT_EQ(sets, want_sets);
}

class SharedRulesetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("dfw-shared-test-" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    path_ = (dir_ / "state.pb").string();
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Every vNIC with a ruleset classifies `keys` random packets as the linear
  // reference does on the model's rules and sets; vNICs with the same rules
  // share one Ruleset; the policy's revision is not above the model's.
  void ExpectEnforces(const VnicTable& table, const Model& m, RandomRules* gen, int keys) {
    std::map<std::string, const Ruleset*> by_content;
    for (int i = 0; i < kVnics; ++i) {
      const VnicState* vs = table.Current(static_cast<uint16_t>(i + 1));
      ASSERT_NE(vs, nullptr) << VnicId(i);
      auto it = m.rulesets.find(VnicId(i));
      if (it == m.rulesets.end()) {
        EXPECT_EQ(vs->policy, nullptr) << VnicId(i) << " has no ruleset: it must drop everything";
        continue;
      }
      ASSERT_NE(vs->policy, nullptr) << VnicId(i);
      EXPECT_LE(vs->policy->revision, m.revision);
      RulesetSpec spec;
      std::vector<RuleMeta> meta;
      ASSERT_TRUE(RulesetSpecFromProto(it->second, m.sets, &spec, &meta).ok());
      ASSERT_EQ(vs->policy->rules.size(), meta.size());
      for (size_t r = 0; r < meta.size(); ++r) {
        ASSERT_EQ(vs->policy->rules[r].rule_num, meta[r].rule_num);
      }
      EXPECT_EQ(vs->policy->default_action, spec.default_action);
      LinearClassifier ref(spec);
      const Ruleset& rs = *vs->policy->ruleset;
      for (int k = 0; k < keys; ++k) {
        const FlowKey key = gen->MakeKey(spec);
        ASSERT_EQ(rs.ClassifyOne(key), ref.Classify(key)) << VnicId(i) << " packet " << k;
      }
      v1::VNicRuleset content = it->second;
      content.clear_vnic_id();
      content.clear_revision();
      auto [c, fresh] = by_content.emplace(content.SerializeAsString(), &rs);
      if (!fresh) {
        EXPECT_EQ(c->second, &rs) << VnicId(i) << " does not share its ruleset";
      }
    }
  }

  fs::path dir_;
  std::string path_;
};

TEST_F(SharedRulesetTest, SameRulesCompileOnceAndAnAddressSetChangeReachesEachOnce) {
  VnicTable table;
  DataplaneState s(&table, path_);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(s.SetVnic(Vnic(i)).ok());
  std::mt19937_64 rng(7);
  // a's first rule: from s0 to anywhere.
  v1::VNicRuleset a, b = RandomRuleset(rng, 30, 4, 200);
  {
    auto* r = a.add_rules();
    r->set_rule_num(199);
    r->mutable_sources()->add_address_set_ids("s0");
    r->mutable_destinations()->set_any(true);
    r->set_action(v1::ACTION_ALLOW);
    v1::VNicRuleset more = RandomRuleset(rng, 40, 4, 100);
    for (const auto& m : more.rules()) *a.add_rules() = m;
  }
  const FlowKey from_new_member =
      FlowKey::V4(0xc6126301 /* 198.18.99.1 */, 0x01020304, 1, 1, 17, Direction::kOut);
  v1::HostDesiredState full;
  full.set_revision(5);
  for (int k = 0; k < 4; ++k) {
    auto* set = full.add_address_sets();
    set->set_id("s" + std::to_string(k));
    set->add_prefixes("198.18." + std::to_string(k) + ".0/24");
  }
  for (int i = 0; i < 3; ++i) {
    v1::VNicRuleset rs = i < 2 ? a : b;
    rs.set_vnic_id(VnicId(i));
    rs.set_revision(static_cast<uint64_t>(3 + i));  // not part of the content
    *full.add_rulesets() = rs;
  }
  Status st = s.ApplyFull(full);
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(s.shared_rulesets(), 2u);
  const VnicPolicy* p0 = table.Current(1)->policy.get();
  const VnicPolicy* p1 = table.Current(2)->policy.get();
  const VnicPolicy* p2 = table.Current(3)->policy.get();
  EXPECT_EQ(p0, p1);  // one policy, one Ruleset for both
  EXPECT_NE(p0, p2);
  const uint32_t gen_a = p0->generation, gen_b = p2->generation;
  EXPECT_NE(p0->ruleset->ClassifyOne(from_new_member), 0u);

  // A /32 joins s0: the shared ruleset is updated in place (a new
  // Ruleset, a new generation), published to both its vNICs.
  v1::HostDelta d;
  d.set_from_revision(5);
  d.set_to_revision(6);
  auto* sd = d.add_address_set_deltas();
  sd->set_id("s0");
  sd->add_added("198.18.99.1/32");
  st = s.ApplyDelta(d);
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(s.shared_rulesets(), 2u);
  EXPECT_EQ(table.Current(1)->policy.get(), table.Current(2)->policy.get());
  EXPECT_NE(table.Current(1)->policy->generation, gen_a);
  EXPECT_EQ(table.Current(1)->policy->revision, 6u);
  EXPECT_EQ(table.Current(1)->policy->ruleset->ClassifyOne(from_new_member), 0u)
      << "the new member does not meet rule 199";
  const bool b_names_s0 = [&] {
    for (const auto& r : b.rules())
      for (const auto* e : {&r.sources(), &r.destinations()})
        for (const auto& id : e->address_set_ids())
          if (id == "s0") return true;
    return false;
  }();
  if (!b_names_s0) {
    // A ruleset that does not name s0 is left alone: same policy object.
    EXPECT_EQ(table.Current(3)->policy.get(), p2);
    EXPECT_EQ(table.Current(3)->policy->generation, gen_b);
  }

  // The state file holds each distinct ruleset once, with its vNICs, and
  // loads back to the same sharing.
  v1::DataplanePersistedState ps;
  {
    std::ifstream in(path_, std::ios::binary);
    ASSERT_TRUE(ps.ParseFromIstream(&in));
  }
  ASSERT_EQ(ps.shared_rulesets_size(), 2);
  EXPECT_EQ(ps.state().rulesets_size(), 0);
  int vnics = 0;
  for (const auto& pr : ps.shared_rulesets()) {
    EXPECT_TRUE(pr.ruleset().vnic_id().empty());
    ASSERT_EQ(pr.vnic_ids_size(), pr.revisions_size());
    vnics += pr.vnic_ids_size();
    for (int j = 0; j < pr.vnic_ids_size(); ++j) {
      EXPECT_EQ(pr.revisions(j), pr.vnic_ids(j) == VnicId(0)   ? 3u
                                 : pr.vnic_ids(j) == VnicId(1) ? 4u
                                                               : 5u);
    }
  }
  EXPECT_EQ(vnics, 3);
  VnicTable table2;
  DataplaneState again(&table2, path_);
  st = again.Load();
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(again.applied_revision(), 6u);
  EXPECT_EQ(again.shared_rulesets(), 2u);
  EXPECT_EQ(table2.Current(1)->policy.get(), table2.Current(2)->policy.get());
}

TEST_F(SharedRulesetTest, RemovingASetStillNamedIsRefusedAndNothingChanges) {
  VnicTable table;
  DataplaneState s(&table, "");
  ASSERT_TRUE(s.SetVnic(Vnic(0)).ok());
  ASSERT_TRUE(s.SetVnic(Vnic(1)).ok());
  std::mt19937_64 rng(11);
  v1::VNicRuleset rs = RandomRuleset(rng, 10, 1, 1);  // every set it names is s0
  v1::HostDesiredState full;
  full.set_revision(1);
  auto* set = full.add_address_sets();
  set->set_id("s0");
  set->add_prefixes("198.18.0.0/24");
  for (int i = 0; i < 2; ++i) {
    rs.set_vnic_id(VnicId(i));
    *full.add_rulesets() = rs;
  }
  ASSERT_TRUE(s.ApplyFull(full).ok());
  const VnicPolicy* before = table.Current(1)->policy.get();
  // vnic-0 drops its ruleset, s0 goes: vnic-1 still names it.
  v1::HostDelta d;
  d.set_from_revision(1);
  d.set_to_revision(2);
  d.add_rulesets_removed(VnicId(0));
  d.add_address_sets_removed("s0");
  Status st = s.ApplyDelta(d);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.message(),
            "delta.address_sets_removed: 's0' is still named by the rules of vNIC 'vnic-1'");
  EXPECT_EQ(s.applied_revision(), 1u);
  EXPECT_EQ(table.Current(1)->policy.get(), before);
  EXPECT_EQ(table.Current(2)->policy.get(), before);
  // Both go: accepted, both vNICs drop everything.
  d.add_rulesets_removed(VnicId(1));
  st = s.ApplyDelta(d);
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(table.Current(1)->policy, nullptr);
  EXPECT_EQ(table.Current(2)->policy, nullptr);
  EXPECT_EQ(s.shared_rulesets(), 0u);
}

// Random full states and deltas (rulesets drawn from a few templates so
// vNICs share; set replacements, member deltas, removals of unused sets;
// now and then a delta that must be refused) against the reference model.
TEST_F(SharedRulesetTest, RandomDeltasEnforceWhatTheLinearReferenceDoes) {
  for (uint64_t seed : {1u, 2u, 3u}) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    RandomRulesOptions opt;
    opt.ipv6 = seed != 2;
    RandomRules gen(seed, opt);
    auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<uint64_t>(n)); };
    constexpr int kSets = 8;
    std::vector<v1::VNicRuleset> templates;
    for (int t = 0; t < 4; ++t)
      templates.push_back(RandomRuleset(rng, 20 + pick(60), kSets, 1000u * (t + 1)));
    auto random_set = [&](const std::string& id) {
      v1::AddressSet set;
      set.set_id(id);
      for (const IpPrefix& p : gen.MakePrefixes(static_cast<uint32_t>(pick(12))))
        set.add_prefixes(p.ToString());
      return set;
    };
    VnicTable table;
    DataplaneState s(&table, path_);
    for (int i = 0; i < kVnics; ++i) ASSERT_TRUE(s.SetVnic(Vnic(i)).ok());
    Model m;
    m.revision = 1;
    v1::HostDesiredState full;
    full.set_revision(m.revision);
    for (int k = 0; k < kSets; ++k) {
      m.sets["s" + std::to_string(k)] = random_set("s" + std::to_string(k));
      *full.add_address_sets() = m.sets["s" + std::to_string(k)];
    }
    for (int i = 0; i < kVnics; ++i) {
      v1::VNicRuleset rs = templates[static_cast<size_t>(pick(4))];
      rs.set_vnic_id(VnicId(i));
      m.rulesets[VnicId(i)] = rs;
      *full.add_rulesets() = rs;
    }
    Status st = s.ApplyFull(full);
    ASSERT_TRUE(st.ok()) << st.message();
    ASSERT_NO_FATAL_FAILURE(ExpectEnforces(table, m, &gen, 40));

    auto names = [&](const Model& model, const std::string& set_id) {
      for (const auto& [id, rs] : model.rulesets)
        for (const auto& r : rs.rules())
          for (const auto* e : {&r.sources(), &r.destinations()})
            for (const auto& sid : e->address_set_ids())
              if (sid == set_id) return true;
      return false;
    };
    int applied = 0, refused = 0;
    for (int step = 0; step < 60; ++step) {
      SCOPED_TRACE("step " + std::to_string(step));
      v1::HostDelta d;
      d.set_from_revision(m.revision);
      d.set_to_revision(m.revision + 1 + static_cast<uint64_t>(pick(3)));
      Model next = m;
      next.revision = d.to_revision();
      std::set<std::string> ids;  // each set changed once per delta
      for (int n = pick(4); n > 0; --n) {
        const std::string id = "s" + std::to_string(pick(kSets + 2));  // s8, s9: new sets
        if (!ids.insert(id).second) continue;
        switch (pick(4)) {
          case 0: {  // replaced whole
            v1::AddressSet set = random_set(id);
            *d.add_address_sets_set() = set;
            next.sets[id] = set;
            break;
          }
          case 1:
          case 2: {  // members join and leave
            auto it = next.sets.find(id);
            if (it == next.sets.end()) break;
            auto* sd = d.add_address_set_deltas();
            sd->set_id(id);
            std::set<std::string> members(it->second.prefixes().begin(),
                                          it->second.prefixes().end());
            for (const auto& p : it->second.prefixes())
              if (pick(3) == 0) {
                sd->add_removed(p);
                members.erase(p);
              }
            for (const IpPrefix& p : gen.MakePrefixes(static_cast<uint32_t>(pick(4)))) {
              sd->add_added(p.ToString());
              members.insert(p.ToString());
            }
            it->second.clear_prefixes();
            for (const auto& p : members) it->second.add_prefixes(p);
            break;
          }
          default:  // removed: refused while a ruleset names it
            if (!next.sets.count(id)) break;
            d.add_address_sets_removed(id);
            next.sets.erase(id);
        }
      }
      std::set<std::string> set_vnics;
      for (int n = pick(3); n > 0; --n) {
        const int i = pick(kVnics);
        if (!set_vnics.insert(VnicId(i)).second) continue;
        if (pick(5) == 0) {
          d.add_rulesets_removed(VnicId(i));
          next.rulesets.erase(VnicId(i));
          continue;
        }
        v1::VNicRuleset rs = templates[static_cast<size_t>(pick(4))];
        rs.set_vnic_id(VnicId(i));
        rs.set_revision(d.to_revision());
        *d.add_rulesets_set() = rs;
        next.rulesets[VnicId(i)] = rs;
      }
      // Refused: a removed set that a ruleset still names after the delta.
      bool refuse = false;
      for (const auto& id : d.address_sets_removed()) refuse = refuse || names(next, id);
      std::map<int, const VnicState*> before;
      for (int i = 0; i < kVnics; ++i) before[i] = table.Current(static_cast<uint16_t>(i + 1));
      st = s.ApplyDelta(d);
      if (refuse) {
        ASSERT_FALSE(st.ok()) << "a delta removing a set still named was applied";
        // Named by a held ruleset, or by one this delta sets.
        EXPECT_TRUE(st.message().find("is still named by the rules of vNIC") != std::string::npos ||
                    st.message().find("was not sent") != std::string::npos)
            << st.message();
        EXPECT_EQ(s.applied_revision(), m.revision);
        for (int i = 0; i < kVnics; ++i)
          EXPECT_EQ(table.Current(static_cast<uint16_t>(i + 1)), before[i]) << "published anyway";
        ++refused;
        continue;
      }
      ASSERT_TRUE(st.ok()) << st.message();
      ++applied;
      m = next;
      EXPECT_EQ(s.applied_revision(), m.revision);
      ASSERT_NO_FATAL_FAILURE(ExpectEnforces(table, m, &gen, 20));
      ExpectHeld(s, m);
      if (step % 20 == 19) {
        // A full state of the same model: the same verdicts, compiled afresh.
        v1::HostDesiredState again;
        again.set_revision(++m.revision);
        for (const auto& [id, set] : m.sets) *again.add_address_sets() = set;
        for (const auto& [id, rs] : m.rulesets) *again.add_rulesets() = rs;
        st = s.ApplyFull(again);
        ASSERT_TRUE(st.ok()) << st.message();
        ASSERT_NO_FATAL_FAILURE(ExpectEnforces(table, m, &gen, 20));
      }
    }
    // Both paths were walked.
    EXPECT_GE(applied, 30);
    EXPECT_GE(refused, 1);
    std::printf("seed %llu: %d deltas applied, %d refused\n", static_cast<unsigned long long>(seed),
                applied, refused);
    // What was persisted loads back to the same enforcement.
    VnicTable table2;
    DataplaneState loaded(&table2, path_);
    st = loaded.Load();
    ASSERT_TRUE(st.ok()) << st.message();
    EXPECT_EQ(loaded.applied_revision(), m.revision);
    ASSERT_NO_FATAL_FAILURE(ExpectEnforces(table2, m, &gen, 20));
    ExpectHeld(loaded, m);
  }
}

}  // namespace
}  // namespace dfw::dataplane
