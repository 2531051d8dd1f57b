// Reject replies: what `reject` sends back to the sender of a refused packet.
// TCP gets a RST (RFC 793 reset generation); everything else gets ICMP
// destination unreachable, administratively prohibited (ICMPv4 3/13, ICMPv6
// 1/1) quoting the refused packet. The reply leaves on the firewall port with
// the steering tag of the opposite direction, so OVS delivers it to the
// sender's side: a VM whose egress was refused gets it on its vNIC; a remote
// sender refused by a VM's ingress rules gets it as if the VM had answered.
// Checksums are computed (the receiver's stack checks them).
//
// Thread safety: pure functions; no allocation.
#pragma once

#include <cstdint>

#include "dfw/dataplane/packet_parser.h"

namespace dfw::dataplane {

constexpr uint32_t kMaxReplyLen = 256;

// Writes the reply for the refused `frame` (parsed as `p`) into `out` and
// returns its length, or 0 when none is due (a RST is never answered; ICMP
// errors are never answered with ICMP errors; non-first fragments get none;
// nothing sent to a broadcast or multicast MAC or IP address gets a reply).
uint32_t BuildReject(const uint8_t* frame, uint32_t len, const ParsedPacket& p,
                     uint8_t out[kMaxReplyLen]) noexcept;

}  // namespace dfw::dataplane
