// ConnTable export/import (connections that move with their VM): random
// connections of every protocol and state exported from one table and
// imported into another table's other zone come out equal (against a map of
// what the first table held); a strict-TCP connection continues in the table
// that imported it (windows scaled or not) while a table without it refuses
// the same segments; malformed entries are refused by field while the valid
// ones are imported; the per-vNIC and global limits hold.
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "conntrack_test_util.h"

namespace dfw::dataplane {
namespace {

using namespace cttest;
using namespace tcpflag;
using Kind = ConnVerdict::Kind;

ConnTableConfig Config(uint64_t seed, bool loose = false) {
  ConnTableConfig cfg;
  cfg.max_connections = 1u << 14;
  cfg.zones = 16;
  cfg.tcp_loose = loose;
  cfg.seed = seed;
  return cfg;
}

// The connection's identity, zone aside.
using TupleKey = std::tuple<int, int, uint64_t, uint64_t, uint64_t, uint64_t, int, int>;
TupleKey KeyOf(const ConnInfo& c) {
  return {static_cast<int>(c.family),
          c.proto,
          c.src.hi,
          c.src.lo,
          c.dst.hi,
          c.dst.lo,
          c.sport,
          c.dport};
}
TupleKey KeyOf(const ConnExport& c) {
  const int dport = (c.proto == 1 || c.proto == 58) ? c.sport : c.dport;
  return {
      static_cast<int>(c.family), c.proto, c.src.hi, c.src.lo, c.dst.hi, c.dst.lo, c.sport, dport};
}

std::map<TupleKey, ConnInfo> ZoneInfos(const ConnTable& t, uint16_t zone, uint64_t now) {
  std::map<TupleKey, ConnInfo> out;
  t.ForEach(now, [&](uint32_t, const ConnInfo& c) {
    if (c.zone == zone) {
      EXPECT_TRUE(out.emplace(KeyOf(c), c).second);
    }
  });
  return out;
}

std::map<TupleKey, ConnExport> ZoneExports(const ConnTable& t, uint16_t zone, uint64_t now) {
  std::vector<ConnExport> v;
  const uint32_t total = t.ExportZone(zone, now, 0, &v);
  EXPECT_EQ(total, v.size());
  std::map<TupleKey, ConnExport> out;
  for (const auto& c : v) out.emplace(KeyOf(c), c);
  return out;
}

// Drives one random connection of a random protocol to a random state in
// `zone` of `t`; returns its first packet (to recreate it elsewhere).
class RandomConnections {
 public:
  RandomConnections(ConnTable* t, uint16_t zone, uint64_t seed) : t_(t), zone_(zone), rng_(seed) {}

  void Add(uint64_t now) {
    const int kind = Pick(6);
    const bool v6 = Pick(2);
    Ip128 a = v6 ? V6(0x20010db800000000ull, rng_() & 0xffff) : V4(Ipv4(198, 18, 0, Pick(250)));
    Ip128 b = v6 ? V6(0x20010db800000001ull, rng_() & 0xffff) : V4(Ipv4(198, 19, 0, Pick(250)));
    const Direction dir = Pick(2) ? Direction::kIn : Direction::kOut;
    const ConnPolicy pol{static_cast<uint32_t>(rng_() % 1000), 5, Pick(2) == 1};
    auto open = [&](ParsedPacket p) {
      p.dir = dir;
      uint32_t e;
      DropReason r;
      t_->Track(zone_, p, now);
      return t_->Commit(zone_, p, pol, now, &e, &r);
    };
    auto step = [&](ParsedPacket p) {
      p.dir = dir;
      t_->Track(zone_, p, now);
    };
    const uint16_t sport = static_cast<uint16_t>(1024 + rng_() % 60000);
    const uint16_t dport = static_cast<uint16_t>(1 + rng_() % 1000);
    if (kind == 0 || kind == 1) {  // TCP from its SYN, to a random stage
      TcpPair c;
      c.a = a;
      c.b = b;
      c.v6 = v6;
      c.aport = sport;
      c.bport = dport;
      c.nxt[0] = static_cast<uint32_t>(rng_());
      c.nxt[1] = static_cast<uint32_t>(rng_());
      if (Pick(2)) c.wscale[0] = c.wscale[1] = static_cast<uint8_t>(Pick(15));
      if (!open(c.Send(false, kSyn))) return;
      const int stage = Pick(9);
      if (stage == 8) {  // simultaneous open
        step(c.Send(true, kSyn));
        return;
      }
      if (stage >= 1) step(c.Send(true, kSyn | kAck));
      if (stage >= 2) step(c.Send(false, kAck));
      if (stage >= 3) {
        step(c.Send(false, kAck | kPsh, static_cast<uint16_t>(1 + Pick(1400))));
        step(c.Send(true, kAck, static_cast<uint16_t>(Pick(1400))));
      }
      if (stage == 7) {
        step(c.Send(false, kRst | kAck));
        return;
      }
      if (stage >= 4) step(c.Send(false, kFin | kAck));
      if (stage >= 5) step(c.Send(true, kFin | kAck));
      if (stage >= 6) step(c.Send(false, kAck));
    } else if (kind == 2) {  // TCP picked up mid-stream (the table is loose)
      ParsedPacket p = Tcp(a, b, sport, dport, kAck, static_cast<uint32_t>(rng_()),
                           static_cast<uint32_t>(rng_()), 1000, 100, 0xff, v6);
      if (open(p) && Pick(2)) {
        step(Tcp(b, a, dport, sport, kAck, p.tcp_ack, p.tcp_seq + 100, 1000, 10, 0xff, v6));
      }
    } else if (kind == 3) {  // UDP, maybe answered
      if (open(Udp(a, b, sport, dport, v6)) && Pick(2)) step(Udp(b, a, dport, sport, v6));
    } else if (kind == 4) {  // ICMP / ICMPv6 echo, maybe answered
      if (open(Echo(a, b, v6 ? 128 : 8, sport, v6)) && Pick(2))
        step(Echo(b, a, v6 ? 129 : 0, sport, v6));
    } else {  // another protocol (GRE), maybe answered
      ParsedPacket p = Base(a, b, 47, v6);
      if (open(p) && Pick(2)) step(Base(b, a, 47, v6));
    }
  }

 private:
  int Pick(int n) { return static_cast<int>(rng_() % static_cast<uint64_t>(n)); }
  ConnTable* t_;
  uint16_t zone_;
  std::mt19937_64 rng_;
};

TEST(ConntrackExport, RandomConnectionsComeOutOfAnotherTableAndZoneEqual) {
  for (uint64_t seed = 1; seed <= 5; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    constexpr uint16_t kFrom = 3, kTo = 9;
    uint64_t now = 10'000;
    ConnTable a(Config(seed, /*loose=*/true));
    RandomConnections gen(&a, kFrom, seed);
    for (int i = 0; i < 3000; ++i) gen.Add(now += seed % 3);
    const std::map<TupleKey, ConnInfo> model = ZoneInfos(a, kFrom, now);
    ASSERT_GT(model.size(), 2000u);
    // Every state of every protocol is in the sample.
    std::map<std::pair<int, int>, int> seen;
    for (const auto& [k, c] : model)
      ++seen[{c.proto == 58 ? 1 : c.proto, static_cast<int>(c.state)}];
    for (int s = 1; s <= 8; ++s) EXPECT_TRUE(seen.count({6, s})) << ConnStateName(ConnState(s));
    for (int p : {17, 1, 47}) {
      EXPECT_TRUE(seen.count({p, 9})) << p;
      EXPECT_TRUE(seen.count({p, 10})) << p;
    }

    // Table b (another hash seed) already holds some of the same keys in
    // another state in the target zone, and unrelated connections elsewhere.
    ConnTable b(Config(seed + 100));
    RandomConnections other(&b, kFrom, seed + 1000);
    for (int i = 0; i < 500; ++i) other.Add(now);
    const uint32_t b_from = b.zone_size(kFrom);
    std::mt19937_64 rng(seed);
    uint32_t replaced = 0;
    for (const auto& [k, c] : model) {
      if (rng() % 3) continue;
      const bool v6 = c.family == Family::kV6;
      ParsedPacket p;
      if (c.proto == 17) {  // the same UDP flow, unanswered
        p = Udp(c.src, c.dst, c.sport, c.dport, v6);
      } else if (c.proto == 6) {  // the same TCP tuple opened the other way
        p = Tcp(c.dst, c.src, c.dport, c.sport, kSyn, 77, 0, 1000, 0, 0xff, v6);
      } else {
        continue;
      }
      uint32_t e;
      DropReason r;
      ASSERT_TRUE(b.Commit(kTo, p, ConnPolicy{1, 1, false}, now, &e, &r));
      ++replaced;
    }
    ASSERT_GT(replaced, 100u);

    std::vector<ConnExport> exported;
    const uint32_t total = a.ExportZone(kFrom, now, 0, &exported);
    ASSERT_EQ(total, model.size());
    ASSERT_EQ(exported.size(), model.size());
    ConnImportResult r = b.ImportAll(kTo, exported.data(), exported.size(), now);
    EXPECT_EQ(r.imported, exported.size());
    EXPECT_EQ(r.rejected_count, 0u) << (r.rejected.empty() ? "" : r.rejected[0]);

    const std::map<TupleKey, ConnInfo> got = ZoneInfos(b, kTo, now);
    ASSERT_EQ(got.size(), model.size());
    for (const auto& [k, want] : model) {
      auto it = got.find(k);
      ASSERT_NE(it, got.end());
      const ConnInfo& c = it->second;
      EXPECT_EQ(c.zone, kTo);
      EXPECT_EQ(c.state, want.state);
      EXPECT_EQ(c.dir, want.dir);
      EXPECT_EQ(c.policy.rule_num, want.policy.rule_num);
      EXPECT_EQ(c.policy.revalidate, want.policy.revalidate);
      EXPECT_EQ(c.policy.generation, kConnGenerationImported);
      EXPECT_EQ(c.packets, want.packets);
      EXPECT_EQ(c.bytes, want.bytes);
      EXPECT_EQ(c.expires_in_ms, want.expires_in_ms);
    }
    // The windows too: what b exports again is what a exported.
    EXPECT_EQ(ZoneExports(b, kTo, now), ZoneExports(a, kFrom, now));
    EXPECT_EQ(b.zone_size(kFrom), b_from);  // another zone untouched
    EXPECT_EQ(b.size(), b_from + model.size());
  }
}

// A strict-TCP connection set up in table a, moved to table b's other zone.
class ConntrackMove : public ::testing::TestWithParam<bool> {
 protected:
  static constexpr uint16_t kA = 3, kB = 7;
  ConntrackMove() : a_(Config(1)), b_(Config(2)), c_(Config(3)) {
    pair_.a = V4(Ipv4(198, 18, 0, 1));
    pair_.b = V4(Ipv4(198, 18, 0, 2));
    if (GetParam()) {  // scaled windows: 1024 << 7 = 128 KiB
      pair_.wscale[0] = pair_.wscale[1] = 7;
    }
  }
  void SetUpInA() {
    uint32_t e;
    DropReason r;
    ParsedPacket syn = pair_.Send(false, kSyn);
    ASSERT_EQ(a_.Track(kA, syn, now_).kind, Kind::kNew);
    ASSERT_TRUE(a_.Commit(kA, syn, ConnPolicy{7, 1, true}, now_, &e, &r));
    ASSERT_EQ(a_.Track(kA, pair_.Send(true, kSyn | kAck), now_).kind, Kind::kEstablished);
    if (GetParam()) pair_.win[0] = pair_.win[1] = 1024;
    ASSERT_EQ(a_.Track(kA, pair_.Send(false, kAck), now_).kind, Kind::kEstablished);
    ASSERT_EQ(a_.Track(kA, pair_.Send(false, kAck | kPsh, 500), now_).kind, Kind::kEstablished);
    ASSERT_EQ(a_.Track(kA, pair_.Send(true, kAck, 1200), now_).kind, Kind::kEstablished);
    ASSERT_EQ(a_.Track(kA, pair_.Send(false, kAck), now_).kind, Kind::kEstablished);
  }
  void ExpectIn(ConnTable& t, uint16_t zone, const ParsedPacket& p, bool reply) {
    ConnVerdict v = t.Track(zone, p, now_);
    EXPECT_EQ(v.kind, Kind::kEstablished) << DropReasonName(v.reason);
    EXPECT_EQ(v.reply, reply);
  }

  ConnTable a_, b_, c_;
  TcpPair pair_;
  uint64_t now_ = 5000;
};

TEST_P(ConntrackMove, TheNextSegmentsAreEstablishedWhereImportedAndRefusedElsewhere) {
  SetUpInA();
  std::vector<ConnExport> out;
  ASSERT_EQ(a_.ExportZone(kA, now_, 0, &out), 1u);
  ASSERT_EQ(out[0].state, ConnState::kEstablished);
  EXPECT_EQ(out[0].tcp[0].wscale, GetParam() ? 7 : 0);
  ASSERT_TRUE(b_.Import(kB, out[0], now_).ok());
  now_ += 100;

  // Data both ways. With scaled windows, 90 000 bytes in flight before an ACK
  // (beyond any unscaled window), then 60 000 more after it.
  std::vector<std::pair<ParsedPacket, bool>> next;
  if (GetParam()) {
    for (int i = 0; i < 3; ++i) next.push_back({pair_.Send(false, kAck | kPsh, 30000), false});
    next.push_back({pair_.Send(true, kAck), true});
    for (int i = 0; i < 2; ++i) next.push_back({pair_.Send(false, kAck | kPsh, 30000), false});
  } else {
    next.push_back({pair_.Send(false, kAck | kPsh, 300), false});
    next.push_back({pair_.Send(true, kAck | kPsh, 800), true});
    next.push_back({pair_.Send(false, kAck), false});
  }
  for (const auto& [p, reply] : next) {
    ExpectIn(b_, kB, p, reply);
    // A table that did not import it (strict): not a SYN, no connection.
    EXPECT_EQ(c_.Track(kB, p, now_).kind, Kind::kNew);
    uint32_t e;
    DropReason r = DropReason::kNone;
    EXPECT_FALSE(c_.Commit(kB, p, ConnPolicy{}, now_, &e, &r));
    EXPECT_EQ(r, DropReason::kCtNoConnection);
  }
  // The windows came along: a segment far beyond them is invalid in b.
  TcpPair far = pair_;
  far.nxt[0] += 1u << 24;
  ConnVerdict v = b_.Track(kB, far.Send(false, kAck | kPsh, 100), now_);
  EXPECT_EQ(v.kind, Kind::kInvalid);
  // It revalidates at its next packet: no ruleset has its generation.
  ConnVerdict ok = b_.Track(kB, pair_.Send(true, kAck), now_);
  EXPECT_EQ(ok.policy.generation, kConnGenerationImported);
  EXPECT_TRUE(ok.policy.revalidate);
  EXPECT_EQ(ok.policy.rule_num, 7u);
}

INSTANTIATE_TEST_SUITE_P(Windows, ConntrackMove, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "Scaled" : "Unscaled"; });

ConnExport ValidTcp(uint16_t sport) {
  ConnExport c;
  c.family = Family::kV4;
  c.proto = 6;
  c.src = V4(Ipv4(198, 18, 0, 1));
  c.dst = V4(Ipv4(198, 18, 0, 2));
  c.sport = sport;
  c.dport = 443;
  c.state = ConnState::kEstablished;
  c.expires_in_ms = 60'000;
  c.tcp[0] = ConnTcpPeer{1000, 70000, 65535, 0, 0, ConnTcpPeerState::kEstablished};
  c.tcp[1] = ConnTcpPeer{5000, 66000, 65535, 0, 0, ConnTcpPeerState::kEstablished};
  return c;
}

TEST(ConntrackExport, MalformedEntriesAreRefusedByFieldAndTheRestImported) {
  ConnTable t(Config(1));
  std::vector<std::pair<ConnExport, std::string>> bad;  // entry, field named
  auto add = [&](const std::string& field, auto mutate) {
    ConnExport c = ValidTcp(static_cast<uint16_t>(2000 + bad.size()));
    mutate(c);
    bad.push_back({c, field});
  };
  add("tcp_orig.wscale: 15 is above 14", [](ConnExport& c) {
    c.tcp[0].flags = kConnTcpWscaleSeen;
    c.tcp[0].wscale = 15;
  });
  add("state: UNREPLIED is not a state of protocol 6",
      [](ConnExport& c) { c.state = ConnState::kUnreplied; });
  add("state: ESTABLISHED is not a state of protocol 17", [](ConnExport& c) {
    c.proto = 17;
    c.tcp[0] = c.tcp[1] = ConnTcpPeer{};
  });
  add("dst_port: 443, not 0", [](ConnExport& c) {
    c.proto = 1;
    c.state = ConnState::kReplied;
    c.tcp[0] = c.tcp[1] = ConnTcpPeer{};
  });
  add("src_ip: not an IPv4 address", [](ConnExport& c) { c.src.hi = 1; });
  add("state: ESTABLISHED does not agree with the peer states 2/1",
      [](ConnExport& c) { c.tcp[1].state = ConnTcpPeerState::kSynSent; });
  add("tcp_reply: set for protocol 17", [](ConnExport& c) {
    c.proto = 17;
    c.state = ConnState::kReplied;
    c.tcp[0] = ConnTcpPeer{};
  });
  add("expires_in_ms: 0", [](ConnExport& c) { c.expires_in_ms = 0; });
  add("src_port: 2008, protocol 47 has no ports", [](ConnExport& c) {
    c.proto = 47;
    c.state = ConnState::kReplied;
    c.tcp[0] = c.tcp[1] = ConnTcpPeer{};
  });
  add("tcp_orig.max_win: 0", [](ConnExport& c) { c.tcp[0].max_win = 0; });
  add("protocol: 58 (ICMPv6) with IPv4 addresses", [](ConnExport& c) {
    c.proto = 58;
    c.dport = 0;
    c.state = ConnState::kReplied;
    c.tcp[0] = c.tcp[1] = ConnTcpPeer{};
  });
  add("tcp_orig.flags: 4 has bits", [](ConnExport& c) { c.tcp[0].flags = 4; });

  // Interleaved: valid, bad, valid, bad, ...
  std::vector<ConnExport> batch;
  std::vector<size_t> bad_at;
  for (size_t i = 0; i < bad.size(); ++i) {
    batch.push_back(ValidTcp(static_cast<uint16_t>(100 + i)));
    bad_at.push_back(batch.size());
    batch.push_back(bad[i].first);
  }
  ConnImportResult r = t.ImportAll(5, batch.data(), batch.size(), 1000);
  EXPECT_EQ(r.imported, bad.size());
  EXPECT_EQ(r.rejected_count, bad.size());
  ASSERT_EQ(r.rejected.size(), ConnImportResult::kMaxRejectedShown);
  for (size_t i = 0; i < r.rejected.size(); ++i) {
    const std::string want = "entries[" + std::to_string(bad_at[i]) + "]." + bad[i].second;
    EXPECT_EQ(r.rejected[i].substr(0, want.size()), want) << r.rejected[i];
  }
  // Every one of them alone, through Import: the same field, nothing changes.
  for (const auto& [c, field] : bad) {
    Status st = t.Import(5, c, 1000);
    EXPECT_EQ(st.message().substr(0, field.size()), field);
  }
  EXPECT_EQ(t.zone_size(5), bad.size());
  // Each valid one is there.
  for (size_t i = 0; i < bad.size(); ++i) {
    ParsedPacket p = Tcp(V4(Ipv4(198, 18, 0, 1)), V4(Ipv4(198, 18, 0, 2)),
                         static_cast<uint16_t>(100 + i), 443, kAck, 1000, 5000, 1000);
    EXPECT_EQ(t.Track(5, p, 1000).kind, Kind::kEstablished);
  }
}

// n established connections, source ports first_port...
std::vector<ConnExport> ValidBatch(uint16_t first_port, uint16_t n) {
  std::vector<ConnExport> out;
  for (uint16_t i = 0; i < n; ++i) out.push_back(ValidTcp(static_cast<uint16_t>(first_port + i)));
  return out;
}

TEST(ConntrackExport, ImportRespectsThePerVnicAndGlobalLimits) {
  ConnTableConfig cfg = Config(1);
  cfg.max_per_zone = 5;
  ConnTable t(cfg);
  const std::vector<ConnExport> batch = ValidBatch(3000, 8);
  ConnImportResult r = t.ImportAll(2, batch.data(), batch.size(), 1000);
  EXPECT_EQ(r.imported, 5u);
  EXPECT_EQ(r.rejected_count, 3u);
  ASSERT_EQ(r.rejected.size(), 3u);
  EXPECT_EQ(r.rejected[0], "entries[5]: over the per-vNIC limit: the vNIC holds 5 connections");
  EXPECT_EQ(t.zone_size(2), 5u);
  // An entry already there is replaced, also at the limit.
  ConnExport again = batch[0];
  again.rule_num = 99;
  EXPECT_TRUE(t.Import(2, again, 1000).ok());
  EXPECT_EQ(t.zone_size(2), 5u);
  // Another zone has its own limit.
  EXPECT_TRUE(t.Import(3, batch[7], 1000).ok());
  // Once the zone's entries have aged out there is room again.
  t.Sweep(1000 + 70'000, t.capacity(), [](const ConnInfo&) {});
  EXPECT_EQ(t.zone_size(2), 0u);
  EXPECT_TRUE(t.Import(2, batch[6], 1000 + 70'000).ok());

  ConnTableConfig small = Config(1);
  small.max_connections = 16;
  ConnTable g(small);
  const std::vector<ConnExport> many = ValidBatch(4000, 20);
  ConnImportResult rg = g.ImportAll(1, many.data(), many.size(), 1000);
  EXPECT_EQ(rg.imported, 16u);
  EXPECT_EQ(rg.rejected_count, 4u);
  ASSERT_FALSE(rg.rejected.empty());
  EXPECT_NE(rg.rejected[0].find("over the global limit"), std::string::npos) << rg.rejected[0];
  EXPECT_EQ(g.size(), 16u);
}

}  // namespace
}  // namespace dfw::dataplane
