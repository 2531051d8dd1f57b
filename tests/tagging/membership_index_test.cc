// MembershipIndex: one test per criterion and per kind of change, each
// asserting the exact members and the exact delta a user would see.
#include "dfw/tagging/membership_index.h"

#include <gtest/gtest.h>

namespace dfw::tagging {
namespace {

using Strings = std::vector<std::string>;

IpPrefix Ip(const char* s) { return *IpPrefix::Parse(s); }

VmSpec Vm(std::string id, std::string name, std::vector<Tag> tags, std::string os = "",
          std::vector<VNicSpec> vnics = {}) {
  VmSpec vm;
  vm.id = std::move(id);
  vm.name = std::move(name);
  vm.tags = std::move(tags);
  std::sort(vm.tags.begin(), vm.tags.end());
  vm.guest_os = std::move(os);
  vm.vnics = std::move(vnics);
  return vm;
}

VNicSpec Nic(std::string id, std::vector<const char*> ips) {
  VNicSpec n;
  n.id = std::move(id);
  for (const char* ip : ips) n.addresses.push_back(Ip(ip));
  std::sort(n.addresses.begin(), n.addresses.end());
  return n;
}

Condition TagIs(std::string scope, std::string value) {
  Condition c;
  c.kind = value.empty() ? Condition::Kind::kTagScope : Condition::Kind::kTag;
  c.tag = {std::move(scope), std::move(value)};
  return c;
}
Condition NameIs(StringOp op, std::string v) {
  Condition c;
  c.kind = Condition::Kind::kVmName;
  c.match = {op, AsciiLower(v)};
  return c;
}
Condition OsIs(StringOp op, std::string v) {
  Condition c;
  c.kind = Condition::Kind::kGuestOs;
  c.match = {op, AsciiLower(v)};
  return c;
}
Condition MemberOf(std::string g) {
  Condition c;
  c.kind = Condition::Kind::kMemberOf;
  c.group = std::move(g);
  return c;
}
GroupSpec Group(std::string id, std::vector<Conjunction> criteria) {
  GroupSpec g;
  g.id = std::move(id);
  g.criteria = std::move(criteria);
  return g;
}

class MembershipIndexTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(index_
                    .Load({Vm("web-1", "Web-1", {{"app", "web"}, {"env", "prod"}}, "Ubuntu 22.04",
                              {Nic("web-1-eth0", {"198.18.0.11"})}),
                           Vm("web-2", "web-2", {{"app", "web"}, {"env", "dev"}}, "Debian 12",
                              {Nic("web-2-eth0", {"198.18.0.12", "2001:db8::12"})}),
                           Vm("db-1", "db-1", {{"app", "db"}, {"env", "prod"}}, "Debian 12",
                              {Nic("db-1-eth0", {"198.18.0.21"}), Nic("db-1-eth1", {})})},
                          {})
                    .ok());
  }
  Strings VmsOf(const std::string& g) { return index_.Members(g)->vm_ids; }
  MembershipIndex index_;
};

TEST_F(MembershipIndexTest, TagEqualsSelectsTaggedVmsAndTheirAddresses) {
  auto d = index_.UpsertGroup(Group("web", {{TagIs("app", "web")}}));
  ASSERT_TRUE(d.ok()) << d.status();
  auto m = *index_.Members("web");
  EXPECT_EQ(m.vm_ids, (Strings{"web-1", "web-2"}));
  EXPECT_EQ(m.vnic_ids, (Strings{"web-1-eth0", "web-2-eth0"}));
  EXPECT_EQ(m.addresses,
            (std::vector<IpPrefix>{Ip("198.18.0.11"), Ip("198.18.0.12"), Ip("2001:db8::12")}));
  const GroupDelta* gd = d->Find("web");
  ASSERT_NE(gd, nullptr);
  EXPECT_TRUE(gd->group_created);
  EXPECT_EQ(gd->vms_added, (Strings{"web-1", "web-2"}));
  EXPECT_EQ(gd->addresses_added.size(), 3u);
}

TEST_F(MembershipIndexTest, TagScopeMatchesAnyValueAndConjunctionsAnd) {
  ASSERT_TRUE(index_.UpsertGroup(Group("has-env", {{TagIs("env", "")}})).ok());
  EXPECT_EQ(VmsOf("has-env"), (Strings{"db-1", "web-1", "web-2"}));
  ASSERT_TRUE(
      index_.UpsertGroup(Group("prod-web", {{TagIs("app", "web"), TagIs("env", "prod")}})).ok());
  EXPECT_EQ(VmsOf("prod-web"), (Strings{"web-1"}));
  // OR of conjunctions.
  ASSERT_TRUE(
      index_.UpsertGroup(Group("db-or-dev", {{TagIs("app", "db")}, {TagIs("env", "dev")}})).ok());
  EXPECT_EQ(VmsOf("db-or-dev"), (Strings{"db-1", "web-2"}));
}

TEST_F(MembershipIndexTest, NameMatchesIgnoreCase) {
  ASSERT_TRUE(index_.UpsertGroup(Group("eq", {{NameIs(StringOp::kEquals, "WEB-1")}})).ok());
  EXPECT_EQ(VmsOf("eq"), (Strings{"web-1"}));
  ASSERT_TRUE(index_.UpsertGroup(Group("sw", {{NameIs(StringOp::kStartsWith, "web")}})).ok());
  EXPECT_EQ(VmsOf("sw"), (Strings{"web-1", "web-2"}));
  ASSERT_TRUE(index_.UpsertGroup(Group("ew", {{NameIs(StringOp::kEndsWith, "-1")}})).ok());
  EXPECT_EQ(VmsOf("ew"), (Strings{"db-1", "web-1"}));
  ASSERT_TRUE(index_.UpsertGroup(Group("ct", {{NameIs(StringOp::kContains, "B-")}})).ok());
  EXPECT_EQ(VmsOf("ct"), (Strings{"db-1", "web-1", "web-2"}));
}

TEST_F(MembershipIndexTest, GuestOsContains) {
  ASSERT_TRUE(index_.UpsertGroup(Group("debian", {{OsIs(StringOp::kContains, "debian")}})).ok());
  EXPECT_EQ(VmsOf("debian"), (Strings{"db-1", "web-2"}));
  auto d = index_.UpsertVm(Vm("web-1", "Web-1", {{"app", "web"}, {"env", "prod"}}, "Debian 13",
                              {Nic("web-1-eth0", {"198.18.0.11"})}));
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->Find("debian")->vms_added, (Strings{"web-1"}));
}

TEST_F(MembershipIndexTest, MemberOfNestsAtVmLevel) {
  ASSERT_TRUE(index_.UpsertGroup(Group("prod", {{TagIs("env", "prod")}})).ok());
  ASSERT_TRUE(index_.UpsertGroup(Group("prod-db", {{MemberOf("prod"), TagIs("app", "db")}})).ok());
  EXPECT_EQ(VmsOf("prod-db"), (Strings{"db-1"}));
  // Retagging db-1 out of prod empties the nested group in the same delta.
  auto d = index_.ChangeTags("db-1", {{"env", "dev"}}, {{"env", "prod"}});
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->Find("prod")->vms_removed, (Strings{"db-1"}));
  EXPECT_EQ(d->Find("prod-db")->vms_removed, (Strings{"db-1"}));
  EXPECT_EQ(d->Find("prod-db")->addresses_removed, (std::vector<IpPrefix>{Ip("198.18.0.21")}));
}

TEST_F(MembershipIndexTest, StaticMembersAndIncludedGroupsCarryVnicsAndPrefixes) {
  GroupSpec admin;
  admin.id = "admin";
  admin.static_vms = {"db-1"};
  admin.static_vnics = {"web-2-eth0", "not-yet-plugged"};
  admin.static_prefixes = {Ip("198.19.0.0/24")};
  ASSERT_TRUE(index_.UpsertGroup(admin).ok());
  auto m = *index_.Members("admin");
  EXPECT_EQ(m.vm_ids, (Strings{"db-1"}));
  EXPECT_EQ(m.vnic_ids, (Strings{"db-1-eth0", "db-1-eth1", "not-yet-plugged", "web-2-eth0"}));
  EXPECT_EQ(m.addresses, (std::vector<IpPrefix>{Ip("198.18.0.12"), Ip("198.18.0.21"),
                                                Ip("198.19.0.0/24"), Ip("2001:db8::12")}));
  GroupSpec outer;
  outer.id = "outer";
  outer.included_groups = {"admin"};
  ASSERT_TRUE(index_.UpsertGroup(outer).ok());
  EXPECT_EQ(index_.Members("outer")->addresses, m.addresses);
  EXPECT_EQ(index_.Members("outer")->vnic_ids, m.vnic_ids);

  // The static vNIC appears on a new VM: its address joins both groups.
  auto d = index_.UpsertVm(Vm("new", "new", {}, "", {Nic("not-yet-plugged", {"198.18.0.99"})}));
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->Find("admin")->addresses_added, (std::vector<IpPrefix>{Ip("198.18.0.99")}));
  EXPECT_EQ(d->Find("outer")->addresses_added, (std::vector<IpPrefix>{Ip("198.18.0.99")}));
  EXPECT_TRUE(d->Find("admin")->vms_added.empty());
}

TEST_F(MembershipIndexTest, SharedAddressLeavesOnlyWithItsLastVnic) {
  ASSERT_TRUE(index_
                  .UpsertVm(Vm("web-3", "web-3", {{"app", "web"}}, "",
                               {Nic("web-3-eth0", {"198.18.0.11"})}))
                  .ok());
  ASSERT_TRUE(index_.UpsertGroup(Group("web", {{TagIs("app", "web")}})).ok());
  auto d = index_.ChangeTags("web-1", {}, {{"app", ""}});
  ASSERT_TRUE(d.ok());
  const GroupDelta* gd = d->Find("web");
  EXPECT_EQ(gd->vms_removed, (Strings{"web-1"}));
  EXPECT_EQ(gd->vnics_removed, (Strings{"web-1-eth0"}));
  EXPECT_TRUE(gd->addresses_removed.empty()) << "web-3 still holds 198.18.0.11";
}

TEST_F(MembershipIndexTest, EachKindOfVmChangeGivesItsDelta) {
  ASSERT_TRUE(index_.UpsertGroup(Group("web", {{TagIs("app", "web")}})).ok());
  ASSERT_TRUE(index_.UpsertGroup(Group("named-db", {{NameIs(StringOp::kStartsWith, "db")}})).ok());

  // Tag set: joins.
  auto d = index_.ChangeTags("db-1", {{"app", "web"}}, {});
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->Find("web")->vms_added, (Strings{"db-1"}));
  EXPECT_EQ(d->Find("web")->vnics_added, (Strings{"db-1-eth0", "db-1-eth1"}));
  EXPECT_EQ(d->groups.size(), 1u);

  // Rename: leaves the name group only.
  VmSpec renamed = *index_.FindVm("db-1");
  renamed.name = "pg-1";
  d = index_.UpsertVm(renamed);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->Find("named-db")->vms_removed, (Strings{"db-1"}));
  EXPECT_EQ(d->groups.size(), 1u);

  // Address change on a member vNIC: only the address moves.
  VmSpec readdressed = *index_.FindVm("web-1");
  readdressed.vnics[0].addresses = {Ip("198.18.0.111")};
  d = index_.UpsertVm(readdressed);
  ASSERT_TRUE(d.ok());
  const GroupDelta* gd = d->Find("web");
  EXPECT_EQ(gd->addresses_added, (std::vector<IpPrefix>{Ip("198.18.0.111")}));
  EXPECT_EQ(gd->addresses_removed, (std::vector<IpPrefix>{Ip("198.18.0.11")}));
  EXPECT_TRUE(gd->vms_added.empty() && gd->vms_removed.empty() && gd->vnics_added.empty());

  // Unchanged upsert: empty delta.
  d = index_.UpsertVm(*index_.FindVm("web-1"));
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(d->empty());

  // Removal: leaves everything.
  d = index_.RemoveVm("web-1");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->Find("web")->vms_removed, (Strings{"web-1"}));
  EXPECT_FALSE(index_.HasVm("web-1"));
}

TEST_F(MembershipIndexTest, GroupCriteriaChangeGivesExactDelta) {
  ASSERT_TRUE(index_.UpsertGroup(Group("g", {{TagIs("app", "web")}})).ok());
  auto d = index_.UpsertGroup(Group("g", {{TagIs("env", "prod")}}));
  ASSERT_TRUE(d.ok());
  const GroupDelta* gd = d->Find("g");
  EXPECT_EQ(gd->vms_added, (Strings{"db-1"}));
  EXPECT_EQ(gd->vms_removed, (Strings{"web-2"}));
  EXPECT_FALSE(gd->group_created);
}

TEST_F(MembershipIndexTest, CycleIsRejectedNamingTheGroups) {
  ASSERT_TRUE(index_.UpsertGroup(Group("a", {{TagIs("app", "web")}})).ok());
  ASSERT_TRUE(index_.UpsertGroup(Group("b", {{MemberOf("a")}})).ok());
  ASSERT_TRUE(index_.UpsertGroup(Group("c", {{MemberOf("b")}})).ok());
  auto before = *index_.Members("a");
  auto d = index_.UpsertGroup(Group("a", {{MemberOf("c")}}));
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(d.status().message().find("a -> c -> b -> a"), std::string::npos) << d.status();
  EXPECT_EQ(*index_.Members("a"), before) << "a rejected change must change nothing";
  EXPECT_EQ(index_.FindGroup("a")->criteria[0][0].kind, Condition::Kind::kTag);
}

TEST_F(MembershipIndexTest, LoadRejectsCyclesAndDanglingReferencesWholesale) {
  GroupSpec x = Group("x", {{MemberOf("y")}});
  GroupSpec y = Group("y", {{MemberOf("x")}});
  MembershipIndex fresh;
  auto st = fresh.Load({}, {x, y});
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("cycle"), std::string::npos);
  EXPECT_NE(st.message().find("x"), std::string::npos);
  EXPECT_NE(st.message().find("y"), std::string::npos);
  st = fresh.Load({}, {Group("z", {{MemberOf("missing")}})});
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("'missing'"), std::string::npos);
  EXPECT_TRUE(fresh.GroupIds().empty());
}

TEST_F(MembershipIndexTest, MissingReferenceNamesTheField) {
  auto d = index_.UpsertGroup(Group("g", {{TagIs("app", "web")}, {MemberOf("nope")}}));
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find("criteria[1].conditions[0].member_of_group"),
            std::string::npos)
      << d.status();
  EXPECT_FALSE(index_.HasGroup("g"));
}

TEST_F(MembershipIndexTest, DeletingAReferencedGroupNamesTheReferrers) {
  ASSERT_TRUE(index_.UpsertGroup(Group("base", {{TagIs("app", "web")}})).ok());
  ASSERT_TRUE(index_.UpsertGroup(Group("user1", {{MemberOf("base")}})).ok());
  GroupSpec user2;
  user2.id = "user2";
  user2.included_groups = {"base"};
  ASSERT_TRUE(index_.UpsertGroup(user2).ok());
  auto d = index_.RemoveGroup("base");
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(d.status().message().find("user1, user2"), std::string::npos) << d.status();
  ASSERT_TRUE(index_.RemoveGroup("user1").ok());
  ASSERT_TRUE(index_.RemoveGroup("user2").ok());
  d = index_.RemoveGroup("base");
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(d->Find("base")->group_deleted);
  EXPECT_EQ(d->Find("base")->vms_removed, (Strings{"web-1", "web-2"}));
}

TEST_F(MembershipIndexTest, VnicClaimedByAnotherVmIsRejected) {
  auto d = index_.UpsertVm(Vm("thief", "thief", {}, "", {Nic("web-1-eth0", {"198.18.0.66"})}));
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find("vnics[0].id"), std::string::npos);
  EXPECT_NE(d.status().message().find("web-1"), std::string::npos);
  EXPECT_FALSE(index_.HasVm("thief"));
}

TEST_F(MembershipIndexTest, GroupsOfExplainsWhy) {
  ASSERT_TRUE(index_.UpsertGroup(Group("web", {{TagIs("app", "db")}, {TagIs("app", "web")}})).ok());
  GroupSpec pinned;
  pinned.id = "pinned";
  pinned.static_vms = {"web-1"};
  ASSERT_TRUE(index_.UpsertGroup(pinned).ok());
  GroupSpec outer;
  outer.id = "outer";
  outer.included_groups = {"pinned"};
  ASSERT_TRUE(index_.UpsertGroup(outer).ok());
  auto r = index_.GroupsOf("web-1");
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->size(), 3u);
  EXPECT_EQ((*r)[0].group_id, "outer");
  EXPECT_EQ((*r)[0].via, MembershipReason::Via::kIncludedGroup);
  EXPECT_EQ((*r)[0].through_group, "pinned");
  EXPECT_EQ((*r)[1].via, MembershipReason::Via::kStaticVm);
  EXPECT_EQ((*r)[2].via, MembershipReason::Via::kCriteria);
  EXPECT_EQ((*r)[2].conjunction, 1u);
}

}  // namespace
}  // namespace dfw::tagging
