// Crafted frames for dataplane tests, as they arrive on the firewall port:
// Ethernet + the steering 802.1Q tag + IPv4/IPv6 + TCP/UDP/ICMP, ARP, ND.
// Checksums are left zero: the dataplane does not verify them (OVS and the
// guest's stack do).
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "dfw/dataplane/packet_parser.h"

namespace dfw::dataplane::testing {

using Bytes = std::vector<uint8_t>;
using Mac = std::array<uint8_t, 6>;

inline Mac MacOf(uint8_t last) { return Mac{0x52, 0x54, 0x00, 0x00, 0x00, last}; }

inline void Put16(Bytes& b, uint16_t v) {
  b.push_back(v >> 8);
  b.push_back(v & 0xff);
}
inline void Put32(Bytes& b, uint32_t v) {
  Put16(b, v >> 16);
  Put16(b, v & 0xffff);
}
inline void Set16(Bytes& b, size_t at, uint16_t v) {
  b[at] = v >> 8;
  b[at + 1] = v & 0xff;
}

// Ethernet + steering tag. `ingress` sets the 0x800 bit (toward the VM).
inline Bytes Eth(uint16_t local_id, bool ingress, const Mac& src, const Mac& dst, uint16_t type) {
  Bytes b(dst.begin(), dst.end());
  b.insert(b.end(), src.begin(), src.end());
  Put16(b, 0x8100);
  Put16(b, local_id | (ingress ? kSteerIngressBit : 0));
  Put16(b, type);
  return b;
}

struct Tcp {
  uint16_t sport = 40000, dport = 80;
  uint32_t seq = 1000, ack = 0;
  uint8_t flags = tcpflag::kSyn;
  uint16_t win = 64240;
  int wscale = -1;  // >= 0: add the window-scale option
  uint16_t payload = 0;
};

inline Bytes TcpHeader(const Tcp& t) {
  Bytes b;
  Put16(b, t.sport);
  Put16(b, t.dport);
  Put32(b, t.seq);
  Put32(b, t.ack);
  uint8_t words = t.wscale >= 0 ? 6 : 5;
  b.push_back(words << 4);
  b.push_back(t.flags);
  Put16(b, t.win);
  Put32(b, 0);  // checksum, urgent
  if (t.wscale >= 0) {
    b.push_back(1);  // NOP
    b.push_back(3);
    b.push_back(3);
    b.push_back(static_cast<uint8_t>(t.wscale));
  }
  b.insert(b.end(), t.payload, 0xab);
  return b;
}

inline Bytes UdpHeader(uint16_t sport, uint16_t dport, uint16_t payload = 8) {
  Bytes b;
  Put16(b, sport);
  Put16(b, dport);
  Put16(b, 8 + payload);
  Put16(b, 0);
  b.insert(b.end(), payload, 0xcd);
  return b;
}

inline Bytes IcmpHeader(uint8_t type, uint8_t code, uint16_t id, const Bytes& body = Bytes(8, 0)) {
  Bytes b{type, code, 0, 0};
  Put16(b, id);
  Put16(b, 1);  // sequence
  b.insert(b.end(), body.begin(), body.end());
  return b;
}

// IPv4 header + payload. frag: offset in bytes, mf: more fragments.
inline Bytes Ipv4(uint32_t src, uint32_t dst, uint8_t proto, const Bytes& payload,
                  uint16_t frag_offset = 0, bool mf = false, uint16_t id = 0x1234,
                  uint8_t ihl_words = 5) {
  Bytes b;
  b.push_back(0x40 | ihl_words);
  b.push_back(0);
  Put16(b, static_cast<uint16_t>(ihl_words * 4 + payload.size()));
  Put16(b, id);
  Put16(b, static_cast<uint16_t>((mf ? 0x2000 : 0) | (frag_offset / 8)));
  b.push_back(64);
  b.push_back(proto);
  Put16(b, 0);
  Put32(b, src);
  Put32(b, dst);
  for (int i = 5; i < ihl_words; ++i) Put32(b, 0x01010101);  // NOP options
  b.insert(b.end(), payload.begin(), payload.end());
  return b;
}

inline Bytes V6Bytes(uint64_t hi, uint64_t lo) {
  Bytes b;
  Put32(b, hi >> 32);
  Put32(b, hi & 0xffffffff);
  Put32(b, lo >> 32);
  Put32(b, lo & 0xffffffff);
  return b;
}

// IPv6 header + extension headers (already encoded) + payload.
inline Bytes Ipv6(const Ip128& src, const Ip128& dst, uint8_t first_next,
                  const Bytes& ext_and_payload) {
  Bytes b{0x60, 0, 0, 0};
  Put16(b, static_cast<uint16_t>(ext_and_payload.size()));
  b.push_back(first_next);
  b.push_back(64);
  Bytes s = V6Bytes(src.hi, src.lo), d = V6Bytes(dst.hi, dst.lo);
  b.insert(b.end(), s.begin(), s.end());
  b.insert(b.end(), d.begin(), d.end());
  b.insert(b.end(), ext_and_payload.begin(), ext_and_payload.end());
  return b;
}

// One generic 8-byte extension header (hop-by-hop, destination options, routing type 2).
inline Bytes Ext8(uint8_t next, uint8_t routing_type = 2) {
  return Bytes{next, 0, routing_type, 0, 0, 0, 0, 0};
}
inline Bytes FragExt(uint8_t next, uint16_t offset, bool mf, uint32_t id) {
  Bytes b{next, 0};
  Put16(b, static_cast<uint16_t>(offset | (mf ? 1 : 0)));
  Put32(b, id);
  return b;
}

inline Bytes Cat(Bytes a, const Bytes& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

inline Bytes Arp(uint16_t op, const Mac& sha, uint32_t spa, const Mac& tha, uint32_t tpa) {
  Bytes b;
  Put16(b, 1);
  Put16(b, 0x0800);
  b.push_back(6);
  b.push_back(4);
  Put16(b, op);
  b.insert(b.end(), sha.begin(), sha.end());
  Put32(b, spa);
  b.insert(b.end(), tha.begin(), tha.end());
  Put32(b, tpa);
  return b;
}

// Neighbour solicitation/advertisement with a link-layer address option.
inline Bytes NdMessage(uint8_t type, const Ip128& target, const Mac& lladdr) {
  Bytes b{type, 0, 0, 0, 0, 0, 0, 0};
  Bytes t = V6Bytes(target.hi, target.lo);
  b.insert(b.end(), t.begin(), t.end());
  b.push_back(type == 135 ? 1 : 2);
  b.push_back(1);
  b.insert(b.end(), lladdr.begin(), lladdr.end());
  return b;
}

constexpr uint32_t Ip4(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
  return static_cast<uint32_t>(a) << 24 | static_cast<uint32_t>(b) << 16 |
         static_cast<uint32_t>(c) << 8 | d;
}

}  // namespace dfw::dataplane::testing
