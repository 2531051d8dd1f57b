// PacketParser implementation: a straight walk over the frame with bounds
// checks at each header. See packet_parser.h.
#include "dfw/dataplane/packet_parser.h"

#include <cstring>

namespace dfw::dataplane {
namespace {

constexpr uint16_t kEthVlan = 0x8100, kEthQinQ = 0x88a8, kEthIpv4 = 0x0800, kEthIpv6 = 0x86dd,
                   kEthArp = 0x0806;
constexpr uint8_t kProtoIcmp = 1, kProtoTcp = 6, kProtoUdp = 17, kProtoIcmp6 = 58;
constexpr int kMaxExtHeaders = 8;

inline uint16_t Be16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
inline uint32_t Be32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) << 24 | static_cast<uint32_t>(p[1]) << 16 |
         static_cast<uint32_t>(p[2]) << 8 | p[3];
}
inline uint64_t Be64(const uint8_t* p) {
  return static_cast<uint64_t>(Be32(p)) << 32 | Be32(p + 4);
}
inline Ip128 V4Addr(const uint8_t* p) { return Ip128{0, Be32(p)}; }
inline Ip128 V6Addr(const uint8_t* p) { return Ip128{Be64(p), Be64(p + 8)}; }

bool IsIcmpError(uint8_t proto, uint8_t type) {
  if (proto == kProtoIcmp) return type == 3 || type == 4 || type == 5 || type == 11 || type == 12;
  return type >= 1 && type <= 4;  // ICMPv6: unreachable, too big, time exceeded, parameter problem
}
bool IsIcmpEcho(uint8_t proto, uint8_t type) {
  return proto == kProtoIcmp ? (type == 8 || type == 0) : (type == 128 || type == 129);
}

// The embedded header of an ICMP error: IP header and the first 8 bytes of L4.
// Quietly leaves `inner` partial when the quote is short: matching then fails
// and the error is dropped as unrelated.
bool ParseInner(const uint8_t* p, uint32_t len, bool v4, InnerTuple* in) {
  uint32_t l4;
  if (v4) {
    if (len < 20 || (p[0] >> 4) != 4) return false;
    uint32_t ihl = (p[0] & 0xf) * 4u;
    if (ihl < 20 || len < ihl) return false;
    in->src = V4Addr(p + 12);
    in->dst = V4Addr(p + 16);
    in->proto = p[9];
    l4 = ihl;
  } else {
    if (len < 40 || (p[0] >> 4) != 6) return false;
    in->src = V6Addr(p + 8);
    in->dst = V6Addr(p + 24);
    in->proto = p[6];
    l4 = 40;
  }
  if (len < l4 + 8) return in->proto != kProtoTcp && in->proto != kProtoUdp;
  const uint8_t* q = p + l4;
  if (in->proto == kProtoTcp || in->proto == kProtoUdp) {
    in->sport = Be16(q);
    in->dport = Be16(q + 2);
  } else if (in->proto == kProtoIcmp || in->proto == kProtoIcmp6) {
    in->icmp_type = q[0];
    in->sport = in->dport = Be16(q + 4);
  }
  return true;
}

DropReason ParseL4(const uint8_t* frame, uint32_t end, ParsedPacket* p) {
  const uint8_t* l4 = frame + p->l4_offset;
  uint32_t avail = end - p->l4_offset;
  p->l4_len = static_cast<uint16_t>(avail);
  bool partial = p->fragment;  // first fragment: L4 may continue in later fragments
  switch (p->proto) {
    case kProtoTcp: {
      if (avail < 20) return partial ? DropReason::kTinyFragment : DropReason::kMalformedTcp;
      uint32_t doff = (l4[12] >> 4) * 4u;
      if (doff < 20) return DropReason::kMalformedTcp;
      if (doff > avail) return partial ? DropReason::kTinyFragment : DropReason::kMalformedTcp;
      p->sport = Be16(l4);
      p->dport = Be16(l4 + 2);
      p->tcp_seq = Be32(l4 + 4);
      p->tcp_ack = Be32(l4 + 8);
      p->tcp_flags = l4[13] & 0x3f;
      p->tcp_win = Be16(l4 + 14);
      // IP length says how much payload the whole segment carries.
      uint32_t ip_hdr = p->l4_offset - p->l3_offset;
      uint32_t seg = p->ip_len > ip_hdr ? p->ip_len - ip_hdr : 0;
      if (seg < doff) return DropReason::kMalformedTcp;
      p->tcp_payload = static_cast<uint16_t>(seg - doff);
      // Options: only window scale matters (on SYN).
      for (uint32_t o = 20; o < doff;) {
        uint8_t kind = l4[o];
        if (kind == 0) break;
        if (kind == 1) {
          ++o;
          continue;
        }
        if (o + 1 >= doff) return DropReason::kMalformedTcp;
        uint8_t olen = l4[o + 1];
        if (olen < 2 || o + olen > doff) return DropReason::kMalformedTcp;
        if (kind == 3 && olen == 3) p->tcp_wscale = l4[o + 2] > 14 ? 14 : l4[o + 2];
        o += olen;
      }
      return DropReason::kNone;
    }
    case kProtoUdp: {
      if (avail < 8) return partial ? DropReason::kTinyFragment : DropReason::kMalformedUdp;
      uint16_t ulen = Be16(l4 + 4);
      if (!partial && (ulen < 8 || ulen > avail)) return DropReason::kMalformedUdp;
      p->sport = Be16(l4);
      p->dport = Be16(l4 + 2);
      return DropReason::kNone;
    }
    case kProtoIcmp:
    case kProtoIcmp6: {
      if ((p->proto == kProtoIcmp) != (p->family == Family::kV4)) return DropReason::kMalformedIcmp;
      if (avail < 8) return partial ? DropReason::kTinyFragment : DropReason::kMalformedIcmp;
      p->icmp_type = l4[0];
      p->icmp_code = l4[1];
      p->sport = p->icmp_type;
      p->dport = p->icmp_code;
      if (IsIcmpEcho(p->proto, p->icmp_type)) p->icmp_id = Be16(l4 + 4);
      if (IsIcmpError(p->proto, p->icmp_type)) {
        if (partial) return DropReason::kMalformedIcmp;  // errors are never fragmented here
        p->icmp_error = true;
        if (!ParseInner(l4 + 8, avail - 8, p->family == Family::kV4, &p->inner)) {
          return DropReason::kMalformedIcmp;
        }
      }
      if (p->proto == kProtoIcmp6 && p->icmp_type >= 133 && p->icmp_type <= 137) {
        if (partial) return DropReason::kMalformedIcmp;
        p->nd = true;
        uint32_t opts = 8;
        if (p->icmp_type == 135 || p->icmp_type == 136 || p->icmp_type == 137) {
          if (avail < 24) return DropReason::kMalformedIcmp;
          p->nd_target = V6Addr(l4 + 8);
          opts = p->icmp_type == 137 ? 40 : 24;
          if (avail < opts) return DropReason::kMalformedIcmp;
        } else if (p->icmp_type == 134) {
          opts = 16;
          if (avail < opts) return DropReason::kMalformedIcmp;
        }
        for (uint32_t o = opts; o + 2 <= avail;) {
          uint32_t olen = l4[o + 1] * 8u;
          if (olen == 0 || o + olen > avail) return DropReason::kMalformedIcmp;
          if ((l4[o] == 1 || l4[o] == 2) && olen == 8) {
            p->nd_has_lladdr = true;
            std::memcpy(p->nd_lladdr, l4 + o + 2, 6);
          }
          o += olen;
        }
      }
      return DropReason::kNone;
    }
    default:
      return DropReason::kNone;  // other protocols: classified by protocol alone
  }
}

DropReason ParseIpv4(const uint8_t* frame, uint32_t len, ParsedPacket* p) {
  uint32_t off = p->l3_offset;
  if (len < off + 20) return DropReason::kMalformedIpv4;
  const uint8_t* ip = frame + off;
  if ((ip[0] >> 4) != 4) return DropReason::kMalformedIpv4;
  uint32_t ihl = (ip[0] & 0xf) * 4u;
  uint32_t total = Be16(ip + 2);
  if (ihl < 20 || total < ihl || off + total > len) return DropReason::kMalformedIpv4;
  p->family = Family::kV4;
  p->ip_len = total;
  p->proto = ip[9];
  p->src = V4Addr(ip + 12);
  p->dst = V4Addr(ip + 16);
  uint16_t frag = Be16(ip + 6);
  if (frag & 0x8000) return DropReason::kMalformedIpv4;  // reserved bit
  p->more_fragments = frag & 0x2000;
  p->frag_offset = static_cast<uint16_t>((frag & 0x1fff) * 8u);
  if (p->more_fragments || p->frag_offset) {
    p->fragment = true;
    p->first_fragment = p->frag_offset == 0;
    p->frag_id = Be16(ip + 4);
    if (off + total - ihl + p->frag_offset > 65535 + off) return DropReason::kMalformedIpv4;
    // RFC 1858: a TCP fragment at offset 8 can rewrite the first one's flags.
    if (p->proto == kProtoTcp && p->frag_offset == 8) return DropReason::kTinyFragment;
  }
  p->l4_offset = static_cast<uint16_t>(off + ihl);
  if (p->fragment && !p->first_fragment) {
    p->l4_len = static_cast<uint16_t>(total - ihl);
    return DropReason::kNone;
  }
  return ParseL4(frame, off + total, p);
}

DropReason ParseIpv6(const uint8_t* frame, uint32_t len, ParsedPacket* p) {
  uint32_t off = p->l3_offset;
  if (len < off + 40) return DropReason::kMalformedIpv6;
  const uint8_t* ip = frame + off;
  if ((ip[0] >> 4) != 6) return DropReason::kMalformedIpv6;
  uint32_t payload = Be16(ip + 4);
  if (off + 40 + payload > len) return DropReason::kMalformedIpv6;
  uint32_t end = off + 40 + payload;
  p->family = Family::kV6;
  p->ip_len = 40 + payload;
  p->src = V6Addr(ip + 8);
  p->dst = V6Addr(ip + 24);
  uint8_t next = ip[6];
  uint32_t at = off + 40;
  for (int n = 0;; ++n) {
    if (n > kMaxExtHeaders) return DropReason::kIpv6ExtChain;
    switch (next) {
      case 0:  // hop-by-hop: only first
        if (n != 0) return DropReason::kIpv6ExtChain;
        [[fallthrough]];
      case 60:    // destination options
      case 43: {  // routing
        if (at + 8 > end) return DropReason::kIpv6ExtChain;
        uint32_t hlen = (frame[at + 1] + 1u) * 8u;
        if (at + hlen > end) return DropReason::kIpv6ExtChain;
        if (next == 43 && frame[at + 2] == 0) return DropReason::kIpv6ExtChain;  // RH0, RFC 5095
        next = frame[at];
        at += hlen;
        continue;
      }
      case 51: {  // AH: length in 4-byte units, minus 2
        if (at + 8 > end) return DropReason::kIpv6ExtChain;
        uint32_t hlen = (frame[at + 1] + 2u) * 4u;
        if (at + hlen > end) return DropReason::kIpv6ExtChain;
        next = frame[at];
        at += hlen;
        continue;
      }
      case 44: {  // fragment
        if (at + 8 > end || p->fragment) return DropReason::kIpv6ExtChain;
        uint16_t fo = Be16(frame + at + 2);
        p->frag_offset = static_cast<uint16_t>(fo & 0xfff8);
        p->more_fragments = fo & 1;
        p->frag_id = Be32(frame + at + 4);
        // An atomic fragment (offset 0, no more) is a whole packet (RFC 6946).
        p->fragment = p->frag_offset != 0 || p->more_fragments;
        p->first_fragment = p->fragment && p->frag_offset == 0;
        next = frame[at];
        at += 8;
        if (p->fragment && !p->first_fragment) {
          p->proto = next;
          p->l4_offset = static_cast<uint16_t>(at);
          p->l4_len = static_cast<uint16_t>(end - at);
          return DropReason::kNone;
        }
        continue;
      }
      default:
        break;
    }
    break;
  }
  p->proto = next;
  p->l4_offset = static_cast<uint16_t>(at);
  if (next == 59) {  // no next header
    p->l4_len = 0;
    return DropReason::kNone;
  }
  // RFC 7112: the first fragment must hold the whole header chain and L4 header.
  return ParseL4(frame, end, p);
}

DropReason ParseArp(const uint8_t* frame, uint32_t len, ParsedPacket* p) {
  uint32_t off = p->l3_offset;
  if (len < off + 28) return DropReason::kMalformedArp;
  const uint8_t* a = frame + off;
  if (Be16(a) != 1 || Be16(a + 2) != kEthIpv4 || a[4] != 6 || a[5] != 4) {
    return DropReason::kMalformedArp;
  }
  p->arp_op = Be16(a + 6);
  if (p->arp_op != 1 && p->arp_op != 2) return DropReason::kMalformedArp;
  std::memcpy(p->arp_sha, a + 8, 6);
  p->arp_spa = Be32(a + 14);
  std::memcpy(p->arp_tha, a + 18, 6);
  p->arp_tpa = Be32(a + 24);
  return DropReason::kNone;
}

const ParsedPacket kEmptyPacket{};

}  // namespace

bool IsIcmpProto(uint8_t proto) { return proto == kProtoIcmp || proto == kProtoIcmp6; }

DropReason ParseFrame(const uint8_t* frame, uint32_t len, ParsedPacket* p) noexcept {
  // Copied from a constant: `*p = ParsedPacket{}` built a temporary from
  // its field initialisers on the stack and copied it in 16-byte loads that
  // missed store forwarding (most of the parser's time on a hot flow).
  *p = kEmptyPacket;
  if (len < 14) return DropReason::kRunt;
  std::memcpy(p->dst_mac, frame, 6);
  std::memcpy(p->src_mac, frame + 6, 6);
  if (Be16(frame + 12) != kEthVlan || len < 18) return DropReason::kNoSteeringTag;
  uint16_t tci = Be16(frame + 14);
  uint16_t vid = tci & 0xfff;
  p->dir = (vid & kSteerIngressBit) ? Direction::kIn : Direction::kOut;
  p->local_id = vid & kMaxLocalId;
  p->ethertype = Be16(frame + 16);
  p->l3_offset = 18;
  if (p->ethertype == kEthVlan || p->ethertype == kEthQinQ) return DropReason::kInnerVlan;
  switch (p->ethertype) {
    case kEthIpv4:
      p->l3 = L3Kind::kIpv4;
      return ParseIpv4(frame, len, p);
    case kEthIpv6:
      p->l3 = L3Kind::kIpv6;
      return ParseIpv6(frame, len, p);
    case kEthArp:
      p->l3 = L3Kind::kArp;
      return ParseArp(frame, len, p);
    default:
      return DropReason::kL2NotIp;
  }
}

}  // namespace dfw::dataplane
