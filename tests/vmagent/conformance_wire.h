// Wire helpers for the nftables conformance suite (nft_conformance_test.cc):
// the dataplane's frame builder (tests/dataplane/frame_builder.h) for the
// headers, plus what a real kernel needs and the dataplane does not: correct
// checksums, plain Ethernet (no steering tag), IPv4/IPv6 fragmentation of a
// finished datagram, and a parser for what the guest sends back.
//
// Thread safety: pure functions.
#pragma once

#include <arpa/inet.h>

#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "frame_builder.h"

namespace dfw::vmagent::conformance {

using dataplane::testing::Bytes;
using dataplane::testing::Cat;
using dataplane::testing::Mac;
using dataplane::testing::Set16;

inline uint32_t SumBytes(const uint8_t* p, size_t n, uint32_t s = 0) {
  for (size_t i = 0; i + 1 < n; i += 2) s += static_cast<uint32_t>(p[i] << 8 | p[i + 1]);
  if (n & 1) s += static_cast<uint32_t>(p[n - 1] << 8);
  return s;
}
inline uint16_t Fold(uint32_t s) {
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return static_cast<uint16_t>(~s & 0xffff);
}

// The L4 checksum offset for TCP, UDP, ICMP, ICMPv6 (-1: none we fill).
inline int CsumOffset(uint8_t proto) {
  switch (proto) {
    case 6:
      return 16;
    case 17:
      return 6;
    case 1:
    case 58:
      return 2;
    default:
      return -1;
  }
}

// Fills the L4 checksum of `l4` (a whole TCP/UDP/ICMP message) given the
// pseudo-header sum (0 for ICMPv4, which has none).
inline void FillL4(Bytes& pkt, size_t l4_at, uint8_t proto, uint32_t pseudo) {
  const int off = CsumOffset(proto);
  if (off < 0 || pkt.size() < l4_at + off + 2) return;
  Set16(pkt, l4_at + off, 0);
  uint16_t c = Fold(SumBytes(pkt.data() + l4_at, pkt.size() - l4_at, pseudo));
  if (proto == 17 && c == 0) c = 0xffff;
  Set16(pkt, l4_at + off, c);
}

// An unfragmented IPv4 packet (frame_builder's Ipv4): header and L4 checksums.
inline Bytes FixIpv4(Bytes pkt) {
  const size_t ihl = (pkt[0] & 0x0f) * 4u;
  const uint8_t proto = pkt[9];
  const uint16_t l4_len = static_cast<uint16_t>(pkt.size() - ihl);
  uint32_t pseudo = 0;
  if (proto != 1) pseudo = SumBytes(pkt.data() + 12, 8) + proto + l4_len;
  FillL4(pkt, ihl, proto, pseudo);
  Set16(pkt, 10, 0);
  Set16(pkt, 10, Fold(SumBytes(pkt.data(), ihl)));
  return pkt;
}

// An IPv6 packet (frame_builder's Ipv6), extension headers 0, 60, 43 walked:
// the L4 checksum with the pseudo-header.
inline Bytes FixIpv6(Bytes pkt) {
  uint8_t next = pkt[6];
  size_t at = 40;
  while ((next == 0 || next == 60 || next == 43) && at + 8 <= pkt.size()) {
    const uint8_t n = pkt[at];
    at += (pkt[at + 1] + 1u) * 8u;
    next = n;
  }
  const uint32_t len = static_cast<uint32_t>(pkt.size() - at);
  const uint32_t pseudo = SumBytes(pkt.data() + 8, 32) + (len >> 16) + (len & 0xffff) + next;
  FillL4(pkt, at, next, pseudo);
  return pkt;
}

// Pieces of a payload: (offset, length) in bytes (offsets multiples of 8).
using Pieces = std::vector<std::pair<size_t, size_t>>;

// Fragments of a finished (checksummed) IPv4 packet without options; MF is
// set on every piece that does not reach the payload's end.
inline std::vector<Bytes> Fragments4(const Bytes& whole, const Pieces& pieces, uint16_t id) {
  std::vector<Bytes> out;
  const size_t payload = whole.size() - 20;
  for (const auto& [off, len] : pieces) {
    Bytes f(whole.begin(), whole.begin() + 20);
    f.insert(f.end(), whole.begin() + 20 + off, whole.begin() + 20 + off + len);
    Set16(f, 2, static_cast<uint16_t>(f.size()));
    Set16(f, 4, id);
    const bool mf = off + len < payload;
    Set16(f, 6, static_cast<uint16_t>((mf ? 0x2000 : 0) | (off / 8)));
    Set16(f, 10, 0);
    Set16(f, 10, Fold(SumBytes(f.data(), 20)));
    out.push_back(std::move(f));
  }
  return out;
}

// Fragments of a finished IPv6 packet without extension headers.
inline std::vector<Bytes> Fragments6(const Bytes& whole, const Pieces& pieces, uint32_t id) {
  std::vector<Bytes> out;
  const size_t payload = whole.size() - 40;
  const uint8_t next = whole[6];
  for (const auto& [off, len] : pieces) {
    Bytes f(whole.begin(), whole.begin() + 40);
    f[6] = 44;
    Bytes frag =
        dataplane::testing::FragExt(next, static_cast<uint16_t>(off), off + len < payload, id);
    f.insert(f.end(), frag.begin(), frag.end());
    f.insert(f.end(), whole.begin() + 40 + off, whole.begin() + 40 + off + len);
    Set16(f, 4, static_cast<uint16_t>(f.size() - 40));
    out.push_back(std::move(f));
  }
  return out;
}

inline Bytes Ether(const Mac& dst, const Mac& src, uint16_t type, const Bytes& l3) {
  Bytes b(dst.begin(), dst.end());
  b.insert(b.end(), src.begin(), src.end());
  dataplane::testing::Put16(b, type);
  return Cat(b, l3);
}

inline uint32_t Get32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) << 24 | static_cast<uint32_t>(p[1]) << 16 |
         static_cast<uint32_t>(p[2]) << 8 | p[3];
}
inline uint16_t Get16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }

// What came back on the wire.
struct Seen {
  int family = 0;  // AF_INET / AF_INET6
  uint8_t proto = 0;
  std::string src, dst;
  uint16_t sport = 0, dport = 0;  // TCP/UDP
  uint32_t seq = 0, ack = 0;
  uint8_t flags = 0;     // TCP
  uint16_t payload = 0;  // TCP/UDP payload bytes
  uint8_t icmp_type = 0, icmp_code = 0;
  uint16_t icmp_id = 0;
  // ICMP errors: the quoted packet's tuple.
  std::string inner_src, inner_dst;
  uint8_t inner_proto = 0;
  uint16_t inner_sport = 0, inner_dport = 0;
};

inline std::string AddrText(int family, const uint8_t* p) {
  char buf[INET6_ADDRSTRLEN] = {};
  inet_ntop(family, p, buf, sizeof(buf));
  return buf;
}

// Parses an IPv4/IPv6 packet (no Ethernet header). nullopt: not IP.
inline std::optional<Seen> ParseIp(const uint8_t* p, size_t n, bool inner = false) {
  Seen s;
  size_t l4 = 0;
  if (n >= 20 && (p[0] >> 4) == 4) {
    s.family = AF_INET;
    s.proto = p[9];
    s.src = AddrText(AF_INET, p + 12);
    s.dst = AddrText(AF_INET, p + 16);
    l4 = (p[0] & 0x0f) * 4u;
  } else if (n >= 40 && (p[0] >> 4) == 6) {
    s.family = AF_INET6;
    s.src = AddrText(AF_INET6, p + 8);
    s.dst = AddrText(AF_INET6, p + 24);
    uint8_t next = p[6];
    l4 = 40;
    while ((next == 0 || next == 60 || next == 43) && l4 + 8 <= n) {
      next = p[l4];
      l4 += (p[l4 + 1] + 1u) * 8u;
    }
    s.proto = next;
  } else {
    return std::nullopt;
  }
  if (l4 > n) return std::nullopt;
  const uint8_t* q = p + l4;
  const size_t m = n - l4;
  if ((s.proto == 6 || s.proto == 17) && m >= 8) {
    s.sport = Get16(q);
    s.dport = Get16(q + 2);
    if (s.proto == 6 && m >= 20) {
      s.seq = Get32(q + 4);
      s.ack = Get32(q + 8);
      s.flags = q[13];
      s.payload = static_cast<uint16_t>(m - (q[12] >> 4) * 4u);
    } else if (s.proto == 17) {
      s.payload = static_cast<uint16_t>(m - 8);
    }
  } else if ((s.proto == 1 || s.proto == 58) && m >= 8) {
    s.icmp_type = q[0];
    s.icmp_code = q[1];
    s.icmp_id = Get16(q + 4);
    const bool error = s.proto == 1 ? (s.icmp_type == 3 || s.icmp_type == 11) : s.icmp_type < 128;
    if (error && !inner) {
      if (auto in = ParseIp(q + 8, m - 8, true)) {
        s.inner_src = in->src;
        s.inner_dst = in->dst;
        s.inner_proto = in->proto;
        s.inner_sport = in->sport;
        s.inner_dport = in->dport;
      }
    }
  }
  return s;
}

// An Ethernet frame (IPv4 or IPv6, untagged).
inline std::optional<Seen> ParseFrame(const uint8_t* p, size_t n) {
  if (n < 14) return std::nullopt;
  const uint16_t type = Get16(p + 12);
  if (type != 0x0800 && type != 0x86dd) return std::nullopt;
  return ParseIp(p + 14, n - 14);
}

}  // namespace dfw::vmagent::conformance
