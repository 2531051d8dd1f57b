// Flow records: what the dataplane tells the operator about connections —
// allowed (a new connection admitted), denied (a packet refused by policy or
// default rule), audit (would have been denied), ended (any end: aged out or
// closed, cut on revalidation, evicted, flushed; not a move) —
// carried from the worker to a control thread through a lock-free
// single-producer single-consumer ring, then written as JSON lines.
//
// The worker never blocks on it: when the ring is full the record is counted
// as lost, never waited for.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "dfw/dataplane/drop_reason.h"
#include "dfw/dataplane/rule_model.h"

namespace dfw::dataplane {

struct FlowEvent {
  enum class Kind : uint8_t { kAllowed, kDenied, kAudit, kEnded };
  Kind kind = Kind::kAllowed;
  Family family = Family::kV4;
  Direction dir = Direction::kOut;
  Action action = Action::kAllow;
  DropReason reason = DropReason::kNone;
  uint8_t proto = 0;
  uint16_t local_id = 0;
  uint16_t sport = 0, dport = 0;
  uint32_t rule_num = 0;
  Ip128 src, dst;
  uint64_t time_ms = 0;
  uint64_t packets = 0, bytes = 0;
};

// One JSON object, no newline: {"kind":"allowed","vnic":5,...}.
std::string FlowEventJson(const FlowEvent& e, const std::string& vnic_id);
const char* FlowKindName(FlowEvent::Kind k);

class FlowRing {
 public:
  explicit FlowRing(uint32_t capacity_pow2 = 1u << 14);
  // Producer (worker).
  bool Push(const FlowEvent& e) noexcept {
    uint64_t h = head_.load(std::memory_order_relaxed);
    if (h - tail_.load(std::memory_order_acquire) == buf_.size()) {
      lost_.store(lost_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
      return false;
    }
    buf_[h & mask_] = e;
    head_.store(h + 1, std::memory_order_release);
    return true;
  }
  // Consumer (control thread).
  bool Pop(FlowEvent* e) noexcept {
    uint64_t t = tail_.load(std::memory_order_relaxed);
    if (t == head_.load(std::memory_order_acquire)) return false;
    *e = buf_[t & mask_];
    tail_.store(t + 1, std::memory_order_release);
    return true;
  }
  uint64_t lost() const noexcept { return lost_.load(std::memory_order_relaxed); }

 private:
  std::vector<FlowEvent> buf_;
  uint64_t mask_;
  alignas(64) std::atomic<uint64_t> head_{0};
  alignas(64) std::atomic<uint64_t> tail_{0};
  alignas(64) std::atomic<uint64_t> lost_{0};
};

}  // namespace dfw::dataplane
