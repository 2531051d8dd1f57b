#include "dfw/controller/policy_validator.h"

#include <cctype>
#include <set>
#include <string>

#include "dfw/tagging/ip_prefix.h"
#include "dfw/tagging/proto_convert.h"
#include "str_util.h"

namespace dfw::controller {
namespace {

absl::Status FieldError(std::string_view field, std::string_view what) {
  return absl::InvalidArgumentError(Cat(field, ": ", what));
}

absl::Status ValidatePrintable(std::string_view s, size_t max, std::string_view field) {
  if (s.size() > max) return FieldError(field, Cat("longer than ", max, " characters"));
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) return FieldError(field, "contains a control character");
  }
  if (!tagging::IsUtf8(s)) return FieldError(field, "is not valid UTF-8");
  return absl::OkStatus();
}

absl::Status AtMost(int n, size_t max, std::string_view field, std::string_view what) {
  if (static_cast<size_t>(n) <= max) return absl::OkStatus();
  return FieldError(field, Cat(n, " ", what, "; at most ", max));
}

bool PortsAllowed(uint32_t proto) { return proto == 6 || proto == 17 || proto == 132; }
bool IcmpAllowed(uint32_t proto) { return proto == 1 || proto == 58; }

absl::Status ValidateRanges(const google::protobuf::RepeatedPtrField<dfw::v1::PortRange>& ranges,
                            const std::string& field) {
  if (auto e = AtMost(ranges.size(), kMaxPortRangesPerService, field, "port ranges"); !e.ok()) {
    return e;
  }
  for (int i = 0; i < ranges.size(); ++i) {
    const auto& r = ranges[i];
    std::string f = Cat(field, "[", i, "]");
    if (r.first() > 65535) return FieldError(f + ".first", Cat(r.first(), " is above 65535"));
    if (r.last() > 65535) return FieldError(f + ".last", Cat(r.last(), " is above 65535"));
    if (r.last() != 0 && r.last() < r.first()) {
      return FieldError(f + ".last", Cat(r.last(), " is below first (", r.first(), ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateService(const dfw::v1::Service& s, const std::string& f) {
  if (s.protocol() > 255) return FieldError(f + ".protocol", Cat(s.protocol(), " is above 255"));
  bool has_ports = s.source_ports_size() > 0 || s.destination_ports_size() > 0;
  if (has_ports && !PortsAllowed(s.protocol())) {
    std::string which = s.source_ports_size() > 0 ? ".source_ports" : ".destination_ports";
    return FieldError(
        f + which, Cat("ports need protocol 6 (TCP), 17 (UDP) or 132 (SCTP), not ", s.protocol()));
  }
  if (auto e = ValidateRanges(s.source_ports(), f + ".source_ports"); !e.ok()) return e;
  if (auto e = ValidateRanges(s.destination_ports(), f + ".destination_ports"); !e.ok()) return e;
  if (s.has_icmp_type() || s.has_icmp_code()) {
    std::string which = s.has_icmp_type() ? ".icmp_type" : ".icmp_code";
    if (!IcmpAllowed(s.protocol())) {
      return FieldError(f + which, Cat("ICMP type/code need protocol 1 (ICMP) or 58 (ICMPv6), not ",
                                       s.protocol()));
    }
    if (!s.has_icmp_type()) return FieldError(f + ".icmp_code", "needs icmp_type");
    if (s.icmp_type() > 255)
      return FieldError(f + ".icmp_type", Cat(s.icmp_type(), " is above 255"));
    if (s.has_icmp_code() && s.icmp_code() > 255) {
      return FieldError(f + ".icmp_code", Cat(s.icmp_code(), " is above 255"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateGroupRefs(const google::protobuf::RepeatedPtrField<std::string>& ids,
                               const std::string& field, const GroupExists& exists) {
  for (int i = 0; i < ids.size(); ++i) {
    std::string f = Cat(field, "[", i, "]");
    if (auto e = ValidateObjectId(ids[i], f); !e.ok()) return e;
    if (!exists(ids[i])) return FieldError(f, Cat("group '", ids[i], "' does not exist"));
  }
  return absl::OkStatus();
}

absl::Status ValidateEndpoints(const dfw::v1::Endpoints& ep, const std::string& f,
                               const GroupExists& exists) {
  bool has_list = ep.group_ids_size() > 0 || ep.ip_prefixes_size() > 0;
  if (ep.any() && has_list) {
    return FieldError(f + ".any", "is exclusive with group_ids and ip_prefixes");
  }
  if (!ep.any() && !has_list) {
    return FieldError(f, "set any, or list group_ids or ip_prefixes");
  }
  if (ep.any() && ep.negate()) return FieldError(f + ".negate", "cannot negate any");
  if (auto e = AtMost(ep.group_ids_size(), kMaxGroupsPerEndpoint, f + ".group_ids", "groups");
      !e.ok()) {
    return e;
  }
  if (auto e =
          AtMost(ep.ip_prefixes_size(), kMaxPrefixesPerEndpoint, f + ".ip_prefixes", "prefixes");
      !e.ok()) {
    return e;
  }
  if (auto e = ValidateGroupRefs(ep.group_ids(), f + ".group_ids", exists); !e.ok()) return e;
  for (int i = 0; i < ep.ip_prefixes_size(); ++i) {
    auto p = tagging::IpPrefix::Parse(ep.ip_prefixes(i));
    if (!p.ok()) {
      return FieldError(Cat(f, ".ip_prefixes[", i, "]"), std::string(p.status().message()));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateObjectId(std::string_view id, std::string_view field) {
  return tagging::ValidateId(id, field);
}

absl::Status ValidatePolicy(const dfw::v1::Policy& p, const GroupExists& exists) {
  if (!p.GetReflection()->GetUnknownFields(p).empty()) {
    return FieldError("policy", "unknown field");
  }
  if (auto e = ValidateObjectId(p.id(), "id"); !e.ok()) return e;
  if (auto e = ValidatePrintable(p.display_name(), 256, "display_name"); !e.ok()) return e;
  if (p.category() == dfw::v1::CATEGORY_UNSPECIFIED || !dfw::v1::Category_IsValid(p.category())) {
    return FieldError(
        "category", "must be one of ETHERNET, EMERGENCY, INFRASTRUCTURE, ENVIRONMENT, APPLICATION");
  }
  if (!dfw::v1::PolicyMode_IsValid(p.mode())) return FieldError("mode", "unknown value");
  if (!dfw::v1::OnChange_IsValid(p.on_change())) return FieldError("on_change", "unknown value");
  if (auto e = AtMost(p.applied_to_group_ids_size(), kMaxGroupsPerEndpoint, "applied_to_group_ids",
                      "groups");
      !e.ok()) {
    return e;
  }
  if (auto e = ValidateGroupRefs(p.applied_to_group_ids(), "applied_to_group_ids", exists);
      !e.ok()) {
    return e;
  }
  if (auto e = AtMost(p.rules_size(), kMaxRulesPerPolicy, "rules", "rules"); !e.ok()) return e;
  std::set<std::string> rule_ids;
  for (int i = 0; i < p.rules_size(); ++i) {
    const auto& r = p.rules(i);
    std::string f = Cat("rules[", i, "]");
    if (auto e = ValidateObjectId(r.id(), f + ".id"); !e.ok()) return e;
    if (!rule_ids.insert(r.id()).second) {
      return FieldError(f + ".id", Cat("'", r.id(), "' is used by an earlier rule"));
    }
    if (auto e = ValidatePrintable(r.display_name(), 256, f + ".display_name"); !e.ok()) return e;
    if (r.action() == dfw::v1::ACTION_UNSPECIFIED || !dfw::v1::Action_IsValid(r.action())) {
      return FieldError(f + ".action", "must be ALLOW, DROP or REJECT");
    }
    if (!dfw::v1::Direction_IsValid(r.direction())) {
      return FieldError(f + ".direction", "must be IN, OUT or BOTH");
    }
    if (auto e = ValidateEndpoints(r.sources(), f + ".sources", exists); !e.ok()) return e;
    if (auto e = ValidateEndpoints(r.destinations(), f + ".destinations", exists); !e.ok()) {
      return e;
    }
    if (auto e = AtMost(r.services_size(), kMaxServicesPerRule, f + ".services", "services");
        !e.ok()) {
      return e;
    }
    for (int j = 0; j < r.services_size(); ++j) {
      if (auto e = ValidateService(r.services(j), Cat(f, ".services[", j, "]")); !e.ok()) return e;
    }
    if (auto e = AtMost(r.applied_to_group_ids_size(), kMaxGroupsPerEndpoint,
                        f + ".applied_to_group_ids", "groups");
        !e.ok()) {
      return e;
    }
    if (auto e = ValidateGroupRefs(r.applied_to_group_ids(), f + ".applied_to_group_ids", exists);
        !e.ok()) {
      return e;
    }
  }
  return absl::OkStatus();
}

}  // namespace dfw::controller
