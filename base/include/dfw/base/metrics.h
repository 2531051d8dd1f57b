// dfw::metrics: what the product's GET /metrics listeners (the controller's
// REST API, the host agent's --metrics-listen) share: a lock-free histogram
// that the control paths update where the work happens, and a writer of the
// Prometheus text exposition format 0.0.4 (written by hand: no client
// library). Naming conventions (docs/architecture.md, "Metrics"): every
// family has HELP and TYPE, names carry their unit (_seconds, _bytes),
// counters end in _total, labels take bounded values only.
//
// The format, as the writer emits it: for each family a "# HELP name text"
// and a "# TYPE name counter|gauge|histogram" line, then its samples
// "name{label="value",...} number". A histogram family `h` has the samples
// h_bucket{...,le="<bound>"} (cumulative, ascending, the last le="+Inf"),
// h_sum and h_count (equal to the +Inf bucket). Label values escape \, "
// and newline; HELP text escapes \ and newline.
//
// Thread safety: Histogram::Observe and Read are safe from any thread
// (relaxed atomics; a Read concurrent with Observes sees each bucket at
// some moment and derives _count from the buckets it read, so the
// rendered histogram is always consistent). Exposition is single-threaded.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace dfw::metrics {

// Bucket bounds in seconds, ascending, for requests, calls and commits:
// 0.5 ms .. 10 s.
std::vector<double> LatencyBuckets();

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void Observe(double seconds);

  struct Snapshot {
    std::vector<double> bounds;        // upper bounds, without +Inf
    std::vector<uint64_t> cumulative;  // bounds.size() + 1 entries, the last +Inf
    uint64_t count = 0;                // == cumulative.back()
    double sum = 0;                    // seconds
  };
  Snapshot Read() const;

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;  // per bucket, not cumulative
  std::atomic<uint64_t> sum_ns_{0};
};

using Labels = std::vector<std::pair<std::string_view, std::string>>;

class Exposition {
 public:
  // Starts a family (its HELP and TYPE lines). type: counter, gauge or
  // histogram. Every sample that follows belongs to it.
  void Family(std::string_view name, std::string_view type, std::string_view help);
  void Sample(std::string_view name, const Labels& labels, double value);
  // A histogram's _bucket, _sum and _count samples under `labels`.
  void Histogram(std::string_view name, const Labels& labels, const Histogram::Snapshot& s);
  const std::string& text() const { return out_; }

 private:
  void Line(std::string_view name, const Labels& labels, std::string_view extra_name,
            std::string_view extra_value, std::string_view value);
  std::string out_;
};

// Hits per policy rule, by policy and rule id: what the agents' /metrics
// show of their enforcement (the dataplane's rule counters, the guest's
// nftables counters). The rule numbers of one policy rule (the rule is on
// several vNICs) add up. Write emits `<prefix>rule_hits_total` (help:
// `hits_help`) and `<prefix>rule_hit_bytes_total`, labelled {policy, rule},
// sorted, a sample for each rule added; a family without samples when
// nothing was added. With `sessions` (a source that has session totals: the
// dataplane) also `<prefix>rule_session_packets_total` and
// `<prefix>rule_session_bytes_total`: the packets and bytes of the
// connections the rule admitted, counted when they end (AddSessions).
class RuleHits {
 public:
  void Add(const std::string& policy, const std::string& rule, uint64_t packets, uint64_t bytes);
  void AddSessions(const std::string& policy, const std::string& rule, uint64_t packets,
                   uint64_t bytes);
  void Write(Exposition& e, std::string_view prefix, std::string_view hits_help,
             bool sessions = false) const;

 private:
  struct Totals {
    uint64_t hits = 0, hit_bytes = 0;
    uint64_t session_packets = 0, session_bytes = 0;
  };
  // One counter family of every rule: `value` picks the field.
  void WriteFamily(Exposition& e, const std::string& name, std::string_view help,
                   uint64_t Totals::*value) const;
  std::map<std::pair<std::string, std::string>, Totals> by_rule_;
};

// The Content-Type of the text format.
inline constexpr char kContentType[] = "text/plain; version=0.0.4; charset=utf-8";

// Exposed for tests: how label values and numbers are written.
std::string EscapeLabelValue(std::string_view v);
std::string FormatNumber(double v);

}  // namespace dfw::metrics
