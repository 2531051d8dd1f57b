// ProbeHub implementation.
#include "dfw/controller/probe_hub.h"

namespace dfw::controller {

uint64_t ProbeHub::NewId() {
  std::lock_guard<std::mutex> l(mu_);
  return next_id_++;
}

void ProbeHub::Expect(uint64_t probe_id, const std::string& host_id) {
  std::lock_guard<std::mutex> l(mu_);
  slots_[{probe_id, host_id}] = Slot{};
}

void ProbeHub::Finish(uint64_t probe_id) {
  std::lock_guard<std::mutex> l(mu_);
  for (auto it = slots_.lower_bound({probe_id, ""});
       it != slots_.end() && it->first.first == probe_id;) {
    it = slots_.erase(it);
  }
}

void ProbeHub::Report(const std::string& host_id, const dfw::v1::ProbeReport& report) {
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = slots_.find({report.probe_id(), host_id});
    if (it == slots_.end()) return;  // no one waits (finished, or not asked of this host)
    Slot& s = it->second;
    s.armed = s.armed || report.armed() || report.done();
    s.done = s.done || report.done();
    s.report = report;
  }
  cv_.notify_all();
}

void ProbeHub::HostLost(const std::string& host_id) {
  {
    std::lock_guard<std::mutex> l(mu_);
    for (auto& [key, s] : slots_) {
      if (key.second == host_id && !s.done) s.lost = true;
    }
  }
  cv_.notify_all();
}

absl::StatusOr<dfw::v1::ProbeReport> ProbeHub::Wait(uint64_t probe_id, const std::string& host_id,
                                                    std::chrono::steady_clock::time_point deadline,
                                                    bool done) {
  std::unique_lock<std::mutex> l(mu_);
  auto it = slots_.find({probe_id, host_id});
  if (it == slots_.end()) return absl::NotFoundError("probe: host " + host_id + " was not asked");
  const Slot& s = it->second;  // std::map: the reference stays valid while the entry does
  auto ready = [&] { return s.lost || (done ? s.done : s.armed); };
  if (!cv_.wait_until(l, deadline, ready)) {
    return absl::DeadlineExceededError("host " + host_id + " did not answer in time");
  }
  if (!s.report.error().empty()) {
    return absl::FailedPreconditionError("host " + host_id + ": " + s.report.error());
  }
  if (s.lost && !(done ? s.done : s.armed)) {
    return absl::UnavailableError("host " + host_id + " lost its session during the probe");
  }
  return s.report;
}

absl::StatusOr<dfw::v1::ProbeReport> ProbeHub::WaitArmed(
    uint64_t probe_id, const std::string& host_id, std::chrono::steady_clock::time_point deadline) {
  return Wait(probe_id, host_id, deadline, false);
}

absl::StatusOr<dfw::v1::ProbeReport> ProbeHub::WaitDone(
    uint64_t probe_id, const std::string& host_id, std::chrono::steady_clock::time_point deadline) {
  return Wait(probe_id, host_id, deadline, true);
}

size_t ProbeHub::in_flight() const {
  std::lock_guard<std::mutex> l(mu_);
  return slots_.size();
}

}  // namespace dfw::controller
