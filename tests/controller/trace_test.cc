// Trace over the real API (issue 16): GET /api/v1/trace, the gRPC Trace
// and `dfwctl trace`, on an in-process controller on loopback with VMs on
// two hosts, one of them connected over a real host session. Each case is
// a connection an operator asks about: allowed by a rule at both ends, let
// through by an audited deny, rejected, stopped by the default rule, passing
// an end no host of ours enforces; the hosts' realization beside it; and
// the errors naming the field.
#include <grpcpp/grpcpp.h>

#include <cstdio>
#include <string>

#include "dfw/v1/controller.grpc.pb.h"
#include "test_host.h"
#include "test_util.h"

namespace dfw::controller::testing {
namespace {

using nlohmann::json;

class TraceTest : public WebAndDbOnTwoHostsTest {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(WebAndDbOnTwoHostsTest::SetUp());
    // A VM no host of ours enforces (no host reported it).
    Post("/api/v1/vms", VmJson("laptop", "", {{"app", "web"}}, "198.18.0.9"));
    Post("/api/v1/policies", WebToDb());
    // Evaluated before web-to-db (lower priority number), in audit mode.
    Post("/api/v1/policies", json::parse(R"({"id":"ssh-audit","category":"CATEGORY_APPLICATION",
      "priority":5,"applied_to_group_ids":["web","db"],"mode":"POLICY_MODE_AUDIT",
      "rules":[{"id":"no-ssh","sources":{"any":true},"destinations":{"any":true},
                "services":[{"protocol":6,"destination_ports":[{"first":22}]}],
                "action":"ACTION_DROP"}]})"));
  }

  json Trace(const std::string& query, int want_status = 200) {
    auto r = rest_->Get("/api/v1/trace?" + query);
    EXPECT_EQ(r.status, want_status) << query << ": " << r.body;
    return r.body;
  }
};

TEST_F(TraceTest, AllowedByARuleAtBothEnds) {
  json t = Trace("from_vm_id=web-1&to_vm_id=db-1&protocol=6&destination_port=5432");
  EXPECT_EQ(t["allowed"], true);
  EXPECT_EQ(t["action"], "ACTION_ALLOW");
  EXPECT_EQ(t["decided_by"], "KIND_UNSPECIFIED");
  ASSERT_EQ(t["stages"].size(), 2u);
  const json& eg = t["stages"][0];
  EXPECT_EQ(eg["kind"], "KIND_EGRESS");
  EXPECT_EQ(eg["vm_id"], "web-1");
  EXPECT_EQ(eg["vnic_id"], "web-1-nic0");
  EXPECT_EQ(eg["address"], "198.18.0.1");
  EXPECT_EQ(eg["host_id"], "h1");
  EXPECT_EQ(eg["enforced"], true);
  EXPECT_EQ(eg["policy_id"], "web-to-db");
  EXPECT_EQ(eg["rule_id"], "allow-pg");
  EXPECT_EQ(eg["passes"], true);
  const json& in = t["stages"][1];
  EXPECT_EQ(in["kind"], "KIND_INGRESS");
  EXPECT_EQ(in["vm_id"], "db-1");
  EXPECT_EQ(in["address"], "198.18.0.2");
  EXPECT_EQ(in["rule_id"], "allow-pg");
  EXPECT_EQ(in["action"], "ACTION_ALLOW");
  EXPECT_EQ(in["passes"], true);
  // The rule's number is the one the dataplane counts it under.
  auto rules = rest_->Get("/api/v1/vms/db-1/effective-rules").body["rulesets"][0]["rules"];
  bool found = false;
  for (const auto& r : rules)
    if (r["rule_id"] == "allow-pg") {
      EXPECT_EQ(in["rule_num"], r["rule_num"]);
      found = true;
    }
  EXPECT_TRUE(found);
}

TEST_F(TraceTest, RejectedAtTheSendersEgress) {
  json t = Trace("from_vm_id=web-1&to_vm_id=db-1&protocol=6&destination_port=80");
  EXPECT_EQ(t["allowed"], false);
  EXPECT_EQ(t["action"], "ACTION_REJECT");
  EXPECT_EQ(t["decided_by"], "KIND_EGRESS");
  EXPECT_EQ(t["stages"][0]["rule_id"], "reject-http");
  EXPECT_EQ(t["stages"][0]["passes"], false);
}

TEST_F(TraceTest, AnAuditedDenyPasses) {
  json t = Trace("from_vm_id=web-1&to_vm_id=db-1&protocol=6&destination_port=22");
  EXPECT_EQ(t["allowed"], true);
  for (const auto& st : t["stages"]) {
    EXPECT_EQ(st["policy_id"], "ssh-audit");
    EXPECT_EQ(st["action"], "ACTION_DROP");
    EXPECT_EQ(st["audit"], true);
    EXPECT_EQ(st["passes"], true);
    EXPECT_NE(st["explanation"].get<std::string>().find("audit mode"), std::string::npos);
  }
}

TEST_F(TraceTest, TheDefaultRuleStopsWhatNoRuleAllows) {
  // db -> web on 5432: the rule allows web -> db only.
  json t = Trace("from_vm_id=db-1&to_vm_id=web-1&protocol=6&destination_port=5432");
  EXPECT_EQ(t["allowed"], false);
  EXPECT_EQ(t["decided_by"], "KIND_EGRESS");
  EXPECT_EQ(t["action"], "ACTION_DROP");
  EXPECT_EQ(t["stages"][0]["default_rule"], true);
  EXPECT_EQ(t["stages"][0]["vm_id"], "db-1");
  // And ICMP, named by its type: an echo request by default.
  t = Trace("from_vm_id=web-1&to_vm_id=db-1&protocol=1");
  EXPECT_EQ(t["allowed"], false);
  EXPECT_EQ(t["stages"][0]["default_rule"], true);
}

TEST_F(TraceTest, AnEndNoHostEnforcesPasses) {
  // laptop is in group web but on no host: its egress is not filtered, db-1's
  // ingress decides.
  json t = Trace("from_vm_id=laptop&to_vm_id=db-1&protocol=6&destination_port=5432");
  EXPECT_EQ(t["allowed"], true);
  EXPECT_EQ(t["stages"][0]["enforced"], false);
  EXPECT_EQ(t["stages"][0]["passes"], true);
  EXPECT_NE(t["stages"][0]["explanation"].get<std::string>().find("no host of ours enforces"),
            std::string::npos);
  EXPECT_EQ(t["stages"][1]["rule_id"], "allow-pg");
  t = Trace("from_vm_id=laptop&to_vm_id=db-1&protocol=6&destination_port=443");
  EXPECT_EQ(t["allowed"], false);
  EXPECT_EQ(t["decided_by"], "KIND_INGRESS");
}

TEST_F(TraceTest, ShowsWhetherEachHostHasRealizedIt) {
  // h1 connects and acknowledges what it is sent; h2 never connects.
  TestHost h1(server_.grpc_port(), "h1");
  h1.Hello({MetadataVm("web-1", {{"app", "web"}}, "198.18.0.1")});
  uint64_t rev = 0;
  for (auto m = h1.Next(); m; m = h1.Next(500)) {
    if (m->has_full()) rev = m->full().revision();
    if (m->has_delta()) rev = m->delta().to_revision();
  }
  ASSERT_GT(rev, 0u);
  h1.Ack(rev);
  ASSERT_TRUE(WaitFor([&] {
    json t = Trace("from_vm_id=web-1&to_vm_id=db-1&protocol=6&destination_port=5432");
    return t["stages"][0]["host"].value("state", "") == "REALIZATION_STATE_REALIZED";
  }));
  json t = Trace("from_vm_id=web-1&to_vm_id=db-1&protocol=6&destination_port=5432");
  EXPECT_EQ(t["stages"][0]["host"]["realized_revision"], std::to_string(rev));
  EXPECT_EQ(t["stages"][0]["explanation"].get<std::string>().find("; host"), std::string::npos)
      << "a host that realized the revision gets no note";
  EXPECT_EQ(t["stages"][1]["host"]["state"], "REALIZATION_STATE_DISCONNECTED");
  EXPECT_NE(t["stages"][1]["explanation"].get<std::string>().find("host h2 is not connected"),
            std::string::npos)
      << t["stages"][1]["explanation"];
  EXPECT_EQ(t["revision"],
            std::to_string(rest_->Get("/api/v1/status").body["revision"].get<uint64_t>()));
}

TEST_F(TraceTest, ErrorsNameTheField) {
  auto field = [&](const std::string& q, int status = 400) {
    json b = Trace(q, status);
    return b["error"].value("field", "");
  };
  EXPECT_EQ(field("to_vm_id=db-1&protocol=6&destination_port=1"), "from_vm_id");
  EXPECT_EQ(field("from_vm_id=web-1&protocol=6&destination_port=1"), "to_vm_id");
  EXPECT_EQ(field("from_vm_id=nope&to_vm_id=db-1&protocol=6&destination_port=1", 404),
            "from_vm_id");
  EXPECT_EQ(field("from_vm_id=web-1&to_vm_id=nope&protocol=6&destination_port=1", 404), "to_vm_id");
  EXPECT_EQ(field("from_vm_id=web-1&to_vm_id=db-1&destination_port=1"), "protocol");
  EXPECT_EQ(field("from_vm_id=web-1&to_vm_id=db-1&protocol=6"), "destination_port");
  EXPECT_EQ(field("from_vm_id=web-1&to_vm_id=db-1&protocol=6&destination_port=99999"),
            "destination_port");
  EXPECT_EQ(field("from_vm_id=web-1&to_vm_id=db-1&protocol=abc&destination_port=1"), "protocol");
  EXPECT_EQ(field("from_vm_id=web-1&to_vm_id=db-1&protocol=1&destination_port=1"),
            "destination_port");
  // An address that is not the VM's, or not an address.
  EXPECT_EQ(field("from_vm_id=web-1&to_vm_id=db-1&protocol=6&destination_port=1&to_ip=198.18.0.1"),
            "to_ip");
  EXPECT_EQ(field("from_vm_id=web-1&to_vm_id=db-1&protocol=6&destination_port=1&from_ip=x"),
            "from_ip");
  // No address of the destination's family at the source.
  ASSERT_EQ(rest_->Post("/api/v1/vms", VmJson("v6-only", "h2", {}, "2001:db8::5")).status, 201);
  EXPECT_EQ(field("from_vm_id=web-1&to_vm_id=v6-only&protocol=6&destination_port=1"), "from_ip");
}

TEST_F(TraceTest, OverGrpc) {
  auto ch = grpc::CreateChannel("127.0.0.1:" + std::to_string(server_.grpc_port()),
                                grpc::InsecureChannelCredentials());
  auto stub = dfw::v1::ControllerService::NewStub(ch);
  dfw::v1::TraceRequest req;
  req.set_from_vm_id("web-1");
  req.set_to_vm_id("db-1");
  req.set_protocol(6);
  req.set_destination_port(80);
  dfw::v1::TraceResponse resp;
  grpc::ClientContext c;
  ASSERT_TRUE(stub->Trace(&c, req, &resp).ok());
  EXPECT_FALSE(resp.allowed());
  EXPECT_EQ(resp.decided_by(), dfw::v1::TraceStage::KIND_EGRESS);
  ASSERT_EQ(resp.stages_size(), 2);
  EXPECT_EQ(resp.stages(0).rule_id(), "reject-http");
  req.set_destination_port(0);
  grpc::ClientContext c2;
  auto st = stub->Trace(&c2, req, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(st.error_message().rfind("destination_port:", 0), 0u) << st.error_message();
}

// dfwctl trace, the real binary: names resolved, a table and a verdict line.
TEST_F(TraceTest, Dfwctl) {
  int rc = 0;
  std::string out;
  auto run = [&](const std::string& args) {
    Cmd c = RunDfwctl(DFWCTL_BIN, server_.http_port(), args);
    rc = c.rc;
    return c.out;
  };
  out = run("trace web-1 db-1 --tcp 5432");
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("verdict: ALLOWED"), std::string::npos) << out;
  EXPECT_NE(out.find("web-to-db/allow-pg"), std::string::npos) << out;
  out = run("trace web-1 db-1 --tcp 80");
  EXPECT_NE(out.find("verdict: REJECT at EGRESS"), std::string::npos) << out;
  out = run("-o json trace laptop db-1 --icmp");
  EXPECT_EQ(rc, 0) << out;
  json j = json::parse(out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << out;
  EXPECT_EQ(j["allowed"], false);
  EXPECT_EQ(j["decided_by"], "KIND_INGRESS");
  out = run("trace web-1 db-1");
  EXPECT_EQ(rc, 2) << out;  // usage: no protocol
  out = run("trace web-1 db-1 --tcp 99999");
  EXPECT_EQ(rc, 3) << out;  // invalid (400), the field named
  EXPECT_NE(out.find("destination_port"), std::string::npos) << out;
  out = run("trace web-1 nosuch --tcp 1");
  EXPECT_EQ(rc, 4) << out;
}

}  // namespace
}  // namespace dfw::controller::testing
