// ConnTable: the table (entries, hash index, limits, early drop, aging) and
// the per-protocol glue. The TCP window tracker is in conn_tcp.cc; the layout
// is in conn_table_impl.h. See conn_table.h for the contract.
//
// Index. A key is (zone, proto, family, src, dst, sport, dport, echo-reply
// bit); each entry is indexed twice, by its orig key and by its reversed
// (reply) key, each in one of two candidate buckets of 8 slots (the first
// unless it is nearly full, see PlaceSlot). A slot holds a 32-bit signature
// and entry<<1|direction. A lookup hashes the packet's tuple once (in a
// burst, in Prefetch) and scans the first bucket, then the second.
// ICMP echo keys carry a "reply" bit, so an echo request from the responder
// with the same identifier is its own connection, not a reply.
//
// Hash. wyhash-style 64x64->128 multiply-fold rounds over the key words,
// keyed by a per-start random seed.
//
// Early drop. Entries in an unestablished state (SYN_SENT, SYN_SENT2,
// SYN_RECV, UNREPLIED) or a dying one (TIME_WAIT, CLOSED) sit on their zone's
// FIFO list; over a limit, Commit evicts an expired or listed entry from the
// new key's candidate buckets, else the oldest listed entry of the zone, else
// (global limit) a listed entry found by a short scan of the array.
#include <chrono>
#include <cstring>
#include <random>

#include "conn_table_impl.h"

namespace dfw::dataplane {

using namespace ct;

const char* ConnStateName(ConnState s) {
  switch (s) {
    case ConnState::kNone:
      return "NONE";
    case ConnState::kSynSent:
      return "SYN_SENT";
    case ConnState::kSynSent2:
      return "SYN_SENT2";
    case ConnState::kSynRecv:
      return "SYN_RECV";
    case ConnState::kEstablished:
      return "ESTABLISHED";
    case ConnState::kFinWait:
      return "FIN_WAIT";
    case ConnState::kClosing:
      return "CLOSING";
    case ConnState::kTimeWait:
      return "TIME_WAIT";
    case ConnState::kClosed:
      return "CLOSED";
    case ConnState::kUnreplied:
      return "UNREPLIED";
    case ConnState::kReplied:
      return "REPLIED";
    case ConnState::kCount:
      break;
  }
  return "?";
}

namespace {

constexpr uint32_t kNil = 0xffffffffu;
constexpr uint32_t kEmpty = 0xffffffffu;
constexpr int kWays = 8;
constexpr uint32_t kEvictScan = 64;  // entries looked at by the global fallback scan

struct alignas(64) Bucket {
  uint32_t sig[kWays];
  uint32_t ref[kWays];  // entry << 1 | direction (1: reply key), or kEmpty
};
static_assert(sizeof(Bucket) == 64);

// Key flags.
constexpr uint8_t kKeyV6 = 0x01;
constexpr uint8_t kKeyEchoReply = 0x02;

struct Key {
  Ip128 src, dst;
  uint16_t sport = 0, dport = 0;
  uint16_t zone = 0;
  uint8_t proto = 0;
  uint8_t kf = 0;
};

inline uint64_t Mum(uint64_t a, uint64_t b) {
  const unsigned __int128 r = static_cast<unsigned __int128>(a) * b;
  return static_cast<uint64_t>(r) ^ static_cast<uint64_t>(r >> 64);
}

inline Key Reverse(const Key& k) {
  Key r = k;
  r.src = k.dst;
  r.dst = k.src;
  r.sport = k.dport;
  r.dport = k.sport;
  if (IsIcmp(k.proto)) r.kf ^= kKeyEchoReply;
  return r;
}

enum class KeyKind : uint8_t { kOk, kNoKey };

// The packet's key as it travels. ICMP that is neither echo nor error has none.
inline KeyKind MakeKey(uint16_t zone, const ParsedPacket& p, Key* k) {
  k->src = p.src;
  k->dst = p.dst;
  k->zone = zone;
  k->proto = p.proto;
  k->kf = p.family == Family::kV6 ? kKeyV6 : 0;
  if (p.proto == kProtoTcp || p.proto == kProtoUdp) {
    k->sport = p.sport;
    k->dport = p.dport;
  } else if (IsIcmp(p.proto)) {
    if (IsEchoReply(p.proto, p.icmp_type)) {
      k->kf |= kKeyEchoReply;
    } else if (!IsEchoRequest(p.proto, p.icmp_type)) {
      return KeyKind::kNoKey;
    }
    k->sport = k->dport = p.icmp_id;
  } else {
    k->sport = k->dport = 0;
  }
  return KeyKind::kOk;
}

// The key of the packet an ICMP error quotes, as its sender sent it.
inline KeyKind MakeInnerKey(uint16_t zone, const ParsedPacket& p, Key* k) {
  const InnerTuple& in = p.inner;
  k->src = in.src;
  k->dst = in.dst;
  k->zone = zone;
  k->proto = in.proto;
  k->kf = p.family == Family::kV6 ? kKeyV6 : 0;
  if (in.proto == kProtoTcp || in.proto == kProtoUdp) {
    k->sport = in.sport;
    k->dport = in.dport;
  } else if (IsIcmp(in.proto)) {
    if (IsEchoReply(in.proto, in.icmp_type)) {
      k->kf |= kKeyEchoReply;
    } else if (!IsEchoRequest(in.proto, in.icmp_type)) {
      return KeyKind::kNoKey;  // an error about an error, or about other ICMP
    }
    k->sport = k->dport = in.sport;
  } else {
    k->sport = k->dport = 0;
  }
  return KeyKind::kOk;
}

uint64_t SplitMix(uint64_t* x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint32_t RoundUpPow2(uint32_t v, uint32_t min) {
  uint32_t r = min;
  while (r < v && r < (1u << 31)) r <<= 1;
  return r;
}

}  // namespace

struct ConnTable::Impl {
  ConnTableConfig cfg;
  uint32_t cap = 0, nbuckets = 0, bmask = 0;
  uint64_t seed[5] = {};
  uint32_t timeout[4][static_cast<int>(ConnState::kCount)] = {};  // [class][state]

  std::unique_ptr<ConnEntry[]> e;
  std::unique_ptr<V6Pair[]> v6;
  std::unique_ptr<ConnCounters[]> ctr;
  std::unique_ptr<ConnLink[]> link;
  std::unique_ptr<Bucket[]> b;
  std::unique_ptr<uint32_t[]> zone_count, zone_head, zone_tail;

  uint32_t free_head = kNil;
  uint32_t used = 0;
  uint32_t sweep_cursor = 0;
  uint32_t evict_cursor = 0;
  // Session totals by rule number (SetSessionTotals), or null.
  Counter* session_packets = nullptr;
  Counter* session_bytes = nullptr;
  uint32_t session_rules = 0;
  FlowRing* ended_records = nullptr;  // SetEndedRecords
  uint64_t last_now = 0;              // the newest now_ms given (Tick, Commit, Sweep)

  explicit Impl(const ConnTableConfig& c);

  // --- keys and hashing -------------------------------------------------
  uint64_t Hash(const Key& k) const {
    const uint64_t meta =
        static_cast<uint64_t>(k.sport) << 48 | static_cast<uint64_t>(k.dport) << 32 |
        static_cast<uint64_t>(k.zone) << 16 | static_cast<uint64_t>(k.proto) << 8 | k.kf;
    uint64_t h;
    if (k.kf & kKeyV6) {
      h = Mum(k.src.hi ^ seed[0], k.src.lo ^ seed[1]) ^ Mum(k.dst.hi ^ seed[2], k.dst.lo ^ seed[3]);
      h = Mum(h ^ seed[4], meta ^ seed[0]);
    } else {
      h = Mum((k.src.lo << 32 | (k.dst.lo & 0xffffffffu)) ^ seed[0], meta ^ seed[1]);
    }
    return Mum(h ^ seed[2], seed[3] ^ 0x2d358dccaa6c78a5ull);
  }
  uint32_t B1(uint64_t h) const { return static_cast<uint32_t>(h) & bmask; }
  uint32_t B2(uint64_t h) const {
    uint32_t b1 = B1(h);
    uint32_t b2 = static_cast<uint32_t>((h * 0x9e3779b97f4a7c15ull) >> 32) & bmask;
    return b2 == b1 ? b1 ^ 1 : b2;
  }
  static uint32_t Sig(uint64_t h) { return static_cast<uint32_t>(h >> 32); }

  Key EntryKey(uint32_t i, int dir) const {
    const ConnEntry& x = e[i];
    Key k;
    if (x.flags & kEntryV6) {
      k.src = v6[i].src;
      k.dst = v6[i].dst;
      k.kf = kKeyV6;
    } else {
      k.src = Ip128{0, x.src4};
      k.dst = Ip128{0, x.dst4};
    }
    k.sport = x.sport;
    k.dport = x.dport;
    k.zone = x.zone;
    k.proto = x.proto;
    return dir ? Reverse(k) : k;
  }

  bool Match(uint32_t i, int dir, const Key& k) const {
    const ConnEntry& x = e[i];
    if (x.zone != k.zone || x.proto != k.proto) return false;
    const bool v6key = k.kf & kKeyV6;
    if (v6key != static_cast<bool>(x.flags & kEntryV6)) return false;
    if (IsIcmp(k.proto) && static_cast<bool>(k.kf & kKeyEchoReply) != static_cast<bool>(dir)) {
      return false;
    }
    const Ip128& ks = dir ? k.dst : k.src;  // the key's addresses in orig order
    const Ip128& kd = dir ? k.src : k.dst;
    const uint16_t ksp = dir ? k.dport : k.sport;
    const uint16_t kdp = dir ? k.sport : k.dport;
    if (x.sport != ksp || x.dport != kdp) return false;
    if (x.src4 != static_cast<uint32_t>(ks.lo) || x.dst4 != static_cast<uint32_t>(kd.lo)) {
      return false;
    }
    if (v6key) return v6[i].src == ks && v6[i].dst == kd;
    return true;
  }

  bool Expired(uint32_t i, uint64_t now) const { return now >= e[i].expires_ms; }

  // Live (unexpired) entry for `k` (whose hash is h): returns entry, sets *dir.
  uint32_t Lookup(const Key& k, uint64_t h, uint64_t now, int* dir) const {
    const uint32_t sig = Sig(h);
    const Bucket* bk[2] = {&b[B1(h)], &b[B2(h)]};
    for (const Bucket* bucket : bk) {
      uint32_t m = 0;
      for (int s = 0; s < kWays; ++s) m |= static_cast<uint32_t>(bucket->sig[s] == sig) << s;
      while (m) {
        const int s = __builtin_ctz(m);
        m &= m - 1;
        const uint32_t ref = bucket->ref[s];
        if (ref == kEmpty) continue;
        const uint32_t i = ref >> 1;
        const int d = static_cast<int>(ref & 1);
        if (Match(i, d, k) && !Expired(i, now)) {
          *dir = d;
          return i;
        }
      }
    }
    return kNil;
  }
  uint32_t Lookup(const Key& k, uint64_t now, int* dir) const {
    return Lookup(k, Hash(k), now, dir);
  }

  // --- slots --------------------------------------------------------------
  static int FreeWays(const Bucket& bucket) {
    int n = 0;
    for (int s = 0; s < kWays; ++s) n += bucket.ref[s] == kEmpty;
    return n;
  }
  static int FirstFree(const Bucket& bucket) {
    for (int s = 0; s < kWays; ++s) {
      if (bucket.ref[s] == kEmpty) return s;
    }
    return -1;
  }
  // Places ref for hash h in its first candidate bucket while that has more
  // than kSpareWays free slots, else in the less loaded of the two. Lookups
  // then mostly need the first bucket only (99.7% of keys at half the
  // table's capacity, 95% when full), while the near-full buckets still
  // share their load, so that both candidates of a key are full no more
  // often than with pure two-choice placement (never, in simulations of a
  // full table).
  static constexpr int kSpareWays = 2;
  bool PlaceSlot(uint64_t h, uint32_t ref) {
    Bucket* t = &b[B1(h)];
    if (FreeWays(*t) <= kSpareWays) {
      Bucket* y = &b[B2(h)];
      if (FreeWays(*y) > FreeWays(*t)) t = y;
    }
    const int s = FirstFree(*t);
    if (s < 0) return false;
    t->sig[s] = Sig(h);
    t->ref[s] = ref;
    return true;
  }
  void ClearSlot(uint64_t h, uint32_t ref) {
    for (uint32_t bi : {B1(h), B2(h)}) {
      Bucket& bucket = b[bi];
      for (int s = 0; s < kWays; ++s) {
        if (bucket.ref[s] == ref) {
          bucket.ref[s] = kEmpty;
          bucket.sig[s] = 0;
          return;
        }
      }
    }
  }

  // --- early-drop lists ------------------------------------------------------
  static bool Evictable(uint8_t state) {
    switch (static_cast<ConnState>(state)) {
      case ConnState::kSynSent:
      case ConnState::kSynSent2:
      case ConnState::kSynRecv:
      case ConnState::kUnreplied:
      case ConnState::kTimeWait:
      case ConnState::kClosed:
        return true;
      default:
        return false;
    }
  }
  void ListAppend(uint32_t i) {
    const uint16_t z = e[i].zone;
    link[i].prev = zone_tail[z];
    link[i].next = kNil;
    if (zone_tail[z] != kNil) {
      link[zone_tail[z]].next = i;
    } else {
      zone_head[z] = i;
    }
    zone_tail[z] = i;
    e[i].flags |= kEntryListed;
  }
  void ListUnlink(uint32_t i) {
    const uint16_t z = e[i].zone;
    const ConnLink l = link[i];
    if (l.prev != kNil) {
      link[l.prev].next = l.next;
    } else {
      zone_head[z] = l.next;
    }
    if (l.next != kNil) {
      link[l.next].prev = l.prev;
    } else {
      zone_tail[z] = l.prev;
    }
    e[i].flags &= static_cast<uint8_t>(~kEntryListed);
  }
  void Relist(uint32_t i) {
    const bool want = Evictable(e[i].state);
    const bool listed = e[i].flags & kEntryListed;
    if (want && !listed) {
      ListAppend(i);
    } else if (!want && listed) {
      ListUnlink(i);
    }
  }

  // --- entries ---------------------------------------------------------------
  // Removes entry i; `ended`: the connection ends (unless it moved), its
  // totals go to its rule's session totals (conn_table.h, "Session totals").
  void RemoveEntry(uint32_t i, bool ended = true) {
    ConnEntry& x = e[i];
    if (ended && !(x.flags & kEntryMoved)) {
      if (x.rule_num != 0 && x.rule_num < session_rules) {
        session_packets[x.rule_num].Add(ctr[i].packets[0] + ctr[i].packets[1]);
        session_bytes[x.rule_num].Add(ctr[i].bytes[0] + ctr[i].bytes[1]);
      }
      if (ended_records) RecordEnd(i);
    }
    ClearSlot(Hash(EntryKey(i, 0)), i << 1);
    ClearSlot(Hash(EntryKey(i, 1)), i << 1 | 1);
    if (x.flags & kEntryListed) ListUnlink(i);
    --zone_count[x.zone];
    --used;
    x.flags = 0;
    x.state = 0;
    link[i].next = free_head;
    free_head = i;
  }

  uint32_t TimeoutFor(uint8_t proto, uint8_t state) const {
    const int cls = proto == kProtoTcp ? 0 : proto == kProtoUdp ? 1 : IsIcmp(proto) ? 2 : 3;
    return timeout[cls][state];
  }
  void Refresh(uint32_t i, uint64_t now) {
    e[i].expires_ms = now + TimeoutFor(e[i].proto, e[i].state);
  }

  void Count(uint32_t i, int dir, const ParsedPacket& p) {
    e[i].flags &= static_cast<uint8_t>(~kEntryMoved);  // a packet here: it stayed
    ConnCounters& c = ctr[i];
    ++c.packets[dir];
    c.bytes[dir] += p.ip_len;
  }

  // An expired or (unless expired_only) evictable entry referenced from h's
  // candidate buckets (in `zone` if zone >= 0), or kNil.
  uint32_t EvictableIn(uint64_t h, int zone, uint64_t now, bool expired_only = false) const {
    uint32_t found = kNil;
    for (uint32_t bi : {B1(h), B2(h)}) {
      const Bucket& bucket = b[bi];
      for (int s = 0; s < kWays; ++s) {
        if (bucket.ref[s] == kEmpty) continue;
        const uint32_t i = bucket.ref[s] >> 1;
        if (zone >= 0 && e[i].zone != zone) continue;
        if (Expired(i, now)) return i;
        if (found == kNil && !expired_only && Evictable(e[i].state)) found = i;
      }
    }
    return found;
  }
  // Frees one entry for a new connection of `zone` with hashes h0/h1.
  // zone_only: the per-zone limit (the victim must be of that zone).
  // expired_only (imports): only an expired entry of the candidate buckets.
  bool EarlyDrop(uint64_t h0, uint64_t h1, uint16_t zone, bool zone_only, uint64_t now,
                 bool expired_only = false) {
    const int zf = zone_only ? zone : -1;
    uint32_t victim = EvictableIn(h0, zf, now, expired_only);
    if (victim == kNil) victim = EvictableIn(h1, zf, now, expired_only);
    if (expired_only) {
      if (victim == kNil) return false;
      RemoveEntry(victim);
      return true;
    }
    if (victim == kNil) victim = zone_head[zone];
    if (victim == kNil && !zone_only) {
      for (uint32_t n = 0; n < kEvictScan; ++n) {
        const uint32_t i = evict_cursor++ & (cap - 1);
        if ((e[i].flags & kEntryUsed) && (Expired(i, now) || Evictable(e[i].state))) {
          victim = i;
          break;
        }
      }
    }
    if (victim == kNil) return false;
    RemoveEntry(victim);
    return true;
  }

  // A free entry for a new connection of `zone` whose keys hash to h0 (orig)
  // and h1 (reply), making room over a limit as EarlyDrop says; kNil with
  // *reason set when there is none.
  uint32_t Allocate(uint64_t h0, uint64_t h1, uint16_t zone, uint64_t now, bool expired_only,
                    DropReason* reason) {
    if (zone_count[zone] >= cfg.max_per_zone && !EarlyDrop(h0, h1, zone, true, now, expired_only)) {
      *reason = DropReason::kCtLimitVnic;
      return kNil;
    }
    if (free_head == kNil && !EarlyDrop(h0, h1, zone, false, now, expired_only)) {
      *reason = DropReason::kCtLimitGlobal;
      return kNil;
    }
    // Both keys need a slot in one of their candidate buckets (at most half
    // the slots are ever used, so this is rare: only a full table's skew).
    for (uint64_t h : {h0, h1}) {
      if (FreeWays(b[B1(h)]) == 0 && FreeWays(b[B2(h)]) == 0) {
        const uint32_t victim = EvictableIn(h, -1, now, expired_only);
        if (victim == kNil) {
          *reason = DropReason::kCtLimitGlobal;
          return kNil;
        }
        RemoveEntry(victim);
      }
    }
    const uint32_t i = free_head;
    free_head = link[i].next;
    return i;
  }

  // Makes entry i (from Allocate) the connection with orig key k: key fields,
  // index slots, counts; the caller sets policy, state, expiry, then Relists.
  void Insert(uint32_t i, const Key& k, uint64_t h0, uint64_t h1) {
    ConnEntry& x = e[i];
    x = ConnEntry{};
    x.zone = k.zone;
    x.proto = k.proto;
    x.flags = kEntryUsed;
    x.sport = k.sport;
    x.dport = k.dport;
    x.src4 = static_cast<uint32_t>(k.src.lo);
    x.dst4 = static_cast<uint32_t>(k.dst.lo);
    if (k.kf & kKeyV6) {
      x.flags |= kEntryV6;
      v6[i].src = k.src;
      v6[i].dst = k.dst;
    }
    ctr[i] = ConnCounters{};
    // Cannot fail: a free way was checked (or made) in each key's buckets.
    PlaceSlot(h0, i << 1);
    PlaceSlot(h1, i << 1 | 1);
    ++zone_count[k.zone];
    ++used;
  }

  // The "ended" flow record of entry i (SetEndedRecords).
  void RecordEnd(uint32_t i) {
    ConnInfo c;
    Fill(i, last_now, &c);
    FlowEvent ev;
    ev.kind = FlowEvent::Kind::kEnded;
    ev.family = c.family;
    ev.dir = c.dir;
    ev.proto = c.proto;
    ev.local_id = c.zone;
    ev.src = c.src;
    ev.dst = c.dst;
    ev.sport = c.sport;
    ev.dport = c.dport;
    ev.rule_num = c.policy.rule_num;
    ev.time_ms = last_now;
    ev.packets = c.packets;
    ev.bytes = c.bytes;
    ended_records->Push(ev);
  }

  void Fill(uint32_t i, uint64_t now, ConnInfo* out) const {
    const ConnEntry& x = e[i];
    const Key k = EntryKey(i, 0);
    out->zone = x.zone;
    out->family = (x.flags & kEntryV6) ? Family::kV6 : Family::kV4;
    out->proto = x.proto;
    out->src = k.src;
    out->dst = k.dst;
    out->sport = x.sport;
    out->dport = x.dport;
    out->state = static_cast<ConnState>(x.state);
    out->dir = (x.flags & kEntryIngress) ? Direction::kIn : Direction::kOut;
    out->policy.rule_num = x.rule_num;
    out->policy.generation = x.generation;
    out->policy.revalidate = x.flags & kEntryRevalidate;
    out->packets = ctr[i].packets[0] + ctr[i].packets[1];
    out->bytes = ctr[i].bytes[0] + ctr[i].bytes[1];
    out->expires_in_ms = now >= x.expires_ms ? 0
                         : x.expires_ms - now > 0xffffffffull
                             ? 0xffffffffu
                             : static_cast<uint32_t>(x.expires_ms - now);
  }

  ConnVerdict Verdict(ConnVerdict::Kind kind, uint32_t i, int dir, DropReason reason) const {
    ConnVerdict v;
    v.kind = kind;
    v.reason = reason;
    v.reply = dir != 0;
    v.entry = i;
    v.policy.rule_num = e[i].rule_num;
    v.policy.generation = e[i].generation;
    v.policy.revalidate = e[i].flags & kEntryRevalidate;
    return v;
  }
};

ConnTable::Impl::Impl(const ConnTableConfig& c) : cfg(c) {
  cap = RoundUpPow2(c.max_connections, 16);
  nbuckets = cap / 2;  // 8 ways, 2 slots per entry: at most half full
  bmask = nbuckets - 1;
  if (cfg.zones == 0) cfg.zones = 1;
  if (cfg.zones > 65536) cfg.zones = 65536;

  uint64_t s = c.seed;
  if (s == 0) {
    std::random_device rd;
    s = (static_cast<uint64_t>(rd()) << 32 | rd()) ^
        static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  }
  for (uint64_t& w : seed) w = SplitMix(&s);

  const ConnTimeouts& t = c.timeouts;
  auto set = [&](int cls, ConnState st, uint32_t ms) { timeout[cls][static_cast<int>(st)] = ms; };
  set(0, ConnState::kSynSent, t.tcp_syn);
  set(0, ConnState::kSynSent2, t.tcp_syn);
  set(0, ConnState::kSynRecv, t.tcp_syn);
  set(0, ConnState::kEstablished, t.tcp_established);
  set(0, ConnState::kFinWait, t.tcp_fin);
  set(0, ConnState::kClosing, t.tcp_fin);
  set(0, ConnState::kTimeWait, t.tcp_time_wait);
  set(0, ConnState::kClosed, t.tcp_closed);
  set(1, ConnState::kUnreplied, t.udp_unreplied);
  set(1, ConnState::kReplied, t.udp_replied);
  set(2, ConnState::kUnreplied, t.icmp);
  set(2, ConnState::kReplied, t.icmp);
  set(3, ConnState::kUnreplied, t.other_unreplied);
  set(3, ConnState::kReplied, t.other_replied);

  // Value-initialised (zeroed) now, so the packet path never faults a page in.
  e.reset(new ConnEntry[cap]());
  v6.reset(new V6Pair[cap]());
  ctr.reset(new ConnCounters[cap]());
  link.reset(new ConnLink[cap]());
  b.reset(new Bucket[nbuckets]);
  for (uint32_t i = 0; i < nbuckets; ++i) {
    for (int w = 0; w < kWays; ++w) {
      b[i].sig[w] = 0;
      b[i].ref[w] = kEmpty;
    }
  }
  zone_count.reset(new uint32_t[cfg.zones]());
  zone_head.reset(new uint32_t[cfg.zones]);
  zone_tail.reset(new uint32_t[cfg.zones]);
  for (uint32_t z = 0; z < cfg.zones; ++z) zone_head[z] = zone_tail[z] = kNil;
  for (uint32_t i = cap; i-- > 0;) {
    link[i].next = free_head;
    free_head = i;
  }
}

ConnTable::ConnTable(const ConnTableConfig& config) : impl_(std::make_unique<Impl>(config)) {}
ConnTable::~ConnTable() = default;

ConnVerdict ConnTable::Track(uint16_t zone, const ParsedPacket& p, uint64_t now_ms,
                             const Probe* probe) noexcept {
  Impl& t = *impl_;
  ConnVerdict v;
  if (zone >= t.cfg.zones) return v;  // kNew; Commit refuses it
  Key k;
  int dir = 0;

  if (p.icmp_error) {
    // The quoted packet was sent by this error's destination.
    if (p.inner.src != p.dst || MakeInnerKey(zone, p, &k) != KeyKind::kOk) {
      v.kind = ConnVerdict::Kind::kInvalid;
      v.reason = DropReason::kIcmpErrorUnrelated;
      return v;
    }
    const uint32_t i = t.Lookup(k, probe && probe->keyed ? probe->hash : t.Hash(k), now_ms, &dir);
    if (i == kNil) {
      v.kind = ConnVerdict::Kind::kInvalid;
      v.reason = DropReason::kIcmpErrorUnrelated;
      return v;
    }
    // The error travels against the packet it quotes.
    return t.Verdict(ConnVerdict::Kind::kRelated, i, dir ^ 1, DropReason::kNone);
  }

  if (MakeKey(zone, p, &k) != KeyKind::kOk) return v;
  const uint32_t i = t.Lookup(k, probe && probe->keyed ? probe->hash : t.Hash(k), now_ms, &dir);
  if (i == kNil) return v;
  ConnEntry& x = t.e[i];

  if (x.proto == kProtoTcp) {
    switch (TcpUpdate(x, dir != 0, p)) {
      case TcpResult::kValid:
        t.Refresh(i, now_ms);
        break;
      case TcpResult::kValidNoRefresh:
        break;
      case TcpResult::kInvalid:
        return t.Verdict(ConnVerdict::Kind::kInvalid, i, dir, DropReason::kCtInvalid);
      case TcpResult::kReopen:
        // Port reuse: the old connection ends now (Sweep reports it); the
        // packet is new. The entry stays listed (TIME_WAIT, CLOSED or
        // SYN_SENT), so early drop can reclaim it before Sweep does.
        x.expires_ms = 0;
        return v;
    }
    t.Relist(i);
  } else {
    if (dir != 0 && x.state == static_cast<uint8_t>(ConnState::kUnreplied)) {
      x.state = static_cast<uint8_t>(ConnState::kReplied);
      t.Relist(i);
    }
    t.Refresh(i, now_ms);
  }
  t.Count(i, dir, p);
  return t.Verdict(ConnVerdict::Kind::kEstablished, i, dir, DropReason::kNone);
}

void ConnTable::Prefetch(uint16_t zone, const ParsedPacket& p, Probe* probe) const noexcept {
  const Impl& t = *impl_;
  Key k;
  const KeyKind kind = p.icmp_error ? MakeInnerKey(zone, p, &k) : MakeKey(zone, p, &k);
  probe->keyed = kind == KeyKind::kOk;
  if (!probe->keyed) return;
  probe->hash = t.Hash(k);
  __builtin_prefetch(&t.b[t.B1(probe->hash)]);
}

void ConnTable::PrefetchEntry(const Probe& probe) const noexcept {
  if (!probe.keyed) return;
  const Impl& t = *impl_;
  const Bucket& first = t.b[t.B1(probe.hash)];
  const uint32_t sig = Impl::Sig(probe.hash);
  for (int s = 0; s < kWays; ++s) {
    if (first.sig[s] == sig && first.ref[s] != kEmpty) {
      const uint32_t i = first.ref[s] >> 1;
      __builtin_prefetch(&t.e[i], 1);
      __builtin_prefetch(&t.ctr[i], 1);
      return;
    }
  }
  __builtin_prefetch(&t.b[t.B2(probe.hash)]);
}

bool ConnTable::Commit(uint16_t zone, const ParsedPacket& p, const ConnPolicy& policy,
                       uint64_t now_ms, uint32_t* entry, DropReason* reason,
                       const Probe* probe) noexcept {
  Impl& t = *impl_;
  t.last_now = now_ms;
  auto fail = [&](DropReason r) {
    if (reason) *reason = r;
    return false;
  };
  if (zone >= t.cfg.zones) return fail(DropReason::kCtLimitVnic);
  if (p.icmp_error) return fail(DropReason::kIcmpErrorUnrelated);
  Key k;
  if (MakeKey(zone, p, &k) != KeyKind::kOk) return fail(DropReason::kCtNoConnection);
  if (IsIcmp(p.proto) && !IsEchoRequest(p.proto, p.icmp_type)) {
    return fail(DropReason::kCtNoConnection);
  }
  if (p.proto == kProtoTcp) {
    const DropReason r = TcpCanOpen(p, t.cfg.tcp_loose);
    if (r != DropReason::kNone) return fail(r);
  }

  // Committed already (a caller that did not Track first): hand it back.
  const uint64_t h0 = probe && probe->keyed ? probe->hash : t.Hash(k);
  int dir = 0;
  uint32_t i = t.Lookup(k, h0, now_ms, &dir);
  if (i != kNil) {
    if (entry) *entry = i;
    if (reason) *reason = DropReason::kNone;
    return true;
  }

  const uint64_t h1 = t.Hash(Reverse(k));
  DropReason why = DropReason::kNone;
  i = t.Allocate(h0, h1, zone, now_ms, false, &why);
  if (i == kNil) return fail(why);
  t.Insert(i, k, h0, h1);
  ConnEntry& x = t.e[i];
  x.rule_num = policy.rule_num;
  x.generation = policy.generation;
  if (policy.revalidate) x.flags |= kEntryRevalidate;
  if (p.dir == Direction::kIn) x.flags |= kEntryIngress;
  if (p.proto == kProtoTcp) {
    TcpInit(x, p);
  } else {
    x.state = static_cast<uint8_t>(ConnState::kUnreplied);
  }
  t.Refresh(i, now_ms);
  t.Count(i, 0, p);
  t.Relist(i);
  if (entry) *entry = i;
  if (reason) *reason = DropReason::kNone;
  return true;
}

void ConnTable::SetPolicy(uint32_t entry, const ConnPolicy& policy) noexcept {
  Impl& t = *impl_;
  if (entry >= t.cap || !(t.e[entry].flags & kEntryUsed)) return;
  ConnEntry& x = t.e[entry];
  x.rule_num = policy.rule_num;
  x.generation = policy.generation;
  x.flags = policy.revalidate ? (x.flags | kEntryRevalidate)
                              : static_cast<uint8_t>(x.flags & ~kEntryRevalidate);
}

void ConnTable::SetEndedRecords(FlowRing* ring) noexcept { impl_->ended_records = ring; }

void ConnTable::Tick(uint64_t now_ms) noexcept { impl_->last_now = now_ms; }

void ConnTable::SetSessionTotals(Counter* packets, Counter* bytes, uint32_t rules) noexcept {
  Impl& t = *impl_;
  const bool on = packets && bytes;
  t.session_packets = on ? packets : nullptr;
  t.session_bytes = on ? bytes : nullptr;
  t.session_rules = on ? rules : 0;
}

uint32_t ConnTable::MarkMoved(uint16_t zone, uint64_t now_ms, uint32_t max) noexcept {
  Impl& t = *impl_;
  uint32_t n = 0;
  for (uint32_t i = 0; i < t.cap && (max == 0 || n < max); ++i) {
    if ((t.e[i].flags & kEntryUsed) && t.e[i].zone == zone && !t.Expired(i, now_ms)) {
      t.e[i].flags |= kEntryMoved;
      ++n;
    }
  }
  return n;
}

void ConnTable::Remove(uint32_t entry) noexcept {
  Impl& t = *impl_;
  if (entry >= t.cap || !(t.e[entry].flags & kEntryUsed)) return;
  t.RemoveEntry(entry);
}

uint32_t ConnTable::SweepCursor() noexcept {
  Impl& t = *impl_;
  return t.sweep_cursor++ & (t.cap - 1);
}

uint32_t ConnTable::SweepOne(uint32_t slot, uint64_t now_ms, ConnInfo* ended) noexcept {
  Impl& t = *impl_;
  t.last_now = now_ms;
  if (!(t.e[slot].flags & kEntryUsed) || !t.Expired(slot, now_ms)) return 0;
  t.Fill(slot, now_ms, ended);
  t.RemoveEntry(slot);
  return 1;
}

uint32_t ConnTable::Flush(int zone) noexcept {
  Impl& t = *impl_;
  uint32_t n = 0;
  for (uint32_t i = 0; i < t.cap; ++i) {
    if ((t.e[i].flags & kEntryUsed) && (zone < 0 || t.e[i].zone == zone)) {
      t.RemoveEntry(i);
      ++n;
    }
  }
  return n;
}

uint32_t ConnTable::size() const noexcept { return impl_->used; }

uint32_t ConnTable::zone_size(uint16_t zone) const noexcept {
  return zone < impl_->cfg.zones ? impl_->zone_count[zone] : 0;
}

uint32_t ConnTable::capacity() const noexcept { return impl_->cap; }

bool ConnTable::Info(uint32_t entry, uint64_t now_ms, ConnInfo* out) const noexcept {
  const Impl& t = *impl_;
  if (entry >= t.cap || !(t.e[entry].flags & kEntryUsed) || t.Expired(entry, now_ms)) return false;
  t.Fill(entry, now_ms, out);
  return true;
}

static_assert(static_cast<int>(ConnTcpPeerState::kClosed) == kPeerClosed &&
                  static_cast<int>(ConnTcpPeerState::kSynSent) == kPeerSynSent &&
                  static_cast<int>(ConnTcpPeerState::kEstablished) == kPeerEstablished &&
                  static_cast<int>(ConnTcpPeerState::kClosing) == kPeerClosing &&
                  static_cast<int>(ConnTcpPeerState::kFinWait2) == kPeerFinWait2 &&
                  static_cast<int>(ConnTcpPeerState::kReset) == kPeerTimeWait,
              "ConnTcpPeerState mirrors the tracker's PeerState");

bool ConnTable::Export(uint32_t entry, uint64_t now_ms, ConnExport* out) const noexcept {
  const Impl& t = *impl_;
  ConnInfo info;
  if (!Info(entry, now_ms, &info)) return false;
  const ConnEntry& x = t.e[entry];
  *out = ConnExport{};
  out->family = info.family;
  out->proto = info.proto;
  out->src = info.src;
  out->dst = info.dst;
  out->sport = info.sport;
  out->dport = IsIcmp(info.proto) ? 0 : info.dport;  // the echo identifier is in sport
  out->dir = info.dir;
  out->state = info.state;
  out->rule_num = info.policy.rule_num;
  out->revalidate = info.policy.revalidate;
  out->expires_in_ms = info.expires_in_ms;
  out->packets = info.packets;
  out->bytes = info.bytes;
  if (x.proto == kProtoTcp) {
    out->tcp_picked_up = x.flags & kEntryLoose;
    for (int p = 0; p < 2; ++p) {
      ConnTcpPeer& o = out->tcp[p];
      o.seq_end = x.peer[p].seqlo;
      o.ack_end = x.peer[p].seqhi;
      o.max_win = x.peer[p].max_win;
      o.wscale = x.tcp_wscale[p] & kWscaleMask;
      o.flags =
          static_cast<uint8_t>(((x.tcp_wscale[p] & kWscaleFlag) ? kConnTcpWscaleSeen : 0) |
                               ((x.tcp_wscale[p] & kWscaleUnknown) ? kConnTcpWscaleUnknown : 0));
      o.state = static_cast<ConnTcpPeerState>(x.tcp_state[p]);
    }
  }
  return true;
}

Status ConnTable::Import(uint16_t zone, const ConnExport& c, uint64_t now_ms) {
  if (Status st = ValidateConnExport(c); !st.ok()) return st;
  return ImportValid(zone, c, now_ms);
}

Status ConnTable::ImportValid(uint16_t zone, const ConnExport& c, uint64_t now_ms) {
  Impl& t = *impl_;
  if (zone >= t.cfg.zones) {
    return Status::Error("zone " + std::to_string(zone) + " is not below " +
                         std::to_string(t.cfg.zones));
  }
  Key k;
  k.src = c.src;
  k.dst = c.dst;
  k.zone = zone;
  k.proto = c.proto;
  k.kf = c.family == Family::kV6 ? kKeyV6 : 0;
  k.sport = c.sport;
  k.dport = IsIcmp(c.proto) ? c.sport : c.dport;
  // The same connection already here (either direction) is replaced, not
  // ended (it goes on as this entry); its slots free exactly the room the
  // new entry needs, so nothing below fails.
  int dir = 0;
  if (const uint32_t old = t.Lookup(k, now_ms, &dir); old != kNil) t.RemoveEntry(old, false);
  const uint64_t h0 = t.Hash(k);
  const uint64_t h1 = t.Hash(Reverse(k));
  DropReason why = DropReason::kNone;
  const uint32_t i = t.Allocate(h0, h1, zone, now_ms, true, &why);
  if (i == kNil) {
    return Status::Error(why == DropReason::kCtLimitVnic
                             ? "over the per-vNIC limit: the vNIC holds " +
                                   std::to_string(t.zone_count[zone]) + " connections"
                             : "over the global limit: the table holds " + std::to_string(t.used) +
                                   " connections");
  }
  t.Insert(i, k, h0, h1);
  ConnEntry& x = t.e[i];
  x.rule_num = c.rule_num;
  x.generation = kConnGenerationImported;
  if (c.revalidate) x.flags |= kEntryRevalidate;
  if (c.dir == Direction::kIn) x.flags |= kEntryIngress;
  x.state = static_cast<uint8_t>(c.state);
  if (c.proto == kProtoTcp) {
    if (c.tcp_picked_up) x.flags |= kEntryLoose;
    if (c.state == ConnState::kClosed) x.flags |= kEntryRst;
    for (int p = 0; p < 2; ++p) {
      const ConnTcpPeer& o = c.tcp[p];
      x.peer[p] = TcpPeer{o.seq_end, o.ack_end, o.max_win};
      x.tcp_wscale[p] =
          static_cast<uint8_t>(o.wscale | ((o.flags & kConnTcpWscaleSeen) ? kWscaleFlag : 0) |
                               ((o.flags & kConnTcpWscaleUnknown) ? kWscaleUnknown : 0));
      x.tcp_state[p] = static_cast<uint8_t>(o.state);
    }
  }
  const uint32_t cap = t.TimeoutFor(x.proto, x.state);
  x.expires_ms = now_ms + (c.expires_in_ms < cap ? c.expires_in_ms : cap);
  t.ctr[i].packets[0] = c.packets;
  t.ctr[i].bytes[0] = c.bytes;
  t.Relist(i);
  return Status::Ok();
}

}  // namespace dfw::dataplane
