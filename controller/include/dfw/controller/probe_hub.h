// ProbeHub: the controller's side of live traces and probes in flight
// (ModelService::ProbeFlow; host.proto ProbeRequest, ProbeReport).
//
// What. A probe asks one or two hosts to arm captures (and one of them to
// send the packet); each host answers with a report once armed and another
// once done. The caller registers the hosts it asked (Expect), and waits
// for each host's armed or done report with a deadline; the session threads
// hand reports in (Report). A host whose session ends (HostLost) fails its
// waiters at once ("lost its session"), so no caller waits out a deadline
// for a host that is gone. A report for a probe no one waits for is dropped.
//
// Thread safety. Every method from any thread (one mutex; waits release it).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "dfw/v1/host.pb.h"

namespace dfw::controller {

class ProbeHub {
 public:
  uint64_t NewId();
  void Expect(uint64_t probe_id, const std::string& host_id);
  // Forgets the probe (after the caller has its answers).
  void Finish(uint64_t probe_id);

  void Report(const std::string& host_id, const dfw::v1::ProbeReport& report);
  void HostLost(const std::string& host_id);

  // The host's report once `done` (or armed, for WaitArmed; a done report
  // counts as armed). DEADLINE_EXCEEDED past `deadline`; UNAVAILABLE when
  // the host lost its session; a report with an error: FAILED_PRECONDITION
  // with the host's words.
  absl::StatusOr<dfw::v1::ProbeReport> WaitArmed(uint64_t probe_id, const std::string& host_id,
                                                 std::chrono::steady_clock::time_point deadline);
  absl::StatusOr<dfw::v1::ProbeReport> WaitDone(uint64_t probe_id, const std::string& host_id,
                                                std::chrono::steady_clock::time_point deadline);
  size_t in_flight() const;

 private:
  struct Slot {
    bool armed = false, done = false, lost = false;
    dfw::v1::ProbeReport report;
  };
  absl::StatusOr<dfw::v1::ProbeReport> Wait(uint64_t probe_id, const std::string& host_id,
                                            std::chrono::steady_clock::time_point deadline,
                                            bool done);
  mutable std::mutex mu_;
  std::condition_variable cv_;
  uint64_t next_id_ = 1;
  std::map<std::pair<uint64_t, std::string>, Slot> slots_;
};

}  // namespace dfw::controller
