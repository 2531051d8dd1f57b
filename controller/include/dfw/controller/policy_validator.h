// Policy validation at the edge: every field of a Policy and its Rules, with
// errors that name the field the way an operator wrote it:
//   "rules[2].services[0].destination_ports[0].last: 70000 is above 65535"
//
// Checks: id syntax; category set; rule ids present and unique; action set;
// endpoints either `any` or a non-empty list of groups / prefixes; services
// (protocol 0..255, ports only for TCP/UDP/SCTP, first <= last <= 65535,
// ICMP type/code only for ICMP/ICMPv6, code needs type, both <= 255);
// prefixes canonical (tagging::IpPrefix); every referenced group exists (the
// caller passes the lookup).
//
// Thread safety: a pure function.
#pragma once

#include <functional>
#include <string_view>

#include "absl/status/status.h"
#include "dfw/v1/model.pb.h"

namespace dfw::controller {

using GroupExists = std::function<bool(std::string_view group_id)>;

// INVALID_ARGUMENT naming the field, or OK.
absl::Status ValidatePolicy(const dfw::v1::Policy& policy, const GroupExists& group_exists);

// The id rule shared by groups and policies: [A-Za-z0-9_.:-], 1..128 chars.
absl::Status ValidateObjectId(std::string_view id, std::string_view field);

}  // namespace dfw::controller
