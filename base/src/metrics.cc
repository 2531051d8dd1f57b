#include "dfw/base/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace dfw::metrics {

std::vector<double> LatencyBuckets() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
}

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)),
      counts_(std::make_unique<std::atomic<uint64_t>[]>(bounds_.size() + 1)) {
  for (size_t i = 0; i <= bounds_.size(); ++i) counts_[i].store(0, std::memory_order_relaxed);
}

void Histogram::Observe(double seconds) {
  if (!(seconds >= 0)) seconds = 0;  // NaN and negatives (a clock step) count as 0
  size_t i = std::lower_bound(bounds_.begin(), bounds_.end(), seconds) - bounds_.begin();
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  sum_ns_.fetch_add(static_cast<uint64_t>(std::llround(seconds * 1e9)), std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::Read() const {
  Snapshot s;
  s.bounds = bounds_;
  s.cumulative.resize(bounds_.size() + 1);
  uint64_t acc = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    acc += counts_[i].load(std::memory_order_relaxed);
    s.cumulative[i] = acc;
  }
  s.count = acc;
  s.sum = static_cast<double>(sum_ns_.load(std::memory_order_relaxed)) / 1e9;
  return s;
}

std::string EscapeLabelValue(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string FormatNumber(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  // Integers (counts, revisions) exactly, without an exponent.
  if (v == std::floor(v) && std::fabs(v) < 9.007199254740992e15) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.0f", v);
    return buf;
  }
  // The shortest of %.15g and %.17g that reads back as v.
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.15g", v);
  if (std::strtod(buf, nullptr) != v) std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

void Exposition::Family(std::string_view name, std::string_view type, std::string_view help) {
  out_ += "# HELP ";
  out_ += name;
  out_ += ' ';
  for (char c : help) {
    if (c == '\\') {
      out_ += "\\\\";
    } else if (c == '\n') {
      out_ += "\\n";
    } else {
      out_ += c;
    }
  }
  out_ += "\n# TYPE ";
  out_ += name;
  out_ += ' ';
  out_ += type;
  out_ += '\n';
}

void Exposition::Line(std::string_view name, const Labels& labels, std::string_view extra_name,
                      std::string_view extra_value, std::string_view value) {
  out_ += name;
  if (!labels.empty() || !extra_name.empty()) {
    out_ += '{';
    bool first = true;
    auto label = [&](std::string_view k, std::string_view v) {
      if (!first) out_ += ',';
      first = false;
      out_ += k;
      out_ += "=\"";
      out_ += EscapeLabelValue(v);
      out_ += '"';
    };
    for (const auto& [k, v] : labels) label(k, v);
    if (!extra_name.empty()) label(extra_name, extra_value);
    out_ += '}';
  }
  out_ += ' ';
  out_ += value;
  out_ += '\n';
}

void Exposition::Sample(std::string_view name, const Labels& labels, double value) {
  Line(name, labels, "", "", FormatNumber(value));
}

void Exposition::Histogram(std::string_view name, const Labels& labels,
                           const Histogram::Snapshot& s) {
  std::string bucket = std::string(name) + "_bucket";
  for (size_t i = 0; i < s.bounds.size(); ++i) {
    Line(bucket, labels, "le", FormatNumber(s.bounds[i]),
         FormatNumber(static_cast<double>(s.cumulative[i])));
  }
  Line(bucket, labels, "le", "+Inf", FormatNumber(static_cast<double>(s.count)));
  Line(std::string(name) + "_sum", labels, "", "", FormatNumber(s.sum));
  Line(std::string(name) + "_count", labels, "", "", FormatNumber(static_cast<double>(s.count)));
}

void RuleHits::Add(const std::string& policy, const std::string& rule, uint64_t packets,
                   uint64_t bytes) {
  Totals& t = by_rule_[{policy, rule}];
  t.hits += packets;
  t.hit_bytes += bytes;
}

void RuleHits::AddSessions(const std::string& policy, const std::string& rule, uint64_t packets,
                           uint64_t bytes) {
  Totals& t = by_rule_[{policy, rule}];
  t.session_packets += packets;
  t.session_bytes += bytes;
}

void RuleHits::WriteFamily(Exposition& e, const std::string& name, std::string_view help,
                           uint64_t Totals::*value) const {
  e.Family(name, "counter", help);
  for (const auto& [k, v] : by_rule_)
    e.Sample(name, {{"policy", k.first}, {"rule", k.second}}, static_cast<double>(v.*value));
}

void RuleHits::Write(Exposition& e, std::string_view prefix, std::string_view hits_help,
                     bool sessions) const {
  const std::string p(prefix);
  const std::string hits = p + "rule_hits_total";
  WriteFamily(e, hits, hits_help, &Totals::hits);
  WriteFamily(e, p + "rule_hit_bytes_total", "Bytes of the packets counted in " + hits + ".",
              &Totals::hit_bytes);
  if (!sessions) return;
  WriteFamily(e, p + "rule_session_packets_total",
              "Packets (both directions) of connections the rule admitted, counted when they "
              "end, by policy and rule id.",
              &Totals::session_packets);
  WriteFamily(e, p + "rule_session_bytes_total",
              "Bytes (both directions) of connections the rule admitted, counted when they end, "
              "by policy and rule id.",
              &Totals::session_bytes);
}

}  // namespace dfw::metrics
