// Randomized check of the incremental membership engine against the naive
// reference model: thousands of random VMs, tags, groups, nestings and
// changes; after every change the engine's delta must equal the difference of
// two full re-evaluations, and every group's members must equal the
// reference's. Rejected changes must leave the engine unchanged.
#include <gtest/gtest.h>

#include <random>

#include "dfw/tagging/membership_index.h"
#include "reference_membership.h"

namespace dfw::tagging {
namespace {

using testing::Diff;
using testing::ReferenceModel;

class Generator {
 public:
  explicit Generator(uint64_t seed) : rng_(seed) {}

  size_t Pick(size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng_); }
  bool Chance(double p) { return std::bernoulli_distribution(p)(rng_); }

  Tag RandomTag() {
    static const char* kScopes[] = {"app", "env", "tier", "team", "pci", ""};
    static const char* kValues[] = {"web", "db", "prod", "dev", "a", "b", "c"};
    Tag t{kScopes[Pick(6)], kValues[Pick(7)]};
    if (t.scope.empty() && t.value.empty()) t.value = "x";
    return t;
  }
  std::string RandomName() {
    static const char* kStems[] = {"web", "WEB", "db", "cache", "Db-Primary", "lb"};
    return std::string(kStems[Pick(6)]) + "-" + std::to_string(Pick(12));
  }
  std::string RandomOs() {
    static const char* kOs[] = {
        "Debian GNU/Linux 12", "Ubuntu 22.04", "ubuntu 24.04", "Windows Server 2022", "",
        "FreeBSD 14"};
    return kOs[Pick(6)];
  }
  IpPrefix RandomHostAddress() {
    // A small pool so that vNICs share addresses and prefixes cover them.
    if (Chance(0.2)) {
      auto p = IpPrefix::ParseAddress("2001:db8::" + std::to_string(1 + Pick(20)));
      return *p;
    }
    return IpPrefix::V4(0xC6120000u | static_cast<uint32_t>(1 + Pick(40)));
  }
  IpPrefix RandomPrefix() {
    if (Chance(0.5)) return RandomHostAddress();
    return IpPrefix::V4(0xC6120000u | static_cast<uint32_t>(Pick(64) << 2), 30);
  }
  StringMatch RandomMatch(bool os) {
    StringMatch m;
    m.op = static_cast<StringOp>(Pick(4));
    static const char* kName[] = {"web", "db-", "-1", "cache-3", "primary", "lb"};
    static const char* kOs[] = {"ubuntu", "debian", "windows", "22.04", "bsd"};
    m.value = os ? kOs[Pick(5)] : kName[Pick(6)];
    return m;
  }

  VmSpec RandomVm(const std::string& id, int vnic_base) {
    VmSpec vm;
    vm.id = id;
    vm.name = RandomName();
    vm.guest_os = RandomOs();
    for (size_t i = 0, n = Pick(4); i < n; ++i) vm.tags.push_back(RandomTag());
    std::sort(vm.tags.begin(), vm.tags.end());
    vm.tags.erase(std::unique(vm.tags.begin(), vm.tags.end()), vm.tags.end());
    for (size_t i = 0, n = Pick(3); i < n; ++i) {
      VNicSpec n2;
      n2.id = "nic-" + std::to_string(vnic_base + static_cast<int>(i));
      for (size_t j = 0, k = Pick(3); j < k; ++j) n2.addresses.push_back(RandomHostAddress());
      std::sort(n2.addresses.begin(), n2.addresses.end());
      n2.addresses.erase(std::unique(n2.addresses.begin(), n2.addresses.end()), n2.addresses.end());
      vm.vnics.push_back(std::move(n2));
    }
    return vm;
  }

  // A group that may reference any of `existing` groups (cycles possible when
  // replacing an existing group; the test expects those to be rejected).
  GroupSpec RandomGroup(const std::string& id, const std::vector<std::string>& existing) {
    GroupSpec g;
    g.id = id;
    if (Chance(0.2)) g.static_vms.push_back("vm-" + std::to_string(Pick(60)));
    if (Chance(0.15)) g.static_vnics.push_back("nic-" + std::to_string(Pick(200)));
    if (Chance(0.2)) g.static_prefixes.push_back(RandomPrefix());
    std::vector<std::string> others;
    for (const auto& e : existing) {
      if (e != id) others.push_back(e);
    }
    if (!others.empty() && Chance(0.2)) g.included_groups.push_back(others[Pick(others.size())]);
    for (size_t i = 0, n = Pick(3); i < n; ++i) {
      Conjunction conj;
      for (size_t j = 0, k = 1 + Pick(2); j < k; ++j) {
        Condition c;
        switch (Pick(others.empty() ? 5 : 6)) {
          case 0:
          case 1:
            c.kind = Condition::Kind::kTag;
            c.tag = RandomTag();
            if (c.tag.value.empty()) c.tag.value = "web";
            break;
          case 2:
            c.kind = Condition::Kind::kTagScope;
            c.tag = {RandomTag().scope, ""};
            if (c.tag.scope.empty()) c.tag.scope = "app";
            break;
          case 3:
            c.kind = Condition::Kind::kVmName;
            c.match = RandomMatch(false);
            break;
          case 4:
            c.kind = Condition::Kind::kGuestOs;
            c.match = RandomMatch(true);
            break;
          default:
            c.kind = Condition::Kind::kMemberOf;
            c.group = others[Pick(others.size())];
            break;
        }
        conj.push_back(std::move(c));
      }
      g.criteria.push_back(std::move(conj));
    }
    for (auto* v : {&g.static_vms, &g.static_vnics, &g.included_groups}) {
      std::sort(v->begin(), v->end());
      v->erase(std::unique(v->begin(), v->end()), v->end());
    }
    return g;
  }

 private:
  std::mt19937_64 rng_;
};

void ExpectSameMembers(const MembershipIndex& index, const std::map<std::string, GroupMembers>& ref,
                       const std::string& when) {
  ASSERT_EQ(index.GroupIds().size(), ref.size()) << when;
  for (const auto& [id, want] : ref) {
    auto got = index.Members(id);
    ASSERT_TRUE(got.ok()) << when << ": " << got.status();
    ASSERT_EQ(got->vm_ids, want.vm_ids) << when << " group " << id;
    ASSERT_EQ(got->vnic_ids, want.vnic_ids) << when << " group " << id;
    ASSERT_EQ(got->addresses, want.addresses) << when << " group " << id;
  }
}

void ExpectDelta(const MembershipDelta& got, const MembershipDelta& want, const std::string& when) {
  ASSERT_EQ(got.groups.size(), want.groups.size()) << when;
  for (size_t i = 0; i < want.groups.size(); ++i) {
    const auto& g = got.groups[i];
    const auto& w = want.groups[i];
    ASSERT_EQ(g.group_id, w.group_id) << when;
    EXPECT_EQ(g.vms_added, w.vms_added) << when << " " << w.group_id;
    EXPECT_EQ(g.vms_removed, w.vms_removed) << when << " " << w.group_id;
    EXPECT_EQ(g.vnics_added, w.vnics_added) << when << " " << w.group_id;
    EXPECT_EQ(g.vnics_removed, w.vnics_removed) << when << " " << w.group_id;
    EXPECT_EQ(g.addresses_added, w.addresses_added) << when << " " << w.group_id;
    EXPECT_EQ(g.addresses_removed, w.addresses_removed) << when << " " << w.group_id;
    EXPECT_EQ(g.group_created, w.group_created) << when << " " << w.group_id;
    EXPECT_EQ(g.group_deleted, w.group_deleted) << when << " " << w.group_id;
  }
}

// A full load must leave the state the changes that led to it left: the same
// counts, the same reason for each (group, VM), and the same reference counts
// behind the vNIC and address sets, which the members do not show but removing
// every VM in turn does (an address leaves a group with its last reason).
// Consumes both indexes.
void ExpectLoadEqualsIncremental(MembershipIndex& loaded, MembershipIndex& built) {
  IndexStats a = loaded.Stats(), b = built.Stats();
  ASSERT_EQ(a.vms, b.vms);
  ASSERT_EQ(a.groups, b.groups);
  ASSERT_EQ(a.memberships, b.memberships);
  ASSERT_EQ(a.vnic_refs, b.vnic_refs);
  ASSERT_EQ(a.address_refs, b.address_refs);
  std::vector<std::string> vm_ids = built.VmIds();
  ASSERT_EQ(loaded.VmIds(), vm_ids);
  for (const auto& id : vm_ids) {
    auto ra = loaded.GroupsOf(id);
    auto rb = built.GroupsOf(id);
    ASSERT_TRUE(ra.ok() && rb.ok()) << id;
    ASSERT_EQ(ra->size(), rb->size()) << id;
    for (size_t i = 0; i < ra->size(); ++i) {
      const MembershipReason& x = (*ra)[i];
      const MembershipReason& y = (*rb)[i];
      EXPECT_EQ(x.group_id, y.group_id) << id;
      EXPECT_EQ(x.via, y.via) << id << " in " << y.group_id;
      EXPECT_EQ(x.conjunction, y.conjunction) << id << " in " << y.group_id;
      EXPECT_EQ(x.through_group, y.through_group) << id << " in " << y.group_id;
    }
  }
  for (const auto& id : vm_ids) {
    auto da = loaded.RemoveVm(id);
    auto db = built.RemoveVm(id);
    ASSERT_TRUE(da.ok() && db.ok()) << id;
    ExpectDelta(*da, *db, "removing " + id + " from both");
    if (::testing::Test::HasFailure()) return;
  }
}

void RunRandom(uint64_t seed, int initial_vms, int initial_groups, int steps) {
  SCOPED_TRACE("seed " + std::to_string(seed));
  Generator gen(seed);
  ReferenceModel ref;
  int next_vnic = 0;
  for (int i = 0; i < initial_vms; ++i) {
    VmSpec vm = gen.RandomVm("vm-" + std::to_string(i), next_vnic);
    next_vnic += 3;
    ref.vms[vm.id] = vm;
  }
  std::vector<std::string> gids;
  for (int i = 0; i < initial_groups; ++i) {
    GroupSpec g = gen.RandomGroup("g" + std::to_string(i), gids);  // only earlier groups: a DAG
    gids.push_back(g.id);
    ref.groups[g.id] = g;
  }
  MembershipIndex index;
  {
    std::vector<VmSpec> vms;
    std::vector<GroupSpec> groups;
    for (const auto& [id, vm] : ref.vms) vms.push_back(vm);
    for (const auto& [id, g] : ref.groups) groups.push_back(g);
    ASSERT_TRUE(index.Load(std::move(vms), std::move(groups)).ok());
  }
  auto before = ref.Evaluate();
  ExpectSameMembers(index, before, "after load");

  int rejected = 0, applied = 0;
  for (int step = 0; step < steps; ++step) {
    std::string when = "step " + std::to_string(step);
    ReferenceModel next = ref;
    absl::StatusOr<MembershipDelta> got;
    bool expect_ok = true;
    std::string vm_id = "vm-" + std::to_string(gen.Pick(initial_vms + 20));
    bool vm_exists = ref.vms.contains(vm_id);
    switch (gen.Pick(9)) {
      case 0: {  // add or replace a VM whole (new vNICs, addresses)
        VmSpec vm = gen.RandomVm(vm_id, next_vnic);
        next_vnic += 3;
        if (gen.Chance(0.1) && !ref.vms.empty()) {
          // Claim a vNIC that another VM owns: must be rejected.
          const VmSpec& other = std::next(ref.vms.begin(), gen.Pick(ref.vms.size()))->second;
          if (!other.vnics.empty() && other.id != vm_id) {
            vm.vnics.push_back(other.vnics[0]);
            expect_ok = false;
          }
        }
        when += " upsert " + vm_id;
        next.vms[vm_id] = vm;
        got = index.UpsertVm(vm);
        break;
      }
      case 1: {
        when += " remove " + vm_id;
        expect_ok = vm_exists;
        next.vms.erase(vm_id);
        got = index.RemoveVm(vm_id);
        break;
      }
      case 2:
      case 3: {  // tag set/unset, the common case
        when += " tags " + vm_id;
        expect_ok = vm_exists;
        std::vector<Tag> set, unset;
        if (gen.Chance(0.7)) set.push_back(gen.RandomTag());
        if (gen.Chance(0.5)) {
          Tag u = gen.RandomTag();
          if (gen.Chance(0.3) && !u.scope.empty()) u.value.clear();
          unset.push_back(u);
        }
        if (vm_exists) {
          VmSpec& vm = next.vms[vm_id];
          for (const Tag& u : unset) {
            std::erase_if(vm.tags, [&](const Tag& t) {
              return t.scope == u.scope && (u.value.empty() || t.value == u.value);
            });
          }
          vm.tags.insert(vm.tags.end(), set.begin(), set.end());
          std::sort(vm.tags.begin(), vm.tags.end());
          vm.tags.erase(std::unique(vm.tags.begin(), vm.tags.end()), vm.tags.end());
        }
        got = index.ChangeTags(vm_id, set, unset);
        break;
      }
      case 4: {  // rename / new OS / new addresses on the same vNICs
        when += " facts " + vm_id;
        if (!vm_exists) continue;
        VmSpec vm = ref.vms[vm_id];
        if (gen.Chance(0.5)) vm.name = gen.RandomName();
        if (gen.Chance(0.5)) vm.guest_os = gen.RandomOs();
        if (!vm.vnics.empty() && gen.Chance(0.5)) {
          auto& n = vm.vnics[gen.Pick(vm.vnics.size())];
          n.addresses = {gen.RandomHostAddress()};
        }
        next.vms[vm_id] = vm;
        got = index.UpsertVm(vm);
        break;
      }
      case 5:
      case 6: {  // add or replace a group; replacing may close a cycle
        std::string gid = gen.Chance(0.3) ? "g" + std::to_string(gids.size() + gen.Pick(3))
                          : gids.empty()  ? "g0"
                                          : gids[gen.Pick(gids.size())];
        std::vector<std::string> existing;
        for (const auto& [id, g] : ref.groups) existing.push_back(id);
        GroupSpec g = gen.RandomGroup(gid, existing);
        when += " upsert group " + gid;
        expect_ok = !ref.WouldCycle(g);
        next.groups[gid] = g;
        got = index.UpsertGroup(g);
        if (got.ok() && std::find(gids.begin(), gids.end(), gid) == gids.end()) gids.push_back(gid);
        break;
      }
      case 7: {
        if (ref.groups.empty()) continue;
        std::string gid = std::next(ref.groups.begin(), gen.Pick(ref.groups.size()))->first;
        when += " remove group " + gid;
        bool referenced = false;
        for (const auto& [id, g] : ref.groups) {
          auto refs = g.References();
          referenced = referenced || std::binary_search(refs.begin(), refs.end(), gid);
        }
        expect_ok = !referenced;
        next.groups.erase(gid);
        got = index.RemoveGroup(gid);
        if (got.ok()) std::erase(gids, gid);
        break;
      }
      case 8: {  // a group referencing a group that does not exist
        GroupSpec g = gen.RandomGroup("g-bad", {});
        g.included_groups = {"no-such-group"};
        when += " dangling reference";
        expect_ok = false;
        got = index.UpsertGroup(g);
        break;
      }
    }
    ASSERT_EQ(got.ok(), expect_ok) << when << ": " << got.status();
    if (!got.ok()) {
      ++rejected;
      ExpectSameMembers(index, before, when + " (rejected, must change nothing)");
      continue;
    }
    ++applied;
    ref = std::move(next);
    auto after = ref.Evaluate();
    ExpectDelta(*got, Diff(before, after), when);
    ExpectSameMembers(index, after, when);
    if (::testing::Test::HasFailure()) return;
    before = std::move(after);
  }
  EXPECT_GT(applied, steps / 2);
  EXPECT_GT(rejected, 0);

  // A fresh full load of the final state agrees with the incremental one.
  MembershipIndex reloaded;
  std::vector<VmSpec> vms;
  std::vector<GroupSpec> groups;
  for (const auto& [id, vm] : ref.vms) vms.push_back(vm);
  for (const auto& [id, g] : ref.groups) groups.push_back(g);
  ASSERT_TRUE(reloaded.Load(std::move(vms), std::move(groups)).ok());
  ExpectSameMembers(reloaded, before, "reload of final state");
  ExpectLoadEqualsIncremental(reloaded, index);
}

TEST(MembershipRandom, IncrementalEqualsFullReevaluation) {
  for (uint64_t seed = 1; seed <= 6; ++seed) {
    RunRandom(seed, /*initial_vms=*/200, /*initial_groups=*/40, /*steps=*/1500);
    if (HasFailure()) return;
  }
}

TEST(MembershipRandom, DeepNestingManyGroups) {
  RunRandom(/*seed=*/99, /*initial_vms=*/60, /*initial_groups=*/120, /*steps=*/800);
}

}  // namespace
}  // namespace dfw::tagging
