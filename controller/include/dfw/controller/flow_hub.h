// FlowHub: the controller's buffer of the flow records hosts relay while
// someone observes (dfwctl observe, REST GET /api/v1/flows).
//
// Hosts send records only while someone reads them. A read starts or
// prolongs a lease of kLease; when the hub starts watching it calls
// `watch(true)` (ModelService::SetFlowWatch: every host session is sent a
// FlowWatch, and sessions that open later too), and once no read came for
// kLease, `watch(false)` (checked at each read and each Add).
// ObserveResponse.watching is false on the read that started the watch: the
// hosts were not sending until then.
//
// Records arrive resolved (ModelService::RelayFlows: VM, groups, policy
// name, peer VM) and are kept, in arrival order, in a ring of kCapacity
// with consecutive sequence numbers. A reader passes the cursor of the last
// one it saw and gets, oldest first, what follows it and matches its
// filter, waiting up to `wait` for something to arrive; cursor 0 asks for
// the newest `limit` records held. A cursor that fell out of the ring gets
// ObserveResponse.missed. A cursor is opaque: the hub's random epoch in its
// top 16 bits, the sequence number below (CursorOf); a cursor of another
// epoch (a restarted controller, another one after a failover) reads from
// the oldest record held, never skipping what this hub numbered lower. A host's lost records
// (FlowBatch.lost) are kept as a loss marker (where "host"), shown to every reader whose filter
// names no other host: no loss is silent.
//
// Thread safety: every method from any thread (one internal mutex; Read
// waits without holding it). `watch` runs outside the mutex, from the thread
// of the read or Add that changed the state.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "dfw/v1/controller.pb.h"

namespace dfw::controller {

// What a reader wants to see; empty fields match everything. A record
// matches when it matches every field given.
struct FlowFilter {
  std::string vm;     // the record's VM or its peer's (either end), by id or name
  std::string host;   // the reporting host's id
  std::string group;  // a group of the record's VM or its peer's (either end)
  std::vector<dfw::v1::FlowRecord::Kind> verdicts;  // any of them
  std::string policy;                               // by id or name
  std::string rule;                                 // rule id
  std::optional<uint32_t> protocol;
  std::optional<uint32_t> port;  // source or destination port
  std::string ip;                // source or destination address

  bool Matches(const dfw::v1::ObservedFlow& f) const;
  // From the REST query's values (vm, host, group, verdict=allowed,denied,
  // policy, rule, protocol=tcp|udp|icmp|icmp6|sctp|N, port, ip); the error
  // names the parameter.
  static absl::StatusOr<FlowFilter> Parse(
      const std::function<std::optional<std::string>(const std::string&)>& param);
};

class FlowHub {
 public:
  static constexpr size_t kCapacity = 1 << 15;
  static constexpr std::chrono::seconds kLease{15};
  static constexpr size_t kMaxLimit = 10000;

  // `lease`: kLease but in tests.
  explicit FlowHub(std::function<void(bool)> watch, std::chrono::milliseconds lease = kLease);

  // Records of one host's batch, resolved; `lost` of its FlowBatch.
  void Add(const std::string& host_id, std::vector<dfw::v1::ObservedFlow> flows, uint64_t lost);
  // What follows `cursor` (or, for 0, the newest) matching `filter`, at most
  // `limit` (1..kMaxLimit), waiting up to `wait` while nothing matches.
  dfw::v1::ObserveResponse Read(uint64_t cursor, const FlowFilter& filter, size_t limit,
                                std::chrono::milliseconds wait);
  // The cursor of sequence number `seq` (never 0: "after nothing yet" is
  // epoch | 0, so a follower of an empty hub misses nothing).
  uint64_t CursorOf(uint64_t seq) const { return epoch_ | seq; }
  static constexpr uint64_t kSeqMask = (uint64_t{1} << 48) - 1;

  struct Stats {
    uint64_t records = 0;    // received from hosts
    uint64_t host_lost = 0;  // the hosts' FlowBatch.lost, summed
    uint64_t readers = 0;    // reads served
    bool watching = false;
  };
  Stats stats() const;

 private:
  using Clock = std::chrono::steady_clock;
  // Under mu_: whether watching must change now; sets watching_.
  std::optional<bool> LeaseLocked(Clock::time_point now, bool reading);
  // Calls watch_ with watching_ (not under mu_).
  void Notify();
  void Scan(uint64_t cursor, const FlowFilter& filter, size_t limit,
            dfw::v1::ObserveResponse* out) const;

  const std::function<void(bool)> watch_;
  const std::chrono::milliseconds lease_;
  std::mutex watch_call_mu_;  // serialises watch_ calls
  mutable std::mutex mu_;
  std::condition_variable cv_;
  const uint64_t epoch_;  // random, nonzero, in the top 16 bits
  std::deque<dfw::v1::ObservedFlow> ring_;
  uint64_t next_seq_ = 1;  // ring_.back().seq() + 1
  bool watching_ = false;
  Clock::time_point last_read_{};
  Stats stats_;
};

}  // namespace dfw::controller
