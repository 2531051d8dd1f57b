// A VM moving between hypervisors: VmHandover's claims and connection
// exports alone, then the whole exchange over real host sessions (the
// in-process controller, two hosts): the destination's report is a claim,
// the source's export and removal hand the VM and its connections over in
// one change, the import reaches the new owner before its rules, and a
// stale report of the source cannot take the VM back.
#include "dfw/controller/vm_handover.h"

#include <string>

#include "test_host.h"
#include "test_util.h"

namespace dfw::controller::testing {
namespace {

using nlohmann::json;
using Clock = VmHandover::Clock;

dfw::v1::Vm Reported(const std::string& id, const std::string& host) {
  dfw::v1::Vm vm = MetadataVm(id, {{"app", "db"}}, "198.18.0.12");
  vm.set_host(host);
  return vm;
}

dfw::v1::ConnectionEntry Entry(uint32_t sport) {
  dfw::v1::ConnectionEntry e;
  e.set_protocol(6);
  e.set_src_ip(std::string("\xc6\x12\x00\x0b", 4));
  e.set_dst_ip(std::string("\xc6\x12\x00\x0c", 4));
  e.set_src_port(sport);
  e.set_dst_port(5432);
  e.set_direction(dfw::v1::DIRECTION_IN);
  e.set_state(dfw::v1::CONNECTION_STATE_ESTABLISHED);
  return e;
}

dfw::v1::ConnectionExport Export(const std::string& vm, const std::string& vnic, uint32_t first,
                                 uint32_t n, bool last) {
  dfw::v1::ConnectionExport m;
  m.set_vm_id(vm);
  m.set_vnic_id(vnic);
  for (uint32_t i = 0; i < n; ++i) *m.add_entries() = Entry(first + i);
  m.set_last(last);
  return m;
}

auto Any = [](const std::string&) { return true; };

TEST(VmHandover, TheNewestEligibleClaimTakesTheVmOver) {
  VmHandover h;
  auto t = Clock::now();
  h.Claim(Reported("vm1", "h2"), t);
  h.Claim(Reported("vm1", "h3"), t + std::chrono::seconds(1));
  EXPECT_EQ(h.Claimants("vm1"), (std::vector<std::string>{"h2", "h3"}));
  // h3 is not connected: h2's older claim wins.
  auto c = h.TakeClaim("vm1", "h1", [](const std::string& host) { return host != "h3"; });
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->host(), "h2");
  EXPECT_EQ(h.Claimants("vm1"), (std::vector<std::string>{"h3"}));
  // The owner's own claim never counts.
  EXPECT_FALSE(h.TakeClaim("vm1", "h3", Any).has_value());
  EXPECT_FALSE(h.TakeClaim("vm2", "h1", Any).has_value());
  EXPECT_EQ(h.stats().handovers, 1u);
}

TEST(VmHandover, ClaimsGoWhenTheHostStopsReportingTheVm) {
  VmHandover h;
  auto t = Clock::now();
  h.Claim(Reported("vm1", "h2"), t);
  h.Claim(Reported("vm2", "h2"), t);
  h.Claim(Reported("vm2", "h3"), t);
  h.KeepClaims("h2", [](const std::string& id) { return id == "vm2"; });  // a Hello with vm2
  EXPECT_TRUE(h.Claimants("vm1").empty());
  EXPECT_EQ(h.Claimants("vm2"), (std::vector<std::string>{"h2", "h3"}));
  h.Unclaim("vm2", "h3");
  EXPECT_EQ(h.Claimants("vm2"), (std::vector<std::string>{"h2"}));
  EXPECT_EQ(h.stats().claims_waiting, 1u);
}

TEST(VmHandover, ACompleteExportGoesToAnotherOwnerInChunks) {
  VmHandover h;
  auto t = Clock::now();
  const uint32_t n = VmHandover::kEntriesPerImport + 5;
  ASSERT_TRUE(h.AddExport("h1", Export("vm1", "nic0", 0, 5000, false), t).ok());
  ASSERT_TRUE(h.AddExport("h1", Export("vm1", "nic0", 5000, n - 5000, true), t).ok());
  ASSERT_TRUE(h.AddExport("h1", Export("vm1", "nic1", 0, 3, false), t).ok());  // never finished
  // Not back to the host that sent it.
  EXPECT_TRUE(h.TakeImports("vm1", "h1", t).empty());
  auto imports = h.TakeImports("vm1", "h2", t);
  ASSERT_EQ(imports.size(), 2u) << "the unfinished vNIC does not move";
  EXPECT_EQ(imports[0].vnic_id(), "nic0");
  EXPECT_EQ(imports[0].from_host(), "h1");
  EXPECT_EQ(imports[0].entries_size(), VmHandover::kEntriesPerImport);
  EXPECT_FALSE(imports[0].last());
  EXPECT_EQ(imports[1].entries_size(), 5);
  EXPECT_TRUE(imports[1].last());
  // In order, none lost or repeated.
  uint32_t want = 0;
  for (const auto& m : imports) {
    for (const auto& e : m.entries()) EXPECT_EQ(e.src_port(), want++);
  }
  EXPECT_EQ(want, n);
  EXPECT_TRUE(h.TakeImports("vm1", "h2", t).empty()) << "taken once";
  EXPECT_EQ(h.stats().entries_moved, n);
  EXPECT_EQ(h.stats().entries_dropped, 3u);
}

TEST(VmHandover, ExportsExpireAndANewExportReplacesTheOld) {
  VmHandover h;
  auto t = Clock::now();
  ASSERT_TRUE(h.AddExport("h1", Export("vm1", "nic0", 0, 4, true), t).ok());
  ASSERT_TRUE(h.AddExport("h1", Export("vm1", "nic0", 100, 2, true), t).ok());
  auto imports = h.TakeImports("vm1", "h2", t);
  ASSERT_EQ(imports.size(), 1u);
  ASSERT_EQ(imports[0].entries_size(), 2);
  EXPECT_EQ(imports[0].entries(0).src_port(), 100u);

  ASSERT_TRUE(h.AddExport("h1", Export("vm1", "nic0", 0, 4, true), t).ok());
  EXPECT_TRUE(
      h.TakeImports("vm1", "h2", t + VmHandover::kExportTtl + std::chrono::seconds(1)).empty());
  EXPECT_FALSE(h.AddExport("h1", Export("", "nic0", 0, 1, true), t).ok());
  EXPECT_FALSE(h.AddExport("h1", Export("vm1", "", 0, 1, true), t).ok());
}

// ---------------------------------------------------------- over sessions

class HandoverSessionTest : public WebToDbControllerTest {
 protected:
  // The host record as JSON (empty when unknown).
  json Host(const std::string& id) {
    json hosts = rest_->Get("/api/v1/hosts").body["hosts"];  // a copy: see the loop
    for (const auto& h : hosts) {
      if (h.value("id", "") == id) return h;
    }
    return json::object();
  }
  std::string HostOf(const std::string& vm) {
    return rest_->Get("/api/v1/vms/" + vm).body.value("host", "");
  }
  // Acks a host's initial full state; returns its revision.
  static uint64_t AckFull(TestHost& h) {
    auto m = h.Next();
    EXPECT_TRUE(m && m->has_full());
    if (!m || !m->has_full()) return 0;
    h.Ack(m->full().revision());
    return m->full().revision();
  }
  static bool SetsRuleset(const dfw::v1::ControllerToHost& m, const std::string& vnic) {
    for (const auto& r : m.delta().rulesets_set()) {
      if (r.vnic_id() == vnic) return true;
    }
    for (const auto& r : m.full().rulesets()) {
      if (r.vnic_id() == vnic) return true;
    }
    return false;
  }
};

TEST_F(HandoverSessionTest, TheSourceLetsGoAndTheClaimantGetsConnectionsThenRules) {
  const std::string vm = "db-1", nic = "db-1-nic0";
  TestHost h1(server_.grpc_port(), "h1");
  h1.Hello({MetadataVm(vm, {{"app", "db"}}, "198.18.0.12")});
  AckFull(h1);
  TestHost h2(server_.grpc_port(), "h2");
  h2.Hello({});
  AckFull(h2);

  // The destination reports the VM while the source still runs it: a claim.
  h2.Inventory({MetadataVm(vm, {{"app", "db"}}, "198.18.0.12")});
  ASSERT_TRUE(WaitFor([&] { return Host("h2").value("refused_vm_claims", "0") == "1"; }));
  EXPECT_EQ(HostOf(vm), "h1");
  EXPECT_FALSE(h2.Next(300).has_value()) << "no rules for a VM it does not hold";

  // The source exports the vNIC's connections, then lets the VM go.
  h1.Connections(Export(vm, nic, 40000, 3, true));
  h1.Inventory({}, {vm});

  auto first = h2.Next();
  ASSERT_TRUE(first.has_value());
  ASSERT_TRUE(first->has_connections())
      << "the import comes before the rules: " << first->DebugString();
  EXPECT_EQ(first->connections().vnic_id(), nic);
  EXPECT_EQ(first->connections().from_host(), "h1");
  EXPECT_EQ(first->connections().entries_size(), 3);
  EXPECT_TRUE(first->connections().last());
  auto rules = h2.Next();
  ASSERT_TRUE(rules && rules->has_delta());
  EXPECT_TRUE(SetsRuleset(*rules, nic)) << rules->DebugString();
  h2.Ack(rules->delta().to_revision());
  auto gone = h1.Next();
  ASSERT_TRUE(gone && gone->has_delta());
  EXPECT_EQ(gone->delta().to_revision(), rules->delta().to_revision()) << "one change";
  ASSERT_EQ(gone->delta().rulesets_removed_size(), 1);
  EXPECT_EQ(gone->delta().rulesets_removed(0), nic);
  EXPECT_EQ(HostOf(vm), "h2");
  // Never removed: its address stayed in its group throughout.
  json events = rest_->Get("/api/v1/changes?from_revision=0").body["events"];
  ASSERT_FALSE(events.empty());
  for (const auto& e : events) {
    EXPECT_FALSE(e.value("id", "") == vm && e.value("deleted", false)) << e;
  }

  // A stale report of the source only claims: the VM stays with h2 and h1
  // gets no rules for it.
  h1.Inventory({MetadataVm(vm, {{"app", "db"}}, "198.18.0.12")});
  ASSERT_TRUE(WaitFor([&] { return Host("h1").value("refused_vm_claims", "0") == "1"; }));
  EXPECT_EQ(HostOf(vm), "h2");
  EXPECT_FALSE(h1.Next(300).has_value());

  // h1 lets go of its claim; h2 then removes the VM: gone for good.
  h1.Inventory({}, {vm});
  h2.Inventory({}, {vm});
  ASSERT_TRUE(WaitFor([&] { return rest_->Get("/api/v1/vms/" + vm).status == 404; }));
}

TEST_F(HandoverSessionTest, ConnectionsOfAVmItDoesNotHoldAreIgnored) {
  TestHost h1(server_.grpc_port(), "h1");
  h1.Hello({MetadataVm("db-1", {{"app", "db"}}, "198.18.0.12")});
  AckFull(h1);
  TestHost h2(server_.grpc_port(), "h2");
  h2.Hello({});
  AckFull(h2);
  TestHost h3(server_.grpc_port(), "h3");
  h3.Hello({});
  AckFull(h3);
  h3.Inventory({MetadataVm("db-1", {{"app", "db"}}, "198.18.0.12")});
  // h2 does not hold db-1: its export must not reach the VM's next owner.
  h2.Connections(Export("db-1", "db-1-nic0", 1, 2, true));
  h1.Inventory({}, {"db-1"});
  ASSERT_TRUE(WaitFor([&] { return HostOf("db-1") == "h3"; }));
  auto m = h3.Next();
  ASSERT_TRUE(m.has_value());
  EXPECT_FALSE(m->has_connections()) << m->DebugString();
  EXPECT_TRUE(m->has_delta());
}

TEST_F(HandoverSessionTest, AVmPickedUpAfterItsHostLeftGetsTheConnectionsItExported) {
  auto h1 = std::make_unique<TestHost>(server_.grpc_port(), "h1");
  h1->Hello({MetadataVm("db-1", {{"app", "db"}}, "198.18.0.12")});
  AckFull(*h1);
  h1->Connections(Export("db-1", "db-1-nic0", 7, 2, true));
  ASSERT_TRUE(WaitFor([&] { return server_.model()->Stats().handover.exports == 1; }));
  h1.reset();  // the source is gone (it stays the VM's host, disconnected)
  ASSERT_TRUE(WaitFor([&] {
    json h = Host("h1");
    return !h.empty() && !h.value("connected", false);
  }));
  TestHost h2(server_.grpc_port(), "h2");
  h2.Hello({MetadataVm("db-1", {{"app", "db"}}, "198.18.0.12")});
  auto first = h2.Next();
  ASSERT_TRUE(first && first->has_connections()) << (first ? first->DebugString() : "none");
  EXPECT_EQ(first->connections().entries_size(), 2);
  auto full = h2.Next();
  ASSERT_TRUE(full && full->has_full());
  EXPECT_TRUE(SetsRuleset(*full, "db-1-nic0"));
  EXPECT_EQ(HostOf("db-1"), "h2");
}

}  // namespace
}  // namespace dfw::controller::testing
