// ConnTable: UDP, ICMP echo and errors, other protocols, zones, timeouts and
// Sweep, limits with early drop, read-outs, and a full table.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>
#include <utility>
#include <vector>

#include "conntrack_test_util.h"

namespace dfw::dataplane {
namespace {

using namespace cttest;
using Kind = ConnVerdict::Kind;

ConnTableConfig SmallConfig(uint32_t max = 1024, uint32_t per_zone = 1024) {
  ConnTableConfig cfg;
  cfg.max_connections = max;
  cfg.max_per_zone = per_zone;
  cfg.zones = 16;
  cfg.seed = 7;
  return cfg;
}

const Ip128 kA = V4(Ipv4(198, 18, 0, 1));
const Ip128 kB = V4(Ipv4(198, 18, 0, 2));
const Ip128 kRouter = V4(Ipv4(198, 18, 9, 9));
const Ip128 kA6 = V6(0x20010db8000000aaull, 1);
const Ip128 kB6 = V6(0x20010db8000000bbull, 2);

bool Commit(ConnTable& ct, uint16_t zone, const ParsedPacket& p, uint64_t now,
            uint32_t* entry = nullptr, DropReason* reason = nullptr) {
  uint32_t e;
  DropReason r;
  bool ok =
      ct.Commit(zone, p, ConnPolicy{1, 1, false}, now, entry ? entry : &e, reason ? reason : &r);
  return ok;
}

ConnState StateOf(const ConnTable& ct, uint32_t entry, uint64_t now) {
  ConnInfo info;
  return ct.Info(entry, now, &info) ? info.state : ConnState::kNone;
}

TEST(ConntrackUdp, UnrepliedThenReplied) {
  ConnTable ct(SmallConfig());
  ParsedPacket out = Udp(kA, kB, 5000, 53);
  ParsedPacket back = Udp(kB, kA, 53, 5000);
  EXPECT_EQ(ct.Track(1, out, 0).kind, Kind::kNew);
  uint32_t e;
  ASSERT_TRUE(Commit(ct, 1, out, 0, &e));
  EXPECT_EQ(StateOf(ct, e, 0), ConnState::kUnreplied);
  ConnVerdict v = ct.Track(1, out, 10);
  EXPECT_EQ(v.kind, Kind::kEstablished);
  EXPECT_FALSE(v.reply);
  EXPECT_EQ(StateOf(ct, e, 10), ConnState::kUnreplied);
  v = ct.Track(1, back, 20);
  EXPECT_EQ(v.kind, Kind::kEstablished);
  EXPECT_TRUE(v.reply);
  EXPECT_EQ(v.entry, e);
  ConnInfo info;
  ASSERT_TRUE(ct.Info(e, 20, &info));
  EXPECT_EQ(info.state, ConnState::kReplied);
  EXPECT_EQ(info.expires_in_ms, ConnTimeouts{}.udp_replied);
  EXPECT_EQ(info.packets, 3u);
  EXPECT_EQ(info.bytes, 3u * out.ip_len);
  // Other ports are other connections.
  EXPECT_EQ(ct.Track(1, Udp(kA, kB, 5001, 53), 20).kind, Kind::kNew);
  EXPECT_EQ(ct.Track(1, Udp(kB, kA, 5000, 53), 20).kind, Kind::kNew);
}

TEST(ConntrackUdp, Ipv6) {
  ConnTable ct(SmallConfig());
  ParsedPacket out = Udp(kA6, kB6, 5000, 53, true);
  ASSERT_TRUE(Commit(ct, 1, out, 0));
  EXPECT_EQ(ct.Track(1, Udp(kB6, kA6, 53, 5000, true), 1).reply, true);
  // Same low 32 bits, other high bits: another connection.
  Ip128 other = kB6;
  other.hi ^= 1;
  EXPECT_EQ(ct.Track(1, Udp(other, kA6, 53, 5000, true), 1).kind, Kind::kNew);
  // An IPv4 packet with the same low bits does not match.
  EXPECT_EQ(ct.Track(1, Udp(V4(2), V4(1), 53, 5000), 1).kind, Kind::kNew);
}

TEST(ConntrackIcmp, EchoRequestOpensReplyMatches) {
  for (bool v6 : {false, true}) {
    SCOPED_TRACE(v6 ? "v6" : "v4");
    ConnTable ct(SmallConfig());
    const Ip128 a = v6 ? kA6 : kA, b = v6 ? kB6 : kB;
    const uint8_t req = v6 ? 128 : 8, rep = v6 ? 129 : 0;
    ParsedPacket ping = Echo(a, b, req, 77, v6);
    EXPECT_EQ(ct.Track(2, ping, 0).kind, Kind::kNew);
    uint32_t e;
    ASSERT_TRUE(Commit(ct, 2, ping, 0, &e));
    EXPECT_EQ(StateOf(ct, e, 0), ConnState::kUnreplied);
    ConnVerdict v = ct.Track(2, Echo(b, a, rep, 77, v6), 5);
    EXPECT_EQ(v.kind, Kind::kEstablished);
    EXPECT_TRUE(v.reply);
    EXPECT_EQ(StateOf(ct, e, 5), ConnState::kReplied);
    EXPECT_EQ(ct.Track(2, ping, 6).kind, Kind::kEstablished);
    // Another identifier, or a request from the responder with the same
    // identifier, is not this connection.
    EXPECT_EQ(ct.Track(2, Echo(a, b, req, 78, v6), 6).kind, Kind::kNew);
    EXPECT_EQ(ct.Track(2, Echo(b, a, req, 77, v6), 6).kind, Kind::kNew);
    // A reply in the orig direction does not match either.
    EXPECT_EQ(ct.Track(2, Echo(a, b, rep, 77, v6), 6).kind, Kind::kNew);
    // Replies and other ICMP cannot open a connection.
    DropReason r;
    EXPECT_FALSE(Commit(ct, 2, Echo(a, b, rep, 99, v6), 6, nullptr, &r));
    EXPECT_EQ(r, DropReason::kCtNoConnection);
    ParsedPacket ts = Echo(a, b, v6 ? 130 : 13, 5, v6);  // MLD query / timestamp
    EXPECT_EQ(ct.Track(2, ts, 6).kind, Kind::kNew);
    EXPECT_FALSE(Commit(ct, 2, ts, 6, nullptr, &r));
    EXPECT_EQ(r, DropReason::kCtNoConnection);
    EXPECT_EQ(ct.size(), 1u);
    ConnInfo info;
    ASSERT_TRUE(ct.Info(e, 6, &info));
    EXPECT_EQ(info.expires_in_ms, ConnTimeouts{}.icmp);
  }
}

// A (client) sends to B; the error about it travels back to A. Its quote is
// the client's packet as the client sent it: inner.src == A == error's dst.
TEST(ConntrackIcmp, ErrorsRelatedOrUnrelated) {
  for (bool v6 : {false, true}) {
    SCOPED_TRACE(v6 ? "v6" : "v4");
    ConnTable ct(SmallConfig());
    const Ip128 a = v6 ? kA6 : kA, b = v6 ? kB6 : kB;
    const Ip128 router = v6 ? V6(0x20010db8000000ccull, 9) : kRouter;
    ParsedPacket out = Udp(a, b, 5000, 53, v6);
    uint32_t e;
    ASSERT_TRUE(Commit(ct, 4, out, 0, &e));

    // Port unreachable from B, and time exceeded from a router, to A.
    for (Ip128 from : {b, router}) {
      ConnVerdict v = ct.Track(4, IcmpError(from, a, Inner(a, b, 17, 5000, 53), v6), 1);
      EXPECT_EQ(v.kind, Kind::kRelated);
      EXPECT_TRUE(v.reply);  // it travels toward the client
      EXPECT_EQ(v.entry, e);
      EXPECT_EQ(v.policy.rule_num, 1u);
    }
    // An error about a reply-direction packet (B -> A) travels to B.
    ConnVerdict v = ct.Track(4, IcmpError(a, b, Inner(b, a, 17, 53, 5000), v6), 1);
    EXPECT_EQ(v.kind, Kind::kRelated);
    EXPECT_FALSE(v.reply);

    // Unrelated: other port, other zone, quoted packet not sent by the
    // error's destination (wrong orientation), unknown protocol.
    auto unrelated = [&](uint16_t zone, const ParsedPacket& p) {
      ConnVerdict u = ct.Track(zone, p, 1);
      EXPECT_EQ(u.kind, Kind::kInvalid);
      EXPECT_EQ(u.reason, DropReason::kIcmpErrorUnrelated);
    };
    unrelated(4, IcmpError(b, a, Inner(a, b, 17, 5001, 53), v6));
    unrelated(5, IcmpError(b, a, Inner(a, b, 17, 5000, 53), v6));
    unrelated(4, IcmpError(b, a, Inner(b, a, 17, 53, 5000), v6));
    unrelated(4, IcmpError(router, b, Inner(a, b, 17, 5000, 53), v6));
    unrelated(4, IcmpError(b, a, Inner(a, b, 6, 5000, 53), v6));

    // Errors never create entries.
    DropReason r;
    EXPECT_FALSE(Commit(ct, 4, IcmpError(b, a, Inner(a, b, 17, 5001, 53), v6), 1, nullptr, &r));
    EXPECT_EQ(r, DropReason::kIcmpErrorUnrelated);
    EXPECT_EQ(ct.size(), 1u);
    EXPECT_EQ(StateOf(ct, e, 1), ConnState::kUnreplied);  // nor change them

    // An error about an echo request (host unreachable for a ping).
    const uint8_t req = v6 ? 128 : 8;
    ASSERT_TRUE(Commit(ct, 4, Echo(a, b, req, 300, v6), 1));
    v = ct.Track(4, IcmpError(router, a, Inner(a, b, v6 ? 58 : 1, 300, 300, req), v6), 2);
    EXPECT_EQ(v.kind, Kind::kRelated);
    unrelated(4, IcmpError(router, a, Inner(a, b, v6 ? 58 : 1, 301, 301, req), v6));
    // Expired connections relate nothing.
    EXPECT_EQ(ct.Track(4, IcmpError(b, a, Inner(a, b, 17, 5000, 53), v6), 1'000'000).kind,
              Kind::kInvalid);
  }
}

TEST(ConntrackOther, KeyedByAddressPair) {
  ConnTable ct(SmallConfig());
  ParsedPacket gre = Base(kA, kB, 47, false);
  uint32_t e;
  ASSERT_TRUE(Commit(ct, 0, gre, 0, &e));
  EXPECT_EQ(StateOf(ct, e, 0), ConnState::kUnreplied);
  ConnVerdict v = ct.Track(0, Base(kB, kA, 47, false), 1);
  EXPECT_EQ(v.kind, Kind::kEstablished);
  EXPECT_TRUE(v.reply);
  ConnInfo info;
  ASSERT_TRUE(ct.Info(e, 1, &info));
  EXPECT_EQ(info.state, ConnState::kReplied);
  EXPECT_EQ(info.expires_in_ms, ConnTimeouts{}.other_replied);
  EXPECT_EQ(ct.Track(0, Base(kA, kB, 50, false), 1).kind, Kind::kNew);  // ESP: another
}

TEST(ConntrackZones, SameTupleTwoZones) {
  ConnTable ct(SmallConfig());
  ParsedPacket out = Udp(kA, kB, 5000, 53);
  uint32_t e1, e2;
  ASSERT_TRUE(Commit(ct, 1, out, 0, &e1));
  EXPECT_EQ(ct.Track(2, out, 0).kind, Kind::kNew);
  ASSERT_TRUE(Commit(ct, 2, out, 0, &e2));
  EXPECT_NE(e1, e2);
  EXPECT_EQ(ct.zone_size(1), 1u);
  EXPECT_EQ(ct.zone_size(2), 1u);
  EXPECT_EQ(ct.size(), 2u);
  EXPECT_EQ(ct.Track(2, Udp(kB, kA, 53, 5000), 1).entry, e2);
  EXPECT_EQ(StateOf(ct, e1, 1), ConnState::kUnreplied);
  EXPECT_EQ(StateOf(ct, e2, 1), ConnState::kReplied);
  EXPECT_EQ(ct.Track(3, Udp(kB, kA, 53, 5000), 1).kind, Kind::kNew);
  // Out-of-range zones track nothing and commit nothing.
  DropReason r;
  EXPECT_EQ(ct.Track(999, out, 1).kind, Kind::kNew);
  EXPECT_FALSE(Commit(ct, 999, out, 1, nullptr, &r));
  EXPECT_EQ(r, DropReason::kCtLimitVnic);
  EXPECT_EQ(ct.Flush(1), 1u);
  EXPECT_EQ(ct.zone_size(1), 0u);
  EXPECT_EQ(ct.zone_size(2), 1u);
  EXPECT_EQ(ct.Track(2, out, 1).kind, Kind::kEstablished);
}

TEST(ConntrackTimeouts, ExpiryRefreshAndSweep) {
  ConnTable ct(SmallConfig());
  const ConnTimeouts to;
  ParsedPacket out = Udp(kA, kB, 5000, 53);
  uint32_t e;
  ASSERT_TRUE(Commit(ct, 1, out, 1000, &e));
  uint64_t now = 1000 + to.udp_unreplied - 1;
  EXPECT_EQ(ct.Track(1, out, now).kind, Kind::kEstablished);  // refreshes
  now += to.udp_unreplied - 1;
  EXPECT_EQ(ct.Track(1, Udp(kB, kA, 53, 5000), now).kind, Kind::kEstablished);
  now += to.udp_replied - 1;
  EXPECT_EQ(ct.Track(1, out, now).kind, Kind::kEstablished);
  now += to.udp_replied;
  // Expired: absent for Track and Info, still occupying until swept.
  EXPECT_EQ(ct.Track(1, out, now).kind, Kind::kNew);
  ConnInfo info;
  EXPECT_FALSE(ct.Info(e, now, &info));
  EXPECT_EQ(ct.size(), 1u);
  std::vector<ConnInfo> ended;
  EXPECT_EQ(ct.Sweep(now, ct.capacity(), [&](const ConnInfo& i) { ended.push_back(i); }), 1u);
  ASSERT_EQ(ended.size(), 1u);
  EXPECT_EQ(ended[0].state, ConnState::kReplied);
  EXPECT_EQ(ended[0].packets, 4u);
  EXPECT_EQ(ended[0].sport, 5000);
  EXPECT_EQ(ct.size(), 0u);
  EXPECT_EQ(ct.zone_size(1), 0u);
}

TEST(ConntrackTimeouts, SweptConnectionsKeepTheDirectionTheyWereOpenedIn) {
  // The "ended" flow record says whether the vNIC opened the connection
  // (out) or received it (in).
  ConnTable ct(SmallConfig());
  ParsedPacket to_vnic = Udp(kB, kA, 6000, 53);
  to_vnic.dir = Direction::kIn;
  ParsedPacket from_vnic = Udp(kA, kB, 5000, 53);
  from_vnic.dir = Direction::kOut;
  uint32_t e;
  ASSERT_TRUE(Commit(ct, 1, to_vnic, 0, &e));
  ASSERT_TRUE(Commit(ct, 1, from_vnic, 0, &e));
  std::map<uint16_t, Direction> dir_by_sport;
  ct.Sweep(ConnTimeouts{}.udp_unreplied + 1, ct.capacity(),
           [&](const ConnInfo& i) { dir_by_sport[i.sport] = i.dir; });
  ASSERT_EQ(dir_by_sport.size(), 2u);
  EXPECT_EQ(dir_by_sport[6000], Direction::kIn);
  EXPECT_EQ(dir_by_sport[5000], Direction::kOut);
}

TEST(ConntrackTimeouts, ExpiredEntryReplacedBeforeSweep) {
  ConnTable ct(SmallConfig());
  ParsedPacket out = Udp(kA, kB, 5000, 53);
  uint32_t e1, e2;
  ASSERT_TRUE(Commit(ct, 1, out, 0, &e1));
  const uint64_t later = ConnTimeouts{}.udp_unreplied + 5;
  EXPECT_EQ(ct.Track(1, out, later).kind, Kind::kNew);
  ASSERT_TRUE(Commit(ct, 1, out, later, &e2));
  EXPECT_NE(e1, e2);
  EXPECT_EQ(ct.Track(1, Udp(kB, kA, 53, 5000), later).entry, e2);
  int ended = 0;
  ct.Sweep(later, ct.capacity(), [&](const ConnInfo&) { ++ended; });
  EXPECT_EQ(ended, 1);
  EXPECT_EQ(ct.size(), 1u);
  EXPECT_EQ(ct.Track(1, out, later).entry, e2);
}

TEST(ConntrackTimeouts, SweepHonoursBudget) {
  ConnTable ct(SmallConfig(256));
  for (uint16_t i = 0; i < 100; ++i) ASSERT_TRUE(Commit(ct, 0, Udp(kA, kB, 1000 + i, 53), 0));
  for (uint16_t i = 0; i < 50; ++i) {  // half of them replied: longer timeout
    ASSERT_EQ(ct.Track(0, Udp(kB, kA, 53, 1000 + i), 0).kind, Kind::kEstablished);
  }
  const uint64_t now = ConnTimeouts{}.udp_unreplied;
  uint32_t total = 0;
  for (int call = 0; call < 4; ++call) {
    const uint32_t n = ct.Sweep(now, 64, [](const ConnInfo&) {});
    EXPECT_LE(n, 64u);
    total += n;
  }
  EXPECT_EQ(total, 50u);  // 4 x 64 slots = the whole array once
  EXPECT_EQ(ct.size(), 50u);
  EXPECT_EQ(ct.Sweep(now, 256, [](const ConnInfo&) {}), 0u);
  EXPECT_EQ(ct.Sweep(now + ConnTimeouts{}.udp_replied, 256, [](const ConnInfo&) {}), 50u);
  EXPECT_EQ(ct.size(), 0u);
}

TEST(ConntrackLimits, PerZoneEarlyDropsOldestUnestablished) {
  ConnTable ct(SmallConfig(1024, 4));
  uint32_t first;
  ASSERT_TRUE(Commit(ct, 1, Udp(kA, kB, 1000, 53), 0, &first));
  for (uint16_t i = 1; i < 4; ++i) ASSERT_TRUE(Commit(ct, 1, Udp(kA, kB, 1000 + i, 53), 0));
  // Replied ones are not early-dropped: make the oldest one replied.
  ASSERT_EQ(ct.Track(1, Udp(kB, kA, 53, 1000), 0).kind, Kind::kEstablished);
  ASSERT_TRUE(Commit(ct, 1, Udp(kA, kB, 2000, 53), 0));
  EXPECT_EQ(ct.zone_size(1), 4u);
  EXPECT_EQ(ct.Track(1, Udp(kA, kB, 1000, 53), 0).kind, Kind::kEstablished);
  EXPECT_EQ(ct.Track(1, Udp(kA, kB, 1001, 53), 0).kind, Kind::kNew);  // evicted
  EXPECT_EQ(ct.Track(1, Udp(kA, kB, 2000, 53), 0).kind, Kind::kEstablished);
  // Another zone is not limited by this one.
  for (uint16_t i = 0; i < 4; ++i) ASSERT_TRUE(Commit(ct, 2, Udp(kA, kB, 1000 + i, 53), 0));
  EXPECT_EQ(ct.zone_size(2), 4u);
  EXPECT_EQ(ct.zone_size(1), 4u);
}

// Session totals (conn_table.h): every end of an entry adds its packets and
// bytes to its rule's, once; a move or an import's replacement does not.
TEST(ConntrackSessionTotals, EveryEndFoldsOnceMovesAndReplacementsDoNot) {
  ConnTable ct(SmallConfig(1024, 2));
  constexpr uint32_t kRules = 100;
  Counter packets[kRules], bytes[kRules];
  ct.SetSessionTotals(packets, bytes, kRules);
  // Each end is also an "ended" flow record, on whichever path.
  FlowRing ring(1024);
  ct.SetEndedRecords(&ring);
  auto ended = [&] {
    std::vector<std::pair<uint32_t, uint64_t>> out;  // (rule, packets)
    for (FlowEvent ev; ring.Pop(&ev);) {
      EXPECT_EQ(ev.kind, FlowEvent::Kind::kEnded);
      out.emplace_back(ev.rule_num, ev.packets);
    }
    return out;
  };
  using Ends = std::vector<std::pair<uint32_t, uint64_t>>;
  auto commit = [&](uint16_t zone, const ParsedPacket& p, uint32_t rule, uint32_t* entry) {
    DropReason r;
    return ct.Commit(zone, p, ConnPolicy{rule, 1, false}, 0, entry, &r);
  };
  auto expect_only = [&](std::map<uint32_t, std::pair<uint64_t, uint64_t>> want) {
    for (uint32_t r = 0; r < kRules; ++r) {
      EXPECT_EQ(packets[r].Get(), want[r].first) << "rule " << r;
      EXPECT_EQ(bytes[r].Get(), want[r].second) << "rule " << r;
    }
  };
  const uint64_t udp = Udp(kA, kB, 1, 2).ip_len;
  uint32_t e;

  // Early drop over the per-zone limit: the unreplied (evictable) one ends.
  ASSERT_TRUE(commit(1, Udp(kA, kB, 1000, 53), 5, &e));
  ASSERT_EQ(ct.Track(1, Udp(kA, kB, 1000, 53), 0).kind, Kind::kEstablished);
  ASSERT_TRUE(commit(1, Udp(kA, kB, 1001, 53), 6, &e));
  ASSERT_EQ(ct.Track(1, Udp(kB, kA, 53, 1001), 0).kind, Kind::kEstablished);
  expect_only({});  // open: nothing yet
  EXPECT_EQ(ended(), Ends{});
  ASSERT_TRUE(commit(1, Udp(kA, kB, 1002, 53), 7, &e));
  EXPECT_EQ(ct.Track(1, Udp(kA, kB, 1000, 53), 0).kind, Kind::kNew);  // evicted
  expect_only({{5, {2, 2 * udp}}});
  EXPECT_EQ(ended(), (Ends{{5, 2}}));

  // Remove (revalidation denied it).
  ct.Remove(e);
  expect_only({{5, {2, 2 * udp}}, {7, {1, udp}}});
  EXPECT_EQ(ended(), (Ends{{7, 1}}));

  // The default rule (0) and numbers past the counters: not counted (but
  // they end: recorded).
  ASSERT_TRUE(commit(2, Udp(kA, kB, 2000, 53), 0, &e));
  ASSERT_TRUE(commit(2, Udp(kA, kB, 2001, 53), 150, &e));
  EXPECT_EQ(ct.Flush(2), 2u);
  expect_only({{5, {2, 2 * udp}}, {7, {1, udp}}});
  EXPECT_EQ(ended().size(), 2u);

  // Moved (exported with its VM), then removed here: not an end. A moved
  // entry that carries a packet here again stayed: its end counts.
  ASSERT_TRUE(commit(3, Udp(kA, kB, 3000, 53), 8, &e));
  EXPECT_EQ(ct.MarkMoved(3, 0), 1u);
  EXPECT_EQ(ct.Flush(3), 1u);
  expect_only({{5, {2, 2 * udp}}, {7, {1, udp}}});
  EXPECT_EQ(ended(), Ends{});
  ASSERT_TRUE(commit(3, Udp(kA, kB, 3001, 53), 8, &e));
  EXPECT_EQ(ct.MarkMoved(3, 0), 1u);
  ASSERT_EQ(ct.Track(3, Udp(kB, kA, 53, 3001), 0).kind, Kind::kEstablished);
  EXPECT_EQ(ct.Flush(3), 1u);
  expect_only({{5, {2, 2 * udp}}, {7, {1, udp}}, {8, {2, 2 * udp}}});
  EXPECT_EQ(ended(), (Ends{{8, 2}}));

  // An import replacing the same connection: it goes on, then ends once
  // with the totals it was imported with.
  ASSERT_TRUE(commit(4, Udp(kA, kB, 4000, 53), 9, &e));
  ConnExport c;
  ASSERT_TRUE(ct.Export(e, 0, &c));
  c.packets = 10;
  c.bytes = 1000;
  ASSERT_TRUE(ct.Import(4, c, 0).ok());
  EXPECT_EQ(ct.zone_size(4), 1u);
  expect_only({{5, {2, 2 * udp}}, {7, {1, udp}}, {8, {2, 2 * udp}}});
  EXPECT_EQ(ended(), Ends{});  // the replaced entry goes on
  EXPECT_EQ(ct.Sweep(ConnTimeouts{}.udp_replied, ct.capacity(), [](const ConnInfo&) {}), 2u);
  expect_only(
      {{5, {2, 2 * udp}}, {6, {2, 2 * udp}}, {7, {1, udp}}, {8, {2, 2 * udp}}, {9, {10, 1000}}});
  auto swept = ended();
  std::sort(swept.begin(), swept.end());
  EXPECT_EQ(swept, (Ends{{6, 2}, {9, 10}}));
}

TEST(ConntrackLimits, PerZoneHardFailureWhenAllEstablished) {
  ConnTable ct(SmallConfig(1024, 4));
  for (uint16_t i = 0; i < 4; ++i) {
    ASSERT_TRUE(Commit(ct, 1, Udp(kA, kB, 1000 + i, 53), 0));
    ASSERT_EQ(ct.Track(1, Udp(kB, kA, 53, 1000 + i), 0).kind, Kind::kEstablished);
  }
  DropReason r;
  EXPECT_FALSE(Commit(ct, 1, Udp(kA, kB, 2000, 53), 0, nullptr, &r));
  EXPECT_EQ(r, DropReason::kCtLimitVnic);
  EXPECT_EQ(ct.zone_size(1), 4u);
  // Expired established entries are reclaimed by Sweep (early drop takes
  // them only from the new key's candidate buckets).
  const uint64_t later = ConnTimeouts{}.udp_replied;
  EXPECT_EQ(ct.Sweep(later, ct.capacity(), [](const ConnInfo&) {}), 4u);
  EXPECT_TRUE(Commit(ct, 1, Udp(kA, kB, 2000, 53), later));
  EXPECT_EQ(ct.zone_size(1), 1u);
}

TEST(ConntrackLimits, SynFloodEvictsHalfOpen) {
  ConnTable ct(SmallConfig(1024, 8));
  TcpPair good;
  good.a = kA;
  good.b = kB;
  ParsedPacket syn = good.Send(false, tcpflag::kSyn);
  uint32_t e;
  ASSERT_TRUE(Commit(ct, 1, syn, 0, &e));
  ASSERT_EQ(ct.Track(1, good.Send(true, tcpflag::kSyn | tcpflag::kAck), 0).kind,
            Kind::kEstablished);
  ASSERT_EQ(ct.Track(1, good.Send(false, tcpflag::kAck), 0).kind, Kind::kEstablished);
  for (uint16_t i = 0; i < 100; ++i) {
    ParsedPacket flood = Tcp(V4(Ipv4(203, 0, 113, 1)), kB, 1024 + i, 80, tcpflag::kSyn, i, 0);
    ASSERT_TRUE(Commit(ct, 1, flood, 0));
  }
  EXPECT_EQ(ct.zone_size(1), 8u);
  EXPECT_EQ(StateOf(ct, e, 0), ConnState::kEstablished);
  EXPECT_EQ(ct.Track(1, good.Send(false, tcpflag::kAck, 10), 0).kind, Kind::kEstablished);
}

TEST(ConntrackLimits, GlobalEarlyDropAndHardFailure) {
  ConnTable ct(SmallConfig(16));
  ASSERT_EQ(ct.capacity(), 16u);
  // 15 replied connections over four zones, one unreplied in zone 3.
  for (uint16_t i = 0; i < 15; ++i) {
    const uint16_t zone = i % 4;
    ASSERT_TRUE(Commit(ct, zone, Udp(kA, kB, 1000 + i, 53), 0));
    ASSERT_EQ(ct.Track(zone, Udp(kB, kA, 53, 1000 + i), 0).kind, Kind::kEstablished);
  }
  ASSERT_TRUE(Commit(ct, 3, Udp(kA, kB, 3333, 53), 0));
  EXPECT_EQ(ct.size(), 16u);
  // Full: a new connection in zone 0 evicts zone 3's unreplied one.
  uint32_t e;
  ASSERT_TRUE(Commit(ct, 0, Udp(kA, kB, 4444, 53), 0, &e));
  EXPECT_EQ(ct.size(), 16u);
  EXPECT_EQ(ct.Track(3, Udp(kA, kB, 3333, 53), 0).kind, Kind::kNew);
  // Now everything but the newest is established; that one goes next.
  ASSERT_EQ(ct.Track(0, Udp(kB, kA, 53, 4444), 0).kind, Kind::kEstablished);
  DropReason r;
  EXPECT_FALSE(Commit(ct, 2, Udp(kA, kB, 5555, 53), 0, nullptr, &r));
  EXPECT_EQ(r, DropReason::kCtLimitGlobal);
  EXPECT_EQ(ct.size(), 16u);
  ct.Remove(e);
  EXPECT_EQ(ct.size(), 15u);
  EXPECT_TRUE(Commit(ct, 2, Udp(kA, kB, 5555, 53), 0));
}

TEST(ConntrackTable, FullTableNoHashOverflow) {
  ConnTableConfig cfg = SmallConfig(1u << 16, 1u << 16);
  cfg.seed = 0;  // random
  ConnTable ct(cfg);
  const uint32_t n = ct.capacity();
  for (uint32_t i = 0; i < n; ++i) {
    const bool v6 = i & 1;
    const Ip128 a = v6 ? V6(0x20010db800000000ull, i) : V4(Ipv4(10, 0, 0, 0) + (i >> 8));
    const Ip128 b = v6 ? kB6 : kB;
    ParsedPacket p = Udp(a, b, static_cast<uint16_t>(i), 53, v6);
    DropReason r = DropReason::kNone;
    ASSERT_TRUE(Commit(ct, static_cast<uint16_t>(i % 16), p, 0, nullptr, &r))
        << i << " " << DropReasonName(r);
  }
  EXPECT_EQ(ct.size(), n);
  for (uint32_t i = 0; i < n; i += 7) {
    const bool v6 = i & 1;
    const Ip128 a = v6 ? V6(0x20010db800000000ull, i) : V4(Ipv4(10, 0, 0, 0) + (i >> 8));
    const Ip128 b = v6 ? kB6 : kB;
    ConnVerdict v = ct.Track(static_cast<uint16_t>(i % 16), Udp(b, a, 53, uint16_t(i), v6), 0);
    ASSERT_EQ(v.kind, Kind::kEstablished) << i;
    ASSERT_TRUE(v.reply);
  }
  EXPECT_EQ(ct.Flush(-1), n);
  EXPECT_EQ(ct.size(), 0u);
}

TEST(ConntrackTable, InfoForEachSetPolicyRemove) {
  ConnTable ct(SmallConfig());
  std::set<uint32_t> entries;
  for (uint16_t i = 0; i < 10; ++i) {
    uint32_t e;
    ASSERT_TRUE(Commit(ct, i % 2, Udp(kA, kB, 1000 + i, 53), 0, &e));
    entries.insert(e);
  }
  std::set<uint32_t> seen;
  ct.ForEach(0, [&](uint32_t e, const ConnInfo& info) {
    seen.insert(e);
    EXPECT_EQ(info.proto, 17);
    EXPECT_EQ(info.dport, 53);
    EXPECT_EQ(info.policy.rule_num, 1u);
  });
  EXPECT_EQ(seen, entries);

  const uint32_t e = *entries.begin();
  ct.SetPolicy(e, ConnPolicy{99, 5, true});
  ConnInfo info;
  ASSERT_TRUE(ct.Info(e, 0, &info));
  EXPECT_EQ(info.policy.rule_num, 99u);
  EXPECT_EQ(info.policy.generation, 5u);
  EXPECT_TRUE(info.policy.revalidate);
  ConnVerdict v = ct.Track(info.zone, Udp(kA, kB, info.sport, 53), 0);
  EXPECT_EQ(v.policy.rule_num, 99u);
  EXPECT_TRUE(v.policy.revalidate);

  ct.Remove(e);
  ct.Remove(e);  // twice is harmless
  EXPECT_FALSE(ct.Info(e, 0, &info));
  EXPECT_EQ(ct.size(), 9u);
  EXPECT_EQ(ct.Track(info.zone, Udp(kA, kB, info.sport, 53), 0).kind, Kind::kNew);
  EXPECT_FALSE(ct.Info(ct.capacity() + 5, 0, &info));
  EXPECT_EQ(ct.Flush(-1), 9u);
  EXPECT_EQ(ct.size(), 0u);
}

TEST(ConntrackTable, PrefetchChangesNothing) {
  ConnTable ct(SmallConfig());
  ParsedPacket out = Udp(kA, kB, 5000, 53);
  ConnTable::Probe probe;
  ct.Prefetch(1, out, &probe);
  EXPECT_TRUE(probe.keyed);
  ct.PrefetchEntry(probe);
  ConnTable::Probe error;
  ct.Prefetch(1, IcmpError(kB, kA, Inner(kA, kB, 17, 5000, 53)), &error);
  EXPECT_TRUE(error.keyed);
  ct.PrefetchEntry(error);
  ConnTable::Probe none;
  none.keyed = true;
  ct.Prefetch(1, Echo(kA, kB, 13, 1), &none);  // a timestamp request: no key
  EXPECT_FALSE(none.keyed);
  ct.PrefetchEntry(none);
  EXPECT_EQ(ct.size(), 0u);
  uint32_t entry = 0;
  DropReason why = DropReason::kNone;
  ASSERT_TRUE(ct.Commit(1, out, ConnPolicy{}, 0, &entry, &why, &probe));
  ConnTable::Probe reply;
  ct.Prefetch(1, Udp(kB, kA, 53, 5000), &reply);
  ct.PrefetchEntry(reply);
  EXPECT_NE(reply.hash, probe.hash);
  ConnVerdict v = ct.Track(1, Udp(kB, kA, 53, 5000), 0, &reply);
  EXPECT_EQ(v.kind, Kind::kEstablished);
  EXPECT_TRUE(v.reply);
  EXPECT_EQ(v.entry, entry);
  // Prefetched again once the entry exists: the same hash, the same entry.
  ConnTable::Probe again;
  ct.Prefetch(1, out, &again);
  ct.PrefetchEntry(again);
  EXPECT_EQ(again.hash, probe.hash);
  v = ct.Track(1, out, 0, &again);
  EXPECT_EQ(v.kind, Kind::kEstablished);
  EXPECT_FALSE(v.reply);
  EXPECT_EQ(v.entry, entry);
  EXPECT_EQ(StateOf(ct, entry, 0), ConnState::kReplied);
  // The ICMP error quoting the connection is related through its probe.
  EXPECT_EQ(ct.Track(1, IcmpError(kB, kA, Inner(kA, kB, 17, 5000, 53)), 0, &error).kind,
            Kind::kRelated);
}

TEST(ConntrackTable, StateNames) {
  EXPECT_STREQ(ConnStateName(ConnState::kEstablished), "ESTABLISHED");
  EXPECT_STREQ(ConnStateName(ConnState::kSynSent2), "SYN_SENT2");
  for (int s = 0; s < static_cast<int>(ConnState::kCount); ++s) {
    EXPECT_STRNE(ConnStateName(static_cast<ConnState>(s)), "?");
  }
}

TEST(ConntrackTable, SeedChangesLayoutNotBehaviour) {
  // Two tables with different seeds place entries differently but agree.
  ConnTableConfig c1 = SmallConfig(), c2 = SmallConfig();
  c1.seed = 1;
  c2.seed = 2;
  ConnTable t1(c1), t2(c2);
  for (uint16_t i = 0; i < 200; ++i) {
    ParsedPacket p = Udp(kA, kB, i, 53);
    ASSERT_TRUE(Commit(t1, 0, p, 0));
    ASSERT_TRUE(Commit(t2, 0, p, 0));
  }
  for (uint16_t i = 0; i < 400; ++i) {
    ParsedPacket p = Udp(kB, kA, 53, i);
    EXPECT_EQ(t1.Track(0, p, 0).kind, t2.Track(0, p, 0).kind);
  }
}

}  // namespace
}  // namespace dfw::dataplane
