// Steering flows: the OpenFlow rules that route every vNIC's traffic through
// the dataplane (DESIGN.md §4).
//
// What. Given the firewall (dataplane) port and the bridge's vNICs, each with
// its local id (1..2047) and MAC, ComputeSteeringFlows() returns the flow set
// to install on the bridge, OpenFlow 1.3 + Nicira extensions, in ovs-ofctl
// syntax. Every flow carries a cookie whose high 32 bits are
// kSteeringCookieBase's (ours: reconcile touches only those) and whose low 32
// bits are the vNIC's ofport (0 for bridge-wide flows), for debugging.
//
//   table 0 (from where)
//   p200 in_port=<vnic>,vlan_tci=0x1000/0x1000  drop              VM-tagged
//   p100 in_port=<vnic>            push tag <id>, output:<fw>      egress
//   p100 in_port=<fw>,dl_vlan=<id> pop tag, in_port:=<vnic>, resubmit(,1)
//   p100 in_port=<fw>,dl_vlan=<id|0x800>  pop tag, output:<vnic>   ingress
//   p100 in_port=<isolated>        drop     a VM port that cannot be steered
//   p10  in_port=<fw>              drop     unknown/absent tag: fail closed
//   p0                             resubmit(,1)   uplinks, other ports
//   table 1 (to where)
//   p100 dl_dst=<vnic mac>         push tag <id|0x800>, output:<fw>
//   p0                             NORMAL
//
// Decisions beyond §4 (see docs/architecture.md "ovs-integration"):
//  - Frames a VM sends already 802.1Q-tagged are dropped in OVS (p200): a
//    second tag would hide the steering tag's meaning, and guests on this
//    product get access ports, not trunks.
//  - Frames from the firewall port without a known steering tag are dropped
//    (p10), never forwarded by NORMAL with a stray tag.
//  - Broadcast and multicast from a vNIC are that vNIC's egress: they cross
//    the dataplane once (egress rules of the sender), then NORMAL floods them
//    to the other ports. They are not sent through the receivers' ingress
//    rules (one copy per receiver would need a flow per pair); the firewall
//    port must be `no-flood` so that flooding does not hand it untagged
//    copies (OpenFlow 1.0 port mod; `ovs-ofctl mod-port <br> <fw> no-flood`).
//  - Unicast to a local vNIC whose MAC NORMAL has not learned yet still goes
//    through table 1's dl_dst flow: ingress is checked for every known vNIC.
//  - Fail closed: when the dataplane is down, everything steered to <fw> is
//    lost: vNICs neither send nor receive; other ports are unaffected.
//
// Thread safety: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace dfw::ovs {

inline constexpr uint64_t kSteeringCookieBase = 0xdf305ee000000000ULL;
inline constexpr uint64_t kSteeringCookieMask = 0xffffffff00000000ULL;

// Mirrors dfw::dataplane::kSteerIngressBit / kMaxLocalId (packet_parser.h).
inline constexpr uint16_t kIngressVlanBit = 0x800;
inline constexpr uint16_t kMaxLocalId = 0x7ff;

inline constexpr uint16_t kPriorityVmTagged = 200;
inline constexpr uint16_t kPrioritySteer = 100;
inline constexpr uint16_t kPriorityFirewallDefault = 10;
inline constexpr uint16_t kPriorityDefault = 0;

struct VnicSteering {
  uint32_t ofport = 0;
  uint16_t local_id = 0;  // 1..kMaxLocalId
  std::string mac;        // "52:54:00:00:00:05" (any case)
};

struct SteeringConfig {
  uint32_t firewall_ofport = 0;
  std::vector<VnicSteering> vnics;
  // VM ports that cannot be steered (no local id or no MAC): everything they
  // send is dropped in OVS (p100 in_port=<port> drop) rather than left to
  // NORMAL unfirewalled. NORMAL never learns their MAC (it sees none of their
  // frames), so only floods reach them.
  std::vector<uint32_t> isolated_ofports;
};

// One flow in ovs-ofctl syntax.
struct FlowSpec {
  uint8_t table = 0;
  uint16_t priority = 0;
  uint64_t cookie = 0;
  std::string match;  // "" = match all
  std::string actions;

  // "table=T,priority=P,cookie=0x..[,match] actions=A", for ovs-ofctl add-flow.
  std::string ToString() const;
  bool operator==(const FlowSpec&) const = default;
};

// The full steering flow set, in a stable order. Errors (InvalidArgument)
// name the offending vNIC: ofport 0 or >= 0xff00, the firewall port used as a
// vNIC, duplicate ofport / local id / MAC, local id outside 1..2047, bad MAC.
absl::StatusOr<std::vector<FlowSpec>> ComputeSteeringFlows(const SteeringConfig& config);

}  // namespace dfw::ovs
