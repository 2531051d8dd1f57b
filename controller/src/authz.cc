#include "dfw/controller/authz.h"

#include <array>
#include <mutex>
#include <utility>

#include "str_util.h"

namespace dfw::controller {

const char* PermissionName(Permission p) {
  switch (p) {
    case Permission::kEnroll:
      return "enroll";
    case Permission::kSelf:
      return "self";
    case Permission::kRead:
      return "read";
    case Permission::kWrite:
      return "write";
    case Permission::kAdmin:
      return "admin";
    case Permission::kHostSession:
      return "host-session";
    case Permission::kDeny:
      return "deny";
  }
  return "deny";
}

namespace {

struct GrpcEntry {
  std::string_view method;
  Permission permission;
};

// The gRPC half of the table in docs/architecture.md ("Who may call what").
// A method missing here is denied to everyone.
constexpr std::array kGrpcTable = {
    GrpcEntry{"/dfw.v1.ControllerService/GetVm", Permission::kRead},
    GrpcEntry{"/dfw.v1.ControllerService/ListVms", Permission::kRead},
    GrpcEntry{"/dfw.v1.ControllerService/VmGroups", Permission::kRead},
    GrpcEntry{"/dfw.v1.ControllerService/EffectiveRules", Permission::kRead},
    GrpcEntry{"/dfw.v1.ControllerService/Trace", Permission::kRead},
    GrpcEntry{"/dfw.v1.ControllerService/GetGroup", Permission::kRead},
    GrpcEntry{"/dfw.v1.ControllerService/ListGroups", Permission::kRead},
    GrpcEntry{"/dfw.v1.ControllerService/GroupMembers", Permission::kRead},
    GrpcEntry{"/dfw.v1.ControllerService/GetPolicy", Permission::kRead},
    GrpcEntry{"/dfw.v1.ControllerService/ListPolicies", Permission::kRead},
    GrpcEntry{"/dfw.v1.ControllerService/ListHosts", Permission::kRead},
    GrpcEntry{"/dfw.v1.ControllerService/Realization", Permission::kRead},
    GrpcEntry{"/dfw.v1.ControllerService/Watch", Permission::kRead},
    GrpcEntry{"/dfw.v1.ControllerService/PutVm", Permission::kWrite},
    GrpcEntry{"/dfw.v1.ControllerService/DeleteVm", Permission::kWrite},
    GrpcEntry{"/dfw.v1.ControllerService/Tag", Permission::kWrite},
    GrpcEntry{"/dfw.v1.ControllerService/PutGroup", Permission::kWrite},
    GrpcEntry{"/dfw.v1.ControllerService/DeleteGroup", Permission::kWrite},
    GrpcEntry{"/dfw.v1.ControllerService/PutPolicy", Permission::kWrite},
    // The preview is authorized as the change it previews (as Kubernetes'
    // dry run is): it shows what a writer is about to do.
    GrpcEntry{"/dfw.v1.ControllerService/PreviewPolicy", Permission::kWrite},
    // Sends a packet from a VM's port (with inject): an operator's act.
    GrpcEntry{"/dfw.v1.ControllerService/ProbeFlow", Permission::kWrite},
    GrpcEntry{"/dfw.v1.ControllerService/PreviewGroup", Permission::kWrite},
    GrpcEntry{"/dfw.v1.ControllerService/PreviewTag", Permission::kWrite},
    GrpcEntry{"/dfw.v1.ControllerService/DeletePolicy", Permission::kWrite},
    GrpcEntry{"/dfw.v1.ControllerService/DeleteHost", Permission::kAdmin},
    GrpcEntry{"/dfw.v1.ControllerService/ListExclusions", Permission::kRead},
    GrpcEntry{"/dfw.v1.ControllerService/AddExclusion", Permission::kAdmin},
    GrpcEntry{"/dfw.v1.ControllerService/DeleteExclusion", Permission::kAdmin},
    GrpcEntry{"/dfw.v1.HostSessionService/Session", Permission::kHostSession},
    GrpcEntry{"/dfw.v1.TrustService/Enroll", Permission::kEnroll},
    GrpcEntry{"/dfw.v1.TrustService/Renew", Permission::kSelf},
    GrpcEntry{"/dfw.v1.TrustService/CreateJoinToken", Permission::kAdmin},
    GrpcEntry{"/dfw.v1.TrustService/ListCertificates", Permission::kAdmin},
    GrpcEntry{"/dfw.v1.TrustService/RevokeCertificate", Permission::kAdmin},
};

bool StartsWith(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

trust::Role MinRole(Permission p) {
  switch (p) {
    case Permission::kRead:
      return trust::Role::kViewer;
    case Permission::kWrite:
      return trust::Role::kEditor;
    case Permission::kAdmin:
      return trust::Role::kAdmin;
    default:
      return trust::Role::kNone;
  }
}

}  // namespace

Permission PermissionForGrpc(std::string_view method) {
  for (const auto& e : kGrpcTable) {
    if (e.method == method) return e.permission;
  }
  return Permission::kDeny;
}

Permission PermissionForRest(std::string_view method, std::string_view path) {
  // The REST half of the table: trust routes first, then reads and writes.
  if (path == "/api/v1/enroll") return method == "POST" ? Permission::kEnroll : Permission::kDeny;
  if (path == "/api/v1/renew") return method == "POST" ? Permission::kSelf : Permission::kDeny;
  if (StartsWith(path, "/api/v1/join-tokens") || StartsWith(path, "/api/v1/certificates")) {
    return Permission::kAdmin;
  }
  if (method == "DELETE" && StartsWith(path, "/api/v1/hosts/")) return Permission::kAdmin;
  // The exclusion list turns the firewall off for a vNIC: an admin's call.
  if (StartsWith(path, "/api/v1/exclusions") && method != "GET" && method != "HEAD") {
    return Permission::kAdmin;
  }
  // Metrics: counts and sizes, no object names (per-host series name hosts,
  // which ListHosts shows a viewer too).
  if (path == "/metrics") return method == "GET" ? Permission::kRead : Permission::kDeny;
  if (method == "GET" || method == "HEAD") return Permission::kRead;
  if (method == "POST" || method == "PUT" || method == "DELETE" || method == "PATCH") {
    return Permission::kWrite;
  }
  return Permission::kDeny;
}

bool RevocationList::IsRevoked(const std::string& serial) const {
  std::shared_lock l(mu_);
  return serials_.count(serial) > 0;
}

void RevocationList::Add(const std::string& serial) {
  std::unique_lock l(mu_);
  serials_.insert(serial);
}

Authorizer Authorizer::Insecure() {
  Authorizer a;
  a.insecure_ = true;
  return a;
}

Authorizer::Authorizer(std::string trust_domain, const RevocationList* revoked)
    : trust_domain_(std::move(trust_domain)), revoked_(revoked) {}

absl::StatusOr<Caller> Authorizer::Identify(std::string_view leaf_pem) const {
  Caller c;
  if (insecure_) {
    c.actor = "local:insecure";
    c.insecure = true;
    return c;
  }
  if (leaf_pem.empty()) return c;  // anonymous: may only enroll
  auto peer = trust::InspectLeaf(leaf_pem, trust_domain_);
  if (!peer.ok()) return absl::UnauthenticatedError(Cat("certificate: ", peer.status().message()));
  c.actor = peer->id.ToString();
  c.peer = std::move(*peer);
  if (auto s = StillValid(c); !s.ok()) return s;
  return c;
}

absl::Status Authorizer::StillValid(const Caller& c) const {
  if (c.insecure || !c.peer) return absl::OkStatus();
  if (revoked_ && revoked_->IsRevoked(c.peer->serial_hex)) {
    return absl::UnauthenticatedError(
        Cat("certificate: serial ", c.peer->serial_hex, " of ", c.actor, " is revoked"));
  }
  if (trust::Clock::now() > c.peer->not_after) {
    return absl::UnauthenticatedError(Cat("certificate: ", c.actor, " has expired"));
  }
  return absl::OkStatus();
}

absl::Status Authorizer::Allow(const Caller& c, Permission p) const {
  if (c.insecure) return absl::OkStatus();
  if (p == Permission::kEnroll) return absl::OkStatus();
  if (p == Permission::kDeny) return absl::PermissionDeniedError("no identity may call this");
  if (!c.peer) {
    return absl::UnauthenticatedError(
        "certificate: none presented; this call needs a client certificate of the controller's "
        "trust domain (enroll with a join token first)");
  }
  const trust::PeerIdentity& id = *c.peer;
  switch (p) {
    case Permission::kSelf:
      return absl::OkStatus();
    case Permission::kHostSession:
      // Hosts, and guest agents for their own VM (the session checks ids).
      if (id.id.kind == trust::IdKind::kHost || id.id.kind == trust::IdKind::kVm) {
        return absl::OkStatus();
      }
      return absl::PermissionDeniedError(Cat(c.actor, " is not a host or VM identity (spiffe://",
                                             trust_domain_, "/host/<id> or /vm/<uuid>)"));
    default:
      break;
  }
  if (id.id.kind != trust::IdKind::kUser) {
    return absl::PermissionDeniedError(
        Cat(c.actor, " is not a user identity; only users call the API (", PermissionName(p), ")"));
  }
  if (static_cast<int>(id.role) < static_cast<int>(MinRole(p))) {
    return absl::PermissionDeniedError(Cat(c.actor, " has role ", trust::RoleName(id.role),
                                           "; this call needs ", trust::RoleName(MinRole(p))));
  }
  return absl::OkStatus();
}

absl::StatusOr<Caller> Authorizer::Authorize(std::string_view leaf_pem, Permission p) const {
  auto c = Identify(leaf_pem);
  if (!c.ok()) return c.status();
  if (auto s = Allow(*c, p); !s.ok()) return s;
  return c;
}

}  // namespace dfw::controller
