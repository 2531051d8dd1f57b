// A strict parser of the Prometheus text exposition format 0.0.4, for the
// tests of every GET /metrics (controller, host agent) and of the writer
// (base/include/dfw/base/metrics.h). Strict on purpose: a lax parser would
// prove nothing. It refuses, with the line and the reason in
// Scrape::error:
//   - a line that is not "# HELP name text", "# TYPE name type" or a sample
//     "name{label="value",...} number" (no timestamps, no other comments,
//     no empty lines, the text ends with a newline);
//   - a sample before its family's HELP and TYPE, or of another family;
//     a family twice; TYPE not right after its HELP; an unknown type;
//   - a counter family whose name does not end in _total, a negative count;
//   - unquoted or badly escaped label values, a label twice, the same
//     series twice;
//   - a histogram whose buckets are not ascending and cumulative, do not end
//     at le="+Inf", or whose +Inf bucket differs from _count; a missing
//     _sum or _count.
//
// Thread safety: pure functions.
#pragma once

#include <cmath>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace dfw::metrics::testing {

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

inline bool ParseNumber(const std::string& t, double* v) {
  if (t == "+Inf") return *v = INFINITY, true;
  if (t == "-Inf") return *v = -INFINITY, true;
  if (t == "NaN") return *v = NAN, true;
  static const std::regex num(R"(-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?)");
  if (!std::regex_match(t, num)) return false;
  *v = std::stod(t);
  return true;
}

// Labels from `text` at `pos` (just after '{') up to and past the '}'.
inline bool ParseLabels(const std::string& text, size_t* pos, LabelSet* out, std::string* err) {
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
inline bool BelongsTo(const std::string& sample, const std::string& family,
                      const std::string& type) {
  if (type != "histogram") return sample == family;
  return sample == family + "_bucket" || sample == family + "_sum" || sample == family + "_count";
}

inline std::string CheckHistogram(const std::string& name, const Family& f) {
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

inline Scrape Parse(const std::string& text) {
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

}  // namespace dfw::metrics::testing
