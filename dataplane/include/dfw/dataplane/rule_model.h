// Rule model of the dataplane classifier: what a vNIC's effective rules look
// like once the controller has resolved groups into address sets.
//
// A rule is `sources -> destinations : services, direction -> action`. Sources
// and destinations reference address sets (named lists of IPv4/IPv6 prefixes
// shared by many rules) or are `any`, optionally negated. Services are a union:
// each names a protocol (or any) and source/destination port ranges; for ICMP
// and ICMPv6 the "source port" carries the type and the "destination port" the
// code, as OVS and VPP do. Rules are ordered; the first match wins.
//
// These are plain value types: no protobuf, no DPDK. A thin adapter from
// dfw.v1.CompiledRule / AddressSet belongs to the component that speaks proto.
#pragma once

#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace dfw::dataplane {

enum class Family : uint8_t { kV4 = 4, kV6 = 6 };

// Direction of a packet as seen by the vNIC: kIn enters the VM, kOut leaves it.
enum class Direction : uint8_t { kIn = 0, kOut = 1 };
enum class RuleDirection : uint8_t { kIn = 0, kOut = 1, kBoth = 2 };
enum class Action : uint8_t { kAllow = 0, kDrop = 1, kReject = 2 };

// A 128-bit address in host order; IPv4 lives in the low 32 bits of `lo`.
struct Ip128 {
  uint64_t hi = 0;
  uint64_t lo = 0;
  friend constexpr auto operator<=>(const Ip128&, const Ip128&) = default;
};

struct IpPrefix {
  Family family = Family::kV4;
  Ip128 addr;       // host bits are zero (Parse and Make* guarantee it)
  uint8_t len = 0;  // 0..32 for IPv4, 0..128 for IPv6

  static IpPrefix V4(uint32_t addr, uint8_t len);
  static IpPrefix V6(Ip128 addr, uint8_t len);
  // "198.18.0.0/15", "2001:db8::/32", a bare address is a host prefix.
  // Returns nullopt on bad syntax or host bits set.
  static std::optional<IpPrefix> Parse(std::string_view text);
  std::string ToString() const;
  // Inclusive range covered, in the family's address space.
  Ip128 First() const { return addr; }
  Ip128 Last() const;
  bool Contains(Family f, const Ip128& a) const;
};

struct PortRange {
  uint16_t lo = 0;
  uint16_t hi = 65535;
};

struct ServiceSpec {
  std::optional<uint8_t> proto;   // nullopt: any protocol (ports still apply)
  std::vector<PortRange> sports;  // empty: any. ICMP: type
  std::vector<PortRange> dports;  // empty: any. ICMP: code
  static ServiceSpec Any() { return {}; }
  static ServiceSpec Icmp(uint8_t proto, std::optional<uint8_t> type, std::optional<uint8_t> code);
};

struct EndpointSpec {
  bool any = true;                        // exclusive with address_sets
  std::vector<std::string> address_sets;  // union of these sets
  bool negate = false;                    // match addresses NOT in the union
};

struct RuleSpec {
  uint32_t rule_num = 0;  // reported on match (dataplane-wide rule number)
  EndpointSpec src;
  EndpointSpec dst;
  std::vector<ServiceSpec> services;  // union; empty: any service
  RuleDirection direction = RuleDirection::kBoth;
  Action action = Action::kAllow;
};

struct AddressSetSpec {
  std::string id;
  std::vector<IpPrefix> prefixes;
};

struct RulesetSpec {
  std::vector<RuleSpec> rules;  // evaluation order: index 0 first
  std::vector<AddressSetSpec> address_sets;
  Action default_action = Action::kDrop;
};

// What is classified: the first packet of a connection.
struct FlowKey {
  Family family = Family::kV4;
  Direction dir = Direction::kIn;
  uint8_t proto = 0;
  uint16_t sport = 0;  // ICMP: type
  uint16_t dport = 0;  // ICMP: code
  Ip128 src;           // IPv4: low 32 bits of lo, host order
  Ip128 dst;

  static FlowKey V4(uint32_t src, uint32_t dst, uint16_t sport, uint16_t dport, uint8_t proto,
                    Direction dir = Direction::kIn) {
    FlowKey k;
    k.family = Family::kV4;
    k.dir = dir;
    k.proto = proto;
    k.sport = sport;
    k.dport = dport;
    k.src.lo = src;
    k.dst.lo = dst;
    return k;
  }
};

}  // namespace dfw::dataplane
