// The classifier against the linear reference on random rule sets: IPv4 and
// IPv6, overlapping and nested prefixes, shared address sets, wildcards,
// negation, port ranges, mixed protocols, ICMP, directions; >= 100k packets
// per rule set; then random address-set changes applied incrementally. Also
// the generated filter sets of every shape the benchmark runs against rte_acl
// (classbench_gen.h).
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "dfw/dataplane/classbench.h"
#include "dfw/dataplane/classbench_gen.h"
#include "dfw/dataplane/classifier.h"
#include "dfw/dataplane/linear_classifier.h"
#include "dfw/dataplane/ruleset_compiler.h"
#include "random_rules.h"

namespace dfw::dataplane {
namespace {

using testing::RandomRules;
using testing::RandomRulesOptions;

std::string Describe(const FlowKey& k) {
  auto ip = [&](const Ip128& a) {
    return k.family == Family::kV4 ? IpPrefix::V4(static_cast<uint32_t>(a.lo), 32).ToString()
                                   : IpPrefix::V6(a, 128).ToString();
  };
  return ip(k.src) + " -> " + ip(k.dst) + " proto " + std::to_string(k.proto) + " " +
         std::to_string(k.sport) + " -> " + std::to_string(k.dport) + " dir " +
         std::to_string(static_cast<int>(k.dir));
}

// Classifies `n` keys as one burst and compares with the reference answers
// `want`: counts the differences in *bad (reporting the first five) and
// records the answers in *hit.
void CheckBurst(const FlowKey* keys, const uint32_t* want, uint32_t n, const Ruleset& rs, int* bad,
                std::set<uint32_t>* hit) {
  std::vector<uint32_t> out(n, 0);
  rs.Classify(keys, out.data(), n);
  for (uint32_t i = 0; i < n; ++i) {
    if (hit != nullptr) hit->insert(want[i]);
    if (out[i] != want[i] && ++*bad <= 5) {
      ADD_FAILURE() << Describe(keys[i]) << ": classifier " << out[i] << ", reference " << want[i];
    }
  }
}

// Classifies `n` random keys in bursts of uneven sizes; returns mismatches.
int CompareRandom(RandomRules& gen, const RulesetSpec& spec, const LinearClassifier& ref,
                  const Ruleset& rs, uint32_t n, std::set<uint32_t>* hit = nullptr) {
  int bad = 0;
  std::vector<FlowKey> keys;
  std::vector<uint32_t> want;
  uint32_t done = 0;
  while (done < n) {
    const uint32_t burst = 1 + static_cast<uint32_t>(gen.rng()() % 70);
    keys.clear();
    for (uint32_t i = 0; i < burst; ++i) keys.push_back(gen.MakeKey(spec));
    want.clear();
    for (const FlowKey& k : keys) want.push_back(ref.Classify(k));
    CheckBurst(keys.data(), want.data(), burst, rs, &bad, hit);
    done += burst;
  }
  return bad;
}

struct Case {
  const char* name;
  uint64_t seed;
  RandomRulesOptions opt;
  size_t min_distinct;   // first matches seen, guards against degenerate workloads
  bool no_match = true;  // some packets fall through to the default
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class RandomRulesetTest : public ::testing::TestWithParam<Case> {};

// Every lookup path: merged service field or five fields; one-word,
// one-line and 64-word dictionary chunks.
// The last one recompiles after nearly every address-set update.
const CompileOptions kLayouts[] = {{true, 3, 1u << 16},
                                   {false, 3, 1u << 16},
                                   {true, 0, 1u << 16},
                                   {false, 6, 1u << 16},
                                   {true, 3, 16}};

std::string LayoutName(const CompileOptions& layout) {
  return "merge_services " + std::to_string(layout.merge_services) + " chunk_shift " +
         std::to_string(layout.chunk_shift);
}

// The ruleset compiled with `layout`; null (and a failure) if it does not compile.
std::shared_ptr<const Ruleset> CompileLayout(const RulesetSpec& spec,
                                             const CompileOptions& layout) {
  RulesetCompiler compiler(layout);
  const Status st = compiler.Compile(spec);
  EXPECT_TRUE(st.ok()) << st.message();
  return st.ok() ? compiler.ruleset() : nullptr;
}

TEST_P(RandomRulesetTest, MatchesLinearReference) {
  const Case& c = GetParam();
  RandomRules gen(c.seed, c.opt);
  const RulesetSpec spec = gen.MakeSpec();
  LinearClassifier ref(spec);
  for (const CompileOptions& layout : kLayouts) {
    SCOPED_TRACE(LayoutName(layout));
    const auto rs = CompileLayout(spec, layout);
    ASSERT_NE(rs, nullptr);
    EXPECT_EQ(rs->num_rules(), spec.rules.size());
    // >= 100k packets per rule set with the default layout.
    const bool dflt = layout.merge_services && layout.chunk_shift == 3 &&
                      layout.garbage_limit_words == CompileOptions().garbage_limit_words;
    std::set<uint32_t> hit;
    EXPECT_EQ(CompareRandom(gen, spec, ref, *rs, dflt ? 100000 : 30000, &hit), 0);
    // Not a degenerate workload: many rules are first matches, and some
    // packets match none.
    EXPECT_GE(hit.size(), c.min_distinct);
    if (c.no_match) {
      EXPECT_TRUE(hit.contains(LinearClassifier::kNoMatch));
    }
  }
}

RandomRulesOptions Opt(uint32_t rules, uint32_t sets, bool v6, double any, double neg,
                       uint32_t services = 3) {
  RandomRulesOptions o;
  o.rules = rules;
  o.sets = sets;
  o.ipv6 = v6;
  o.p_any = any;
  o.p_negate = neg;
  o.max_services = services;
  return o;
}

INSTANTIATE_TEST_SUITE_P(
    Sets, RandomRulesetTest,
    ::testing::Values(Case{"Tiny", 1, Opt(5, 4, true, 0.3, 0.2), 4},
                      Case{"Ipv4Only", 2, Opt(300, 30, false, 0.15, 0.0), 100},
                      Case{"Ipv4Negation", 3, Opt(300, 30, false, 0.05, 0.3), 100},
                      Case{"Mixed", 4, Opt(800, 60, true, 0.15, 0.1), 80, false},
                      Case{"MostlyWildcards", 5, Opt(500, 10, true, 0.8, 0.1), 20, false},
                      Case{"NoWildcards", 6, Opt(500, 200, true, 0.0, 0.0), 300},
                      // > 4096 entries: more than one aggregate word.
                      Case{"ManyEntries", 7, Opt(2500, 150, true, 0.15, 0.1, 4), 100, false}),
    [](const ::testing::TestParamInfo<Case>& i) { return std::string(i.param.name); });

class AddressSetUpdateTest : public ::testing::TestWithParam<CompileOptions> {};

TEST_P(AddressSetUpdateTest, RandomDeltasMatchReference) {
  RandomRules gen(11, Opt(600, 25, true, 0.3, 0.15));
  RulesetSpec spec = gen.MakeSpec();
  LinearClassifier ref(spec);
  RulesetCompiler compiler(GetParam());
  ASSERT_TRUE(compiler.Compile(spec).ok());
  for (int round = 0; round < 60; ++round) {
    const uint32_t s = static_cast<uint32_t>(gen.rng()() % spec.address_sets.size());
    auto& prefixes = spec.address_sets[s].prefixes;
    const uint32_t op = static_cast<uint32_t>(gen.rng()() % 3);
    std::vector<IpPrefix> added, removed;
    if (op == 0 || prefixes.empty()) {
      added = gen.MakePrefixes(1 + gen.rng()() % 3);
    } else if (op == 1) {
      removed.push_back(prefixes[gen.rng()() % prefixes.size()]);
    } else {
      removed.push_back(prefixes[gen.rng()() % prefixes.size()]);
      added = gen.MakePrefixes(1);
    }
    const Status st = compiler.ApplyAddressSetDelta(spec.address_sets[s].id, added, removed);
    ASSERT_TRUE(st.ok()) << st.message();
    for (const IpPrefix& r : removed) {
      std::erase_if(prefixes, [&](const IpPrefix& p) {
        return p.family == r.family && p.len == r.len && p.addr == r.addr;
      });
    }
    for (const IpPrefix& a : added) {
      bool have = false;
      for (const IpPrefix& p : prefixes) {
        have |= p.family == a.family && p.len == a.len && p.addr == a.addr;
      }
      if (!have) prefixes.push_back(a);
    }
    ref.SetAddressSet(spec.address_sets[s].id, prefixes);
    ASSERT_EQ(CompareRandom(gen, spec, ref, *compiler.ruleset(), 3000), 0) << "round " << round;
  }
  EXPECT_EQ(CompareRandom(gen, spec, ref, *compiler.ruleset(), 100000), 0);
}

INSTANTIATE_TEST_SUITE_P(Layouts, AddressSetUpdateTest, ::testing::ValuesIn(kLayouts),
                         [](const ::testing::TestParamInfo<CompileOptions>& i) {
                           return std::string(i.param.merge_services ? "Merged" : "FiveFields") +
                                  "Chunk" + std::to_string(1u << i.param.chunk_shift) +
                                  (i.param.garbage_limit_words < 1000 ? "Recompiling" : "");
                         });

}  // namespace
namespace classbench {
void PrintTo(Shape s, std::ostream* os) { *os << ShapeName(s); }
}  // namespace classbench
namespace {

// Generated filter sets (classbench_gen.h), each shape x three seeds, through
// the ClassBench conversion: points inside random filters (the benchmark's
// trace) and uniformly random points, in bursts of uneven sizes, every layout.
class GeneratedShapeTest
    : public ::testing::TestWithParam<std::tuple<classbench::Shape, uint64_t>> {};

TEST_P(GeneratedShapeTest, MatchesLinearReference) {
  const auto [shape, seed] = GetParam();
  // many: 20k filters rather than the benchmark's 30k, and fewer packets, to
  // keep the linear reference quick.
  const bool many = shape == classbench::Shape::kMany;
  const auto filters = classbench::GenerateFilters(shape, many ? 20000 : 0, seed);
  ASSERT_EQ(filters.size(), many ? 20000 : classbench::DefaultCount(shape));
  const RulesetSpec spec = classbench::ToRulesetSpec(filters);
  LinearClassifier ref(spec);
  auto keys = classbench::TraceInsideFilters(filters, many ? 6000 : 30000, seed);
  const auto random = classbench::RandomTrace(many ? 2000 : 10000, seed + 100);
  keys.insert(keys.end(), random.begin(), random.end());
  std::vector<uint32_t> want;
  for (const FlowKey& k : keys) want.push_back(ref.Classify(k));
  std::mt19937_64 rng(seed);
  for (const CompileOptions& layout : kLayouts) {
    SCOPED_TRACE(LayoutName(layout));
    const auto rs = CompileLayout(spec, layout);
    ASSERT_NE(rs, nullptr);
    int bad = 0;
    std::set<uint32_t> hit;
    for (size_t i = 0; i < keys.size();) {
      const uint32_t burst =
          static_cast<uint32_t>(std::min<size_t>(1 + rng() % 70, keys.size() - i));
      CheckBurst(&keys[i], &want[i], burst, *rs, &bad, &hit);
      i += burst;
    }
    EXPECT_EQ(bad, 0);
    // Not degenerate: several different first matches.
    EXPECT_GE(hit.size(), std::min<size_t>(filters.size() / 4, 10));
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, GeneratedShapeTest,
    ::testing::Combine(::testing::ValuesIn(classbench::AllShapes()), ::testing::Values(1, 2, 3)),
    [](const ::testing::TestParamInfo<std::tuple<classbench::Shape, uint64_t>>& i) {
      std::string name = classbench::ShapeName(std::get<0>(i.param));
      std::erase(name, '-');
      return name + "Seed" + std::to_string(std::get<1>(i.param));
    });

// The generator is deterministic, seeds differ, and the shapes are what they
// say.
TEST(ClassBenchGenTest, DeterministicAndShaped) {
  auto same = [](const classbench::Filter& a, const classbench::Filter& b) {
    return std::tie(a.src, a.src_len, a.dst, a.dst_len, a.sport_lo, a.sport_hi, a.dport_lo,
                    a.dport_hi, a.proto, a.proto_any) ==
           std::tie(b.src, b.src_len, b.dst, b.dst_len, b.sport_lo, b.sport_hi, b.dport_lo,
                    b.dport_hi, b.proto, b.proto_any);
  };
  for (classbench::Shape shape : classbench::AllShapes()) {
    SCOPED_TRACE(classbench::ShapeName(shape));
    const auto a = classbench::GenerateFilters(shape, 0, 7);
    const auto b = classbench::GenerateFilters(shape, 0, 7);
    const auto c = classbench::GenerateFilters(shape, 0, 8);
    ASSERT_EQ(a.size(), b.size());
    size_t differ = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_TRUE(same(a[i], b[i])) << "filter " << i;
      differ += !same(a[i], c[i]);
      // Host bits clear, as the parser leaves them.
      EXPECT_EQ(a[i].src & ~(a[i].src_len == 0 ? 0u : ~0u << (32 - a[i].src_len)), 0u);
      EXPECT_EQ(a[i].dst & ~(a[i].dst_len == 0 ? 0u : ~0u << (32 - a[i].dst_len)), 0u);
      EXPECT_LE(a[i].sport_lo, a[i].sport_hi);
      EXPECT_LE(a[i].dport_lo, a[i].dport_hi);
    }
    EXPECT_GT(differ, a.size() / 2);
  }
  // wide-ranges: every port range that is not a wildcard spans >= 1000 ports.
  for (const auto& f : classbench::GenerateFilters(classbench::Shape::kWideRanges, 0, 1)) {
    EXPECT_GE(f.sport_hi - f.sport_lo, 1000);
    EXPECT_GE(f.dport_hi - f.dport_lo, 1000);
  }
  // wildcards: at most two specific fields per filter.
  for (const auto& f : classbench::GenerateFilters(classbench::Shape::kWildcards, 0, 1)) {
    const int specific = (f.src_len != 0) + (f.dst_len != 0) + !f.proto_any +
                         (f.sport_hi - f.sport_lo != 65535) + (f.dport_hi - f.dport_lo != 65535);
    EXPECT_GE(specific, 1);
    EXPECT_LE(specific, 2);
  }
}

TEST(AddressSetUpdateOnceTest, OldRulesetStaysValidAfterUpdate) {
  RandomRules gen(12, Opt(200, 10, false, 0.2, 0.0));
  RulesetSpec spec = gen.MakeSpec();
  RulesetCompiler compiler;
  ASSERT_TRUE(compiler.Compile(spec).ok());
  const auto before = compiler.ruleset();
  LinearClassifier ref_before(spec);
  ASSERT_TRUE(compiler.UpdateAddressSet("set0", {IpPrefix::V4(0, 0)}).ok());
  EXPECT_NE(compiler.ruleset(), before);
  EXPECT_GT(compiler.ruleset()->generation(), before->generation());
  // A reader still holding the previous Ruleset sees the previous rules.
  EXPECT_EQ(CompareRandom(gen, spec, ref_before, *before, 20000), 0);
}

}  // namespace
}  // namespace dfw::dataplane
