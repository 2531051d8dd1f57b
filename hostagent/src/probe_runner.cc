// ProbeRunner implementation; the protocol is the header's.
#include "dfw/hostagent/probe_runner.h"

#include <spdlog/spdlog.h>

#include "dfw/ovs/probe_frame.h"

namespace dfw::hostagent {

ProbeRunner::ProbeRunner(DataplaneEdge* dataplane, OvsEdge* ovs,
                         std::function<bool(const v1::ProbeReport&)> send)
    : dataplane_(dataplane), ovs_(ovs), send_(std::move(send)) {}

ProbeRunner::~ProbeRunner() { Stop(); }

void ProbeRunner::Start() {
  thread_ = std::thread([this] { Run(); });
}

void ProbeRunner::Stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void ProbeRunner::Submit(v1::ProbeRequest request) {
  {
    std::lock_guard<std::mutex> l(mu_);
    queue_.push_back(std::move(request));
  }
  cv_.notify_all();
}

ProbeRunner::Stats ProbeRunner::stats() const {
  std::lock_guard<std::mutex> l(mu_);
  return stats_;
}

void ProbeRunner::Fail(uint64_t probe_id, const std::string& error) {
  spdlog::warn("probe {}: {}", probe_id, error);
  {
    std::lock_guard<std::mutex> l(mu_);
    ++stats_.failed;
  }
  v1::ProbeReport r;
  r.set_probe_id(probe_id);
  r.set_done(true);
  r.set_error(error);
  send_(r);
}

void ProbeRunner::Cancel(const std::vector<uint64_t>& ids) {
  if (ids.empty()) return;
  v1::CaptureResultsRequest q;
  for (uint64_t id : ids) q.add_capture_ids(id);
  q.set_cancel(true);
  if (auto r = dataplane_->CaptureResults(q); !r.ok()) {
    // They expire by themselves at their deadline.
    spdlog::warn("probe: cancelling captures: {}", r.status().ToString());
  }
}

absl::Status ProbeRunner::Inject(const v1::ProbePacket& p) {
  auto state = dataplane_->GetState(false);
  if (!state.ok()) return state.status();
  const v1::DataplaneVNic* vnic = nullptr;
  for (const auto& v : state->vnics()) {
    if (v.id() == p.vnic_id()) vnic = &v;
  }
  if (!vnic)
    return absl::NotFoundError("inject.vnic_id: '" + p.vnic_id() + "' is not on this host");
  ovs::ProbeFrameSpec spec;
  auto src_mac = ovs::ParseMac(vnic->mac());
  if (!src_mac.ok()) return absl::InternalError("vNIC " + vnic->id() + " mac: " + vnic->mac());
  auto dst_mac = ovs::ParseMac(p.dst_mac());
  if (!dst_mac.ok()) {
    return absl::InvalidArgumentError("inject.dst_mac: '" + p.dst_mac() + "' is not a MAC");
  }
  if (p.protocol() > 255 || p.src_port() > 65535 || p.dst_port() > 65535) {
    return absl::InvalidArgumentError("inject: protocol or port out of range");
  }
  spec.src_mac = *src_mac;
  spec.dst_mac = *dst_mac;
  spec.protocol = static_cast<uint8_t>(p.protocol());
  spec.src_ip.assign(p.src_ip().begin(), p.src_ip().end());
  spec.dst_ip.assign(p.dst_ip().begin(), p.dst_ip().end());
  spec.src_port = static_cast<uint16_t>(p.src_port());
  spec.dst_port = static_cast<uint16_t>(p.dst_port());
  auto frame = ovs::BuildProbeFrame(spec);
  if (!frame.ok()) {
    return absl::InvalidArgumentError("inject: " + std::string(frame.status().message()));
  }
  // The vNIC's steering id is its OpenFlow port (host_view.h).
  return ovs_->PacketOut(vnic->local_id(), *frame);
}

bool ProbeRunner::Begin(const v1::ProbeRequest& req, Active* out) {
  out->request = req;
  const uint32_t timeout = req.timeout_ms() ? req.timeout_ms() : kDefaultTimeoutMs;
  out->deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout) + kGrace;
  for (int i = 0; i < req.captures_size(); ++i) {
    v1::ArmCaptureRequest arm;
    *arm.mutable_filter() = req.captures(i);
    arm.set_timeout_ms(timeout);
    auto armed = dataplane_->ArmCapture(arm);
    if (!armed.ok()) {
      Cancel(out->capture_ids);
      Fail(req.probe_id(), "captures[" + std::to_string(i) + "] (vNIC " +
                               req.captures(i).vnic_id() +
                               "): " + std::string(armed.status().message()));
      return false;
    }
    out->capture_ids.push_back(armed->capture_id());
  }
  if (req.has_inject()) {
    if (absl::Status s = Inject(req.inject()); !s.ok()) {
      Cancel(out->capture_ids);
      Fail(req.probe_id(),
           "inject from vNIC " + req.inject().vnic_id() + ": " + std::string(s.message()));
      return false;
    }
    std::lock_guard<std::mutex> l(mu_);
    ++stats_.injected;
  }
  v1::ProbeReport r;
  r.set_probe_id(req.probe_id());
  r.set_armed(true);
  if (!send_(r)) {
    Cancel(out->capture_ids);
    return false;
  }
  return true;
}

bool ProbeRunner::Poll(Active* a, bool force) {
  if (a->capture_ids.empty()) {  // inject only: nothing to wait for (and no id: "all")
    v1::ProbeReport report;
    report.set_probe_id(a->request.probe_id());
    report.set_armed(true);
    report.set_done(true);
    send_(report);
    return true;
  }
  v1::CaptureResultsRequest q;
  for (uint64_t id : a->capture_ids) q.add_capture_ids(id);
  const bool last = force || a->cancel || std::chrono::steady_clock::now() > a->deadline;
  q.set_cancel(last);
  auto res = dataplane_->CaptureResults(q);
  if (!res.ok()) {
    if (!last) return false;  // the dataplane may be back at the next poll
    Fail(a->request.probe_id(), "capture results: " + std::string(res.status().message()));
    return true;
  }
  bool pending = false;
  for (const auto& r : res->results()) pending |= r.state() == v1::CaptureResult::STATE_ARMED;
  if (pending && !last) return false;
  v1::ProbeReport report;
  report.set_probe_id(a->request.probe_id());
  report.set_armed(true);
  report.set_done(true);
  // In the request's order.
  for (uint64_t id : a->capture_ids) {
    for (const auto& r : res->results()) {
      if (r.capture_id() == id) *report.add_results() = r;
    }
  }
  {
    std::lock_guard<std::mutex> l(mu_);
    for (const auto& r : report.results()) {
      if (r.state() == v1::CaptureResult::STATE_MET) ++stats_.met;
      if (r.state() == v1::CaptureResult::STATE_EXPIRED) ++stats_.expired;
    }
  }
  send_(report);
  return true;
}

void ProbeRunner::Run() {
  std::unique_lock<std::mutex> l(mu_);
  while (!stop_) {
    cv_.wait_for(l, kPollInterval, [this] { return stop_ || !queue_.empty(); });
    if (stop_) break;
    std::deque<v1::ProbeRequest> todo;
    todo.swap(queue_);
    l.unlock();
    for (v1::ProbeRequest& req : todo) {
      if (req.cancel()) {
        if (auto it = active_.find(req.probe_id()); it != active_.end()) it->second.cancel = true;
        continue;
      }
      if (active_.count(req.probe_id())) {
        Fail(req.probe_id(), "probe_id: already running here");
        continue;
      }
      if (active_.size() >= kMaxActive) {
        Fail(req.probe_id(),
             "probes: " + std::to_string(kMaxActive) + " already running on this host; try again");
        continue;
      }
      {
        std::lock_guard<std::mutex> g(mu_);
        ++stats_.probes;
      }
      Active a;
      if (Begin(req, &a)) active_.emplace(req.probe_id(), std::move(a));
    }
    for (auto it = active_.begin(); it != active_.end();) {
      it = Poll(&it->second, false) ? active_.erase(it) : std::next(it);
    }
    l.lock();
  }
  l.unlock();
  for (auto& [id, a] : active_) Poll(&a, true);  // cancelled: their results as they are
  active_.clear();
}

}  // namespace dfw::hostagent
