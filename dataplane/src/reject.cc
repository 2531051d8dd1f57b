#include "dfw/dataplane/reject.h"

#include <cstring>

namespace dfw::dataplane {
namespace {

void Put16(uint8_t* p, uint16_t v) {
  p[0] = v >> 8;
  p[1] = v & 0xff;
}
void Put32(uint8_t* p, uint32_t v) {
  Put16(p, v >> 16);
  Put16(p + 2, v & 0xffff);
}
void PutV6(uint8_t* p, const Ip128& a) {
  Put32(p, a.hi >> 32);
  Put32(p + 4, a.hi & 0xffffffff);
  Put32(p + 8, a.lo >> 32);
  Put32(p + 12, a.lo & 0xffffffff);
}

uint32_t Sum(const uint8_t* p, uint32_t n, uint32_t acc = 0) {
  for (uint32_t i = 0; i + 1 < n; i += 2) acc += static_cast<uint32_t>(p[i] << 8 | p[i + 1]);
  if (n & 1) acc += static_cast<uint32_t>(p[n - 1] << 8);
  return acc;
}
uint16_t Fold(uint32_t acc) {
  while (acc >> 16) acc = (acc & 0xffff) + (acc >> 16);
  return static_cast<uint16_t>(~acc);
}

// Ethernet + steering tag back toward the sender; returns the L3 offset.
uint32_t WriteEth(const ParsedPacket& p, uint8_t* out, uint16_t ethertype) {
  std::memcpy(out, p.src_mac, 6);
  std::memcpy(out + 6, p.dst_mac, 6);
  Put16(out + 12, 0x8100);
  uint16_t vid = p.local_id | (p.dir == Direction::kOut ? kSteerIngressBit : 0);
  Put16(out + 14, vid);
  Put16(out + 16, ethertype);
  return 18;
}

// IP header from the refused packet's dst to its src; returns the L4 offset.
uint32_t WriteIp(const ParsedPacket& p, uint8_t* out, uint32_t l3, uint8_t proto, uint32_t l4_len) {
  uint8_t* ip = out + l3;
  if (p.family == Family::kV4) {
    std::memset(ip, 0, 20);
    ip[0] = 0x45;
    Put16(ip + 2, static_cast<uint16_t>(20 + l4_len));
    ip[8] = 64;
    ip[9] = proto;
    Put32(ip + 12, static_cast<uint32_t>(p.dst.lo));
    Put32(ip + 16, static_cast<uint32_t>(p.src.lo));
    Put16(ip + 10, Fold(Sum(ip, 20)));
    return l3 + 20;
  }
  std::memset(ip, 0, 40);
  ip[0] = 0x60;
  Put16(ip + 4, static_cast<uint16_t>(l4_len));
  ip[6] = proto;
  ip[7] = 64;
  PutV6(ip + 8, p.dst);
  PutV6(ip + 24, p.src);
  return l3 + 40;
}

uint32_t PseudoSum(const ParsedPacket& p, const uint8_t* out, uint32_t l3, uint8_t proto,
                   uint32_t l4_len) {
  const uint8_t* ip = out + l3;
  uint32_t acc = p.family == Family::kV4 ? Sum(ip + 12, 8) : Sum(ip + 8, 32);
  return acc + proto + l4_len;
}

}  // namespace

uint32_t BuildReject(const uint8_t* frame, uint32_t len, const ParsedPacket& p,
                     uint8_t out[kMaxReplyLen]) noexcept {
  if (p.l3 == L3Kind::kArp || (p.fragment && !p.first_fragment)) return 0;
  bool v4 = p.family == Family::kV4;
  // Nothing answers a frame sent to a group (RFC 1122 3.2.2, RFC 4443 2.4):
  // a broadcast or multicast MAC, an IPv4 multicast or limited broadcast
  // address, an IPv6 multicast address. A reply would come from the group's
  // address, once per receiver that refuses it.
  if (p.dst_mac[0] & 1) return 0;
  if (v4 ? ((p.dst.lo & 0xf0000000u) == 0xe0000000u || p.dst.lo == 0xffffffffu)
         : (p.dst.hi >> 56) == 0xff) {
    return 0;
  }
  if (p.proto == 6) {
    if (p.tcp_flags & tcpflag::kRst) return 0;
    uint32_t l3 = WriteEth(p, out, v4 ? 0x0800 : 0x86dd);
    uint32_t l4 = WriteIp(p, out, l3, 6, 20);
    uint8_t* t = out + l4;
    std::memset(t, 0, 20);
    Put16(t, p.dport);
    Put16(t + 2, p.sport);
    if (p.tcp_flags & tcpflag::kAck) {
      Put32(t + 4, p.tcp_ack);
      t[13] = tcpflag::kRst;
    } else {
      uint32_t seg = p.tcp_payload + ((p.tcp_flags & tcpflag::kSyn) ? 1 : 0) +
                     ((p.tcp_flags & tcpflag::kFin) ? 1 : 0);
      Put32(t + 8, p.tcp_seq + seg);
      t[13] = tcpflag::kRst | tcpflag::kAck;
    }
    t[12] = 5 << 4;
    Put16(t + 16, Fold(Sum(t, 20, PseudoSum(p, out, l3, 6, 20))));
    return l4 + 20;
  }
  if (p.icmp_error || (p.nd)) return 0;
  // ICMP unreachable quoting the refused packet: IPv4 the header + 8 bytes
  // (RFC 792), IPv6 as much as fits our reply buffer (RFC 4443 asks for as
  // much as fits the minimum MTU; a short quote is still valid).
  uint32_t quote = len - p.l3_offset;
  uint32_t hdr = 18 + (v4 ? 20 : 40) + 8;
  uint32_t max_quote = kMaxReplyLen - hdr;
  if (v4) {
    uint32_t want = (p.l4_offset - p.l3_offset) + 8;
    if (quote > want) quote = want;
  }
  if (quote > max_quote) quote = max_quote;
  uint8_t proto = v4 ? 1 : 58;
  uint32_t l3 = WriteEth(p, out, v4 ? 0x0800 : 0x86dd);
  uint32_t l4 = WriteIp(p, out, l3, proto, 8 + quote);
  uint8_t* icmp = out + l4;
  std::memset(icmp, 0, 8);
  icmp[0] = v4 ? 3 : 1;
  icmp[1] = v4 ? 13 : 1;
  std::memcpy(icmp + 8, frame + p.l3_offset, quote);
  uint32_t acc =
      v4 ? Sum(icmp, 8 + quote) : Sum(icmp, 8 + quote, PseudoSum(p, out, l3, 58, 8 + quote));
  Put16(icmp + 2, Fold(acc));
  return l4 + 8 + quote;
}

}  // namespace dfw::dataplane
