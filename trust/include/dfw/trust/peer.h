// Peer checks: who a TLS peer is, from the leaf certificate the handshake
// presented, and offline chain verification.
//
// What. InspectLeaf is what every server calls after the TLS library has
// verified the peer's chain and dates against the trust bundle: it turns the
// leaf into a PeerIdentity (SPIFFE ID, role, serial, dates) or refuses it.
// It refuses (absl::UnauthenticatedError; the message gives the reason):
//   - a leaf that is a CA (basicConstraints CA:TRUE),
//   - not exactly one URI SAN,
//   - a URI SAN that is not a valid SPIFFE ID of this product (spiffe_id.h),
//   - an ID in another trust domain,
//   - no clientAuth extended key usage (when require_client_auth; an absent
//     EKU extension counts as none),
//   - a subject OU that is not a known role, more than one OU, or a role on
//     an ID that is not a user.
// It does not check the chain or dates again: VerifyChain does that offline
// (tools and tests), with the same result OpenSSL's handshake would give.
//
// How. OpenSSL 3; cert_pem may hold a chain, the first certificate is the
// leaf. Errors for unparsable input are InvalidArgument.
//
// Thread safety: pure functions; safe from any thread.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "dfw/trust/ca.h"
#include "dfw/trust/spiffe_id.h"

namespace dfw::trust {

struct PeerIdentity {
  SpiffeId id;
  Role role = Role::kNone;
  std::string serial_hex;  // as Issued::serial_hex
  Clock::time_point not_before, not_after;
};

absl::StatusOr<PeerIdentity> InspectLeaf(std::string_view cert_pem, std::string_view trust_domain,
                                         bool require_client_auth = true);

// Full offline verification: the chain from cert_pem's first certificate to
// one of bundle_pem's (any further certificates in cert_pem are offered as
// intermediates), every date checked at `at`. UnauthenticatedError with
// OpenSSL's verify error text ("certificate has expired", ...) on failure.
absl::Status VerifyChain(std::string_view cert_pem, std::string_view bundle_pem,
                         Clock::time_point at = Clock::now());

// The SPIFFE ID of cert_pem's first certificate (a process's own SVID: which
// trust domain it belongs to). No other check; InvalidArgument when it does
// not carry exactly one valid SPIFFE ID.
absl::StatusOr<SpiffeId> SpiffeIdOf(std::string_view cert_pem);

absl::StatusOr<Clock::time_point> NotAfter(std::string_view cert_pem);
absl::StatusOr<Clock::time_point> NotBefore(std::string_view cert_pem);

}  // namespace dfw::trust
