// Where a VM's tags come from: the host's report of the domain's libvirt
// metadata (host_tags) and the API (api_tags). Over real sockets: a host
// session on a gRPC stream, the API over REST (and one gRPC call), and a
// restart on the same data directory.
#include <grpcpp/grpcpp.h>

#include <thread>

#include "dfw/v1/controller.grpc.pb.h"
#include "test_host.h"
#include "test_util.h"

namespace dfw::controller::testing {
namespace {

using nlohmann::json;

// A JSON tag list as "s=v" strings, in the API's (sorted) order.
std::vector<std::string> Texts(const json& tags) {
  std::vector<std::string> out;
  if (!tags.is_array()) return out;
  for (const auto& t : tags) out.push_back(t.value("scope", "") + "=" + t.value("value", ""));
  return out;
}
using Strs = std::vector<std::string>;

// The host's next message is a delta that sets one ruleset: `vnic`'s, with
// `rules` rules. Acks it.
void ExpectOneRuleset(TestHost& h, const std::string& vnic, int rules) {
  auto d = h.Next();
  ASSERT_TRUE(d && d->has_delta());
  ASSERT_EQ(d->delta().rulesets_set_size(), 1);
  EXPECT_EQ(d->delta().rulesets_set(0).vnic_id(), vnic);
  EXPECT_EQ(d->delta().rulesets_set(0).rules_size(), rules);
  h.Ack(d->delta().to_revision());
}

class TagSourcesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Start();
    ASSERT_EQ(rest_->Post("/api/v1/groups", TagGroupJson("web", "app", "web")).status, 201);
    ASSERT_EQ(rest_->Post("/api/v1/groups", TagGroupJson("db", "app", "db")).status, 201);
    ASSERT_EQ(rest_->Post("/api/v1/groups", TagGroupJson("prod", "env", "prod")).status, 201);
    auto p = json::parse(R"({"id":"web-to-db","category":"CATEGORY_APPLICATION",
      "applied_to_group_ids":["db"],"stateful":true,
      "rules":[{"id":"allow-pg","sources":{"group_ids":["web"]},"destinations":{"group_ids":["db"]},
                "services":[{"protocol":6,"destination_ports":[{"first":5432}]}],"action":"ACTION_ALLOW"}]})");
    ASSERT_EQ(rest_->Post("/api/v1/policies", p).status, 201);
  }
  void Start() {
    server_ = std::make_unique<ControllerServer>();
    ControllerOptions o;
    o.data_dir = dir_.path() + "/db";
    o.insecure = true;  // plaintext on loopback: these tests are about the model
    ASSERT_TRUE(server_->Start(o).ok());
    rest_ = std::make_unique<Rest>(server_->http_port());
  }
  void Restart() {
    rest_.reset();
    server_.reset();
    Start();
  }
  json GetVm(const std::string& id) { return rest_->Get("/api/v1/vms/" + id).body; }
  Strs Members(const std::string& group) {
    auto b = rest_->Get("/api/v1/groups/" + group + "/members").body;
    return b.value("vm_ids", Strs{});
  }
  uint64_t Revision() { return server_->model()->revision(); }
  // Waits until the host's last report shows in the VM's host_tags.
  bool WaitHostTags(const std::string& vm, const Strs& want) {
    for (int i = 0; i < 300; ++i) {
      if (Texts(GetVm(vm)["host_tags"]) == want) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }
  json Tag(const std::string& vm, const std::string& verb, const std::string& scope,
           const std::string& value, int want_status) {
    auto r = rest_->Post("/api/v1/vms/" + vm + "/tags",
                         {{verb, {{{"scope", scope}, {"value", value}}}}});
    EXPECT_EQ(r.status, want_status) << r.body;
    return r.body;
  }

  TempDir dir_;
  std::unique_ptr<ControllerServer> server_;
  std::unique_ptr<Rest> rest_;
};

TEST_F(TagSourcesTest, MetadataAndApiTagsBothReachMembershipAndTheHost) {
  TestHost h1(server_->grpc_port(), "h1");
  h1.Hello(
      {MetadataVm("db-1", {{"app", "db"}}, "198.18.0.10"), MetadataVm("web-1", {}, "198.18.0.20")});
  auto full = h1.Next();
  ASSERT_TRUE(full && full->has_full());
  // The metadata's app=db puts db-1 in the applied-to group: its rule.
  ASSERT_EQ(full->full().rulesets_size(), 2);
  EXPECT_EQ(full->full().rulesets(0).vnic_id(), "db-1-nic0");
  EXPECT_EQ(full->full().rulesets(0).rules_size(), 1);
  EXPECT_EQ(full->full().rulesets(1).rules_size(), 0);
  EXPECT_EQ(Members("db"), Strs{"db-1"});
  json vm = GetVm("db-1");
  EXPECT_EQ(Texts(vm["tags"]), Strs{"app=db"});
  EXPECT_EQ(Texts(vm["host_tags"]), Strs{"app=db"});
  EXPECT_FALSE(vm.contains("api_tags"));
  h1.Ack(full->full().revision());

  // The API adds a tag of another scope: both count.
  json r = Tag("db-1", "set", "env", "prod", 200);
  EXPECT_EQ(Texts(r["vms"][0]["tags"]), (Strs{"app=db", "env=prod"}));
  EXPECT_EQ(Texts(r["vms"][0]["api_tags"]), Strs{"env=prod"});
  EXPECT_EQ(Texts(r["vms"][0]["host_tags"]), Strs{"app=db"});
  EXPECT_EQ(Members("prod"), Strs{"db-1"});
  EXPECT_EQ(Members("db"), Strs{"db-1"});

  // The host reports new metadata for web-1: it joins web, and h1 (which
  // references g:web in db-1's ruleset) gets exactly that delta.
  uint64_t before = Revision();
  h1.Inventory({MetadataVm("web-1", {{"app", "web"}}, "198.18.0.20")});
  auto d = h1.Next();
  ASSERT_TRUE(d && d->has_delta()) << (d ? d->DebugString() : "nothing");
  EXPECT_GT(d->delta().to_revision(), before);
  ASSERT_EQ(d->delta().address_set_deltas_size(), 1);
  EXPECT_EQ(d->delta().address_set_deltas(0).id(), "g:web");
  EXPECT_EQ(d->delta().address_set_deltas(0).added(0), "198.18.0.20/32");
  EXPECT_EQ(Texts(GetVm("web-1")["tags"]), Strs{"app=web"});
  EXPECT_EQ(Members("web"), Strs{"web-1"});
  h1.Ack(d->delta().to_revision());

  // Same scope from both: the API's value replaces the metadata's.
  r = Tag("web-1", "set", "app", "db", 200);
  EXPECT_EQ(Texts(r["vms"][0]["tags"]), Strs{"app=db"});
  EXPECT_EQ(Texts(r["vms"][0]["host_tags"]), Strs{"app=web"});
  EXPECT_EQ(Members("web"), Strs{});
  EXPECT_EQ(Members("db"), (Strs{"db-1", "web-1"}));
  ExpectOneRuleset(h1, "web-1-nic0", 1);

  // Reports that change nothing effective: the same metadata, then a new
  // value of the scope the API overrides. No revision, nothing to the host,
  // but the host's tags are kept for later.
  before = Revision();
  h1.Inventory({MetadataVm("web-1", {{"app", "web"}}, "198.18.0.20")});
  h1.Inventory({MetadataVm("web-1", {{"app", "web"}, {"app", "front"}}, "198.18.0.20")});
  ASSERT_TRUE(WaitHostTags("web-1", {"app=front", "app=web"}));
  EXPECT_EQ(Revision(), before);
  EXPECT_EQ(GetVm("web-1")["revision"], r["revision"]);  // the API's change, still
  EXPECT_FALSE(h1.Next(300).has_value());

  // The API's tag goes: the metadata's values of the scope come back.
  r = Tag("web-1", "remove", "app", "db", 200);
  EXPECT_EQ(Texts(r["vms"][0]["tags"]), (Strs{"app=front", "app=web"}));
  EXPECT_EQ(Members("web"), Strs{"web-1"});
  EXPECT_EQ(Members("db"), Strs{"db-1"});
  ExpectOneRuleset(h1, "web-1-nic0", 0);

  // The API cannot remove what only the metadata carries.
  before = Revision();
  r = Tag("web-1", "remove", "app", "web", 409);
  EXPECT_EQ(r["error"]["code"], "FAILED_PRECONDITION");
  EXPECT_EQ(r["error"]["field"], "remove[0]");
  std::string msg = r["error"]["message"];
  EXPECT_NE(msg.find("'app=web'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("libvirt metadata on host 'h1'"), std::string::npos) << msg;
  r = Tag("web-1", "remove", "app", "", 409);  // the whole scope: also the metadata's
  EXPECT_EQ(Revision(), before);
  EXPECT_EQ(Texts(GetVm("web-1")["tags"]), (Strs{"app=front", "app=web"}));
  // Also over gRPC: FAILED_PRECONDITION.
  auto stub = dfw::v1::ControllerService::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string(server_->grpc_port()), grpc::InsecureChannelCredentials()));
  dfw::v1::TagRequest treq;
  treq.add_vm_ids("db-1");
  treq.add_remove()->set_scope("app");
  dfw::v1::TagResponse tresp;
  grpc::ClientContext ctx;
  auto gs = stub->Tag(&ctx, treq, &tresp);
  EXPECT_EQ(gs.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(gs.error_message().find("on host 'h1'"), std::string::npos) << gs.error_message();
}

TEST_F(TagSourcesTest, WholeVmWritesAndRestartKeepBothSources) {
  // Created through the API, no host: its tags are the API's.
  auto r = rest_->Post("/api/v1/vms", VmJson("api-1", "", {{"app", "web"}}, "198.18.0.30"));
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(Texts(r.body["api_tags"]), Strs{"app=web"});
  EXPECT_FALSE(r.body.contains("host_tags"));
  {
    TestHost h1(server_->grpc_port(), "h1");
    h1.Hello({MetadataVm("db-1", {{"app", "db"}, {"", "legacy"}}, "198.18.0.10")});
    ASSERT_TRUE(h1.Next().has_value());
  }
  Tag("db-1", "set", "env", "prod", 200);
  Tag("db-1", "set", "", "pci", 200);

  // GET -> PUT round trip changes no source.
  json vm = GetVm("db-1");
  vm.erase("revision");
  r = rest_->Put("/api/v1/vms/db-1", vm);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Texts(r.body["api_tags"]), (Strs{"=pci", "env=prod"}));
  EXPECT_EQ(Texts(r.body["host_tags"]), (Strs{"=legacy", "app=db"}));
  // A PUT without a metadata-only tag is refused; one with a new value of
  // the metadata's scope makes the scope the API's.
  json drop = vm;
  drop["tags"] = json::array(
      {{{"scope", "env"}, {"value", "prod"}}, {{"value", "pci"}}, {{"value", "legacy"}}});
  r = rest_->Put("/api/v1/vms/db-1", drop);
  EXPECT_EQ(r.status, 409) << r.body;
  EXPECT_NE(r.body["error"]["message"].get<std::string>().find("'app=db'"), std::string::npos);
  json more = vm;
  more["tags"].push_back({{"scope", "app"}, {"value", "web"}});
  r = rest_->Put("/api/v1/vms/db-1", more);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Texts(r.body["api_tags"]), (Strs{"=pci", "app=db", "app=web", "env=prod"}));
  EXPECT_EQ(Members("web"), (Strs{"api-1", "db-1"}));

  uint64_t before = Revision();
  Restart();
  EXPECT_EQ(Revision(), before);
  vm = GetVm("db-1");
  EXPECT_EQ(Texts(vm["api_tags"]), (Strs{"=pci", "app=db", "app=web", "env=prod"}));
  EXPECT_EQ(Texts(vm["host_tags"]), (Strs{"=legacy", "app=db"}));
  EXPECT_EQ(Texts(vm["tags"]), (Strs{"=legacy", "=pci", "app=db", "app=web", "env=prod"}));
  EXPECT_EQ(Members("web"), (Strs{"api-1", "db-1"}));
  EXPECT_EQ(Texts(GetVm("api-1")["api_tags"]), Strs{"app=web"});

  // The host comes back with the same metadata: nothing changes. Removing
  // the API's app values gives the scope back to the metadata.
  TestHost h1(server_->grpc_port(), "h1");
  h1.Hello({MetadataVm("db-1", {{"app", "db"}, {"", "legacy"}}, "198.18.0.10")});
  ASSERT_TRUE(h1.Next().has_value());
  EXPECT_EQ(Revision(), before);
  json t = Tag("db-1", "remove", "app", "", 200);
  EXPECT_EQ(Texts(t["vms"][0]["tags"]), (Strs{"=legacy", "=pci", "app=db", "env=prod"}));
  EXPECT_EQ(Members("web"), Strs{"api-1"});
  // A plain tag from the metadata cannot be removed through the API either.
  Tag("db-1", "remove", "", "legacy", 409);
}

}  // namespace
}  // namespace dfw::controller::testing
