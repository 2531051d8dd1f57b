// VnicTable: what the dataplane knows about each local vNIC — its MAC and
// bound addresses (for spoofguard) and its compiled policy — indexed by the
// steering id, read lock-free by the worker and replaced whole by the control
// thread.
//
// How. Each slot holds an atomic pointer to an immutable VnicState. The
// control thread builds a new state, publishes it with one release store, and
// frees the old one once every worker has passed a quiescent point after the
// store: each burst is a read-side section (Enter ... Leave), and the control
// thread waits only for workers inside a section that began before its store
// (epoch-based reclamation, like rte_rcu_qsbr with a thread going offline
// between bursts). A state
// without a policy drops everything: a vNIC fails closed until its rules
// arrive.
//
// Thread safety. Publish/Remove: control thread only (one). Synchronize:
// any thread (the capture table waits on it too, capture.h).
// Enter/Get/Leave: any number of workers (distinct worker numbers).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dfw/dataplane/classifier.h"
#include "dfw/dataplane/packet_parser.h"

namespace dfw::dataplane {

// Per compiled rule (index = classifier rule index): what the pipeline does.
struct RuleMeta {
  uint32_t rule_num = 0;  // dataplane-wide number (counters, flow records)
  Action action = Action::kDrop;
  bool stateful = true;     // track connections it admits
  bool audit = false;       // would-be drops are recorded and let through
  bool revalidate = false;  // connections it admitted are re-checked on policy change
  bool log = false;         // flow record for each hit
};

struct VnicPolicy {
  std::shared_ptr<const Ruleset> ruleset;
  std::vector<RuleMeta> rules;  // parallel to the ruleset's rules
  Action default_action = Action::kDrop;
  bool default_log = true;
  uint32_t generation = 0;  // changes with every new policy of this vNIC
  uint64_t revision = 0;    // controller revision it reflects
};

struct VnicState {
  std::string id;
  uint16_t local_id = 0;
  uint8_t mac[6] = {};
  std::vector<uint32_t> bound_v4;            // sorted
  std::vector<Ip128> bound_v6;               // sorted
  std::shared_ptr<const VnicPolicy> policy;  // null: no rules yet, drop everything

  // Spoofguard's question, per packet. Without an index: a binary search of
  // bound_v4.
  bool BindsV4(uint32_t a) const {
    if (v4_index_.empty()) return BindsV4Sorted(a);
    if (a == 0) return v4_has_zero_;
    for (uint32_t i = V4Slot(a);; i = (i + 1) & v4_mask_) {
      const uint32_t k = v4_index_[i];
      if (k == a) return true;
      if (k == 0) return false;
    }
  }
  bool BindsV6(const Ip128& a) const;

  // Control path, before the state is published: sorts bound_v4 and, above
  // kLinearBoundV4 addresses (a VM with secondary addresses, a node VM with
  // its pods'), builds the open-addressing index BindsV4 probes instead (one
  // cache line, where a binary search over hundreds of addresses costs a
  // chain of dependent loads and mispredicted branches). Call it again after
  // changing bound_v4.
  void IndexBoundV4();
  static constexpr size_t kLinearBoundV4 = 8;

 private:
  bool BindsV4Sorted(uint32_t a) const;
  uint32_t V4Slot(uint32_t a) const {
    return static_cast<uint32_t>((uint64_t{a} * 0x9e3779b97f4a7c15ULL) >> 32) & v4_mask_;
  }
  std::vector<uint32_t> v4_index_;  // 0 = empty slot; at most half full
  uint32_t v4_mask_ = 0;
  bool v4_has_zero_ = false;  // 0.0.0.0 (the empty key) is bound
};

class VnicTable {
 public:
  static constexpr uint32_t kSlots = kMaxLocalId + 1;
  static constexpr uint32_t kMaxWorkers = 16;
  static constexpr uint64_t kOutside = ~uint64_t{0};

  explicit VnicTable(uint32_t workers = 1);
  ~VnicTable();

  // Worker side. A worker reads slots only between Enter and Leave (one
  // burst); outside it is quiescent and never waited for.
  void Enter(uint32_t worker) noexcept {
    seen_[worker].value.store(epoch_.load(std::memory_order_acquire), std::memory_order_relaxed);
    // Orders the store above before the slot loads that follow (and pairs
    // with the fence in Synchronize): the control thread either sees this
    // worker inside, or the worker sees the new pointer.
    std::atomic_thread_fence(std::memory_order_seq_cst);
  }
  void Leave(uint32_t worker) noexcept {
    seen_[worker].value.store(kOutside, std::memory_order_release);
  }
  const VnicState* Get(uint16_t local_id) const noexcept {
    return slots_[local_id & kMaxLocalId].load(std::memory_order_acquire);
  }

  // Control side. Publishes `state` into its local_id slot and frees the
  // state it replaced after the workers quiesce.
  void Publish(std::unique_ptr<VnicState> state);
  // The same for several states (distinct local ids) with one wait for the
  // workers in all: a change shared by 500 vNICs waits once, not 500 times.
  void Publish(std::vector<std::unique_ptr<VnicState>> states);
  void Remove(uint16_t local_id);
  const VnicState* Current(uint16_t local_id) const { return Get(local_id); }
  // Blocks until no worker is inside a section that began before this call.
  void Synchronize();

 private:
  void Retire(const VnicState* old);
  struct alignas(64) Seen {
    std::atomic<uint64_t> value{0};
  };
  std::atomic<const VnicState*> slots_[kSlots];
  std::atomic<uint64_t> epoch_{1};
  Seen seen_[kMaxWorkers];
  uint32_t workers_;
};

// With several workers, the one that owns a vNIC: judges all its frames and
// holds all its connections (port_worker.h redispatches frames to it).
inline uint32_t OwnerWorker(uint32_t local_id, uint32_t workers) { return local_id % workers; }

}  // namespace dfw::dataplane
