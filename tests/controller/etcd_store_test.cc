// The etcd store and leader election (issue 15) against real etcd members
// on loopback (etcd_cluster.h): the same answers as the RocksDB store on a
// random history, one writer per revision, a deposed leader refused by etcd,
// changes above etcd's limits refused whole, a member lost; a standby's
// model following the store equal to a load of it.
#include "dfw/controller/etcd_store.h"

#include <future>
#include <random>

#include "dfw/controller/model_service.h"
#include "dfw/controller/rocks_store.h"
#include "etcd_cluster.h"
#include "gtest/gtest.h"
#include "random_fleet.h"

namespace dfw::controller::testing {
namespace {

EtcdOptions Options(const EtcdCluster& c, const std::string& prefix = "/dfw/") {
  EtcdOptions o;
  o.endpoints = c.endpoints();
  o.prefix = prefix;
  o.timeout = std::chrono::milliseconds(3000);
  return o;
}

dfw::v1::Vm MakeVm(const std::string& id, int n) {
  dfw::v1::Vm vm;
  vm.set_id(id);
  vm.set_name(id + "-" + std::to_string(n));
  vm.set_host("h" + std::to_string(n % 3));
  return vm;
}

// Everything Load returns, as bytes, for comparing two stores.
std::string Dump(const StoredState& s) {
  std::string out = std::to_string(s.revision) + "/" + std::to_string(s.next_rule_num) + "\n";
  for (const auto& v : s.vms) out += "v " + v.SerializeAsString() + "\n";
  for (const auto& g : s.groups) out += "g " + g.SerializeAsString() + "\n";
  for (const auto& p : s.policies) out += "p " + p.SerializeAsString() + "\n";
  for (const auto& h : s.hosts) out += "h " + h.SerializeAsString() + "\n";
  for (const auto& r : s.rule_nums) {
    out += "n " + r.policy_id + "|" + r.rule_id + "|" + std::to_string(r.num) + "\n";
  }
  return out;
}

std::string Dump(const std::vector<dfw::v1::ChangeEvent>& events) {
  std::string out;
  for (const auto& e : events) out += e.SerializeAsString() + "\n";
  return out;
}

class EtcdStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    ASSERT_TRUE(etcd_.Start(&why)) << why;
  }
  EtcdCluster etcd_{1};
};

// A random history of changes written to both backends: every Load,
// Get, ForEach and ChangesSince answers the same (RocksDB is the reference).
TEST_F(EtcdStoreTest, AnswersAsTheRocksDbStoreOnARandomHistory) {
  TempDir dir;
  auto rocks = RocksStore::Open(dir.path() + "/db");
  ASSERT_TRUE(rocks.ok()) << rocks.status();
  auto etcd = EtcdStore::Open(Options(etcd_));
  ASSERT_TRUE(etcd.ok()) << etcd.status();
  std::mt19937 rng(std::getenv("DFW_SEED") ? std::atoi(std::getenv("DFW_SEED")) : 11);
  ActorScope actor("test");
  for (uint64_t rev = 1; rev <= 120; ++rev) {
    ChangeSet cs(rev);
    int ops = 1 + static_cast<int>(rng() % 6);
    for (int i = 0; i < ops; ++i) {
      std::string id = "vm" + std::to_string(rng() % 20);
      switch (rng() % 5) {
        case 0:
          cs.Delete(Kind::kVm, id);
          cs.AddEvent(dfw::v1::ChangeEvent::KIND_VM, id, true);
          break;
        case 1: {
          dfw::v1::SecurityGroup g;
          g.set_id("g" + std::to_string(rng() % 5));
          g.set_description(std::to_string(rev));
          cs.Put(Kind::kGroup, g.id(), g);
          cs.AddEvent(dfw::v1::ChangeEvent::KIND_GROUP, g.id(), false);
          break;
        }
        case 2:
          cs.PutRuleNum("p" + std::to_string(rng() % 3), "r" + std::to_string(rng() % 4),
                        static_cast<uint32_t>(rev * 10 + i));
          cs.SetNextRuleNum(static_cast<uint32_t>(rev * 10 + i + 1));
          break;
        default:
          cs.Put(Kind::kVm, id, MakeVm(id, static_cast<int>(rev)));
          cs.AddEvent(dfw::v1::ChangeEvent::KIND_VM, id, false);
      }
    }
    ASSERT_TRUE((*rocks)->Commit(cs).ok());
    ASSERT_TRUE((*etcd)->Commit(cs).ok()) << "revision " << rev;
    if (rev % 30 == 0) {
      auto a = (*rocks)->Load();
      auto b = (*etcd)->Load();
      ASSERT_TRUE(a.ok() && b.ok()) << b.status();
      EXPECT_EQ(Dump(*a), Dump(*b)) << "at revision " << rev;
      EXPECT_EQ(b->revision, rev);
    }
  }
  for (int q = 0; q < 40; ++q) {
    uint64_t from = rng() % 125;
    size_t limit = 1 + rng() % 50;
    auto a = (*rocks)->ChangesSince(from, limit);
    auto b = (*etcd)->ChangesSince(from, limit);
    ASSERT_TRUE(a.ok() && b.ok()) << b.status();
    EXPECT_EQ(Dump(*a), Dump(*b)) << "from " << from << " limit " << limit;
  }
  for (int i = 0; i < 20; ++i) {
    std::string id = "vm" + std::to_string(i);
    dfw::v1::Vm va, vb;
    absl::Status sa = (*rocks)->Get(Kind::kVm, id, &va);
    absl::Status sb = (*etcd)->Get(Kind::kVm, id, &vb);
    EXPECT_EQ(sa.code(), sb.code()) << id;
    EXPECT_EQ(va.SerializeAsString(), vb.SerializeAsString()) << id;
  }
  std::string fa, fb;
  ASSERT_TRUE((*rocks)
                  ->ForEach(Kind::kGroup,
                            [&](const std::string& v) {
                              fa += v + "\n";
                              return absl::OkStatus();
                            })
                  .ok());
  ASSERT_TRUE((*etcd)
                  ->ForEach(Kind::kGroup,
                            [&](const std::string& v) {
                              fb += v + "\n";
                              return absl::OkStatus();
                            })
                  .ok());
  EXPECT_EQ(fa, fb);
  EXPECT_FALSE(fb.empty());
}

TEST_F(EtcdStoreTest, TwoWritersCannotBothCommitARevision) {
  auto a = EtcdStore::Open(Options(etcd_));
  auto b = EtcdStore::Open(Options(etcd_));
  ASSERT_TRUE(a.ok() && b.ok());
  ChangeSet ca(1), cb(1);
  ca.Put(Kind::kVm, "x", MakeVm("x", 1));
  ca.AddEvent(dfw::v1::ChangeEvent::KIND_VM, "x", false);
  cb.Put(Kind::kVm, "y", MakeVm("y", 2));
  cb.AddEvent(dfw::v1::ChangeEvent::KIND_VM, "y", false);
  ASSERT_TRUE((*a)->Commit(ca).ok());
  absl::Status s = (*b)->Commit(cb);
  EXPECT_TRUE(absl::IsAborted(s)) << s;
  EXPECT_NE(s.message().find("another controller"), std::string::npos) << s;
  // Revision 3 before 2 is refused as well: revisions are consecutive.
  ChangeSet skip(3);
  skip.Put(Kind::kVm, "z", MakeVm("z", 3));
  EXPECT_TRUE(absl::IsAborted((*b)->Commit(skip)));
  auto st = (*b)->Load();
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->revision, 1u);
  ASSERT_EQ(st->vms.size(), 1u);
  EXPECT_EQ(st->vms[0].id(), "x");
}

// A commit whose reply was lost is sent again: the second sees its own
// change stored and reports it applied, once.
TEST_F(EtcdStoreTest, AChangeAlreadyAppliedIsReportedAppliedNotWrittenTwice) {
  auto a = EtcdStore::Open(Options(etcd_));
  ASSERT_TRUE(a.ok());
  ActorScope actor("retry");
  ChangeSet cs(1);
  cs.Put(Kind::kVm, "x", MakeVm("x", 1));
  cs.AddEvent(dfw::v1::ChangeEvent::KIND_VM, "x", false);
  ASSERT_TRUE((*a)->Commit(cs).ok());
  EXPECT_TRUE((*a)->Commit(cs).ok());
  auto log = (*a)->ChangesSince(0, 100);
  ASSERT_TRUE(log.ok());
  EXPECT_EQ(log->size(), 1u);
  // Another change at the same revision is not taken for it.
  ChangeSet other(1);
  other.Put(Kind::kVm, "y", MakeVm("y", 1));
  other.AddEvent(dfw::v1::ChangeEvent::KIND_VM, "y", false);
  EXPECT_TRUE(absl::IsAborted((*a)->Commit(other)));
}

TEST_F(EtcdStoreTest, AChangeAboveEtcdsTransactionLimitsIsRefusedWhole) {
  auto a = EtcdStore::Open(Options(etcd_));
  ASSERT_TRUE(a.ok());
  ChangeSet big(1);
  for (int i = 0; i < 100; ++i) {
    std::string id = "vm" + std::to_string(i);
    big.Put(Kind::kVm, id, MakeVm(id, i));
    big.AddEvent(dfw::v1::ChangeEvent::KIND_VM, id, false);
  }
  absl::Status s = (*a)->Commit(big);
  EXPECT_TRUE(absl::IsResourceExhausted(s)) << s;
  EXPECT_NE(s.message().find("--max-txn-ops"), std::string::npos) << s;
  // Told a larger limit than etcd's own (128 here): etcd refuses it, and
  // the error says so; nothing is applied either way.
  EtcdOptions o = Options(etcd_);
  o.max_txn_ops = 100000;
  auto b = EtcdStore::Open(o);
  ASSERT_TRUE(b.ok());
  s = (*b)->Commit(big);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("too many operations"), std::string::npos) << s;
  o.max_request_bytes = 1000;
  auto c = EtcdStore::Open(o);
  ASSERT_TRUE(c.ok());
  s = (*c)->Commit(big);
  EXPECT_TRUE(absl::IsResourceExhausted(s)) << s;
  EXPECT_NE(s.message().find("--max-request-bytes"), std::string::npos) << s;
  auto st = (*a)->Load();
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->revision, 0u);
  EXPECT_TRUE(st->vms.empty());
}

TEST_F(EtcdStoreTest, ModelServiceComesBackFromEtcd) {
  uint64_t revision = 0;
  {
    auto store = EtcdStore::Open(Options(etcd_));
    ASSERT_TRUE(store.ok());
    auto model = ModelService::Open(std::move(*store));
    ASSERT_TRUE(model.ok()) << model.status();
    dfw::v1::PutGroupRequest g;
    g.mutable_group()->set_id("web");
    auto* c = g.mutable_group()->add_criteria()->add_conditions()->mutable_tag();
    c->set_scope("app");
    c->set_value("web");
    ASSERT_TRUE((*model)->PutGroup(g).ok());
    dfw::v1::PutPolicyRequest p;
    p.mutable_policy()->set_id("p1");
    p.mutable_policy()->set_category(dfw::v1::CATEGORY_APPLICATION);
    auto* r = p.mutable_policy()->add_rules();
    r->set_id("r1");
    r->mutable_sources()->add_group_ids("web");
    r->mutable_destinations()->add_group_ids("web");
    r->set_action(dfw::v1::ACTION_ALLOW);
    ASSERT_TRUE((*model)->PutPolicy(p).ok());
    revision = (*model)->revision();
  }
  auto store = EtcdStore::Open(Options(etcd_));
  ASSERT_TRUE(store.ok());
  auto model = ModelService::Open(std::move(*store));
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)->revision(), revision);
  auto g = (*model)->GetGroup("web");
  ASSERT_TRUE(g.ok()) << g.status();
  auto p = (*model)->GetPolicy("p1");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->rules_size(), 1);
}

// A standby's warm model (EtcdStore::Follow + ModelService::ApplyFollowed)
// against the reference, a model loaded from the store: while a leader makes
// random changes (tags, VM moves and deletes, group and policy edits and
// deletes, hosts' inventory and removal), the follower, opened midway, must
// reach the leader's revision and then compute for every host exactly the
// full state (rulesets with their rule numbers, address sets) that a cold
// load of the store computes, and hold the same objects.
TEST_F(EtcdStoreTest, AFollowingModelHoldsWhatALoadOfTheStoreHolds) {
  RandomFleet f(std::getenv("DFW_SEED") ? std::atoi(std::getenv("DFW_SEED")) : 11);
  auto leader_store = EtcdStore::Open(Options(etcd_));
  ASSERT_TRUE(leader_store.ok()) << leader_store.status();
  ASSERT_NO_FATAL_FAILURE(f.Open(std::move(*leader_store)));
  ASSERT_NO_FATAL_FAILURE(f.Populate());

  auto follower_store = EtcdStore::Open(Options(etcd_));
  ASSERT_TRUE(follower_store.ok());
  EtcdStore* fs = follower_store->get();
  auto opened = ModelService::Open(std::move(*follower_store));
  ASSERT_TRUE(opened.ok()) << opened.status();
  std::unique_ptr<ModelService> follower = std::move(*opened);
  absl::Status applied = absl::OkStatus();
  auto followed = std::async(std::launch::async, [&] {
    return fs->Follow(follower->opened_backend_revision(), [&](StoredChange c) {
      applied = follower->ApplyFollowed(c);
      return applied.ok();
    });
  });

  auto compare = [&](int step) {
    uint64_t want = f.m->revision();
    ASSERT_EQ(follower->WaitForRevisionAbove(want - 1, std::chrono::seconds(10)), want)
        << "step " << step << ": " << applied;
    auto cold_store = EtcdStore::Open(Options(etcd_));
    ASSERT_TRUE(cold_store.ok());
    auto cold = ModelService::Open(std::move(*cold_store));
    ASSERT_TRUE(cold.ok()) << cold.status();
    ASSERT_EQ((*cold)->revision(), want);
    for (int h = 0; h < RandomFleet::kHosts; ++h) {
      std::string host = "h" + std::to_string(h);
      HostView a = RandomFleet::FullView(*follower, host);
      HostView b = RandomFleet::FullView(**cold, host);
      EXPECT_EQ(a.rulesets, b.rulesets) << host << " step " << step;
      EXPECT_EQ(a.sets, b.sets) << host << " step " << step;
    }
    dfw::v1::ListRequest all;  // one page: the fleet is smaller than the largest
    all.set_page_size(1000);
    EXPECT_EQ(follower->ListVms(all)->SerializeAsString(),
              (*cold)->ListVms(all)->SerializeAsString());
    EXPECT_EQ(follower->ListGroups(all)->SerializeAsString(),
              (*cold)->ListGroups(all)->SerializeAsString());
    EXPECT_EQ(follower->ListPolicies(all)->SerializeAsString(),
              (*cold)->ListPolicies(all)->SerializeAsString());
    EXPECT_EQ(follower->ListHosts()->hosts_size(), (*cold)->ListHosts()->hosts_size());
    EXPECT_EQ(follower->ListExclusions()->SerializeAsString(),
              (*cold)->ListExclusions()->SerializeAsString());
  };

  for (int step = 0; step < 240; ++step) {
    int op = static_cast<int>(f.rng() % 12);
    if (op == 0) {  // a policy deleted, and put again: its rules keep their numbers
      dfw::v1::DeleteRequest d;
      d.set_id("p" + std::to_string(f.rng() % RandomFleet::kPolicies));
      if (f.m->DeletePolicy(d).ok() && f.rng() % 2) {
        dfw::v1::PutPolicyRequest r;
        *r.mutable_policy() = f.PolicyProto(std::atoi(d.id().c_str() + 1));
        r.mutable_policy()->mutable_rules(0)->set_id("fresh" + std::to_string(step));
        ASSERT_TRUE(f.m->PutPolicy(r).ok());
      }
    } else if (op == 1) {  // a group made and removed
      dfw::v1::PutGroupRequest g;
      *g.mutable_group() = f.GroupProto(100 + step);
      g.mutable_group()->mutable_static_members()->add_group_ids("g0");
      auto put = f.m->PutGroup(g);
      ASSERT_TRUE(put.ok()) << put.status();
      if (f.rng() % 2) {
        dfw::v1::DeleteRequest d;
        d.set_id(g.group().id());
        ASSERT_TRUE(f.m->DeleteGroup(d).ok());
      }
    } else if (op == 2) {  // a host's inventory: a VM gone, one new
      int h = static_cast<int>(f.rng() % RandomFleet::kHosts);
      dfw::v1::InventoryUpdate u;
      dfw::v1::Vm* vm = u.add_vms_set();
      *vm = f.VmProto(RandomFleet::kVms + step, h);
      vm->mutable_vnics(0)->mutable_addresses(0)->set_ip("198.19.1." +
                                                         std::to_string(step % 250 + 1));
      auto vms = f.m->ListVms(dfw::v1::ListRequest());
      for (const auto& vm : vms->vms()) {
        if (vm.host() == "h" + std::to_string(h)) {
          u.add_vms_removed(vm.id());
          break;
        }
      }
      auto st = f.m->UpdateInventory("h" + std::to_string(h), u);
      ASSERT_TRUE(st.ok()) << st;
    } else if (op == 3 && step % 5 == 0) {  // a host removed, then back
      int h = static_cast<int>(f.rng() % RandomFleet::kHosts);
      std::string host = "h" + std::to_string(h);
      dfw::v1::HostHello back = f.HelloOf(h);
      back.set_held_revision(0);
      f.m->DetachHost(host, f.gens[h]);
      ASSERT_TRUE(f.m->DeleteHost(host).ok());
      auto a = f.Attach(back);
      ASSERT_TRUE(a.ok()) << a.status();
      f.feeds[h] = a->feed;
      f.gens[h] = a->generation;
    } else if (op == 4) {  // the exclusion list: a VM or a vNIC added, or removed
      const bool vm = f.rng() % 2;
      const std::string id = (vm ? "vm" : "n") + std::to_string(f.rng() % RandomFleet::kVms);
      if (!f.m->DeleteExclusion((vm ? "vm:" : "vnic:") + id).ok()) {
        dfw::v1::Exclusion e;
        (vm ? e.mutable_vm_id() : e.mutable_vnic_id())->assign(id);
        e.set_reason("step " + std::to_string(step));
        auto r = f.m->AddExclusion(e);  // the VM may be gone
        ASSERT_TRUE(r.ok() || r.status().code() == absl::StatusCode::kNotFound) << r.status();
      }
    } else {
      ASSERT_NO_FATAL_FAILURE(f.RandomChange());
    }
    if (step % 40 == 39) {
      ASSERT_NO_FATAL_FAILURE(compare(step));
      if (::testing::Test::HasFailure()) break;
    }
  }
  fs->StopFollowing();
  EXPECT_TRUE(followed.get().ok());
  EXPECT_TRUE(applied.ok()) << applied;
}

// A follower whose history etcd compacted is told to load again.
TEST_F(EtcdStoreTest, FollowingPastACompactedHistoryAsksForALoad) {
  auto store = EtcdStore::Open(Options(etcd_));
  ASSERT_TRUE(store.ok());
  auto model = ModelService::Open(std::move(*store));
  ASSERT_TRUE(model.ok());
  for (int i = 0; i < 3; ++i) {
    dfw::v1::PutVmRequest r;
    *r.mutable_vm() = MakeVm("vm" + std::to_string(i), i);
    ASSERT_TRUE((*model)->PutVm(r).ok());
  }
  std::string why;
  ASSERT_TRUE(etcd_.Compact(&why)) << why;
  auto follower = EtcdStore::Open(Options(etcd_));
  ASSERT_TRUE(follower.ok());
  int seen = 0;
  auto s = (*follower)->Follow(1, [&](StoredChange) {
    ++seen;
    return true;
  });
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_EQ(seen, 0);
}

TEST(EtcdStoreOptionsTest, PlaintextToANonLoopbackEndpointIsRefused) {
  EtcdOptions o;
  o.endpoints = {"127.0.0.1:2379", "198.18.0.1:2379"};
  auto s = EtcdStore::Open(o);
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(s.status()));
  EXPECT_NE(s.status().message().find("198.18.0.1:2379"), std::string::npos) << s.status();
  EXPECT_FALSE(ParseEtcdEndpoints("127.0.0.1").ok());
  EXPECT_FALSE(ParseEtcdEndpoints("").ok());
  auto eps = ParseEtcdEndpoints("http://127.0.0.1:1,[::1]:2");
  ASSERT_TRUE(eps.ok());
  EXPECT_EQ(*eps, (std::vector<std::string>{"127.0.0.1:1", "[::1]:2"}));
}

// One leader at a time; the one deposed (its lease gone) has its writes
// refused by etcd, the next one writes.
TEST_F(EtcdStoreTest, ADeposedLeaderCannotWriteItsSuccessorCan) {
  EtcdLeaderElection a(Options(etcd_), {"a", "127.0.0.1:1", "127.0.0.1:2"},
                       std::chrono::seconds(2));
  ASSERT_TRUE(a.Campaign(nullptr, nullptr).ok());
  auto store_a = EtcdStore::Open(Options(etcd_));
  ASSERT_TRUE(store_a.ok());
  (*store_a)->SetLeaderGuard(a.key(), a.create_revision());
  ChangeSet c1(1);
  c1.Put(Kind::kVm, "x", MakeVm("x", 1));
  ASSERT_TRUE((*store_a)->Commit(c1).ok());

  EtcdLeaderElection b(Options(etcd_), {"b", "127.0.0.1:3", "127.0.0.1:4"},
                       std::chrono::seconds(2));
  std::promise<std::string> seen;
  auto seen_f = seen.get_future();
  bool set = false;
  auto campaign = std::async(std::launch::async, [&] {
    return b.Campaign(
        [&](const EtcdLeaderElection::LeaderInfo& l) {
          if (!set) {
            set = true;
            seen.set_value(l.name + " " + l.grpc + " " + l.http);
          }
        },
        nullptr);
  });
  ASSERT_EQ(seen_f.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  EXPECT_EQ(seen_f.get(), "a 127.0.0.1:1 127.0.0.1:2");
  EXPECT_EQ(campaign.wait_for(std::chrono::milliseconds(500)), std::future_status::timeout);

  a.Stop();  // revokes the lease: the key goes, b is elected
  ASSERT_EQ(campaign.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  ASSERT_TRUE(campaign.get().ok());
  ChangeSet c2(2);
  c2.Put(Kind::kVm, "y", MakeVm("y", 2));
  absl::Status s = (*store_a)->Commit(c2);
  EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
  EXPECT_NE(s.message().find("no longer the leader"), std::string::npos) << s;

  auto store_b = EtcdStore::Open(Options(etcd_));
  ASSERT_TRUE(store_b.ok());
  (*store_b)->SetLeaderGuard(b.key(), b.create_revision());
  EXPECT_TRUE((*store_b)->Commit(c2).ok());
  auto st = (*store_b)->Load();
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->revision, 2u);
  EXPECT_EQ(st->vms.size(), 2u);
}

// A leader that cannot reach etcd for its lease's TTL knows it is no
// longer the leader (another may be by then) and says so once.
TEST_F(EtcdStoreTest, LeadershipIsLostWhenEtcdIsUnreachableForTheLeaseTtl) {
  EtcdLeaderElection a(Options(etcd_), {"a", "", ""}, std::chrono::seconds(2));
  std::promise<std::string> lost;
  auto lost_f = lost.get_future();
  ASSERT_TRUE(a.Campaign(nullptr, [&](const std::string& why) { lost.set_value(why); }).ok());
  EXPECT_EQ(lost_f.wait_for(std::chrono::seconds(3)), std::future_status::timeout);
  auto t0 = std::chrono::steady_clock::now();
  etcd_.Kill(0);
  ASSERT_EQ(lost_f.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  auto after = std::chrono::steady_clock::now() - t0;
  EXPECT_LE(after, std::chrono::seconds(5));
  EXPECT_NE(lost_f.get().find("2 s"), std::string::npos);
}

// Three members: with the first endpoint's member dead, commits and loads
// go on through the others.
TEST(EtcdClusterStoreTest, CommitsGoOnWhenAMemberDies) {
  EtcdCluster etcd(3);
  std::string why;
  ASSERT_TRUE(etcd.Start(&why)) << why;
  auto a = EtcdStore::Open(Options(etcd));
  ASSERT_TRUE(a.ok()) << a.status();
  for (uint64_t rev = 1; rev <= 10; ++rev) {
    if (rev == 5) etcd.Kill(0);
    ChangeSet cs(rev);
    std::string id = "vm" + std::to_string(rev);
    cs.Put(Kind::kVm, id, MakeVm(id, static_cast<int>(rev)));
    cs.AddEvent(dfw::v1::ChangeEvent::KIND_VM, id, false);
    absl::Status s = (*a)->Commit(cs);
    ASSERT_TRUE(s.ok()) << "revision " << rev << ": " << s;
  }
  auto st = (*a)->Load();
  ASSERT_TRUE(st.ok()) << st.status();
  EXPECT_EQ(st->revision, 10u);
  EXPECT_EQ(st->vms.size(), 10u);
}

}  // namespace
}  // namespace dfw::controller::testing
