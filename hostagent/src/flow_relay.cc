#include "dfw/hostagent/flow_relay.h"

#include <spdlog/spdlog.h>

namespace dfw::hostagent {

FlowRelay::FlowRelay(DataplaneEdge* dataplane, ControllerEdge* controller,
                     std::chrono::milliseconds interval)
    : dataplane_(dataplane), controller_(controller), interval_(interval) {}

FlowRelay::~FlowRelay() { Stop(); }

void FlowRelay::Start() {
  std::lock_guard<std::mutex> l(mu_);
  if (thread_.joinable() || stop_) return;
  thread_ = std::thread([this] { Run(); });
}

void FlowRelay::Stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void FlowRelay::SetEnabled(bool on) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (enabled_ == on) return;
    enabled_ = on;
    positioned_ = false;  // enabling starts at the newest record
  }
  spdlog::info("flow relay: {}", on ? "the controller observes: sending flow records"
                                    : "stopped sending flow records");
  cv_.notify_all();
}

bool FlowRelay::enabled() const {
  std::lock_guard<std::mutex> l(mu_);
  return enabled_;
}

FlowRelay::Stats FlowRelay::stats() const {
  std::lock_guard<std::mutex> l(mu_);
  return stats_;
}

void FlowRelay::Run() {
  std::unique_lock<std::mutex> l(mu_);
  while (!stop_) {
    if (!enabled_) {
      cv_.wait(l, [this] { return stop_ || enabled_; });
      continue;
    }
    l.unlock();
    PollOnce();
    l.lock();
    cv_.wait_for(l, interval_, [this] { return stop_ || !enabled_; });
  }
}

void FlowRelay::PollOnce() {
  for (;;) {
    uint64_t after = 0;
    bool positioned = false;
    {
      std::lock_guard<std::mutex> l(mu_);
      if (!enabled_ || stop_) return;
      after = after_seq_;
      positioned = positioned_;
    }
    auto r = dataplane_->FlowRecords(after, positioned ? kMaxBatch : 1);
    std::unique_lock<std::mutex> l(mu_);
    if (!r.ok()) {
      ++stats_.read_errors;
      return;  // the next round tries again
    }
    if (!positioned_) {  // start at the newest record, losses counted from now
      after_seq_ = r->last_seq();
      ring_lost_seen_ = r->ring_lost();
      instance_ = r->instance_id();
      positioned_ = true;
      continue;
    }
    if (after_seq_ != after) continue;    // re-enabled meanwhile
    if (r->instance_id() != instance_) {  // a restarted dataplane: from its first record
      instance_ = r->instance_id();
      after_seq_ = 0;
      ring_lost_seen_ = 0;
      continue;
    }
    uint64_t lost = 0;
    if (r->ring_lost() >= ring_lost_seen_) lost += r->ring_lost() - ring_lost_seen_;
    ring_lost_seen_ = r->ring_lost();
    if (r->records_size() > 0 && r->records(0).seq() > after_seq_ + 1) {
      lost += r->records(0).seq() - after_seq_ - 1;  // left the buffer unread
    }
    if (r->records_size() > 0) after_seq_ = r->records(r->records_size() - 1).seq();
    stats_.lost += lost;
    lost_pending_ += lost;
    if (r->records_size() == 0 && lost_pending_ == 0) return;
    v1::FlowBatch batch;
    batch.mutable_records()->Swap(r->mutable_records());
    batch.set_lost(lost_pending_);
    const bool more = batch.records_size() == static_cast<int>(kMaxBatch);
    l.unlock();
    const bool sent = controller_->SendFlows(batch);
    l.lock();
    if (sent) {
      lost_pending_ -= batch.lost();
      ++stats_.batches;
      stats_.records += static_cast<uint64_t>(batch.records_size());
    } else {
      lost_pending_ += static_cast<uint64_t>(batch.records_size());
      stats_.lost += static_cast<uint64_t>(batch.records_size());
    }
    if (!more) return;
  }
}

}  // namespace dfw::hostagent
