// GET /metrics on the controller's REST listener (issue 16): the text is
// parsed by a strict parser of the Prometheus exposition format 0.0.4
// written here, and its values are checked to follow real actions (API
// requests, host sessions, acks). With mutual TLS: a viewer may read it,
// a host identity and a client without a certificate may not.
#include <grpcpp/grpcpp.h>

#include <cmath>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "dfw/trust/ca.h"
#include "dfw/trust/svid.h"
#include "test_host.h"
#include "test_pki.h"
#include "test_util.h"

namespace dfw::controller::testing {
namespace {

using nlohmann::json;

// ---- a strict parser of the text format

using LabelSet = std::map<std::string, std::string>;
struct Sample {
  std::string name;
  LabelSet labels;
  double value = 0;
};
struct Family {
  std::string help, type;
  std::vector<Sample> samples;
};
struct Scrape {
  std::map<std::string, Family> families;
  std::string error;  // empty: the text is well formed

  // The value of name{labels} (nullopt: no such sample).
  std::optional<double> Value(const std::string& name, const LabelSet& labels = {}) const {
    for (const auto& [fname, f] : families) {
      for (const auto& s : f.samples) {
        if (s.name == name && s.labels == labels) return s.value;
      }
    }
    return std::nullopt;
  }
  double Or0(const std::string& name, const LabelSet& labels = {}) const {
    return Value(name, labels).value_or(0);
  }
};

bool ParseNumber(const std::string& t, double* v) {
  if (t == "+Inf") return *v = INFINITY, true;
  if (t == "-Inf") return *v = -INFINITY, true;
  if (t == "NaN") return *v = NAN, true;
  static const std::regex num(R"(-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?)");
  if (!std::regex_match(t, num)) return false;
  *v = std::stod(t);
  return true;
}

// Labels from `text` at `pos` (just after '{') up to and past the '}'.
bool ParseLabels(const std::string& text, size_t* pos, LabelSet* out, std::string* err) {
  static const std::regex label_name("[a-zA-Z_][a-zA-Z0-9_]*");
  size_t i = *pos;
  while (true) {
    size_t eq = text.find('=', i);
    if (eq == std::string::npos) return *err = "label without '='", false;
    std::string name = text.substr(i, eq - i);
    if (!std::regex_match(name, label_name)) return *err = "bad label name '" + name + "'", false;
    if (eq + 1 >= text.size() || text[eq + 1] != '"') return *err = "label value unquoted", false;
    std::string value;
    size_t j = eq + 2;
    for (; j < text.size() && text[j] != '"'; ++j) {
      if (text[j] == '\\') {
        ++j;
        if (j >= text.size()) return *err = "escape at end", false;
        char c = text[j];
        if (c == 'n') {
          value += '\n';
        } else if (c == '\\' || c == '"') {
          value += c;
        } else {
          return *err = "bad escape in a label value", false;
        }
      } else if (text[j] == '\n') {
        return *err = "newline in a label value", false;
      } else {
        value += text[j];
      }
    }
    if (j >= text.size()) return *err = "unterminated label value", false;
    if (out->count(name)) return *err = "label '" + name + "' twice", false;
    (*out)[name] = value;
    ++j;  // past the closing quote
    if (j < text.size() && text[j] == ',') {
      i = j + 1;
      continue;
    }
    if (j < text.size() && text[j] == '}') {
      *pos = j + 1;
      return true;
    }
    return *err = "expected ',' or '}' after a label", false;
  }
}

// The family a sample name belongs to under its TYPE.
bool BelongsTo(const std::string& sample, const std::string& family, const std::string& type) {
  if (type != "histogram") return sample == family;
  return sample == family + "_bucket" || sample == family + "_sum" || sample == family + "_count";
}

std::string CheckHistogram(const std::string& name, const Family& f) {
  // Per label set without le: buckets ascending and cumulative, the last
  // +Inf equal to _count, and a _sum.
  struct Series {
    std::vector<std::pair<double, double>> buckets;  // le, value
    std::optional<double> sum, count;
  };
  std::map<LabelSet, Series> series;
  for (const auto& s : f.samples) {
    LabelSet key = s.labels;
    if (s.name == name + "_bucket") {
      auto le = key.find("le");
      if (le == key.end()) return name + ": a bucket without le";
      double bound = 0;
      if (!ParseNumber(le->second, &bound)) return name + ": le '" + le->second + "'";
      key.erase(le);
      series[key].buckets.push_back({bound, s.value});
    } else if (s.name == name + "_sum") {
      series[key].sum = s.value;
    } else {
      series[key].count = s.value;
    }
  }
  if (series.empty()) return "";
  for (const auto& [labels, s] : series) {
    if (s.buckets.empty()) return name + ": no buckets";
    if (!s.sum || !s.count) return name + ": _sum or _count missing";
    for (size_t i = 1; i < s.buckets.size(); ++i) {
      if (!(s.buckets[i].first > s.buckets[i - 1].first)) return name + ": le not ascending";
      if (s.buckets[i].second < s.buckets[i - 1].second) return name + ": buckets not cumulative";
    }
    if (!std::isinf(s.buckets.back().first)) return name + ": the last bucket is not +Inf";
    if (s.buckets.back().second != *s.count) return name + ": +Inf bucket != _count";
  }
  return "";
}

Scrape Parse(const std::string& text) {
  Scrape out;
  static const std::regex metric_name("[a-zA-Z_:][a-zA-Z0-9_:]*");
  static const std::set<std::string> types = {"counter", "gauge", "histogram"};
  std::string current;  // the family samples belong to
  std::set<std::pair<std::string, LabelSet>> seen;
  size_t line_no = 0;
  auto fail = [&](const std::string& why) {
    out.error = "line " + std::to_string(line_no) + ": " + why;
    return out;
  };
  if (text.empty() || text.back() != '\n') return fail("the text does not end with a newline");
  size_t at = 0;
  while (at < text.size()) {
    size_t nl = text.find('\n', at);
    std::string line = text.substr(at, nl - at);
    at = nl + 1;
    ++line_no;
    if (line.empty()) return fail("empty line");
    if (line.rfind("# HELP ", 0) == 0) {
      std::string rest = line.substr(7);
      size_t sp = rest.find(' ');
      std::string name = rest.substr(0, sp);
      if (!std::regex_match(name, metric_name)) return fail("bad family name '" + name + "'");
      if (out.families.count(name)) return fail("family " + name + " twice");
      if (sp == std::string::npos || sp + 1 >= rest.size()) return fail(name + ": empty HELP");
      out.families[name].help = rest.substr(sp + 1);
      current = name;
      continue;
    }
    if (line.rfind("# TYPE ", 0) == 0) {
      std::string rest = line.substr(7);
      size_t sp = rest.find(' ');
      std::string name = rest.substr(0, sp);
      if (name != current) return fail("TYPE " + name + " not right after its HELP");
      if (!out.families[name].type.empty()) return fail("TYPE twice for " + name);
      std::string type = sp == std::string::npos ? "" : rest.substr(sp + 1);
      if (!types.count(type)) return fail(name + ": type '" + type + "'");
      out.families[name].type = type;
      continue;
    }
    if (line[0] == '#') return fail("a comment that is neither HELP nor TYPE");
    // name{labels} value
    size_t i = 0;
    while (i < line.size() && line[i] != '{' && line[i] != ' ') ++i;
    Sample s;
    s.name = line.substr(0, i);
    if (!std::regex_match(s.name, metric_name)) return fail("bad sample name '" + s.name + "'");
    if (i < line.size() && line[i] == '{') {
      ++i;
      std::string err;
      if (!ParseLabels(line, &i, &s.labels, &err)) return fail(s.name + ": " + err);
    }
    if (i >= line.size() || line[i] != ' ') return fail(s.name + ": no space before the value");
    std::string value = line.substr(i + 1);
    if (value.find(' ') != std::string::npos) return fail(s.name + ": more than a value");
    if (!ParseNumber(value, &s.value)) return fail(s.name + ": value '" + value + "'");
    if (current.empty() || out.families[current].type.empty()) {
      return fail(s.name + ": a sample before its family's HELP and TYPE");
    }
    const Family& f = out.families[current];
    if (!BelongsTo(s.name, current, f.type)) return fail(s.name + " under family " + current);
    if (f.type == "counter" && current.size() < 6) return fail(current + ": counter name");
    if (f.type == "counter" && current.substr(current.size() - 6) != "_total") {
      return fail(current + ": a counter's name ends with _total");
    }
    if ((f.type == "counter" || s.name.find("_bucket") != std::string::npos) && s.value < 0) {
      return fail(s.name + ": negative count");
    }
    if (!seen.insert({s.name, s.labels}).second) return fail(s.name + ": the same series twice");
    out.families[current].samples.push_back(std::move(s));
  }
  for (const auto& [name, f] : out.families) {
    if (f.type.empty()) return fail(name + ": no TYPE");
    if (f.type == "histogram") {
      if (auto e = CheckHistogram(name, f); !e.empty()) return fail(e);
    }
  }
  return out;
}

// ---- the parser refuses what it should (the checks above are the test's
// own: a lax parser would prove nothing)

TEST(MetricsParserTest, RefusesMalformedText) {
  const std::string ok =
      "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 3\n"
      "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\n"
      "h_sum 1.5\nh_count 2\n";
  EXPECT_EQ(Parse(ok).error, "");
  EXPECT_NE(Parse("a 1\n").error, "");                                    // no HELP/TYPE
  EXPECT_NE(Parse("# HELP a A.\n# TYPE a gauge\na{x=1} 1\n").error, "");  // unquoted
  EXPECT_NE(Parse("# HELP a A.\n# TYPE a gauge\na 1 2\n").error, "");     // timestamp
  EXPECT_NE(Parse("# HELP a A.\n# TYPE a counter\na 1\n").error, "");     // not _total
  EXPECT_NE(Parse("# HELP a A.\n# TYPE a gauge\nb 1\n").error, "");       // other family
  EXPECT_NE(Parse("# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\n"
                  "h_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n")
                .error,
            "");  // not cumulative
  EXPECT_NE(Parse("# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\n"
                  "h_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n")
                .error,
            "");  // +Inf != count
  EXPECT_NE(
      Parse("# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n").error,
      "");  // no +Inf
}

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
    std::string url = "https://127.0.0.1:" + std::to_string(server_.http_port());
    std::unique_ptr<httplib::Client> cli;
    if (!id) {
      cli = std::make_unique<httplib::Client>(url);
    } else {
      trust::IssueOptions io;
      io.id = *id;
      io.role = role;
      auto kc = ca_->IssueWithNewKey(io);
      EXPECT_TRUE(kc.ok());
      std::string d = dir_.path() + "/creds/" + id->name;
      EXPECT_TRUE(trust::WriteSvid(d, {kc->key_pem, kc->cert.cert_pem, ca_->bundle_pem()}).ok());
      cli = std::make_unique<httplib::Client>(url, d + "/" + trust::kSvidFile,
                                              d + "/" + trust::kSvidKeyFile);
    }
    cli->set_ca_cert_path((dir_.path() + "/pki/controller/" + trust::kSvidBundleFile).c_str());
    cli->enable_server_certificate_verification(true);
    cli->set_connection_timeout(3, 0);
    cli->set_read_timeout(5, 0);
    return cli;
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
