// The validated inventory and group model that the membership engine works on.
//
// These are the proto/dfw/v1 messages (Vm, SecurityGroup) after validation at
// the edge (proto_convert.h): every string checked, every prefix parsed and
// canonical, string-match values lower-cased. The engine never sees invalid
// input, so it never half-applies a change.
//
// Thread safety: plain values.
#pragma once

#include <string>
#include <vector>

#include "dfw/tagging/ip_prefix.h"

namespace dfw::tagging {

struct Tag {
  std::string scope;
  std::string value;
  auto operator<=>(const Tag&) const = default;
  bool operator==(const Tag&) const = default;
};

struct VNicSpec {
  std::string id;                   // OVS iface-id, unique across the inventory
  std::string mac;                  // lower case "52:54:00:12:34:56"
  std::vector<IpPrefix> addresses;  // host prefixes, sorted, unique
};

struct VmSpec {
  std::string id;  // libvirt UUID
  std::string name;
  std::string host;
  std::string guest_os;
  std::string hostname;
  std::vector<Tag> tags;  // sorted, unique
  std::vector<VNicSpec> vnics;
};

enum class StringOp { kEquals, kStartsWith, kEndsWith, kContains };

struct StringMatch {
  StringOp op = StringOp::kEquals;
  std::string value;  // lower case (matching ignores ASCII case)
  bool Matches(std::string_view lower_subject) const;
};

struct Condition {
  enum class Kind { kTag, kTagScope, kVmName, kGuestOs, kMemberOf };
  Kind kind = Kind::kTag;
  Tag tag;            // kTag (scope + value), kTagScope (scope only)
  StringMatch match;  // kVmName, kGuestOs
  std::string group;  // kMemberOf
};

using Conjunction = std::vector<Condition>;  // AND, never empty

struct GroupSpec {
  std::string id;
  std::string display_name;
  std::vector<std::string> static_vms;
  std::vector<std::string> static_vnics;
  std::vector<IpPrefix> static_prefixes;
  std::vector<std::string> included_groups;
  std::vector<Conjunction> criteria;  // OR

  // Every group this one references (member_of conditions and inclusions),
  // sorted and unique.
  std::vector<std::string> References() const;
};

// Lower-cases ASCII letters; the form names and OS strings are compared in.
std::string AsciiLower(std::string_view s);

}  // namespace dfw::tagging
