// The registration storm (issue 15): many hosts say Hello at once, every
// Hello adding VMs to a group every host references. Hellos that queue up
// while a change is applied are applied as one change, so each host ends
// with exactly the state a recomputation gives, and the controller sends
// O(hosts) deltas, not one per Hello per connected host.
#include <atomic>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "dfw/controller/host_feed.h"
#include "host_view.h"
#include "test_host.h"
#include "test_util.h"

namespace dfw::controller::testing {
namespace {

using nlohmann::json;

constexpr int kHosts = 48;
constexpr int kVmsPerHost = 3;

std::string HostId(int h) { return "h" + std::to_string(h); }

std::vector<dfw::v1::Vm> Inventory(int h) {
  std::vector<dfw::v1::Vm> vms;
  for (int v = 0; v < kVmsPerHost; ++v) {
    std::string id = "vm-" + std::to_string(h) + "-" + std::to_string(v);
    Tags tags = {{"pool", "yes"}};
    if (v == 0) tags.push_back({"app", "web"});
    vms.push_back(
        MetadataVm(id, tags, "198.18." + std::to_string(h) + "." + std::to_string(v + 1)));
  }
  return vms;
}

// The host's full state recomputed by the model at its current revision.
HostView Reference(ModelService* model, const std::string& host) {
  HostFeed probe(host);
  probe.RequestFull();
  auto full = model->NextMessage(&probe);
  HostView want;
  EXPECT_TRUE(full && full->has_full());
  if (full) want.Apply(*full);
  return want;
}

class RegistrationStormTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ControllerOptions o;
    o.data_dir = dir_.path() + "/db";
    o.insecure = true;
    ASSERT_TRUE(server_.Start(o).ok());
    rest_ = std::make_unique<Rest>(server_.http_port());
    // Every VM is in "pool" and every vNIC's rules name it: a Hello changes
    // the state of every host connected before it.
    ASSERT_EQ(rest_->Post("/api/v1/groups", TagGroupJson("pool", "pool", "yes")).status, 201);
    ASSERT_EQ(rest_->Post("/api/v1/groups", TagGroupJson("web", "app", "web")).status, 201);
    auto p = json::parse(R"({"id":"pool","category":"CATEGORY_APPLICATION",
      "applied_to_group_ids":["pool"],
      "rules":[{"id":"in","sources":{"group_ids":["pool"]},"destinations":{"group_ids":["pool"]},
                "action":"ACTION_ALLOW"},
               {"id":"web","sources":{"group_ids":["web"]},"destinations":{"any":true},
                "action":"ACTION_ALLOW"}]})");
    ASSERT_EQ(rest_->Post("/api/v1/policies", p).status, 201);
    for (int h = 0; h < kHosts; ++h)
      hosts_.push_back(std::make_unique<TestHost>(server_.grpc_port(), HostId(h)));
  }

  // Each host reads (and acks) until it holds the model's final revision;
  // then its state must be the recomputed one. Returns the deltas received.
  int SettleAndCheck() {
    std::vector<HostView> views(kHosts);
    int deltas = 0, fulls = 0;
    for (int h = 0; h < kHosts; ++h) {  // every host gets its full state first
      auto m = hosts_[h]->Next(20000);
      EXPECT_TRUE(m && m->has_full()) << HostId(h) << ": " << (m ? m->DebugString() : "nothing");
      if (!m || !m->has_full()) return -1;
      views[h].Apply(*m);
      hosts_[h]->Ack(views[h].revision);
      ++fulls;
    }
    const uint64_t final_rev = server_.model()->revision();  // every Hello is applied
    for (int h = 0; h < kHosts; ++h) {
      while (views[h].revision < final_rev) {
        auto m = hosts_[h]->Next(10000);
        EXPECT_TRUE(m.has_value()) << HostId(h) << " stays at " << views[h].revision;
        if (!m) return -1;
        EXPECT_TRUE(m->has_delta()) << HostId(h) << ": a second full state";
        views[h].Apply(*m);
        hosts_[h]->Ack(views[h].revision);
        ++deltas;
      }
      EXPECT_EQ(views[h].revision, final_rev) << HostId(h);
    }
    for (int h = 0; h < kHosts; ++h) {
      HostView want = Reference(server_.model(), HostId(h));
      EXPECT_EQ(want.revision, final_rev);
      EXPECT_EQ(views[h].rulesets, want.rulesets) << HostId(h);
      EXPECT_EQ(views[h].sets, want.sets) << HostId(h);
      EXPECT_EQ(views[h].rulesets.size(), static_cast<size_t>(kVmsPerHost)) << HostId(h);
      EXPECT_EQ(views[h].sets["g:pool"].size(), static_cast<size_t>(kHosts * kVmsPerHost));
    }
    // Nothing more comes: no host gets a message past the final revision.
    for (int h = 0; h < kHosts; ++h) EXPECT_FALSE(hosts_[h]->Next(h == 0 ? 300 : 0).has_value());
    EXPECT_EQ(fulls, kHosts);
    // Realization: every host acked the final revision.
    EXPECT_TRUE(WaitFor([&] {
      auto r = server_.model()->Realization(dfw::v1::RealizationRequest());
      if (!r.ok() || r->hosts_size() != kHosts) return false;
      for (const auto& hr : r->hosts()) {
        if (hr.state() != dfw::v1::REALIZATION_STATE_REALIZED) return false;
      }
      return true;
    })) << server_.model()->Realization(dfw::v1::RealizationRequest())->DebugString();
    auto vms = server_.model()->ListVms(dfw::v1::ListRequest());
    EXPECT_EQ(vms->vms_size(), kHosts * kVmsPerHost);
    return deltas;
  }

  TempDir dir_;
  ControllerServer server_;
  std::unique_ptr<Rest> rest_;
  std::vector<std::unique_ptr<TestHost>> hosts_;
};

// The Hellos arrive while a change holds the writer (the storm meets a
// change in progress): they are applied together, so a host connected
// before them gets one delta for all of them, not one per Hello.
TEST_F(RegistrationStormTest, HellosArrivingDuringAChangeAreOneChangeAndODeltasPerHost) {
  const uint64_t before = server_.model()->revision();
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::promise<void> holding;
  std::thread writer([&] {
    auto r = server_.model()->CommitAuxiliary([&](ChangeSet&) {
      holding.set_value();
      released.wait();
      return absl::OkStatus();
    });
    EXPECT_TRUE(r.ok());
  });
  holding.get_future().wait();  // (the model's readers wait too)
  for (int h = 0; h < kHosts; ++h) hosts_[h]->Hello(Inventory(h));
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // all of them queued
  release.set_value();
  writer.join();
  int deltas = SettleAndCheck();
  ASSERT_GE(deltas, 0);
  // One change per batch: the Hellos queued behind the writer are one
  // batch (the registration thread may have taken the first one alone).
  EXPECT_LE(server_.model()->revision() - before, 3u);
  // Hellos one at a time would send ~kHosts^2/2 deltas (1,128 here).
  EXPECT_LE(deltas, kHosts) << "deltas sent during the registration of " << kHosts << " hosts";
}

// The same storm with nothing holding the writer: Hellos are batched as
// they come; whatever the batches, every host ends with the recomputed
// state, and far fewer deltas than one per Hello per connected host.
TEST_F(RegistrationStormTest, ConcurrentHellosEndWithTheRecomputedState) {
  std::vector<std::thread> senders;
  std::atomic<int> next{0};
  for (int t = 0; t < 4; ++t) {
    senders.emplace_back([&] {
      for (int h; (h = next++) < kHosts;) hosts_[h]->Hello(Inventory(h));
    });
  }
  for (auto& t : senders) t.join();
  int deltas = SettleAndCheck();
  ASSERT_GE(deltas, 0);
  EXPECT_LE(deltas, kHosts * kHosts / 4);
}

// The batch's semantics without gRPC: in order, as if one at a time, one
// revision, a bad Hello failing alone.
TEST(AttachHostsTest, ABatchIsOneRevisionWithTheOutcomeOfOneHelloAtATime) {
  TempDir dir;
  auto model = ModelService::Open(dir.path() + "/db");
  ASSERT_TRUE(model.ok());
  ModelService& m = **model;
  dfw::v1::PutGroupRequest g;
  g.mutable_group()->set_id("pool");
  auto* c = g.mutable_group()->add_criteria()->add_conditions()->mutable_tag();
  c->set_scope("pool");
  c->set_value("yes");
  ASSERT_TRUE(m.PutGroup(g).ok());

  auto hello = [](const std::string& host, std::vector<dfw::v1::Vm> vms) {
    ModelService::HostHelloRequest r;
    r.hello.mutable_host()->set_id(host);
    r.hello.mutable_host()->set_hostname(host + ".example");
    for (auto& vm : vms) *r.hello.add_vms() = std::move(vm);
    r.actor = "spiffe://test/host/" + host;
    r.wake = [] {};
    r.deliver = [](dfw::v1::ControllerToHost) { return true; };
    return r;
  };
  Tags pool = {{"pool", "yes"}};
  auto bad = MetadataVm("bad", pool, "198.18.9.9");
  bad.mutable_vnics(0)->set_mac("nope");
  std::vector<ModelService::HostHelloRequest> batch;
  batch.push_back(hello(
      "a", {MetadataVm("vm1", pool, "198.18.0.1"), MetadataVm("shared", pool, "198.18.0.2")}));
  // b reports a VM a holds: refused, as it would be with a connected.
  batch.push_back(hello(
      "b", {MetadataVm("shared", pool, "198.18.0.2"), MetadataVm("vm3", pool, "198.18.0.3")}));
  batch.push_back(hello("c", {MetadataVm("vm4", pool, "198.18.0.4"), bad}));
  batch.push_back(hello("", {}));
  const uint64_t before = m.revision();
  auto out = m.AttachHosts(std::move(batch));
  ASSERT_EQ(out.size(), 4u);
  ASSERT_TRUE(out[0].ok()) << out[0].status();
  ASSERT_TRUE(out[1].ok()) << out[1].status();
  EXPECT_EQ(out[2].status().code(), absl::StatusCode::kInvalidArgument) << out[2].status();
  EXPECT_EQ(out[3].status().code(), absl::StatusCode::kInvalidArgument) << out[3].status();
  EXPECT_TRUE(out[0]->full && out[1]->full);
  EXPECT_EQ(m.revision(), before + 1);  // one change for the batch
  EXPECT_EQ(m.GetVm("shared")->host(), "a");
  EXPECT_EQ(m.GetVm("vm3")->host(), "b");
  EXPECT_EQ(m.GetVm("vm3")->revision(), before + 1);
  EXPECT_FALSE(m.GetVm("vm4").ok());  // nothing of c's report
  EXPECT_FALSE(m.GetVm("bad").ok());
  auto hosts = m.ListHosts();
  ASSERT_EQ(hosts->hosts_size(), 2);
  EXPECT_EQ(hosts->hosts(1).id(), "b");
  EXPECT_EQ(hosts->hosts(1).refused_vm_claims(), 1u);
  // The change log names each reporter for its own VMs.
  auto log = m.Changes(before, 100);
  ASSERT_TRUE(log.ok());
  int events = 0;
  for (const auto& e : *log) {
    EXPECT_EQ(e.revision(), before + 1);
    if (e.id() == "vm1" || e.id() == "a") {
      EXPECT_EQ(e.actor(), "spiffe://test/host/a");
    }
    if (e.id() == "vm3" || e.id() == "b") {
      EXPECT_EQ(e.actor(), "spiffe://test/host/b");
    }
    ++events;
  }
  EXPECT_EQ(events, 5);  // vm1, shared, host a, vm3, host b
  // Both hosts' full states are at the batch's revision and hold all three
  // pool members.
  for (const auto& a : {*out[0], *out[1]}) {
    auto msg = m.NextMessage(a.feed.get());
    ASSERT_TRUE(msg && msg->has_full());
    EXPECT_EQ(msg->full().revision(), before + 1);
  }
  // Stored as one change: a restart sees the same.
  out.clear();
  model->reset();
  auto again = ModelService::Open(dir.path() + "/db");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ((*again)->revision(), before + 1);
  EXPECT_EQ((*again)->GetVm("shared")->host(), "a");
  EXPECT_EQ((*again)->ListVms(dfw::v1::ListRequest())->vms_size(), 3);
}

}  // namespace
}  // namespace dfw::controller::testing
