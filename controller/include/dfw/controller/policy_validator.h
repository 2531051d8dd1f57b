// Policy validation at the edge: every field of a Policy and its Rules, with
// errors that name the field the way an operator wrote it:
//   "rules[2].services[0].destination_ports[0].last: 70000 is above 65535"
//
// Checks: id syntax (the one id rule, tagging::ValidateId); category set; rule ids present and
// unique; action set; endpoints either `any` or a non-empty list of groups / prefixes; services
// (protocol 0..255, ports only for TCP/UDP/SCTP, first <= last <= 65535,
// ICMP type/code only for ICMP/ICMPv6, code needs type, both <= 255);
// prefixes canonical (tagging::IpPrefix); every referenced group exists (the
// caller passes the lookup); sizes (the limits below: "rules: 1001 rules;
// at most 1000"); names printable UTF-8.
//
// Thread safety: a pure function.
#pragma once

#include <cstddef>
#include <functional>
#include <string_view>

#include "absl/status/status.h"
#include "dfw/v1/model.pb.h"

namespace dfw::controller {

// Limits on one policy, for REST and gRPC alike (both call ValidatePolicy).
// A policy's compiled rules are pushed to every host in its span, so one
// request must not be able to make that unbounded.
inline constexpr size_t kMaxRulesPerPolicy = 1000;
inline constexpr size_t kMaxServicesPerRule = 64;
inline constexpr size_t kMaxPortRangesPerService = 64;   // each of source_ports, destination_ports
inline constexpr size_t kMaxGroupsPerEndpoint = 256;     // group_ids; also applied_to_group_ids
inline constexpr size_t kMaxPrefixesPerEndpoint = 4096;  // ip_prefixes of sources / destinations

using GroupExists = std::function<bool(std::string_view group_id)>;

// INVALID_ARGUMENT naming the field, or OK.
absl::Status ValidatePolicy(const dfw::v1::Policy& policy, const GroupExists& group_exists);

// The id rule (tagging::ValidateId, shared by VMs, vNICs, groups, policies,
// rules and hosts): 1..128 chars of [A-Za-z0-9_.:-], not "." or "..".
absl::Status ValidateObjectId(std::string_view id, std::string_view field);

}  // namespace dfw::controller
