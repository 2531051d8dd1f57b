// dfw-classify: which rule matches this packet?
//
//   dfw-classify [--linear | --bench] RULES TRACE
//
// RULES is a ClassBench filter file (first line = highest priority), TRACE a
// dpdk-test-acl trace (`<src> <dst> <sport> <dport> <proto>` a line). Prints,
// per trace line, the 1-based index of the first matching rule, 0 for none.
// --linear uses the reference linear scan instead of the classifier; --bench
// prints lookups/s, cycles per lookup, compile time and memory instead.
#include <x86intrin.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "dfw/dataplane/classbench.h"
#include "dfw/dataplane/classifier.h"
#include "dfw/dataplane/linear_classifier.h"
#include "dfw/dataplane/ruleset_compiler.h"

namespace cb = dfw::dataplane::classbench;
using dfw::dataplane::FlowKey;
using dfw::dataplane::LinearClassifier;
using dfw::dataplane::Ruleset;
using dfw::dataplane::RulesetCompiler;

namespace {

int Usage() {
  std::fprintf(stderr,
               "usage: dfw-classify [--linear | --bench] RULES TRACE\n"
               "  RULES  ClassBench filter file (first line has the highest priority)\n"
               "  TRACE  one packet a line: <src ip> <dst ip> <sport> <dport> <proto>\n"
               "Prints the 1-based index of the first matching rule per trace line, 0 for "
               "none.\n");
  return 2;
}

void PrintResults(const std::vector<uint32_t>& res) {
  std::string out;
  out.reserve(res.size() * 6);
  for (uint32_t r : res) {
    out += std::to_string(r == Ruleset::kNoMatch ? 0 : r + 1);
    out += '\n';
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
}

}  // namespace

int main(int argc, char** argv) {
  bool linear = false, bench = false;
  std::vector<std::string> files;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--linear") == 0) {
      linear = true;
    } else if (std::strcmp(argv[i], "--bench") == 0) {
      bench = true;
    } else if (std::strcmp(argv[i], "-h") == 0 || std::strcmp(argv[i], "--help") == 0) {
      Usage();
      return 0;
    } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
      std::fprintf(stderr, "dfw-classify: unknown option %s\n", argv[i]);
      return Usage();
    } else {
      files.push_back(argv[i]);
    }
  }
  if (files.size() != 2 || (linear && bench)) return Usage();

  std::string text, error;
  std::vector<cb::Filter> filters;
  if (!cb::ReadFile(files[0], &text, &error) ||
      !cb::ParseFilters(text, files[0], &filters, &error)) {
    std::fprintf(stderr, "dfw-classify: %s\n", error.c_str());
    return 1;
  }
  std::vector<FlowKey> keys;
  if (!cb::ReadFile(files[1], &text, &error) || !cb::ParseTrace(text, files[1], &keys, &error)) {
    std::fprintf(stderr, "dfw-classify: %s\n", error.c_str());
    return 1;
  }
  const auto spec = cb::ToRulesetSpec(filters);
  std::vector<uint32_t> res(keys.size());

  if (linear) {
    LinearClassifier ref(spec);
    for (size_t i = 0; i < keys.size(); ++i) res[i] = ref.Classify(keys[i]);
    PrintResults(res);
    return 0;
  }

  RulesetCompiler compiler;
  const auto t0 = std::chrono::steady_clock::now();
  if (auto st = compiler.Compile(spec); !st.ok()) {
    std::fprintf(stderr, "dfw-classify: %s: %s\n", files[0].c_str(), st.message().c_str());
    return 1;
  }
  const double compile_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  const auto rs = compiler.ruleset();
  if (!bench) {
    rs->Classify(keys.data(), res.data(), static_cast<uint32_t>(keys.size()));
    PrintResults(res);
    return 0;
  }
  if (keys.empty()) {
    std::fprintf(stderr, "dfw-classify: %s: empty trace\n", files[1].c_str());
    return 1;
  }
  // Bursts of 32, repeated until at least ~0.5 s of work.
  const uint32_t n = static_cast<uint32_t>(keys.size());
  uint64_t lookups = 0, cycles = 0;
  const auto b0 = std::chrono::steady_clock::now();
  double secs = 0;
  while (secs < 0.5) {
    const uint64_t c0 = __rdtsc();
    for (uint32_t i = 0; i < n; i += Ruleset::kBurst) {
      rs->Classify(keys.data() + i, res.data() + i, std::min(Ruleset::kBurst, n - i));
    }
    cycles += __rdtsc() - c0;
    lookups += n;
    secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - b0).count();
  }
  std::printf("rules %zu entries %u trace %u\n", filters.size(), rs->num_entries(), n);
  std::printf("lookups/s %.0f\n", static_cast<double>(lookups) / secs);
  std::printf("cycles/lookup %.1f (TSC)\n", static_cast<double>(cycles) / lookups);
  std::printf("compile_ms %.2f\n", compile_ms);
  std::printf("memory_bytes %zu\n", rs->memory_bytes());
  return 0;
}
