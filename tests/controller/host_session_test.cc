// Host sessions over a real gRPC stream: a host registers its inventory,
// gets its full desired state, then exactly the delta a tag change causes,
// and its acks show up as realization status.
#include <thread>

#include "test_host.h"
#include "test_util.h"

namespace dfw::controller::testing {
namespace {

using nlohmann::json;

dfw::v1::Vm Vm(const std::string& id, const std::string& tag_app, const std::string& ip) {
  return MetadataVm(id, tag_app.empty() ? Tags{} : Tags{{"app", tag_app}}, ip);
}

class HostSessionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ControllerOptions o;
    o.data_dir = dir_.path() + "/db";
    o.insecure = true;  // plaintext on loopback: these tests are about the model
    ASSERT_TRUE(server_.Start(o).ok());
    rest_ = std::make_unique<Rest>(server_.http_port());
    ASSERT_EQ(rest_->Post("/api/v1/groups", TagGroupJson("web", "app", "web")).status, 201);
    ASSERT_EQ(rest_->Post("/api/v1/groups", TagGroupJson("db", "app", "db")).status, 201);
    auto p = json::parse(R"({"id":"web-to-db","category":"CATEGORY_APPLICATION",
      "applied_to_group_ids":["db"],"stateful":true,
      "rules":[{"id":"allow-pg","sources":{"group_ids":["web"]},"destinations":{"group_ids":["db"]},
                "services":[{"protocol":6,"destination_ports":[{"first":5432}]}],"action":"ACTION_ALLOW"},
               {"id":"admin","sources":{"ip_prefixes":["198.19.0.0/16"]},"destinations":{"any":true},
                "action":"ACTION_ALLOW"}]})");
    ASSERT_EQ(rest_->Post("/api/v1/policies", p).status, 201);
  }
  TempDir dir_;
  ControllerServer server_;
  std::unique_ptr<Rest> rest_;
};

TEST_F(HostSessionTest, FullStateThenExactlyTheDeltaOfATagChange) {
  TestHost h1(server_.grpc_port(), "h1");  // runs the database
  h1.Hello({Vm("db-1", "db", "198.18.0.10")});
  auto full = h1.Next();
  ASSERT_TRUE(full && full->has_full());
  const auto& st = full->full();
  ASSERT_EQ(st.rulesets_size(), 1);
  EXPECT_EQ(st.rulesets(0).vnic_id(), "db-1-nic0");
  ASSERT_EQ(st.rulesets(0).rules_size(), 2);
  EXPECT_EQ(st.rulesets(0).rules(0).rule_id(), "allow-pg");
  EXPECT_EQ(st.rulesets(0).rules(0).sources().address_set_ids(0), "g:web");
  EXPECT_EQ(st.rulesets(0).rules(1).sources().address_set_ids(0), "r:web-to-db/admin/src");
  EXPECT_EQ(st.rulesets(0).default_rule().action(), dfw::v1::ACTION_DROP);
  ASSERT_EQ(st.address_sets_size(), 3);
  EXPECT_EQ(st.address_sets(0).id(), "g:db");
  EXPECT_EQ(st.address_sets(0).prefixes(0), "198.18.0.10/32");
  EXPECT_EQ(st.address_sets(1).id(), "g:web");
  EXPECT_EQ(st.address_sets(1).prefixes_size(), 0);
  EXPECT_EQ(st.address_sets(2).prefixes(0), "198.19.0.0/16");
  h1.Ack(st.revision());

  TestHost h2(server_.grpc_port(), "h2");  // runs web VMs, not in any applied-to group
  h2.Hello({Vm("web-1", "web", "198.18.0.20"), Vm("web-2", "", "198.18.0.21")});
  auto full2 = h2.Next();
  ASSERT_TRUE(full2 && full2->has_full());
  EXPECT_EQ(full2->full().rulesets_size(), 2);
  EXPECT_EQ(full2->full().rulesets(0).rules_size(), 0);
  EXPECT_EQ(full2->full().address_sets_size(), 0);
  // h2's VMs joined web: h1 references g:web and gets exactly that delta.
  auto d = h1.Next();
  ASSERT_TRUE(d && d->has_delta()) << (d ? d->DebugString() : "nothing");
  EXPECT_EQ(d->delta().from_revision(), st.revision());
  EXPECT_EQ(d->delta().to_revision(), full2->full().revision());
  ASSERT_EQ(d->delta().address_set_deltas_size(), 1);
  EXPECT_EQ(d->delta().address_set_deltas(0).id(), "g:web");
  EXPECT_EQ(d->delta().address_set_deltas(0).added(0), "198.18.0.20/32");
  EXPECT_EQ(d->delta().rulesets_set_size(), 0);
  h1.Ack(d->delta().to_revision());
  h2.Ack(full2->full().revision());

  // The tag change: web-2 becomes web.
  auto r = rest_->Post("/api/v1/vms/web-2/tags", {{"set", {{{"scope", "app"}, {"value", "web"}}}}});
  ASSERT_EQ(r.status, 200) << r.body;
  uint64_t rev = std::stoull(std::string(r.body["revision"]));
  d = h1.Next();
  ASSERT_TRUE(d && d->has_delta());
  dfw::v1::HostDelta want;
  want.set_from_revision(full2->full().revision());
  want.set_to_revision(rev);
  auto* ad = want.add_address_set_deltas();
  ad->set_id("g:web");
  ad->add_added("198.18.0.21/32");
  EXPECT_EQ(d->delta().DebugString(), want.DebugString());
  EXPECT_FALSE(h2.Next(300).has_value());  // nothing changed for h2
  h1.Ack(rev);

  // web-2 becomes db: it enters the applied-to group, so h2 gets its
  // ruleset and the sets it names; h1 sees g:web shrink and g:db grow.
  r = rest_->Post("/api/v1/vms/web-2/tags", {{"set", {{{"scope", "app"}, {"value", "db"}}}},
                                             {"remove", {{{"scope", "app"}, {"value", "web"}}}}});
  ASSERT_EQ(r.status, 200);
  rev = std::stoull(std::string(r.body["revision"]));
  auto d2 = h2.Next();
  ASSERT_TRUE(d2 && d2->has_delta());
  ASSERT_EQ(d2->delta().rulesets_set_size(), 1);
  EXPECT_EQ(d2->delta().rulesets_set(0).vnic_id(), "web-2-nic0");
  EXPECT_EQ(d2->delta().rulesets_set(0).rules_size(), 2);
  EXPECT_EQ(d2->delta().address_sets_set_size(), 3);
  d = h1.Next();
  ASSERT_TRUE(d && d->has_delta());
  EXPECT_EQ(d->delta().rulesets_set_size(), 0);
  ASSERT_EQ(d->delta().address_set_deltas_size(), 2);
  EXPECT_EQ(d->delta().address_set_deltas(0).id(), "g:db");
  EXPECT_EQ(d->delta().address_set_deltas(0).added(0), "198.18.0.21/32");
  EXPECT_EQ(d->delta().address_set_deltas(1).id(), "g:web");
  EXPECT_EQ(d->delta().address_set_deltas(1).removed(0), "198.18.0.21/32");

  // Realization: pending until both acked.
  auto real = rest_->Get("/api/v1/realization");
  EXPECT_EQ(real.body["current_revision"], std::to_string(rev));
  h1.Ack(rev);
  h2.Ack(rev);
  // Change the policy and watch it get realized on both hosts.
  auto p = rest_->Get("/api/v1/policies/web-to-db").body;
  p["priority"] = 7;
  p.erase("revision");
  r = rest_->Put("/api/v1/policies/web-to-db", p);
  ASSERT_EQ(r.status, 200) << r.body;
  uint64_t prev = std::stoull(std::string(r.body["revision"]));
  for (TestHost* h : {&h1, &h2}) {
    auto m = h->Next();
    ASSERT_TRUE(m && m->has_delta());
    EXPECT_EQ(m->delta().rulesets_set_size(), 1);  // the db vNIC on each host
    h->Ack(m->delta().to_revision());
  }
  for (int i = 0; i < 100; ++i) {
    real = rest_->Get("/api/v1/realization?policy_id=web-to-db");
    if (real.body["policies"][0]["state"] == "REALIZATION_STATE_REALIZED") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const auto& pr = real.body["policies"][0];
  EXPECT_EQ(pr["state"], "REALIZATION_STATE_REALIZED") << real.body;
  EXPECT_EQ(pr["revision"], std::to_string(prev));
  EXPECT_EQ(pr["hosts"].size(), 2u);
  EXPECT_TRUE(pr.contains("realization_micros"));
  auto hosts = rest_->Get("/api/v1/hosts").body["hosts"];
  ASSERT_EQ(hosts.size(), 2u);
  EXPECT_EQ(hosts[0]["connected"], true);
  EXPECT_EQ(hosts[0]["realized_revision"], std::to_string(prev));
}

TEST_F(HostSessionTest, ReconnectGetsFullStateAndInventoryIsValidated) {
  {
    TestHost h1(server_.grpc_port(), "h1");
    h1.Hello({Vm("db-1", "db", "198.18.0.10")});
    ASSERT_TRUE(h1.Next().has_value());
  }
  // A tag set through the API joins the metadata's (another scope).
  ASSERT_EQ(rest_->Post("/api/v1/vms/db-1/tags", {{"set", {{{"scope", "env"}, {"value", "prod"}}}}})
                .status,
            200);
  uint64_t held = 0;
  {
    TestHost h1(server_.grpc_port(), "h1");
    h1.Hello({Vm("db-1", "db", "198.18.0.10")});
    auto m = h1.Next();
    ASSERT_TRUE(m && m->has_full());
    EXPECT_EQ(m->full().rulesets_size(), 1);
    EXPECT_EQ(rest_->Get("/api/v1/vms/db-1").body["tags"].size(), 2u);
    held = m->full().revision();
  }
  for (int i = 0; i < 200 && rest_->Get("/api/v1/hosts").body["hosts"][0]["connected"] == true;
       ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  // While h1 is away db-1 also becomes web (h1 references g:web). Coming
  // back holding the last revision it was sent, h1 gets one delta, not a
  // full state. (The API now holds scope app, so it sets both values.)
  json both = {
      {"set", {{{"scope", "app"}, {"value", "web"}}, {{"scope", "app"}, {"value", "db"}}}}};
  ASSERT_EQ(rest_->Post("/api/v1/vms/db-1/tags", both).status, 200);
  TestHost again(server_.grpc_port(), "h1");
  again.Hello({Vm("db-1", "db", "198.18.0.10")}, held);
  auto d = again.Next();
  ASSERT_TRUE(d.has_value());
  ASSERT_TRUE(d->has_delta()) << d->DebugString();
  EXPECT_EQ(d->delta().from_revision(), held);
  ASSERT_EQ(d->delta().address_set_deltas_size(), 1);
  EXPECT_EQ(d->delta().address_set_deltas(0).id(), "g:web");
  EXPECT_EQ(d->delta().address_set_deltas(0).added(0), "198.18.0.10/32");

  TestHost bad(server_.grpc_port(), "h3");
  auto vm = Vm("x", "", "198.18.0.99");
  vm.mutable_vnics(0)->set_mac("nope");
  bad.Hello({vm});
  EXPECT_FALSE(bad.Next(2000).has_value());  // stream closed with INVALID_ARGUMENT
  EXPECT_EQ(rest_->Get("/api/v1/vms/x").status, 404);
}

}  // namespace
}  // namespace dfw::controller::testing
