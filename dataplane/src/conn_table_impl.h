// ConnTable internals shared by conn_table.cc (table, lookup, limits, aging)
// and conn_tcp.cc (the TCP window tracker). Not a public header.
//
// Memory per connection slot (capacity is a power of two):
//   ConnEntry      64 B  hot: key, state, expiry, policy, TCP windows (one line)
//   V6Pair         32 B  IPv6 source and destination (touched for IPv6 only)
//   ConnCounters   32 B  packets and bytes per direction (cold)
//   ConnLink        8 B  free list / per-zone early-drop list
//   buckets        32 B  capacity/2 buckets of 64 B (8 slots; 2 slots per entry)
//                 ----
//                 168 B
#pragma once

#include <cstdint>

#include "dfw/dataplane/conn_table.h"

namespace dfw::dataplane::ct {

constexpr uint8_t kProtoIcmp = 1, kProtoTcp = 6, kProtoUdp = 17, kProtoIcmp6 = 58;

inline bool IsIcmp(uint8_t proto) { return proto == kProtoIcmp || proto == kProtoIcmp6; }
inline bool IsEchoRequest(uint8_t proto, uint8_t type) {
  return proto == kProtoIcmp ? type == 8 : type == 128;
}
inline bool IsEchoReply(uint8_t proto, uint8_t type) {
  return proto == kProtoIcmp ? type == 0 : type == 129;
}

// Serial-number arithmetic (RFC 1982) on 32-bit TCP sequence numbers.
inline bool SeqLt(uint32_t a, uint32_t b) { return static_cast<int32_t>(a - b) < 0; }
inline bool SeqLeq(uint32_t a, uint32_t b) { return static_cast<int32_t>(a - b) <= 0; }
inline bool SeqGt(uint32_t a, uint32_t b) { return static_cast<int32_t>(a - b) > 0; }
inline bool SeqGeq(uint32_t a, uint32_t b) { return static_cast<int32_t>(a - b) >= 0; }

// Per-peer TCP state (pf / OVS conntrack-tcp.c naming, only the ones used).
enum PeerState : uint8_t {
  kPeerClosed = 0,   // nothing seen from this peer yet
  kPeerSynSent,      // first segment (SYN, or SYN+ACK) seen
  kPeerEstablished,  // its SYN was acknowledged
  kPeerClosing,      // sent FIN
  kPeerFinWait2,     // its FIN was acknowledged
  kPeerTimeWait,     // RST seen (both peers)
};

// Window scale byte: low nibble = shift, flags above.
constexpr uint8_t kWscaleFlag = 0x80;     // the peer's SYN carried the option
constexpr uint8_t kWscaleUnknown = 0x40;  // picked up mid-stream: scale unknown
constexpr uint8_t kWscaleMask = 0x0f;
constexpr uint8_t kMaxWscale = 14;

struct TcpPeer {
  uint32_t seqlo;    // td_end: highest SEQ + LEN sent by this peer
  uint32_t seqhi;    // td_maxend: highest SEQ this peer may send (other's ACK + window)
  uint32_t max_win;  // largest window this peer advertised (unscaled)
};

// Entry flags.
constexpr uint8_t kEntryUsed = 0x01;
constexpr uint8_t kEntryV6 = 0x02;
constexpr uint8_t kEntryRevalidate = 0x04;
constexpr uint8_t kEntryLoose = 0x08;    // TCP picked up mid-stream
constexpr uint8_t kEntryRst = 0x10;      // TCP closed by RST
constexpr uint8_t kEntryListed = 0x20;   // on its zone's early-drop list
constexpr uint8_t kEntryIngress = 0x40;  // opened toward the vNIC (orig direction "in")
constexpr uint8_t kEntryMoved = 0x80;    // exported with its VM: its removal is not its end

// The hot part of a connection: one cache line. Addresses and ports in the
// orig direction (the direction of the packet that created it).
struct alignas(64) ConnEntry {
  uint32_t src4;  // IPv4 addresses; for IPv6 the low 32 bits (a quick filter)
  uint32_t dst4;
  uint16_t sport, dport;  // ICMP echo: the identifier in both
  uint16_t zone;
  uint8_t proto;
  uint8_t flags;
  uint8_t state;         // ConnState
  uint8_t tcp_state[2];  // PeerState, [0] orig peer, [1] reply peer
  uint8_t tcp_wscale[2];
  uint8_t reserved[3];
  uint64_t expires_ms;  // expired when now_ms >= expires_ms
  uint32_t rule_num;
  uint32_t generation;
  TcpPeer peer[2];  // [0] orig, [1] reply
};
static_assert(sizeof(ConnEntry) == 64, "a connection's hot part is one cache line");
static_assert(alignof(ConnEntry) == 64);

struct V6Pair {
  Ip128 src, dst;
};

struct alignas(32) ConnCounters {
  uint64_t packets[2];
  uint64_t bytes[2];
};

struct ConnLink {
  uint32_t prev, next;
};

// TCP tracker (conn_tcp.cc).
enum class TcpResult : uint8_t {
  kValid,           // accepted: refresh the timeout
  kValidNoRefresh,  // accepted loosely (pf's "funky" cases): no refresh unless the state moved
  kInvalid,         // out of window, bad flags, bad RST
  kReopen,          // a SYN that starts a new connection on this tuple (port reuse)
};

bool TcpFlagsInvalid(uint8_t flags);
// kNone when `p` may create a connection, else the reason it may not.
DropReason TcpCanOpen(const ParsedPacket& p, bool loose);
// Initialises the TCP part of a new entry from its first packet.
void TcpInit(ConnEntry& e, const ParsedPacket& p);
// Advances the windows and states for a packet of `e` (reply: from the reply peer).
TcpResult TcpUpdate(ConnEntry& e, bool reply, const ParsedPacket& p);
// The ConnState the per-peer states amount to.
ConnState TcpAggregate(const ConnEntry& e);

}  // namespace dfw::dataplane::ct
