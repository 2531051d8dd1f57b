// Steering flows: the OpenFlow rules that route every vNIC's traffic through
// the dataplane (DESIGN.md §4).
//
// What. Given the firewall (dataplane) port, the bridge's vNICs (each with
// its local id 1..2047 and MAC), the VM ports that cannot be steered and the
// known non-VM ports (uplinks to the provider network, the bridge's LOCAL
// port), ComputeSteeringFlows() returns the flow set to install on the
// bridge, OpenFlow 1.3 + Nicira extensions, in ovs-ofctl syntax. vNICs on
// the exclusion list bypass the dataplane behind OVS port security (below).
// Every flow carries a cookie whose high 32 bits are kSteeringCookieBase's
// (ours: reconcile touches only those) and whose low 32 bits are the port
// the flow is about (the vNIC's, the isolated or uplink port's; 0 for
// bridge-wide flows), for debugging.
//
//   table 0 (from where)              <fw> = the vNIC's firewall port
//   p200 in_port=<vnic>,vlan_tci=0x1000/0x1000  drop              VM-tagged
//   p200 in_port=<uplink>,vlan_tci=0x1000/0x1000  drop    tagged from uplink
//   p100 in_port=<vnic>            push tag <id>, output:<fw>      egress
//   p100 in_port=<fw>,dl_vlan=<id> pop tag, in_port:=<vnic>, resubmit(,1)
//   p100 in_port=<fw>,dl_vlan=<id|0x800>  pop tag, output:<vnic>   ingress
//   p100 in_port=<isolated>        drop     a VM port that cannot be steered
//   p100 in_port=<uplink>          resubmit(,1)   uplinks, LOCAL
//   p10  in_port=<fw k>            drop     unknown/absent tag: fail closed (each)
//   p0                             drop     unknown ports: default deny
//   table 1 (to where)
//   p100 dl_dst=<vnic mac>         push tag <id|0x800>, output:<fw>
//   p100 in_port=<vnic A>,dl_dst=<group bit>
//          per other protected vNIC R: tag <R|0x800>, output:<R's fw>;
//          then pop tag, NORMAL (floods to excluded vNICs and uplinks)
//   p50  dl_dst=<group bit>        (from uplinks, excluded vNICs) the same
//                                  for every protected vNIC
//   p0                             NORMAL
//
//   An excluded vNIC E (ofport <e>, MAC <M>, bound addresses <A>) gets,
//   instead of its steering flows above (all from <e>; "ok" = resubmit(,1),
//   as from an uplink):
//   table 0
//   p200 in_port=<e>,vlan_tci=0x1000/0x1000  drop                VM-tagged
//   p180 in_port=<e>,icmp6 RA (134), redirect (137)  drop
//   p180 in_port=<e>,icmp6 NS/NA,nd_target=::  drop   options OVS can't parse
//   p170 dl_src=<M>,NS,ipv6_src=<A or ::>,nd_sll=<M or none>  ok
//   p170 dl_src=<M>,NA,ipv6_src=<A>,nd_target=<A>,nd_tll=<M or none>  ok
//   p160 in_port=<e>,icmp6 NS/NA   drop       any other neighbour message
//   p150 dl_src=<M>,arp,arp_sha=<M>,arp_spa=<A or 0.0.0.0>  ok
//   p150 dl_src=<M>,ip,nw_src=<A>  ok;  udp 0.0.0.0:68 -> :67  ok    DHCP
//   p150 dl_src=<M>,ipv6,ipv6_src=<A>  ok
//   p100 in_port=<e>               drop       spoofed, or not IP/ARP
//   table 1
//   p100 dl_dst=<M>                output:<e>  never through the firewall
//   and no flow for E's tags from the firewall port (they hit p10), no
//   in_port=<e> group flow (the p50 flow serves it, as it does uplinks), no
//   copy into the firewall for E in any group flow.
//
// Decisions beyond §4 (see docs/architecture.md "ovs-integration"):
//  - Frames a VM sends already 802.1Q-tagged are dropped in OVS (p200): a
//    second tag would hide the steering tag's meaning, and guests on this
//    product get access ports, not trunks.
//  - Frames from the firewall port without a known steering tag are dropped
//    (p10), never forwarded by NORMAL with a stray tag.
//  - The provider network is untagged: a tagged frame from an uplink is
//    dropped (p200); a steering tag would overwrite its VLAN and hand it to
//    a vNIC whatever VLAN it was sent on.
//  - Default deny on ports: a port the agent has not classified yet (a VM
//    port that just appeared) sends nothing (p0 drop). Uplinks and LOCAL
//    (the host's own stack: a non-VM participant like a machine beyond the
//    uplink; every frame it sends to a vNIC still crosses that vNIC's
//    ingress) pass to table 1.
//  - Broadcast and multicast reach each local vNIC only through that vNIC's
//    ingress rules: one copy per receiver through the dataplane, never the
//    sender's own frame back; NORMAL carries them to the uplinks. Every vNIC
//    port and the firewall port must be `no-flood` (OpenFlow 1.0 port mod,
//    SetPortNoFlood) so NORMAL's flooding (broadcast, unknown unicast) never
//    reaches a vNIC unfirewalled nor hands the dataplane an untagged copy.
//  - Unicast to a local vNIC (from a vNIC or an uplink) goes through table
//    1's dl_dst flow whether or not NORMAL learnt the MAC.
//  - Size: a group flow lists up to N copies (32 bytes each in OpenFlow
//    1.3) and one OpenFlow message carries at most 64 KiB: at most
//    kMaxSteeredVnics vNICs per bridge (the flow set grows as N²).
//  - Several firewall ports (one per dataplane worker): each vNIC's frames
//    enter and leave through its owner worker's port only, so no frame
//    crosses between the dataplane's cores. A tagged frame from another
//    firewall port than the vNIC's is dropped (p10). The dataplane and the
//    agent must agree on the number of ports (dfw-dataplane --workers N
//    --port-per-worker, dfw-host-agent --firewall-ports N).
//  - Fail closed: when the dataplane is down, everything steered to <fw> is
//    lost: vNICs neither send nor receive; other ports are unaffected.
//  - Exclusion list (as NSX's DFW exclusion list): an excluded vNIC's own
//    traffic is never filtered and keeps flowing when the dataplane is down,
//    but every protected vNIC's ingress rules still apply to what it sends
//    (it is treated like an uplink: unicast crosses the receiver's ingress
//    through table 1's dl_dst flow, broadcast through the p50 copies). It is
//    no spoofing hole: table 0 mirrors the dataplane's spoofguard
//    (Pipeline::Spoofguard) with OVS matches on its MAC and addresses, and
//    drops the rest (p100). Like the spoofguard it allows ARP probes (sender
//    0.0.0.0), DHCP client requests (0.0.0.0:68 -> :67) and duplicate
//    address detection (NS from ::), and nothing implicitly (no IPv6
//    link-local address unless bound). Where OVS differs from the
//    spoofguard (which checks every link-layer option of every neighbour
//    message against the MAC, the last one winning):
//     - the link-layer option of an RS is not checked (OVS does not parse
//       it); nor a target link-layer option in an NS or a source one in an
//       NA (OVS parses them, but matching them too would double the flows;
//       receivers ignore them: RFC 4861 7.1.1, 7.1.2);
//     - a link-layer option that is present but all-zero is allowed (OVS
//       reads it as no option);
//     - a second link-layer option of a kind makes OVS leave nd_target,
//       nd_sll and nd_tll zero: such an NS/NA is dropped (p180), where the
//       spoofguard judges it by the last option;
//     - an NS/NA with a code other than 0 (invalid, RFC 4861; OVS's ND
//       fields need code 0) is dropped (p160).
//    An NA is checked for each pair of source and target: 2 x |A6|^2 flows
//    for |A6| bound IPv6 addresses (most VMs: one to three).
//  - Floods: an excluded vNIC's port is not `no-flood` (the host agent
//    clears it with SetPortNoFlood(.., false)): NORMAL's flood after the
//    group copies reaches it, as it reaches the uplinks; NORMAL never sends
//    a frame back out its in_port, so E never gets its own broadcast.
//  - An excluded vNIC keeps its local id, MAC and firewall port (validated
//    and reserved the same): toggling exclusion renumbers nothing.
//
// Thread safety: pure functions.
#pragma once

#include <cstddef>
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

// vNICs one bridge can steer: the broadcast flow from the uplinks carries a
// copy per vNIC, and its flow mod (~130 + 32 per copy bytes, in a bundle
// message) must stay below OpenFlow's 64 KiB message length.
inline constexpr size_t kMaxSteeredVnics = 2000;

// Firewall ports per bridge: one per dataplane worker (VnicTable::kMaxWorkers).
inline constexpr size_t kMaxFirewallPorts = 16;

// OFPP_MAX: ofports from here on are reserved (LOCAL, CONTROLLER, ...).
inline constexpr uint32_t kMaxOfport = 0xff00;
// OFPP_LOCAL: the bridge's own port, as OVSDB reports its ofport.
inline constexpr uint32_t kLocalOfport = 0xfffe;

inline constexpr uint16_t kPriorityVmTagged = 200;
// An excluded vNIC's port security in table 0 (see the header comment), from
// the first tried: neighbour messages always dropped; neighbour solicitations
// and advertisements allowed; the other ones dropped; ARP, IPv4 and IPv6
// allowed from its MAC and addresses. Anything else it sends falls to its
// kPrioritySteer drop.
inline constexpr uint16_t kPriorityExcludedNdDeny = 180;
inline constexpr uint16_t kPriorityExcludedNd = 170;
inline constexpr uint16_t kPriorityExcludedNdDefault = 160;
inline constexpr uint16_t kPriorityExcludedSource = 150;
inline constexpr uint16_t kPrioritySteer = 100;
inline constexpr uint16_t kPriorityGroupFromUplink = 50;
inline constexpr uint16_t kPriorityFirewallDefault = 10;
inline constexpr uint16_t kPriorityDefault = 0;

struct VnicSteering {
  uint32_t ofport = 0;
  uint16_t local_id = 0;  // 1..kMaxLocalId
  std::string mac;        // "52:54:00:00:00:05" (any case)
  // On the exclusion list: its frames bypass the dataplane, behind OVS port
  // security on `mac` and `addresses` (header comment). Its ofport, local id
  // and MAC are validated and reserved as any vNIC's.
  bool excluded = false;
  // The addresses bound to the vNIC (the dataplane's bound_ips): one address
  // each, IPv4 or IPv6, bare or with a full-length prefix ("198.18.10.11",
  // "2001:db8::5", "198.18.10.11/32"). What an excluded vNIC may send from;
  // ignored for a protected one (the dataplane checks those), but validated
  // for every vNIC, and no address may be two vNICs'.
  std::vector<std::string> addresses;
};

// The firewall port of index k serves the dataplane's worker k; a vNIC's
// frames go to (and come back from) its owner's port only. Mirrors
// dfw::dataplane::OwnerWorker (vnic_table.h).
inline size_t FirewallPortIndex(uint16_t local_id, size_t ports) { return local_id % ports; }

struct SteeringConfig {
  // One port per dataplane worker (fw0, fw1, ...; most hosts: one). A vNIC
  // with local id L is steered to firewall_ofports[FirewallPortIndex(L, n)]:
  // the worker that owns its connections reads it without a handoff.
  std::vector<uint32_t> firewall_ofports;
  std::vector<VnicSteering> vnics;
  // VM ports that cannot be steered (no local id or no MAC): everything they
  // send is dropped in OVS (p100 in_port=<port> drop) rather than left to
  // NORMAL unfirewalled. NORMAL never learns their MAC (it sees none of their
  // frames), so only floods reach them.
  std::vector<uint32_t> isolated_ofports;
  // Known non-VM ports: uplinks to the provider network (ports without an
  // iface-id) and the bridge's LOCAL port (kLocalOfport). What they send goes
  // to table 1 (p100 in_port=<port> resubmit(,1)); any other port not listed
  // here or above is dropped (table 0 p0).
  std::vector<uint32_t> uplink_ofports;
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
// name the offending vNIC or port: ofport 0 or >= 0xff00 (an uplink may also
// be kLocalOfport), no firewall port or more than kMaxFirewallPorts, a
// firewall port used as a vNIC / isolated / uplink port, a port in two roles
// or twice, duplicate local id / MAC, local id outside 1..2047, bad MAC, an
// address that is not one IPv4/IPv6 address or is another vNIC's, more than
// kMaxSteeredVnics vNICs. On error nothing is returned: the caller
// keeps the flows it installed last.
absl::StatusOr<std::vector<FlowSpec>> ComputeSteeringFlows(const SteeringConfig& config);

}  // namespace dfw::ovs
