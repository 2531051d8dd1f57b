// RandomFleet: a model of kVms VMs on kHosts hosts, groups and policies,
// changed at random through ModelService's API, whose hosts' feeds are
// drained by hand into HostViews (host_view.h). For tests that compare the
// incremental paths with a state computed from scratch.
#pragma once

#include <memory>
#include <random>
#include <string>
#include <vector>

#include "dfw/controller/host_feed.h"
#include "dfw/controller/model_service.h"
#include "host_view.h"
#include "test_util.h"

namespace dfw::controller::testing {

// A model of kVms VMs on kHosts hosts, groups and policies, changed at
// random; the hosts' feeds are drained by hand into HostViews.
class RandomFleet {
 public:
  static constexpr int kVms = 60, kGroups = 12, kPolicies = 6, kHosts = 4;

  explicit RandomFleet(unsigned seed) : rng(seed), views(kHosts) {}

  void Open() {
    auto model = ModelService::Open(dir.path() + "/db");
    ASSERT_TRUE(model.ok()) << model.status();
    m = std::move(*model);
  }
  void Open(std::unique_ptr<Store> store) {
    auto model = ModelService::Open(std::move(store));
    ASSERT_TRUE(model.ok()) << model.status();
    m = std::move(*model);
  }

  dfw::v1::Vm VmProto(int i, int host) {
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
  }
  dfw::v1::SecurityGroup GroupProto(int k) {
    dfw::v1::SecurityGroup g;
    g.set_id("g" + std::to_string(k));
    auto* c = g.add_criteria()->add_conditions()->mutable_tag();
    c->set_scope(k % 2 ? "app" : "tier");
    c->set_value(std::to_string(rng() % 4));
    if (rng() % 4 == 0)
      g.mutable_static_members()->add_ip_prefixes("198.19." + std::to_string(k % 256) + ".0/24");
    return g;
  }
  dfw::v1::Policy PolicyProto(int p) {
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
  }

  void Populate() {
    for (int k = 0; k < kGroups; ++k) {
      dfw::v1::PutGroupRequest r;
      *r.mutable_group() = GroupProto(k);
      ASSERT_TRUE(m->PutGroup(r).ok());
    }
    for (int p = 0; p < kPolicies; ++p) {
      dfw::v1::PutPolicyRequest r;
      *r.mutable_policy() = PolicyProto(p);
      ASSERT_TRUE(m->PutPolicy(r).ok());
    }
    // Hosts register through the session path with feeds we drain by hand.
    feeds.assign(kHosts, nullptr);
    gens.assign(kHosts, 0);
    for (int h = 0; h < kHosts; ++h) {
      dfw::v1::HostHello hello;
      hello.mutable_host()->set_id("h" + std::to_string(h));
      for (int i = h; i < kVms; i += kHosts) *hello.add_vms() = VmProto(i, h);
      auto a = Attach(hello);
      ASSERT_TRUE(a.ok());
      feeds[h] = a->feed;
      gens[h] = a->generation;
    }
  }

  absl::StatusOr<ModelService::Attached> Attach(const dfw::v1::HostHello& hello) {
    return m->AttachHost(
        hello, [] {}, [](dfw::v1::ControllerToHost) { return true; });
  }

  // The Hello host h sends when it comes back: its VMs as the model has
  // them, the revision it holds.
  dfw::v1::HostHello HelloOf(int h) {
    dfw::v1::HostHello hello;
    hello.mutable_host()->set_id("h" + std::to_string(h));
    auto all = m->ListVms(dfw::v1::ListRequest());
    EXPECT_TRUE(all.ok());
    for (const auto& vm : all->vms()) {
      if (vm.host() == "h" + std::to_string(h)) *hello.add_vms() = vm;
    }
    hello.set_held_revision(views[h].revision);
    return hello;
  }

  // Messages of host h (all hosts if -1) into its view; counts fulls.
  void Drain(int only = -1) {
    for (int h = 0; h < kHosts; ++h) {
      if (only >= 0 && h != only) continue;
      while (auto msg = m->NextMessage(feeds[h].get())) {
        if (msg->has_full()) ++fulls;
        if (msg->has_delta()) ++deltas;
        views[h].Apply(*msg);
        feeds[h]->WriteDone(gens[h]);
      }
    }
  }

  // Host `host`'s full state as `model` computes it now.
  static HostView FullView(const ModelService& model, const std::string& host) {
    HostFeed probe(host);
    probe.RequestFull();
    auto full = model.NextMessage(&probe);
    HostView v;
    EXPECT_TRUE(full && full->has_full());
    if (full && full->has_full()) v.Apply(*full);
    return v;
  }

  void Check(int step) {
    for (int h = 0; h < kHosts; ++h) {
      HostView want = FullView(*m, "h" + std::to_string(h));
      EXPECT_EQ(views[h].rulesets, want.rulesets) << "host " << h << " step " << step;
      EXPECT_EQ(views[h].sets, want.sets) << "host " << h << " step " << step;
    }
  }

  void RandomChange() {
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
      auto r = m->Tag(t);  // the VM may have been deleted
      ASSERT_TRUE(r.ok() || r.status().code() == absl::StatusCode::kNotFound) << r.status();
    } else if (op == 5) {  // a VM moves to another host
      dfw::v1::PutVmRequest r;
      int i = static_cast<int>(rng() % kVms);
      auto cur = m->GetVm("vm" + std::to_string(i));
      if (!cur.ok()) return;
      *r.mutable_vm() = *cur;
      r.mutable_vm()->set_host("h" + std::to_string(rng() % kHosts));
      ASSERT_TRUE(m->PutVm(r).ok());
    } else if (op == 6) {  // policy edit
      dfw::v1::PutPolicyRequest r;
      *r.mutable_policy() = PolicyProto(static_cast<int>(rng() % kPolicies));
      ASSERT_TRUE(m->PutPolicy(r).ok());
    } else if (op == 7) {  // group edit
      dfw::v1::PutGroupRequest r;
      *r.mutable_group() = GroupProto(static_cast<int>(rng() % kGroups));
      ASSERT_TRUE(m->PutGroup(r).ok());
    } else if (op == 8) {  // VM deleted and re-created
      int i = static_cast<int>(rng() % kVms);
      dfw::v1::DeleteRequest d;
      d.set_id("vm" + std::to_string(i));
      if (m->DeleteVm(d).ok() && rng() % 2) {
        dfw::v1::PutVmRequest r;
        *r.mutable_vm() = VmProto(i, static_cast<int>(rng() % kHosts));
        ASSERT_TRUE(m->PutVm(r).ok());
      }
    } else {  // address change on a vNIC
      int i = static_cast<int>(rng() % kVms);
      auto cur = m->GetVm("vm" + std::to_string(i));
      if (!cur.ok()) return;
      dfw::v1::PutVmRequest r;
      *r.mutable_vm() = *cur;
      r.mutable_vm()->mutable_vnics(0)->add_addresses()->set_ip("198.18.1." +
                                                                std::to_string(rng() % 200 + 1));
      ASSERT_TRUE(m->PutVm(r).ok());
    }
  }

  TempDir dir;
  std::mt19937 rng;
  std::unique_ptr<ModelService> m;
  std::vector<std::shared_ptr<HostFeed>> feeds;
  std::vector<uint64_t> gens;
  std::vector<HostView> views;
  int fulls = 0, deltas = 0;
};

}  // namespace dfw::controller::testing
