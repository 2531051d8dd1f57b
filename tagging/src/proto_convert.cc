#include "dfw/tagging/proto_convert.h"

#include <algorithm>
#include <cctype>
#include <set>

#include "dfw/tagging/str_cat.h"

namespace dfw::tagging {
namespace {

constexpr size_t kMaxIdLen = 128;
constexpr size_t kMaxScopeLen = 128;
constexpr size_t kMaxValueLen = 256;
constexpr size_t kMaxNameLen = 256;

absl::Status FieldError(std::string_view field, std::string_view what) {
  return absl::InvalidArgumentError(Cat(field, ": ", what));
}

bool IsIdChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' ||
         c == ':';
}

}  // namespace

absl::Status ValidateId(std::string_view id, std::string_view field) {
  if (id.empty()) return FieldError(field, "must not be empty");
  if (id.size() > kMaxIdLen)
    return FieldError(field, Cat("longer than ", kMaxIdLen, " characters"));
  if (id == "." || id == "..") return FieldError(field, Cat("'", id, "' is not an id"));
  for (size_t i = 0; i < id.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(id[i]);
    if (IsIdChar(static_cast<char>(c))) continue;
    // Never echo a byte that is not printable ASCII: the id may not even be
    // UTF-8, and the message goes into JSON.
    if (c >= 0x20 && c < 0x7f) {
      return FieldError(field,
                        Cat("'", id, "' has character '", std::string(1, static_cast<char>(c)),
                            "'; use letters, digits, '-', '_', '.', ':'"));
    }
    static constexpr char kHex[] = "0123456789abcdef";
    return FieldError(field,
                      Cat("has byte 0x", std::string{kHex[c >> 4], kHex[c & 15]}, " at offset ", i,
                          "; ids are ASCII letters, digits, '-', '_', '.', ':'"));
  }
  return absl::OkStatus();
}

namespace {}  // namespace

bool IsUtf8(std::string_view s) {
  static constexpr uint32_t kMin[] = {0, 0x80, 0x800, 0x10000};
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 0 : (c >> 5) == 0x6 ? 1 : (c >> 4) == 0xe ? 2 : (c >> 3) == 0x1e ? 3 : 4;
    if (n == 4 || n > s.size() - 1 - i) return false;  // a bad lead byte, or cut short
    uint32_t cp = n == 0 ? c : c & (0x3f >> n);
    for (size_t k = 1; k <= n; ++k) {
      unsigned char d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3f);
    }
    if (cp < kMin[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += n + 1;
  }
  return true;
}

namespace {

absl::Status ValidatePrintable(std::string_view s, size_t max, std::string_view field,
                               bool allow_empty) {
  if (!allow_empty && s.empty()) return FieldError(field, "must not be empty");
  if (s.size() > max) return FieldError(field, Cat("longer than ", max, " characters"));
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) return FieldError(field, "contains a control character");
  }
  if (!IsUtf8(s)) return FieldError(field, "is not valid UTF-8");
  return absl::OkStatus();
}

absl::Status CheckNoUnknownFields(const google::protobuf::Message& m, std::string_view field) {
  const auto& unknown = m.GetReflection()->GetUnknownFields(m);
  if (!unknown.empty()) {
    return FieldError(field.empty() ? std::string_view("message") : field,
                      Cat("unknown field number ", unknown.field(0).number()));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ParseMac(std::string_view mac, std::string_view field) {
  std::string out = AsciiLower(mac);
  bool ok = out.size() == 17;
  for (size_t i = 0; ok && i < out.size(); ++i) {
    ok = (i % 3 == 2) ? out[i] == ':' : std::isxdigit(static_cast<unsigned char>(out[i]));
  }
  if (!ok) return FieldError(field, Cat("'", mac, "' is not a MAC like 52:54:00:ab:cd:ef"));
  return out;
}

absl::StatusOr<StringMatch> MatchFromProto(const dfw::v1::StringMatch& m, std::string_view field) {
  StringMatch out;
  switch (m.op()) {
    case dfw::v1::STRING_OP_EQUALS:
      out.op = StringOp::kEquals;
      break;
    case dfw::v1::STRING_OP_STARTS_WITH:
      out.op = StringOp::kStartsWith;
      break;
    case dfw::v1::STRING_OP_ENDS_WITH:
      out.op = StringOp::kEndsWith;
      break;
    case dfw::v1::STRING_OP_CONTAINS:
      out.op = StringOp::kContains;
      break;
    default:
      return FieldError(Cat(field, ".op"), "must be EQUALS, STARTS_WITH, ENDS_WITH or CONTAINS");
  }
  if (auto s = ValidatePrintable(m.value(), kMaxNameLen, Cat(field, ".value"), false); !s.ok()) {
    return s;
  }
  out.value = AsciiLower(m.value());
  return out;
}

}  // namespace

absl::Status ValidateTag(const dfw::v1::Tag& tag, std::string_view field) {
  if (tag.scope().empty() && tag.value().empty()) {
    return FieldError(field, "a tag needs a scope or a value");
  }
  if (tag.scope().size() > kMaxScopeLen) {
    return FieldError(Cat(field, ".scope"), Cat("longer than ", kMaxScopeLen));
  }
  for (char c : tag.scope()) {
    if (!IsIdChar(c) || c == ':') {
      return FieldError(Cat(field, ".scope"),
                        Cat("'", tag.scope(), "' has character '", std::string(1, c),
                            "'; use letters, digits, '-', '_', '.'"));
    }
  }
  return ValidatePrintable(tag.value(), kMaxValueLen, Cat(field, ".value"), true);
}

absl::StatusOr<Tag> ParseTagText(std::string_view text) {
  size_t eq = text.find('=');
  dfw::v1::Tag t;
  if (eq == std::string_view::npos) {
    t.set_scope(std::string(text));
  } else {
    t.set_scope(std::string(text.substr(0, eq)));
    t.set_value(std::string(text.substr(eq + 1)));
  }
  if (auto s = ValidateTag(t, Cat("tag '", text, "'")); !s.ok()) return s;
  return Tag{t.scope(), t.value()};
}

absl::StatusOr<VmSpec> VmFromProto(const dfw::v1::Vm& vm) {
  if (auto s = CheckNoUnknownFields(vm, "vm"); !s.ok()) return s;
  VmSpec out;
  if (auto s = ValidateId(vm.id(), "id"); !s.ok()) return s;
  if (auto s = ValidatePrintable(vm.name(), kMaxNameLen, "name", true); !s.ok()) return s;
  if (auto s = ValidatePrintable(vm.guest().os(), kMaxNameLen, "guest.os", true); !s.ok()) return s;
  if (auto s = ValidatePrintable(vm.guest().hostname(), kMaxNameLen, "guest.hostname", true);
      !s.ok()) {
    return s;
  }
  out.id = vm.id();
  out.name = vm.name();
  out.host = vm.host();
  out.guest_os = vm.guest().os();
  out.hostname = vm.guest().hostname();
  for (int i = 0; i < vm.tags_size(); ++i) {
    if (auto s = ValidateTag(vm.tags(i), Cat("tags[", i, "]")); !s.ok()) return s;
    out.tags.push_back({vm.tags(i).scope(), vm.tags(i).value()});
  }
  std::sort(out.tags.begin(), out.tags.end());
  out.tags.erase(std::unique(out.tags.begin(), out.tags.end()), out.tags.end());

  std::set<std::string> vnic_ids;
  for (int i = 0; i < vm.vnics_size(); ++i) {
    const auto& n = vm.vnics(i);
    std::string f = Cat("vnics[", i, "]");
    VNicSpec v;
    if (auto s = ValidateId(n.id(), f + ".id"); !s.ok()) return s;
    if (!vnic_ids.insert(n.id()).second) {
      return FieldError(f + ".id", Cat("'", n.id(), "' appears twice in this VM"));
    }
    v.id = n.id();
    if (!n.mac().empty()) {
      auto mac = ParseMac(n.mac(), f + ".mac");
      if (!mac.ok()) return mac.status();
      v.mac = *mac;
    }
    for (int j = 0; j < n.addresses_size(); ++j) {
      // A quarantined address (a guest's claim another VM holds,
      // model.proto) belongs to no group.
      if (n.addresses(j).quarantined()) continue;
      auto ip = IpPrefix::ParseAddress(n.addresses(j).ip());
      if (!ip.ok()) {
        return FieldError(Cat(f, ".addresses[", j, "].ip"), std::string(ip.status().message()));
      }
      v.addresses.push_back(*ip);
    }
    std::sort(v.addresses.begin(), v.addresses.end());
    v.addresses.erase(std::unique(v.addresses.begin(), v.addresses.end()), v.addresses.end());
    out.vnics.push_back(std::move(v));
  }
  return out;
}

absl::StatusOr<GroupSpec> GroupFromProto(const dfw::v1::SecurityGroup& g) {
  if (auto s = CheckNoUnknownFields(g, "group"); !s.ok()) return s;
  GroupSpec out;
  if (auto s = ValidateId(g.id(), "id"); !s.ok()) return s;
  if (auto s = ValidatePrintable(g.display_name(), kMaxNameLen, "display_name", true); !s.ok()) {
    return s;
  }
  out.id = g.id();
  out.display_name = g.display_name();
  const auto& sm = g.static_members();
  for (int i = 0; i < sm.vm_ids_size(); ++i) {
    if (auto s = ValidateId(sm.vm_ids(i), Cat("static_members.vm_ids[", i, "]")); !s.ok()) {
      return s;
    }
    out.static_vms.push_back(sm.vm_ids(i));
  }
  for (int i = 0; i < sm.vnic_ids_size(); ++i) {
    if (auto s = ValidateId(sm.vnic_ids(i), Cat("static_members.vnic_ids[", i, "]")); !s.ok()) {
      return s;
    }
    out.static_vnics.push_back(sm.vnic_ids(i));
  }
  for (int i = 0; i < sm.ip_prefixes_size(); ++i) {
    auto p = IpPrefix::Parse(sm.ip_prefixes(i));
    if (!p.ok()) {
      return FieldError(Cat("static_members.ip_prefixes[", i, "]"),
                        std::string(p.status().message()));
    }
    out.static_prefixes.push_back(*p);
  }
  for (int i = 0; i < sm.group_ids_size(); ++i) {
    std::string f = Cat("static_members.group_ids[", i, "]");
    if (auto s = ValidateId(sm.group_ids(i), f); !s.ok()) return s;
    if (sm.group_ids(i) == g.id()) return FieldError(f, "a group cannot include itself");
    out.included_groups.push_back(sm.group_ids(i));
  }
  for (auto* v : {&out.static_vms, &out.static_vnics, &out.included_groups}) {
    std::sort(v->begin(), v->end());
    v->erase(std::unique(v->begin(), v->end()), v->end());
  }
  std::sort(out.static_prefixes.begin(), out.static_prefixes.end());
  out.static_prefixes.erase(std::unique(out.static_prefixes.begin(), out.static_prefixes.end()),
                            out.static_prefixes.end());

  for (int i = 0; i < g.criteria_size(); ++i) {
    const auto& conj = g.criteria(i);
    std::string cf = Cat("criteria[", i, "]");
    if (conj.conditions_size() == 0) {
      return FieldError(cf + ".conditions", "a conjunction needs at least one condition");
    }
    Conjunction c;
    for (int j = 0; j < conj.conditions_size(); ++j) {
      const auto& pc = conj.conditions(j);
      std::string f = Cat(cf, ".conditions[", j, "]");
      Condition cond;
      switch (pc.kind_case()) {
        case dfw::v1::Condition::kTag: {
          if (auto s = ValidateTag(pc.tag(), f + ".tag"); !s.ok()) return s;
          cond.kind = pc.tag().value().empty() ? Condition::Kind::kTagScope : Condition::Kind::kTag;
          cond.tag = {pc.tag().scope(), pc.tag().value()};
          break;
        }
        case dfw::v1::Condition::kVmName: {
          auto m = MatchFromProto(pc.vm_name(), f + ".vm_name");
          if (!m.ok()) return m.status();
          cond.kind = Condition::Kind::kVmName;
          cond.match = *m;
          break;
        }
        case dfw::v1::Condition::kGuestOs: {
          auto m = MatchFromProto(pc.guest_os(), f + ".guest_os");
          if (!m.ok()) return m.status();
          cond.kind = Condition::Kind::kGuestOs;
          cond.match = *m;
          break;
        }
        case dfw::v1::Condition::kMemberOfGroup: {
          if (auto s = ValidateId(pc.member_of_group(), f + ".member_of_group"); !s.ok()) return s;
          if (pc.member_of_group() == g.id()) {
            return FieldError(f + ".member_of_group", "a group cannot test membership of itself");
          }
          cond.kind = Condition::Kind::kMemberOf;
          cond.group = pc.member_of_group();
          break;
        }
        default:
          return FieldError(f,
                            "empty condition: set one of tag, vm_name, guest_os, member_of_group");
      }
      c.push_back(std::move(cond));
    }
    out.criteria.push_back(std::move(c));
  }
  return out;
}

void MembersToProto(const GroupMembers& m, dfw::v1::GroupMembership* out) {
  out->set_group_id(m.group_id);
  for (const auto& v : m.vm_ids) out->add_vm_ids(v);
  for (const auto& v : m.vnic_ids) out->add_vnic_ids(v);
  for (const auto& a : m.addresses) out->add_addresses(a.ToString());
}

}  // namespace dfw::tagging
