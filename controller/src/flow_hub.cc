#include "dfw/controller/flow_hub.h"

#include <algorithm>
#include <charconv>
#include <random>

namespace dfw::controller {
namespace {

std::string_view PortOf(const std::string& addr) {
  size_t c = addr.rfind(':');
  return c == std::string::npos ? std::string_view() : std::string_view(addr).substr(c + 1);
}

std::string_view HostOf(const std::string& addr) {
  size_t c = addr.rfind(':');
  std::string_view h = std::string_view(addr).substr(0, c == std::string::npos ? addr.size() : c);
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  return h;
}

std::optional<uint32_t> ParseNumber(std::string_view s, uint32_t max) {
  uint32_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || s.empty() || v > max) return std::nullopt;
  return v;
}

}  // namespace

bool FlowFilter::Matches(const dfw::v1::ObservedFlow& f) const {
  if (!host.empty() && f.host_id() != host) return false;
  if (f.lost() > 0) return true;  // a loss marker: every reader of the host sees it
  const auto& r = f.record();
  if (!vm.empty() && f.vm_id() != vm && f.vm_name() != vm && f.peer_vm_id() != vm &&
      f.peer_vm_name() != vm)
    return false;
  if (!group.empty() &&
      std::find(f.groups().begin(), f.groups().end(), group) == f.groups().end() &&
      std::find(f.peer_groups().begin(), f.peer_groups().end(), group) == f.peer_groups().end())
    return false;
  if (!verdicts.empty() && std::find(verdicts.begin(), verdicts.end(), r.kind()) == verdicts.end())
    return false;
  if (!policy.empty() && r.policy_id() != policy && f.policy_name() != policy) return false;
  if (!rule.empty() && r.rule_id() != rule) return false;
  if (protocol && r.protocol() != *protocol) return false;
  if (port) {
    const std::string p = std::to_string(*port);
    if (PortOf(r.src()) != p && PortOf(r.dst()) != p) return false;
  }
  if (!ip.empty() && HostOf(r.src()) != ip && HostOf(r.dst()) != ip) return false;
  return true;
}

absl::StatusOr<FlowFilter> FlowFilter::Parse(
    const std::function<std::optional<std::string>(const std::string&)>& param) {
  FlowFilter f;
  auto text = [&](const char* name, std::string* out) {
    if (auto v = param(name)) *out = *v;
  };
  text("vm", &f.vm);
  text("host", &f.host);
  text("group", &f.group);
  text("policy", &f.policy);
  text("rule", &f.rule);
  text("ip", &f.ip);
  if (auto v = param("verdict")) {
    std::string_view rest = *v;
    while (!rest.empty()) {
      size_t comma = rest.find(',');
      std::string_view item = rest.substr(0, comma);
      rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
      if (item == "allowed") {
        f.verdicts.push_back(dfw::v1::FlowRecord::KIND_ALLOWED);
      } else if (item == "denied") {
        f.verdicts.push_back(dfw::v1::FlowRecord::KIND_DENIED);
      } else if (item == "audit") {
        f.verdicts.push_back(dfw::v1::FlowRecord::KIND_AUDIT);
      } else if (item == "ended") {
        f.verdicts.push_back(dfw::v1::FlowRecord::KIND_ENDED);
      } else {
        return absl::InvalidArgumentError("verdict: '" + std::string(item) +
                                          "' is not one of allowed, denied, audit, ended");
      }
    }
  }
  if (auto v = param("protocol")) {
    static const std::pair<const char*, uint32_t> kNames[] = {
        {"tcp", 6}, {"udp", 17}, {"icmp", 1}, {"icmp6", 58}, {"sctp", 132}};
    for (const auto& [name, number] : kNames) {
      if (*v == name) f.protocol = number;
    }
    if (!f.protocol) f.protocol = ParseNumber(*v, 255);
    if (!f.protocol) {
      return absl::InvalidArgumentError("protocol: '" + *v +
                                        "' is not tcp, udp, icmp, icmp6, sctp or 0-255");
    }
  }
  if (auto v = param("port")) {
    f.port = ParseNumber(*v, 65535);
    if (!f.port) return absl::InvalidArgumentError("port: '" + *v + "' is not 0-65535");
  }
  return f;
}

namespace {
uint64_t NewEpoch() {
  std::random_device rd;
  uint64_t e = 0;
  while (e == 0) e = rd() & 0xffff;
  return e << 48;
}
}  // namespace

FlowHub::FlowHub(std::function<void(bool)> watch, std::chrono::milliseconds lease)
    : watch_(std::move(watch)), lease_(lease), epoch_(NewEpoch()) {}

std::optional<bool> FlowHub::LeaseLocked(Clock::time_point now, bool reading) {
  if (reading) last_read_ = now;
  const bool want = reading || (watching_ && now - last_read_ < lease_);
  if (want == watching_) return std::nullopt;
  watching_ = want;
  return want;
}

void FlowHub::Add(const std::string& host_id, std::vector<dfw::v1::ObservedFlow> flows,
                  uint64_t lost) {
  std::optional<bool> change;
  {
    std::lock_guard<std::mutex> l(mu_);
    stats_.records += flows.size();
    stats_.host_lost += lost;
    if (lost > 0) {
      dfw::v1::ObservedFlow marker;
      marker.set_host_id(host_id);
      marker.set_lost(lost);
      marker.set_lost_where("host");
      flows.insert(flows.begin(), std::move(marker));
    }
    for (auto& f : flows) {
      f.set_seq(next_seq_++);
      if (f.host_id().empty()) f.set_host_id(host_id);
      ring_.push_back(std::move(f));
      if (ring_.size() > kCapacity) ring_.pop_front();
    }
    change = LeaseLocked(Clock::now(), false);
  }
  cv_.notify_all();
  if (change) Notify();
}

void FlowHub::Notify() {
  // Serialised, and always the state as it is now: two changes racing end
  // with the hosts told the last one.
  std::lock_guard<std::mutex> calls(watch_call_mu_);
  bool now;
  {
    std::lock_guard<std::mutex> l(mu_);
    now = watching_;
  }
  watch_(now);
}

void FlowHub::Scan(uint64_t cursor, const FlowFilter& filter, size_t limit,
                   dfw::v1::ObserveResponse* out) const {
  const uint64_t first = ring_.empty() ? next_seq_ : ring_.front().seq();
  if (cursor != 0 && (cursor & ~kSeqMask) != epoch_) {
    cursor = first - 1;      // another hub's cursor: from the oldest held
  } else if (cursor == 0) {  // the newest `limit`
    std::vector<const dfw::v1::ObservedFlow*> picked;
    for (auto it = ring_.rbegin(); it != ring_.rend() && picked.size() < limit; ++it) {
      if (filter.Matches(*it)) picked.push_back(&*it);
    }
    for (auto it = picked.rbegin(); it != picked.rend(); ++it) *out->add_flows() = **it;
    out->set_cursor(CursorOf(next_seq_ - 1));
    return;
  } else {
    cursor &= kSeqMask;
  }
  if (cursor + 1 < first) out->set_missed(out->missed() + (first - cursor - 1));
  uint64_t seq = std::max(cursor + 1, first);
  out->set_cursor(CursorOf(std::max(cursor, seq - 1)));
  for (; seq < next_seq_; ++seq) {
    const auto& f = ring_[static_cast<size_t>(seq - first)];
    out->set_cursor(CursorOf(seq));
    if (!filter.Matches(f)) continue;
    *out->add_flows() = f;
    if (static_cast<size_t>(out->flows_size()) >= limit) return;
  }
}

dfw::v1::ObserveResponse FlowHub::Read(uint64_t cursor, const FlowFilter& filter, size_t limit,
                                       std::chrono::milliseconds wait) {
  limit = std::clamp<size_t>(limit, 1, kMaxLimit);
  dfw::v1::ObserveResponse out;
  std::optional<bool> change;
  const auto deadline = Clock::now() + wait;
  std::unique_lock<std::mutex> l(mu_);
  ++stats_.readers;
  change = LeaseLocked(Clock::now(), true);
  const bool was_watching = !change;
  if (change) {
    l.unlock();
    Notify();
    l.lock();
  }
  Scan(cursor, filter, limit, &out);
  // Nothing yet: wait for what arrives after the cursor now held.
  while (out.flows_size() == 0 && Clock::now() < deadline) {
    const uint64_t seen = next_seq_;
    if (!cv_.wait_until(l, deadline, [&] { return next_seq_ != seen; })) break;
    Scan(out.cursor(), filter, limit, &out);
  }
  out.set_watching(was_watching);
  return out;
}

FlowHub::Stats FlowHub::stats() const {
  std::lock_guard<std::mutex> l(mu_);
  Stats s = stats_;
  s.watching = watching_;
  return s;
}

}  // namespace dfw::controller
