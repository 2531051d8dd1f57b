// The exclusion list (model.proto, Exclusion): what hosts are sent for
// excluded vNICs against a reference on random fleets, persistence, the
// API's errors, the change log, and where exclusion shows (trace, the
// impact preview, list, stats).
//
// The reference: two fleets get the same random history of tags, moves,
// policy and group edits, VM deletions and address changes; one also gets
// random exclusion list changes. After each step, on every host of the
// first: a vNIC is excluded exactly when its id or its VM's id is listed;
// an excluded vNIC's ruleset has no rules, the default rule ALLOW and
// `excluded`; every other vNIC's ruleset is the second fleet's (exclusion
// changes nothing else); the incremental views equal full states (Check).
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "dfw/controller/model_service.h"
#include "dfw/controller/store.h"
#include "random_fleet.h"
#include "test_util.h"

namespace dfw::controller::testing {
namespace {

unsigned Seed() { return std::getenv("DFW_SEED") ? std::atoi(std::getenv("DFW_SEED")) : 5; }

dfw::v1::VNicRuleset Parse(const std::string& bytes) {
  dfw::v1::VNicRuleset r;
  EXPECT_TRUE(r.ParseFromString(bytes));
  return r;
}

TEST(Exclusion, HostsGetExactlyTheListedVnicsExcludedAndNothingElseChanges) {
  for (unsigned seed = Seed(); seed < Seed() + 3; ++seed) {
    RandomFleet with(seed), without(seed);
    with.Open();
    without.Open();
    with.Populate();
    without.Populate();
    std::mt19937 rng(seed * 7919);
    std::set<std::string> vms_listed, vnics_listed;
    for (int step = 0; step < 150; ++step) {
      with.RandomChange();
      without.RandomChange();
      if (rng() % 2 == 0) {
        const bool vm = rng() % 2;
        const std::string id = (vm ? "vm" : "n") + std::to_string(rng() % RandomFleet::kVms);
        auto& listed = vm ? vms_listed : vnics_listed;
        const std::string key = (vm ? "vm:" : "vnic:") + id;
        if (listed.count(id)) {
          auto r = with.m->DeleteExclusion(key);
          ASSERT_TRUE(r.ok()) << r.status();
          listed.erase(id);
        } else {
          dfw::v1::Exclusion e;
          (vm ? e.mutable_vm_id() : e.mutable_vnic_id())->assign(id);
          e.set_reason("random step " + std::to_string(step));
          auto r = with.m->AddExclusion(e);
          // The VM may have been deleted (not in the inventory: refused).
          ASSERT_TRUE(r.ok() || r.status().code() == absl::StatusCode::kNotFound) << r.status();
          if (r.ok()) listed.insert(id);
        }
      }
      with.Drain();
      without.Drain();
      with.Check(step);
      for (int h = 0; h < RandomFleet::kHosts; ++h) {
        for (const auto& [vnic, bytes] : with.views[h].rulesets) {
          // vNIC "n<i>" belongs to VM "vm<i>" (RandomFleet).
          const bool want = vnics_listed.count(vnic) || vms_listed.count("vm" + vnic.substr(1));
          dfw::v1::VNicRuleset r = Parse(bytes);
          ASSERT_EQ(r.excluded(), want) << vnic << " seed " << seed << " step " << step;
          if (want) {
            EXPECT_EQ(r.rules_size(), 0) << vnic;
            EXPECT_EQ(r.default_rule().action(), dfw::v1::ACTION_ALLOW) << vnic;
          } else {
            auto other = without.views[h].rulesets.find(vnic);
            ASSERT_NE(other, without.views[h].rulesets.end()) << vnic << " step " << step;
            EXPECT_EQ(bytes, other->second) << vnic << " seed " << seed << " step " << step;
          }
        }
        EXPECT_EQ(with.views[h].rulesets.size(), without.views[h].rulesets.size());
      }
      if (::testing::Test::HasFailure()) return;
    }
    // The list survives a restart: a model opened from the store computes
    // the same states (and lists the same entries).
    std::vector<HostView> before;
    for (int h = 0; h < RandomFleet::kHosts; ++h) {
      before.push_back(RandomFleet::FullView(*with.m, "h" + std::to_string(h)));
    }
    auto listed_before = with.m->ListExclusions();
    ASSERT_TRUE(listed_before.ok());
    EXPECT_EQ(static_cast<size_t>(listed_before->exclusions_size()),
              vms_listed.size() + vnics_listed.size());
    with.m.reset();
    with.Open();
    for (int h = 0; h < RandomFleet::kHosts; ++h) {
      HostView after = RandomFleet::FullView(*with.m, "h" + std::to_string(h));
      EXPECT_EQ(after.rulesets, before[h].rulesets) << "host " << h << " after a restart";
    }
    auto listed_after = with.m->ListExclusions();
    ASSERT_TRUE(listed_after.ok());
    EXPECT_EQ(listed_after->SerializeAsString(), listed_before->SerializeAsString());
  }
}

class ExclusionApi : public ::testing::Test {
 protected:
  void SetUp() override {
    fleet.Open();
    fleet.Populate();
    fleet.Drain();
  }
  absl::StatusOr<dfw::v1::Exclusion> Add(const std::string& vm, const std::string& vnic,
                                         const std::string& reason) {
    dfw::v1::Exclusion e;
    e.set_vm_id(vm);
    e.set_vnic_id(vnic);
    e.set_reason(reason);
    return fleet.m->AddExclusion(e);
  }
  RandomFleet fleet{3};
};

TEST_F(ExclusionApi, BadEntriesAreRefusedNamingTheFieldAndChangeNothing) {
  const uint64_t rev = fleet.m->revision();
  struct Case {
    std::string vm, vnic, reason;
    absl::StatusCode code;
    std::string needle;
  } cases[] = {
      {"", "", "why", absl::StatusCode::kInvalidArgument, "exactly one of vm_id and vnic_id"},
      {"vm1", "n1", "why", absl::StatusCode::kInvalidArgument, "exactly one"},
      {"vm1", "", "", absl::StatusCode::kInvalidArgument, "exclusion.reason"},
      {"vm1", "", std::string(257, 'x'), absl::StatusCode::kInvalidArgument, "exclusion.reason"},
      {"vm1", "", "two\nlines", absl::StatusCode::kInvalidArgument, "control characters"},
      {"vm/1", "", "why", absl::StatusCode::kInvalidArgument, "exclusion.vm_id"},
      {"", "bad id", "why", absl::StatusCode::kInvalidArgument, "exclusion.vnic_id"},
      {"no-such-vm", "", "why", absl::StatusCode::kNotFound, "not in the inventory"},
      {"", "no-such-vnic", "why", absl::StatusCode::kNotFound, "not in the inventory"},
  };
  for (const auto& c : cases) {
    auto r = Add(c.vm, c.vnic, c.reason);
    ASSERT_FALSE(r.ok()) << c.vm << "/" << c.vnic;
    EXPECT_EQ(r.status().code(), c.code) << r.status();
    EXPECT_NE(r.status().message().find(c.needle), std::string::npos) << r.status();
  }
  auto gone = fleet.m->DeleteExclusion("vm:vm1");
  EXPECT_EQ(gone.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(fleet.m->revision(), rev);
  auto list = fleet.m->ListExclusions();
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->exclusions_size(), 0);
}

TEST_F(ExclusionApi, AnEntryIsAuditedListedWithWhatItCoversAndAddedOnce) {
  ActorScope actor("spiffe://dfw.test/user/alice");
  auto added = Add("vm2", "", "backup appliance");
  ASSERT_TRUE(added.ok()) << added.status();
  EXPECT_EQ(added->created_by(), "spiffe://dfw.test/user/alice");
  EXPECT_EQ(added->revision(), fleet.m->revision());
  EXPECT_GT(added->created_unix_ms(), 0);
  ASSERT_EQ(added->covered_vnic_ids_size(), 1);
  EXPECT_EQ(added->covered_vnic_ids(0), "n2");
  ASSERT_EQ(added->host_ids_size(), 1);
  auto vm = fleet.m->GetVm("vm2");
  ASSERT_TRUE(vm.ok());
  EXPECT_EQ(added->host_ids(0), vm->host());

  auto again = Add("vm2", "", "twice");
  EXPECT_EQ(again.status().code(), absl::StatusCode::kAlreadyExists);

  auto events = fleet.m->Changes(added->revision() - 1, 10);
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->size(), 1u);
  EXPECT_EQ((*events)[0].kind(), dfw::v1::ChangeEvent::KIND_EXCLUSION);
  EXPECT_EQ((*events)[0].id(), "vm:vm2");
  EXPECT_EQ((*events)[0].actor(), "spiffe://dfw.test/user/alice");

  ModelStats st = fleet.m->Stats();
  EXPECT_EQ(st.exclusions, 1u);
  EXPECT_EQ(st.excluded_vnics, 1u);

  // The entry outlives its VM, covering nothing until it comes back.
  dfw::v1::DeleteRequest d;
  d.set_id("vm2");
  ASSERT_TRUE(fleet.m->DeleteVm(d).ok());
  auto list = fleet.m->ListExclusions();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->exclusions_size(), 1);
  EXPECT_EQ(list->exclusions(0).covered_vnic_ids_size(), 0);
  EXPECT_EQ(fleet.m->Stats().excluded_vnics, 0u);
  dfw::v1::PutVmRequest put;
  *put.mutable_vm() = *vm;
  put.mutable_vm()->clear_revision();
  ASSERT_TRUE(fleet.m->PutVm(put).ok());
  fleet.Drain();
  HostView v = RandomFleet::FullView(*fleet.m, vm->host());
  ASSERT_TRUE(v.rulesets.count("n2"));
  EXPECT_TRUE(Parse(v.rulesets["n2"]).excluded());

  auto del = fleet.m->DeleteExclusion("vm:vm2");
  ASSERT_TRUE(del.ok()) << del.status();
  events = fleet.m->Changes(del->revision() - 1, 10);
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->size(), 1u);
  EXPECT_TRUE((*events)[0].deleted());
  v = RandomFleet::FullView(*fleet.m, vm->host());
  EXPECT_FALSE(Parse(v.rulesets["n2"]).excluded());
}

TEST_F(ExclusionApi, TraceAndThePreviewSayWhatIsExcluded) {
  // A policy allowing nothing but what it names, applied to every vNIC.
  dfw::v1::PutPolicyRequest p;
  p.mutable_policy()->set_id("deny-ssh");
  p.mutable_policy()->set_category(dfw::v1::CATEGORY_APPLICATION);
  auto* r = p.mutable_policy()->add_rules();
  r->set_id("ssh");
  r->mutable_sources()->set_any(true);
  r->mutable_destinations()->set_any(true);
  auto* svc = r->add_services();
  svc->set_protocol(6);
  svc->add_destination_ports()->set_first(22);
  r->set_action(dfw::v1::ACTION_DROP);
  ASSERT_TRUE(fleet.m->PutPolicy(p).ok());
  dfw::v1::TraceRequest t;
  t.set_from_vm_id("vm1");
  t.set_to_vm_id("vm5");
  t.set_protocol(6);
  t.set_destination_port(22);
  auto before = fleet.m->Trace(t);
  ASSERT_TRUE(before.ok()) << before.status();
  ASSERT_FALSE(before->allowed());

  ASSERT_TRUE(Add("vm1", "", "jump host").ok());
  auto traced = fleet.m->Trace(t);
  ASSERT_TRUE(traced.ok()) << traced.status();
  ASSERT_EQ(traced->stages_size(), 2);
  EXPECT_TRUE(traced->stages(0).excluded());
  EXPECT_TRUE(traced->stages(0).passes());
  EXPECT_NE(traced->stages(0).explanation().find("exclusion list"), std::string::npos);
  // The receiver is still protected: its ingress drops SSH.
  EXPECT_FALSE(traced->stages(1).excluded());
  EXPECT_FALSE(traced->allowed());
  EXPECT_EQ(traced->decided_by(), dfw::v1::TraceStage::KIND_INGRESS);

  ASSERT_TRUE(Add("", "n5", "being debugged").ok());
  traced = fleet.m->Trace(t);
  ASSERT_TRUE(traced.ok());
  EXPECT_TRUE(traced->stages(1).excluded());
  EXPECT_TRUE(traced->allowed());

  // The preview of a change to the policy lists the excluded vNICs apart.
  dfw::v1::PreviewPolicyRequest pr;
  *pr.mutable_policy() = p.policy();
  pr.mutable_policy()->mutable_rules(0)->set_action(dfw::v1::ACTION_REJECT);
  auto impact = fleet.m->PreviewPolicy(pr);
  ASSERT_TRUE(impact.ok()) << impact.status();
  std::set<std::string> excluded(impact->excluded_vnic_ids().begin(),
                                 impact->excluded_vnic_ids().end());
  EXPECT_EQ(excluded, (std::set<std::string>{"n1", "n5"}));
  for (const auto& v : impact->vnics()) {
    EXPECT_FALSE(excluded.count(v.vnic_id())) << v.vnic_id() << " listed as changed";
  }
  EXPECT_GT(impact->vnics_size(), 0);
}

}  // namespace
}  // namespace dfw::controller::testing
