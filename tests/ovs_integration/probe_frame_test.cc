// BuildProbeFrame / ParseMac: the frames' fields at their offsets, their
// checksums (verified by a separate, naive implementation: the sum over the
// header or the pseudo-header + segment, checksum included, folds to
// 0xffff), the dataplane's own parser's reading of them, and each error.
#include "dfw/ovs/probe_frame.h"

#include <gtest/gtest.h>

#include <string>

#include "dfw/dataplane/packet_parser.h"

namespace dfw::ovs {
namespace {

using Bytes = std::vector<uint8_t>;

const std::array<uint8_t, 6> kSrcMac = {0x52, 0x54, 0x00, 0x00, 0x00, 0x05};
const std::array<uint8_t, 6> kDstMac = {0x52, 0x54, 0x00, 0x00, 0x00, 0x06};
const Bytes kV4Src = {198, 18, 10, 5}, kV4Dst = {198, 19, 0, 200};
// 2001:db8::5 and 2001:db8:1::ff06 (documentation prefix)
const Bytes kV6Src = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x05};
const Bytes kV6Dst = {0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0x06};

uint16_t At16(const Bytes& f, size_t at) { return static_cast<uint16_t>(f[at] << 8 | f[at + 1]); }
uint32_t At32(const Bytes& f, size_t at) {
  return static_cast<uint32_t>(At16(f, at)) << 16 | At16(f, at + 2);
}

// The naive check: sum all 16-bit words (odd byte padded with 0), fold the
// carries; a correct Internet checksum makes the total 0xffff.
uint16_t FoldedSum(const Bytes& words) {
  uint64_t sum = 0;
  for (size_t i = 0; i < words.size(); i += 2) {
    sum += static_cast<uint64_t>(words[i]) << 8;
    if (i + 1 < words.size()) sum += words[i + 1];
  }
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(sum);
}
Bytes Slice(const Bytes& f, size_t from, size_t len) {
  return Bytes(f.begin() + static_cast<long>(from), f.begin() + static_cast<long>(from + len));
}
// Pseudo-header (RFC 793 / RFC 8200 §8.1) + the L4 segment.
Bytes WithPseudoHeader(const Bytes& src, const Bytes& dst, uint8_t proto, const Bytes& l4) {
  Bytes b = src;
  b.insert(b.end(), dst.begin(), dst.end());
  const uint32_t len = static_cast<uint32_t>(l4.size());
  if (src.size() == 4) {
    b.insert(b.end(), {0, proto, static_cast<uint8_t>(len >> 8), static_cast<uint8_t>(len)});
  } else {
    b.insert(b.end(), {static_cast<uint8_t>(len >> 24), static_cast<uint8_t>(len >> 16),
                       static_cast<uint8_t>(len >> 8), static_cast<uint8_t>(len), 0, 0, 0, proto});
  }
  b.insert(b.end(), l4.begin(), l4.end());
  return b;
}

ProbeFrameSpec Spec(uint8_t proto, bool v6) {
  ProbeFrameSpec s;
  s.src_mac = kSrcMac;
  s.dst_mac = kDstMac;
  s.protocol = proto;
  s.src_ip = v6 ? kV6Src : kV4Src;
  s.dst_ip = v6 ? kV6Dst : kV4Dst;
  s.src_port = 40000;
  s.dst_port = 5432;
  return s;
}

Bytes Build(const ProbeFrameSpec& s) {
  absl::StatusOr<Bytes> f = BuildProbeFrame(s);
  EXPECT_TRUE(f.ok()) << f.status();
  return f.ok() ? *f : Bytes{};
}

// Ethernet + IPv4 header checks; returns the L4 offset.
size_t CheckIpv4(const Bytes& f, uint8_t proto, size_t l4_len) {
  EXPECT_EQ(Bytes(f.begin(), f.begin() + 6), Bytes(kDstMac.begin(), kDstMac.end()));
  EXPECT_EQ(Bytes(f.begin() + 6, f.begin() + 12), Bytes(kSrcMac.begin(), kSrcMac.end()));
  EXPECT_EQ(At16(f, 12), 0x0800);
  EXPECT_EQ(f.size(), 14 + 20 + l4_len);
  EXPECT_EQ(f[14], 0x45);
  EXPECT_EQ(f[15], 0);
  EXPECT_EQ(At16(f, 16), 20 + l4_len);
  EXPECT_NE(At16(f, 18), 0);       // identification
  EXPECT_EQ(At16(f, 20), 0x4000);  // DF, offset 0
  EXPECT_EQ(f[22], 64);
  EXPECT_EQ(f[23], proto);
  EXPECT_NE(At16(f, 24), 0);
  EXPECT_EQ(FoldedSum(Slice(f, 14, 20)), 0xffff);
  EXPECT_EQ(Slice(f, 26, 4), kV4Src);
  EXPECT_EQ(Slice(f, 30, 4), kV4Dst);
  return 34;
}

size_t CheckIpv6(const Bytes& f, uint8_t proto, size_t l4_len) {
  EXPECT_EQ(Bytes(f.begin(), f.begin() + 6), Bytes(kDstMac.begin(), kDstMac.end()));
  EXPECT_EQ(Bytes(f.begin() + 6, f.begin() + 12), Bytes(kSrcMac.begin(), kSrcMac.end()));
  EXPECT_EQ(At16(f, 12), 0x86dd);
  EXPECT_EQ(f.size(), 14 + 40 + l4_len);
  EXPECT_EQ(At32(f, 14), 0x60000000u);  // version 6, class 0, label 0
  EXPECT_EQ(At16(f, 18), l4_len);
  EXPECT_EQ(f[20], proto);
  EXPECT_EQ(f[21], 64);
  EXPECT_EQ(Slice(f, 22, 16), kV6Src);
  EXPECT_EQ(Slice(f, 38, 16), kV6Dst);
  return 54;
}

TEST(ProbeFrame, TcpSynOverIpv4) {
  const Bytes f = Build(Spec(kProtoTcp, false));
  const size_t l4 = CheckIpv4(f, 6, 24);
  EXPECT_EQ(At16(f, l4), 40000);
  EXPECT_EQ(At16(f, l4 + 2), 5432);
  EXPECT_NE(At32(f, l4 + 4), 0u);  // sequence
  EXPECT_EQ(At32(f, l4 + 8), 0u);  // no ACK
  EXPECT_EQ(f[l4 + 12], 6 << 4);   // data offset: 6 words
  EXPECT_EQ(f[l4 + 13], 0x02);     // SYN only
  EXPECT_EQ(At16(f, l4 + 14), 64240);
  EXPECT_EQ(At16(f, l4 + 18), 0);                              // urgent pointer
  EXPECT_EQ(Slice(f, l4 + 20, 4), (Bytes{2, 4, 0x05, 0xb4}));  // MSS 1460
  EXPECT_EQ(FoldedSum(WithPseudoHeader(kV4Src, kV4Dst, 6, Slice(f, l4, 24))), 0xffff);
}

TEST(ProbeFrame, TcpSynOverIpv6) {
  const Bytes f = Build(Spec(kProtoTcp, true));
  const size_t l4 = CheckIpv6(f, 6, 24);
  EXPECT_EQ(At16(f, l4), 40000);
  EXPECT_EQ(At16(f, l4 + 2), 5432);
  EXPECT_EQ(f[l4 + 13], 0x02);
  EXPECT_EQ(FoldedSum(WithPseudoHeader(kV6Src, kV6Dst, 6, Slice(f, l4, 24))), 0xffff);
}

TEST(ProbeFrame, UdpOverIpv4AndIpv6) {
  for (bool v6 : {false, true}) {
    SCOPED_TRACE(v6 ? "IPv6" : "IPv4");
    ProbeFrameSpec s = Spec(kProtoUdp, v6);
    s.dst_port = 53;
    const Bytes f = Build(s);
    const size_t len = 8 + kProbeUdpPayload.size();
    const size_t l4 = v6 ? CheckIpv6(f, 17, len) : CheckIpv4(f, 17, len);
    EXPECT_EQ(At16(f, l4), 40000);
    EXPECT_EQ(At16(f, l4 + 2), 53);
    EXPECT_EQ(At16(f, l4 + 4), len);
    EXPECT_NE(At16(f, l4 + 6), 0);  // always a checksum (required over IPv6)
    EXPECT_EQ(std::string(f.begin() + static_cast<long>(l4 + 8), f.end()), kProbeUdpPayload);
    EXPECT_EQ(FoldedSum(WithPseudoHeader(v6 ? kV6Src : kV4Src, v6 ? kV6Dst : kV4Dst, 17,
                                         Slice(f, l4, len))),
              0xffff);
  }
}

TEST(ProbeFrame, IcmpEchoRequest) {
  ProbeFrameSpec s = Spec(kProtoIcmp, false);
  s.icmp_seq = 7;
  Bytes f = Build(s);
  const size_t len = 8 + kProbeUdpPayload.size();
  const size_t l4 = CheckIpv4(f, 1, len);
  EXPECT_EQ(f[l4], 8);
  EXPECT_EQ(f[l4 + 1], 0);
  EXPECT_EQ(At16(f, l4 + 4), 40000);  // icmp_id 0: the source port
  EXPECT_EQ(At16(f, l4 + 6), 7);
  // ICMP's checksum covers the message alone.
  EXPECT_EQ(FoldedSum(Slice(f, l4, len)), 0xffff);

  s.icmp_id = 0x1234;
  f = Build(s);
  EXPECT_EQ(At16(f, l4 + 4), 0x1234);
  EXPECT_EQ(FoldedSum(Slice(f, l4, len)), 0xffff);
}

TEST(ProbeFrame, Icmpv6EchoRequest) {
  ProbeFrameSpec s = Spec(kProtoIcmpv6, true);
  s.icmp_id = 99;
  const Bytes f = Build(s);
  const size_t len = 8 + kProbeUdpPayload.size();
  const size_t l4 = CheckIpv6(f, 58, len);
  EXPECT_EQ(f[l4], 128);
  EXPECT_EQ(f[l4 + 1], 0);
  EXPECT_EQ(At16(f, l4 + 4), 99);
  EXPECT_EQ(At16(f, l4 + 6), 1);
  EXPECT_EQ(FoldedSum(WithPseudoHeader(kV6Src, kV6Dst, 58, Slice(f, l4, len))), 0xffff);
  // Not merely a sum over the message: the pseudo-header is in it.
  EXPECT_NE(FoldedSum(Slice(f, l4, len)), 0xffff);
}

TEST(ProbeFrame, ChecksumsHoldForManyPorts) {
  for (uint8_t proto : {kProtoTcp, kProtoUdp}) {
    for (bool v6 : {false, true}) {
      for (uint32_t port = 1; port <= 65535; port += 997) {
        ProbeFrameSpec s = Spec(proto, v6);
        s.src_port = static_cast<uint16_t>(port);
        s.dst_port = static_cast<uint16_t>(65536 - port);
        const Bytes f = Build(s);
        const size_t l4 = v6 ? 54 : 34;
        if (!v6) {
          ASSERT_EQ(FoldedSum(Slice(f, 14, 20)), 0xffff);
        }
        ASSERT_EQ(
            FoldedSum(WithPseudoHeader(s.src_ip, s.dst_ip, proto, Slice(f, l4, f.size() - l4))),
            0xffff)
            << int{proto} << " " << v6 << " " << port;
      }
    }
  }
}

// The dataplane's parser reads frames from the firewall port, behind the
// steering tag: the probe with the tag OVS pushes (VID = local id 7, egress).
dataplane::ParsedPacket ParseAsDataplane(const Bytes& frame) {
  Bytes tagged(frame.begin(), frame.begin() + 12);
  tagged.insert(tagged.end(), {0x81, 0x00, 0x00, 0x07});
  tagged.insert(tagged.end(), frame.begin() + 12, frame.end());
  dataplane::ParsedPacket p;
  EXPECT_EQ(dataplane::ParseFrame(tagged.data(), static_cast<uint32_t>(tagged.size()), &p),
            dataplane::DropReason::kNone);
  EXPECT_EQ(p.local_id, 7);
  EXPECT_EQ(p.dir, dataplane::Direction::kOut);
  return p;
}

TEST(ProbeFrame, TheDataplaneParserReadsWhatWasAskedFor) {
  {
    const dataplane::ParsedPacket p = ParseAsDataplane(Build(Spec(kProtoTcp, false)));
    EXPECT_EQ(p.family, dataplane::Family::kV4);
    EXPECT_EQ(p.src.lo, 0xc6120a05u);  // 198.18.10.5
    EXPECT_EQ(p.dst.lo, 0xc61300c8u);  // 198.19.0.200
    EXPECT_EQ(p.proto, 6);
    EXPECT_EQ(p.sport, 40000);
    EXPECT_EQ(p.dport, 5432);
    EXPECT_EQ(p.tcp_flags, dataplane::tcpflag::kSyn);
    EXPECT_EQ(p.tcp_seq, kProbeTcpSeq);
    EXPECT_EQ(p.tcp_win, 64240);
    EXPECT_EQ(p.tcp_payload, 0);
    EXPECT_FALSE(p.fragment);
  }
  {
    const dataplane::ParsedPacket p = ParseAsDataplane(Build(Spec(kProtoUdp, true)));
    EXPECT_EQ(p.family, dataplane::Family::kV6);
    EXPECT_EQ(p.src.hi, 0x20010db800000000u);
    EXPECT_EQ(p.src.lo, 5u);
    EXPECT_EQ(p.dst.hi, 0x20010db800010000u);
    EXPECT_EQ(p.dst.lo, 0xff06u);
    EXPECT_EQ(p.proto, 17);
    EXPECT_EQ(p.sport, 40000);
    EXPECT_EQ(p.dport, 5432);
  }
  {
    ProbeFrameSpec s = Spec(kProtoIcmp, false);
    s.icmp_id = 321;
    const dataplane::ParsedPacket p = ParseAsDataplane(Build(s));
    EXPECT_EQ(p.proto, 1);
    EXPECT_EQ(p.icmp_type, 8);
    EXPECT_EQ(p.icmp_code, 0);
    EXPECT_EQ(p.icmp_id, 321);
    EXPECT_FALSE(p.icmp_error);
  }
  {
    const dataplane::ParsedPacket p = ParseAsDataplane(Build(Spec(kProtoIcmpv6, true)));
    EXPECT_EQ(p.proto, 58);
    EXPECT_EQ(p.icmp_type, 128);
    EXPECT_EQ(p.icmp_id, 40000);
    EXPECT_FALSE(p.nd);
  }
}

void ExpectError(const ProbeFrameSpec& s, const std::string& text) {
  absl::StatusOr<Bytes> f = BuildProbeFrame(s);
  ASSERT_FALSE(f.ok()) << text;
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(f.status().message().find(text), std::string::npos) << f.status();
}

TEST(ProbeFrame, ErrorsNameTheField) {
  ProbeFrameSpec s = Spec(kProtoTcp, false);
  s.src_ip = {1, 2, 3, 4, 5};
  ExpectError(s, "src_ip: 5 bytes, not 4 or 16");
  s = Spec(kProtoTcp, false);
  s.dst_ip.clear();
  ExpectError(s, "dst_ip: 0 bytes, not 4 or 16");
  s = Spec(kProtoTcp, false);
  s.dst_ip = kV6Dst;
  ExpectError(s, "dst_ip: an IPv6 address, but src_ip is an IPv4 one");
  s = Spec(kProtoTcp, true);
  s.dst_ip = kV4Dst;
  ExpectError(s, "dst_ip: an IPv4 address, but src_ip is an IPv6 one");
  s = Spec(47, false);
  ExpectError(s, "protocol: 47 is not TCP, UDP, ICMP or ICMPv6");
  s = Spec(kProtoIcmp, true);
  ExpectError(s, "protocol: 1 (ICMP) with IPv6 addresses");
  s = Spec(kProtoIcmpv6, false);
  ExpectError(s, "protocol: 58 (ICMPv6) with IPv4 addresses");
  s = Spec(kProtoTcp, false);
  s.src_mac = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  ExpectError(s, "src_mac: a group");
  s.src_mac = {0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb};
  ExpectError(s, "src_mac: a group");
  s.src_mac = {};
  ExpectError(s, "src_mac: 00:00:00:00:00:00");
  s = Spec(kProtoUdp, false);
  s.src_port = 0;
  ExpectError(s, "src_port: 0 in UDP");
  s = Spec(kProtoTcp, true);
  s.dst_port = 0;
  ExpectError(s, "dst_port: 0 in TCP");

  // Ports do not matter to ICMP (icmp_id 0 and src_port 0: identifier 0).
  s = Spec(kProtoIcmp, false);
  s.src_port = s.dst_port = 0;
  EXPECT_TRUE(BuildProbeFrame(s).ok());
  // A group destination is a fair question.
  s = Spec(kProtoUdp, false);
  s.dst_mac = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  EXPECT_TRUE(BuildProbeFrame(s).ok());
}

TEST(ProbeFrame, ParseMac) {
  absl::StatusOr<std::array<uint8_t, 6>> m = ParseMac("52:54:00:aB:Cd:ef");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(*m, (std::array<uint8_t, 6>{0x52, 0x54, 0x00, 0xab, 0xcd, 0xef}));
  for (const char* bad :
       {"", "52:54:00:ab:cd", "52:54:00:ab:cd:ef:", "52-54-00-ab-cd-ef", "52:54:00:ab:cd:eg",
        "5:254:00:ab:cd:ef", " 52:54:00:ab:cd:e", "52:54:00:ab:cd:ef0"}) {
    absl::StatusOr<std::array<uint8_t, 6>> r = ParseMac(bad);
    EXPECT_FALSE(r.ok()) << bad;
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_NE(r.status().message().find(std::string("'") + bad + "'"), std::string::npos)
          << r.status();
    }
  }
}

}  // namespace
}  // namespace dfw::ovs
