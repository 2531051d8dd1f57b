// SpiffeId: who a certificate says its holder is, as a SPIFFE ID
// ("spiffe://<trust domain>/<kind>/<name>"), and Role: what a user may do.
//
// What. Every workload of the product carries exactly one SPIFFE ID in the URI
// SAN of its X.509 certificate (an X.509-SVID): the controller
// (spiffe://td/controller/<node>), each host agent (…/host/<hostname>), a VM
// (…/vm/<uuid>) and each operator (…/user/<name>). Users also carry a Role in
// the certificate subject's OU; a higher role includes every lower one
// (admin ⊃ editor ⊃ viewer).
//
// How. The grammar is the SPIFFE spec's, narrowed to what this product issues,
// so that one parser is also the authorization check: a trust domain is 1..255
// characters of [a-z0-9.-_] (lower case, no port, no userinfo); the path is
// exactly two non-empty segments, a known kind and a name of 1..128 characters
// of [A-Za-z0-9._-] other than "." and "..". No query, fragment or
// percent-encoding. ParseSpiffeId refuses anything else with an
// InvalidArgument whose message names the part that is wrong (scheme, query,
// fragment, percent-encoding, userinfo, port, trust domain, path, kind, name).
//
// Thread safety: plain values and pure functions; safe from any thread.
#pragma once

#include <compare>
#include <ostream>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace dfw::trust {

// The path's first segment: controller, host, vm, user.
enum class IdKind { kController, kHost, kVm, kUser };

struct SpiffeId {
  std::string trust_domain;
  IdKind kind = IdKind::kHost;
  std::string name;

  // "spiffe://<trust_domain>/<kind>/<name>".
  std::string ToString() const;
  bool operator==(const SpiffeId&) const = default;
};
void PrintTo(const SpiffeId& id, std::ostream* os);

absl::StatusOr<SpiffeId> ParseSpiffeId(std::string_view uri);
absl::Status ValidateTrustDomain(std::string_view td);
absl::Status ValidateIdName(std::string_view name);

// "controller", "host", "vm", "user".
const char* IdKindName(IdKind kind);
// The inverse of IdKindName.
absl::StatusOr<IdKind> ParseIdKind(std::string_view text);

// Users only. Ordered: a higher role includes the lower ones (compare with <).
enum class Role { kNone, kViewer, kEditor, kAdmin };
// "none", "viewer", "editor", "admin".
const char* RoleName(Role role);
// "viewer", "editor" or "admin"; anything else (including "" and "none") is an error.
absl::StatusOr<Role> ParseRole(std::string_view text);

}  // namespace dfw::trust
