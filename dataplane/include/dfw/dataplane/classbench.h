// ClassBench filter files and dpdk-test-acl traces, for dfw-classify, the
// tests and the benchmark.
//
// Filter line: `@<src>/<len> <dst>/<len> <slo> : <shi> <dlo> : <dhi> <proto>/<mask>
// [<flags>/<mask>]` (first line has the highest priority; flags are ignored; protocol mask 0xFF =
// exact, 0x00 = any). Trace line: `<src> <dst> <sport> <dport> <proto>` (addresses as unsigned
// integers), an optional sixth column (ClassBench's trace generator writes the matching filter
// there) is ignored. Blank lines are skipped. Errors read `<file>:<line>: <what is wrong>`.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "dfw/dataplane/rule_model.h"

namespace dfw::dataplane::classbench {

struct Filter {
  uint32_t src = 0, dst = 0;
  uint8_t src_len = 0, dst_len = 0;
  uint16_t sport_lo = 0, sport_hi = 65535, dport_lo = 0, dport_hi = 65535;
  uint8_t proto = 0;
  bool proto_any = true;
};

// Returns false and sets *error on the first malformed line.
bool ParseFilters(const std::string& text, const std::string& name, std::vector<Filter>* out,
                  std::string* error);
bool ParseTrace(const std::string& text, const std::string& name, std::vector<FlowKey>* out,
                std::string* error);
bool ReadFile(const std::string& path, std::string* out, std::string* error);

// Traces, seeded and reproducible: points inside random filters (the
// dpdk-test-acl / DESIGN.md anchor workload), or uniformly random points.
std::vector<FlowKey> TraceInsideFilters(const std::vector<Filter>& filters, size_t n,
                                        uint64_t seed);
std::vector<FlowKey> RandomTrace(size_t n, uint64_t seed);
// dpdk-test-acl trace text for keys (IPv4 only).
std::string FormatTrace(const std::vector<FlowKey>& keys);

// Rule i of the result is filter i; rule_num = i + 1; addresses become one
// address set per distinct prefix, named by its text.
RulesetSpec ToRulesetSpec(const std::vector<Filter>& filters);

}  // namespace dfw::dataplane::classbench
