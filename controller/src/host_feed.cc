#include "dfw/controller/host_feed.h"

namespace dfw::controller {

void MergeChanges(HostChanges* acc, const HostChanges& c) {
  for (const auto& v : c.rulesets_removed) {
    acc->rulesets_set.erase(v);
    acc->rulesets_removed.insert(v);
  }
  for (const auto& v : c.rulesets_set) {
    acc->rulesets_removed.erase(v);
    acc->rulesets_set.insert(v);
  }
  for (const auto& id : c.sets_removed) {
    acc->sets_full.erase(id);
    acc->sets_removed.insert(id);
  }
  for (const auto& id : c.sets_full) {
    acc->sets_removed.erase(id);
    acc->sets_full.insert(id);
  }
  acc->sets_touched.insert(c.sets_touched.begin(), c.sets_touched.end());
}

uint64_t HostFeed::Attach(std::function<void()> wake,
                          std::function<bool(dfw::v1::ControllerToHost)> deliver) {
  std::lock_guard<std::recursive_mutex> l(cb_mu_);
  wake_ = std::move(wake);
  deliver_ = std::move(deliver);
  std::lock_guard<std::mutex> m(mu_);
  in_flight_ = false;  // a write of the previous session is not ours to wait for
  scheduled_ = false;
  flow_watch_sent_ = false;  // an agent's new session starts without flow records
  probes_.clear();           // asked of the previous session: lost with it
  return ++generation_;
}

void HostFeed::Detach(uint64_t generation) {
  std::lock_guard<std::recursive_mutex> l(cb_mu_);
  std::lock_guard<std::mutex> m(mu_);
  if (generation != generation_) return;
  wake_ = nullptr;
  deliver_ = nullptr;
  in_flight_ = false;
  scheduled_ = false;
}

void HostFeed::Kick() {
  bool wake = false;
  {
    std::lock_guard<std::mutex> l(mu_);
    WakeIfIdleLocked(&wake);
  }
  if (wake) CallWake();
}

uint64_t HostFeed::generation() const {
  std::lock_guard<std::mutex> l(mu_);
  return generation_;
}

uint64_t HostFeed::last_sent() const {
  std::lock_guard<std::mutex> l(mu_);
  return last_sent_;
}

void HostFeed::CallWake() {
  std::lock_guard<std::recursive_mutex> l(cb_mu_);
  if (wake_) wake_();
}

void HostFeed::WakeIfIdleLocked(bool* wake) {
  if (!scheduled_ && !in_flight_ && PendingLocked()) {
    scheduled_ = true;
    *wake = true;
  }
}

void HostFeed::Merge(const HostChanges& changes) {
  bool wake = false;
  {
    std::lock_guard<std::mutex> l(mu_);
    ++stats_.merged_changes;
    if (!full_) MergeChanges(&pending_, changes);
    WakeIfIdleLocked(&wake);
  }
  if (wake) CallWake();
}

void HostFeed::RequestFull() {
  bool wake = false;
  {
    std::lock_guard<std::mutex> l(mu_);
    full_ = true;
    resumed_ = false;
    pending_ = HostChanges();
    WakeIfIdleLocked(&wake);
  }
  if (wake) CallWake();
}

void HostFeed::Resume(uint64_t held, HostChanges diff) {
  bool wake = false;
  {
    std::lock_guard<std::mutex> l(mu_);
    full_ = false;
    resumed_ = true;
    pending_ = std::move(diff);
    last_sent_ = held;
    ++stats_.resumes;
    WakeIfIdleLocked(&wake);
  }
  if (wake) CallWake();
}

void HostFeed::QueueImport(dfw::v1::ConnectionImport msg) {
  bool wake = false;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (imports_.size() >= kMaxImports) {
      imports_.pop_front();
      ++stats_.imports_dropped;
    }
    imports_.push_back(std::move(msg));
    WakeIfIdleLocked(&wake);
  }
  if (wake) CallWake();
}

void HostFeed::QueueProbe(dfw::v1::ProbeRequest msg) {
  bool wake = false;
  {
    std::lock_guard<std::mutex> l(mu_);
    probes_.push_back(std::move(msg));
    WakeIfIdleLocked(&wake);
  }
  if (wake) CallWake();
}

void HostFeed::SetFlowWatch(bool on) {
  bool wake = false;
  {
    std::lock_guard<std::mutex> l(mu_);
    flow_watch_ = on;
    WakeIfIdleLocked(&wake);
  }
  if (wake) CallWake();
}

std::optional<dfw::v1::ControllerToHost> HostFeed::Take(const PolicyCompiler& compiler,
                                                        uint64_t revision) {
  std::lock_guard<std::mutex> l(mu_);
  scheduled_ = false;
  if (in_flight_ || !PendingLocked()) return std::nullopt;
  dfw::v1::ControllerToHost msg;
  if (!probes_.empty()) {  // small, and someone waits for each
    *msg.mutable_probe() = std::move(probes_.front());
    probes_.pop_front();
    in_flight_ = true;
    return msg;
  }
  if (!imports_.empty()) {
    *msg.mutable_connections() = std::move(imports_.front());
    imports_.pop_front();
    in_flight_ = true;
    ++stats_.imports;
    return msg;
  }
  if (flow_watch_ != flow_watch_sent_) {
    msg.mutable_flow_watch()->set_enabled(flow_watch_);
    flow_watch_sent_ = flow_watch_;
    in_flight_ = true;
    return msg;
  }
  if (!full_ && pending_.empty() && revision <= last_sent_) {  // resumed at the current revision
    resumed_ = false;
    return std::nullopt;
  }
  if (full_) {
    *msg.mutable_full() = compiler.FullState(host_id_, revision);
    ++stats_.fulls;
  } else {
    if (resumed_) {  // the journals here do not start at last_sent_
      pending_.sets_full.insert(pending_.sets_touched.begin(), pending_.sets_touched.end());
      pending_.sets_touched.clear();
    }
    *msg.mutable_delta() = compiler.BuildDelta(host_id_, pending_, last_sent_, revision);
  }
  full_ = false;
  resumed_ = false;
  pending_ = HostChanges();
  last_sent_ = revision;
  in_flight_ = true;
  ++stats_.messages;
  return msg;
}

bool HostFeed::Deliver(dfw::v1::ControllerToHost msg) {
  std::lock_guard<std::recursive_mutex> l(cb_mu_);
  if (!deliver_) return false;
  return deliver_(std::move(msg));
}

void HostFeed::WriteDone(uint64_t generation) {
  bool wake = false;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (generation != generation_) return;
    in_flight_ = false;
    WakeIfIdleLocked(&wake);
  }
  if (wake) CallWake();
}

HostFeed::Stats HostFeed::stats() const {
  std::lock_guard<std::mutex> l(mu_);
  return stats_;
}

HostFeed::Depth HostFeed::depth() const {
  std::lock_guard<std::mutex> l(mu_);
  Depth d;
  d.objects = pending_.rulesets_set.size() + pending_.rulesets_removed.size() +
              pending_.sets_full.size() + pending_.sets_removed.size() +
              pending_.sets_touched.size() + imports_.size();
  d.owed = PendingLocked();
  return d;
}

}  // namespace dfw::controller
