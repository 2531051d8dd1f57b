// Generated IPv4 5-tuple filter sets of named shapes, in the same form the
// ClassBench parser produces (first filter = highest priority), for the
// benchmark against rte_acl and the tests against the linear reference.
// Deterministic: the same shape, count and seed give the same filters on
// every machine (std::mt19937_64 only, no distributions).
//
// Shapes:
//   wide-ranges  port ranges spanning 1k-40k ports at arbitrary (non-aligned)
//                bounds on both ports, prefixes /8-/32
//   wildcards    most fields wildcarded: each filter has one or two specific
//                fields (a prefix, a port or range, a protocol)
//   overlap      nested and overlapping prefixes of every length 0-32 on both
//                addresses, drawn around a few anchors
//   few          a handful of mixed filters (count 16-64)
//   many         tens of thousands of ACL-like filters (/20-/32 prefixes,
//                mostly /24 and /32, in a few hundred /16s; exact or ranged
//                destination ports)
//   dfw          what the controller compiles: policy rules between groups of
//                /32 hosts (address-set sized) and some subnets, with service
//                ports, expanded into filters (source member x destination
//                member x service)
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "dfw/dataplane/classbench.h"

namespace dfw::dataplane::classbench {

enum class Shape { kWideRanges, kWildcards, kOverlap, kFew, kMany, kDfw };

// All shapes, in the order above.
const std::vector<Shape>& AllShapes();
const char* ShapeName(Shape s);
bool ParseShape(const std::string& name, Shape* out);
// The filter count used when none is given.
uint32_t DefaultCount(Shape s);

// `count` filters of `shape` (count 0 = DefaultCount).
std::vector<Filter> GenerateFilters(Shape shape, uint32_t count, uint64_t seed);

}  // namespace dfw::dataplane::classbench
