// PacketParser on crafted frames: what parses, and the named reason for what
// does not.
#include "dfw/dataplane/packet_parser.h"

#include <gtest/gtest.h>

#include <cstring>

#include "frame_builder.h"

namespace dfw::dataplane {
namespace {

using namespace testing;

constexpr uint32_t kA = Ip4(198, 18, 0, 1), kB = Ip4(198, 18, 0, 2);
const Ip128 kA6{0x20010db800000000ull, 1}, kB6{0x20010db800000000ull, 2};

DropReason Parse(const Bytes& f, ParsedPacket* p) {
  return ParseFrame(f.data(), static_cast<uint32_t>(f.size()), p);
}

TEST(PacketParser, TcpSynWithWindowScaleBehindSteeringTag) {
  Tcp t;
  t.wscale = 7;
  Bytes f = Cat(Eth(5, false, MacOf(5), MacOf(9), 0x0800), Ipv4(kA, kB, 6, TcpHeader(t)));
  ParsedPacket p;
  ASSERT_EQ(Parse(f, &p), DropReason::kNone);
  EXPECT_EQ(p.local_id, 5);
  EXPECT_EQ(p.dir, Direction::kOut);
  EXPECT_EQ(p.family, Family::kV4);
  EXPECT_EQ(p.src.lo, kA);
  EXPECT_EQ(p.dst.lo, kB);
  EXPECT_EQ(p.proto, 6);
  EXPECT_EQ(p.sport, 40000);
  EXPECT_EQ(p.dport, 80);
  EXPECT_EQ(p.tcp_flags, tcpflag::kSyn);
  EXPECT_EQ(p.tcp_seq, 1000u);
  EXPECT_EQ(p.tcp_wscale, 7);
  EXPECT_EQ(p.tcp_payload, 0);
  EXPECT_FALSE(p.fragment);
  EXPECT_EQ(p.src_mac[5], 5);
}

TEST(PacketParser, IngressBitGivesDirectionIn) {
  Bytes f = Cat(Eth(7, true, MacOf(1), MacOf(7), 0x0800), Ipv4(kA, kB, 17, UdpHeader(53, 5353)));
  ParsedPacket p;
  ASSERT_EQ(Parse(f, &p), DropReason::kNone);
  EXPECT_EQ(p.local_id, 7);
  EXPECT_EQ(p.dir, Direction::kIn);
  EXPECT_EQ(p.sport, 53);
  EXPECT_EQ(p.dport, 5353);
}

// The parser resets the whole packet first: nothing of what the buffer held
// before (a burst reuses it) leaks into the next packet's fields.
TEST(PacketParser, EveryFieldIsResetBeforeParsing) {
  ParsedPacket p;
  std::memset(static_cast<void*>(&p), 0xab, sizeof(p));
  Bytes udp = Cat(Eth(7, false, MacOf(1), MacOf(7), 0x0800), Ipv4(kA, kB, 17, UdpHeader(53, 5353)));
  ASSERT_EQ(Parse(udp, &p), DropReason::kNone);
  const ParsedPacket fresh;
  EXPECT_EQ(p.tcp_wscale, 0xff);
  EXPECT_EQ(p.tcp_flags, 0);
  EXPECT_EQ(p.tcp_seq, 0u);
  EXPECT_FALSE(p.fragment);
  EXPECT_FALSE(p.first_fragment);
  EXPECT_FALSE(p.icmp_error);
  EXPECT_EQ(p.inner.src, fresh.inner.src);
  EXPECT_EQ(p.inner.proto, 0);
  EXPECT_FALSE(p.nd);
  EXPECT_FALSE(p.nd_has_lladdr);
  EXPECT_EQ(p.nd_target, fresh.nd_target);
  EXPECT_EQ(p.arp_op, 0);
  EXPECT_EQ(p.arp_spa, 0u);
  EXPECT_EQ(p.src.hi, 0u) << "an IPv4 address has nothing in the high word";
  for (uint8_t b : p.arp_sha) EXPECT_EQ(b, 0);
  // An early refusal resets too.
  std::memset(static_cast<void*>(&p), 0xab, sizeof(p));
  EXPECT_EQ(Parse(Bytes(10, 0), &p), DropReason::kRunt);
  EXPECT_EQ(p.local_id, 0);
  EXPECT_EQ(p.tcp_wscale, 0xff);
  EXPECT_FALSE(p.icmp_error);
}

TEST(PacketParser, Ipv4OptionsAreSkipped) {
  Bytes f = Cat(Eth(1, false, MacOf(1), MacOf(2), 0x0800),
                Ipv4(kA, kB, 17, UdpHeader(1, 2), 0, false, 1, /*ihl_words=*/7));
  ParsedPacket p;
  ASSERT_EQ(Parse(f, &p), DropReason::kNone);
  EXPECT_EQ(p.l4_offset, 18 + 28);
  EXPECT_EQ(p.dport, 2);
}

TEST(PacketParser, FramesWithoutOrWithExtraTagsAreDropped) {
  ParsedPacket p;
  Bytes runt(10, 0);
  EXPECT_EQ(Parse(runt, &p), DropReason::kRunt);
  Bytes untagged = Eth(1, false, MacOf(1), MacOf(2), 0x0800);
  untagged.erase(untagged.begin() + 12, untagged.begin() + 16);  // remove the tag
  untagged = Cat(untagged, Ipv4(kA, kB, 17, UdpHeader(1, 2)));
  EXPECT_EQ(Parse(untagged, &p), DropReason::kNoSteeringTag);
  // Double-tagged: the VM's own 802.1Q (or 802.1ad) tag behind ours.
  Bytes dbl = Eth(1, false, MacOf(1), MacOf(2), 0x8100);
  Put16(dbl, 100);
  Put16(dbl, 0x0800);
  EXPECT_EQ(Parse(Cat(dbl, Ipv4(kA, kB, 17, UdpHeader(1, 2))), &p), DropReason::kInnerVlan);
  Bytes qinq = Eth(1, false, MacOf(1), MacOf(2), 0x88a8);
  Put16(qinq, 100);
  Put16(qinq, 0x0800);
  EXPECT_EQ(Parse(Cat(qinq, Ipv4(kA, kB, 17, UdpHeader(1, 2))), &p), DropReason::kInnerVlan);
  EXPECT_EQ(Parse(Cat(Eth(1, false, MacOf(1), MacOf(2), 0x88cc), Bytes(40, 0)), &p),
            DropReason::kL2NotIp);
}

TEST(PacketParser, MalformedHeadersAreNamed) {
  ParsedPacket p;
  Bytes eth = Eth(1, false, MacOf(1), MacOf(2), 0x0800);
  Bytes ip = Ipv4(kA, kB, 6, TcpHeader({}));
  Bytes bad_len = ip;
  Set16(bad_len, 2, 200);  // total length beyond the frame
  EXPECT_EQ(Parse(Cat(eth, bad_len), &p), DropReason::kMalformedIpv4);
  Bytes bad_ihl = ip;
  bad_ihl[0] = 0x43;
  EXPECT_EQ(Parse(Cat(eth, bad_ihl), &p), DropReason::kMalformedIpv4);
  Bytes bad_doff = ip;
  bad_doff[20 + 12] = 0x20;  // TCP data offset 2 words
  EXPECT_EQ(Parse(Cat(eth, bad_doff), &p), DropReason::kMalformedTcp);
  Bytes short_tcp = Ipv4(kA, kB, 6, Bytes(12, 0));
  EXPECT_EQ(Parse(Cat(eth, short_tcp), &p), DropReason::kMalformedTcp);
  Bytes bad_udp = Ipv4(kA, kB, 17, UdpHeader(1, 2));
  Set16(bad_udp, 20 + 4, 4);  // UDP length < 8
  EXPECT_EQ(Parse(Cat(eth, bad_udp), &p), DropReason::kMalformedUdp);
  EXPECT_EQ(Parse(Cat(eth, Ipv4(kA, kB, 1, Bytes(4, 0))), &p), DropReason::kMalformedIcmp);
  Bytes arp = Arp(1, MacOf(1), kA, Mac{}, kB);
  arp[4] = 8;  // hardware length
  EXPECT_EQ(Parse(Cat(Eth(1, false, MacOf(1), MacOf(2), 0x0806), arp), &p),
            DropReason::kMalformedArp);
}

TEST(PacketParser, Ipv4Fragments) {
  ParsedPacket p;
  Bytes eth = Eth(1, false, MacOf(1), MacOf(2), 0x0800);
  // First fragment with a whole UDP header.
  Bytes first =
      Ipv4(kA, kB, 17, Bytes{0, 53, 0, 54, 0, 40, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8}, 0, true, 77);
  ASSERT_EQ(Parse(Cat(eth, first), &p), DropReason::kNone);
  EXPECT_TRUE(p.fragment);
  EXPECT_TRUE(p.first_fragment);
  EXPECT_EQ(p.frag_id, 77u);
  EXPECT_EQ(p.dport, 54);
  // A later fragment: no L4 fields.
  ASSERT_EQ(Parse(Cat(eth, Ipv4(kA, kB, 17, Bytes(16, 9), 16, false, 77)), &p), DropReason::kNone);
  EXPECT_TRUE(p.fragment);
  EXPECT_FALSE(p.first_fragment);
  EXPECT_EQ(p.frag_offset, 16);
  EXPECT_EQ(p.dport, 0);
  // Tiny first fragment: TCP header cut.
  EXPECT_EQ(Parse(Cat(eth, Ipv4(kA, kB, 6, Bytes(8, 0), 0, true)), &p), DropReason::kTinyFragment);
  // RFC 1858: TCP fragment at offset 8 overwrites the flags.
  EXPECT_EQ(Parse(Cat(eth, Ipv4(kA, kB, 6, Bytes(16, 0), 8, false)), &p),
            DropReason::kTinyFragment);
}

TEST(PacketParser, Ipv6ExtensionChains) {
  ParsedPacket p;
  Bytes eth = Eth(3, true, MacOf(1), MacOf(3), 0x86dd);
  // hop-by-hop -> destination options -> routing (type 2) -> TCP
  Bytes chain = Cat(Cat(Ext8(60), Ext8(43)), Cat(Ext8(6, 2), TcpHeader({})));
  ASSERT_EQ(Parse(Cat(eth, Ipv6(kA6, kB6, 0, chain)), &p), DropReason::kNone);
  EXPECT_EQ(p.family, Family::kV6);
  EXPECT_EQ(p.proto, 6);
  EXPECT_EQ(p.src.lo, 1u);
  EXPECT_EQ(p.dst.hi, 0x20010db800000000ull);
  EXPECT_EQ(p.l4_offset, 18 + 40 + 24);
  EXPECT_EQ(p.dport, 80);
  // Hop-by-hop not first.
  EXPECT_EQ(Parse(Cat(eth, Ipv6(kA6, kB6, 60, Cat(Ext8(0), Cat(Ext8(6), TcpHeader({}))))), &p),
            DropReason::kIpv6ExtChain);
  // Routing header type 0 (RFC 5095).
  EXPECT_EQ(Parse(Cat(eth, Ipv6(kA6, kB6, 43, Cat(Ext8(6, 0), TcpHeader({})))), &p),
            DropReason::kIpv6ExtChain);
  // A chain of nine destination-option headers is too long.
  Bytes many = TcpHeader({});
  for (int i = 0; i < 9; ++i) many = Cat(Ext8(i == 0 ? 6 : 60), many);
  EXPECT_EQ(Parse(Cat(eth, Ipv6(kA6, kB6, 60, many)), &p), DropReason::kIpv6ExtChain);
  // Truncated extension header.
  EXPECT_EQ(Parse(Cat(eth, Ipv6(kA6, kB6, 60, Bytes{6, 4, 0, 0})), &p), DropReason::kIpv6ExtChain);
  // Fragment header: first fragment parses L4; a later one does not.
  ASSERT_EQ(Parse(Cat(eth, Ipv6(kA6, kB6, 44, Cat(FragExt(17, 0, true, 9), UdpHeader(7, 8)))), &p),
            DropReason::kNone);
  EXPECT_TRUE(p.first_fragment);
  EXPECT_EQ(p.frag_id, 9u);
  EXPECT_EQ(p.dport, 8);
  ASSERT_EQ(Parse(Cat(eth, Ipv6(kA6, kB6, 44, Cat(FragExt(17, 64, false, 9), Bytes(16, 0)))), &p),
            DropReason::kNone);
  EXPECT_FALSE(p.first_fragment);
  EXPECT_EQ(p.frag_offset, 64);
  // Atomic fragment (offset 0, no more): a whole packet.
  ASSERT_EQ(Parse(Cat(eth, Ipv6(kA6, kB6, 44, Cat(FragExt(17, 0, false, 9), UdpHeader(7, 8)))), &p),
            DropReason::kNone);
  EXPECT_FALSE(p.fragment);
}

TEST(PacketParser, IcmpErrorsCarryTheInnerTuple) {
  ParsedPacket p;
  // Port unreachable from B about A's UDP packet to B:53.
  Bytes inner = Ipv4(kA, kB, 17, UdpHeader(40000, 53));
  Bytes icmp{3, 3, 0, 0, 0, 0, 0, 0};
  icmp.insert(icmp.end(), inner.begin(), inner.begin() + 28);
  ASSERT_EQ(Parse(Cat(Eth(2, true, MacOf(2), MacOf(1), 0x0800), Ipv4(kB, kA, 1, icmp)), &p),
            DropReason::kNone);
  EXPECT_TRUE(p.icmp_error);
  EXPECT_EQ(p.inner.src.lo, kA);
  EXPECT_EQ(p.inner.dst.lo, kB);
  EXPECT_EQ(p.inner.proto, 17);
  EXPECT_EQ(p.inner.sport, 40000);
  EXPECT_EQ(p.inner.dport, 53);
  // Echo request: identifier, not an error.
  ASSERT_EQ(
      Parse(Cat(Eth(1, false, MacOf(1), MacOf(2), 0x0800), Ipv4(kA, kB, 1, IcmpHeader(8, 0, 4242))),
            &p),
      DropReason::kNone);
  EXPECT_FALSE(p.icmp_error);
  EXPECT_EQ(p.icmp_id, 4242);
  EXPECT_EQ(p.sport, 8);
  // ICMPv6 in IPv4 is malformed.
  EXPECT_EQ(
      Parse(Cat(Eth(1, false, MacOf(1), MacOf(2), 0x0800), Ipv4(kA, kB, 58, IcmpHeader(128, 0, 1))),
            &p),
      DropReason::kMalformedIcmp);
}

TEST(PacketParser, ArpAndNeighbourDiscovery) {
  ParsedPacket p;
  ASSERT_EQ(
      Parse(Cat(Eth(1, false, MacOf(1), MacOf(0xff), 0x0806), Arp(1, MacOf(1), kA, Mac{}, kB)), &p),
      DropReason::kNone);
  EXPECT_EQ(p.l3, L3Kind::kArp);
  EXPECT_EQ(p.arp_op, 1);
  EXPECT_EQ(p.arp_spa, kA);
  EXPECT_EQ(p.arp_tpa, kB);
  EXPECT_EQ(p.arp_sha[5], 1);

  ASSERT_EQ(Parse(Cat(Eth(1, false, MacOf(1), MacOf(0xff), 0x86dd),
                      Ipv6(kA6, kB6, 58, NdMessage(136, kA6, MacOf(1)))),
                  &p),
            DropReason::kNone);
  EXPECT_TRUE(p.nd);
  EXPECT_EQ(p.icmp_type, 136);
  EXPECT_EQ(p.nd_target.lo, 1u);
  EXPECT_TRUE(p.nd_has_lladdr);
  EXPECT_EQ(p.nd_lladdr[5], 1);
  // An option with length 0 would loop forever: malformed.
  Bytes nd = NdMessage(135, kB6, MacOf(1));
  nd[25] = 0;
  EXPECT_EQ(Parse(Cat(Eth(1, false, MacOf(1), MacOf(0xff), 0x86dd), Ipv6(kA6, kB6, 58, nd)), &p),
            DropReason::kMalformedIcmp);
}

TEST(PacketParser, EveryTruncationOfValidFramesIsSafe) {
  // Cut valid frames at every length: never a crash, never kNone with a
  // header past the cut.
  std::vector<Bytes> frames = {
      Cat(Eth(1, false, MacOf(1), MacOf(2), 0x0800), Ipv4(kA, kB, 6, TcpHeader({.wscale = 3}))),
      Cat(Eth(1, false, MacOf(1), MacOf(2), 0x86dd),
          Ipv6(kA6, kB6, 0, Cat(Ext8(17), UdpHeader(1, 2)))),
      Cat(Eth(1, false, MacOf(1), MacOf(2), 0x86dd),
          Ipv6(kA6, kB6, 58, NdMessage(135, kB6, MacOf(1)))),
  };
  for (const Bytes& f : frames) {
    for (size_t cut = 0; cut < f.size(); ++cut) {
      Bytes c(f.begin(), f.begin() + cut);
      ParsedPacket p;
      DropReason r = ParseFrame(c.data(), static_cast<uint32_t>(c.size()), &p);
      if (r == DropReason::kNone) {
        EXPECT_LE(p.l4_offset + 0u, cut) << "cut " << cut;
      }
    }
  }
}

}  // namespace
}  // namespace dfw::dataplane
