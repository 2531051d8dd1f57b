#include "dfw/dataplane/vnic_table.h"

#include <algorithm>
#include <thread>

namespace dfw::dataplane {

bool VnicState::BindsV4Sorted(uint32_t a) const {
  return std::binary_search(bound_v4.begin(), bound_v4.end(), a);
}

void VnicState::IndexBoundV4() {
  std::sort(bound_v4.begin(), bound_v4.end());
  bound_v4.erase(std::unique(bound_v4.begin(), bound_v4.end()), bound_v4.end());
  v4_index_.clear();
  v4_mask_ = 0;
  v4_has_zero_ = false;
  if (bound_v4.size() <= kLinearBoundV4) return;
  size_t slots = 16;
  while (slots < 2 * bound_v4.size()) slots *= 2;
  v4_index_.assign(slots, 0);
  v4_mask_ = static_cast<uint32_t>(slots - 1);
  for (uint32_t a : bound_v4) {
    if (a == 0) {
      v4_has_zero_ = true;
      continue;
    }
    uint32_t i = V4Slot(a);
    while (v4_index_[i] != 0) i = (i + 1) & v4_mask_;
    v4_index_[i] = a;
  }
}
bool VnicState::BindsV6(const Ip128& a) const {
  return std::binary_search(bound_v6.begin(), bound_v6.end(), a);
}

VnicTable::VnicTable(uint32_t workers) : workers_(std::min(workers, kMaxWorkers)) {
  for (auto& s : slots_) s.store(nullptr, std::memory_order_relaxed);
  for (uint32_t w = 0; w < kMaxWorkers; ++w) seen_[w].value.store(kOutside);
}

VnicTable::~VnicTable() {
  for (auto& s : slots_) delete s.load();
}

void VnicTable::Publish(std::unique_ptr<VnicState> state) {
  uint16_t id = state->local_id & kMaxLocalId;
  const VnicState* old = slots_[id].exchange(state.release(), std::memory_order_acq_rel);
  Retire(old);
}

void VnicTable::Publish(std::vector<std::unique_ptr<VnicState>> states) {
  std::vector<const VnicState*> old;
  old.reserve(states.size());
  for (auto& state : states) {
    const uint16_t id = state->local_id & kMaxLocalId;
    old.push_back(slots_[id].exchange(state.release(), std::memory_order_acq_rel));
  }
  Synchronize();
  for (const VnicState* o : old) delete o;
}

void VnicTable::Remove(uint16_t local_id) {
  Retire(slots_[local_id & kMaxLocalId].exchange(nullptr, std::memory_order_acq_rel));
}

void VnicTable::Synchronize() {
  uint64_t target = epoch_.fetch_add(1, std::memory_order_acq_rel) + 1;
  std::atomic_thread_fence(std::memory_order_seq_cst);
  for (uint32_t w = 0; w < workers_; ++w) {
    for (;;) {
      uint64_t v = seen_[w].value.load(std::memory_order_acquire);
      if (v == kOutside || v >= target) break;
      std::this_thread::yield();
    }
  }
}

void VnicTable::Retire(const VnicState* old) {
  if (!old) return;
  Synchronize();
  delete old;
}

}  // namespace dfw::dataplane
