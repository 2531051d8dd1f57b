// ProbeRunner: the host's side of a live trace or a probe (host.proto
// ProbeRequest, ProbeReport; dfwctl trace --live, dfwctl probe).
//
// What. For each request from the controller: arms the one-shot captures
// it names in the dataplane (ArmCapture; all or none: a capture that
// cannot be armed cancels the others and the report says which and why);
// with `inject`, builds the flow's first packet (ovs/probe_frame.h) from the
// source vNIC's MAC and puts it on the bridge from the vNIC's OpenFlow port
// (OvsEdge::PacketOut; the vNIC's steering id is its ofport); then reports
// "armed". It polls the captures every kPollInterval until each has met a
// frame or expired (or the controller cancels the probe), and reports them
// "done" with the dataplane's results. Probes run side by side: a probe
// waiting out its timeout on one host never holds up another's.
//
// Bounds. At most kMaxActive probes at once (more: an error report at
// once); a probe never lasts past its timeout plus kGrace.
//
// Thread safety. Submit() from any thread (the session thread: it only
// queues); the runner's own thread does all the work. Start/Stop once.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "dfw/hostagent/agent_edges.h"
#include "dfw/v1/host.pb.h"

namespace dfw::hostagent {

class ProbeRunner {
 public:
  static constexpr size_t kMaxActive = 32;
  static constexpr std::chrono::milliseconds kPollInterval{50};
  static constexpr std::chrono::milliseconds kGrace{1000};
  static constexpr uint32_t kDefaultTimeoutMs = 10000;

  // `send` writes a report to the controller (false: no session; the
  // probe is then abandoned, its captures cancelled).
  ProbeRunner(DataplaneEdge* dataplane, OvsEdge* ovs,
              std::function<bool(const v1::ProbeReport&)> send);
  ~ProbeRunner();  // Stop()s
  ProbeRunner(const ProbeRunner&) = delete;
  ProbeRunner& operator=(const ProbeRunner&) = delete;

  void Start();
  void Stop();
  void Submit(v1::ProbeRequest request);

  struct Stats {
    uint64_t probes = 0, injected = 0, failed = 0, met = 0, expired = 0;
  };
  Stats stats() const;

 private:
  struct Active {
    v1::ProbeRequest request;
    std::vector<uint64_t> capture_ids;
    std::chrono::steady_clock::time_point deadline;
    bool cancel = false;
  };
  void Run();
  // Arms and injects; false (and the error report sent) when it could not.
  bool Begin(const v1::ProbeRequest& req, Active* out);
  absl::Status Inject(const v1::ProbePacket& p);
  // Polls; true when the probe is over (its done report sent).
  bool Poll(Active* a, bool force);
  void Cancel(const std::vector<uint64_t>& ids);
  void Fail(uint64_t probe_id, const std::string& error);

  DataplaneEdge* const dataplane_;
  OvsEdge* const ovs_;
  const std::function<bool(const v1::ProbeReport&)> send_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<v1::ProbeRequest> queue_;
  bool stop_ = false;
  Stats stats_;
  std::map<uint64_t, Active> active_;  // runner thread only
  std::thread thread_;
};

}  // namespace dfw::hostagent
