// The impact preview of a group change (ModelService::PreviewGroup, REST
// PUT /api/v1/groups/{id}?dry_run=true, `dfwctl group apply --dry-run`)
// against the change itself. On random fleets, each previewed group change
// is then made, and what the preview said must be what the hosts' full
// states and the group's members show before and after it: the VMs it gains
// and loses, each vNIC whose rules change (rules added and removed, counts),
// each address set whose content changes on a host that holds it, with that
// host. The preview itself changes nothing (revision, members, hosts' feeds).
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "dfw/controller/model_service.h"
#include "host_view.h"
#include "random_fleet.h"
#include "test_util.h"

namespace dfw::controller::testing {
namespace {

unsigned Seed() { return std::getenv("DFW_SEED") ? std::atoi(std::getenv("DFW_SEED")) : 17; }

struct Fleet {
  std::map<std::string, std::set<std::string>> rules;  // vNIC -> "policy/rule"
  std::map<std::string, std::string> host_of;
  std::map<std::string, std::set<std::string>> sets;  // host + "|" + set id -> prefixes
};

Fleet FleetOf(const ModelService& m) {
  Fleet out;
  for (int h = 0; h < RandomFleet::kHosts; ++h) {
    const std::string host = "h" + std::to_string(h);
    HostView v = RandomFleet::FullView(m, host);
    for (const auto& [vnic, bytes] : v.rulesets) {
      dfw::v1::VNicRuleset r;
      EXPECT_TRUE(r.ParseFromString(bytes));
      auto& keys = out.rules[vnic];
      for (const auto& rule : r.rules()) keys.insert(rule.policy_id() + "/" + rule.rule_id());
      out.host_of[vnic] = host;
    }
    for (const auto& [id, prefixes] : v.sets) out.sets[host + "|" + id] = prefixes;
  }
  return out;
}

std::set<std::string> Members(const ModelService& m, const std::string& group) {
  auto g = m.GroupMembers(group);
  if (!g.ok()) return {};
  return {g->vm_ids().begin(), g->vm_ids().end()};
}

// What the preview says of vNICs and address sets against the hosts' full
// states before and after the change (counted into *vnics, *sets).
void CheckImpact(const Fleet& before, const Fleet& after, const dfw::v1::GroupImpact& impact,
                 const std::string& at, int* vnics_seen, int* sets_seen) {
  // vNICs whose rules change, as the hosts' states show it.
  std::map<std::string, const dfw::v1::GroupImpact::VNic*> said;
  for (const auto& v : impact.vnics()) said[v.vnic_id()] = &v;
  std::set<std::string> vnics;
  for (const auto& [v, r] : before.rules) vnics.insert(v);
  for (const auto& [v, r] : after.rules) vnics.insert(v);
  for (const auto& v : vnics) {
    static const std::set<std::string> kNone;
    auto b = before.rules.find(v), a = after.rules.find(v);
    const auto& rb = b == before.rules.end() ? kNone : b->second;
    const auto& ra = a == after.rules.end() ? kNone : a->second;
    std::vector<std::string> added, removed;
    std::set_difference(ra.begin(), ra.end(), rb.begin(), rb.end(), std::back_inserter(added));
    std::set_difference(rb.begin(), rb.end(), ra.begin(), ra.end(), std::back_inserter(removed));
    auto s = said.find(v);
    if (added.empty() && removed.empty()) {
      EXPECT_EQ(s, said.end()) << v << " listed without a change" << at;
      continue;
    }
    ++*vnics_seen;
    ASSERT_NE(s, said.end()) << v << " changes but is not listed" << at;
    EXPECT_EQ(
        std::vector<std::string>(s->second->rules_added().begin(), s->second->rules_added().end()),
        added)
        << v << at;
    EXPECT_EQ(std::vector<std::string>(s->second->rules_removed().begin(),
                                       s->second->rules_removed().end()),
              removed)
        << v << at;
    EXPECT_EQ(s->second->rules_before(), rb.size()) << v << at;
    EXPECT_EQ(s->second->rules_after(), ra.size()) << v << at;
    EXPECT_EQ(s->second->host_id(), after.host_of.at(v)) << v << at;
  }

  // Address sets held before and after whose content changes: listed,
  // with the host and the counts.
  std::map<std::string, const dfw::v1::GroupImpact::AddressSet*> set_said;
  for (const auto& s : impact.address_sets()) set_said["g:" + s.group_id()] = &s;
  for (const auto& [key, content] : before.sets) {
    auto a = after.sets.find(key);
    if (a == after.sets.end() || a->second == content) continue;
    const std::string host = key.substr(0, key.find('|'));
    const std::string set = key.substr(key.find('|') + 1);
    size_t added = 0, removed = 0;
    for (const auto& p : a->second) added += !content.count(p);
    for (const auto& p : content) removed += !a->second.count(p);
    ++*sets_seen;
    auto s = set_said.find(set);
    ASSERT_NE(s, set_said.end()) << set << " changes on " << host << " unlisted" << at;
    EXPECT_EQ(s->second->addresses_added(), added) << set << at;
    EXPECT_EQ(s->second->addresses_removed(), removed) << set << at;
    const auto& hs = s->second->host_ids();
    EXPECT_NE(std::find(hs.begin(), hs.end(), host), hs.end()) << set << " " << host << at;
  }
}

TEST(GroupPreview, SaysWhatTheChangeThenDoesOnRandomFleets) {
  int vnics_seen = 0, sets_seen = 0;
  for (unsigned seed = Seed(); seed < Seed() + 3; ++seed) {
    RandomFleet f(seed);
    f.Open();
    f.Populate();
    f.Drain();
    std::mt19937 rng(seed);
    for (int step = 0; step < 60; ++step) {
      // A group replaced (its selector redrawn, sometimes with a static
      // member), or a new one made.
      const bool fresh = rng() % 6 == 0;
      const int k = fresh ? 100 + step : static_cast<int>(rng() % RandomFleet::kGroups);
      dfw::v1::SecurityGroup g = f.GroupProto(k);
      if (rng() % 3 == 0) g.mutable_static_members()->add_vm_ids("vm" + std::to_string(rng() % 60));
      const std::string id = g.id();

      const Fleet before = FleetOf(*f.m);
      const std::set<std::string> members_before = Members(*f.m, id);
      const uint64_t rev = f.m->revision();
      dfw::v1::PreviewGroupRequest pr;
      *pr.mutable_group() = g;
      auto impact = f.m->PreviewGroup(pr);
      ASSERT_TRUE(impact.ok()) << impact.status();
      // Nothing changed by the preview.
      EXPECT_EQ(f.m->revision(), rev);
      EXPECT_EQ(Members(*f.m, id), members_before);
      for (int h = 0; h < RandomFleet::kHosts; ++h) {
        EXPECT_FALSE(f.m->NextMessage(f.feeds[h].get()).has_value()) << "host " << h;
      }

      dfw::v1::PutGroupRequest put;
      *put.mutable_group() = g;
      ASSERT_TRUE(f.m->PutGroup(put).ok());
      f.Drain();
      const Fleet after = FleetOf(*f.m);
      const std::set<std::string> members_after = Members(*f.m, id);
      const std::string at = " seed " + std::to_string(seed) + " step " + std::to_string(step);

      EXPECT_EQ(impact->creates(), fresh) << at;
      std::set<std::string> joined, left;
      for (const auto& v : members_after) {
        if (!members_before.count(v)) joined.insert(v);
      }
      for (const auto& v : members_before) {
        if (!members_after.count(v)) left.insert(v);
      }
      EXPECT_EQ(std::set<std::string>(impact->vms_added().begin(), impact->vms_added().end()),
                joined)
          << at;
      EXPECT_EQ(std::set<std::string>(impact->vms_removed().begin(), impact->vms_removed().end()),
                left)
          << at;

      CheckImpact(before, after, *impact, at, &vnics_seen, &sets_seen);
      if (::testing::Test::HasFailure()) return;
    }
  }
  // The fleets exercised both parts.
  EXPECT_GT(vnics_seen, 20);
  EXPECT_GT(sets_seen, 20);
}

// A Tag request previewed (PreviewTag) against the request then made: the
// groups whose members change, the vNICs whose rules change, the address
// sets each holding host sees change.
TEST(TagPreview, SaysWhatTheTagChangeThenDoesOnRandomFleets) {
  int vnics_seen = 0, sets_seen = 0;
  for (unsigned seed = Seed(); seed < Seed() + 3; ++seed) {
    RandomFleet f(seed);
    f.Open();
    f.Populate();
    f.Drain();
    std::mt19937 rng(seed * 31);
    dfw::v1::ListRequest all;
    all.set_page_size(1000);
    for (int step = 0; step < 60; ++step) {
      dfw::v1::TagRequest t;
      std::set<int> vms;
      for (int n = 1 + static_cast<int>(rng() % 3); n > 0; --n) vms.insert(rng() % 60);
      for (int i : vms) t.add_vm_ids("vm" + std::to_string(i));
      auto* set = t.add_set();
      set->set_scope(rng() % 2 ? "app" : "tier");
      set->set_value(std::to_string(rng() % 4));
      const Fleet before = FleetOf(*f.m);
      std::map<std::string, std::set<std::string>> members_before;
      auto groups = f.m->ListGroups(all);
      ASSERT_TRUE(groups.ok()) << groups.status();
      for (const auto& g : groups->groups()) members_before[g.id()] = Members(*f.m, g.id());
      const uint64_t rev = f.m->revision();
      auto impact = f.m->PreviewTag(t);
      ASSERT_TRUE(impact.ok()) << impact.status();
      EXPECT_EQ(f.m->revision(), rev);
      for (int h = 0; h < RandomFleet::kHosts; ++h) {
        EXPECT_FALSE(f.m->NextMessage(f.feeds[h].get()).has_value()) << "host " << h;
      }
      for (const auto& [g, m] : members_before) EXPECT_EQ(Members(*f.m, g), m) << g;
      ASSERT_TRUE(f.m->Tag(t).ok());
      f.Drain();
      const std::string at = " seed " + std::to_string(seed) + " step " + std::to_string(step);
      std::set<std::string> changed;
      for (const auto& [g, m] : members_before) {
        if (Members(*f.m, g) != m) changed.insert(g);
      }
      EXPECT_EQ(
          std::set<std::string>(impact->groups_changed().begin(), impact->groups_changed().end()),
          changed)
          << at;
      EXPECT_TRUE(impact->group_id().empty());
      CheckImpact(before, FleetOf(*f.m), *impact, at, &vnics_seen, &sets_seen);
      if (::testing::Test::HasFailure()) return;
    }
  }
  EXPECT_GT(vnics_seen, 10);
  EXPECT_GT(sets_seen, 10);
}

TEST(GroupPreview, IsRefusedAsThePutWouldBe) {
  RandomFleet f(3);
  f.Open();
  f.Populate();
  dfw::v1::PreviewGroupRequest pr;
  *pr.mutable_group() = f.GroupProto(1);
  pr.mutable_group()->mutable_static_members()->add_group_ids("no-such-group");
  auto r = f.m->PreviewGroup(pr);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("group.static_members.group_ids[0]"), std::string::npos)
      << r.status();
  *pr.mutable_group() = f.GroupProto(1);
  pr.set_create_only(true);
  EXPECT_EQ(f.m->PreviewGroup(pr).status().code(), absl::StatusCode::kAlreadyExists);
  pr.set_create_only(false);
  pr.set_expected_revision(1);
  EXPECT_EQ(f.m->PreviewGroup(pr).status().code(), absl::StatusCode::kFailedPrecondition);
  pr.set_expected_revision(0);
  pr.mutable_group()->set_id("bad/id");
  EXPECT_EQ(f.m->PreviewGroup(pr).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace dfw::controller::testing
