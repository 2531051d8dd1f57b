// The edge between the wire model (proto/dfw/v1/model.proto) and the engine's
// validated model (model.h).
//
// Every check names the field and what is wrong, in the form an API returns
// to an operator:  "criteria[1].conditions[0].tag.scope: must not be empty".
// Checks that need the engine's state (a referenced group exists, no cycle)
// are the engine's (membership_index.h); these are the ones a single message
// can fail on its own.
//
// Thread safety: pure functions.
#pragma once

#include "absl/status/statusor.h"
#include "dfw/tagging/membership_index.h"
#include "dfw/tagging/model.h"
#include "dfw/v1/model.pb.h"

namespace dfw::tagging {

absl::StatusOr<VmSpec> VmFromProto(const dfw::v1::Vm& vm);
absl::StatusOr<GroupSpec> GroupFromProto(const dfw::v1::SecurityGroup& group);

// The one id rule, for VMs, vNICs, groups, policies, rules and hosts (REST
// and gRPC alike): 1..128 characters of [A-Za-z0-9._:-], and not "." or ".."
// (an id is a REST path segment). INVALID_ARGUMENT naming `field`; a byte
// that is not printable ASCII is reported by offset, never echoed.
absl::Status ValidateId(std::string_view id, std::string_view field);

// Well-formed UTF-8 (no overlongs, surrogates or code points above U+10FFFF).
bool IsUtf8(std::string_view s);

// A tag as given in requests (also "scope=value" text from a CLI).
absl::Status ValidateTag(const dfw::v1::Tag& tag, std::string_view field);
absl::StatusOr<Tag> ParseTagText(std::string_view text);  // "scope=value"

void MembersToProto(const GroupMembers& members, dfw::v1::GroupMembership* out);

}  // namespace dfw::tagging
