// FlowRelay: carries the dataplane's flow records to the controller while
// the controller asks for them (host.proto FlowWatch): what `dfwctl
// observe` shows.
//
// While enabled, a thread of its own reads the records that follow the last
// one it read (DataplaneEdge::FlowRecords, at most kMaxBatch per call) every
// `interval`, and sends each read as one FlowBatch (ControllerEdge::SendFlows).
// Enabling starts at the dataplane's newest record: an observer sees what
// happens from then on. A restarted dataplane (another instance_id) is read
// from its first record; what the stopped one held unread is gone uncounted
// (the agent cannot know it).
//
// Nothing is lost silently. FlowBatch.lost carries, since the previous batch:
// records the dataplane's workers dropped (their ring was full:
// FlowRecordsResponse.ring_lost grew), records that left the dataplane's
// buffer before they were read (a gap in seq), and the records of batches
// that could not be sent (no session open: never queued, a record's worth
// is now). A lost count waits for the next batch that is sent.
//
// Thread safety: SetEnabled() and stats() from any thread; PollOnce() is the
// thread's loop body (tests call it without Start()); Stop() once, from any
// thread but the relay's.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>

#include "dfw/hostagent/agent_edges.h"

namespace dfw::hostagent {

class FlowRelay {
 public:
  static constexpr uint32_t kMaxBatch = 2048;

  FlowRelay(DataplaneEdge* dataplane, ControllerEdge* controller,
            std::chrono::milliseconds interval = std::chrono::milliseconds(100));
  ~FlowRelay();  // Stop()s
  FlowRelay(const FlowRelay&) = delete;
  FlowRelay& operator=(const FlowRelay&) = delete;

  void Start();
  void Stop();
  void SetEnabled(bool on);
  bool enabled() const;

  // One round: reads and sends until the dataplane has nothing more (or a
  // read fails). Does nothing while disabled.
  void PollOnce();

  struct Stats {
    uint64_t batches = 0;  // sent
    uint64_t records = 0;  // sent
    uint64_t lost = 0;     // counted as lost (sent or still to send)
    uint64_t read_errors = 0;
  };
  Stats stats() const;

 private:
  void Run();

  DataplaneEdge* const dataplane_;
  ControllerEdge* const controller_;
  const std::chrono::milliseconds interval_;

  mutable std::mutex mu_;  // guards everything below
  std::condition_variable cv_;
  bool enabled_ = false;
  bool stop_ = false;
  bool positioned_ = false;  // after_seq_ is set since the last enable
  uint64_t after_seq_ = 0;
  uint64_t instance_ = 0;  // the dataplane's instance_id after_seq_ is of
  uint64_t ring_lost_seen_ = 0;
  uint64_t lost_pending_ = 0;  // not yet sent in a batch
  Stats stats_;
  std::thread thread_;
};

}  // namespace dfw::hostagent
