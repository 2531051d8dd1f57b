// ClassBench filters and dpdk-test-acl traces (see classbench.h).
#include "dfw/dataplane/classbench.h"

#include <cctype>
#include <charconv>
#include <fstream>
#include <map>
#include <random>
#include <sstream>

namespace dfw::dataplane::classbench {
namespace {

class LineParser {
 public:
  explicit LineParser(std::string_view s) : s_(s) {}
  void SkipSpace() {
    while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
  }
  bool AtEnd() {
    SkipSpace();
    return i_ >= s_.size();
  }
  bool Char(char c) {
    SkipSpace();
    if (i_ < s_.size() && s_[i_] == c) {
      ++i_;
      return true;
    }
    return false;
  }
  template <class T>
  bool Number(T* out, int base = 10, uint64_t max = ~0ull) {
    SkipSpace();
    if (base == 16 && s_.substr(i_, 2) == "0x") i_ += 2;
    uint64_t v = 0;
    auto [p, ec] = std::from_chars(s_.data() + i_, s_.data() + s_.size(), v, base);
    if (ec != std::errc() || v > max) return false;
    i_ = static_cast<size_t>(p - s_.data());
    *out = static_cast<T>(v);
    return true;
  }
  bool Ipv4(uint32_t* out) {
    uint32_t a = 0;
    for (int k = 0; k < 4; ++k) {
      uint32_t b;
      if (k > 0 && !(i_ < s_.size() && s_[i_++] == '.')) return false;
      if (k == 0) SkipSpace();
      auto [p, ec] = std::from_chars(s_.data() + i_, s_.data() + s_.size(), b);
      if (ec != std::errc() || b > 255) return false;
      i_ = static_cast<size_t>(p - s_.data());
      a = (a << 8) | b;
    }
    *out = a;
    return true;
  }

 private:
  std::string_view s_;
  size_t i_ = 0;
};

std::string Where(const std::string& name, size_t line, const std::string& what) {
  return name + ":" + std::to_string(line) + ": " + what;
}

template <class Fn>
bool ForEachLine(const std::string& text, Fn fn) {
  size_t start = 0, line = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    ++line;
    std::string_view l(text.data() + start, end - start);
    if (!l.empty() && l.back() == '\r') l.remove_suffix(1);
    if (!fn(line, l)) return false;
    start = end + 1;
  }
  return true;
}

bool BlankLine(std::string_view l) {
  for (char c : l) {
    if (!std::isspace(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

}  // namespace

bool ParseFilters(const std::string& text, const std::string& name, std::vector<Filter>* out,
                  std::string* error) {
  return ForEachLine(text, [&](size_t line, std::string_view l) {
    if (BlankLine(l)) return true;
    LineParser p(l);
    Filter f;
    auto fail = [&](const std::string& what) {
      *error = Where(name, line, what);
      return false;
    };
    if (!p.Char('@')) return fail("expected '@' at the start of a filter");
    if (!p.Ipv4(&f.src) || !p.Char('/') || !p.Number(&f.src_len, 10, 32)) {
      return fail("bad source prefix");
    }
    if (!p.Ipv4(&f.dst) || !p.Char('/') || !p.Number(&f.dst_len, 10, 32)) {
      return fail("bad destination prefix");
    }
    if (!p.Number(&f.sport_lo, 10, 65535) || !p.Char(':') || !p.Number(&f.sport_hi, 10, 65535) ||
        f.sport_lo > f.sport_hi) {
      return fail("bad source port range");
    }
    if (!p.Number(&f.dport_lo, 10, 65535) || !p.Char(':') || !p.Number(&f.dport_hi, 10, 65535) ||
        f.dport_lo > f.dport_hi) {
      return fail("bad destination port range");
    }
    uint32_t proto = 0, mask = 0;
    if (!p.Number(&proto, 16, 255) || !p.Char('/') || !p.Number(&mask, 16, 255)) {
      return fail("bad protocol/mask");
    }
    if (mask == 0xff) {
      f.proto_any = false;
      f.proto = static_cast<uint8_t>(proto);
    } else if (mask == 0) {
      f.proto_any = true;
    } else {
      return fail("protocol mask must be 0x00 or 0xFF");
    }
    // Optional flags column, ignored (as dpdk-test-acl does).
    if (!p.AtEnd()) {
      uint32_t fl = 0, fm = 0;
      if (!p.Number(&fl, 16, 0xffff) || !p.Char('/') || !p.Number(&fm, 16, 0xffff) || !p.AtEnd()) {
        return fail("unexpected text after the protocol");
      }
    }
    const uint32_t sm = f.src_len ? ~0u << (32 - f.src_len) : 0;
    const uint32_t dm = f.dst_len ? ~0u << (32 - f.dst_len) : 0;
    f.src &= sm;
    f.dst &= dm;
    out->push_back(f);
    return true;
  });
}

bool ParseTrace(const std::string& text, const std::string& name, std::vector<FlowKey>* out,
                std::string* error) {
  return ForEachLine(text, [&](size_t line, std::string_view l) {
    if (BlankLine(l)) return true;
    LineParser p(l);
    uint32_t src, dst, proto;
    uint16_t sp, dp;
    if (!p.Number(&src, 10, 0xffffffffull) || !p.Number(&dst, 10, 0xffffffffull) ||
        !p.Number(&sp, 10, 65535) || !p.Number(&dp, 10, 65535) || !p.Number(&proto, 10, 255)) {
      *error = Where(name, line,
                     "expected '<src ip> <dst ip> <sport> <dport> <proto>' as unsigned integers "
                     "within range");
      return false;
    }
    uint64_t ignored;
    if (!p.AtEnd() && (!p.Number(&ignored) || !p.AtEnd())) {
      *error = Where(name, line, "unexpected text after the protocol");
      return false;
    }
    out->push_back(FlowKey::V4(src, dst, sp, dp, static_cast<uint8_t>(proto)));
    return true;
  });
}

bool ReadFile(const std::string& path, std::string* out, std::string* error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    *error = path + ": cannot open";
    return false;
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  *out = ss.str();
  return true;
}

std::vector<FlowKey> TraceInsideFilters(const std::vector<Filter>& filters, size_t n,
                                        uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<FlowKey> out;
  if (filters.empty()) return out;
  out.reserve(n);
  auto in_prefix = [&](uint32_t a, uint8_t len) {
    const uint32_t host = len == 0 ? ~0u : (len == 32 ? 0u : (~0u >> len));
    return a | (static_cast<uint32_t>(rng()) & host);
  };
  auto in_range = [&](uint16_t lo, uint16_t hi) {
    return static_cast<uint16_t>(lo + rng() % (uint32_t{hi} - lo + 1));
  };
  for (size_t i = 0; i < n; ++i) {
    const Filter& f = filters[rng() % filters.size()];
    const uint8_t proto = f.proto_any ? static_cast<uint8_t>(rng()) : f.proto;
    out.push_back(FlowKey::V4(in_prefix(f.src, f.src_len), in_prefix(f.dst, f.dst_len),
                              in_range(f.sport_lo, f.sport_hi), in_range(f.dport_lo, f.dport_hi),
                              proto));
  }
  return out;
}

std::vector<FlowKey> RandomTrace(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<FlowKey> out;
  out.reserve(n);
  static constexpr uint8_t kProtos[] = {6, 17, 1, 0};
  for (size_t i = 0; i < n; ++i) {
    const uint64_t r = rng();
    const uint8_t proto = (r & 3) == 3 ? static_cast<uint8_t>(r >> 8) : kProtos[r & 3];
    out.push_back(FlowKey::V4(static_cast<uint32_t>(rng()), static_cast<uint32_t>(rng()),
                              static_cast<uint16_t>(r >> 16), static_cast<uint16_t>(r >> 32),
                              proto));
  }
  return out;
}

std::string FormatTrace(const std::vector<FlowKey>& keys) {
  std::string out;
  out.reserve(keys.size() * 32);
  for (const FlowKey& k : keys) {
    out += std::to_string(static_cast<uint32_t>(k.src.lo));
    out += ' ';
    out += std::to_string(static_cast<uint32_t>(k.dst.lo));
    out += ' ';
    out += std::to_string(k.sport);
    out += ' ';
    out += std::to_string(k.dport);
    out += ' ';
    out += std::to_string(k.proto);
    out += '\n';
  }
  return out;
}

RulesetSpec ToRulesetSpec(const std::vector<Filter>& filters) {
  RulesetSpec spec;
  spec.default_action = Action::kDrop;
  std::map<std::pair<uint32_t, uint8_t>, std::string> sets;
  auto set_for = [&](uint32_t a, uint8_t len) -> std::string {
    auto [it, fresh] = sets.emplace(std::make_pair(a, len), std::string());
    if (fresh) {
      const IpPrefix p = IpPrefix::V4(a, len);
      it->second = p.ToString();
      spec.address_sets.push_back(AddressSetSpec{it->second, {p}});
    }
    return it->second;
  };
  for (size_t i = 0; i < filters.size(); ++i) {
    const Filter& f = filters[i];
    RuleSpec r;
    r.rule_num = static_cast<uint32_t>(i + 1);
    r.src.any = false;
    r.src.address_sets = {set_for(f.src, f.src_len)};
    r.dst.any = false;
    r.dst.address_sets = {set_for(f.dst, f.dst_len)};
    ServiceSpec s;
    if (!f.proto_any) s.proto = f.proto;
    const bool full_s = f.sport_lo == 0 && f.sport_hi == 65535;
    const bool full_d = f.dport_lo == 0 && f.dport_hi == 65535;
    if (!full_s) s.sports.push_back(PortRange{f.sport_lo, f.sport_hi});
    if (!full_d) s.dports.push_back(PortRange{f.dport_lo, f.dport_hi});
    r.services.push_back(s);
    r.direction = RuleDirection::kBoth;
    r.action = Action::kAllow;
    spec.rules.push_back(std::move(r));
  }
  return spec;
}

}  // namespace dfw::dataplane::classbench
