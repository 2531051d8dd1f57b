// GET /metrics on the controller's REST listener (issue 16): the text is
// parsed by the strict parser of the Prometheus exposition format 0.0.4
// (tests/base/exposition_parser.h), and its values are checked to follow real actions (API
// requests, host sessions, acks). With mutual TLS: a viewer may read it,
// a host identity and a client without a certificate may not.
#include <grpcpp/grpcpp.h>

#include <optional>
#include <string>

#include "dfw/trust/ca.h"
#include "dfw/trust/svid.h"
#include "dfw/v1/controller.grpc.pb.h"
#include "exposition_parser.h"
#include "test_host.h"
#include "test_pki.h"
#include "test_tls_client.h"
#include "test_util.h"

namespace dfw::controller::testing {
namespace {

using metrics::testing::LabelSet;
using metrics::testing::Parse;
using metrics::testing::Scrape;
using nlohmann::json;

// ---- the controller's /metrics

struct Scraped {
  int status = 0;
  std::string content_type;
  std::string body;
  Scrape parsed;
};

Scraped ScrapeWith(httplib::Client& cli) {
  Scraped out;
  auto r = cli.Get("/metrics");
  if (!r) return out;
  out.status = r->status;
  out.content_type = r->get_header_value("Content-Type");
  out.body = r->body;
  if (out.status == 200) out.parsed = Parse(r->body);
  return out;
}

class MetricsTest : public WebToDbControllerTest {
 protected:
  Scrape Metrics() {
    httplib::Client cli("127.0.0.1", server_.http_port());
    Scraped s = ScrapeWith(cli);
    EXPECT_EQ(s.status, 200) << s.body;
    EXPECT_EQ(s.content_type.rfind("text/plain; version=0.0.4", 0), 0u) << s.content_type;
    EXPECT_EQ(s.parsed.error, "") << s.body;
    for (const auto& [name, f] : s.parsed.families) {
      EXPECT_EQ(name.rfind("dfw_controller_", 0), 0u) << name;
    }
    return s.parsed;
  }
  static LabelSet Route(const std::string& method, const std::string& route,
                        const std::string& code) {
    return {{"method", method}, {"route", route}, {"code", code}};
  }
};

TEST_F(MetricsTest, ValuesFollowRequestsAndRevisions) {
  Scrape before = Metrics();
  for (const char* family :
       {"dfw_controller_revision", "dfw_controller_hosts", "dfw_controller_hosts_pending",
        "dfw_controller_oldest_unrealized_revision_age_seconds",
        "dfw_controller_realization_duration_seconds", "dfw_controller_feed_pending_objects",
        "dfw_controller_feed_pending_objects_max", "dfw_controller_store_commits_total",
        "dfw_controller_store_commit_duration_seconds", "dfw_controller_http_requests_total",
        "dfw_controller_http_request_duration_seconds", "dfw_controller_vms",
        "dfw_controller_groups", "dfw_controller_policies", "dfw_controller_memberships"}) {
    EXPECT_TRUE(before.families.count(family)) << family;
  }
  json status = rest_->Get("/api/v1/status").body;
  EXPECT_EQ(before.Or0("dfw_controller_revision"), status["revision"].get<double>());
  EXPECT_EQ(before.Or0("dfw_controller_groups"), 2);
  EXPECT_EQ(before.Or0("dfw_controller_policies"), 1);
  // The setup's POSTs, by route template.
  EXPECT_EQ(
      before.Or0("dfw_controller_http_requests_total", Route("POST", "/api/v1/groups", "2xx")), 2);
  // Not per host: no per-host family unless asked for.
  EXPECT_FALSE(before.families.count("dfw_controller_host_connected"));

  const std::string route = "/api/v1/groups/{id}";
  double puts = before.Or0("dfw_controller_http_requests_total", Route("PUT", route, "2xx"));
  double commits = before.Or0("dfw_controller_store_commits_total", {{"result", "ok"}});
  double commit_count = before.Or0("dfw_controller_store_commit_duration_seconds_count");
  auto r = rest_->Put("/api/v1/groups/app-a", TagGroupJson("app-a", "app", "a"));
  ASSERT_EQ(r.status, 200) << r.body;
  Scrape after = Metrics();
  EXPECT_EQ(after.Or0("dfw_controller_http_requests_total", Route("PUT", route, "2xx")), puts + 1);
  EXPECT_EQ(after.Or0("dfw_controller_http_request_duration_seconds_count",
                      {{"method", "PUT"}, {"route", route}}),
            1);
  EXPECT_EQ(after.Or0("dfw_controller_revision"), before.Or0("dfw_controller_revision") + 1);
  EXPECT_EQ(after.Or0("dfw_controller_groups"), 3);
  EXPECT_EQ(after.Or0("dfw_controller_store_commits_total", {{"result", "ok"}}), commits + 1);
  EXPECT_EQ(after.Or0("dfw_controller_store_commit_duration_seconds_count"), commit_count + 1);

  // A refused write counts under its route with its class; a path no route
  // takes counts as "unmatched", never under its raw path.
  r = rest_->Put("/api/v1/groups/app-a", TagGroupJson("app-a", "app", "b"),
                 {{"If-Match", "\"1\""}});
  ASSERT_EQ(r.status, 409) << r.body;
  ASSERT_EQ(rest_->Get("/api/v1/no-such-thing-xyz").status, 404);
  after = Metrics();
  EXPECT_EQ(after.Or0("dfw_controller_http_requests_total", Route("PUT", route, "4xx")), 1);
  EXPECT_EQ(after.Or0("dfw_controller_http_requests_total", Route("GET", "unmatched", "4xx")), 1);
  for (const auto& [name, f] : after.families) {
    for (const auto& s : f.samples) {
      for (const auto& [k, v] : s.labels) {
        EXPECT_EQ(v.find("no-such-thing"), std::string::npos) << name << " " << k << "=" << v;
        EXPECT_EQ(v.find("app-a"), std::string::npos) << name << " " << k << "=" << v;
      }
    }
  }
  // The scrapes themselves are counted.
  EXPECT_GE(after.Or0("dfw_controller_http_requests_total", Route("GET", "/metrics", "2xx")), 2);
}

TEST_F(MetricsTest, HostsAndRealizationFollowSessionsAndAcks) {
  Scrape s = Metrics();
  EXPECT_EQ(s.Or0("dfw_controller_hosts", {{"state", "connected"}}), 0);
  double realized = s.Or0("dfw_controller_realization_duration_seconds_count");
  {
    TestHost h1(server_.grpc_port(), "h1");
    h1.Hello({MetadataVm("db-1", {{"app", "db"}}, "198.18.0.12")});
    auto full = h1.Next();
    ASSERT_TRUE(full && full->has_full());
    h1.Ack(full->full().revision());
    ASSERT_TRUE(WaitFor([&] {
      Scrape m = Metrics();
      return m.Or0("dfw_controller_hosts", {{"state", "connected"}}) == 1 &&
             m.Or0("dfw_controller_hosts_pending") == 0;
    }));
    EXPECT_EQ(Metrics().Or0("dfw_controller_vms"), 1);

    // A change that affects h1 only (the policy applied to db, on h1):
    // pending until h1 acks, then one more realization observed.
    auto p = json::parse(R"({"id":"web-to-db","category":"CATEGORY_APPLICATION",
      "applied_to_group_ids":["db"],"stateful":true,
      "rules":[{"id":"allow-pg","sources":{"group_ids":["web"]},"destinations":{"group_ids":["db"]},
                "services":[{"protocol":6,"destination_ports":[{"first":5433}]}],
                "action":"ACTION_ALLOW"}]})");
    auto r = rest_->Put("/api/v1/policies/web-to-db", p);
    ASSERT_EQ(r.status, 200) << r.body;
    auto delta = h1.Next();
    ASSERT_TRUE(delta && delta->has_delta());
    s = Metrics();
    EXPECT_EQ(s.Or0("dfw_controller_hosts_pending"), 1);
    EXPECT_GT(s.Or0("dfw_controller_oldest_unrealized_revision_age_seconds"), 0);
    h1.Ack(delta->delta().to_revision());
    ASSERT_TRUE(WaitFor([&] { return Metrics().Or0("dfw_controller_hosts_pending") == 0; }));
    s = Metrics();
    EXPECT_EQ(s.Or0("dfw_controller_oldest_unrealized_revision_age_seconds"), 0);
    EXPECT_GT(s.Or0("dfw_controller_realization_duration_seconds_count"), realized);
  }
  // The session ended: h1 is known, not connected.
  ASSERT_TRUE(WaitFor([&] {
    Scrape m = Metrics();
    return m.Or0("dfw_controller_hosts", {{"state", "connected"}}) == 0 &&
           m.Or0("dfw_controller_hosts", {{"state", "disconnected"}}) >= 1;
  }));
}

// gRPC calls count by full method name and status code, unary ones with a
// latency series; a host session (a stream) counts when it ends, with no
// latency series.
TEST_F(MetricsTest, GrpcCallsCountByMethodAndCode) {
  auto ch = grpc::CreateChannel("127.0.0.1:" + std::to_string(server_.grpc_port()),
                                grpc::InsecureChannelCredentials());
  auto stub = dfw::v1::ControllerService::NewStub(ch);
  const std::string get_vm = "/dfw.v1.ControllerService/GetVm";
  const std::string list_vms = "/dfw.v1.ControllerService/ListVms";
  const std::string session = "/dfw.v1.HostSessionService/Session";
  auto calls = [](const Scrape& s, const std::string& method, const std::string& code) {
    return s.Or0("dfw_controller_grpc_requests_total", {{"method", method}, {"code", code}});
  };
  Scrape before = Metrics();
  EXPECT_TRUE(before.families.count("dfw_controller_grpc_requests_total"));
  {
    dfw::v1::GetRequest req;
    req.set_id("no-such-vm");
    dfw::v1::Vm vm;
    grpc::ClientContext c;
    EXPECT_EQ(stub->GetVm(&c, req, &vm).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  for (int i = 0; i < 2; ++i) {
    dfw::v1::ListVmsResponse resp;
    grpc::ClientContext c;
    EXPECT_TRUE(stub->ListVms(&c, dfw::v1::ListRequest(), &resp).ok());
  }
  {
    TestHost h1(server_.grpc_port(), "h1");
    h1.Hello({MetadataVm("db-1", {{"app", "db"}}, "198.18.0.12")});
    ASSERT_TRUE(h1.Next());
  }
  ASSERT_TRUE(WaitFor([&] {
    Scrape m = Metrics();
    double ended = 0;
    for (const auto& smp : m.families["dfw_controller_grpc_requests_total"].samples) {
      if (smp.labels.count("method") && smp.labels.at("method") == session) ended += smp.value;
    }
    return ended >= 1;
  }));
  Scrape after = Metrics();
  EXPECT_EQ(calls(after, get_vm, "NOT_FOUND"), calls(before, get_vm, "NOT_FOUND") + 1);
  EXPECT_EQ(calls(after, list_vms, "OK"), calls(before, list_vms, "OK") + 2);
  EXPECT_EQ(
      after.Or0("dfw_controller_grpc_request_duration_seconds_count", {{"method", list_vms}}),
      before.Or0("dfw_controller_grpc_request_duration_seconds_count", {{"method", list_vms}}) + 2);
  EXPECT_FALSE(
      after.Value("dfw_controller_grpc_request_duration_seconds_count", {{"method", session}}))
      << "a stream has no latency series";
}

TEST(MetricsPerHostTest, PerHostSeriesOnlyWhenAskedFor) {
  TempDir dir;
  ControllerOptions o;
  o.data_dir = dir.path() + "/db";
  o.insecure = true;
  o.metrics_per_host = true;
  ControllerServer server;
  ASSERT_TRUE(server.Start(o).ok());
  TestHost h1(server.grpc_port(), "h1");
  h1.Hello({MetadataVm("db-1", {{"app", "db"}}, "198.18.0.12")});
  ASSERT_TRUE(h1.Next().has_value());
  httplib::Client cli("127.0.0.1", server.http_port());
  Scrape s;
  ASSERT_TRUE(WaitFor([&] {
    s = ScrapeWith(cli).parsed;
    return s.Or0("dfw_controller_host_connected", {{"host", "h1"}}) == 1;
  })) << s.error;
  EXPECT_EQ(s.error, "");
  EXPECT_TRUE(s.Value("dfw_controller_host_feed_pending_objects", {{"host", "h1"}}).has_value());
  EXPECT_TRUE(s.Value("dfw_controller_host_realized_revision", {{"host", "h1"}}).has_value());
}

// ---- mutual TLS: the same authorization as the rest of the REST API

class MetricsTlsTest : public TlsControllerTest {
 protected:
  // A client as `id` with `role` (no id: no client certificate).
  std::unique_ptr<httplib::Client> Client(std::optional<trust::SpiffeId> id,
                                          trust::Role role = trust::Role::kNone) {
    return trust::testing::TlsTestClient("https://127.0.0.1:" + std::to_string(server_.http_port()),
                                         dir_.path() + "/pki/controller/" + trust::kSvidBundleFile,
                                         *ca_, id, role,
                                         dir_.path() + "/creds/" + (id ? id->name : std::string()));
  }
};

TEST_F(MetricsTlsTest, AViewerMayReadAHostOrAnonymousClientMayNot) {
  auto viewer =
      Client(trust::SpiffeId{"dfw.test", trust::IdKind::kUser, "vi"}, trust::Role::kViewer);
  Scraped s = ScrapeWith(*viewer);
  EXPECT_EQ(s.status, 200) << s.body;
  EXPECT_EQ(s.parsed.error, "") << s.body;
  EXPECT_TRUE(s.parsed.Value("dfw_controller_revision").has_value());

  auto host = Client(trust::SpiffeId{"dfw.test", trust::IdKind::kHost, "h1"});
  EXPECT_EQ(ScrapeWith(*host).status, 403);
  auto nobody =
      Client(trust::SpiffeId{"dfw.test", trust::IdKind::kUser, "nobody"}, trust::Role::kNone);
  EXPECT_EQ(ScrapeWith(*nobody).status, 403);
  auto anonymous = Client(std::nullopt);
  EXPECT_EQ(ScrapeWith(*anonymous).status, 401);
  // The refusals are counted under the route.
  s = ScrapeWith(*viewer);
  EXPECT_EQ(s.parsed.Or0("dfw_controller_http_requests_total",
                         {{"method", "GET"}, {"route", "/metrics"}, {"code", "4xx"}}),
            3);
}

}  // namespace
}  // namespace dfw::controller::testing
