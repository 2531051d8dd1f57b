// ConnTable TCP tracking: handshakes, data, teardown, window checks (strict
// and loose), SYN retransmission, simultaneous open, window scaling, reuse.
#include <gtest/gtest.h>

#include <vector>

#include "conntrack_test_util.h"

namespace dfw::dataplane {
namespace {

using namespace cttest;
using namespace tcpflag;
using Kind = ConnVerdict::Kind;

constexpr uint16_t kZone = 3;

class ConntrackTcp : public ::testing::Test {
 protected:
  ConntrackTcp() : ct_(Config()) {
    c_.a = V4(Ipv4(198, 18, 0, 1));
    c_.b = V4(Ipv4(198, 18, 0, 2));
  }
  static ConnTableConfig Config(bool loose = false) {
    ConnTableConfig cfg;
    cfg.max_connections = 1024;
    cfg.zones = 16;
    cfg.tcp_loose = loose;
    cfg.seed = 42;
    return cfg;
  }

  // Tracks a packet; a kNew is committed. Returns the verdict of Track.
  ConnVerdict Step(const ParsedPacket& p, bool commit = true) {
    ConnVerdict v = ct_.Track(kZone, p, now_);
    if (v.kind == Kind::kNew && commit) {
      DropReason r;
      committed_ = ct_.Commit(kZone, p, ConnPolicy{7, 1, false}, now_, &entry_, &r);
      commit_reason_ = r;
    }
    return v;
  }
  ConnState State() {
    ConnInfo info;
    if (!ct_.Info(entry_, now_, &info)) return ConnState::kNone;
    return info.state;
  }
  uint32_t ExpiresIn() {
    ConnInfo info;
    EXPECT_TRUE(ct_.Info(entry_, now_, &info));
    return info.expires_in_ms;
  }
  void Handshake() {
    ASSERT_EQ(Step(c_.Send(false, kSyn)).kind, Kind::kNew);
    ASSERT_TRUE(committed_);
    ASSERT_EQ(Step(c_.Send(true, kSyn | kAck)).kind, Kind::kEstablished);
    ASSERT_EQ(Step(c_.Send(false, kAck)).kind, Kind::kEstablished);
    ASSERT_EQ(State(), ConnState::kEstablished);
  }
  void ExpectValid(const ParsedPacket& p, bool reply) {
    ConnVerdict v = ct_.Track(kZone, p, now_);
    EXPECT_EQ(v.kind, Kind::kEstablished) << "reason " << DropReasonName(v.reason);
    EXPECT_EQ(v.reply, reply);
    EXPECT_EQ(v.entry, entry_);
  }
  void ExpectInvalid(const ParsedPacket& p) {
    ConnVerdict v = ct_.Track(kZone, p, now_);
    EXPECT_EQ(v.kind, Kind::kInvalid);
    EXPECT_EQ(v.reason, DropReason::kCtInvalid);
  }

  ConnTable ct_;
  TcpPair c_;
  uint64_t now_ = 1000;
  uint32_t entry_ = ~0u;
  bool committed_ = false;
  DropReason commit_reason_ = DropReason::kNone;
};

TEST_F(ConntrackTcp, ThreeWayHandshake) {
  ConnVerdict v = Step(c_.Send(false, kSyn));
  EXPECT_EQ(v.kind, Kind::kNew);
  ASSERT_TRUE(committed_);
  EXPECT_EQ(State(), ConnState::kSynSent);
  EXPECT_EQ(ExpiresIn(), ConnTimeouts{}.tcp_syn);

  v = Step(c_.Send(true, kSyn | kAck));
  EXPECT_EQ(v.kind, Kind::kEstablished);
  EXPECT_TRUE(v.reply);
  EXPECT_EQ(v.policy.rule_num, 7u);
  EXPECT_EQ(State(), ConnState::kSynRecv);

  v = Step(c_.Send(false, kAck));
  EXPECT_EQ(v.kind, Kind::kEstablished);
  EXPECT_FALSE(v.reply);
  EXPECT_EQ(State(), ConnState::kEstablished);
  EXPECT_EQ(ExpiresIn(), ConnTimeouts{}.tcp_established);
  EXPECT_EQ(ct_.size(), 1u);
  EXPECT_EQ(ct_.zone_size(kZone), 1u);
}

TEST_F(ConntrackTcp, DataBothWays) {
  Handshake();
  for (int i = 0; i < 50; ++i) {
    ExpectValid(c_.Send(false, kAck | kPsh, 1000), false);
    ExpectValid(c_.Send(true, kAck, 0), true);
    ExpectValid(c_.Send(true, kAck | kPsh, 1400), true);
    ExpectValid(c_.Send(false, kAck, 0), false);
  }
  ConnInfo info;
  ASSERT_TRUE(ct_.Info(entry_, now_, &info));
  EXPECT_EQ(info.packets, 203u);
  EXPECT_EQ(info.state, ConnState::kEstablished);
  EXPECT_EQ(info.sport, 40000);
  EXPECT_EQ(info.dport, 80);
  EXPECT_EQ(info.src, c_.a);
}

TEST_F(ConntrackTcp, FinTeardownOrigFirst) {
  Handshake();
  ExpectValid(c_.Send(false, kFin | kAck), false);
  EXPECT_EQ(State(), ConnState::kFinWait);
  EXPECT_EQ(ExpiresIn(), ConnTimeouts{}.tcp_fin);
  ExpectValid(c_.Send(true, kAck, 100), true);  // half-closed: the server still sends
  EXPECT_EQ(State(), ConnState::kFinWait);
  ExpectValid(c_.Send(false, kAck), false);
  ExpectValid(c_.Send(true, kFin | kAck), true);
  EXPECT_EQ(State(), ConnState::kClosing);
  ExpectValid(c_.Send(false, kAck), false);
  EXPECT_EQ(State(), ConnState::kTimeWait);
  EXPECT_EQ(ExpiresIn(), ConnTimeouts{}.tcp_time_wait);
}

TEST_F(ConntrackTcp, FinTeardownReplyFirst) {
  Handshake();
  ExpectValid(c_.Send(true, kFin | kAck), true);
  EXPECT_EQ(State(), ConnState::kFinWait);
  ExpectValid(c_.Send(false, kAck, 300), false);
  ExpectValid(c_.Send(false, kFin | kAck), false);
  EXPECT_EQ(State(), ConnState::kClosing);
  ExpectValid(c_.Send(true, kAck), true);
  EXPECT_EQ(State(), ConnState::kTimeWait);
}

TEST_F(ConntrackTcp, SimultaneousFin) {
  Handshake();
  ExpectValid(c_.Send(false, kFin | kAck), false);
  // The server's FIN crosses the client's: it does not acknowledge it yet.
  ParsedPacket fin = c_.Send(true, kFin | kAck);
  fin.tcp_ack -= 1;
  ExpectValid(fin, true);
  EXPECT_EQ(State(), ConnState::kClosing);
  ExpectValid(c_.Send(false, kAck), false);
  ExpectValid(c_.Send(true, kAck), true);
  EXPECT_EQ(State(), ConnState::kTimeWait);
}

TEST_F(ConntrackTcp, RstTeardown) {
  Handshake();
  ExpectValid(c_.Send(false, kAck, 500), false);
  ExpectValid(c_.Send(true, kRst | kAck), true);
  EXPECT_EQ(State(), ConnState::kClosed);
  EXPECT_EQ(ExpiresIn(), ConnTimeouts{}.tcp_closed);
  // Nothing but a new SYN follows an RST: data in flight is dropped.
  now_ += 100;
  ExpectInvalid(c_.Send(false, kAck | kPsh, 100));
  ExpectInvalid(c_.Send(true, kAck));
  ExpectInvalid(c_.Send(true, kRst | kAck));
  EXPECT_EQ(State(), ConnState::kClosed);
  EXPECT_EQ(ExpiresIn(), ConnTimeouts{}.tcp_closed - 100);  // not refreshed
}

TEST_F(ConntrackTcp, RstRefusesSyn) {
  ASSERT_EQ(Step(c_.Send(false, kSyn)).kind, Kind::kNew);
  // Port closed: RST+ACK with SEQ 0 acknowledging the SYN.
  ParsedPacket rst = Tcp(c_.b, c_.a, 80, 40000, kRst | kAck, 0, c_.nxt[0]);
  ExpectValid(rst, true);
  EXPECT_EQ(State(), ConnState::kClosed);
}

TEST_F(ConntrackTcp, OutOfWindowSeqRejected) {
  Handshake();
  ParsedPacket p = c_.Send(false, kAck | kPsh, 100);
  p.tcp_seq += 200000;
  ExpectInvalid(p);
  p.tcp_seq -= 400000;  // far behind
  ExpectInvalid(p);
  EXPECT_EQ(State(), ConnState::kEstablished);
  c_.nxt[0] -= 100;  // that segment never happened
  ExpectValid(c_.Send(false, kAck | kPsh, 100), false);
  ExpectValid(c_.Send(true, kAck), true);
}

TEST_F(ConntrackTcp, OutOfWindowAckRejected) {
  Handshake();
  ParsedPacket p = c_.Send(false, kAck, 0);
  p.tcp_ack += 200000;  // acknowledges data the server never sent
  ExpectInvalid(p);
  p.tcp_ack -= 400000;  // far behind
  ExpectInvalid(p);
  ExpectValid(c_.Send(false, kAck, 10), false);
  ExpectValid(c_.Send(true, kAck, 10), true);
  EXPECT_EQ(State(), ConnState::kEstablished);
}

TEST_F(ConntrackTcp, OutOfWindowRstRejectedAndEntryKept) {
  Handshake();
  ExpectValid(c_.Send(false, kAck, 1000), false);
  ParsedPacket rst = c_.Send(true, kRst | kAck);
  rst.tcp_seq += 100000;  // outside the window
  ExpectInvalid(rst);
  rst.tcp_seq -= 100000 - 2000;  // inside the window but not the expected SEQ
  ExpectInvalid(rst);
  EXPECT_EQ(State(), ConnState::kEstablished);
  ExpectValid(c_.Send(true, kAck, 50), true);
  ExpectValid(c_.Send(false, kAck, 50), false);
  // The exact RST still works.
  ExpectValid(c_.Send(false, kRst | kAck), false);
  EXPECT_EQ(State(), ConnState::kClosed);
}

TEST_F(ConntrackTcp, InvalidFlagsRejected) {
  Handshake();
  ExpectInvalid(c_.Send(false, kSyn | kFin | kAck));
  ParsedPacket p = c_.Send(false, 0);  // no flags at all
  ExpectInvalid(p);
  p = c_.Send(false, kFin);  // FIN without ACK
  c_.nxt[0] -= 1;
  ExpectInvalid(p);
  ExpectValid(c_.Send(false, kAck), false);
}

TEST_F(ConntrackTcp, SynRetransmission) {
  ParsedPacket syn = c_.Send(false, kSyn);
  ASSERT_EQ(Step(syn).kind, Kind::kNew);
  const uint32_t first = entry_;
  now_ += 1000;
  ExpectValid(syn, false);  // same ISN
  now_ += 2000;
  ExpectValid(syn, false);
  EXPECT_EQ(State(), ConnState::kSynSent);
  EXPECT_EQ(ExpiresIn(), ConnTimeouts{}.tcp_syn);  // refreshed
  ExpectValid(c_.Send(true, kSyn | kAck), true);
  ExpectValid(syn, false);  // the SYN+ACK was lost on the way to the client
  ExpectValid(c_.Send(false, kAck), false);
  EXPECT_EQ(State(), ConnState::kEstablished);
  EXPECT_EQ(entry_, first);
  EXPECT_EQ(ct_.size(), 1u);
}

TEST_F(ConntrackTcp, SynWithNewIsnRestartsUnansweredAttempt) {
  ASSERT_EQ(Step(c_.Send(false, kSyn)).kind, Kind::kNew);
  const uint32_t first = entry_;
  c_.nxt[0] = 777777;
  ParsedPacket syn2 = c_.Send(false, kSyn);
  ConnVerdict v = Step(syn2);
  EXPECT_EQ(v.kind, Kind::kNew);
  ASSERT_TRUE(committed_);
  EXPECT_NE(entry_, first);
  ExpectValid(c_.Send(true, kSyn | kAck), true);
  ExpectValid(c_.Send(false, kAck), false);
  EXPECT_EQ(State(), ConnState::kEstablished);
}

TEST_F(ConntrackTcp, SimultaneousOpen) {
  ASSERT_EQ(Step(c_.Send(false, kSyn)).kind, Kind::kNew);
  // The server side sends its own SYN (no ACK) toward the client.
  ExpectValid(c_.Send(true, kSyn), true);
  EXPECT_EQ(State(), ConnState::kSynSent2);
  // Each side answers with SYN+ACK (same ISN, acknowledging the other's SYN).
  c_.nxt[0] -= 1;
  ExpectValid(c_.Send(false, kSyn | kAck), false);
  EXPECT_EQ(State(), ConnState::kSynRecv);
  c_.nxt[1] -= 1;
  ExpectValid(c_.Send(true, kSyn | kAck), true);
  EXPECT_EQ(State(), ConnState::kEstablished);
  ExpectValid(c_.Send(false, kAck, 100), false);
  ExpectValid(c_.Send(true, kAck, 100), true);
}

// Client sends 100 full segments (140 KB) before the server acknowledges any.
// Possible only with window scaling: 65535 << 7 bytes of window.
TEST_F(ConntrackTcp, WindowScalingHonoured) {
  auto run = [](bool scale) {
    ConnTable ct(Config());
    TcpPair c;
    c.a = V4(1);
    c.b = V4(2);
    if (scale) c.wscale[0] = c.wscale[1] = 7;
    uint64_t now = 0;
    uint32_t entry;
    DropReason r;
    ParsedPacket syn = c.Send(false, kSyn);
    EXPECT_EQ(ct.Track(kZone, syn, now).kind, Kind::kNew);
    EXPECT_TRUE(ct.Commit(kZone, syn, ConnPolicy{}, now, &entry, &r));
    EXPECT_EQ(ct.Track(kZone, c.Send(true, kSyn | kAck), now).kind, Kind::kEstablished);
    EXPECT_EQ(ct.Track(kZone, c.Send(false, kAck), now).kind, Kind::kEstablished);
    EXPECT_EQ(ct.Track(kZone, c.Send(true, kAck), now).kind, Kind::kEstablished);
    int ok = 0;
    for (int i = 0; i < 100; ++i) {
      if (ct.Track(kZone, c.Send(false, kAck, 1400), now).kind != Kind::kEstablished) break;
      ++ok;
    }
    return ok;
  };
  EXPECT_EQ(run(true), 100);
  // Without the option the window is 65535 bytes: 46 segments fit, the 47th not.
  EXPECT_EQ(run(false), 65535 / 1400);
}

TEST_F(ConntrackTcp, WindowScaleNeedsBothSides) {
  // Only the client offers scaling: windows stay unscaled.
  ConnTable ct(Config());
  TcpPair c;
  c.a = V4(1);
  c.b = V4(2);
  c.wscale[0] = 7;
  uint32_t entry;
  DropReason r;
  ParsedPacket syn = c.Send(false, kSyn);
  ASSERT_TRUE(ct.Commit(kZone, syn, ConnPolicy{}, 0, &entry, &r));
  EXPECT_EQ(ct.Track(kZone, c.Send(true, kSyn | kAck), 0).kind, Kind::kEstablished);
  EXPECT_EQ(ct.Track(kZone, c.Send(false, kAck), 0).kind, Kind::kEstablished);
  EXPECT_EQ(ct.Track(kZone, c.Send(true, kAck), 0).kind, Kind::kEstablished);
  int ok = 0;
  for (int i = 0; i < 100; ++i) {
    if (ct.Track(kZone, c.Send(false, kAck, 1400), 0).kind != Kind::kEstablished) break;
    ++ok;
  }
  EXPECT_EQ(ok, 65535 / 1400);
}

TEST_F(ConntrackTcp, StrictRefusesMidStream) {
  ParsedPacket p = Tcp(c_.a, c_.b, 40000, 80, kAck | kPsh, 123456, 654321, 65535, 100);
  ConnVerdict v = ct_.Track(kZone, p, now_);
  EXPECT_EQ(v.kind, Kind::kNew);
  uint32_t entry;
  DropReason r = DropReason::kNone;
  EXPECT_FALSE(ct_.Commit(kZone, p, ConnPolicy{}, now_, &entry, &r));
  EXPECT_EQ(r, DropReason::kCtNoConnection);
  // A SYN+ACK, RST or FIN cannot open a connection either.
  for (uint8_t f : {uint8_t(kSyn | kAck), uint8_t(kRst), uint8_t(kFin | kAck)}) {
    p.tcp_flags = f;
    EXPECT_FALSE(ct_.Commit(kZone, p, ConnPolicy{}, now_, &entry, &r));
    EXPECT_EQ(r, DropReason::kCtNoConnection);
  }
  p.tcp_flags = kSyn | kFin;
  EXPECT_FALSE(ct_.Commit(kZone, p, ConnPolicy{}, now_, &entry, &r));
  EXPECT_EQ(r, DropReason::kCtInvalid);
  EXPECT_EQ(ct_.size(), 0u);
}

TEST_F(ConntrackTcp, LoosePickupCreatesEstablished) {
  ConnTable ct(Config(/*loose=*/true));
  TcpPair c;
  c.a = V4(1);
  c.b = V4(2);
  c.nxt[0] = 0x80000000u;  // arbitrary mid-stream numbers
  c.nxt[1] = 0xfffff000u;
  ParsedPacket p = c.Send(false, kAck | kPsh, 500);
  EXPECT_EQ(ct.Track(kZone, p, 0).kind, Kind::kNew);
  uint32_t entry;
  DropReason r;
  ASSERT_TRUE(ct.Commit(kZone, p, ConnPolicy{}, 0, &entry, &r));
  ConnInfo info;
  ASSERT_TRUE(ct.Info(entry, 0, &info));
  EXPECT_EQ(info.state, ConnState::kEstablished);
  EXPECT_EQ(info.expires_in_ms, ConnTimeouts{}.tcp_established);
  // Both ways, across the sequence-number wrap of the server.
  for (int i = 0; i < 20; ++i) {
    ConnVerdict v = ct.Track(kZone, c.Send(true, kAck | kPsh, 700), 0);
    EXPECT_EQ(v.kind, Kind::kEstablished);
    EXPECT_TRUE(v.reply);
    EXPECT_EQ(ct.Track(kZone, c.Send(false, kAck, 100), 0).kind, Kind::kEstablished);
  }
  ASSERT_TRUE(ct.Info(entry, 0, &info));
  EXPECT_EQ(info.state, ConnState::kEstablished);
  // Still window-checked once seeded.
  ParsedPacket bad = c.Send(false, kAck, 100);
  bad.tcp_seq += 0x40000000u;
  EXPECT_EQ(ct.Track(kZone, bad, 0).kind, Kind::kInvalid);
  // A SYN+ACK does not start a connection even when loose.
  ParsedPacket sa = Tcp(V4(5), V4(6), 1, 2, kSyn | kAck, 1, 1);
  EXPECT_FALSE(ct.Commit(kZone, sa, ConnPolicy{}, 0, &entry, &r));
  EXPECT_EQ(r, DropReason::kCtNoConnection);
}

TEST_F(ConntrackTcp, PortReuseAfterTimeWait) {
  Handshake();
  const uint32_t first = entry_;
  ExpectValid(c_.Send(false, kFin | kAck), false);
  ExpectValid(c_.Send(true, kFin | kAck), true);
  ExpectValid(c_.Send(false, kAck), false);
  ASSERT_EQ(State(), ConnState::kTimeWait);
  now_ += 1000;
  c_.nxt[0] += 100000;  // the client's new ISN
  ConnVerdict v = Step(c_.Send(false, kSyn));
  EXPECT_EQ(v.kind, Kind::kNew);
  ASSERT_TRUE(committed_);
  EXPECT_NE(entry_, first);
  EXPECT_EQ(State(), ConnState::kSynSent);
  ExpectValid(c_.Send(true, kSyn | kAck), true);
  ExpectValid(c_.Send(false, kAck), false);
  EXPECT_EQ(State(), ConnState::kEstablished);
  // The old entry ended: Sweep reports it.
  EXPECT_EQ(ct_.size(), 2u);
  std::vector<ConnInfo> ended;
  ct_.Sweep(now_, ct_.capacity(), [&](const ConnInfo& i) { ended.push_back(i); });
  ASSERT_EQ(ended.size(), 1u);
  EXPECT_EQ(ended[0].state, ConnState::kTimeWait);
  EXPECT_EQ(ct_.size(), 1u);
}

TEST_F(ConntrackTcp, PortReuseAfterRst) {
  Handshake();
  ExpectValid(c_.Send(true, kRst | kAck), true);
  ASSERT_EQ(State(), ConnState::kClosed);
  c_.nxt[0] += 5;
  EXPECT_EQ(Step(c_.Send(false, kSyn)).kind, Kind::kNew);
  ASSERT_TRUE(committed_);
  EXPECT_EQ(State(), ConnState::kSynSent);
}

TEST_F(ConntrackTcp, SequenceWrapAround) {
  c_.nxt[0] = 0xffffff00u;
  c_.nxt[1] = 0xfffffff0u;
  Handshake();
  for (int i = 0; i < 10; ++i) {
    ExpectValid(c_.Send(false, kAck, 1000), false);
    ExpectValid(c_.Send(true, kAck, 1000), true);
  }
  EXPECT_LT(c_.nxt[0], 0x10000u);
}

TEST_F(ConntrackTcp, Ipv6Handshake) {
  c_.a = V6(0x20010db800000000ull, 1);
  c_.b = V6(0x20010db800000000ull, 2);
  c_.v6 = true;
  Handshake();
  ExpectValid(c_.Send(false, kAck, 100), false);
  ExpectValid(c_.Send(true, kAck, 100), true);
  ConnInfo info;
  ASSERT_TRUE(ct_.Info(entry_, now_, &info));
  EXPECT_EQ(info.family, Family::kV6);
  EXPECT_EQ(info.src, c_.a);
  EXPECT_EQ(info.dst, c_.b);
}

}  // namespace
}  // namespace dfw::dataplane
