// ModelService's change path (model_service.cc, ModelService::Change): a
// change whose store write fails leaves the model exactly as it was (the
// index, the compiled rulesets and address sets of every host, every
// object, the revision), whatever kind of change it was; and what the model
// holds after a random history is what a load of its store holds. The store
// is the real RocksDB store behind a wrapper that refuses a write on demand
// (the unit-test stand-in for a full disk; controller_store_durability
// refuses writes with a real full tmpfs).
#include <memory>
#include <random>
#include <string>

#include "dfw/controller/model_service.h"
#include "dfw/controller/store.h"
#include "random_fleet.h"
#include "test_util.h"

namespace dfw::controller::testing {
namespace {

class RefusingStore : public Store {
 public:
  RefusingStore(std::unique_ptr<Store> inner, bool* refuse)
      : inner_(std::move(inner)), refuse_(refuse) {}
  bool read_only() const override { return inner_->read_only(); }
  std::string Describe() const override { return inner_->Describe(); }
  absl::StatusOr<StoredState> Load() const override { return inner_->Load(); }
  absl::Status Commit(const ChangeSet& change) override {
    if (*refuse_) return absl::ResourceExhaustedError("store: refused by the test");
    return inner_->Commit(change);
  }
  absl::Status Get(Kind kind, const std::string& id,
                   google::protobuf::Message* out) const override {
    return inner_->Get(kind, id, out);
  }
  absl::Status ForEach(Kind kind,
                       const std::function<absl::Status(const std::string&)>& fn) const override {
    return inner_->ForEach(kind, fn);
  }
  absl::StatusOr<std::vector<dfw::v1::ChangeEvent>> ChangesSince(uint64_t from,
                                                                 size_t limit) const override {
    return inner_->ChangesSince(from, limit);
  }

 private:
  std::unique_ptr<Store> inner_;
  bool* refuse_;
};

// Everything a reader can see of the model, as text to compare.
std::string Snapshot(const ModelService& m) {
  std::string out = "revision " + std::to_string(m.revision()) + "\n";
  for (int h = 0; h < RandomFleet::kHosts + 2; ++h) {
    HostView v = RandomFleet::FullView(m, "h" + std::to_string(h));
    for (const auto& [vnic, rules] : v.rulesets) out += "ruleset " + vnic + " " + rules + "\n";
    for (const auto& [id, prefixes] : v.sets) {
      out += "set " + id;
      for (const auto& p : prefixes) out += " " + p;
      out += "\n";
    }
  }
  dfw::v1::ListRequest all;
  all.set_page_size(10000);
  out += m.ListVms(all)->SerializeAsString() + "\n";
  auto groups = m.ListGroups(all);
  out += groups->SerializeAsString() + "\n";
  for (const auto& g : groups->groups()) {
    out += m.GroupMembers(g.id())->SerializeAsString() + "\n";
  }
  out += m.ListPolicies(all)->SerializeAsString() + "\n";
  auto hosts = m.ListHosts();
  EXPECT_TRUE(hosts.ok());
  if (hosts.ok()) {
    for (const auto& h : hosts->hosts()) out += "host " + h.id() + "\n";
  }
  return out;
}

TEST(ModelChangeTest, ARefusedWriteChangesNothingAndTheModelIsWhatItsStoreLoads) {
  const unsigned seed = std::getenv("DFW_SEED") ? std::atoi(std::getenv("DFW_SEED")) : 5;
  RandomFleet f(seed);
  bool refuse = false;
  auto rocks = Store::Open(f.dir.path() + "/db");
  ASSERT_TRUE(rocks.ok()) << rocks.status();
  ASSERT_NO_FATAL_FAILURE(f.Open(std::make_unique<RefusingStore>(std::move(*rocks), &refuse)));
  ASSERT_NO_FATAL_FAILURE(f.Populate());
  const int kHosts = RandomFleet::kHosts, kVms = RandomFleet::kVms;
  int refused = 0;
  for (int step = 0; step < 400; ++step) {
    refuse = f.rng() % 2 == 0;
    const std::string before = refuse ? Snapshot(*f.m) : std::string();
    const int op = static_cast<int>(f.rng() % 10);
    const std::string vm = "vm" + std::to_string(f.rng() % kVms);
    const std::string host = "h" + std::to_string(f.rng() % kHosts);
    absl::Status s;
    if (op == 0) {  // tags of two VMs at once
      dfw::v1::TagRequest t;
      t.add_vm_ids(vm);
      t.add_vm_ids("vm" +
                   std::to_string((f.rng() % (kVms - 1) + 1 + std::atoi(vm.c_str() + 2)) % kVms));
      auto* set = t.add_set();
      set->set_scope(f.rng() % 2 ? "app" : "tier");
      set->set_value(std::to_string(f.rng() % 4));
      s = f.m->Tag(t).status();
    } else if (op == 1) {  // a VM put on another host with another address
      auto cur = f.m->GetVm(vm);
      dfw::v1::PutVmRequest r;
      *r.mutable_vm() = cur.ok() ? *cur : f.VmProto(std::atoi(vm.c_str() + 2), 0);
      r.mutable_vm()->set_host(host);
      r.mutable_vm()->mutable_vnics(0)->add_addresses()->set_ip("198.18.2." +
                                                                std::to_string(f.rng() % 250 + 1));
      s = f.m->PutVm(r).status();
    } else if (op == 2) {
      dfw::v1::DeleteRequest d;
      d.set_id(vm);
      s = f.m->DeleteVm(d).status();
    } else if (op == 3) {  // a policy edited, with a new rule (a new rule number)
      dfw::v1::PutPolicyRequest r;
      *r.mutable_policy() = f.PolicyProto(static_cast<int>(f.rng() % RandomFleet::kPolicies));
      r.mutable_policy()->mutable_rules(1)->set_id("r" + std::to_string(100 + step));
      s = f.m->PutPolicy(r).status();
    } else if (op == 4) {
      dfw::v1::DeleteRequest d;
      d.set_id("p" + std::to_string(f.rng() % RandomFleet::kPolicies));
      s = f.m->DeletePolicy(d).status();
    } else if (op == 5) {  // a group edited, or an extra one made
      dfw::v1::PutGroupRequest r;
      *r.mutable_group() = f.GroupProto(static_cast<int>(f.rng() % (RandomFleet::kGroups + 3)));
      s = f.m->PutGroup(r).status();
    } else if (op == 6) {  // an extra group removed (the others are referenced)
      dfw::v1::DeleteRequest d;
      d.set_id("g" + std::to_string(RandomFleet::kGroups + f.rng() % 3));
      s = f.m->DeleteGroup(d).status();
    } else if (op == 7) {  // a host's inventory: one VM new, one gone
      dfw::v1::InventoryUpdate u;
      dfw::v1::Vm* n = u.add_vms_set();
      *n = f.VmProto(kVms + step, 0);
      n->mutable_vnics(0)->mutable_addresses(0)->set_ip("198.19.3." +
                                                        std::to_string(step % 250 + 1));
      u.add_vms_removed(vm);
      s = f.m->UpdateInventory(host, u);
    } else if (op == 8) {  // a new host registers with VMs (the batch path)
      dfw::v1::HostHello hello;
      hello.mutable_host()->set_id("h" + std::to_string(kHosts + step % 2));
      for (int i = 0; i < 3; ++i) {
        dfw::v1::Vm* n = hello.add_vms();
        *n = f.VmProto(kVms + 1000 + step * 3 + i, 0);
        n->mutable_vnics(0)->mutable_addresses(0)->set_ip("198.19.4." +
                                                          std::to_string((step * 3 + i) % 250 + 1));
      }
      auto a = f.Attach(hello);
      s = a.status();
      if (a.ok()) f.m->DetachHost(hello.host().id(), a->generation);
    } else {  // a host that is not connected removed with its VMs
      s = f.m->DeleteHost("h" + std::to_string(kHosts + step % 2)).status();
    }
    if (refuse) {
      refuse = false;
      if (s.ok() && Snapshot(*f.m) == before) continue;  // nothing to write: no write
      EXPECT_FALSE(s.ok()) << "step " << step << " op " << op;
      EXPECT_EQ(Snapshot(*f.m), before) << "step " << step << " op " << op << ": " << s;
      if (!s.ok() && s.code() == absl::StatusCode::kResourceExhausted) ++refused;
      if (::testing::Test::HasFailure()) return;
    }
  }
  EXPECT_GT(refused, 100);
  // What the model holds is what its store loads.
  const std::string held = Snapshot(*f.m);
  f.feeds.clear();
  f.m.reset();
  ASSERT_NO_FATAL_FAILURE(f.Open());
  EXPECT_EQ(Snapshot(*f.m), held);
}

}  // namespace
}  // namespace dfw::controller::testing
