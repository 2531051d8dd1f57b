// HostFeed: what one host's stream still has to receive, kept as merged
// changes rather than a queue of messages.
//
// The controller's writer merges each change's HostChanges into the feed
// (cheap, never blocks, never builds a message). A sender thread turns the
// pending changes into one message when the stream can take it: a full
// state if one was requested, else one HostDelta from the last revision
// sent to the current one, built against the current state. A slow host
// therefore receives fewer, larger, coalesced deltas; memory per host is
// bounded by the host's own state, never by how far behind it is.
//
// Thread safety: Merge/RequestFull/Attach run under the controller's writer lock;
// Take runs under its reader lock (so it sees a state consistent with the
// merged changes); WriteDone and Detach from the stream's threads. An
// internal mutex guards the feed; the wake callback (which only queues the
// feed for a sender) runs outside it.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>

#include "dfw/controller/policy_compiler.h"
#include "dfw/v1/host.pb.h"

namespace dfw::controller {

class HostFeed {
 public:
  explicit HostFeed(std::string host_id) : host_id_(std::move(host_id)) {}
  const std::string& host_id() const { return host_id_; }

  // The stream side: `wake` asks a sender thread to call Take (it must not
  // block); `deliver` hands a built message to the stream (false: stream over).
  // A feed outlives its sessions: while the host is away it keeps merging,
  // so a host that comes back holding last_sent() gets one delta instead of
  // a full state. Attach returns the session's generation; calls carrying
  // an older generation (a previous session's late completions) are ignored.
  uint64_t Attach(std::function<void()> wake,
                  std::function<bool(dfw::v1::ControllerToHost)> deliver);
  // After Detach returns no callback of that session runs and none starts.
  void Detach(uint64_t generation);
  // Wakes a sender if something is pending (after a session attached).
  void Kick();
  uint64_t last_sent() const;
  uint64_t generation() const;
  bool generation_matches(uint64_t g) const { return generation() == g; }

  // Writer side.
  void Merge(const HostChanges& changes);
  void RequestFull();
  // The host holds `held`, which this process did not send (it restarted,
  // or took over as leader), and `diff` (PolicyCompiler::DiffHeld) is what
  // differs from its current state: the next message is a delta from `held`
  // carrying `diff` and whatever is merged meanwhile. Address sets touched
  // before that delta is taken go whole (their journals here may hold
  // changes the host already has).
  void Resume(uint64_t held, HostChanges diff);
  // A VM's connections for this host (vm_handover.h): sent before any state
  // message, so the revision that gives the host the VM's rules, merged in
  // the same change, cannot overtake them. Not part of last_sent(); kept
  // across sessions; at most kMaxImports are held (the oldest dropped).
  void QueueImport(dfw::v1::ConnectionImport msg);
  static constexpr size_t kMaxImports = 1024;
  // Whether the host should send its flow records (host.proto FlowWatch):
  // a FlowWatch goes out when this differs from what the session was last
  // told (a new session has been told "off"), before any state message.
  void SetFlowWatch(bool on);
  // A live trace's or probe's request (host.proto ProbeRequest), sent before
  // anything else pending. Dropped, not carried over, when a new session
  // attaches (its asker was told the host lost its session).
  void QueueProbe(dfw::v1::ProbeRequest msg);

  // Sender side (reader lock held): the next message, or nullopt when
  // nothing is pending or a write is in flight.
  std::optional<dfw::v1::ControllerToHost> Take(const PolicyCompiler& compiler, uint64_t revision);
  // False when the stream is gone (the message is dropped).
  bool Deliver(dfw::v1::ControllerToHost msg);
  // Stream side: the last delivered message is written.
  void WriteDone(uint64_t generation);

  struct Stats {
    uint64_t messages = 0, fulls = 0, resumes = 0, merged_changes = 0, imports = 0,
             imports_dropped = 0;
  };
  Stats stats() const;
  // What the host is still owed (GET /metrics): objects merged and not yet
  // sent (rulesets and address sets set, removed or touched, and connection
  // imports), and whether a message is owed at all (a full state or a
  // resume counts even with no object).
  struct Depth {
    size_t objects = 0;
    bool owed = false;
  };
  Depth depth() const;

 private:
  // resumed_: even an empty delta is owed (it moves the host to the
  // current revision), unless it already holds it.
  bool PendingLocked() const {
    return full_ || resumed_ || !pending_.empty() || !imports_.empty() || !probes_.empty() ||
           flow_watch_ != flow_watch_sent_;
  }
  void WakeIfIdleLocked(bool* wake);
  void CallWake();

  const std::string host_id_;
  mutable std::mutex mu_;
  HostChanges pending_;
  std::deque<dfw::v1::ConnectionImport> imports_;
  std::deque<dfw::v1::ProbeRequest> probes_;
  bool flow_watch_ = false;
  bool flow_watch_sent_ = false;  // what this session was told (reset by Attach)
  bool full_ = false;
  bool resumed_ = false;  // Resume() until the next Take
  bool scheduled_ = false;
  bool in_flight_ = false;
  uint64_t last_sent_ = 0;
  uint64_t generation_ = 0;
  Stats stats_;
  std::recursive_mutex cb_mu_;  // guards the callbacks
  std::function<void()> wake_;
  std::function<bool(dfw::v1::ControllerToHost)> deliver_;
};

}  // namespace dfw::controller
