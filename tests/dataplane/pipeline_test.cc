// The dataplane's conformance suite: crafted frames, two vNICs — web (local
// id 1) and db (local id 2) — and a policy in the spirit of the product: web
// may reach db on TCP 5432, everything else is denied.
//
// This file builds twice: test_pipeline sends each frame through
// Pipeline::Process directly; test_pipeline_dpdk (DFW_CONFORMANCE_DPDK) sends
// it as an mbuf through a DPDK ethdev port (net_ring) to a PortWorker on its
// own thread, and reads the verdict back from what left the port and from
// the counters — the same suite on the real packet path.
#include "dfw/dataplane/pipeline.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <iterator>
#include <random>
#include <set>
#include <tuple>
#include <vector>

#include "dfw/dataplane/ruleset_compiler.h"
#include "frame_builder.h"
#ifdef DFW_CONFORMANCE_DPDK
#include "dpdk_harness.h"
#endif

namespace dfw::dataplane {
namespace {

using namespace testing;

constexpr uint32_t kWebIp = Ip4(198, 18, 1, 11), kDbIp = Ip4(198, 18, 2, 21),
                   kOtherIp = Ip4(198, 18, 9, 9);
constexpr uint16_t kWeb = 1, kDb = 2;
const Mac kWebMac = MacOf(0x11), kDbMac = MacOf(0x21), kRouterMac = MacOf(0xfe);
const Ip128 kWeb6{0x20010db800000001ull, 0x11}, kDb6{0x20010db800000002ull, 0x21};

IpPrefix Host4(uint32_t a) { return IpPrefix::V4(a, 32); }

struct RuleOpts {
  Action action = Action::kAllow;
  bool audit = false, revalidate = false, stateful = true;
};

class PipelineTest : public ::testing::Test {
 protected:
  PipelineTest() : pipeline_(&vnics_, Config()) {
    pipeline_.SetCaptures(&captures_);  // before any frame: the worker may start below
#ifdef DFW_CONFORMANCE_DPDK
    harness_ = std::make_unique<DpdkHarness>(&pipeline_);
#endif
  }

  static PipelineConfig Config() {
    PipelineConfig c;
    c.conntrack.max_connections = 1024;
    c.conntrack.max_per_zone = 256;
    c.max_rule_num = 1024;
    return c;
  }

  // web: out tcp -> db:5432 allow (rule 10); db: in tcp from web :5432 allow
  // (rule 20); both: icmp echo out allow (rule 30); web: udp 53 out reject
  // (rule 40); web: out tcp 8443 reject (rule 50); default drop.
  void SetUp() override {
    RulesetSpec web;
    web.address_sets = {{"web", {Host4(kWebIp), IpPrefix::V6(kWeb6, 128)}},
                        {"db", {Host4(kDbIp), IpPrefix::V6(kDb6, 128)}}};
    web.rules.push_back(Rule(10, "web", "db", 6, 5432, RuleDirection::kOut));
    web.rules.push_back(IcmpEcho(30));
    web.rules.push_back(Rule(40, "", "", 17, 53, RuleDirection::kOut, Action::kReject));
    web.rules.push_back(Rule(50, "", "", 6, 8443, RuleDirection::kOut, Action::kReject));
    web.rules.push_back(Rule(60, "", "", 17, 9999, RuleDirection::kOut));  // for fragments
    RulesetSpec db = web;
    db.rules = {Rule(20, "web", "db", 6, 5432, RuleDirection::kIn), IcmpEcho(30)};
    Install(kWeb, kWebMac, {kWebIp}, {kWeb6}, web, {10, 30, 40, 50, 60});
    Install(kDb, kDbMac, {kDbIp}, {kDb6}, db, {20, 30});
  }

  static RuleSpec Rule(uint32_t num, std::string src, std::string dst, uint8_t proto,
                       uint16_t dport, RuleDirection dir, Action a = Action::kAllow) {
    RuleSpec r;
    r.rule_num = num;
    if (!src.empty()) r.src = EndpointSpec{false, {src}, false};
    if (!dst.empty()) r.dst = EndpointSpec{false, {dst}, false};
    ServiceSpec s;
    s.proto = proto;
    s.dports = {PortRange{dport, dport}};
    r.services = {s};
    r.direction = dir;
    r.action = a;
    return r;
  }
  static RuleSpec IcmpEcho(uint32_t num) {
    RuleSpec r;
    r.rule_num = num;
    r.services = {ServiceSpec::Icmp(1, 8, std::nullopt), ServiceSpec::Icmp(58, 128, std::nullopt)};
    r.direction = RuleDirection::kOut;
    return r;
  }

  void Install(uint16_t id, const Mac& mac, std::vector<uint32_t> v4, std::vector<Ip128> v6,
               const RulesetSpec& spec, const std::vector<uint32_t>& nums,
               std::vector<RuleOpts> opts = {}, bool with_policy = true) {
    auto st = std::make_unique<VnicState>();
    st->id = id == kWeb ? "web-1-eth0" : "db-1-eth0";
    st->local_id = id;
    std::memcpy(st->mac, mac.data(), 6);
    std::sort(v4.begin(), v4.end());
    std::sort(v6.begin(), v6.end());
    st->bound_v4 = v4;
    st->bound_v6 = v6;
    if (with_policy) {
      RulesetCompiler compiler;
      auto s = compiler.Compile(spec);
      ASSERT_TRUE(s.ok()) << s.message();
      auto pol = std::make_shared<VnicPolicy>();
      pol->ruleset = compiler.ruleset();
      for (size_t i = 0; i < spec.rules.size(); ++i) {
        RuleMeta m;
        m.rule_num = nums[i];
        m.action = spec.rules[i].action;
        if (i < opts.size()) {
          m.audit = opts[i].audit;
          m.revalidate = opts[i].revalidate;
          m.stateful = opts[i].stateful;
        }
        pol->rules.push_back(m);
      }
      pol->generation = ++generation_;
      st->policy = pol;
    }
    vnics_.Publish(std::move(st));
  }

  Verdict Send(const Bytes& f) {
#ifdef DFW_CONFORMANCE_DPDK
    return harness_->Send(f, replies_[0]);
#else
    const uint8_t* frames[1] = {f.data()};
    uint16_t lens[1] = {static_cast<uint16_t>(f.size())};
    Verdict v;
    pipeline_.Process(frames, lens, 1, now_ms_, &v, replies_);
    return v;
#endif
  }
  Bytes LastReply(const Verdict& v) { return Bytes(replies_[0], replies_[0] + v.reply_len); }

  // Frames seen on the firewall port.
  Bytes WebOut(uint32_t dst, uint8_t proto, const Bytes& l4) {
    return Cat(Eth(kWeb, false, kWebMac, kDbMac, 0x0800), Ipv4(kWebIp, dst, proto, l4));
  }
  Bytes WebIn(uint32_t src, uint8_t proto, const Bytes& l4) {
    return Cat(Eth(kWeb, true, kDbMac, kWebMac, 0x0800), Ipv4(src, kWebIp, proto, l4));
  }
  Bytes DbIn(uint32_t src, uint8_t proto, const Bytes& l4) {
    return Cat(Eth(kDb, true, kWebMac, kDbMac, 0x0800), Ipv4(src, kDbIp, proto, l4));
  }
  Bytes DbOut(uint32_t dst, uint8_t proto, const Bytes& l4) {
    return Cat(Eth(kDb, false, kDbMac, kWebMac, 0x0800), Ipv4(kDbIp, dst, proto, l4));
  }
  static Tcp Seg(uint16_t sport, uint16_t dport, uint32_t seq, uint32_t ack, uint8_t flags,
                 uint16_t payload = 0) {
    Tcp t;
    t.sport = sport;
    t.dport = dport;
    t.seq = seq;
    t.ack = ack;
    t.flags = flags;
    t.payload = payload;
    return t;
  }
  uint64_t Drops(DropReason r) { return pipeline_.counters().drops[static_cast<int>(r)].Get(); }

  // The handshake web:40000 -> db:5432 crosses web's egress, then db's
  // ingress; the SYN-ACK crosses db's egress, then web's ingress.
  void Handshake(uint16_t sport = 40000) {
    using namespace tcpflag;
    ASSERT_TRUE(Send(WebOut(kDbIp, 6, TcpHeader(Seg(sport, 5432, 1000, 0, kSyn)))).forward);
    ASSERT_TRUE(Send(DbIn(kWebIp, 6, TcpHeader(Seg(sport, 5432, 1000, 0, kSyn)))).forward);
    ASSERT_TRUE(
        Send(DbOut(kWebIp, 6, TcpHeader(Seg(5432, sport, 5000, 1001, kSyn | kAck)))).forward);
    ASSERT_TRUE(
        Send(WebIn(kDbIp, 6, TcpHeader(Seg(5432, sport, 5000, 1001, kSyn | kAck)))).forward);
    ASSERT_TRUE(Send(WebOut(kDbIp, 6, TcpHeader(Seg(sport, 5432, 1001, 5001, kAck)))).forward);
    ASSERT_TRUE(Send(DbIn(kWebIp, 6, TcpHeader(Seg(sport, 5432, 1001, 5001, kAck)))).forward);
  }

  VnicTable vnics_;
  CaptureTable captures_{&vnics_};
  Pipeline pipeline_;
  uint8_t replies_[1][kMaxReplyLen];
#ifdef DFW_CONFORMANCE_DPDK
  std::unique_ptr<DpdkHarness> harness_;  // declared last: stops the worker first
#endif
  uint64_t now_ms_ = 1000;
  uint32_t generation_ = 0;
};

TEST_F(PipelineTest, UnknownVnicAndVnicWithoutRulesFailClosed) {
  EXPECT_EQ(
      Send(Cat(Eth(77, false, kWebMac, kDbMac, 0x0800), Ipv4(kWebIp, kDbIp, 17, UdpHeader(1, 2))))
          .reason,
      DropReason::kUnknownVnic);
  Install(3, MacOf(0x33), {Ip4(198, 18, 3, 3)}, {}, {}, {}, {}, /*with_policy=*/false);
  Verdict v = Send(Cat(Eth(3, false, MacOf(0x33), kDbMac, 0x0800),
                       Ipv4(Ip4(198, 18, 3, 3), kDbIp, 6, TcpHeader({}))));
  EXPECT_FALSE(v.forward);
  EXPECT_EQ(v.reason, DropReason::kNoRuleset);
  EXPECT_EQ(Drops(DropReason::kNoRuleset), 1u);
}

TEST_F(PipelineTest, TcpHandshakeDataAndFinTeardown) {
  using namespace tcpflag;
  Handshake();
  EXPECT_TRUE(
      Send(WebOut(kDbIp, 6, TcpHeader(Seg(40000, 5432, 1001, 5001, kAck | kPsh, 100)))).forward);
  EXPECT_TRUE(
      Send(WebIn(kDbIp, 6, TcpHeader(Seg(5432, 40000, 5001, 1101, kAck | kPsh, 200)))).forward);
  EXPECT_TRUE(Send(WebOut(kDbIp, 6, TcpHeader(Seg(40000, 5432, 1101, 5201, kAck | kFin)))).forward);
  EXPECT_TRUE(Send(WebIn(kDbIp, 6, TcpHeader(Seg(5432, 40000, 5201, 1102, kAck | kFin)))).forward);
  EXPECT_TRUE(Send(WebOut(kDbIp, 6, TcpHeader(Seg(40000, 5432, 1102, 5202, kAck)))).forward);
  EXPECT_EQ(pipeline_.counters().rule_packets[10].Get(), 1u) << "only the SYN is classified";
  EXPECT_EQ(pipeline_.counters().rule_packets[20].Get(), 1u);
  EXPECT_EQ(pipeline_.counters().vnics[kWeb].from_vm_packets.Get(), 5u);
}

TEST_F(PipelineTest, RstTeardownAndOutOfWindowSegmentsInStrictMode) {
  using namespace tcpflag;
  Handshake();
  // SEQ far outside the window, ACK of unsent data, RST outside the window.
  EXPECT_EQ(
      Send(WebOut(kDbIp, 6, TcpHeader(Seg(40000, 5432, 1001 + 0x40000000, 5001, kAck, 10)))).reason,
      DropReason::kCtInvalid);
  EXPECT_EQ(
      Send(WebIn(kDbIp, 6, TcpHeader(Seg(5432, 40000, 5001, 1001 + 0x10000000, kAck)))).reason,
      DropReason::kCtInvalid);
  EXPECT_EQ(Send(WebIn(kDbIp, 6, TcpHeader(Seg(5432, 40000, 5001 + 0x20000000, 0, kRst)))).reason,
            DropReason::kCtInvalid);
  // The connection survived all three.
  EXPECT_TRUE(
      Send(WebOut(kDbIp, 6, TcpHeader(Seg(40000, 5432, 1001, 5001, kAck | kPsh, 10)))).forward);
  // An in-window RST ends it; after that, data is no longer established.
  EXPECT_TRUE(Send(WebIn(kDbIp, 6, TcpHeader(Seg(5432, 40000, 5001, 0, kRst)))).forward);
  Verdict after = Send(WebOut(kDbIp, 6, TcpHeader(Seg(40000, 5432, 1011, 5001, kAck | kPsh, 10))));
  EXPECT_FALSE(after.forward);
}

TEST_F(PipelineTest, MidStreamSegmentWithoutConnectionIsRefusedInStrictMode) {
  using namespace tcpflag;
  Verdict v = Send(WebOut(kDbIp, 6, TcpHeader(Seg(40001, 5432, 777, 888, kAck, 10))));
  EXPECT_FALSE(v.forward);
  EXPECT_EQ(v.reason, DropReason::kCtNoConnection);
}

TEST_F(PipelineTest, SynRetransmissionAndSimultaneousOpen) {
  using namespace tcpflag;
  ASSERT_TRUE(Send(WebOut(kDbIp, 6, TcpHeader(Seg(40002, 5432, 1000, 0, kSyn)))).forward);
  EXPECT_TRUE(Send(WebOut(kDbIp, 6, TcpHeader(Seg(40002, 5432, 1000, 0, kSyn)))).forward)
      << "a retransmitted SYN is part of the same connection";
  // Simultaneous open on web's zone: both ends send SYN, then SYN-ACKs.
  ASSERT_TRUE(Send(WebOut(kDbIp, 6, TcpHeader(Seg(40003, 5432, 100, 0, kSyn)))).forward);
  EXPECT_TRUE(Send(WebIn(kDbIp, 6, TcpHeader(Seg(5432, 40003, 900, 0, kSyn)))).forward);
  EXPECT_TRUE(Send(WebOut(kDbIp, 6, TcpHeader(Seg(40003, 5432, 100, 901, kSyn | kAck)))).forward);
  EXPECT_TRUE(Send(WebIn(kDbIp, 6, TcpHeader(Seg(5432, 40003, 900, 101, kSyn | kAck)))).forward);
  EXPECT_TRUE(
      Send(WebOut(kDbIp, 6, TcpHeader(Seg(40003, 5432, 101, 901, kAck | kPsh, 5)))).forward);
}

TEST_F(PipelineTest, DefaultDenyAndReplyOnlyForTrackedConnections) {
  using namespace tcpflag;
  // db may not open connections; web may not reach db on other ports.
  EXPECT_EQ(Send(DbOut(kWebIp, 6, TcpHeader(Seg(5432, 40000, 1, 0, kSyn)))).reason,
            DropReason::kDefaultRule);
  EXPECT_EQ(Send(WebOut(kDbIp, 6, TcpHeader(Seg(40000, 22, 1, 0, kSyn)))).reason,
            DropReason::kDefaultRule);
  EXPECT_EQ(Send(DbIn(kWebIp, 6, TcpHeader(Seg(40000, 22, 1, 0, kSyn)))).reason,
            DropReason::kDefaultRule);
  FlowEvent e;
  int denied = 0;
  while (pipeline_.flows().Pop(&e)) denied += e.kind == FlowEvent::Kind::kDenied;
  EXPECT_EQ(denied, 3);
}

TEST_F(PipelineTest, RejectSendsRstToTheVm) {
  using namespace tcpflag;
  Verdict v = Send(WebOut(kOtherIp, 6, TcpHeader(Seg(41000, 8443, 7000, 0, kSyn))));
  EXPECT_FALSE(v.forward);
  EXPECT_EQ(v.reason, DropReason::kPolicyReject);
  ASSERT_GT(v.reply_len, 0);
  Bytes r = LastReply(v);
  ParsedPacket p;
  ASSERT_EQ(ParseFrame(r.data(), static_cast<uint32_t>(r.size()), &p), DropReason::kNone);
  EXPECT_EQ(p.local_id, kWeb);
  EXPECT_EQ(p.dir, Direction::kIn) << "back toward the VM that sent the SYN";
  EXPECT_EQ(0, std::memcmp(p.dst_mac, kWebMac.data(), 6));
  EXPECT_EQ(p.src.lo, kOtherIp);
  EXPECT_EQ(p.dst.lo, kWebIp);
  EXPECT_EQ(p.sport, 8443);
  EXPECT_EQ(p.dport, 41000);
  EXPECT_EQ(p.tcp_flags, kRst | kAck);
  EXPECT_EQ(p.tcp_ack, 7001u);
  EXPECT_EQ(pipeline_.counters().rejects_sent.Get(), 1u);
}

TEST_F(PipelineTest, RejectSendsIcmpUnreachableForUdp) {
  Verdict v = Send(WebOut(kOtherIp, 17, UdpHeader(5555, 53)));
  ASSERT_GT(v.reply_len, 0);
  Bytes r = LastReply(v);
  ParsedPacket p;
  ASSERT_EQ(ParseFrame(r.data(), static_cast<uint32_t>(r.size()), &p), DropReason::kNone);
  EXPECT_EQ(p.proto, 1);
  EXPECT_EQ(p.icmp_type, 3);
  EXPECT_EQ(p.icmp_code, 13);
  EXPECT_TRUE(p.icmp_error);
  EXPECT_EQ(p.inner.src.lo, kWebIp);
  EXPECT_EQ(p.inner.dport, 53);
}

TEST_F(PipelineTest, RejectOfAGroupAddressedPacketSendsNothing) {
  const Mac kBroadcast{0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  const Mac kMdns{0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb};
  // Refused (rule 40 rejects UDP/53 out) but never answered: a reply would
  // come from the broadcast or group address.
  struct Case {
    const char* what;
    Mac dst_mac;
    uint32_t dst_ip;
  } cases[] = {{"broadcast MAC, subnet broadcast IP", kBroadcast, (kOtherIp & ~0xffu) | 0xff},
               {"broadcast MAC, limited broadcast IP", kBroadcast, 0xffffffffu},
               {"multicast MAC and IP", kMdns, 0xe00000fbu},
               {"unicast MAC, multicast IP", kDbMac, 0xe00000fbu},
               {"unicast MAC, limited broadcast IP", kDbMac, 0xffffffffu}};
  for (const Case& c : cases) {
    Verdict v = Send(Cat(Eth(kWeb, false, kWebMac, c.dst_mac, 0x0800),
                         Ipv4(kWebIp, c.dst_ip, 17, UdpHeader(5555, 53))));
    EXPECT_FALSE(v.forward) << c.what;
    EXPECT_EQ(v.reason, DropReason::kPolicyReject) << c.what;
    EXPECT_EQ(v.reply_len, 0) << c.what;
  }
  const Ip128 kAllNodes6{0xff02000000000000ull, 0xfb};
  Verdict v6 = Send(Cat(Eth(kWeb, false, kWebMac, Mac{0x33, 0x33, 0, 0, 0, 0xfb}, 0x86dd),
                        Ipv6(kWeb6, kAllNodes6, 17, UdpHeader(5555, 53))));
  EXPECT_EQ(v6.reason, DropReason::kPolicyReject) << "IPv6 multicast";
  EXPECT_EQ(v6.reply_len, 0) << "IPv6 multicast";
  EXPECT_EQ(pipeline_.counters().rejects_sent.Get(), 0u);
  // The same packet to a unicast address is answered.
  EXPECT_GT(Send(WebOut(kOtherIp, 17, UdpHeader(5555, 53))).reply_len, 0);
}

TEST_F(PipelineTest, IcmpEchoAndRelatedErrors) {
  ASSERT_TRUE(Send(WebOut(kDbIp, 1, IcmpHeader(8, 0, 77))).forward);
  EXPECT_TRUE(Send(WebIn(kDbIp, 1, IcmpHeader(0, 0, 77))).forward) << "echo reply matches";
  EXPECT_FALSE(Send(WebIn(kDbIp, 1, IcmpHeader(0, 0, 78))).forward) << "unsolicited echo reply";
  // A UDP flow web -> other:9999 (allowed), then an ICMP error about it.
  ASSERT_TRUE(Send(WebOut(kOtherIp, 17, UdpHeader(6000, 9999))).forward);
  Bytes inner = Ipv4(kWebIp, kOtherIp, 17, UdpHeader(6000, 9999));
  Bytes icmp{3, 3, 0, 0, 0, 0, 0, 0};
  icmp.insert(icmp.end(), inner.begin(), inner.begin() + 28);
  EXPECT_TRUE(Send(WebIn(kOtherIp, 1, icmp)).forward) << "related to the UDP flow";
  Bytes unrelated_inner = Ipv4(kWebIp, kOtherIp, 17, UdpHeader(6001, 9999));
  Bytes icmp2{3, 3, 0, 0, 0, 0, 0, 0};
  icmp2.insert(icmp2.end(), unrelated_inner.begin(), unrelated_inner.begin() + 28);
  Verdict v = Send(WebIn(kOtherIp, 1, icmp2));
  EXPECT_FALSE(v.forward);
  EXPECT_EQ(v.reason, DropReason::kIcmpErrorUnrelated);
}

TEST_F(PipelineTest, UdpRepliesPassOnlyForTheFlow) {
  ASSERT_TRUE(Send(WebOut(kOtherIp, 17, UdpHeader(6100, 9999))).forward);
  EXPECT_TRUE(Send(WebIn(kOtherIp, 17, UdpHeader(9999, 6100))).forward);
  EXPECT_EQ(Send(WebIn(kOtherIp, 17, UdpHeader(9999, 6101))).reason, DropReason::kDefaultRule);
}

TEST_F(PipelineTest, FragmentsFollowTheirFirst) {
  // Allowed datagram web -> other:9999 in two fragments.
  Bytes first_l4{0x17, 0x70, 0x27, 0x0f, 0, 40, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8};
  Bytes first = Cat(Eth(kWeb, false, kWebMac, kDbMac, 0x0800),
                    Ipv4(kWebIp, kOtherIp, 17, first_l4, 0, true, 500));
  Bytes second = Cat(Eth(kWeb, false, kWebMac, kDbMac, 0x0800),
                     Ipv4(kWebIp, kOtherIp, 17, Bytes(24, 0), 16, false, 500));
  ASSERT_TRUE(Send(first).forward);
  EXPECT_TRUE(Send(second).forward);
  EXPECT_EQ(Send(second).reason, DropReason::kOverlappingFragment) << "the same bytes again";
  // A fragment whose first never came.
  Bytes orphan = Cat(Eth(kWeb, false, kWebMac, kDbMac, 0x0800),
                     Ipv4(kWebIp, kOtherIp, 17, Bytes(24, 0), 16, false, 501));
  EXPECT_EQ(Send(orphan).reason, DropReason::kFragmentNoFirst);
  // A denied datagram's later fragments are denied too.
  Bytes denied_l4{0x17, 0x70, 0x00, 0x16, 0, 40, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8};
  ASSERT_FALSE(Send(Cat(Eth(kWeb, false, kWebMac, kDbMac, 0x0800),
                        Ipv4(kWebIp, kOtherIp, 17, denied_l4, 0, true, 502)))
                   .forward);
  EXPECT_EQ(Send(Cat(Eth(kWeb, false, kWebMac, kDbMac, 0x0800),
                     Ipv4(kWebIp, kOtherIp, 17, Bytes(24, 0), 16, false, 502)))
                .reason,
            DropReason::kDefaultRule);
  // Tiny TCP first fragment.
  EXPECT_EQ(Send(Cat(Eth(kWeb, false, kWebMac, kDbMac, 0x0800),
                     Ipv4(kWebIp, kDbIp, 6, Bytes(8, 0), 0, true, 503)))
                .reason,
            DropReason::kTinyFragment);
}

TEST_F(PipelineTest, Ipv6WithExtensionHeadersIsClassifiedOnItsL4) {
  using namespace tcpflag;
  Bytes chain = Cat(Ext8(60), Cat(Ext8(6), TcpHeader(Seg(40010, 5432, 1, 0, kSyn))));
  Bytes f = Cat(Eth(kWeb, false, kWebMac, kDbMac, 0x86dd), Ipv6(kWeb6, kDb6, 0, chain));
  EXPECT_TRUE(Send(f).forward);
  Bytes chain22 = Cat(Ext8(60), Cat(Ext8(6), TcpHeader(Seg(40011, 22, 1, 0, kSyn))));
  EXPECT_EQ(
      Send(Cat(Eth(kWeb, false, kWebMac, kDbMac, 0x86dd), Ipv6(kWeb6, kDb6, 0, chain22))).reason,
      DropReason::kDefaultRule);
}

TEST_F(PipelineTest, SpoofguardOnEgress) {
  using namespace tcpflag;
  Bytes bad_mac = Cat(Eth(kWeb, false, MacOf(0x99), kDbMac, 0x0800),
                      Ipv4(kWebIp, kDbIp, 6, TcpHeader(Seg(1, 5432, 1, 0, kSyn))));
  EXPECT_EQ(Send(bad_mac).reason, DropReason::kSpoofSrcMac);
  Bytes bad_ip = Cat(Eth(kWeb, false, kWebMac, kDbMac, 0x0800),
                     Ipv4(kOtherIp, kDbIp, 6, TcpHeader(Seg(1, 5432, 1, 0, kSyn))));
  EXPECT_EQ(Send(bad_ip).reason, DropReason::kSpoofSrcIp);
  // ARP: claiming db's address, or another MAC inside the ARP body.
  EXPECT_EQ(Send(Cat(Eth(kWeb, false, kWebMac, MacOf(0xff), 0x0806),
                     Arp(2, kWebMac, kDbIp, kDbMac, kDbIp)))
                .reason,
            DropReason::kSpoofArp);
  EXPECT_EQ(Send(Cat(Eth(kWeb, false, kWebMac, MacOf(0xff), 0x0806),
                     Arp(1, kDbMac, kWebIp, Mac{}, kDbIp)))
                .reason,
            DropReason::kSpoofArp);
  EXPECT_TRUE(Send(Cat(Eth(kWeb, false, kWebMac, MacOf(0xff), 0x0806),
                       Arp(1, kWebMac, kWebIp, Mac{}, kDbIp)))
                  .forward);
  EXPECT_TRUE(
      Send(Cat(Eth(kWeb, false, kWebMac, MacOf(0xff), 0x0806), Arp(1, kWebMac, 0, Mac{}, kWebIp)))
          .forward)
      << "ARP probe from 0.0.0.0";
  // ND: advertising db's address; a router advertisement from a VM.
  EXPECT_EQ(Send(Cat(Eth(kWeb, false, kWebMac, MacOf(0xff), 0x86dd),
                     Ipv6(kWeb6, kDb6, 58, NdMessage(136, kDb6, kWebMac))))
                .reason,
            DropReason::kSpoofNd);
  Bytes ra{134, 0, 0, 0, 64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  EXPECT_EQ(
      Send(Cat(Eth(kWeb, false, kWebMac, MacOf(0xff), 0x86dd), Ipv6(kWeb6, kDb6, 58, ra))).reason,
      DropReason::kSpoofNd);
  EXPECT_TRUE(Send(Cat(Eth(kWeb, false, kWebMac, MacOf(0xff), 0x86dd),
                       Ipv6(kWeb6, kDb6, 58, NdMessage(136, kWeb6, kWebMac))))
                  .forward);
  // Ingress is not spoof-checked: it is the sender's vNIC's job.
  EXPECT_TRUE(Send(Cat(Eth(kDb, true, MacOf(0x99), kDbMac, 0x0806),
                       Arp(1, MacOf(0x99), kOtherIp, Mac{}, kDbIp)))
                  .forward);
}

// Spoofguard's bound-address index (VnicState::IndexBoundV4: open addressing
// above 8 addresses) against a std::set on random sets of 0-600 addresses,
// dense and sparse, 0.0.0.0 included, before and after indexing.
TEST(BoundAddressIndex, AgreesWithASetOnRandomSets) {
  std::mt19937 rng(7);
  for (int round = 0; round < 400; ++round) {
    VnicState st;
    std::set<uint32_t> model;
    const size_t n = round < 40 ? static_cast<size_t>(round) : rng() % 600;
    const bool dense = rng() % 2;
    auto draw = [&] {
      return dense ? Ip4(198, 18, 0, 0) + rng() % 1024 : static_cast<uint32_t>(rng());
    };
    for (size_t i = 0; i < n; ++i) {
      const uint32_t a = rng() % 50 == 0 ? 0 : draw();
      st.bound_v4.push_back(a);
      model.insert(a);
    }
    st.IndexBoundV4();
    ASSERT_EQ(st.bound_v4, std::vector<uint32_t>(model.begin(), model.end()));
    for (int q = 0; q < 2000; ++q) {
      const uint32_t a = q % 3 == 0 && !model.empty()
                             ? *std::next(model.begin(), rng() % model.size())
                         : q % 97 == 0 ? 0
                                       : draw();
      ASSERT_EQ(st.BindsV4(a), model.count(a) == 1) << "round " << round << " n " << n << " " << a;
    }
  }
}

TEST_F(PipelineTest, DoubleTaggedFramesAreDropped) {
  Bytes dbl = Eth(kWeb, false, kWebMac, kDbMac, 0x8100);
  Put16(dbl, 42);
  Put16(dbl, 0x0800);
  EXPECT_EQ(Send(Cat(dbl, Ipv4(kWebIp, kDbIp, 17, UdpHeader(1, 2)))).reason,
            DropReason::kInnerVlan);
  EXPECT_EQ(Drops(DropReason::kInnerVlan), 1u);
}

TEST_F(PipelineTest, AuditModeRecordsAndLetsThrough) {
  RulesetSpec web;
  web.rules.push_back(Rule(70, "", "", 6, 22, RuleDirection::kOut, Action::kDrop));
  Install(kWeb, kWebMac, {kWebIp}, {kWeb6}, web, {70}, {RuleOpts{Action::kDrop, /*audit=*/true}});
  EXPECT_TRUE(Send(WebOut(kDbIp, 6, TcpHeader(Seg(40100, 22, 1, 0, tcpflag::kSyn)))).forward);
  EXPECT_EQ(pipeline_.counters().audited.Get(), 1u);
  FlowEvent e;
  bool audit = false;
  while (pipeline_.flows().Pop(&e))
    audit = audit || (e.kind == FlowEvent::Kind::kAudit && e.rule_num == 70);
  EXPECT_TRUE(audit);
}

TEST_F(PipelineTest, PolicyChangeRevalidatesOrKeepsEstablishedConnections) {
  using namespace tcpflag;
  // Two connections admitted by rules of different on-change modes.
  RulesetSpec web;
  web.address_sets = {{"db", {Host4(kDbIp)}}};
  web.rules = {Rule(80, "", "db", 6, 5432, RuleDirection::kOut),
               Rule(81, "", "db", 6, 6432, RuleDirection::kOut)};
  Install(kWeb, kWebMac, {kWebIp}, {}, web, {80, 81},
          {RuleOpts{Action::kAllow, false, /*revalidate=*/true},
           RuleOpts{Action::kAllow, false, false}});
  ASSERT_TRUE(Send(WebOut(kDbIp, 6, TcpHeader(Seg(42000, 5432, 1, 0, kSyn)))).forward);
  ASSERT_TRUE(Send(WebOut(kDbIp, 6, TcpHeader(Seg(42001, 6432, 1, 0, kSyn)))).forward);
  // The new policy allows neither port.
  RulesetSpec none;
  Install(kWeb, kWebMac, {kWebIp}, {}, none, {});
  EXPECT_EQ(Send(WebOut(kDbIp, 6, TcpHeader(Seg(42000, 5432, 1, 0, kSyn)))).reason,
            DropReason::kDefaultRule)
      << "revalidated and cut";
  EXPECT_TRUE(Send(WebOut(kDbIp, 6, TcpHeader(Seg(42001, 6432, 1, 0, kSyn)))).forward) << "kept";
}

#ifndef DFW_CONFORMANCE_DPDK
// Session totals: a connection's packets and bytes go to its rule when it
// ends. These drive the clock, Maintain and Flush themselves, so they run on
// Pipeline::Process directly only (the DPDK worker ages on its own clock).
class SessionTotalsTest : public PipelineTest {
 protected:
  // web:40000 -> db:5432 (rule 10 on web, rule 20 on db), then `k` data
  // segments each way across web's side only.
  void Open(int k) {
    using namespace tcpflag;
    ASSERT_NO_FATAL_FAILURE(Handshake());
    for (int i = 0; i < k; ++i) {
      const uint32_t out = 1001 + 100u * i, in = 5001 + 200u * i;
      ASSERT_TRUE(
          Send(WebOut(kDbIp, 6, TcpHeader(Seg(40000, 5432, out, in, kAck | kPsh, 100)))).forward);
      ASSERT_TRUE(
          Send(WebIn(kDbIp, 6, TcpHeader(Seg(5432, 40000, in, out + 100, kAck | kPsh, 200))))
              .forward);
    }
  }
  // The next sequence numbers after Open(k).
  static uint32_t OutSeq(int k) { return 1001 + 100u * k; }
  static uint32_t InSeq(int k) { return 5001 + 200u * k; }

  // The one live connection of `zone`, as the table counts it.
  ConnInfo Entry(uint16_t zone) {
    ConnInfo found;
    int n = 0;
    pipeline_.conntrack().ForEach(now_ms_, [&](uint32_t, const ConnInfo& c) {
      if (c.zone == zone) {
        found = c;
        ++n;
      }
    });
    EXPECT_EQ(n, 1) << "connections of zone " << zone;
    return found;
  }
  uint64_t SessionPackets(uint32_t rule) {
    return pipeline_.counters().rule_session_packets[rule].Get();
  }
  uint64_t SessionBytes(uint32_t rule) {
    return pipeline_.counters().rule_session_bytes[rule].Get();
  }
  // Every session total of every rule but `except` is 0.
  void ExpectOthersZero(std::set<uint32_t> except) {
    for (uint32_t r = 0; r < pipeline_.counters().rules; ++r) {
      if (except.count(r)) continue;
      EXPECT_EQ(SessionPackets(r), 0u) << "rule " << r;
      EXPECT_EQ(SessionBytes(r), 0u) << "rule " << r;
    }
  }
  void Age(uint64_t ms) {
    now_ms_ += ms;
    pipeline_.Maintain(now_ms_, pipeline_.conntrack().capacity());
  }
  // The "ended" records written since the last call: (zone, rule, packets).
  std::vector<std::tuple<uint16_t, uint32_t, uint64_t>> Ended() {
    std::vector<std::tuple<uint16_t, uint32_t, uint64_t>> out;
    for (FlowEvent e; pipeline_.flows().Pop(&e);) {
      if (e.kind == FlowEvent::Kind::kEnded) out.emplace_back(e.local_id, e.rule_num, e.packets);
    }
    std::sort(out.begin(), out.end());
    return out;
  }
  using Ends = std::vector<std::tuple<uint16_t, uint32_t, uint64_t>>;
};

TEST_F(SessionTotalsTest, FinClosedConnectionIsCountedWhenItAgesOutNotBefore) {
  using namespace tcpflag;
  ASSERT_NO_FATAL_FAILURE(Open(3));
  const int k = 3;
  EXPECT_TRUE(Send(WebOut(kDbIp, 6, TcpHeader(Seg(40000, 5432, OutSeq(k), InSeq(k), kAck | kFin))))
                  .forward);
  EXPECT_TRUE(
      Send(WebIn(kDbIp, 6, TcpHeader(Seg(5432, 40000, InSeq(k), OutSeq(k) + 1, kAck | kFin))))
          .forward);
  EXPECT_TRUE(Send(WebOut(kDbIp, 6, TcpHeader(Seg(40000, 5432, OutSeq(k) + 1, InSeq(k) + 1, kAck))))
                  .forward);
  const ConnInfo web = Entry(kWeb);
  EXPECT_EQ(web.policy.rule_num, 10u);
  EXPECT_EQ(web.packets, 3u + 2u * k + 3u);  // handshake, data both ways, FIN, FIN, ACK
  // Closed but still in the table: not counted yet.
  Age(1000);
  ExpectOthersZero({});
  // Past the FIN timeouts: web's entry ends; db's (it saw the handshake
  // only, still established) stays open and uncounted.
  Age(ConnTimeouts{}.tcp_fin + 1);
  EXPECT_EQ(SessionPackets(10), web.packets);
  EXPECT_EQ(SessionBytes(10), web.bytes);
  EXPECT_EQ(pipeline_.counters().rule_packets[10].Get(), 1u) << "hits: the SYN only";
  ExpectOthersZero({10});
  EXPECT_EQ(Entry(kDb).policy.rule_num, 20u);
}

TEST_F(SessionTotalsTest, RstClosedConnectionIsCountedWhenItAgesOut) {
  using namespace tcpflag;
  ASSERT_NO_FATAL_FAILURE(Open(2));
  EXPECT_TRUE(Send(WebIn(kDbIp, 6, TcpHeader(Seg(5432, 40000, InSeq(2), 0, kRst)))).forward);
  const ConnInfo web = Entry(kWeb);
  EXPECT_EQ(web.state, ConnState::kClosed);
  EXPECT_EQ(web.packets, 3u + 4u + 1u);
  ExpectOthersZero({});
  Age(ConnTimeouts{}.tcp_closed + 1);
  EXPECT_EQ(SessionPackets(10), web.packets);
  EXPECT_EQ(SessionBytes(10), web.bytes);
  ExpectOthersZero({10});
}

TEST_F(SessionTotalsTest, EstablishedConnectionIsCountedWhenItAgesOut) {
  ASSERT_NO_FATAL_FAILURE(Open(4));
  const ConnInfo web = Entry(kWeb), db = Entry(kDb);
  EXPECT_EQ(web.packets, 3u + 8u);
  EXPECT_EQ(db.packets, 3u);
  // Open for a day less a second: nothing yet.
  Age(ConnTimeouts{}.tcp_established - 1000);
  ExpectOthersZero({});
  EXPECT_EQ(Ended(), Ends{});
  Age(1001);
  EXPECT_EQ(Ended(), (Ends{{kWeb, 10, web.packets}, {kDb, 20, db.packets}}));
  EXPECT_EQ(SessionPackets(10), web.packets);
  EXPECT_EQ(SessionBytes(10), web.bytes);
  EXPECT_EQ(SessionPackets(20), db.packets);
  EXPECT_EQ(SessionBytes(20), db.bytes);
  ExpectOthersZero({10, 20});
  EXPECT_EQ(pipeline_.conntrack().size(), 0u);
}

TEST_F(SessionTotalsTest, FlushEndsTheZonesConnections) {
  ASSERT_NO_FATAL_FAILURE(Open(2));
  const ConnInfo web = Entry(kWeb), db = Entry(kDb);
  Ended();
  EXPECT_EQ(pipeline_.conntrack().Flush(kWeb), 1u);
  EXPECT_EQ(Ended(), (Ends{{kWeb, 10, web.packets}}));  // an end, recorded as such
  EXPECT_EQ(SessionPackets(10), web.packets);
  EXPECT_EQ(SessionBytes(10), web.bytes);
  ExpectOthersZero({10});  // db's connection is still open
  EXPECT_EQ(pipeline_.conntrack().Flush(-1), 1u);
  EXPECT_EQ(Ended(), (Ends{{kDb, 20, db.packets}}));
  EXPECT_EQ(SessionPackets(20), db.packets);
  EXPECT_EQ(SessionBytes(20), db.bytes);
  EXPECT_EQ(SessionPackets(10), web.packets) << "counted once";
  ExpectOthersZero({10, 20});
}

TEST_F(SessionTotalsTest, ConnectionCutOnRevalidationIsCountedAndAMovedOneIsNot) {
  using namespace tcpflag;
  RulesetSpec web;
  web.address_sets = {{"db", {Host4(kDbIp)}}};
  web.rules = {Rule(80, "", "db", 6, 5432, RuleDirection::kOut)};
  Install(kWeb, kWebMac, {kWebIp}, {}, web, {80}, {RuleOpts{Action::kAllow, false, true}});
  ASSERT_TRUE(Send(WebOut(kDbIp, 6, TcpHeader(Seg(42000, 5432, 1, 0, kSyn)))).forward);
  ASSERT_TRUE(Send(WebOut(kDbIp, 6, TcpHeader(Seg(42000, 5432, 1, 0, kSyn)))).forward);
  const ConnInfo cut = Entry(kWeb);
  EXPECT_EQ(cut.packets, 2u);
  Install(kWeb, kWebMac, {kWebIp}, {}, RulesetSpec{}, {});
  // The third SYN is tracked (counted by the entry), then cut with it.
  EXPECT_EQ(Send(WebOut(kDbIp, 6, TcpHeader(Seg(42000, 5432, 1, 0, kSyn)))).reason,
            DropReason::kDefaultRule);
  EXPECT_EQ(pipeline_.conntrack().size(), 0u);
  EXPECT_EQ(SessionPackets(80), 3u);
  EXPECT_EQ(SessionBytes(80), cut.bytes / 2 * 3);
  ExpectOthersZero({80});
  EXPECT_EQ(Ended(), (Ends{{kWeb, 80, 3}}));  // the cut is the connection's end

  // Exported to leave with its VM: removed here, not ended here.
  Install(kWeb, kWebMac, {kWebIp}, {}, web, {80}, {RuleOpts{Action::kAllow, false, true}});
  ASSERT_TRUE(Send(WebOut(kDbIp, 6, TcpHeader(Seg(42001, 5432, 1, 0, kSyn)))).forward);
  EXPECT_EQ(pipeline_.conntrack().MarkMoved(kWeb, now_ms_), 1u);
  Age(ConnTimeouts{}.tcp_syn + 1);
  EXPECT_EQ(pipeline_.conntrack().size(), 0u);
  EXPECT_EQ(SessionPackets(80), 3u) << "the moved connection is not counted";
  ExpectOthersZero({80});
  EXPECT_EQ(Ended(), Ends{}) << "nor recorded as ended";
}
#endif  // DFW_CONFORMANCE_DPDK

TEST_F(PipelineTest, CountersAndFlowRecordsNameEveryDrop) {
  using namespace tcpflag;
  Send(Bytes(5, 0));
  Send(WebOut(kDbIp, 6, TcpHeader(Seg(40000, 22, 1, 0, kSyn))));
  EXPECT_EQ(Drops(DropReason::kRunt), 1u);
  EXPECT_EQ(Drops(DropReason::kDefaultRule), 1u);
  uint64_t total = 0;
  for (const auto& c : pipeline_.counters().drops) total += c.Get();
  EXPECT_EQ(total, 2u);
  FlowEvent e;
  ASSERT_TRUE(pipeline_.flows().Pop(&e));
  std::string json = FlowEventJson(e, "web-1-eth0");
  EXPECT_NE(json.find("\"kind\":\"denied\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"dport\":22"), std::string::npos) << json;
  EXPECT_NE(json.find("\"reason\":\"default-rule\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"src\":\"198.18.1.11\""), std::string::npos) << json;
}

}  // namespace
}  // namespace dfw::dataplane

namespace dfw::dataplane {
namespace {

// ---- one-shot captures (capture.h): what dfwctl trace --live and probe read

CaptureFilter Filter(uint16_t vnic, Direction dir, uint8_t proto = 0, uint16_t dport = 0) {
  CaptureFilter f;
  f.local_id = vnic;
  f.dir = dir;
  f.proto = proto;
  f.dport = dport;
  return f;
}

TEST_F(PipelineTest, CaptureRecordsTheFirstMatchingFrameWithItsStageAndRule) {
  using namespace tcpflag;
  auto h = captures_.Arm(Filter(kWeb, Direction::kOut, 6, 5432), now_ms_ + 10000);
  ASSERT_TRUE(h);
  EXPECT_EQ(captures_.armed(), 1u);
  // Frames of other flows, vNICs or directions leave it armed.
  EXPECT_FALSE(Send(WebOut(kDbIp, 17, UdpHeader(40000, 53))).forward);
  EXPECT_TRUE(Send(DbIn(kWebIp, 6, TcpHeader(Seg(40000, 5432, 1000, 0, kSyn)))).forward);
  EXPECT_EQ(captures_.Poll(*h, now_ms_).state, CaptureTable::State::kArmed);
  // The first SYN meets it.
  EXPECT_TRUE(Send(WebOut(kDbIp, 6, TcpHeader(Seg(40000, 5432, 1000, 0, kSyn)))).forward);
  CaptureTable::Status st = captures_.Poll(*h, now_ms_);
  ASSERT_EQ(st.state, CaptureTable::State::kMet);
  EXPECT_TRUE(st.hit.forward);
  EXPECT_EQ(st.hit.stage, Stage::kRule);
  EXPECT_EQ(st.hit.rule_num, 10u);
  EXPECT_EQ(st.hit.sport, 40000);
  EXPECT_EQ(st.hit.dport, 5432);
  EXPECT_EQ(st.hit.src, (Ip128{0, kWebIp}));
  EXPECT_EQ(captures_.armed(), 0u) << "met: the workers stop comparing";
  // A later frame of the flow does not overwrite it.
  EXPECT_FALSE(Send(WebOut(kDbIp, 6, TcpHeader(Seg(40001, 5432, 1, 0, kFin)))).forward);
  EXPECT_EQ(captures_.Poll(*h, now_ms_).hit.sport, 40000);
  captures_.Release(*h);
  EXPECT_EQ(captures_.Poll(*h, now_ms_).state, CaptureTable::State::kFree);
}

TEST_F(PipelineTest, CaptureNamesEveryStageThatDecides) {
  using namespace tcpflag;
  struct Case {
    std::string what;
    CaptureFilter filter;
    Bytes frame;
    bool forward;
    Stage stage;
    DropReason reason;
    uint32_t rule;
  };
  Handshake(41000);  // an established connection for the conntrack stage
  const Bytes syn22 = WebOut(kDbIp, 6, TcpHeader(Seg(41001, 22, 1, 0, kSyn)));
  const Bytes syn8443 = WebOut(kDbIp, 6, TcpHeader(Seg(41002, 8443, 1, 0, kSyn)));
  const Bytes spoofed = Cat(Eth(kWeb, false, kWebMac, kDbMac, 0x0800),
                            Ipv4(kOtherIp, kDbIp, 6, TcpHeader(Seg(41003, 5432, 1, 0, kSyn))));
  const Bytes reply = WebIn(kDbIp, 6, TcpHeader(Seg(5432, 41000, 5001, 1001, kAck)));
  const Bytes stray = DbIn(kWebIp, 6, TcpHeader(Seg(41004, 5432, 9, 9, kAck)));
  const Bytes arp =
      Cat(Eth(kWeb, false, kWebMac, MacOf(0xff), 0x0806), Arp(1, kWebMac, kWebIp, Mac{}, kDbIp));
  const std::vector<Case> cases = {
      {"default rule", Filter(kWeb, Direction::kOut, 6, 22), syn22, false, Stage::kDefaultRule,
       DropReason::kDefaultRule, 0},
      {"reject rule", Filter(kWeb, Direction::kOut, 6, 8443), syn8443, false, Stage::kRule,
       DropReason::kPolicyReject, 50},
      {"spoofguard", Filter(kWeb, Direction::kOut, 6, 5432), spoofed, false, Stage::kSpoofguard,
       DropReason::kSpoofSrcIp, 0},
      {"established", Filter(kWeb, Direction::kIn, 6), reply, true, Stage::kConntrack,
       DropReason::kNone, 0},
      {"mid-stream", Filter(kDb, Direction::kIn, 6), stray, false, Stage::kConntrack,
       DropReason::kCtNoConnection, 0},
      {"arp", Filter(kWeb, Direction::kOut, 0), arp, true, Stage::kAddressResolution,
       DropReason::kNone, 0},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    auto h = captures_.Arm(c.filter, now_ms_ + 1000);
    ASSERT_TRUE(h);
    Verdict v = Send(c.frame);
    CaptureTable::Status st = captures_.Poll(*h, now_ms_);
    ASSERT_EQ(st.state, CaptureTable::State::kMet);
    EXPECT_EQ(st.hit.forward, v.forward) << "the capture reports the verdict the frame got";
    EXPECT_EQ(st.hit.forward, c.forward);
    EXPECT_EQ(st.hit.stage, c.stage);
    EXPECT_EQ(st.hit.reason, c.reason);
    EXPECT_EQ(st.hit.rule_num, c.rule);
    captures_.Release(*h);
  }
  // A vNIC without rules: fail closed, named.
  Install(3, MacOf(0x33), {Ip4(198, 18, 3, 3)}, {}, {}, {}, {}, /*with_policy=*/false);
  auto h = captures_.Arm(Filter(3, Direction::kOut), now_ms_ + 1000);
  ASSERT_TRUE(h);
  Send(Cat(Eth(3, false, MacOf(0x33), kDbMac, 0x0800),
           Ipv4(Ip4(198, 18, 3, 3), kDbIp, 6, TcpHeader({}))));
  CaptureTable::Status st = captures_.Poll(*h, now_ms_);
  EXPECT_EQ(st.hit.stage, Stage::kNoRuleset);
  EXPECT_EQ(st.hit.reason, DropReason::kNoRuleset);
}

TEST_F(PipelineTest, CaptureOfAnAuditRuleSaysWhatItWouldHaveDenied) {
  RulesetSpec web;
  web.rules.push_back(Rule(70, "", "", 6, 22, RuleDirection::kOut, Action::kDrop));
  Install(kWeb, kWebMac, {kWebIp}, {kWeb6}, web, {70}, {RuleOpts{Action::kDrop, /*audit=*/true}});
  auto h = captures_.Arm(Filter(kWeb, Direction::kOut, 6, 22), now_ms_ + 1000);
  ASSERT_TRUE(h);
  EXPECT_TRUE(Send(WebOut(kDbIp, 6, TcpHeader(Seg(40100, 22, 1, 0, tcpflag::kSyn)))).forward);
  CaptureTable::Status st = captures_.Poll(*h, now_ms_);
  EXPECT_TRUE(st.hit.forward);
  EXPECT_TRUE(st.hit.audit);
  EXPECT_EQ(st.hit.rule_num, 70u);
}

TEST_F(PipelineTest, CapturesExpireAreBoundedAndTheirSlotsAreReused) {
  std::vector<uint32_t> handles;
  for (uint32_t i = 0; i < CaptureTable::kSlots; ++i) {
    auto h = captures_.Arm(Filter(kWeb, Direction::kOut, 17, static_cast<uint16_t>(1000 + i)),
                           now_ms_ + 100);
    ASSERT_TRUE(h);
    handles.push_back(*h);
  }
  EXPECT_FALSE(captures_.Arm(Filter(kWeb, Direction::kOut), now_ms_ + 100)) << "all in use";
  EXPECT_EQ(captures_.Poll(handles[0], now_ms_ + 100).state, CaptureTable::State::kArmed);
  EXPECT_EQ(captures_.Poll(handles[0], now_ms_ + 101).state, CaptureTable::State::kExpired);
  EXPECT_EQ(captures_.armed(), CaptureTable::kSlots - 1);
  // An expired capture is not met by a late frame.
  Send(WebOut(kDbIp, 17, UdpHeader(5, 1000)));
  EXPECT_EQ(captures_.Poll(handles[0], now_ms_ + 102).state, CaptureTable::State::kExpired);
  for (uint32_t h : handles) captures_.Release(h);
  EXPECT_EQ(captures_.armed(), 0u);
  // A freed slot is reused under a new handle; the old handle is unknown.
  auto again = captures_.Arm(Filter(kWeb, Direction::kOut, 17, 1000), now_ms_ + 100);
  ASSERT_TRUE(again);
  EXPECT_NE(*again, handles[0]);
  EXPECT_EQ(captures_.Poll(handles[0], now_ms_).state, CaptureTable::State::kFree);
  Send(WebOut(kDbIp, 17, UdpHeader(5, 1000)));
  EXPECT_EQ(captures_.Poll(*again, now_ms_).state, CaptureTable::State::kMet);
}

// Against a reference model: random frames (both vNICs, both directions,
// TCP/UDP, several ports and addresses) and random filters armed between
// them; each capture must hold exactly the first frame sent after its
// arming that meets its filter (by a plain field comparison here), with
// the verdict Process gave that frame.
TEST_F(PipelineTest, CapturesAgreeWithAReferenceModelOnRandomTraffic) {
  std::mt19937 rng(11);
  struct Sent {
    uint16_t vnic;
    Direction dir;
    uint8_t proto;
    uint32_t src, dst;
    uint16_t sport, dport;
    Verdict v;
  };
  const uint16_t ports[] = {22, 53, 5432, 8443, 9999};
  for (int round = 0; round < 40; ++round) {
    struct Armed {
      uint32_t handle;
      CaptureFilter f;
      size_t from;  // index of the first frame sent after arming
    };
    std::vector<Armed> armed;
    std::vector<Sent> sent;
    for (int step = 0; step < 60; ++step) {
      if (rng() % 4 == 0 && armed.size() < CaptureTable::kSlots) {
        CaptureFilter f =
            Filter(rng() % 2 ? kWeb : kDb, rng() % 2 ? Direction::kIn : Direction::kOut,
                   rng() % 3 == 0 ? 0 : (rng() % 2 ? 6 : 17), rng() % 2 ? 0 : ports[rng() % 5]);
        if (rng() % 3 == 0) {
          f.has_dst = true;
          f.dst = Ip128{0, rng() % 2 ? kDbIp : kWebIp};
        }
        if (rng() % 4 == 0) f.sport = static_cast<uint16_t>(40000 + rng() % 3);
        auto h = captures_.Arm(f, now_ms_ + 100000);
        ASSERT_TRUE(h);
        armed.push_back({*h, f, sent.size()});
      }
      Sent s;
      s.vnic = rng() % 2 ? kWeb : kDb;
      s.dir = rng() % 2 ? Direction::kIn : Direction::kOut;
      s.proto = rng() % 2 ? 6 : 17;
      s.sport = static_cast<uint16_t>(40000 + rng() % 3);
      s.dport = ports[rng() % 5];
      const uint32_t self = s.vnic == kWeb ? kWebIp : kDbIp, peer = s.vnic == kWeb ? kDbIp : kWebIp;
      s.src = s.dir == Direction::kOut ? self : peer;
      s.dst = s.dir == Direction::kOut ? peer : self;
      const Mac self_mac = s.vnic == kWeb ? kWebMac : kDbMac;
      const Mac peer_mac = s.vnic == kWeb ? kDbMac : kWebMac;
      Bytes l4 = s.proto == 6 ? TcpHeader(Seg(s.sport, s.dport, 1, 0, tcpflag::kSyn))
                              : UdpHeader(s.sport, s.dport);
      bool in = s.dir == Direction::kIn;
      s.v = Send(Cat(Eth(s.vnic, in, in ? peer_mac : self_mac, in ? self_mac : peer_mac, 0x0800),
                     Ipv4(s.src, s.dst, s.proto, l4)));
      sent.push_back(s);
    }
    for (const Armed& a : armed) {
      const Sent* want = nullptr;
      for (size_t i = a.from; i < sent.size() && !want; ++i) {
        const Sent& s = sent[i];
        bool meets =
            s.vnic == a.f.local_id && s.dir == a.f.dir &&
            (a.f.proto == 0 || s.proto == a.f.proto) && (!a.f.has_dst || s.dst == a.f.dst.lo) &&
            (a.f.sport == 0 || s.sport == a.f.sport) && (a.f.dport == 0 || s.dport == a.f.dport);
        if (meets) want = &s;  // every capture a frame meets records it
      }
      CaptureTable::Status st = captures_.Poll(a.handle, now_ms_);
      if (!want) {
        EXPECT_EQ(st.state, CaptureTable::State::kArmed) << "round " << round;
      } else if (st.state == CaptureTable::State::kMet) {
        EXPECT_EQ(st.hit.sport, want->sport) << "round " << round;
        EXPECT_EQ(st.hit.dport, want->dport);
        EXPECT_EQ(st.hit.proto, want->proto);
        EXPECT_EQ(st.hit.forward, want->v.forward);
        EXPECT_EQ(st.hit.reason, want->v.reason);
#ifndef DFW_CONFORMANCE_DPDK  // the harness reads verdicts back from the port: no stage
        EXPECT_EQ(st.hit.stage, want->v.stage);
#endif
      } else {
        ADD_FAILURE() << "round " << round << ": a frame met the filter, the capture is not met";
      }
      captures_.Release(a.handle);
    }
  }
}

}  // namespace
}  // namespace dfw::dataplane
