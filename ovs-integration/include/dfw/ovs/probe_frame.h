// Probe frames: the synthetic first packet of a flow that the host agent
// injects into the bridge (OpenFlowBridge::PacketOut) from a VM's vNIC port,
// so that it crosses the steering flows and the firewall as the VM's own
// packet would (a "traceflow").
//
// What. BuildProbeFrame() returns one untagged Ethernet II frame:
//   IPv4: version 4, IHL 5, DSCP/ECN 0, a nonzero identification, DF set,
//         TTL 64, the header checksum filled in;
//   IPv6: traffic class 0, flow label 0, hop limit 64, no extension headers;
// carrying
//   TCP (6):     a SYN, a fixed nonzero sequence number (kProbeTcpSeq), no
//                ACK, window 64240, one option: MSS 1460 (data offset 6);
//   UDP (17):    the payload kProbeUdpPayload ("dfw-probe");
//   ICMP (1):    an echo request (type 8, code 0), IPv4 only;
//   ICMPv6 (58): an echo request (type 128, code 0), IPv6 only;
// ICMP echoes carry identifier icmp_id (src_port when icmp_id is 0),
// sequence icmp_seq and the payload kProbeUdpPayload. Every L4 checksum is
// filled in (TCP, UDP and ICMPv6 over the pseudo-header; a UDP checksum
// that computes to 0 is sent as 0xffff). The frame is not padded to the
// Ethernet minimum of 60 bytes: the switch pads on output if it must.
//
// Errors. InvalidArgument naming the field: an address of neither 4 nor 16
// bytes, addresses of different families, a protocol other than the four
// above, ICMP with IPv6 addresses or ICMPv6 with IPv4 ones, a group
// (multicast/broadcast) or all-zero source MAC, port 0 for TCP/UDP. The
// destination MAC and the addresses are otherwise taken as given (a probe to
// a broadcast or multicast destination is a legitimate question).
//
// Thread safety: pure functions.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace dfw::ovs {

inline constexpr uint8_t kProtoTcp = 6, kProtoUdp = 17, kProtoIcmp = 1, kProtoIcmpv6 = 58;
inline constexpr uint32_t kProbeTcpSeq = 0x64667770;  // "dfwp"
inline constexpr std::string_view kProbeUdpPayload = "dfw-probe";
inline constexpr uint16_t kProbeTcpWindow = 64240, kProbeTcpMss = 1460;
inline constexpr uint8_t kProbeTtl = 64;

struct ProbeFrameSpec {
  std::array<uint8_t, 6> src_mac{}, dst_mac{};
  uint8_t protocol = kProtoTcp;         // 6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6
  std::vector<uint8_t> src_ip, dst_ip;  // network order; 4 or 16 bytes each, same family
  uint16_t src_port = 0, dst_port = 0;  // TCP/UDP; ignored for ICMP
  uint16_t icmp_id = 0;                 // ICMP echo identifier; 0: src_port
  uint16_t icmp_seq = 1;                // ICMP echo sequence number
};

// The frame described above, or InvalidArgument naming the offending field.
absl::StatusOr<std::vector<uint8_t>> BuildProbeFrame(const ProbeFrameSpec& spec);

// "aa:bb:cc:dd:ee:ff" (hex digits in either case, exactly two per byte, ':'
// separated) -> its 6 bytes; InvalidArgument otherwise.
absl::StatusOr<std::array<uint8_t, 6>> ParseMac(std::string_view text);

}  // namespace dfw::ovs
