// HostOutbox: the bounded queue of messages waiting for one host's stream.
//
// The controller's writer pushes deltas here and never blocks; the host's
// stream writer pops them one at a time. When a slow host lets more than
// `max_pending` deltas pile up, the queue is dropped and the outbox asks for
// a full state instead (coalescing): memory per host stays bounded and the
// host still converges to the latest revision. A full state taken at
// revision R supersedes every queued delta up to R.
//
// Thread safety: every method may be called from any thread. The wake
// callback runs on the pushing thread, outside the queue lock; ClearWake()
// returns only when no wake call is running, after which none starts.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>

#include "dfw/v1/host.pb.h"

namespace dfw::controller {

class HostOutbox {
 public:
  explicit HostOutbox(size_t max_pending = 256) : max_pending_(max_pending) {}

  void SetWake(std::function<void()> wake);
  void ClearWake();

  // Producer side.
  void PushDelta(dfw::v1::HostDelta delta);
  void PushFull(dfw::v1::HostDesiredState full);

  // Consumer side: the next message, with from_revision of deltas rewritten
  // to the last revision sent. need_full is set when the queue overflowed
  // and the consumer must fetch a full state (then call PushFull).
  struct Next {
    std::optional<dfw::v1::ControllerToHost> msg;
    bool need_full = false;
  };
  Next Pop();

  size_t pending() const;
  uint64_t overflows() const;

 private:
  void Wake();
  const size_t max_pending_;
  mutable std::mutex mu_;
  std::deque<dfw::v1::ControllerToHost> queue_;
  bool need_full_ = false;
  bool full_requested_ = false;
  uint64_t last_sent_ = 0;
  uint64_t overflows_ = 0;
  std::recursive_mutex wake_mu_;
  std::function<void()> wake_;
};

}  // namespace dfw::controller
