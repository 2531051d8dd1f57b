// ParsedPacket builders and a two-endpoint TCP helper for the ConnTable tests.
// The table reads only parsed fields, so the tests build ParsedPackets
// directly (frame-level tests are in pipeline_test.cc).
#pragma once

#include <cstdint>

#include "dfw/dataplane/conn_table.h"
#include "dfw/dataplane/packet_parser.h"

namespace dfw::dataplane::cttest {

inline Ip128 V4(uint32_t a) { return Ip128{0, a}; }
inline Ip128 V6(uint64_t hi, uint64_t lo) { return Ip128{hi, lo}; }
inline uint32_t Ipv4(int a, int b, int c, int d) {
  return static_cast<uint32_t>(a) << 24 | static_cast<uint32_t>(b) << 16 |
         static_cast<uint32_t>(c) << 8 | static_cast<uint32_t>(d);
}

inline ParsedPacket Base(Ip128 src, Ip128 dst, uint8_t proto, bool v6) {
  ParsedPacket p;
  p.l3 = v6 ? L3Kind::kIpv6 : L3Kind::kIpv4;
  p.family = v6 ? Family::kV6 : Family::kV4;
  p.src = src;
  p.dst = dst;
  p.proto = proto;
  p.ip_len = v6 ? 40 : 20;
  return p;
}

inline ParsedPacket Udp(Ip128 src, Ip128 dst, uint16_t sport, uint16_t dport, bool v6 = false,
                        uint16_t payload = 10) {
  ParsedPacket p = Base(src, dst, 17, v6);
  p.sport = sport;
  p.dport = dport;
  p.ip_len += 8u + payload;
  return p;
}

inline ParsedPacket Tcp(Ip128 src, Ip128 dst, uint16_t sport, uint16_t dport, uint8_t flags,
                        uint32_t seq, uint32_t ack, uint16_t win = 65535, uint16_t payload = 0,
                        uint8_t wscale = 0xff, bool v6 = false) {
  ParsedPacket p = Base(src, dst, 6, v6);
  p.sport = sport;
  p.dport = dport;
  p.tcp_flags = flags;
  p.tcp_seq = seq;
  p.tcp_ack = ack;
  p.tcp_win = win;
  p.tcp_payload = payload;
  p.tcp_wscale = wscale;
  p.ip_len += 20u + payload;
  return p;
}

// ICMP / ICMPv6 echo (type 8/0 or 128/129).
inline ParsedPacket Echo(Ip128 src, Ip128 dst, uint8_t type, uint16_t id, bool v6 = false) {
  ParsedPacket p = Base(src, dst, v6 ? 58 : 1, v6);
  p.icmp_type = type;
  p.sport = type;
  p.icmp_id = id;
  p.ip_len += 16;
  return p;
}

// An ICMP error from `src` to `dst` quoting `inner` (as its sender sent it).
inline ParsedPacket IcmpError(Ip128 src, Ip128 dst, const InnerTuple& inner, bool v6 = false) {
  ParsedPacket p = Base(src, dst, v6 ? 58 : 1, v6);
  p.icmp_type = v6 ? 1 : 3;  // destination unreachable
  p.icmp_code = v6 ? 4 : 3;  // port unreachable
  p.sport = p.icmp_type;
  p.dport = p.icmp_code;
  p.icmp_error = true;
  p.inner = inner;
  p.ip_len += 8 + (v6 ? 48 : 28);
  return p;
}

inline InnerTuple Inner(Ip128 src, Ip128 dst, uint8_t proto, uint16_t sport, uint16_t dport,
                        uint8_t icmp_type = 0) {
  InnerTuple t;
  t.src = src;
  t.dst = dst;
  t.proto = proto;
  t.sport = sport;
  t.dport = dport;
  t.icmp_type = icmp_type;
  return t;
}

// Two TCP endpoints that number their segments correctly: a = client
// (orig), b = server. Send() builds the next segment from one side and
// advances its sequence number.
struct TcpPair {
  Ip128 a, b;
  uint16_t aport = 40000, bport = 80;
  uint32_t nxt[2] = {1000, 500000};  // next SEQ to send: [0] a, [1] b
  uint16_t win[2] = {65535, 65535};
  uint8_t wscale[2] = {0xff, 0xff};
  bool v6 = false;

  ParsedPacket Send(bool from_b, uint8_t flags, uint16_t payload = 0) {
    const int s = from_b ? 1 : 0;
    const uint32_t ack = (flags & tcpflag::kAck) ? nxt[1 - s] : 0;
    ParsedPacket p = from_b ? Tcp(b, a, bport, aport, flags, nxt[s], ack, win[s], payload,
                                  (flags & tcpflag::kSyn) ? wscale[s] : 0xff, v6)
                            : Tcp(a, b, aport, bport, flags, nxt[s], ack, win[s], payload,
                                  (flags & tcpflag::kSyn) ? wscale[s] : 0xff, v6);
    nxt[s] += payload + ((flags & tcpflag::kSyn) ? 1 : 0) + ((flags & tcpflag::kFin) ? 1 : 0);
    return p;
  }
};

}  // namespace dfw::dataplane::cttest
