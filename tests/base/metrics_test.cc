// dfw::metrics (base/include/dfw/base/metrics.h): the histogram against a
// simple reference on random inputs (and under concurrent Observe calls),
// and the exposition writer read back by the strict parser
// (exposition_parser.h), whose own refusals are checked first.
#include "dfw/base/metrics.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "exposition_parser.h"

namespace dfw::metrics {
namespace {

using testing::LabelSet;
using testing::Parse;
using testing::Scrape;

// ---- the parser refuses what it should (a lax parser would prove nothing)

TEST(ExpositionParserTest, RefusesMalformedText) {
  const std::string ok =
      "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 3\n"
      "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\n"
      "h_sum 1.5\nh_count 2\n";
  EXPECT_EQ(Parse(ok).error, "");
  EXPECT_NE(Parse("a 1\n").error, "");                                          // no HELP/TYPE
  EXPECT_NE(Parse("# HELP a A.\n# TYPE a gauge\na{x=1} 1\n").error, "");        // unquoted
  EXPECT_NE(Parse("# HELP a A.\n# TYPE a gauge\na 1 2\n").error, "");           // timestamp
  EXPECT_NE(Parse("# HELP a A.\n# TYPE a counter\na 1\n").error, "");           // not _total
  EXPECT_NE(Parse("# HELP a A.\n# TYPE a gauge\nb 1\n").error, "");             // other family
  EXPECT_NE(Parse("# HELP a A.\n# TYPE a gauge\na 1\na 2\n").error, "");        // series twice
  EXPECT_NE(Parse("# HELP a A.\n# TYPE a gauge\na{x=\"\\t\"} 1\n").error, "");  // bad escape
  EXPECT_NE(Parse("# HELP a A.\n# TYPE a gauge\na 1").error, "");               // no final newline
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
  EXPECT_NE(Parse("# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"2\"} 1\n"
                  "h_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n")
                .error,
            "");  // le not ascending
}

// ---- the histogram against a reference

// What the histogram must hold after observing `xs`: per bound, how many
// observations are <= it (NaN and negatives count as 0), and the sum.
struct Reference {
  std::vector<uint64_t> cumulative;
  double sum = 0;
};
Reference Expected(const std::vector<double>& bounds, const std::vector<double>& xs) {
  Reference r;
  r.cumulative.assign(bounds.size() + 1, 0);
  for (double x : xs) {
    double v = x >= 0 ? x : 0;
    r.sum += v;
    for (size_t i = 0; i < bounds.size(); ++i) {
      if (v <= bounds[i]) r.cumulative[i]++;
    }
    r.cumulative[bounds.size()]++;
  }
  return r;
}

TEST(HistogramTest, MatchesAReferenceOnRandomInputs) {
  std::mt19937_64 rng(16);
  for (int round = 0; round < 200; ++round) {
    // Random ascending bounds, some integral, some tiny.
    std::set<double> b;
    const int nb = 1 + static_cast<int>(rng() % 16);
    while (static_cast<int>(b.size()) < nb) {
      double v = std::ldexp(static_cast<double>(rng() % 10000), -static_cast<int>(rng() % 14));
      b.insert(v);
    }
    std::vector<double> bounds(b.begin(), b.end());
    Histogram h(bounds);
    std::vector<double> xs;
    const int n = static_cast<int>(rng() % 500);
    for (int i = 0; i < n; ++i) {
      double x;
      switch (rng() % 6) {
        case 0:  // exactly a bound: belongs to that bucket (le is <=)
          x = bounds[rng() % bounds.size()];
          break;
        case 1:  // above every bound
          x = bounds.back() * 2 + 1;
          break;
        case 2:  // a clock step backwards, or garbage
          x = (rng() % 2) ? -0.5 : std::numeric_limits<double>::quiet_NaN();
          break;
        default:
          x = std::uniform_real_distribution<double>(0, bounds.back() * 1.2)(rng);
      }
      xs.push_back(x);
      h.Observe(x);
    }
    Reference want = Expected(bounds, xs);
    Histogram::Snapshot got = h.Read();
    ASSERT_EQ(got.bounds, bounds);
    ASSERT_EQ(got.cumulative, want.cumulative) << "round " << round;
    EXPECT_EQ(got.count, static_cast<uint64_t>(n));
    EXPECT_EQ(got.count, got.cumulative.back());
    // The sum is kept in nanoseconds: each observation rounds by <= 0.5 ns.
    EXPECT_NEAR(got.sum, want.sum, 1e-9 * (n + 1) + 1e-12 * want.sum) << "round " << round;
  }
}

TEST(HistogramTest, ConcurrentObservesAreAllCounted) {
  Histogram h(LatencyBuckets());
  constexpr int kThreads = 4, kEach = 20000;
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t) {
    ts.emplace_back([&h, t] {
      for (int i = 0; i < kEach; ++i) h.Observe(0.001 * ((i + t) % 7));
    });
  }
  // A Read concurrent with the Observes is always consistent.
  for (int i = 0; i < 100; ++i) {
    Histogram::Snapshot s = h.Read();
    EXPECT_EQ(s.count, s.cumulative.back());
    EXPECT_TRUE(std::is_sorted(s.cumulative.begin(), s.cumulative.end()));
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(h.Read().count, static_cast<uint64_t>(kThreads * kEach));
}

// ---- the writer, read back by the strict parser

TEST(ExpositionTest, LabelValuesRoundTripThroughEscaping) {
  EXPECT_EQ(EscapeLabelValue("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
  std::mt19937 rng(7);
  const std::string alphabet = "ab \\\"\n{}=,#\t\xc3\xa9";
  for (int round = 0; round < 300; ++round) {
    std::string v;
    const int len = static_cast<int>(rng() % 12);
    for (int i = 0; i < len; ++i) v += alphabet[rng() % alphabet.size()];
    Exposition e;
    e.Family("x", "gauge", "Help with \\ and\nnewline.");
    e.Sample("x", {{"v", v}, {"w", "fixed"}}, 1);
    Scrape s = Parse(e.text());
    ASSERT_EQ(s.error, "") << e.text();
    LabelSet want = {{"v", v}, {"w", "fixed"}};
    EXPECT_TRUE(s.Value("x", want).has_value()) << e.text();
    EXPECT_EQ(s.families.at("x").help, "Help with \\\\ and\\nnewline.");
  }
}

TEST(ExpositionTest, NumbersReadBackExactly) {
  EXPECT_EQ(FormatNumber(0), "0");
  EXPECT_EQ(FormatNumber(42), "42");
  EXPECT_EQ(FormatNumber(1e15), "1000000000000000");  // integers without an exponent
  EXPECT_EQ(FormatNumber(-3), "-3");
  EXPECT_EQ(FormatNumber(INFINITY), "+Inf");
  EXPECT_EQ(FormatNumber(-INFINITY), "-Inf");
  EXPECT_EQ(FormatNumber(NAN), "NaN");
  EXPECT_EQ(FormatNumber(0.25), "0.25");
  std::mt19937_64 rng(3);
  for (int i = 0; i < 10000; ++i) {
    double v = std::ldexp(std::uniform_real_distribution<double>(-1, 1)(rng),
                          static_cast<int>(rng() % 120) - 60);
    std::string t = FormatNumber(v);
    EXPECT_EQ(std::strtod(t.c_str(), nullptr), v) << t;
  }
}

TEST(ExpositionTest, FamiliesKeepTheirTypesAndHistogramsAreWellFormed) {
  Histogram h({0.001, 0.01, 0.1});
  for (double x : {0.0005, 0.001, 0.05, 0.05, 3.0}) h.Observe(x);
  Exposition e;
  e.Family("dfw_test_calls_total", "counter", "Calls.");
  e.Sample("dfw_test_calls_total", {{"method", "Get"}, {"result", "ok"}}, 3);
  e.Sample("dfw_test_calls_total", {{"method", "Get"}, {"result", "error"}}, 1);
  e.Family("dfw_test_up", "gauge", "Up.");
  e.Sample("dfw_test_up", {}, 1);
  e.Family("dfw_test_call_duration_seconds", "histogram", "Latency.");
  e.Histogram("dfw_test_call_duration_seconds", {{"method", "Get"}}, h.Read());
  e.Histogram("dfw_test_call_duration_seconds", {{"method", "Set"}}, Histogram({1}).Read());
  Scrape s = Parse(e.text());
  ASSERT_EQ(s.error, "") << e.text();
  ASSERT_EQ(s.families.size(), 3u);
  EXPECT_EQ(s.families.at("dfw_test_calls_total").type, "counter");
  EXPECT_EQ(s.families.at("dfw_test_up").type, "gauge");
  EXPECT_EQ(s.families.at("dfw_test_call_duration_seconds").type, "histogram");
  EXPECT_EQ(s.Or0("dfw_test_calls_total", {{"method", "Get"}, {"result", "error"}}), 1);
  // Buckets: cumulative, le written as numbers, +Inf equal to _count.
  const std::string b = "dfw_test_call_duration_seconds_bucket";
  EXPECT_EQ(s.Or0(b, {{"method", "Get"}, {"le", "0.001"}}), 2);
  EXPECT_EQ(s.Or0(b, {{"method", "Get"}, {"le", "0.01"}}), 2);
  EXPECT_EQ(s.Or0(b, {{"method", "Get"}, {"le", "0.1"}}), 4);
  EXPECT_EQ(s.Or0(b, {{"method", "Get"}, {"le", "+Inf"}}), 5);
  EXPECT_EQ(s.Or0("dfw_test_call_duration_seconds_count", {{"method", "Get"}}), 5);
  EXPECT_NEAR(s.Or0("dfw_test_call_duration_seconds_sum", {{"method", "Get"}}), 3.1015, 1e-9);
  EXPECT_EQ(s.Or0("dfw_test_call_duration_seconds_count", {{"method", "Set"}}), 0);
  // The families come out in the order written, HELP then TYPE first.
  EXPECT_EQ(e.text().rfind("# HELP dfw_test_calls_total Calls.\n# TYPE dfw_test_calls_total "
                           "counter\n",
                           0),
            0u);
  EXPECT_LT(e.text().find("dfw_test_up"), e.text().find("dfw_test_call_duration_seconds"));
}

TEST(RuleHitsTest, RuleNumbersOfOnePolicyRuleAddUp) {
  RuleHits hits;
  hits.Add("web-to-db", "allow-pg", 5, 300);  // on one vNIC
  hits.Add("ssh", "deny", 1, 60);
  hits.Add("web-to-db", "allow-pg", 2, 120);  // the same rule on another
  Exposition e;
  hits.Write(e, "dfw_test_", "Hits.");
  Scrape s = Parse(e.text());
  ASSERT_EQ(s.error, "") << e.text();
  const LabelSet pg = {{"policy", "web-to-db"}, {"rule", "allow-pg"}};
  EXPECT_EQ(s.Or0("dfw_test_rule_hits_total", pg), 7);
  EXPECT_EQ(s.Or0("dfw_test_rule_hit_bytes_total", pg), 420);
  EXPECT_EQ(s.Or0("dfw_test_rule_hits_total", {{"policy", "ssh"}, {"rule", "deny"}}), 1);
  EXPECT_EQ(s.families.at("dfw_test_rule_hits_total").samples.size(), 2u);
  EXPECT_EQ(s.families.at("dfw_test_rule_hit_bytes_total").type, "counter");
  // Nothing hit: both families, no sample.
  Exposition none;
  RuleHits().Write(none, "dfw_test_", "Hits.");
  Scrape n = Parse(none.text());
  ASSERT_EQ(n.error, "") << none.text();
  EXPECT_EQ(n.families.size(), 2u);
  EXPECT_TRUE(n.families.at("dfw_test_rule_hits_total").samples.empty());
}

TEST(RuleHitsTest, SessionTotalsAddUpAndAreWrittenOnlyWhenAsked) {
  RuleHits hits;
  hits.Add("web-to-db", "allow-pg", 1, 60);
  hits.AddSessions("web-to-db", "allow-pg", 10, 1500);  // on one vNIC
  hits.AddSessions("web-to-db", "allow-pg", 4, 500);    // the same rule on another
  hits.AddSessions("dns", "allow-53", 2, 150);          // ended, not hit since (a restart)
  Exposition e;
  hits.Write(e, "dfw_test_", "Hits.", true);
  Scrape s = Parse(e.text());
  ASSERT_EQ(s.error, "") << e.text();
  const LabelSet pg = {{"policy", "web-to-db"}, {"rule", "allow-pg"}};
  const LabelSet dns = {{"policy", "dns"}, {"rule", "allow-53"}};
  EXPECT_EQ(s.Or0("dfw_test_rule_hits_total", pg), 1);
  EXPECT_EQ(s.Or0("dfw_test_rule_session_packets_total", pg), 14);
  EXPECT_EQ(s.Or0("dfw_test_rule_session_bytes_total", pg), 2000);
  EXPECT_EQ(s.Or0("dfw_test_rule_session_packets_total", dns), 2);
  EXPECT_EQ(s.Or0("dfw_test_rule_session_bytes_total", dns), 150);
  EXPECT_EQ(s.families.at("dfw_test_rule_session_packets_total").type, "counter");
  EXPECT_EQ(s.families.at("dfw_test_rule_session_bytes_total").type, "counter");
  EXPECT_NE(s.families.at("dfw_test_rule_session_packets_total")
                .help.find("of connections the rule admitted, counted when they end"),
            std::string::npos)
      << e.text();
  // A rule with session totals only shows 0 hits.
  ASSERT_EQ(s.families.at("dfw_test_rule_hits_total").samples.size(), 2u);
  EXPECT_EQ(s.Or0("dfw_test_rule_hits_total", dns), 0);
  // Without sessions (the guest agent): the hit families only.
  Exposition plain;
  hits.Write(plain, "dfw_test_", "Hits.");
  Scrape p = Parse(plain.text());
  ASSERT_EQ(p.error, "") << plain.text();
  EXPECT_EQ(p.families.size(), 2u);
  EXPECT_EQ(p.families.count("dfw_test_rule_session_packets_total"), 0u);
}

}  // namespace
}  // namespace dfw::metrics
