// Random changes against the reference: for every host, its full state at
// the start plus every delta it was sent must equal a full state computed
// from scratch at the end of each step. Exercises the incremental path
// (membership deltas, applied-to changes, VM moves between hosts, policy and
// group edits, address-set journals) without gRPC; and the resume after a
// controller restart, where a host's digests replace the feed's history.
#include <map>
#include <random>
#include <set>

#include "dfw/controller/host_feed.h"
#include "dfw/controller/model_service.h"
#include "dfw/proto/state_digest.h"
#include "host_view.h"
#include "random_fleet.h"
#include "test_util.h"

namespace dfw::controller::testing {
namespace {

// What "the same content" means to a resume (state_digest.h).
TEST(StateDigestTest, SameContentSameDigestWhateverTheVnicRevisionOrOrder) {
  dfw::v1::VNicRuleset a;
  a.set_vnic_id("n1");
  a.set_revision(5);
  auto* r = a.add_rules();
  r->set_rule_num(7);
  r->set_policy_id("p");
  r->set_rule_id("r");
  r->mutable_sources()->add_address_set_ids("g:web");
  r->set_action(dfw::v1::ACTION_ALLOW);
  a.mutable_default_rule()->set_action(dfw::v1::ACTION_DROP);
  dfw::v1::VNicRuleset b = a;
  b.set_vnic_id("n2");
  b.set_revision(9);
  EXPECT_EQ(proto::RulesetDigest(a), proto::RulesetDigest(b));
  EXPECT_EQ(proto::RulesetDigest(a).size(), proto::kDigestBytes);
  b.mutable_rules(0)->set_action(dfw::v1::ACTION_DROP);
  EXPECT_NE(proto::RulesetDigest(a), proto::RulesetDigest(b));
  b = a;
  b.mutable_default_rule()->set_action(dfw::v1::ACTION_ALLOW);
  EXPECT_NE(proto::RulesetDigest(a), proto::RulesetDigest(b));

  dfw::v1::AddressSet s;
  s.set_id("g:web");
  for (const char* p : {"198.18.0.2/32", "198.18.0.1/32", "198.18.0.2/32"}) s.add_prefixes(p);
  EXPECT_EQ(proto::AddressSetDigest(s),
            proto::AddressSetDigest("g:web", {"198.18.0.1/32", "198.18.0.2/32"}));
  EXPECT_NE(proto::AddressSetDigest(s),
            proto::AddressSetDigest("g:db", {"198.18.0.1/32", "198.18.0.2/32"}));
  EXPECT_NE(proto::AddressSetDigest(s), proto::AddressSetDigest("g:web", {"198.18.0.1/32"}));
  // Lengths in front: moving a character between id and prefix changes it.
  EXPECT_NE(proto::AddressSetDigest("a", {"bc"}), proto::AddressSetDigest("ab", {"c"}));
  EXPECT_NE(proto::AddressSetDigest("g", {}), proto::AddressSetDigest("g", {""}));
}

unsigned Seed() { return std::getenv("DFW_SEED") ? std::atoi(std::getenv("DFW_SEED")) : 7; }

TEST(HostDeltaRandomTest, FullPlusDeltasEqualsRecomputedFullState) {
  RandomFleet f(Seed());
  ASSERT_NO_FATAL_FAILURE(f.Open());
  ASSERT_NO_FATAL_FAILURE(f.Populate());
  const int kHosts = RandomFleet::kHosts, kVms = RandomFleet::kVms;
  f.Drain();
  f.Check(-1);
  for (int step = 0; step < 300; ++step) {
    ASSERT_NO_FATAL_FAILURE(f.RandomChange());
    if (f.rng() % 25 == 0) {  // a host reconnects holding what it has: it gets a delta, not a full
      int h = static_cast<int>(f.rng() % kHosts);
      f.Drain();
      f.m->DetachHost("h" + std::to_string(h), f.gens[h]);
      dfw::v1::TagRequest t;  // a change while it is away
      t.add_vm_ids("vm" + std::to_string(f.rng() % kVms));
      auto* s = t.add_set();
      s->set_scope("app");
      s->set_value(std::to_string(f.rng() % 4));
      (void)f.m->Tag(t);
      auto a = f.Attach(f.HelloOf(h));
      ASSERT_TRUE(a.ok());
      EXPECT_FALSE(a->full);
      EXPECT_FALSE(a->resumed);  // what this process sent: no digests needed
      f.gens[h] = a->generation;
    }
    if (f.rng() % 3 == 0 || step == 299) {  // hosts read at random moments: deltas coalesce
      f.Drain();
      f.Check(step);
      if (::testing::Test::HasFailure()) return;
    }
  }
}

// The controller restarts (reopened from its store, nothing of the feeds
// kept) while hosts hold states of several ages: some current, some left
// behind while their agents were away, one whose dataplane lost an object.
// Each comes back with its held revision and digests and gets a delta, not
// a full state, and ends equal to a full state recomputed from scratch,
// also when changes land between its Hello and its first message.
TEST(HostDeltaRandomTest, AfterARestartHostsResumeFromTheirDigests) {
  RandomFleet f(Seed() + 1);
  ASSERT_NO_FATAL_FAILURE(f.Open());
  ASSERT_NO_FATAL_FAILURE(f.Populate());
  const int kHosts = RandomFleet::kHosts;
  f.Drain();
  int resumed = 0;
  for (int round = 0; round < 12; ++round) {
    for (int step = 0; step < 20; ++step) {
      ASSERT_NO_FATAL_FAILURE(f.RandomChange());
      if (f.rng() % 3 == 0) f.Drain(static_cast<int>(f.rng() % kHosts));  // some fall behind
    }
    f.m.reset();  // the controller stops: every feed is gone
    ASSERT_NO_FATAL_FAILURE(f.Open());
    int tampered = -1;
    if (round % 3 == 2) {  // a host's dataplane lost a set and holds a stale ruleset
      tampered = round % kHosts;
      HostView& v = f.views[tampered];
      if (!v.sets.empty()) v.sets.erase(v.sets.begin());
      if (!v.rulesets.empty()) v.rulesets.begin()->second = HostView::Rules(dfw::v1::VNicRuleset());
    }
    int want_fulls = f.fulls;
    for (int h = 0; h < kHosts; ++h) {
      // Changes between the hosts' returns: the set journals of this
      // process then hold changes a later host already has.
      if (f.rng() % 2) {
        ASSERT_NO_FATAL_FAILURE(f.RandomChange());
      }
      dfw::v1::HostHello hello = f.HelloOf(h);
      *hello.mutable_held() = f.views[h].Digests();
      auto a = f.Attach(hello);
      ASSERT_TRUE(a.ok()) << a.status();
      // A delta cannot go from the current revision to itself: only a
      // damaged state held at the current revision takes a full one.
      EXPECT_NE(a->full, a->resumed) << "host " << h << " round " << round;
      if (a->full) {
        EXPECT_EQ(h, tampered) << "round " << round;
      }
      want_fulls += a->full;
      resumed += a->resumed;
      f.feeds[h] = a->feed;
      f.gens[h] = a->generation;
    }
    for (int n = 0; n < 3; ++n) {  // changes before the first message
      ASSERT_NO_FATAL_FAILURE(f.RandomChange());
    }
    f.Drain();
    EXPECT_EQ(f.fulls, want_fulls) << "round " << round;
    f.Check(round);
    if (::testing::Test::HasFailure()) return;
  }
  EXPECT_GE(resumed, 12 * kHosts - 4);  // all but the damaged hosts at the current revision
}

// The case the set journals would get wrong: a set changed while the host
// was away and changed back after the restart, so the host's copy matches
// and is not resent; this process's journal holds the change back, and a
// later change to the set must not replay it onto the host (it would add
// what the host has and remove what it lacks). The set goes whole.
TEST(HostDeltaRandomTest, ASetRevertedAfterTheRestartIsNotReplayedOntoTheHost) {
  TempDir dir;
  auto open = [&] {
    auto m = ModelService::Open(dir.path() + "/db");
    EXPECT_TRUE(m.ok()) << m.status();
    return m.ok() ? std::move(*m) : nullptr;
  };
  auto m = open();
  ASSERT_NE(m, nullptr);
  auto put_group = [&](std::vector<std::string> prefixes) {
    dfw::v1::PutGroupRequest r;
    r.mutable_group()->set_id("ext");
    for (const auto& p : prefixes) r.mutable_group()->mutable_static_members()->add_ip_prefixes(p);
    ASSERT_TRUE(m->PutGroup(r).ok());
  };
  ASSERT_NO_FATAL_FAILURE(put_group({"198.19.1.0/24"}));
  dfw::v1::PutGroupRequest web;
  web.mutable_group()->set_id("web");
  auto* tag = web.mutable_group()->add_criteria()->add_conditions()->mutable_tag();
  tag->set_scope("app");
  tag->set_value("web");
  ASSERT_TRUE(m->PutGroup(web).ok());
  dfw::v1::PutPolicyRequest pr;
  auto* pol = pr.mutable_policy();
  pol->set_id("p");
  pol->set_category(dfw::v1::CATEGORY_APPLICATION);
  auto* rule = pol->add_rules();
  rule->set_id("r");
  rule->mutable_sources()->add_group_ids("ext");
  rule->mutable_destinations()->add_group_ids("web");
  pol->add_applied_to_group_ids("web");
  rule->set_action(dfw::v1::ACTION_ALLOW);
  ASSERT_TRUE(m->PutPolicy(pr).ok()) << pr.DebugString();
  dfw::v1::HostHello hello;
  hello.mutable_host()->set_id("h0");
  auto* vm = hello.add_vms();
  vm->set_id("vm0");
  vm->set_name("vm0");
  vm->set_host("h0");
  auto* vt = vm->add_tags();
  vt->set_scope("app");
  vt->set_value("web");
  vm->add_vnics()->set_id("n0");
  vm->mutable_vnics(0)->add_addresses()->set_ip("198.18.0.1");
  HostView view;
  auto attach = [&](const dfw::v1::HostHello& h) {
    auto a = m->AttachHost(
        h, [] {}, [](dfw::v1::ControllerToHost) { return true; });
    EXPECT_TRUE(a.ok()) << a.status();
    return a.ok() ? *a : ModelService::Attached{};
  };
  auto drain = [&](const ModelService::Attached& a) {
    while (auto msg = m->NextMessage(a.feed.get())) {
      view.Apply(*msg);
      a.feed->WriteDone(a.generation);
    }
  };
  ModelService::Attached a = attach(hello);
  drain(a);
  ASSERT_EQ(view.sets.count("g:ext"), 1u)
      << view.sets.size() << " sets, " << view.rulesets.size() << " rulesets";
  m->DetachHost("h0", a.generation);
  ASSERT_NO_FATAL_FAILURE(put_group({"198.19.2.0/24"}));  // while the host is away
  m.reset();                                              // the controller restarts
  m = open();
  ASSERT_NE(m, nullptr);
  ASSERT_NO_FATAL_FAILURE(put_group({"198.19.1.0/24"}));  // back to what the host holds
  hello.set_held_revision(view.revision);
  *hello.mutable_held() = view.Digests();
  a = attach(hello);
  ASSERT_TRUE(a.resumed);
  ASSERT_NO_FATAL_FAILURE(put_group({"198.19.1.0/24", "198.19.3.0/24"}));
  drain(a);
  EXPECT_EQ(view.sets["g:ext"], (std::set<std::string>{"198.19.1.0/24", "198.19.3.0/24"}));
}

// A Hello without digests (an older agent, a guest agent), with digests
// that are not digests, or holding a revision above the controller's gets
// a full state.
TEST(HostDeltaRandomTest, WithoutUsableDigestsAFullState) {
  RandomFleet f(Seed());
  ASSERT_NO_FATAL_FAILURE(f.Open());
  ASSERT_NO_FATAL_FAILURE(f.Populate());
  f.Drain();
  ASSERT_NO_FATAL_FAILURE(f.RandomChange());
  f.m.reset();
  ASSERT_NO_FATAL_FAILURE(f.Open());
  uint64_t now = f.m->revision();
  auto attach = [&](int h, std::function<void(dfw::v1::HostHello*)> edit) {
    dfw::v1::HostHello hello = f.HelloOf(h);
    *hello.mutable_held() = f.views[h].Digests();
    edit(&hello);
    auto a = f.Attach(hello);
    EXPECT_TRUE(a.ok()) << a.status();
    return a.ok() && a->full && !a->resumed;
  };
  EXPECT_TRUE(attach(0, [](dfw::v1::HostHello* h) { h->clear_held(); }));
  EXPECT_TRUE(attach(1, [](dfw::v1::HostHello* h) {
    auto* held = h->mutable_held();
    ASSERT_GT(held->rulesets_size(), 0);
    held->mutable_rulesets(0)->set_digest("short");
  }));
  EXPECT_TRUE(attach(2, [&](dfw::v1::HostHello* h) { h->set_held_revision(now + 1); }));
  EXPECT_FALSE(attach(3, [](dfw::v1::HostHello*) {}));  // the control: usable, resumed
}

}  // namespace
}  // namespace dfw::controller::testing
