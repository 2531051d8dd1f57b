// ConnTable against a simple reference model on random traffic.
//
// A pool of flows (zone x tuple, UDP / TCP / ICMP echo, IPv4 and IPv6; the
// same tuples recur in every zone). Each step picks a flow and a packet that a
// well-behaved pair of hosts could send next (TCP endpoints number their
// segments, respect the 64 KB window and close with FIN or RST), plus some
// that may not open connections (stray ACKs, echo replies). The reference is a
// std::map keyed by (zone, canonical tuple[, echo initiator]) holding only
// existence, orig side, a coarse state and the expiry time; it predicts each
// Track verdict (new / established, reply flag), each Commit result, each
// entry's state, and, after full sweeps, the table and zone sizes.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <memory>
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

constexpr int kZones = 4;
constexpr int kBases = 96;  // distinct tuples; each one in every zone
constexpr int kSteps = 150'000;

ConnTimeouts ShortTimeouts() {
  ConnTimeouts t;
  t.tcp_syn = 2000;
  t.tcp_established = 20000;
  t.tcp_fin = 3000;
  t.tcp_time_wait = 1000;
  t.tcp_closed = 500;
  t.udp_unreplied = 1500;
  t.udp_replied = 5000;
  t.icmp = 1000;
  return t;
}

struct Flow {
  uint16_t zone;
  uint8_t proto;  // 6, 17, or ICMP
  bool v6;
  Ip128 addr[2];
  uint16_t port[2];
};

struct Ref {
  int orig = 0;  // side that opened it
  ConnState state = ConnState::kNone;
  uint64_t expires = 0;
  uint32_t entry = 0;
  // TCP endpoints.
  uint32_t nxt[2] = {};
  uint32_t acked[2] = {};  // highest ACK the peer sent for this side's data
  bool fin[2] = {}, fin_acked[2] = {};
};

class Model {
 public:
  explicit Model(uint64_t seed) : rng_(seed) {
    ConnTableConfig cfg;
    cfg.max_connections = 2048;
    cfg.max_per_zone = 1024;
    cfg.zones = kZones;
    cfg.timeouts = to_ = ShortTimeouts();
    cfg.seed = seed;
    ct_ = std::make_unique<ConnTable>(cfg);
    for (int z = 0; z < kZones; ++z) {
      for (int b = 0; b < kBases; ++b) {
        Flow f;
        f.zone = static_cast<uint16_t>(z);
        const int kind = b % 3;
        f.v6 = (b / 3) % 2;
        f.proto = kind == 0 ? 6 : kind == 1 ? 17 : (f.v6 ? 58 : 1);
        for (int s = 0; s < 2; ++s) {
          const uint32_t host = static_cast<uint32_t>(b % 8 + 8 * s);
          f.addr[s] = f.v6 ? V6(0x20010db800000000ull, host) : V4(Ipv4(198, 18, 1, host));
          f.port[s] = static_cast<uint16_t>(s ? 80 + b % 5 : 40000 + b);
        }
        flows_.push_back(f);
      }
    }
  }

  void Run() {
    for (int step = 0; step < kSteps; ++step) {
      now_ += Rand(5);
      if (Rand(20000) == 0) now_ += 25000;  // everything idle expires
      const int fi = static_cast<int>(Rand(static_cast<uint32_t>(flows_.size())));
      const Flow& f = flows_[fi];
      if (f.proto == 17) {
        StepUdp(fi, f);
      } else if (f.proto == 6) {
        StepTcp(fi, f);
      } else {
        StepIcmp(fi, f);
      }
      ct_->Sweep(now_, 4, [&](const ConnInfo&) { ++ended_; });
      if (step % 1000 == 999) Checkpoint();
      if (::testing::Test::HasFatalFailure()) return;
    }
    Checkpoint();
    EXPECT_GT(ended_, 1000u);
    EXPECT_GT(stats_[0], 10000u);  // new
    EXPECT_GT(stats_[1], 10000u);  // established, orig
    EXPECT_GT(stats_[2], 10000u);  // established, reply
    EXPECT_GT(stats_[3], 100u);    // invalid (segments after an RST)
  }

 private:
  uint32_t Rand(uint32_t n) { return static_cast<uint32_t>(rng_() % n); }

  // The live reference entry for a key, dropping it if expired.
  Ref* Live(std::tuple<int, int> key) {
    auto it = refs_.find(key);
    if (it == refs_.end()) return nullptr;
    if (now_ >= it->second.expires) {
      refs_.erase(it);
      return nullptr;
    }
    return &it->second;
  }

  uint32_t Timeout(uint8_t proto, ConnState s) const {
    if (proto == 17) return s == ConnState::kReplied ? to_.udp_replied : to_.udp_unreplied;
    if (proto != 6) return to_.icmp;
    switch (s) {
      case ConnState::kEstablished:
        return to_.tcp_established;
      case ConnState::kFinWait:
      case ConnState::kClosing:
        return to_.tcp_fin;
      case ConnState::kTimeWait:
        return to_.tcp_time_wait;
      case ConnState::kClosed:
        return to_.tcp_closed;
      default:
        return to_.tcp_syn;
    }
  }

  ParsedPacket UdpFrom(const Flow& f, int s) {
    return Udp(f.addr[s], f.addr[1 - s], f.port[s], f.port[1 - s], f.v6);
  }
  ParsedPacket TcpFrom(const Flow& f, Ref& r, int s, uint8_t flags, uint16_t len = 0) {
    const uint32_t ack = (flags & kAck) ? r.nxt[1 - s] : 0;
    ParsedPacket p = Tcp(f.addr[s], f.addr[1 - s], f.port[s], f.port[1 - s], flags, r.nxt[s], ack,
                         65535, len, 0xff, f.v6);
    if (flags & kAck) r.acked[1 - s] = ack;
    r.nxt[s] += len + ((flags & kSyn) ? 1 : 0) + ((flags & kFin) ? 1 : 0);
    return p;
  }

  // Half the calls take the burst path: Prefetch and PrefetchEntry first,
  // then the probe instead of a second hash.
  const ConnTable::Probe* MaybeProbe(const Flow& f, const ParsedPacket& p) {
    if (Rand(2) == 0) return nullptr;
    ct_->Prefetch(f.zone, p, &probe_);
    ct_->PrefetchEntry(probe_);
    return &probe_;
  }

  // Tracks `p`; checks the verdict against `ref` (nullptr: expect kNew).
  ConnVerdict Expect(const Flow& f, const ParsedPacket& p, const Ref* ref, bool reply) {
    ConnVerdict v = ct_->Track(f.zone, p, now_, MaybeProbe(f, p));
    if (ref == nullptr) {
      EXPECT_EQ(v.kind, Kind::kNew) << Where(f);
      ++stats_[0];
    } else {
      EXPECT_EQ(v.kind, Kind::kEstablished) << Where(f) << " " << DropReasonName(v.reason);
      EXPECT_EQ(v.reply, reply) << Where(f);
      EXPECT_EQ(v.entry, ref->entry) << Where(f);
      ++stats_[reply ? 2 : 1];
    }
    return v;
  }
  bool CommitOk(const Flow& f, const ParsedPacket& p, Ref* r) {
    DropReason why = DropReason::kNone;
    const bool ok = ct_->Commit(f.zone, p, ConnPolicy{}, now_, &r->entry, &why, MaybeProbe(f, p));
    EXPECT_TRUE(ok) << Where(f) << " " << DropReasonName(why);
    return ok;
  }
  void CommitFails(const Flow& f, const ParsedPacket& p, DropReason want) {
    uint32_t e;
    DropReason why = DropReason::kNone;
    EXPECT_FALSE(ct_->Commit(f.zone, p, ConnPolicy{}, now_, &e, &why, MaybeProbe(f, p)))
        << Where(f);
    EXPECT_EQ(why, want) << Where(f);
  }
  void CheckState(const Flow& f, const Ref& r) {
    ConnInfo info;
    ASSERT_TRUE(ct_->Info(r.entry, now_, &info)) << Where(f);
    EXPECT_EQ(info.state, r.state)
        << Where(f) << " table " << ConnStateName(info.state) << " ref " << ConnStateName(r.state);
    EXPECT_EQ(info.zone, f.zone);
    EXPECT_EQ(info.src, f.addr[r.orig]) << Where(f);
  }
  std::string Where(const Flow& f) const {
    return "t=" + std::to_string(now_) + " zone=" + std::to_string(f.zone) +
           " proto=" + std::to_string(f.proto) + " v6=" + std::to_string(f.v6);
  }

  void StepUdp(int fi, const Flow& f) {
    const int s = static_cast<int>(Rand(2));
    Ref* r = Live({fi, 0});
    ParsedPacket p = UdpFrom(f, s);
    Expect(f, p, r, r && s != r->orig);
    if (r) {
      if (s != r->orig) r->state = ConnState::kReplied;
      r->expires = now_ + Timeout(17, r->state);
      CheckState(f, *r);
    } else if (Rand(5) != 0) {  // else the policy said no
      Ref n;
      n.orig = s;
      n.state = ConnState::kUnreplied;
      n.expires = now_ + Timeout(17, n.state);
      if (CommitOk(f, p, &n)) refs_[{fi, 0}] = n;
    }
  }

  void StepIcmp(int fi, const Flow& f) {
    const int s = static_cast<int>(Rand(2));
    const bool request = Rand(2);
    const uint16_t id = static_cast<uint16_t>(f.port[0]);
    const uint8_t type = f.v6 ? (request ? 128 : 129) : (request ? 8 : 0);
    ParsedPacket p = Echo(f.addr[s], f.addr[1 - s], type, id, f.v6);
    // One connection per initiator side.
    const int initiator = request ? s : 1 - s;
    Ref* r = Live({fi, 1 + initiator});
    Expect(f, p, r, !request);
    if (r) {
      if (!request) r->state = ConnState::kReplied;
      r->expires = now_ + to_.icmp;
      CheckState(f, *r);
    } else if (!request) {
      CommitFails(f, p, DropReason::kCtNoConnection);
    } else if (Rand(5) != 0) {
      Ref n;
      n.orig = s;
      n.state = ConnState::kUnreplied;
      n.expires = now_ + to_.icmp;
      if (CommitOk(f, p, &n)) refs_[{fi, 1 + initiator}] = n;
    }
  }

  static ConnState TcpClosingState(const Ref& r) {
    if (r.fin_acked[0] && r.fin_acked[1]) return ConnState::kTimeWait;
    if (r.fin[0] && r.fin[1]) return ConnState::kClosing;
    if (r.fin[0] || r.fin[1]) return ConnState::kFinWait;
    return ConnState::kEstablished;
  }

  void StepTcp(int fi, const Flow& f) {
    Ref* r = Live({fi, 0});
    if (r == nullptr || r->state == ConnState::kTimeWait || r->state == ConnState::kClosed) {
      if (r && Rand(3) == 0) {
        // A late ACK after the close: valid after FINs (keeps TIME_WAIT),
        // invalid after an RST.
        const int s = static_cast<int>(Rand(2));
        ParsedPacket p = TcpFrom(f, *r, s, kAck);
        if (r->state == ConnState::kClosed) {
          ConnVerdict v = ct_->Track(f.zone, p, now_);
          EXPECT_EQ(v.kind, Kind::kInvalid) << Where(f);
          EXPECT_EQ(v.reason, DropReason::kCtInvalid) << Where(f);
          ++stats_[3];
        } else {
          Expect(f, p, r, s != r->orig);
          r->expires = now_ + Timeout(6, r->state);
        }
        CheckState(f, *r);
        return;
      }
      const int s = static_cast<int>(Rand(2));
      Ref n;
      n.orig = s;
      n.nxt[s] = static_cast<uint32_t>(rng_());
      n.nxt[1 - s] = static_cast<uint32_t>(rng_());
      if (r == nullptr && Rand(6) == 0) {
        // A stray mid-stream segment: strict mode will not open on it.
        ParsedPacket p = TcpFrom(f, n, s, kAck | kPsh, 100);
        Expect(f, p, nullptr, false);
        CommitFails(f, p, DropReason::kCtNoConnection);
        return;
      }
      ParsedPacket syn = TcpFrom(f, n, s, kSyn);
      Expect(f, syn, nullptr, false);  // also on TIME_WAIT / CLOSED: port reuse
      refs_.erase({fi, 0});            // which ends the old connection
      if (Rand(5) == 0) return;        // policy said no
      n.state = ConnState::kSynSent;
      n.expires = now_ + to_.tcp_syn;
      if (CommitOk(f, syn, &n)) {
        refs_[{fi, 0}] = n;
        CheckState(f, refs_[{fi, 0}]);
      }
      return;
    }
    const int o = r->orig, rs = 1 - r->orig;
    switch (r->state) {
      case ConnState::kSynSent: {
        const uint32_t pick = Rand(10);
        if (pick == 0) {  // SYN retransmission
          r->nxt[o] -= 1;
          Expect(f, TcpFrom(f, *r, o, kSyn), r, false);
        } else if (pick == 1) {  // refused: RST+ACK with SEQ 0
          r->nxt[rs] = 0;
          Expect(f, TcpFrom(f, *r, rs, kRst | kAck), r, true);
          r->state = ConnState::kClosed;
        } else {
          Expect(f, TcpFrom(f, *r, rs, kSyn | kAck), r, true);
          r->state = ConnState::kSynRecv;
        }
        break;
      }
      case ConnState::kSynRecv:
        Expect(f, TcpFrom(f, *r, o, kAck), r, false);
        r->state = ConnState::kEstablished;
        break;
      default: {  // established or closing
        const int s = static_cast<int>(Rand(2));
        const uint32_t pick = Rand(40);
        uint8_t flags = kAck;
        uint16_t len = 0;
        const uint32_t in_flight = r->nxt[s] - r->acked[s];
        const uint32_t room = in_flight < 65535 ? 65535 - in_flight : 0;  // the peer's window
        if (pick == 0) {
          flags = kRst | kAck;
        } else if (pick < 3 && !r->fin[s] && room > 0) {
          flags = kFin | kAck;
        } else if (!r->fin[s]) {
          len = static_cast<uint16_t>(std::min<uint32_t>(room, Rand(1400)));
          if (len) flags |= kPsh;
        }
        Expect(f, TcpFrom(f, *r, s, flags, len), r, s != o);
        if (flags & kRst) {
          r->state = ConnState::kClosed;
          break;
        }
        if (flags & kFin) r->fin[s] = true;
        if (r->fin[1 - s]) r->fin_acked[1 - s] = true;
        r->state = TcpClosingState(*r);
        break;
      }
    }
    r->expires = now_ + Timeout(6, r->state);
    CheckState(f, *r);
  }

  void Checkpoint() {
    ct_->Sweep(now_, ct_->capacity(), [&](const ConnInfo&) { ++ended_; });
    uint32_t zone_refs[kZones] = {};
    uint32_t total = 0;
    for (auto it = refs_.begin(); it != refs_.end();) {
      if (now_ >= it->second.expires) {
        it = refs_.erase(it);
        continue;
      }
      ++zone_refs[flows_[std::get<0>(it->first)].zone];
      ++total;
      ++it;
    }
    ASSERT_EQ(ct_->size(), total) << "t=" << now_;
    for (int z = 0; z < kZones; ++z) {
      ASSERT_EQ(ct_->zone_size(static_cast<uint16_t>(z)), zone_refs[z]) << "zone " << z;
    }
    uint32_t visited = 0;
    ct_->ForEach(now_, [&](uint32_t, const ConnInfo&) { ++visited; });
    ASSERT_EQ(visited, total);
  }

  std::mt19937_64 rng_;
  ConnTimeouts to_;
  std::unique_ptr<ConnTable> ct_;
  ConnTable::Probe probe_;
  std::vector<Flow> flows_;
  std::map<std::tuple<int, int>, Ref> refs_;  // (flow = zone x tuple, 0 or echo initiator + 1)
  uint64_t now_ = 0;
  uint64_t ended_ = 0;
  uint64_t stats_[4] = {};  // new, established orig, established reply, invalid
};

TEST(ConntrackRandom, AgreesWithReferenceModel) {
  for (uint64_t seed : {1ull, 2ull}) {
    SCOPED_TRACE(seed);
    Model m(seed);
    m.Run();
    if (::testing::Test::HasFatalFailure()) return;
  }
}

}  // namespace
}  // namespace dfw::dataplane
