// PacketParser: one Ethernet frame from the firewall port -> ParsedPacket.
//
// What. Frames reach the dataplane from the OVS bridge carrying one steering
// 802.1Q tag (DESIGN.md §4): VID = the vNIC's local id, with 0x800 set when
// the frame travels toward the VM (ingress) and clear when the VM sent it
// (egress). Behind the tag: IPv4 (options skipped, fragments flagged), IPv6
// (extension-header chain walked: hop-by-hop, routing, fragment, destination
// options, AH), TCP (with the window-scale option), UDP, ICMP / ICMPv6
// (errors carry their inner header for RELATED matching), ARP and IPv6
// neighbour discovery. Everything the later stages need is copied into a
// fixed-size ParsedPacket; nothing points back into the frame except offsets.
//
// Errors. A frame that cannot be parsed returns the DropReason that names what
// is wrong (drop_reason.h); the caller drops and counts it. The parser never
// reads past `len`, never allocates, never throws: it is fuzzed
// (tests/dataplane/fuzz_packet_parser.cc).
//
// Thread safety: a pure function.
#pragma once

#include <cstdint>

#include "dfw/dataplane/drop_reason.h"
#include "dfw/dataplane/rule_model.h"

namespace dfw::dataplane {

constexpr uint16_t kSteerIngressBit = 0x800;  // VID bit: toward the VM
constexpr uint16_t kMaxLocalId = 0x7ff;

enum class L3Kind : uint8_t { kIpv4, kIpv6, kArp };

namespace tcpflag {
constexpr uint8_t kFin = 0x01, kSyn = 0x02, kRst = 0x04, kPsh = 0x08, kAck = 0x10, kUrg = 0x20;
}

// The 5-tuple of an ICMP error's embedded packet (as the original sender saw it).
struct InnerTuple {
  Ip128 src, dst;
  uint8_t proto = 0;
  uint16_t sport = 0, dport = 0;  // ICMP echo: id in both
  uint8_t icmp_type = 0;          // when proto is ICMP/ICMPv6
};

struct ParsedPacket {
  // Steering.
  uint16_t local_id = 0;
  Direction dir = Direction::kOut;  // kIn: toward the VM
  // Ethernet (behind the steering tag).
  uint8_t dst_mac[6] = {}, src_mac[6] = {};
  uint16_t ethertype = 0;
  uint16_t l3_offset = 0;
  L3Kind l3 = L3Kind::kIpv4;

  // IP.
  Family family = Family::kV4;
  Ip128 src, dst;          // host order; IPv4 in the low 32 bits of lo
  uint8_t proto = 0;       // L4 protocol after the extension headers
  uint16_t l4_offset = 0;  // from the frame start
  uint16_t l4_len = 0;     // L4 bytes present in this packet
  uint32_t ip_len = 0;     // L3 length (header + payload) per the IP header

  // Fragments. Non-first fragments carry no L4 fields.
  bool fragment = false;
  bool first_fragment = false;
  bool more_fragments = false;
  uint16_t frag_offset = 0;  // bytes
  uint32_t frag_id = 0;

  // L4 (valid unless a non-first fragment).
  uint16_t sport = 0, dport = 0;  // ICMP: type and code, as the classifier takes them
  uint8_t icmp_type = 0, icmp_code = 0;
  uint16_t icmp_id = 0;     // echo request/reply identifier
  bool icmp_error = false;  // destination unreachable, time exceeded, ...
  InnerTuple inner;         // valid when icmp_error
  uint8_t tcp_flags = 0;
  uint32_t tcp_seq = 0, tcp_ack = 0;
  uint16_t tcp_win = 0;
  uint8_t tcp_wscale = 0xff;  // 0xff: no window-scale option
  uint16_t tcp_payload = 0;   // TCP payload bytes (SEG.LEN without SYN/FIN)

  // ARP (l3 == kArp).
  uint16_t arp_op = 0;
  uint8_t arp_sha[6] = {}, arp_tha[6] = {};
  uint32_t arp_spa = 0, arp_tpa = 0;  // host order

  // ICMPv6 neighbour discovery (proto 58, type 133..137).
  bool nd = false;
  Ip128 nd_target;             // NS/NA target
  bool nd_has_lladdr = false;  // a source/target link-layer address option
  uint8_t nd_lladdr[6] = {};
};

// Parses `frame[0, len)`. Returns kNone and fills `out`, or the reason to drop.
DropReason ParseFrame(const uint8_t* frame, uint32_t len, ParsedPacket* out) noexcept;

bool IsIcmpProto(uint8_t proto);  // 1 or 58

}  // namespace dfw::dataplane
