// Authorization: who may call what on the controller, in one table.
//
// What. Every gRPC method and REST route maps to one Permission
// (PermissionForGrpc / PermissionForRest, the table docs/architecture.md
// shows); Authorizer decides whether a caller holds it. The caller is the
// SPIFFE ID of the client certificate the TLS handshake verified against
// the controller's trust bundle; Authorizer then checks the leaf itself
// (exactly one spiffe:// URI SAN in our trust domain, not a CA, clientAuth
// usage, not revoked) and the identity's kind and role:
//
//   kEnroll       anyone, no certificate needed (the join token is the proof)
//   kSelf         any valid identity, acting on itself (Renew)
//   kRead         users: viewer, editor or admin
//   kWrite        users: editor or admin
//   kAdmin        users: admin
//   kHostSession  hosts (spiffe://<td>/host/<id>) and guest agents
//                 (spiffe://<td>/vm/<uuid>); the session then checks that
//                 the Hello's host id is the certificate's host id, or
//                 "guest:<uuid>" reporting exactly that VM
//   kDeny         nobody (a method missing from the table)
//
// Per-object checks stay where the object is known (the host session: a
// host speaks only for itself; Renew: a certificate only for the same ID).
//
// An insecure Authorizer (the explicit, loopback-only --insecure mode)
// treats every caller as "local:insecure" with every permission.
//
// Codes: UNAUTHENTICATED when there is no acceptable identity (no
// certificate, a bad or revoked one), PERMISSION_DENIED when the identity
// is fine but lacks the permission.
//
// Thread safety: Authorizer and RevocationList are safe from any thread.
#pragma once

#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_set>

#include "absl/status/statusor.h"
#include "dfw/trust/peer.h"

namespace dfw::controller {

enum class Permission { kEnroll, kSelf, kRead, kWrite, kAdmin, kHostSession, kDeny };
const char* PermissionName(Permission p);

// Full gRPC method name ("/dfw.v1.ControllerService/PutVm") -> permission.
Permission PermissionForGrpc(std::string_view method);
// HTTP method and path ("POST", "/api/v1/policies") -> permission.
Permission PermissionForRest(std::string_view method, std::string_view path);

class RevocationList {
 public:
  bool IsRevoked(const std::string& serial) const;
  void Add(const std::string& serial);

 private:
  mutable std::shared_mutex mu_;
  std::unordered_set<std::string> serials_;
};

struct Caller {
  std::string actor;                        // SPIFFE ID, or "local:insecure", or "" (anonymous)
  std::optional<trust::PeerIdentity> peer;  // absent: no certificate (or insecure)
  bool insecure = false;
};

class Authorizer {
 public:
  static Authorizer Insecure();
  Authorizer(std::string trust_domain, const RevocationList* revoked);

  // The caller of a verified TLS peer whose leaf is `leaf_pem` (empty: the
  // peer sent no certificate, an anonymous caller).
  absl::StatusOr<Caller> Identify(std::string_view leaf_pem) const;
  absl::Status Allow(const Caller& caller, Permission p) const;
  absl::StatusOr<Caller> Authorize(std::string_view leaf_pem, Permission p) const;
  // Still acceptable now (long-lived streams re-check: expiry, revocation).
  absl::Status StillValid(const Caller& caller) const;

  bool insecure() const { return insecure_; }
  const std::string& trust_domain() const { return trust_domain_; }

 private:
  Authorizer() = default;
  bool insecure_ = false;
  std::string trust_domain_;
  const RevocationList* revoked_ = nullptr;
};

}  // namespace dfw::controller
