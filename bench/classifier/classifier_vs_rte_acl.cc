// Side by side: the dfw classifier vs DPDK rte_acl on the shared ClassBench
// sets (acl1, fw1, ipc1 10k by default).
//
// For each set: the same rules go into rte_acl (rte_acl_create/add_rules/build)
// and into RulesetCompiler; the same seeded trace (60k random points inside
// random rules, as dpdk-test-acl and DESIGN.md section 7 use) is classified by
// both; every answer must agree (exit 1 otherwise). Then each is timed in
// bursts of 32 on one lcore: lookups/s and TSC cycles per lookup. Build time:
// rte_acl add_rules + build vs our Compile (parsing excluded for both).
// Memory: rte_acl = growth of the DPDK heap across create+add+build (context,
// rules kept for rebuilds, run-time tries); ours = Ruleset::memory_bytes (the
// lookup tables) and, in a second column, plus the compiler's control-side
// state. rte_acl is timed with AVX2 and with the best method the CPU has.
//
// Finally, the address-set change cost: an IP joining an address set that 4k
// rules reference, applied with RulesetCompiler::ApplyAddressSetDelta.
//
// With --gen shape:count:seed,... or --shapes a,b|all --seeds 1,2,3 it runs
// generated sets of other shapes instead (classbench_gen.h; the trace is
// seeded with the set's seed), and ends with one summary table of them.
//
// Runs DPDK's EAL with --no-pci --no-huge (rte_acl allocates from the EAL heap).
#include <rte_acl.h>
#include <rte_byteorder.h>
#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_malloc.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "dfw/dataplane/classbench.h"
#include "dfw/dataplane/classbench_gen.h"
#include "dfw/dataplane/classifier.h"
#include "dfw/dataplane/linear_classifier.h"
#include "dfw/dataplane/ruleset_compiler.h"

namespace cb = dfw::dataplane::classbench;
using dfw::dataplane::FlowKey;
using dfw::dataplane::Ruleset;
using dfw::dataplane::RulesetCompiler;

namespace {

constexpr uint32_t kBurst = 32;

struct AclTuple {
  uint8_t proto;
  uint32_t src;  // network byte order, as in a packet
  uint32_t dst;
  uint16_t sport;
  uint16_t dport;
};

RTE_ACL_RULE_DEF(AclRule, 5);

rte_acl_config AclConfig() {
  rte_acl_config cfg{};
  cfg.num_categories = 1;
  cfg.num_fields = 5;
  cfg.defs[0] = {RTE_ACL_FIELD_TYPE_BITMASK, sizeof(uint8_t), 0, 0, offsetof(AclTuple, proto)};
  cfg.defs[1] = {RTE_ACL_FIELD_TYPE_MASK, sizeof(uint32_t), 1, 1, offsetof(AclTuple, src)};
  cfg.defs[2] = {RTE_ACL_FIELD_TYPE_MASK, sizeof(uint32_t), 2, 2, offsetof(AclTuple, dst)};
  cfg.defs[3] = {RTE_ACL_FIELD_TYPE_RANGE, sizeof(uint16_t), 3, 3, offsetof(AclTuple, sport)};
  cfg.defs[4] = {RTE_ACL_FIELD_TYPE_RANGE, sizeof(uint16_t), 4, 3, offsetof(AclTuple, dport)};
  cfg.max_size = 0;
  return cfg;
}

size_t HeapBytes() {
  rte_malloc_socket_stats st{};
  size_t total = 0;
  for (int s = 0; s < RTE_MAX_NUMA_NODES; ++s) {
    if (rte_malloc_get_socket_stats(s, &st) == 0) total += st.heap_allocsz_bytes;
  }
  return total;
}

double Ms(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

struct Timing {
  double lookups_per_s = 0;
  double cycles_per_lookup = 0;
};

template <class Fn>
Timing TimeBursts(uint32_t n, double min_secs, Fn classify_burst) {
  uint64_t cycles = 0, lookups = 0;
  const auto t0 = std::chrono::steady_clock::now();
  double secs = 0;
  while (secs < min_secs) {
    const uint64_t c0 = rte_rdtsc_precise();
    for (uint32_t i = 0; i < n; i += kBurst) classify_burst(i, std::min(kBurst, n - i));
    cycles += rte_rdtsc_precise() - c0;
    lookups += n;
    secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  return Timing{static_cast<double>(lookups) / secs,
                static_cast<double>(cycles) / static_cast<double>(lookups)};
}

const char* AlgName(enum rte_acl_classify_alg a) {
  switch (a) {
    case RTE_ACL_CLASSIFY_SCALAR:
      return "scalar";
    case RTE_ACL_CLASSIFY_SSE:
      return "sse";
    case RTE_ACL_CLASSIFY_AVX2:
      return "avx2";
    case RTE_ACL_CLASSIFY_AVX512X16:
      return "avx512x16";
    case RTE_ACL_CLASSIFY_AVX512X32:
      return "avx512x32";
    default:
      return "other";
  }
}

struct GenSet {
  cb::Shape shape;
  uint32_t count;  // 0 = the shape's default
  uint64_t seed;
};

struct Options {
  std::string dir = DFW_CLASSBENCH_DIR;
  std::vector<std::string> sets = {"acl1_10k", "fw1_10k", "ipc1_10k"};
  bool sets_given = false;
  std::vector<GenSet> gen;
  uint32_t trace = 60000;
  uint64_t seed = 1;
  double secs = 1.0;
  bool address_set = true;
  int lcore = 0;
  int eal_mb = 2048;
};

// One set's figures, for the summary table of generated sets.
struct SetResult {
  std::string name;
  size_t rules = 0;
  uint32_t distinct = 0;  // distinct first matches in the trace (incl. none)
  Timing dfw, avx2, best;
  const char* best_alg = "";
  double dfw_build_ms = 0, acl_build_ms = 0;
  size_t dfw_bytes = 0, acl_bytes = 0;
};

int RunFilters(const Options& opt, const std::string& name, const std::vector<cb::Filter>& filters,
               uint64_t seed, SetResult* res) {
  const auto spec = cb::ToRulesetSpec(filters);
  const auto keys = cb::TraceInsideFilters(filters, opt.trace, seed);
  const uint32_t n = static_cast<uint32_t>(keys.size());

  // rte_acl.
  std::vector<AclRule> rules(filters.size());
  for (size_t i = 0; i < filters.size(); ++i) {
    const cb::Filter& f = filters[i];
    AclRule& r = rules[i];
    std::memset(&r, 0, sizeof(r));
    r.data.category_mask = 1;
    r.data.priority = static_cast<int32_t>(filters.size() - i);  // first line wins
    r.data.userdata = static_cast<uint32_t>(i + 1);
    r.field[0].value.u8 = f.proto_any ? 0 : f.proto;
    r.field[0].mask_range.u8 = f.proto_any ? 0 : 0xff;
    r.field[1].value.u32 = f.src;
    r.field[1].mask_range.u32 = f.src_len;
    r.field[2].value.u32 = f.dst;
    r.field[2].mask_range.u32 = f.dst_len;
    r.field[3].value.u16 = f.sport_lo;
    r.field[3].mask_range.u16 = f.sport_hi;
    r.field[4].value.u16 = f.dport_lo;
    r.field[4].mask_range.u16 = f.dport_hi;
  }
  const size_t heap0 = HeapBytes();
  const auto a0 = std::chrono::steady_clock::now();
  rte_acl_param prm{};
  prm.name = "bench";
  prm.socket_id = SOCKET_ID_ANY;
  prm.rule_size = RTE_ACL_RULE_SZ(5);
  prm.max_rule_num = static_cast<uint32_t>(rules.size());
  rte_acl_ctx* ctx = rte_acl_create(&prm);
  if (ctx == nullptr) {
    std::fprintf(stderr, "bench: rte_acl_create failed\n");
    return 1;
  }
  int rc = rte_acl_add_rules(ctx, reinterpret_cast<const rte_acl_rule*>(rules.data()),
                             static_cast<uint32_t>(rules.size()));
  const rte_acl_config cfg = AclConfig();
  if (rc == 0) rc = rte_acl_build(ctx, &cfg);
  const double acl_build_ms = Ms(std::chrono::steady_clock::now() - a0);
  if (rc != 0) {
    std::fprintf(stderr, "bench: rte_acl build failed: %d (try more EAL memory)\n", rc);
    return 1;
  }
  const size_t acl_bytes = HeapBytes() - heap0;

  std::vector<AclTuple> tuples(n);
  std::vector<const uint8_t*> ptrs(n);
  for (uint32_t i = 0; i < n; ++i) {
    const FlowKey& k = keys[i];
    tuples[i] = AclTuple{k.proto, rte_cpu_to_be_32(static_cast<uint32_t>(k.src.lo)),
                         rte_cpu_to_be_32(static_cast<uint32_t>(k.dst.lo)),
                         rte_cpu_to_be_16(k.sport), rte_cpu_to_be_16(k.dport)};
    ptrs[i] = reinterpret_cast<const uint8_t*>(&tuples[i]);
  }

  // Ours.
  RulesetCompiler compiler;
  const auto o0 = std::chrono::steady_clock::now();
  const auto st = compiler.Compile(spec);
  const double our_build_ms = Ms(std::chrono::steady_clock::now() - o0);
  if (!st.ok()) {
    std::fprintf(stderr, "bench: compile failed: %s\n", st.message().c_str());
    return 1;
  }
  const auto rs = compiler.ruleset();

  // Same answers, every packet.
  std::vector<uint32_t> acl_res(n), our_res(n);
  rte_acl_set_ctx_classify(ctx, RTE_ACL_CLASSIFY_AVX2);
  for (uint32_t i = 0; i < n; i += kBurst) {
    rte_acl_classify(ctx, &ptrs[i], &acl_res[i], std::min(kBurst, n - i), 1);
  }
  rs->Classify(keys.data(), our_res.data(), n);
  uint32_t matched = 0;
  std::vector<bool> seen(filters.size() + 1);
  for (uint32_t i = 0; i < n; ++i) {
    const uint32_t ours = our_res[i] == Ruleset::kNoMatch ? 0 : our_res[i] + 1;
    if (ours != acl_res[i]) {
      std::fprintf(stderr, "bench: %s: MISMATCH at trace line %u: rte_acl %u, dfw %u\n",
                   name.c_str(), i + 1, acl_res[i], ours);
      return 1;
    }
    matched += ours != 0;
    if (!seen[ours]) ++res->distinct;
    seen[ours] = true;
  }

  // rte_acl methods: AVX2 (the DESIGN.md anchor) and the best the CPU takes.
  struct AclRow {
    enum rte_acl_classify_alg alg;
    Timing t;
  };
  std::vector<AclRow> acl_rows;
  for (enum rte_acl_classify_alg alg :
       {RTE_ACL_CLASSIFY_AVX2, RTE_ACL_CLASSIFY_AVX512X16, RTE_ACL_CLASSIFY_AVX512X32}) {
    if (rte_acl_set_ctx_classify(ctx, alg) != 0) continue;
    // Re-verify under this method.
    std::vector<uint32_t> r(n);
    for (uint32_t i = 0; i < n; i += kBurst) {
      rte_acl_classify(ctx, &ptrs[i], &r[i], std::min(kBurst, n - i), 1);
    }
    if (r != acl_res) {
      std::fprintf(stderr, "bench: %s: rte_acl %s disagrees with avx2\n", name.c_str(),
                   AlgName(alg));
      return 1;
    }
    const Timing t = TimeBursts(n, opt.secs, [&](uint32_t i, uint32_t cnt) {
      rte_acl_classify(ctx, &ptrs[i], &acl_res[i], cnt, 1);
    });
    acl_rows.push_back(AclRow{alg, t});
  }
  const Timing ours = TimeBursts(
      n, opt.secs, [&](uint32_t i, uint32_t cnt) { rs->Classify(&keys[i], &our_res[i], cnt); });
  const AclRow best = *std::max_element(
      acl_rows.begin(), acl_rows.end(),
      [](const AclRow& a, const AclRow& b) { return a.t.lookups_per_s < b.t.lookups_per_s; });

  std::printf("\n%s: %zu rules, trace %u packets (seed %llu, %u matched), all answers agree\n",
              name.c_str(), filters.size(), n, static_cast<unsigned long long>(seed), matched);
  std::printf("| %-24s | %12s | %13s | %10s | %14s |\n", "classifier", "lookups/s", "cycles/lookup",
              "build ms", "memory bytes");
  std::printf("|%s|%s|%s|%s|%s|\n", std::string(26, '-').c_str(), std::string(14, '-').c_str(),
              std::string(15, '-').c_str(), std::string(12, '-').c_str(),
              std::string(16, '-').c_str());
  for (const AclRow& r : acl_rows) {
    std::printf("| rte_acl %-16s | %12.0f | %13.1f | %10.1f | %14zu |\n", AlgName(r.alg),
                r.t.lookups_per_s, r.t.cycles_per_lookup, acl_build_ms, acl_bytes);
  }
  std::printf("| %-24s | %12.0f | %13.1f | %10.1f | %14zu |\n", "dfw (lookup tables)",
              ours.lookups_per_s, ours.cycles_per_lookup, our_build_ms, rs->memory_bytes());
  std::printf("| %-24s | %12s | %13s | %10s | %14zu |\n", "dfw + compiler state", "", "", "",
              rs->memory_bytes() + compiler.state_bytes());
  std::printf(
      "ratio dfw / rte_acl %s: lookups/s %.2fx, build time %.3fx, memory %.3fx "
      "(%.3fx with compiler state); vs avx2: lookups/s %.2fx\n",
      AlgName(best.alg), ours.lookups_per_s / best.t.lookups_per_s, our_build_ms / acl_build_ms,
      static_cast<double>(rs->memory_bytes()) / static_cast<double>(acl_bytes),
      static_cast<double>(rs->memory_bytes() + compiler.state_bytes()) /
          static_cast<double>(acl_bytes),
      ours.lookups_per_s / acl_rows[0].t.lookups_per_s);
  *res = SetResult{name,     filters.size(),    res->distinct, ours,         acl_rows[0].t,
                   best.t,   AlgName(best.alg), our_build_ms,  acl_build_ms, rs->memory_bytes(),
                   acl_bytes};
  rte_acl_free(ctx);
  return 0;
}

int RunSet(const Options& opt, const std::string& name) {
  const std::string path = opt.dir + "/" + name;
  std::string text, error;
  std::vector<cb::Filter> filters;
  if (!cb::ReadFile(path, &text, &error) || !cb::ParseFilters(text, path, &filters, &error)) {
    std::fprintf(stderr, "bench: %s\n", error.c_str());
    return 1;
  }
  SetResult res;
  return RunFilters(opt, name, filters, opt.seed, &res);
}

int RunGenerated(const Options& opt, const GenSet& g, std::vector<SetResult>* results) {
  const auto filters = cb::GenerateFilters(g.shape, g.count, g.seed);
  const std::string name = std::string(cb::ShapeName(g.shape)) + ":" +
                           std::to_string(filters.size()) + ":" + std::to_string(g.seed);
  SetResult res;
  if (RunFilters(opt, name, filters, g.seed, &res) != 0) return 1;
  // A point inside a random rule is often first matched by an earlier, wider
  // rule (wildcards, short prefixes, large sets): the trace then exercises
  // fewer rules than it picked. Under a quarter of them: say so.
  std::printf("distinct first matches in the trace: %u of %zu rules%s\n", res.distinct,
              filters.size(),
              res.distinct * 4 < std::min<size_t>(filters.size(), opt.trace)
                  ? " (degenerate trace: most points inside a random rule are first matched by "
                    "an earlier, wider rule)"
                  : "");
  results->push_back(res);
  return 0;
}

void PrintSummary(const std::vector<SetResult>& results) {
  std::printf(
      "\nsummary (cycles/lookup, M lookups/s; ratios = dfw lookups/s over rte_acl's; build and "
      "memory = dfw / rte_acl)\n");
  std::printf(
      "| set | rules | distinct | dfw cyc | dfw M/s | avx2 cyc | avx2 M/s | best | best cyc | "
      "best M/s | vs avx2 | vs best | build ms dfw / acl | memory dfw / acl |\n");
  std::printf(
      "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | "
      "---: |\n");
  for (const SetResult& r : results) {
    const double vs_avx2 = r.dfw.lookups_per_s / r.avx2.lookups_per_s;
    const double vs_best = r.dfw.lookups_per_s / r.best.lookups_per_s;
    std::printf(
        "| %s | %zu | %u | %.0f | %.2f | %.0f | %.2f | %s | %.0f | %.2f | %.2fx | %.2fx%s | %.1f / "
        "%.1f | %zu / %zu |\n",
        r.name.c_str(), r.rules, r.distinct, r.dfw.cycles_per_lookup, r.dfw.lookups_per_s / 1e6,
        r.avx2.cycles_per_lookup, r.avx2.lookups_per_s / 1e6, r.best_alg, r.best.cycles_per_lookup,
        r.best.lookups_per_s / 1e6, vs_avx2, vs_best, vs_best < 1.0 ? " (not met)" : "",
        r.dfw_build_ms, r.acl_build_ms, r.dfw_bytes, r.acl_bytes);
  }
}

// An IP joining an address set referenced by 4000 rules: acl1_10k with a
// rule over set "grp" (256 hosts as sources) inserted after every other rule.
int RunAddressSetChange(const Options& opt) {
  const std::string path = opt.dir + "/acl1_10k";
  std::string text, error;
  std::vector<cb::Filter> filters;
  if (!cb::ReadFile(path, &text, &error) || !cb::ParseFilters(text, path, &filters, &error)) {
    std::fprintf(stderr, "bench: %s\n", error.c_str());
    return 1;
  }
  auto base = cb::ToRulesetSpec(filters);
  std::mt19937_64 rng(opt.seed);
  dfw::dataplane::RulesetSpec spec;
  spec.address_sets = base.address_sets;
  dfw::dataplane::AddressSetSpec grp{"grp", {}};
  for (int i = 0; i < 256; ++i) {
    grp.prefixes.push_back(dfw::dataplane::IpPrefix::V4(static_cast<uint32_t>(rng()), 32));
  }
  spec.address_sets.push_back(grp);
  uint32_t referencing = 0;
  for (size_t i = 0; i < base.rules.size(); ++i) {
    spec.rules.push_back(base.rules[i]);
    if (i % 2 == 0 && referencing < 4000) {
      auto r = base.rules[i];
      r.src.address_sets = {"grp"};
      spec.rules.push_back(r);
      ++referencing;
    }
  }
  for (uint32_t i = 0; i < spec.rules.size(); ++i) spec.rules[i].rule_num = i + 1;
  RulesetCompiler compiler;
  const auto c0 = std::chrono::steady_clock::now();
  if (auto st = compiler.Compile(spec); !st.ok()) {
    std::fprintf(stderr, "bench: %s\n", st.message().c_str());
    return 1;
  }
  const double full_ms = Ms(std::chrono::steady_clock::now() - c0);
  dfw::dataplane::LinearClassifier ref(spec);
  std::vector<double> add_us, del_us;
  std::vector<dfw::dataplane::IpPrefix> joined;
  for (int i = 0; i < 200; ++i) {
    const auto p = dfw::dataplane::IpPrefix::V4(static_cast<uint32_t>(rng()), 32);
    auto t0 = std::chrono::steady_clock::now();
    if (!compiler.ApplyAddressSetDelta("grp", {p}, {}).ok()) return 1;
    add_us.push_back(Ms(std::chrono::steady_clock::now() - t0) * 1000);
    joined.push_back(p);
  }
  // Check: the new members match like the reference says.
  auto all = grp.prefixes;
  all.insert(all.end(), joined.begin(), joined.end());
  ref.SetAddressSet("grp", all);
  const auto rs = compiler.ruleset();
  for (const auto& p : joined) {
    for (int k = 0; k < 20; ++k) {
      const cb::Filter& f = filters[rng() % filters.size()];
      const FlowKey key = FlowKey::V4(static_cast<uint32_t>(p.addr.lo), f.dst, f.sport_lo,
                                      f.dport_lo, f.proto_any ? 6 : f.proto);
      if (rs->ClassifyOne(key) != ref.Classify(key)) {
        std::fprintf(stderr, "bench: address-set change MISMATCH\n");
        return 1;
      }
    }
  }
  for (const auto& p : joined) {
    auto t0 = std::chrono::steady_clock::now();
    if (!compiler.ApplyAddressSetDelta("grp", {}, {p}).ok()) return 1;
    del_us.push_back(Ms(std::chrono::steady_clock::now() - t0) * 1000);
  }
  auto stats = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    double sum = 0;
    for (double x : v) sum += x;
    return std::make_tuple(v[v.size() / 2], sum / static_cast<double>(v.size()), v.back());
  };
  const auto [am, aa, ax] = stats(add_us);
  const auto [dm, da, dx] = stats(del_us);
  std::printf("\naddress-set change: acl1_10k + %u rules over set 'grp' (%zu rules, 256 hosts)\n",
              referencing, spec.rules.size());
  std::printf("| %-30s | %10s | %10s | %10s |\n", "operation", "median us", "mean us", "max us");
  std::printf("|%s|%s|%s|%s|\n", std::string(32, '-').c_str(), std::string(12, '-').c_str(),
              std::string(12, '-').c_str(), std::string(12, '-').c_str());
  std::printf("| %-30s | %10.1f | %10.1f | %10.1f |\n", "one /32 joins grp (x200)", am, aa, ax);
  std::printf("| %-30s | %10.1f | %10.1f | %10.1f |\n", "one /32 leaves grp (x200)", dm, da, dx);
  std::printf("| %-30s | %10.1f | %10s | %10s |\n", "full compile, for comparison", full_ms * 1000,
              "", "");
  return 0;
}

std::vector<std::string> SplitList(const std::string& s, char sep = ',') {
  std::vector<std::string> out;
  for (size_t p = 0; p <= s.size();) {
    size_t q = s.find(sep, p);
    if (q == std::string::npos) q = s.size();
    if (q > p || sep != ',') out.push_back(s.substr(p, q - p));
    p = q + 1;
  }
  return out;
}

int Usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s [--dir DIR] [--sets a,b] [--trace N] [--seed S] [--secs T] "
               "[--no-address-set]\n"
               "       [--gen shape[:count[:seed]],...] [--shapes all|a,b [--seeds 1,2,3] "
               "[--count N]]\n"
               "       [--lcore N] [--eal-mem MB]\n"
               "shapes: wide-ranges wildcards overlap few many dfw (count 0 = the shape's "
               "default)\n",
               argv0);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  std::vector<std::string> shapes;
  std::vector<uint64_t> seeds = {1, 2, 3};
  uint32_t count = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--dir") {
      opt.dir = next();
    } else if (a == "--sets") {
      opt.sets = SplitList(next());
      opt.sets_given = true;
    } else if (a == "--gen") {
      for (const std::string& g : SplitList(next())) {
        // shape[:count[:seed]]
        const auto parts = SplitList(g, ':');
        GenSet gs{cb::Shape::kFew, 0, 1};
        if (parts.empty() || !cb::ParseShape(parts[0], &gs.shape)) return Usage(argv[0]);
        if (parts.size() > 1 && !parts[1].empty()) gs.count = std::stoul(parts[1]);
        if (parts.size() > 2) gs.seed = std::stoull(parts[2]);
        opt.gen.push_back(gs);
      }
    } else if (a == "--shapes") {
      shapes = SplitList(next());
    } else if (a == "--seeds") {
      seeds.clear();
      for (const std::string& s : SplitList(next())) seeds.push_back(std::stoull(s));
    } else if (a == "--count") {
      count = static_cast<uint32_t>(std::stoul(next()));
    } else if (a == "--lcore") {
      opt.lcore = std::stoi(next());
    } else if (a == "--eal-mem") {
      opt.eal_mb = std::stoi(next());
    } else if (a == "--trace") {
      opt.trace = static_cast<uint32_t>(std::stoul(next()));
    } else if (a == "--seed") {
      opt.seed = std::stoull(next());
    } else if (a == "--secs") {
      opt.secs = std::stod(next());
    } else if (a == "--no-address-set") {
      opt.address_set = false;
    } else {
      return Usage(argv[0]);
    }
  }
  if (shapes.size() == 1 && shapes[0] == "all") {
    shapes.clear();
    for (cb::Shape s : cb::AllShapes()) shapes.push_back(cb::ShapeName(s));
  }
  for (const std::string& name : shapes) {
    cb::Shape shape;
    if (!cb::ParseShape(name, &shape)) return Usage(argv[0]);
    for (uint64_t seed : seeds) opt.gen.push_back(GenSet{shape, count, seed});
  }
  // Generated sets replace the ClassBench ones unless --sets is given too.
  if (!opt.gen.empty() && !opt.sets_given) {
    opt.sets.clear();
    opt.address_set = false;
  }
  const std::string mem = std::to_string(opt.eal_mb), lcore = std::to_string(opt.lcore);
  const char* eal_argv[] = {"bench_classifier_vs_rte_acl",
                            "--no-pci",
                            "--no-huge",
                            "--no-shconf",
                            "-m",
                            mem.c_str(),
                            "-l",
                            lcore.c_str(),
                            "--force-max-simd-bitwidth=512",
                            "--log-level=lib.eal:error"};
  if (rte_eal_init(static_cast<int>(std::size(eal_argv)), const_cast<char**>(eal_argv)) < 0) {
    std::fprintf(stderr, "bench: rte_eal_init failed\n");
    return 1;
  }
  std::printf("TSC %.2f GHz; bursts of %u; one lcore\n",
              static_cast<double>(rte_get_tsc_hz()) / 1e9, kBurst);
  int rc = 0;
  for (const std::string& s : opt.sets) rc |= RunSet(opt, s);
  if (opt.address_set && rc == 0) rc |= RunAddressSetChange(opt);
  std::vector<SetResult> results;
  for (const GenSet& g : opt.gen) {
    if (rc != 0) break;
    rc |= RunGenerated(opt, g, &results);
  }
  if (!results.empty()) PrintSummary(results);
  rte_eal_cleanup();
  return rc;
}
