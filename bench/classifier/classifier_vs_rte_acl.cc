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

struct Options {
  std::string dir = DFW_CLASSBENCH_DIR;
  std::vector<std::string> sets = {"acl1_10k", "fw1_10k", "ipc1_10k"};
  uint32_t trace = 60000;
  uint64_t seed = 1;
  double secs = 1.0;
  bool address_set = true;
};

int RunSet(const Options& opt, const std::string& name) {
  const std::string path = opt.dir + "/" + name;
  std::string text, error;
  std::vector<cb::Filter> filters;
  if (!cb::ReadFile(path, &text, &error) || !cb::ParseFilters(text, path, &filters, &error)) {
    std::fprintf(stderr, "bench: %s\n", error.c_str());
    return 1;
  }
  const auto spec = cb::ToRulesetSpec(filters);
  const auto keys = cb::TraceInsideFilters(filters, opt.trace, opt.seed);
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
  for (uint32_t i = 0; i < n; ++i) {
    const uint32_t ours = our_res[i] == Ruleset::kNoMatch ? 0 : our_res[i] + 1;
    if (ours != acl_res[i]) {
      std::fprintf(stderr, "bench: %s: MISMATCH at trace line %u: rte_acl %u, dfw %u\n",
                   name.c_str(), i + 1, acl_res[i], ours);
      return 1;
    }
    matched += ours != 0;
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
              name.c_str(), filters.size(), n, static_cast<unsigned long long>(opt.seed), matched);
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
  rte_acl_free(ctx);
  return 0;
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

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--dir") {
      opt.dir = next();
    } else if (a == "--sets") {
      opt.sets.clear();
      std::string s = next();
      for (size_t p = 0; p <= s.size();) {
        size_t q = s.find(',', p);
        if (q == std::string::npos) q = s.size();
        if (q > p) opt.sets.push_back(s.substr(p, q - p));
        p = q + 1;
      }
    } else if (a == "--trace") {
      opt.trace = static_cast<uint32_t>(std::stoul(next()));
    } else if (a == "--seed") {
      opt.seed = std::stoull(next());
    } else if (a == "--secs") {
      opt.secs = std::stod(next());
    } else if (a == "--no-address-set") {
      opt.address_set = false;
    } else {
      std::fprintf(stderr,
                   "usage: %s [--dir DIR] [--sets a,b] [--trace N] [--seed S] [--secs T] "
                   "[--no-address-set]\n",
                   argv[0]);
      return 2;
    }
  }
  const char* eal_argv[] = {"bench_classifier_vs_rte_acl",
                            "--no-pci",
                            "--no-huge",
                            "--no-shconf",
                            "-m",
                            "2048",
                            "-l",
                            "0",
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
  rte_eal_cleanup();
  return rc;
}
