// Revalidate-on-change for the guest: after a new ruleset is in force, cut
// the connections that a rule of a revalidating policy admitted (their ct
// mark is its rule_num, nft_ruleset.h) and that the rules now in force no
// longer allow. The next packet of such a connection is classified as new
// and meets the new rules. Connections admitted by KEEP policies stay, as
// in the dataplane.
//
// A connection's vNIC and direction come from the guest's own addresses:
// original source local = OUT on that vNIC, original destination local = IN.
// Entries of no local address (forwarded traffic) are left alone.
//
// Thread safety: runs on the calling thread, in its network namespace;
// `applied` must not change meanwhile (the agent holds its lock).
#pragma once

#include <cstddef>
#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "dfw/v1/compiled.pb.h"
#include "dfw/vmagent/nft_backend.h"

namespace dfw::vmagent {

// `before`: the state the connections were admitted under; `applied`: the
// backend holding the state now in force; `local_addresses`: address text
// -> vNIC id. Returns how many entries were deleted.
//
// Judged again, as the dataplane does: connections of a rule of `before`
// whose policy revalidates, and connections the default rule admitted
// (kDefaultAllowMark: no policy, so nothing asks to keep them). A
// connection whose mark names no rule of `before` was kept when its rule
// went, and stays. `all`: every marked connection (the end of
// --audit-first).
absl::StatusOr<size_t> RevalidateConnections(
    const dfw::v1::HostDesiredState& before, const NftBackend& applied,
    const std::map<std::string, std::string>& local_addresses, bool audit_all = false,
    bool all = false);

}  // namespace dfw::vmagent
