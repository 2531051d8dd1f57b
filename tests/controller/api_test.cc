// The controller API over real sockets: REST (httplib client) and gRPC
// (a real channel), both on 127.0.0.1 port 0, against one in-process
// controller per test with its own RocksDB directory.
#include <grpcpp/grpcpp.h>

#include <thread>

#include "dfw/v1/controller.grpc.pb.h"
#include "test_util.h"

namespace dfw::controller::testing {
namespace {

using nlohmann::json;

class ApiTest : public ::testing::Test {
 protected:
  void SetUp() override { StartServer(); }
  void StartServer() {
    server_ = std::make_unique<ControllerServer>();
    ControllerOptions o;
    o.data_dir = dir_.path() + "/db";
    o.insecure = true;  // plaintext on loopback: these tests are about the model
    ASSERT_TRUE(server_->Start(o).ok());
    rest_ = std::make_unique<Rest>(server_->http_port());
    auto ch = grpc::CreateChannel("127.0.0.1:" + std::to_string(server_->grpc_port()),
                                  grpc::InsecureChannelCredentials());
    stub_ = dfw::v1::ControllerService::NewStub(ch);
  }
  void Restart() {
    rest_.reset();
    stub_.reset();
    server_.reset();
    StartServer();
  }
  void Seed() {
    ASSERT_EQ(
        rest_->Post("/api/v1/vms", VmJson("web-1", "h1", {{"app", "web"}}, "198.18.0.1")).status,
        201);
    ASSERT_EQ(
        rest_->Post("/api/v1/vms", VmJson("db-1", "h2", {{"app", "db"}}, "198.18.0.2")).status,
        201);
    ASSERT_EQ(rest_->Post("/api/v1/groups", TagGroupJson("web", "app", "web")).status, 201);
    ASSERT_EQ(rest_->Post("/api/v1/groups", TagGroupJson("db", "app", "db")).status, 201);
    ASSERT_EQ(rest_->Post("/api/v1/policies", PolicyJson()).status, 201);
  }
  static json PolicyJson() {
    return json::parse(R"({"id":"web-to-db","category":"CATEGORY_APPLICATION","priority":10,
      "applied_to_group_ids":["db"],"stateful":true,
      "rules":[{"id":"allow-pg","sources":{"group_ids":["web"]},"destinations":{"group_ids":["db"]},
                "services":[{"protocol":6,"destination_ports":[{"first":5432}]}],
                "direction":"DIRECTION_IN","action":"ACTION_ALLOW"},
               {"id":"deny-rest","sources":{"any":true},"destinations":{"any":true},
                "action":"ACTION_REJECT"}]})");
  }

  TempDir dir_;
  std::unique_ptr<ControllerServer> server_;
  std::unique_ptr<Rest> rest_;
  std::unique_ptr<dfw::v1::ControllerService::Stub> stub_;
};

TEST_F(ApiTest, VmCrudOverRest) {
  auto vm = VmJson("vm-a", "h1", {{"app", "web"}}, "198.18.1.1");
  auto r = rest_->Post("/api/v1/vms", vm);
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(r.body["revision"], "1");
  EXPECT_EQ(r.etag, "\"1\"");
  EXPECT_EQ(rest_->Post("/api/v1/vms", vm).status, 409);  // create of an existing id

  r = rest_->Get("/api/v1/vms/vm-a");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.body["name"], "vm-a");
  EXPECT_EQ(r.body["tags"][0]["value"], "web");

  vm["name"] = "renamed";
  r = rest_->Put("/api/v1/vms/vm-a", vm, {{"If-Match", "\"1\""}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body["revision"], "2");
  r = rest_->Put("/api/v1/vms/vm-a", vm, {{"If-Match", "\"1\""}});  // stale
  EXPECT_EQ(r.status, 409);
  EXPECT_EQ(r.body["error"]["field"], "expected_revision");

  ASSERT_EQ(rest_->Post("/api/v1/vms", VmJson("vm-b", "h1", {}, "198.18.1.2")).status, 201);
  r = rest_->Get("/api/v1/vms?page_size=1");
  ASSERT_EQ(r.status, 200);
  ASSERT_EQ(r.body["vms"].size(), 1u);
  EXPECT_EQ(r.body["next_page_token"], "vm-a");
  r = rest_->Get("/api/v1/vms?page_size=1&page_token=vm-a");
  ASSERT_EQ(r.body["vms"].size(), 1u);
  EXPECT_EQ(r.body["vms"][0]["id"], "vm-b");

  EXPECT_EQ(rest_->Delete("/api/v1/vms/vm-a", {{"If-Match", "\"1\""}}).status, 409);
  EXPECT_EQ(rest_->Delete("/api/v1/vms/vm-a").status, 200);
  EXPECT_EQ(rest_->Get("/api/v1/vms/vm-a").status, 404);
  EXPECT_EQ(rest_->Delete("/api/v1/vms/vm-a").status, 404);
}

TEST_F(ApiTest, GroupsPoliciesAndComputedViews) {
  Seed();
  auto r = rest_->Get("/api/v1/groups/web/members");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.body["vm_ids"], json::array({"web-1"}));
  EXPECT_EQ(r.body["vnic_ids"], json::array({"web-1-nic0"}));
  EXPECT_EQ(r.body["addresses"], json::array({"198.18.0.1/32"}));

  r = rest_->Get("/api/v1/vms/db-1/groups");
  ASSERT_EQ(r.status, 200);
  ASSERT_EQ(r.body["groups"].size(), 1u);
  EXPECT_EQ(r.body["groups"][0]["group_id"], "db");
  EXPECT_EQ(r.body["groups"][0]["via"], "VIA_CRITERIA");

  r = rest_->Get("/api/v1/vms/db-1/effective-rules");
  ASSERT_EQ(r.status, 200) << r.body;
  ASSERT_EQ(r.body["rulesets"].size(), 1u);
  const auto& rules = r.body["rulesets"][0]["rules"];
  ASSERT_EQ(rules.size(), 2u);
  EXPECT_EQ(rules[0]["rule_id"], "allow-pg");
  EXPECT_EQ(rules[0]["sources"]["address_set_ids"], json::array({"g:web"}));
  EXPECT_EQ(rules[1]["action"], "ACTION_REJECT");
  // web-1 is not in the applied-to group: no rules.
  r = rest_->Get("/api/v1/vnics/web-1-nic0/effective-rules");
  ASSERT_EQ(r.status, 200);
  EXPECT_FALSE(r.body["rulesets"][0].contains("rules"));

  // Tag workflow, in bulk: web-1 becomes db too; then the scope is removed.
  r = rest_->Post("/api/v1/tags",
                  {{"vm_ids", {"web-1"}}, {"set", {{{"scope", "app"}, {"value", "db"}}}}});
  ASSERT_EQ(r.status, 200) << r.body;
  r = rest_->Get("/api/v1/groups/db/members");
  EXPECT_EQ(r.body["vm_ids"], json::array({"db-1", "web-1"}));
  r = rest_->Post("/api/v1/vms/web-1/tags", {{"remove", {{{"scope", "app"}}}}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_FALSE(r.body["vms"][0].contains("tags"));
  r = rest_->Get("/api/v1/groups/db/members");
  EXPECT_EQ(r.body["vm_ids"], json::array({"db-1"}));

  // Update and delete a policy; list.
  auto p = PolicyJson();
  p["priority"] = 5;
  r = rest_->Put("/api/v1/policies/web-to-db", p);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(rest_->Get("/api/v1/policies").body["policies"].size(), 1u);
  EXPECT_EQ(rest_->Get("/api/v1/policies/web-to-db").body["priority"], 5);
  EXPECT_EQ(rest_->Delete("/api/v1/policies/web-to-db").status, 200);
  EXPECT_EQ(rest_->Get("/api/v1/policies/web-to-db").status, 404);
  EXPECT_EQ(rest_->Delete("/api/v1/groups/web").status, 200);
  EXPECT_EQ(rest_->Get("/api/v1/groups").body["groups"].size(), 1u);
}

TEST_F(ApiTest, DeletingAReferencedGroupIsAConflictNamingTheReferrers) {
  Seed();
  ASSERT_EQ(rest_
                ->Post("/api/v1/groups",
                       json::parse(R"({"id":"all","static_members":{"group_ids":["web","db"]}})"))
                .status,
            201);
  auto r = rest_->Delete("/api/v1/groups/web");
  EXPECT_EQ(r.status, 409);
  std::string msg = r.body["error"]["message"];
  EXPECT_NE(msg.find("policy 'web-to-db'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("group 'all'"), std::string::npos) << msg;
  EXPECT_EQ(rest_->Get("/api/v1/groups/web").status, 200);
}

struct BadInput {
  const char* method;
  const char* path;
  const char* body;
  int status;
  const char* field;
};

TEST_F(ApiTest, EveryValidationErrorNamesTheField) {
  Seed();
  const char* kPolicy = R"({"id":"p","category":"CATEGORY_APPLICATION","rules":[%s]})";
  auto policy = [&](const std::string& rule) {
    char buf[2048];
    std::snprintf(buf, sizeof buf, kPolicy, rule.c_str());
    return std::string(buf);
  };
  const std::string ok_rule =
      R"({"id":"r","sources":{"any":true},"destinations":{"any":true},"action":"ACTION_ALLOW"})";
  std::vector<std::tuple<std::string, std::string, std::string, int, std::string>> cases = {
      // VMs
      {"POST", "/api/v1/vms", R"({"id":"bad id"})", 400, "vm.id"},
      {"POST", "/api/v1/vms", R"({"id":""})", 400, "vm.id"},
      {"POST", "/api/v1/vms", R"({"id":"v","vnics":[{"id":"n","mac":"zz"}]})", 400,
       "vm.vnics[0].mac"},
      {"POST", "/api/v1/vms", R"({"id":"v","vnics":[{"id":"n","addresses":[{"ip":"300.1.1.1"}]}]})",
       400, "vm.vnics[0].addresses[0].ip"},
      {"POST", "/api/v1/vms", R"({"id":"v","tags":[{"scope":"a b","value":"x"}]})", 400,
       "vm.tags[0].scope"},
      {"POST", "/api/v1/vms", R"({"id":"v","tags":[{}]})", 400, "vm.tags[0]"},
      {"POST", "/api/v1/vms", R"({"id":"v","host":"bad host"})", 400, "vm.host"},
      {"POST", "/api/v1/vms", R"({"id":"v","vnics":[{"id":"web-1-nic0"}]})", 400,
       "vm.vnics[0].id"},  // vNIC owned by web-1
      {"POST", "/api/v1/vms", R"({"id":"v","bogus":1})", 400, "body"},
      {"POST", "/api/v1/vms", R"({not json)", 400, "body"},
      {"PUT", "/api/v1/vms/other", R"({"id":"v"})", 400, "id"},
      // Tags
      {"POST", "/api/v1/tags", R"({"set":[{"scope":"a","value":"b"}]})", 400, "vm_ids"},
      {"POST", "/api/v1/tags", R"({"vm_ids":["web-1"]})", 400, "set"},
      {"POST", "/api/v1/tags", R"({"vm_ids":["nope"],"set":[{"scope":"a","value":"b"}]})", 404,
       "vm_ids[0]"},
      {"POST", "/api/v1/tags", R"({"vm_ids":["web-1"],"set":[{"scope":"a:b","value":"b"}]})", 400,
       "set[0].scope"},
      {"POST", "/api/v1/tags",
       R"({"vm_ids":["web-1","db-1"],"set":[{"scope":"a"}],"expected_revision":3})", 400,
       "expected_revision"},
      // Groups
      {"POST", "/api/v1/groups", R"({"id":"g","criteria":[{"conditions":[]}]})", 400,
       "group.criteria[0].conditions"},
      {"POST", "/api/v1/groups", R"({"id":"g","criteria":[{"conditions":[{}]}]})", 400,
       "group.criteria[0].conditions[0]"},
      {"POST", "/api/v1/groups",
       R"({"id":"g","criteria":[{"conditions":[{"member_of_group":"missing"}]}]})", 400,
       "group.criteria[0].conditions[0].member_of_group"},
      {"POST", "/api/v1/groups", R"({"id":"g","static_members":{"group_ids":["missing"]}})", 400,
       "group.static_members.group_ids[0]"},
      {"POST", "/api/v1/groups", R"({"id":"g","static_members":{"ip_prefixes":["198.18.0.5/24"]}})",
       400, "group.static_members.ip_prefixes[0]"},
      {"POST", "/api/v1/groups",
       R"({"id":"g","criteria":[{"conditions":[{"vm_name":{"value":"x"}}]}]})", 400,
       "group.criteria[0].conditions[0].vm_name.op"},
      {"PUT", "/api/v1/groups/web", R"({"id":"web","static_members":{"group_ids":["web"]}})", 400,
       "group.static_members.group_ids[0]"},
      // Policies
      {"POST", "/api/v1/policies", R"({"id":"p","rules":[]})", 400, "policy.category"},
      {"POST", "/api/v1/policies", R"({"id":"p x","category":"CATEGORY_APPLICATION"})", 400,
       "policy.id"},
      {"POST", "/api/v1/policies", policy(ok_rule + "," + ok_rule), 400, "policy.rules[1].id"},
      {"POST", "/api/v1/policies",
       policy(R"({"id":"r","sources":{"any":true},"destinations":{"any":true}})"), 400,
       "policy.rules[0].action"},
      {"POST", "/api/v1/policies",
       policy(R"({"id":"r","destinations":{"any":true},"action":"ACTION_DROP"})"), 400,
       "policy.rules[0].sources"},
      {"POST", "/api/v1/policies",
       policy(
           R"({"id":"r","sources":{"any":true,"group_ids":["web"]},"destinations":{"any":true},"action":"ACTION_DROP"})"),
       400, "policy.rules[0].sources.any"},
      {"POST", "/api/v1/policies",
       policy(
           R"({"id":"r","sources":{"group_ids":["missing"]},"destinations":{"any":true},"action":"ACTION_DROP"})"),
       400, "policy.rules[0].sources.group_ids[0]"},
      {"POST", "/api/v1/policies",
       policy(
           R"({"id":"r","sources":{"any":true},"destinations":{"ip_prefixes":["10.0.0.1/8"]},"action":"ACTION_DROP"})"),
       400, "policy.rules[0].destinations.ip_prefixes[0]"},
      {"POST", "/api/v1/policies",
       policy(
           R"({"id":"r","sources":{"any":true},"destinations":{"any":true},"action":"ACTION_DROP","services":[{"protocol":300}]})"),
       400, "policy.rules[0].services[0].protocol"},
      {"POST", "/api/v1/policies",
       policy(
           R"({"id":"r","sources":{"any":true},"destinations":{"any":true},"action":"ACTION_DROP","services":[{"protocol":1,"destination_ports":[{"first":1}]}]})"),
       400, "policy.rules[0].services[0].destination_ports"},
      {"POST", "/api/v1/policies",
       policy(
           R"({"id":"r","sources":{"any":true},"destinations":{"any":true},"action":"ACTION_DROP","services":[{"protocol":6,"destination_ports":[{"first":80,"last":70000}]}]})"),
       400, "policy.rules[0].services[0].destination_ports[0].last"},
      {"POST", "/api/v1/policies",
       policy(
           R"({"id":"r","sources":{"any":true},"destinations":{"any":true},"action":"ACTION_DROP","services":[{"protocol":6,"source_ports":[{"first":90,"last":80}]}]})"),
       400, "policy.rules[0].services[0].source_ports[0].last"},
      {"POST", "/api/v1/policies",
       policy(
           R"({"id":"r","sources":{"any":true},"destinations":{"any":true},"action":"ACTION_DROP","services":[{"protocol":6,"icmp_type":3}]})"),
       400, "policy.rules[0].services[0].icmp_type"},
      {"POST", "/api/v1/policies",
       policy(
           R"({"id":"r","sources":{"any":true},"destinations":{"any":true},"action":"ACTION_DROP","services":[{"protocol":1,"icmp_code":3}]})"),
       400, "policy.rules[0].services[0].icmp_code"},
      {"POST", "/api/v1/policies",
       policy(
           R"({"id":"r","sources":{"any":true},"destinations":{"any":true},"action":"ACTION_DROP","applied_to_group_ids":["missing"]})"),
       400, "policy.rules[0].applied_to_group_ids[0]"},
      {"POST", "/api/v1/policies",
       R"({"id":"p","category":"CATEGORY_APPLICATION","applied_to_group_ids":["missing"]})", 400,
       "policy.applied_to_group_ids[0]"},
      // Lists, paths, revisions
      {"GET", "/api/v1/vms?page_size=x", "", 400, "page_size"},
      {"GET", "/api/v1/nothing", "", 404, "path"},
      {"GET", "/api/v1/changes?from_revision=-1", "", 400, "from_revision"},
  };
  for (const auto& [method, path, body, status, field] : cases) {
    auto r = rest_->Call(method, path, body);
    EXPECT_EQ(r.status, status) << method << " " << path << " " << body << " -> " << r.body;
    EXPECT_EQ(r.body["error"]["field"], field)
        << method << " " << path << " " << body << " -> " << r.body;
    EXPECT_FALSE(std::string(r.body["error"]["message"]).empty());
  }
  // Nothing of the rejected writes landed.
  EXPECT_EQ(rest_->Get("/api/v1/vms").body["vms"].size(), 2u);
  EXPECT_EQ(rest_->Get("/api/v1/groups").body["groups"].size(), 2u);
  EXPECT_EQ(rest_->Get("/api/v1/policies").body["policies"].size(), 1u);
}

TEST_F(ApiTest, GrpcCrudAndStatusCodes) {
  Seed();
  grpc::ClientContext c1;
  dfw::v1::GetRequest get;
  get.set_id("web");
  dfw::v1::SecurityGroup g;
  ASSERT_TRUE(stub_->GetGroup(&c1, get, &g).ok());
  EXPECT_EQ(g.criteria(0).conditions(0).tag().value(), "web");

  dfw::v1::PutGroupRequest put;
  *put.mutable_group() = g;
  put.mutable_group()->set_display_name("Web tier");
  put.set_expected_revision(g.revision() + 100);
  grpc::ClientContext c2;
  dfw::v1::SecurityGroup out;
  auto s = stub_->PutGroup(&c2, put, &out);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  put.set_expected_revision(g.revision());
  grpc::ClientContext c3;
  ASSERT_TRUE(stub_->PutGroup(&c3, put, &out).ok());
  EXPECT_GT(out.revision(), g.revision());

  dfw::v1::PutPolicyRequest bad;
  bad.mutable_policy()->set_id("p");
  grpc::ClientContext c4;
  dfw::v1::Policy pout;
  s = stub_->PutPolicy(&c4, bad, &pout);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message().rfind("policy.category:", 0), 0u) << s.error_message();

  grpc::ClientContext c5;
  dfw::v1::DeleteRequest del;
  del.set_id("db");
  dfw::v1::DeleteResponse dout;
  EXPECT_EQ(stub_->DeleteGroup(&c5, del, &dout).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);

  grpc::ClientContext c6;
  dfw::v1::ListRequest lr;
  dfw::v1::ListVmsResponse vms;
  ASSERT_TRUE(stub_->ListVms(&c6, lr, &vms).ok());
  EXPECT_EQ(vms.vms_size(), 2);

  grpc::ClientContext c7;
  dfw::v1::TagRequest tag;
  tag.add_vm_ids("web-1");
  tag.add_vm_ids("db-1");
  auto* t = tag.add_set();
  t->set_scope("env");
  t->set_value("prod");
  dfw::v1::TagResponse tout;
  ASSERT_TRUE(stub_->Tag(&c7, tag, &tout).ok());
  EXPECT_EQ(tout.vms_size(), 2);
  EXPECT_EQ(tout.vms(0).revision(), tout.revision());  // one change, one revision

  grpc::ClientContext c8;
  get.set_id("nope");
  dfw::v1::Vm vm;
  EXPECT_EQ(stub_->GetVm(&c8, get, &vm).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(ApiTest, WatchStreamsChangesFromARevision) {
  Seed();  // revisions 1..5
  grpc::ClientContext ctx;
  dfw::v1::WatchRequest req;
  req.set_from_revision(3);
  auto reader = stub_->Watch(&ctx, req);
  std::vector<dfw::v1::ChangeEvent> got;
  dfw::v1::ChangeEvent e;
  for (int i = 0; i < 2 && reader->Read(&e); ++i) got.push_back(e);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].revision(), 4u);
  EXPECT_EQ(got[0].kind(), dfw::v1::ChangeEvent::KIND_GROUP);
  EXPECT_EQ(got[1].id(), "web-to-db");
  // A new change arrives on the open stream.
  ASSERT_EQ(rest_->Delete("/api/v1/policies/web-to-db").status, 200);
  ASSERT_TRUE(reader->Read(&e));
  EXPECT_EQ(e.revision(), 6u);
  EXPECT_TRUE(e.deleted());
  ctx.TryCancel();
  // REST flavour.
  auto r = rest_->Get("/api/v1/changes?from_revision=5");
  ASSERT_EQ(r.status, 200);
  ASSERT_EQ(r.body["events"].size(), 1u);
  EXPECT_EQ(r.body["events"][0]["kind"], "KIND_POLICY");
}

TEST_F(ApiTest, EverythingSurvivesARestart) {
  Seed();
  ASSERT_EQ(
      rest_->Post("/api/v1/vms/web-1/tags", {{"set", {{{"scope", "env"}, {"value", "prod"}}}}})
          .status,
      200);
  auto before_rules = rest_->Get("/api/v1/vms/db-1/effective-rules").body;
  Restart();
  auto r = rest_->Get("/api/v1/vms/web-1");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.body["tags"].size(), 2u);
  EXPECT_EQ(r.body["revision"], "6");
  EXPECT_EQ(rest_->Get("/api/v1/groups/db/members").body["vm_ids"], json::array({"db-1"}));
  auto after_rules = rest_->Get("/api/v1/vms/db-1/effective-rules").body;
  EXPECT_EQ(after_rules["rulesets"][0]["rules"],
            before_rules["rulesets"][0]["rules"]);  // same rule numbers
  EXPECT_EQ(after_rules["address_sets"], before_rules["address_sets"]);
  EXPECT_EQ(rest_->Get("/api/v1/changes?from_revision=0").body["events"].size(), 6u);
  // The revision counter continues.
  r = rest_->Post("/api/v1/groups", TagGroupJson("prod", "env", "prod"));
  EXPECT_EQ(r.body["revision"], "7");
}

}  // namespace
}  // namespace dfw::controller::testing
