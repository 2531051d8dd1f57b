// Counter: a statistic written by one thread with plain increments (no
// atomic read-modify-write) and read by any thread at any time. The pipeline's
// counters (pipeline.h) and the connection table's per-rule session totals
// (conn_table.h) are these.
#pragma once

#include <atomic>
#include <cstdint>

namespace dfw::dataplane {

// Written by one thread with plain increments; read anywhere.
class Counter {
 public:
  void Add(uint64_t n = 1) noexcept {
    v_.store(v_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  uint64_t Get() const noexcept { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> v_{0};
};

}  // namespace dfw::dataplane
