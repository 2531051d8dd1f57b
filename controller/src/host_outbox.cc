#include "dfw/controller/host_outbox.h"

namespace dfw::controller {

void HostOutbox::SetWake(std::function<void()> wake) {
  std::lock_guard<std::recursive_mutex> l(wake_mu_);
  wake_ = std::move(wake);
}

void HostOutbox::ClearWake() {
  std::lock_guard<std::recursive_mutex> l(wake_mu_);
  wake_ = nullptr;
}

void HostOutbox::Wake() {
  std::lock_guard<std::recursive_mutex> l(wake_mu_);
  if (wake_) wake_();
}

void HostOutbox::PushDelta(dfw::v1::HostDelta delta) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (need_full_ && !full_requested_) return;  // the full state, taken later, includes it
    if (need_full_) {
      // A full state is being taken right now and may predate this delta:
      // keep it; PushFull drops what the full state already covers.
      *queue_.emplace_back().mutable_delta() = std::move(delta);
      return;
    }
    if (queue_.size() >= max_pending_) {
      queue_.clear();
      need_full_ = true;
      ++overflows_;
    } else {
      *queue_.emplace_back().mutable_delta() = std::move(delta);
    }
  }
  Wake();
}

void HostOutbox::PushFull(dfw::v1::HostDesiredState full) {
  {
    std::lock_guard<std::mutex> l(mu_);
    uint64_t r = full.revision();
    std::erase_if(queue_, [&](const dfw::v1::ControllerToHost& m) {
      return m.has_delta() ? m.delta().to_revision() <= r : m.full().revision() <= r;
    });
    *queue_.emplace_front().mutable_full() = std::move(full);
    need_full_ = false;
    full_requested_ = false;
  }
  Wake();
}

HostOutbox::Next HostOutbox::Pop() {
  std::lock_guard<std::mutex> l(mu_);
  Next n;
  if (need_full_) {
    if (!full_requested_) {
      full_requested_ = true;
      n.need_full = true;
    }
    return n;
  }
  if (queue_.empty()) return n;
  n.msg = std::move(queue_.front());
  queue_.pop_front();
  if (n.msg->has_delta()) {
    n.msg->mutable_delta()->set_from_revision(last_sent_);
    last_sent_ = n.msg->delta().to_revision();
  } else {
    last_sent_ = n.msg->full().revision();
  }
  return n;
}

size_t HostOutbox::pending() const {
  std::lock_guard<std::mutex> l(mu_);
  return queue_.size();
}

uint64_t HostOutbox::overflows() const {
  std::lock_guard<std::mutex> l(mu_);
  return overflows_;
}

}  // namespace dfw::controller
