#include "dfw/trust/spiffe_id.h"

#include <vector>

#include "absl/strings/escaping.h"
#include "str_cat.h"

namespace dfw::trust {

using internal::Cat;
namespace {

constexpr size_t kMaxTrustDomain = 255;
constexpr size_t kMaxName = 128;
constexpr std::string_view kScheme = "spiffe://";

// Input echoed in a message: escaped, and cut short if huge.
std::string Quote(std::string_view s) {
  constexpr size_t kMax = 300;
  std::string out = "'";
  out += absl::CHexEscape(internal::AsAbsl(s.substr(0, kMax)));
  if (s.size() > kMax) out += "...";
  out += "'";
  return out;
}

std::string CharAt(std::string_view s, size_t i) {
  return Cat(Quote(s.substr(i, 1)), " at position ", i);
}

}  // namespace

std::string SpiffeId::ToString() const {
  return Cat(kScheme, trust_domain, "/", IdKindName(kind), "/", name);
}

void PrintTo(const SpiffeId& id, std::ostream* os) { *os << id.ToString(); }

absl::Status ValidateTrustDomain(std::string_view td) {
  if (td.empty()) return absl::InvalidArgumentError("trust domain is empty");
  if (td.size() > kMaxTrustDomain) {
    return absl::InvalidArgumentError(Cat("trust domain ", Quote(td), " is ", td.size(),
                                          " characters; at most ", kMaxTrustDomain));
  }
  for (size_t i = 0; i < td.size(); ++i) {
    char c = td[i];
    if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_') {
      continue;
    }
    if (c >= 'A' && c <= 'Z') {
      return absl::InvalidArgumentError(Cat("trust domain ", Quote(td), ": upper-case ",
                                            CharAt(td, i),
                                            " (SPIFFE trust domains are lower case)"));
    }
    return absl::InvalidArgumentError(Cat("trust domain ", Quote(td), ": character ", CharAt(td, i),
                                          " is not allowed (only a-z 0-9 . - _)"));
  }
  return absl::OkStatus();
}

absl::Status ValidateIdName(std::string_view name) {
  if (name.empty()) return absl::InvalidArgumentError("name is empty");
  if (name.size() > kMaxName) {
    return absl::InvalidArgumentError(
        Cat("name ", Quote(name), " is ", name.size(), " characters; at most ", kMaxName));
  }
  if (name == "." || name == "..") {
    return absl::InvalidArgumentError(Cat("name ", Quote(name), " is not allowed"));
  }
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
        c == '-' || c == '_') {
      continue;
    }
    return absl::InvalidArgumentError(Cat("name ", Quote(name), ": character ", CharAt(name, i),
                                          " is not allowed (only A-Z a-z 0-9 . - _)"));
  }
  return absl::OkStatus();
}

const char* IdKindName(IdKind kind) {
  switch (kind) {
    case IdKind::kController:
      return "controller";
    case IdKind::kHost:
      return "host";
    case IdKind::kVm:
      return "vm";
    case IdKind::kUser:
      return "user";
  }
  return "unknown";
}

absl::StatusOr<IdKind> ParseIdKind(std::string_view text) {
  for (IdKind k : {IdKind::kController, IdKind::kHost, IdKind::kVm, IdKind::kUser}) {
    if (text == IdKindName(k)) return k;
  }
  return absl::InvalidArgumentError(
      Cat("kind ", Quote(text), " is not one of controller, host, vm, user"));
}

absl::StatusOr<SpiffeId> ParseSpiffeId(std::string_view uri) {
  auto bad = [&](const auto& why) {
    return absl::InvalidArgumentError(Cat("SPIFFE ID ", Quote(uri), ": ", why));
  };
  if (uri.empty()) return bad("empty");
  if (!uri.starts_with(kScheme)) {
    return bad("scheme: must start with 'spiffe://' (lower case)");
  }
  std::string_view rest = uri.substr(kScheme.size());
  if (rest.find('?') != std::string_view::npos) return bad("query ('?') is not allowed");
  if (rest.find('#') != std::string_view::npos) return bad("fragment ('#') is not allowed");
  if (rest.find('%') != std::string_view::npos) {
    return bad("percent-encoding ('%') is not allowed");
  }
  size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  if (authority.find('@') != std::string_view::npos) {
    return bad("userinfo ('@' in the trust domain) is not allowed");
  }
  if (authority.find(':') != std::string_view::npos) {
    return bad("port (':' in the trust domain) is not allowed");
  }
  if (auto s = ValidateTrustDomain(authority); !s.ok()) return bad(s.message());
  if (slash == std::string_view::npos) return bad("path is missing (expected /<kind>/<name>)");
  std::vector<std::string_view> segs;
  for (std::string_view path = rest.substr(slash + 1);;) {
    size_t next = path.find('/');
    segs.push_back(path.substr(0, next));
    if (next == std::string_view::npos) break;
    path.remove_prefix(next + 1);
  }
  for (size_t i = 0; i < segs.size(); ++i) {
    if (segs[i].empty()) {
      return bad(Cat("path segment ", i + 1, " is empty (expected /<kind>/<name>)"));
    }
  }
  if (segs.size() != 2) {
    return bad(Cat("path has ", segs.size(), " segments; expected exactly 2 (/<kind>/<name>)"));
  }
  auto kind = ParseIdKind(segs[0]);
  if (!kind.ok()) return bad(kind.status().message());
  if (auto s = ValidateIdName(segs[1]); !s.ok()) return bad(s.message());
  return SpiffeId{std::string(authority), *kind, std::string(segs[1])};
}

const char* RoleName(Role role) {
  switch (role) {
    case Role::kNone:
      return "none";
    case Role::kViewer:
      return "viewer";
    case Role::kEditor:
      return "editor";
    case Role::kAdmin:
      return "admin";
  }
  return "unknown";
}

absl::StatusOr<Role> ParseRole(std::string_view text) {
  for (Role r : {Role::kViewer, Role::kEditor, Role::kAdmin}) {
    if (text == RoleName(r)) return r;
  }
  return absl::InvalidArgumentError(
      Cat("role ", Quote(text), " is not one of viewer, editor, admin"));
}

}  // namespace dfw::trust
