// Host sessions under attack, over real gRPC streams against the in-process
// controller: a host cannot ack what it was never sent, a restart forgets
// every ack, a host cannot take a VM another connected host holds, and a
// host that is gone can be deleted (and never holds a policy back).
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <limits>
#include <set>
#include <string>
#include <thread>

#include "dfw/v1/controller.grpc.pb.h"
#include "test_host.h"
#include "test_util.h"

namespace dfw::controller::testing {
namespace {

using nlohmann::json;

dfw::v1::Vm Vm(const std::string& id, const std::string& tag_app, const std::string& ip) {
  return MetadataVm(id, tag_app.empty() ? Tags{} : Tags{{"app", tag_app}}, ip);
}

// A uint64 field of protobuf's JSON (a string; absent when 0).
uint64_t U64(const json& j, const std::string& key) {
  if (!j.is_object() || !j.contains(key)) return 0;
  return std::stoull(j[key].get<std::string>());
}

class HostSessionAuthzTest : public WebToDbControllerTest {
 protected:
  void Restart() {
    rest_.reset();
    server_.Stop();
    ASSERT_TRUE(server_.Start(opts_).ok());
    rest_ = std::make_unique<Rest>(server_.http_port());
  }

  // GET /api/v1/hosts: the host's entry (null when absent).
  json Host(const std::string& id) {
    json hosts = rest_->Get("/api/v1/hosts").body["hosts"];
    for (const auto& h : hosts) {
      if (h["id"] == id) return h;
    }
    return nullptr;
  }
  bool Connected(const std::string& id) {
    json h = Host(id);
    return h.is_object() && h.value("connected", false);
  }
  json Realization(const std::string& policy = "web-to-db") {
    return rest_->Get("/api/v1/realization?policy_id=" + policy).body;
  }
  std::string PolicyState(const std::string& policy = "web-to-db") {
    return Realization(policy)["policies"][0].value("state", "");
  }
  // The host's entry in the realization's host list ("" when absent).
  std::string HostState(const std::string& id) {
    json hosts = Realization()["hosts"];
    for (const auto& h : hosts) {
      if (h["host_id"] == id) return h.value("state", "");
    }
    return "";
  }
  // A policy change every host holding a db vNIC receives; its revision.
  uint64_t TouchPolicy(int priority) {
    auto p = rest_->Get("/api/v1/policies/web-to-db").body;
    p["priority"] = priority;
    p.erase("revision");
    auto r = rest_->Put("/api/v1/policies/web-to-db", p);
    EXPECT_EQ(r.status, 200) << r.body;
    return U64(r.body, "revision");
  }
};

constexpr const char* kRealized = "REALIZATION_STATE_REALIZED";
constexpr const char* kPending = "REALIZATION_STATE_PENDING";
constexpr const char* kDisconnected = "REALIZATION_STATE_DISCONNECTED";

TEST_F(HostSessionAuthzTest, AckOfARevisionNeverSentEndsTheSessionAndCountsForNothing) {
  TestHost h1(server_.grpc_port(), "h1");
  h1.Hello({Vm("db-1", "db", "198.18.0.10")});
  auto full = h1.Next();
  ASSERT_TRUE(full && full->has_full());
  uint64_t rev = full->full().revision();
  h1.Ack(rev);
  ASSERT_TRUE(WaitFor([&] { return U64(Host("h1"), "realized_revision") == rev; }));

  h1.Ack(std::numeric_limits<uint64_t>::max());
  grpc::Status st = h1.WaitClosed();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(st.error_message(),
            "ack: revision 18446744073709551615 was never sent to host h1 (last sent " +
                std::to_string(rev) + ")");
  EXPECT_EQ(U64(Host("h1"), "realized_revision"), rev);  // unchanged
  ASSERT_TRUE(WaitFor([&] { return !Connected("h1"); }));
  // A change h1 never received is not realized on it.
  TouchPolicy(5);
  EXPECT_EQ(PolicyState(), kDisconnected) << Realization();

  // A Hello claiming to hold a revision never sent gets a full state, and
  // the claim counts for nothing until the full state's ack.
  TestHost h2(server_.grpc_port(), "h2");
  h2.Hello({Vm("db-2", "db", "198.18.0.11")}, std::numeric_limits<uint64_t>::max() - 1);
  auto full2 = h2.Next();
  ASSERT_TRUE(full2 && full2->has_full()) << (full2 ? full2->DebugString() : "nothing");
  uint64_t rev2 = full2->full().revision();
  EXPECT_EQ(U64(Host("h2"), "realized_revision"), 0u);
  EXPECT_EQ(HostState("h2"), kPending);
  // One past what was sent is as bad as 2^64-1.
  h2.Ack(rev2 + 1);
  st = h2.WaitClosed();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(U64(Host("h2"), "realized_revision"), 0u);

  // The honest path: a full state, acked.
  TestHost h2b(server_.grpc_port(), "h2");
  h2b.Hello({Vm("db-2", "db", "198.18.0.11")});
  auto m = h2b.Next();
  ASSERT_TRUE(m && m->has_full());
  h2b.Ack(m->full().revision());
  EXPECT_TRUE(WaitFor([&] { return HostState("h2") == kRealized; })) << Realization();
  EXPECT_EQ(U64(Host("h2"), "realized_revision"), m->full().revision());
}

TEST_F(HostSessionAuthzTest, ReconnectHoldingWhatWasSentCountsAsAcked) {
  uint64_t held = 0;
  {
    TestHost h1(server_.grpc_port(), "h1");
    h1.Hello({Vm("db-1", "db", "198.18.0.10")});
    auto full = h1.Next();
    ASSERT_TRUE(full && full->has_full());
    held = full->full().revision();  // received, never acked
  }
  ASSERT_TRUE(WaitFor([&] { return !Connected("h1"); }));
  EXPECT_EQ(U64(Host("h1"), "realized_revision"), 0u);
  TestHost h1(server_.grpc_port(), "h1");
  h1.Hello({Vm("db-1", "db", "198.18.0.10")}, held);
  // Holding exactly the last revision sent: nothing to send, and as good
  // as an ack of it.
  ASSERT_TRUE(WaitFor([&] { return U64(Host("h1"), "realized_revision") == held; }));
  EXPECT_EQ(HostState("h1"), kRealized) << Realization();
  EXPECT_FALSE(h1.Next(300).has_value());
}

TEST_F(HostSessionAuthzTest, AfterARestartOnlyAcksToThisProcessCount) {
  {
    // Registered, holds no vNIC in any policy's span, never comes back.
    TestHost empty(server_.grpc_port(), "empty");
    empty.Hello({});
    ASSERT_TRUE(empty.Next().has_value());
  }
  uint64_t rev = 0;
  {
    TestHost h1(server_.grpc_port(), "h1");
    h1.Hello({Vm("db-1", "db", "198.18.0.10")});
    auto full = h1.Next();
    ASSERT_TRUE(full && full->has_full());
    rev = full->full().revision();
    h1.Ack(rev);
    ASSERT_TRUE(WaitFor([&] { return PolicyState() == kRealized; })) << Realization();
  }
  // A host that never acked anything.
  {
    TestHost h2(server_.grpc_port(), "h2");
    h2.Hello({Vm("db-2", "db", "198.18.0.11")});
    ASSERT_TRUE(h2.Next().has_value());
  }
  ASSERT_TRUE(WaitFor([&] { return !Connected("h1") && !Connected("h2"); }));
  uint64_t current = U64(rest_->Get("/api/v1/realization").body, "current_revision");

  Restart();
  // Nobody acked anything to this process: nothing is realized.
  json real = Realization();
  EXPECT_EQ(PolicyState(), kDisconnected) << real;
  for (const char* h : {"h1", "h2", "empty"}) {
    EXPECT_EQ(HostState(h), kDisconnected) << h << " " << real;
    EXPECT_EQ(U64(Host(h), "realized_revision"), 0u) << h;
  }
  // The policy waits only for the hosts holding a vNIC it applies to.
  std::set<std::string> span;
  for (const auto& h : real["policies"][0]["hosts"]) span.insert(h["host_id"]);
  EXPECT_EQ(span, (std::set<std::string>{"h1", "h2"}));

  // h1 comes back holding the revision the controller is at: it still gets
  // a full state (feeds do not survive a restart), and only its ack counts.
  TestHost h1(server_.grpc_port(), "h1");
  h1.Hello({Vm("db-1", "db", "198.18.0.10")}, current);
  auto full = h1.Next();
  ASSERT_TRUE(full && full->has_full()) << (full ? full->DebugString() : "nothing");
  EXPECT_EQ(full->full().revision(), current);
  EXPECT_EQ(HostState("h1"), kPending);
  EXPECT_EQ(U64(Host("h1"), "realized_revision"), 0u);
  h1.Ack(current);
  ASSERT_TRUE(WaitFor([&] { return HostState("h1") == kRealized; })) << Realization();
  EXPECT_EQ(PolicyState(), kDisconnected) << "h2 never acked: " << Realization();

  TestHost h2(server_.grpc_port(), "h2");
  h2.Hello({Vm("db-2", "db", "198.18.0.11")});
  auto full2 = h2.Next();
  ASSERT_TRUE(full2 && full2->has_full());
  h2.Ack(full2->full().revision());
  // "empty" never came back and does not hold the policy back.
  EXPECT_TRUE(WaitFor([&] { return PolicyState() == kRealized; })) << Realization();
  EXPECT_EQ(HostState("empty"), kDisconnected);
}

TEST_F(HostSessionAuthzTest, AVmOfAnotherConnectedHostCannotBeClaimed) {
  auto h1 = std::make_unique<TestHost>(server_.grpc_port(), "h1");
  h1->Hello({Vm("db-1", "db", "198.18.0.10")});
  auto full = h1->Next();
  ASSERT_TRUE(full && full->has_full());
  h1->Ack(full->full().revision());

  // h2 reports db-1 too (another address, another tag) besides its own VM:
  // db-1 is refused, web-1 accepted.
  TestHost h2(server_.grpc_port(), "h2");
  h2.Hello({Vm("db-1", "web", "198.18.0.66"), Vm("web-1", "web", "198.18.0.20")});
  auto full2 = h2.Next();
  ASSERT_TRUE(full2 && full2->has_full());
  ASSERT_EQ(full2->full().rulesets_size(), 1);
  EXPECT_EQ(full2->full().rulesets(0).vnic_id(), "web-1-nic0");
  auto vm = rest_->Get("/api/v1/vms/db-1").body;
  EXPECT_EQ(vm["host"], "h1");
  EXPECT_EQ(vm["vnics"][0]["addresses"][0]["ip"], "198.18.0.10");
  EXPECT_EQ(rest_->Get("/api/v1/vms/web-1").body["host"], "h2");
  // h1 keeps enforcing db-1: it only learns that web grew.
  auto d = h1->Next();
  ASSERT_TRUE(d && d->has_delta());
  EXPECT_EQ(d->delta().rulesets_removed_size(), 0);
  EXPECT_EQ(d->delta().rulesets_set_size(), 0);
  ASSERT_EQ(d->delta().address_set_deltas_size(), 1);
  EXPECT_EQ(d->delta().address_set_deltas(0).added(0), "198.18.0.20/32");
  json h = Host("h2");
  EXPECT_EQ(U64(h, "refused_vm_claims"), 1u);
  EXPECT_EQ(h["last_refused_claim"], "vm 'db-1' is held by connected host 'h1'");
  EXPECT_EQ(U64(Host("h1"), "refused_vm_claims"), 0u);
  EXPECT_EQ(server_.model()->Stats().refused_vm_claims, 1u);

  // Nor can it remove it, or claim it in an update.
  h2.Inventory({}, {"db-1"});
  h2.Inventory({Vm("db-1", "web", "198.18.0.66")});
  ASSERT_TRUE(WaitFor([&] { return U64(Host("h2"), "refused_vm_claims") == 2u; }));
  vm = rest_->Get("/api/v1/vms/db-1").body;
  EXPECT_EQ(vm["host"], "h1");
  EXPECT_EQ(vm["tags"][0]["value"], "db");
  EXPECT_FALSE(h1->Next(300).has_value());

  // Once h1 is gone, the VM may move (it moved while its host was down).
  h1.reset();
  ASSERT_TRUE(WaitFor([&] { return !Connected("h1"); }));
  h2.Inventory({Vm("db-1", "web", "198.18.0.66")});
  EXPECT_TRUE(WaitFor([&] { return rest_->Get("/api/v1/vms/db-1").body["host"] == "h2"; }));
  EXPECT_EQ(U64(Host("h2"), "refused_vm_claims"), 2u);
  // h1, back, no longer reports db-1: h2 keeps it.
  TestHost h1b(server_.grpc_port(), "h1");
  h1b.Hello({});
  ASSERT_TRUE(h1b.Next().has_value());
  EXPECT_EQ(rest_->Get("/api/v1/vms/db-1").body["host"], "h2");
}

TEST_F(HostSessionAuthzTest, AHostThatIsGoneCanBeDeleted) {
  TestHost h1(server_.grpc_port(), "h1");
  h1.Hello({Vm("db-1", "db", "198.18.0.10")});
  auto full = h1.Next();
  ASSERT_TRUE(full && full->has_full());
  h1.Ack(full->full().revision());

  // A host registers a VM in the policy's span and never acks.
  auto fake = std::make_unique<TestHost>(server_.grpc_port(), "fake");
  fake->Hello({Vm("db-9", "db", "198.18.0.99"), Vm("web-9", "web", "198.18.0.98")});
  ASSERT_TRUE(fake->Next().has_value());
  auto d = h1.Next();  // g:web grew
  ASSERT_TRUE(d && d->has_delta());
  uint64_t prev = TouchPolicy(3);
  d = h1.Next();
  ASSERT_TRUE(d && d->has_delta());
  h1.Ack(d->delta().to_revision());
  ASSERT_TRUE(WaitFor([&] { return PolicyState() == kPending; })) << Realization();

  // Not while it is connected.
  auto r = rest_->Delete("/api/v1/hosts/fake");
  EXPECT_EQ(r.status, 409) << r.body;
  EXPECT_NE(r.body.dump().find("is connected"), std::string::npos) << r.body;
  fake.reset();
  ASSERT_TRUE(WaitFor([&] { return !Connected("fake"); }));
  EXPECT_EQ(PolicyState(), kDisconnected) << Realization();

  r = rest_->Delete("/api/v1/hosts/fake");
  ASSERT_EQ(r.status, 200) << r.body;
  uint64_t rev = U64(r.body, "revision");
  EXPECT_GT(rev, prev);
  EXPECT_TRUE(Host("fake").is_null());
  EXPECT_EQ(HostState("fake"), "");
  EXPECT_EQ(rest_->Get("/api/v1/vms/db-9").status, 404);
  EXPECT_EQ(rest_->Get("/api/v1/vms/web-9").status, 404);
  // The policy waited only for fake: realized now.
  EXPECT_EQ(PolicyState(), kRealized) << Realization();
  // One change: the host and each of its VMs in the change log.
  auto ch = rest_->Get("/api/v1/changes?from_revision=" + std::to_string(rev - 1)).body;
  std::set<std::string> events;
  for (const auto& e : ch["events"]) {
    EXPECT_EQ(U64(e, "revision"), rev);
    EXPECT_TRUE(e.value("deleted", false));
    events.insert(e.value("kind", "") + " " + e.value("id", ""));
  }
  EXPECT_EQ(events, (std::set<std::string>{"KIND_HOST fake", "KIND_VM db-9", "KIND_VM web-9"}));
  // h1 learns that its address sets shrank, at that revision.
  d = h1.Next();
  ASSERT_TRUE(d && d->has_delta());
  EXPECT_EQ(d->delta().to_revision(), rev);
  EXPECT_EQ(d->delta().address_set_deltas_size(), 2);
  h1.Ack(rev);
  EXPECT_EQ(rest_->Delete("/api/v1/hosts/fake").status, 404);

  // Over gRPC too.
  auto ch2 = grpc::CreateChannel("127.0.0.1:" + std::to_string(server_.grpc_port()),
                                 grpc::InsecureChannelCredentials());
  auto stub = dfw::v1::ControllerService::NewStub(ch2);
  dfw::v1::DeleteRequest req;
  dfw::v1::DeleteResponse resp;
  req.set_id("h1");
  grpc::ClientContext c1;
  EXPECT_EQ(stub->DeleteHost(&c1, req, &resp).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  req.set_id("nope");
  grpc::ClientContext c2;
  EXPECT_EQ(stub->DeleteHost(&c2, req, &resp).error_code(), grpc::StatusCode::NOT_FOUND);

  // A deleted host that connects again registers anew.
  TestHost again(server_.grpc_port(), "fake");
  again.Hello({});
  ASSERT_TRUE(again.Next().has_value());
  EXPECT_TRUE(Host("fake").is_object());
}

}  // namespace
}  // namespace dfw::controller::testing
