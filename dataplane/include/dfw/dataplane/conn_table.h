// ConnTable: stateful connection tracking for the dataplane, per vNIC zone.
//
// What. One entry per connection (TCP, UDP, ICMP echo, other IP protocols by
// address pair), keyed by (zone = vNIC local id, protocol, addresses, ports /
// ICMP id) and found from either direction. TCP is tracked with window
// checks (Guido van Rooij, "Real Stateful TCP Packet Filtering in IP Filter",
// as pf and OVS's conntrack-tcp.c do): strict by default — a connection starts
// only with a SYN, and every segment's SEQ, ACK and RST must fall inside the
// windows seen — or loose pickup of mid-stream connections as an option.
// Each state has its timeout. ICMP errors are RELATED when their inner header
// names a tracked connection.
//
// How. Entries live in one preallocated array (the global limit) with a free
// list; the hot part of an entry is one 64-byte cache line (IPv6 addresses sit
// in a parallel array, touched only for IPv6). A bucketised hash table of
// (signature, entry|direction) slots indexes each entry twice, once per
// direction, with two candidate buckets per key (no cuckoo moves). The hash
// seed is random per start (a table built by an attacker's choice of ports
// cannot be predicted). Limits: global (the array) and per zone; a new
// connection over a limit first evicts an unestablished entry (early drop)
// from its candidate buckets, and is dropped only if there is none. Aging is
// a clock sweep over the entry array, a few entries per call, run by the
// owning thread between bursts, never per packet.
//
// Moving connections. Export copies a zone's live entries into ConnExport
// (host-independent: no zone, no entry index, time left instead of a clock);
// Import puts one into a zone of this or another table, replacing the entry
// with the same key, after ValidateConnExport accepted every field. An import
// never evicts a live connection: over the per-zone or global limit (or with
// both candidate buckets full) only an expired entry may be reclaimed, else
// the entry is refused by name (kCtLimitVnic / kCtLimitGlobal). Time left is
// capped at this table's timeout for the entry's state.
//
// Ruleset generation of an imported entry: kConnGenerationImported, which no
// ruleset ever has (DataplaneState skips it when numbering). So an imported
// connection whose policy revalidates is re-checked against the vNIC's
// ruleset in force at its next packet (kept and re-stamped if allowed,
// removed and the packet dropped if not), exactly like one admitted under an
// older ruleset here; one whose policy does not revalidate stays admitted.
// While the vNIC has no ruleset its packets are dropped before conntrack and
// imported entries wait (aging) for the rules.
//
// Session totals. When a connection ends, its packets and bytes (both
// directions, as the entry counts them: an imported entry brings those of
// its previous host) are added to the per-rule counters given by
// SetSessionTotals, at its admitting rule_num (as last re-stamped). It ends
// whenever its entry goes for any reason but a move: aged out by Sweep (TCP
// closed by FIN or RST, and the connections of a removed vNIC, which wait
// there for their timeouts, end so), evicted by early drop or to make room
// for an import, Remove (revalidation denied it), Flush. Not counted: rule
// number 0 (the default rule, whose hits are not counted either) and rule
// numbers at or above the counters' size. A move is not an end: MarkMoved
// (the entries of a zone exported to leave with their VM) makes their later
// removal here fold nothing, as the importing table counts them when they
// end there; a marked entry that carries a packet here again is unmarked
// (it stayed). An import that replaces the entry with its key is the same
// connection going on: the replaced entry folds nothing. Entries still in
// the table when it is destroyed are not ended (a restart exports them).
//
// Ended records. With SetEndedRecords, every end above (not a move, not an
// import's replacement) also pushes an "ended" flow record (its totals, its
// rule) into the given ring, whichever path removed it; the ring counts what
// it has no room for. Its time is the newest `now_ms` the table was given
// (Tick, Commit, Sweep).
//
// Thread safety. A ConnTable belongs to one thread (the worker lcore that owns
// the vNICs' traffic): Lookup/Track/Sweep from that thread only. Readers on
// other threads get copies through the owning thread (Snapshot is called by
// the owner when it serves a request). No locks, no allocation after
// construction, no exceptions on the packet path.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dfw/dataplane/counter.h"
#include "dfw/dataplane/drop_reason.h"
#include "dfw/dataplane/flow_records.h"
#include "dfw/dataplane/packet_parser.h"
#include "dfw/dataplane/ruleset_compiler.h"

namespace dfw::dataplane {

enum class ConnState : uint8_t {
  kNone = 0,
  // TCP
  kSynSent,   // orig sent SYN
  kSynSent2,  // simultaneous open: both sides sent SYN
  kSynRecv,   // reply sent SYN+ACK
  kEstablished,
  kFinWait,   // one side sent FIN
  kClosing,   // both sides sent FIN
  kTimeWait,  // both FINs acknowledged
  kClosed,    // RST seen
  // UDP and others
  kUnreplied,  // packets in the orig direction only
  kReplied,    // seen both ways
  kCount,
};
const char* ConnStateName(ConnState s);

struct ConnTimeouts {  // milliseconds
  uint32_t tcp_syn = 30'000;
  uint32_t tcp_established = 24 * 3600'000u;
  uint32_t tcp_fin = 120'000;
  uint32_t tcp_time_wait = 30'000;
  uint32_t tcp_closed = 10'000;
  uint32_t udp_unreplied = 30'000;
  uint32_t udp_replied = 120'000;
  uint32_t icmp = 30'000;
  uint32_t other_unreplied = 30'000;
  uint32_t other_replied = 600'000;
};

struct ConnTableConfig {
  uint32_t max_connections = 1u << 20;  // global limit, rounded up to a power of two
  uint32_t max_per_zone = 1u << 18;     // per vNIC
  uint32_t zones = 2048;                // local ids 0..zones-1
  bool tcp_loose = false;               // pick up mid-stream TCP connections
  ConnTimeouts timeouts;
  uint64_t seed = 0;  // 0: random per start
};

// What the admitting policy decided, stored with the connection.
struct ConnPolicy {
  uint32_t rule_num = 0;    // rule that admitted it
  uint32_t generation = 0;  // ruleset generation that admitted it
  bool revalidate = false;  // re-check against newer rulesets (policy on-change)
};

// The generation imported connections carry: never a ruleset's (see above).
constexpr uint32_t kConnGenerationImported = 0xffffffffu;

// One TCP peer's tracker state, as carried between tables.
enum class ConnTcpPeerState : uint8_t {
  kClosed = 0,   // nothing seen from this peer yet
  kSynSent,      // its first segment (SYN, or SYN+ACK) seen
  kEstablished,  // its SYN was acknowledged
  kClosing,      // it sent FIN
  kFinWait2,     // its FIN was acknowledged
  kReset,        // RST seen (both peers)
  kCount,
};
// ConnTcpPeer::flags.
constexpr uint8_t kConnTcpWscaleSeen = 0x01;     // its SYN carried the window scale option
constexpr uint8_t kConnTcpWscaleUnknown = 0x02;  // picked up mid-stream: scale unknown
constexpr uint8_t kConnTcpPeerFlags = kConnTcpWscaleSeen | kConnTcpWscaleUnknown;

struct ConnTcpPeer {
  uint32_t seq_end = 0;  // highest SEQ + LEN this peer sent
  uint32_t ack_end = 0;  // highest SEQ this peer may send (the other's ACK + window)
  uint32_t max_win = 0;  // largest window it advertised (unscaled), >= 1
  uint8_t wscale = 0;    // its window scale shift, 0..14
  uint8_t flags = 0;     // kConnTcpWscale*
  ConnTcpPeerState state = ConnTcpPeerState::kClosed;
  bool operator==(const ConnTcpPeer&) const = default;
};

// One connection as it moves between tables (proto ConnectionEntry; the
// field names in ValidateConnExport's errors are that message's).
// Addresses and ports in the orig direction; ICMP echo: the identifier in
// sport, dport 0; other protocols: ports 0.
struct ConnExport {
  Family family = Family::kV4;
  uint8_t proto = 0;
  Ip128 src, dst;  // IPv4 in the low 32 bits
  uint16_t sport = 0, dport = 0;
  Direction dir = Direction::kOut;  // of the first packet, as seen by the vNIC
  ConnState state = ConnState::kNone;
  uint32_t rule_num = 0;
  bool revalidate = false;
  uint32_t expires_in_ms = 0;  // > 0
  uint64_t packets = 0, bytes = 0;
  bool tcp_picked_up = false;  // TCP: picked up mid-stream (loose)
  ConnTcpPeer tcp[2];          // TCP: [0] orig peer, [1] reply peer; else zero
  bool operator==(const ConnExport&) const = default;
};

// Checks every field of `c` (family vs addresses, protocol vs ports, state
// valid for the protocol and agreeing with the TCP peer states, wscale <= 14,
// flags, windows, time left). The error names the field ("tcp_orig.wscale:
// 15 is above 14").
Status ValidateConnExport(const ConnExport& c);

// What a batch import did. `rejected` holds the first kMaxRejectedShown
// errors, each "entries[i].field: why".
struct ConnImportResult {
  static constexpr size_t kMaxRejectedShown = 8;
  uint32_t imported = 0;
  uint32_t rejected_count = 0;
  std::vector<std::string> rejected;
};

// Result of tracking one packet.
struct ConnVerdict {
  enum class Kind : uint8_t {
    kNew,          // no connection: caller classifies, then calls Commit to create one
    kEstablished,  // part of a tracked connection (either direction), valid
    kRelated,      // ICMP error about a tracked connection
    kInvalid,      // tracked, but not valid now: drop with `reason`
  };
  Kind kind = Kind::kNew;
  DropReason reason = DropReason::kNone;
  bool reply = false;  // packet travels in the reply direction
  uint32_t entry = 0;  // valid for kEstablished / kRelated / after Commit
  ConnPolicy policy;   // of the entry, for kEstablished / kRelated
};

// A copy of one entry for read-outs (local API), made by the owning thread.
struct ConnInfo {
  uint16_t zone = 0;
  Family family = Family::kV4;
  uint8_t proto = 0;
  Ip128 src, dst;  // orig direction
  uint16_t sport = 0, dport = 0;
  ConnState state = ConnState::kNone;
  Direction dir = Direction::kOut;  // of the first packet, as seen by the zone's vNIC
  ConnPolicy policy;
  uint64_t packets = 0, bytes = 0;
  uint32_t expires_in_ms = 0;
};

class ConnTable {
 public:
  explicit ConnTable(const ConnTableConfig& config);
  ~ConnTable();
  ConnTable(const ConnTable&) = delete;
  ConnTable& operator=(const ConnTable&) = delete;

  // A packet's key hash, computed once by Prefetch and handed to PrefetchEntry,
  // Track and Commit for the same packet and zone so they do not hash again.
  struct Probe {
    uint64_t hash = 0;
    bool keyed = false;  // false: not probed, or the packet has no key
  };

  // Looks the packet up in `zone` and, when it belongs to a connection,
  // advances its state (TCP window and flags, UDP replied, timeouts, counters).
  // `now_ms` is a monotonic clock. Non-first fragments must not come here.
  // `probe`, if given, is what Prefetch computed for this packet and zone.
  ConnVerdict Track(uint16_t zone, const ParsedPacket& p, uint64_t now_ms,
                    const Probe* probe = nullptr) noexcept;

  // Optional, for bursts, in two stages over the whole burst before any of
  // it is tracked, so that the cache misses of its packets overlap instead
  // of queueing. No effect on state.
  //  1. Prefetch: hashes the packet's key (for an ICMP error, the quoted
  //     packet's) into *probe and prefetches its first candidate bucket.
  //  2. PrefetchEntry, once that bucket has had time to arrive: prefetches
  //     the entry its signature points to (the hot line and the counters),
  //     or the second candidate bucket when the first has no match (entries
  //     are placed in their first bucket unless it is full).
  void Prefetch(uint16_t zone, const ParsedPacket& p, Probe* probe) const noexcept;
  void PrefetchEntry(const Probe& probe) const noexcept;

  // Creates the connection for a packet that Track returned kNew for and the
  // policy allowed. Fails (returns false, `*reason` set) when the packet may
  // not open a connection (kCtNoConnection: strict TCP not a SYN, loose TCP
  // not a SYN or plain ACK segment, ICMP not an echo request; kCtInvalid: bad
  // TCP flags; kIcmpErrorUnrelated: an ICMP error) or a limit is reached and
  // nothing could be evicted (kCtLimitVnic, kCtLimitGlobal; also a zone out
  // of range). Early drop order: an expired or unestablished/closed entry
  // referenced from the new key's candidate buckets, else the zone's oldest
  // unestablished/closed entry, else (global limit) one found by a short
  // scan of the array. Expired established entries elsewhere wait for Sweep.
  bool Commit(uint16_t zone, const ParsedPacket& p, const ConnPolicy& policy, uint64_t now_ms,
              uint32_t* entry, DropReason* reason, const Probe* probe = nullptr) noexcept;

  // Where ended connections' totals go (see "Session totals" above):
  // packets[rule_num] and bytes[rule_num], arrays of `rules` counters that
  // outlive the table; written by the owning thread. Null: not counted.
  void SetSessionTotals(Counter* packets, Counter* bytes, uint32_t rules) noexcept;
  // Where ended connections go as "ended" flow records (see above); null:
  // nowhere. Tick tells the table the time (once per burst).
  void SetEndedRecords(FlowRing* ring) noexcept;
  void Tick(uint64_t now_ms) noexcept;
  // Marks the first `max` (0: all) live entries of `zone` in index order
  // (those ExportZone copies) as moved, exported to leave with their VM:
  // their removal here is not their end. Returns how many.
  uint32_t MarkMoved(uint16_t zone, uint64_t now_ms, uint32_t max = 0) noexcept;

  // Re-stamps an entry after revalidation, or removes it (its end).
  void SetPolicy(uint32_t entry, const ConnPolicy& policy) noexcept;
  void Remove(uint32_t entry) noexcept;

  // Ages out expired entries, visiting at most `budget` entry slots. Calls
  // `on_end(info)` for each removed connection (flow record "ended").
  template <typename F>
  uint32_t Sweep(uint64_t now_ms, uint32_t budget, F&& on_end);
  // Removes every entry of a zone (or all with zone < 0), each an end.
  // Returns how many.
  uint32_t Flush(int zone) noexcept;

  // Entries held, including expired ones Sweep has not removed yet.
  uint32_t size() const noexcept;
  uint32_t zone_size(uint16_t zone) const noexcept;
  uint32_t capacity() const noexcept;
  bool Info(uint32_t entry, uint64_t now_ms, ConnInfo* out) const noexcept;
  // Visits live entries in index order (for read-outs).
  template <typename F>
  void ForEach(uint64_t now_ms, F&& f) const;

  // Copies a live entry for another table (false: no such live entry).
  bool Export(uint32_t entry, uint64_t now_ms, ConnExport* out) const noexcept;
  // Appends up to `max` (0: all) live entries of `zone` to *out in index
  // order; returns how many live entries the zone has.
  uint32_t ExportZone(uint16_t zone, uint64_t now_ms, uint32_t max,
                      std::vector<ConnExport>* out) const;
  // Imports one entry into `zone` (see the header comment): the error names
  // the field, or says which limit refused it; nothing changes on error.
  Status Import(uint16_t zone, const ConnExport& c, uint64_t now_ms);
  // Imports each entry; a refused one is counted and the rest go on. Errors
  // number entry k as numbers[k] (the caller's own numbering) or k.
  ConnImportResult ImportAll(uint16_t zone, const ConnExport* entries, size_t n, uint64_t now_ms,
                             const uint32_t* numbers = nullptr);

  struct Impl;

 private:
  // Import of an entry ValidateConnExport accepted: the zone and the limits.
  Status ImportValid(uint16_t zone, const ConnExport& c, uint64_t now_ms);
  uint32_t SweepOne(uint32_t slot, uint64_t now_ms, ConnInfo* ended) noexcept;  // 1 if removed
  uint32_t SweepCursor() noexcept;
  std::unique_ptr<Impl> impl_;
};

template <typename F>
uint32_t ConnTable::Sweep(uint64_t now_ms, uint32_t budget, F&& on_end) {
  uint32_t removed = 0;
  ConnInfo info;
  for (uint32_t i = 0; i < budget; ++i) {
    if (SweepOne(SweepCursor(), now_ms, &info)) {
      ++removed;
      on_end(info);
    }
  }
  return removed;
}

template <typename F>
void ConnTable::ForEach(uint64_t now_ms, F&& f) const {
  ConnInfo info;
  for (uint32_t e = 0; e < capacity(); ++e) {
    if (Info(e, now_ms, &info)) f(e, info);
  }
}

}  // namespace dfw::dataplane
