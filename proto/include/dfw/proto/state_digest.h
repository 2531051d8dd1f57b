// Digests of a host's desired state, object by object (HeldDigests in
// compiled.proto): the dataplane reports them for what it holds, the
// controller computes them for what a host should hold, and a reconnecting
// host whose controller did not send its state (a restart, a failover) gets
// a delta of the objects whose digests differ instead of a full state.
//
// A digest is the SHA-256 of the object's content, independent of how it was
// reached:
//   - a ruleset: its rules and default rule, each serialized with its length
//     in front (these messages have no map fields, so the bytes are a
//     function of the content), after a marker when it is excluded; not the
//     vNIC id, not the revision;
//   - an address set: its id and its prefixes as text, sorted and
//     deduplicated (a set built by deltas and one sent whole match).
// Both ends must use the same protobuf encoding of CompiledRule; a
// difference (an older peer) only costs a larger delta, never a wrong state.
//
// Thread safety: pure functions.
#pragma once

#include <string>
#include <vector>

#include "dfw/v1/compiled.pb.h"

namespace dfw::proto {

inline constexpr size_t kDigestBytes = 32;

// The bytes rulesets with the same rules share (also the dataplane's key for
// sharing one compiled ruleset between vNICs).
std::string RulesetContentKey(const v1::VNicRuleset& rs);
std::string RulesetDigest(const v1::VNicRuleset& rs);
std::string AddressSetDigest(const v1::AddressSet& set);
std::string AddressSetDigest(const std::string& id, const std::vector<std::string>& prefixes);

}  // namespace dfw::proto
