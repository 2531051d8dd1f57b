// The six shared ClassBench sets (acl1/fw1/ipc1, 1k and 10k): the classifier
// against the linear reference on points inside random rules and random
// points, and dfw-classify (fast and --linear) line by line, including its
// error messages for malformed input.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <algorithm>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "dfw/dataplane/classbench.h"
#include "dfw/dataplane/classifier.h"
#include "dfw/dataplane/linear_classifier.h"
#include "dfw/dataplane/ruleset_compiler.h"

namespace dfw::dataplane {
namespace {

namespace fs = std::filesystem;

const char* const kSets[] = {"acl1_1k", "fw1_1k", "ipc1_1k", "acl1_10k", "fw1_10k", "ipc1_10k"};

std::vector<classbench::Filter> LoadSet(const std::string& name) {
  const std::string path = std::string(DFW_CLASSBENCH_DIR) + "/" + name;
  std::string text, error;
  std::vector<classbench::Filter> filters;
  if (!classbench::ReadFile(path, &text, &error)) {
    ADD_FAILURE() << "ClassBench data missing: " << error
                  << " (configure with -DDFW_CLASSBENCH_DIR=<dir of acl1_1k ...>)";
    return filters;
  }
  EXPECT_TRUE(classbench::ParseFilters(text, path, &filters, &error)) << error;
  return filters;
}

class ClassBenchTest : public ::testing::TestWithParam<const char*> {};

TEST_P(ClassBenchTest, MatchesLinearReference) {
  const auto filters = LoadSet(GetParam());
  ASSERT_FALSE(filters.empty());
  const RulesetSpec spec = classbench::ToRulesetSpec(filters);
  RulesetCompiler compiler;
  const Status st = compiler.Compile(spec);
  ASSERT_TRUE(st.ok()) << st.message();
  LinearClassifier ref(spec);
  auto keys = classbench::TraceInsideFilters(filters, 60000, 1);
  const auto random = classbench::RandomTrace(40000, 2);
  keys.insert(keys.end(), random.begin(), random.end());
  std::vector<uint32_t> got(keys.size());
  for (size_t i = 0; i < keys.size(); i += Ruleset::kBurst) {
    compiler.ruleset()->Classify(&keys[i], &got[i],
                                 static_cast<uint32_t>(std::min<size_t>(32, keys.size() - i)));
  }
  int bad = 0;
  for (size_t i = 0; i < keys.size(); ++i) {
    const uint32_t want = ref.Classify(keys[i]);
    if (got[i] != want && ++bad <= 5) {
      ADD_FAILURE() << "packet " << i << ": classifier " << got[i] << ", reference " << want;
    }
  }
  EXPECT_EQ(bad, 0);
}

INSTANTIATE_TEST_SUITE_P(Shared, ClassBenchTest, ::testing::ValuesIn(kSets),
                         [](const ::testing::TestParamInfo<const char*>& i) {
                           return std::string(i.param);
                         });

struct RunResult {
  int status = -1;
  std::string out;
  std::string err;
};

RunResult RunTool(const std::string& args, const fs::path& dir) {
  const fs::path out = dir / "out.txt", err = dir / "err.txt";
  const std::string cmd =
      std::string(DFW_CLASSIFY_TOOL) + " " + args + " >" + out.string() + " 2>" + err.string();
  RunResult r;
  const int rc = std::system(cmd.c_str());
  r.status = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  std::string error;
  classbench::ReadFile(out.string(), &r.out, &error);
  classbench::ReadFile(err.string(), &r.err, &error);
  return r;
}

class ToolDir : public ::testing::Test {
 protected:
  void SetUp() override {
    // Parameterised test names hold a '/': flatten it, or TearDown would
    // remove only the last path component and leave the rest in /tmp.
    std::string name = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::replace(name.begin(), name.end(), '/', '_');
    dir_ = fs::temp_directory_path() /
           ("dfw_classify_test_" + std::to_string(::getpid()) + "_" + name);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  void Write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name) << text;
  }
  fs::path dir_;
};

class ClassifyToolTest : public ToolDir, public ::testing::WithParamInterface<const char*> {};

// dfw-classify RULES TRACE agrees with dfw-classify --linear on every line.
TEST_P(ClassifyToolTest, AgreesWithLinearScan) {
  const std::string rules = std::string(DFW_CLASSBENCH_DIR) + "/" + GetParam();
  const auto filters = LoadSet(GetParam());
  ASSERT_FALSE(filters.empty());
  auto keys = classbench::TraceInsideFilters(filters, 15000, 3);
  const auto random = classbench::RandomTrace(5000, 4);
  keys.insert(keys.end(), random.begin(), random.end());
  Write("trace", classbench::FormatTrace(keys));
  const RunResult fast = RunTool(rules + " " + (dir_ / "trace").string(), dir_);
  const RunResult slow = RunTool("--linear " + rules + " " + (dir_ / "trace").string(), dir_);
  ASSERT_EQ(fast.status, 0) << fast.err;
  ASSERT_EQ(slow.status, 0) << slow.err;
  EXPECT_EQ(std::count(fast.out.begin(), fast.out.end(), '\n'), static_cast<long>(keys.size()));
  if (fast.out != slow.out) {
    size_t line = 1;
    for (size_t i = 0; i < fast.out.size() && i < slow.out.size(); ++i) {
      if (fast.out[i] != slow.out[i]) break;
      if (fast.out[i] == '\n') ++line;
    }
    FAIL() << "dfw-classify and --linear differ first at trace line " << line;
  }
}

INSTANTIATE_TEST_SUITE_P(Shared, ClassifyToolTest, ::testing::ValuesIn(kSets),
                         [](const ::testing::TestParamInfo<const char*>& i) {
                           return std::string(i.param);
                         });

// ClassBench files the tool has never seen: random filters around a few
// anchors (nested and overlapping prefixes, wildcards, port ranges, any or
// one protocol), written out as text, classified by the tool both ways.
TEST_F(ToolDir, RandomRuleFilesAgreeWithLinearScan) {
  for (uint64_t seed = 1; seed <= 3; ++seed) {
    std::mt19937_64 rng(seed);
    uint32_t anchors[4];
    for (uint32_t& a : anchors) a = static_cast<uint32_t>(rng());
    auto prefix = [&](std::string* out) {
      const uint32_t len = static_cast<uint32_t>(rng() % 16 == 0 ? rng() % 8 : 8 + rng() % 25);
      // The anchor with its low 0..32 bits perturbed: a shift of 32..64 of a
      // random word (by 64 it is undefined, so spelt 0), in one order.
      const uint32_t anchor = anchors[rng() % 4];
      const uint64_t noise = rng();
      const uint64_t shift = 32 + rng() % 33;
      uint32_t a = anchor ^ (shift == 64 ? 0u : static_cast<uint32_t>(noise >> shift));
      a &= len == 0 ? 0 : ~0u << (32 - len);
      *out += std::to_string(a >> 24) + "." + std::to_string((a >> 16) & 255) + "." +
              std::to_string((a >> 8) & 255) + "." + std::to_string(a & 255) + "/" +
              std::to_string(len);
    };
    auto range = [&](std::string* out) {
      static constexpr uint16_t kPorts[] = {0, 53, 80, 443, 1023, 1024, 65535};
      uint16_t lo = kPorts[rng() % 7], hi = kPorts[rng() % 7];
      if (rng() % 5 == 0) lo = 0, hi = 65535;
      if (lo > hi) std::swap(lo, hi);
      *out += std::to_string(lo) + " : " + std::to_string(hi);
    };
    std::string rules;
    for (int i = 0; i < 1500; ++i) {
      rules += "@";
      prefix(&rules);
      rules += "\t";
      prefix(&rules);
      rules += "\t";
      range(&rules);
      rules += "\t";
      range(&rules);
      static constexpr const char* kProtos[] = {"0x06/0xFF", "0x11/0xFF", "0x01/0xFF", "0x00/0x00"};
      rules += std::string("\t") + kProtos[rng() % 4] + "\t0x0000/0x0000\n";
    }
    Write("rules", rules);
    std::vector<classbench::Filter> filters;
    std::string error;
    ASSERT_TRUE(classbench::ParseFilters(rules, "rules", &filters, &error)) << error;
    auto keys = classbench::TraceInsideFilters(filters, 15000, seed);
    const auto random = classbench::RandomTrace(5000, seed + 100);
    keys.insert(keys.end(), random.begin(), random.end());
    Write("trace", classbench::FormatTrace(keys));
    const std::string args = (dir_ / "rules").string() + " " + (dir_ / "trace").string();
    const RunResult fast = RunTool(args, dir_);
    const RunResult slow = RunTool("--linear " + args, dir_);
    ASSERT_EQ(fast.status, 0) << fast.err;
    ASSERT_EQ(slow.status, 0) << slow.err;
    EXPECT_EQ(std::count(fast.out.begin(), fast.out.end(), '\n'), static_cast<long>(keys.size()));
    EXPECT_TRUE(fast.out == slow.out) << "seed " << seed;
    // Not a degenerate trace: many different rules (and "none") are hit.
    std::set<std::string> distinct;
    std::istringstream lines(fast.out);
    for (std::string l; std::getline(lines, l);) distinct.insert(l);
    EXPECT_GT(distinct.size(), 200u) << "seed " << seed;
    EXPECT_TRUE(distinct.contains("0")) << "seed " << seed;
  }
}

TEST_F(ToolDir, HandWrittenRulesAndTrace) {
  Write("rules",
        "@10.0.0.0/8\t0.0.0.0/0\t0 : 65535\t80 : 80\t0x06/0xFF\t0x0000/0x0000\t\n"
        "@0.0.0.0/0\t192.168.1.0/24\t1024 : 65535\t0 : 65535\t0x00/0x00\t\n"
        "@0.0.0.0/0\t0.0.0.0/0\t0 : 65535\t53 : 53\t0x11/0xFF\n");
  // 10.1.2.3 -> 1.1.1.1:80 tcp; 8.8.8.8:2000 -> 192.168.1.9 any; udp 53; nothing.
  Write("trace",
        "167838211 16843009 1234 80 6\n"
        "134744072 3232235785 2000 7 47\n"
        "1 2 3 53 17\n"
        "1 2 3 53 6 99\n");
  const RunResult r = RunTool((dir_ / "rules").string() + " " + (dir_ / "trace").string(), dir_);
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "1\n2\n3\n0\n");
}

TEST_F(ToolDir, MalformedLinesNameFileAndLine) {
  Write("rules", "@10.0.0.0/8\t0.0.0.0/0\t0 : 65535\t80 : 80\t0x06/0xFF\n@10.0.0.0/8 bogus\n");
  Write("good_rules", "@10.0.0.0/8\t0.0.0.0/0\t0 : 65535\t80 : 80\t0x06/0xFF\n");
  Write("trace", "1 2 3 4 6\n1 2 3\n");
  RunResult r = RunTool((dir_ / "rules").string() + " " + (dir_ / "trace").string(), dir_);
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.err.find((dir_ / "rules").string() + ":2: bad destination prefix"), std::string::npos)
      << r.err;
  r = RunTool((dir_ / "good_rules").string() + " " + (dir_ / "trace").string(), dir_);
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.err.find((dir_ / "trace").string() + ":2: expected"), std::string::npos) << r.err;
  Write("trace", "1 2 3 4 256\n");
  r = RunTool((dir_ / "good_rules").string() + " " + (dir_ / "trace").string(), dir_);
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.err.find(":1:"), std::string::npos) << r.err;
  r = RunTool((dir_ / "missing").string() + " " + (dir_ / "trace").string(), dir_);
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.err.find("cannot open"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace dfw::dataplane
