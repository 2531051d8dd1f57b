// Random changes against the reference: for every host, its full state at
// the start plus every delta it was sent must equal a full state computed
// from scratch at the end of each step. Exercises the incremental path
// (membership deltas, applied-to changes, VM moves between hosts, policy and
// group edits, address-set journals) without gRPC.
#include <map>
#include <random>
#include <set>

#include "dfw/controller/host_feed.h"
#include "dfw/controller/model_service.h"
#include "host_view.h"
#include "test_util.h"

namespace dfw::controller::testing {
namespace {

TEST(HostDeltaRandomTest, FullPlusDeltasEqualsRecomputedFullState) {
  TempDir dir;
  auto model = ModelService::Open(dir.path() + "/db");
  ASSERT_TRUE(model.ok());
  ModelService& m = **model;
  std::mt19937 rng(std::getenv("DFW_SEED") ? std::atoi(std::getenv("DFW_SEED")) : 7);
  const int kVms = 60, kGroups = 12, kPolicies = 6, kHosts = 4;
  auto vm_proto = [&](int i, int host) {
    dfw::v1::Vm vm;
    vm.set_id("vm" + std::to_string(i));
    vm.set_name("vm" + std::to_string(i));
    vm.set_host("h" + std::to_string(host));
    for (const char* s : {"app", "tier"}) {
      auto* t = vm.add_tags();
      t->set_scope(s);
      t->set_value(std::to_string(rng() % 4));
    }
    auto* n = vm.add_vnics();
    n->set_id("n" + std::to_string(i));
    n->add_addresses()->set_ip("198.18.0." + std::to_string(i + 1));
    return vm;
  };
  auto group_proto = [&](int k) {
    dfw::v1::SecurityGroup g;
    g.set_id("g" + std::to_string(k));
    auto* c = g.add_criteria()->add_conditions()->mutable_tag();
    c->set_scope(k % 2 ? "app" : "tier");
    c->set_value(std::to_string(rng() % 4));
    if (rng() % 4 == 0)
      g.mutable_static_members()->add_ip_prefixes("198.19." + std::to_string(k) + ".0/24");
    return g;
  };
  auto policy_proto = [&](int p) {
    dfw::v1::Policy pol;
    pol.set_id("p" + std::to_string(p));
    pol.set_category(dfw::v1::CATEGORY_APPLICATION);
    pol.set_priority(static_cast<int>(rng() % 5));
    if (rng() % 2) pol.add_applied_to_group_ids("g" + std::to_string(rng() % kGroups));
    for (int j = 0; j < 3; ++j) {
      auto* r = pol.add_rules();
      r->set_id(std::string("r").append(std::to_string(j)));  // GCC PR 105651 at -O3
      r->mutable_sources()->add_group_ids("g" + std::to_string(rng() % kGroups));
      if (rng() % 3 == 0)
        r->mutable_sources()->add_ip_prefixes("203.0.113." + std::to_string(rng() % 4) + "/32");
      r->mutable_destinations()->add_group_ids("g" + std::to_string(rng() % kGroups));
      r->set_action(dfw::v1::ACTION_ALLOW);
    }
    return pol;
  };
  for (int k = 0; k < kGroups; ++k) {
    dfw::v1::PutGroupRequest r;
    *r.mutable_group() = group_proto(k);
    ASSERT_TRUE(m.PutGroup(r).ok());
  }
  for (int p = 0; p < kPolicies; ++p) {
    dfw::v1::PutPolicyRequest r;
    *r.mutable_policy() = policy_proto(p);
    ASSERT_TRUE(m.PutPolicy(r).ok());
  }
  // Hosts register through the session path with feeds we drain by hand.
  std::vector<std::shared_ptr<HostFeed>> feeds;
  std::vector<uint64_t> gens;
  std::vector<HostView> views(kHosts);
  for (int h = 0; h < kHosts; ++h) {
    dfw::v1::HostHello hello;
    hello.mutable_host()->set_id("h" + std::to_string(h));
    for (int i = h; i < kVms; i += kHosts) *hello.add_vms() = vm_proto(i, h);
    auto a = m.AttachHost(
        hello, [] {}, [](dfw::v1::ControllerToHost) { return true; });
    ASSERT_TRUE(a.ok());
    feeds.push_back(a->feed);
    gens.push_back(a->generation);
  }
  auto drain = [&] {
    for (int h = 0; h < kHosts; ++h) {
      while (auto msg = m.NextMessage(feeds[h].get())) {
        views[h].Apply(*msg);
        feeds[h]->WriteDone(gens[h]);
      }
    }
  };
  auto check = [&](int step) {
    for (int h = 0; h < kHosts; ++h) {
      HostFeed probe("h" + std::to_string(h));
      probe.RequestFull();
      auto full = m.NextMessage(&probe);
      ASSERT_TRUE(full && full->has_full());
      HostView want;
      want.Apply(*full);
      EXPECT_EQ(views[h].rulesets, want.rulesets) << "host " << h << " step " << step;
      EXPECT_EQ(views[h].sets, want.sets) << "host " << h << " step " << step;
    }
  };
  drain();
  check(-1);
  for (int step = 0; step < 300; ++step) {
    int op = static_cast<int>(rng() % 10);
    if (op < 5) {  // tag change
      dfw::v1::TagRequest t;
      t.add_vm_ids("vm" + std::to_string(rng() % kVms));
      auto* s = t.add_set();
      s->set_scope(rng() % 2 ? "app" : "tier");
      s->set_value(std::to_string(rng() % 4));
      auto* u = t.add_remove();
      u->set_scope(s->scope());
      u->set_value(std::to_string(rng() % 4));
      if (u->value() == s->value()) t.clear_remove();
      auto r = m.Tag(t);  // the VM may have been deleted
      ASSERT_TRUE(r.ok() || r.status().code() == absl::StatusCode::kNotFound) << r.status();
    } else if (op == 5) {  // a VM moves to another host
      dfw::v1::PutVmRequest r;
      int i = static_cast<int>(rng() % kVms);
      auto cur = m.GetVm("vm" + std::to_string(i));
      if (!cur.ok()) continue;
      *r.mutable_vm() = *cur;
      r.mutable_vm()->set_host("h" + std::to_string(rng() % kHosts));
      ASSERT_TRUE(m.PutVm(r).ok());
    } else if (op == 6) {  // policy edit
      dfw::v1::PutPolicyRequest r;
      *r.mutable_policy() = policy_proto(static_cast<int>(rng() % kPolicies));
      ASSERT_TRUE(m.PutPolicy(r).ok());
    } else if (op == 7) {  // group edit
      dfw::v1::PutGroupRequest r;
      *r.mutable_group() = group_proto(static_cast<int>(rng() % kGroups));
      ASSERT_TRUE(m.PutGroup(r).ok());
    } else if (op == 8) {  // VM deleted and re-created
      int i = static_cast<int>(rng() % kVms);
      dfw::v1::DeleteRequest d;
      d.set_id("vm" + std::to_string(i));
      if (m.DeleteVm(d).ok() && rng() % 2) {
        dfw::v1::PutVmRequest r;
        *r.mutable_vm() = vm_proto(i, static_cast<int>(rng() % kHosts));
        ASSERT_TRUE(m.PutVm(r).ok());
      }
    } else {  // address change on a vNIC
      int i = static_cast<int>(rng() % kVms);
      auto cur = m.GetVm("vm" + std::to_string(i));
      if (!cur.ok()) continue;
      dfw::v1::PutVmRequest r;
      *r.mutable_vm() = *cur;
      r.mutable_vm()->mutable_vnics(0)->add_addresses()->set_ip("198.18.1." +
                                                                std::to_string(rng() % 200 + 1));
      ASSERT_TRUE(m.PutVm(r).ok());
    }
    if (rng() % 25 == 0) {  // a host reconnects holding what it has: it gets a delta, not a full
      int h = static_cast<int>(rng() % kHosts);
      drain();
      m.DetachHost("h" + std::to_string(h), gens[h]);
      dfw::v1::TagRequest t;  // a change while it is away
      t.add_vm_ids("vm" + std::to_string(rng() % kVms));
      auto* s = t.add_set();
      s->set_scope("app");
      s->set_value(std::to_string(rng() % 4));
      (void)m.Tag(t);
      dfw::v1::HostHello hello;
      hello.mutable_host()->set_id("h" + std::to_string(h));
      auto all = m.ListVms(dfw::v1::ListRequest());
      ASSERT_TRUE(all.ok());
      for (const auto& vm : all->vms()) {
        if (vm.host() == "h" + std::to_string(h)) *hello.add_vms() = vm;
      }
      hello.set_held_revision(views[h].revision);
      auto a = m.AttachHost(
          hello, [] {}, [](dfw::v1::ControllerToHost) { return true; });
      ASSERT_TRUE(a.ok());
      EXPECT_FALSE(a->full);
      gens[h] = a->generation;
    }
    if (rng() % 3 == 0 || step == 299) {  // hosts read at random moments: deltas coalesce
      drain();
      check(step);
      if (::testing::Test::HasFailure()) return;
    }
  }
}

}  // namespace
}  // namespace dfw::controller::testing
