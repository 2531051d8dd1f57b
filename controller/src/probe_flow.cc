// ModelService::ProbeFlow: a trace with packets (model_service.h). The
// captures and the probe packet are the hosts' (hostagent/probe_runner.h);
// here: which host arms what, in which order, and what the answers mean.
#include <arpa/inet.h>

#include <random>

#include "dfw/controller/model_service.h"
#include "str_util.h"

namespace dfw::controller {
namespace {

constexpr uint32_t kMaxProbeMs = 120000;
constexpr auto kArmWait = std::chrono::seconds(5);    // a host's "armed" report
constexpr auto kDoneGrace = std::chrono::seconds(3);  // past the captures' timeout

std::string IpBytes(const std::string& text) {
  unsigned char b[16];
  if (inet_pton(AF_INET, text.c_str(), b) == 1) return std::string(reinterpret_cast<char*>(b), 4);
  if (inet_pton(AF_INET6, text.c_str(), b) == 1) {
    return std::string(reinterpret_cast<char*>(b), 16);
  }
  return "";
}

bool HasPorts(uint32_t proto) { return proto == 6 || proto == 17 || proto == 132; }

}  // namespace

absl::StatusOr<dfw::v1::ProbeFlowResponse> ModelService::ProbeFlow(
    const dfw::v1::ProbeFlowRequest& req) {
  if (req.timeout_ms() > kMaxProbeMs) {
    return absl::InvalidArgumentError(
        Cat("timeout_ms: ", req.timeout_ms(), " is over ", kMaxProbeMs, " (2 minutes)"));
  }
  const uint32_t timeout = req.timeout_ms() ? req.timeout_ms() : (req.inject() ? 2000 : 30000);
  dfw::v1::TraceRequest flow = req.flow();
  if (req.inject() && HasPorts(flow.protocol()) && flow.source_port() == 0) {
    // An ephemeral port of its own, so the capture is this packet's.
    static thread_local std::mt19937 rng(std::random_device{}());
    flow.set_source_port(49152 + rng() % 16384);
  }
  auto expected = Trace(flow);
  if (!expected.ok()) return expected.status();
  dfw::v1::ProbeFlowResponse resp;
  *resp.mutable_expected() = *expected;
  const dfw::v1::TraceStage& eg = expected->stages(0);
  const dfw::v1::TraceStage& in = expected->stages(1);

  // Which end a capture can watch: a vNIC a connected hypervisor of ours
  // filters. The destination's MAC for the probe packet.
  std::string dst_mac;
  std::map<std::string, bool> connected;
  {
    std::shared_lock l(mu_);
    if (auto it = vms_.find(in.vm_id()); it != vms_.end()) {
      for (const auto& n : it->second.vnics()) {
        if (n.id() == in.vnic_id()) dst_mac = n.mac();
      }
    }
  }
  for (const auto* st : {&eg, &in}) connected[st->host_id()] = HostConnected(st->host_id());
  auto why_not = [&](const dfw::v1::TraceStage& st) -> std::string {
    if (!st.enforced()) return "no host of ours enforces this vNIC: nothing to capture in";
    if (st.enforcement() == dfw::v1::ENFORCEMENT_GUEST || IsGuestHost(st.host_id())) {
      return "enforced by the guest agent (nftables): no dataplane to capture in";
    }
    if (st.excluded()) return "on the exclusion list: its frames bypass the dataplane";
    if (!connected[st.host_id()]) return Cat("host ", st.host_id(), " is not connected");
    return "";
  };
  const std::string eg_not = why_not(eg), in_not = why_not(in);
  if (req.inject()) {
    bool can = eg.enforced() && eg.enforcement() != dfw::v1::ENFORCEMENT_GUEST &&
               !IsGuestHost(eg.host_id()) && connected[eg.host_id()];
    if (!can) {
      return absl::FailedPreconditionError(
          Cat("inject: VM '", eg.vm_id(), "' is not on a connected host of ours (",
              eg.enforced() ? eg_not : "no host of ours enforces it",
              "): nothing can send a probe from it"));
    }
    if (dst_mac.empty()) {
      return absl::FailedPreconditionError(
          Cat("inject: vNIC '", in.vnic_id(), "' of VM '", in.vm_id(), "' has no MAC"));
    }
  }

  auto filter_of = [&](const dfw::v1::TraceStage& st, bool egress) {
    dfw::v1::CaptureFilter f;
    f.set_vnic_id(st.vnic_id());
    f.set_direction(egress ? dfw::v1::DIRECTION_OUT : dfw::v1::DIRECTION_IN);
    f.set_protocol(flow.protocol());
    f.set_src_ip(IpBytes(eg.address()));
    f.set_dst_ip(IpBytes(in.address()));
    if (HasPorts(flow.protocol())) {
      f.set_src_port(flow.source_port());  // 0 (a live trace): any
      f.set_dst_port(flow.destination_port());
    }
    return f;
  };
  const bool cap_eg = eg_not.empty(), cap_in = in_not.empty();
  const std::string& src_host = eg.host_id();
  const std::string& dst_host = in.host_id();
  const bool one_host = cap_eg && cap_in && src_host == dst_host;
  const uint64_t id = probe_hub_.NewId();
  // What each asked host answered; an error names the host and what failed.
  std::map<std::string, absl::StatusOr<dfw::v1::ProbeReport>> done;
  auto ask = [&](const std::string& host, dfw::v1::ProbeRequest r) -> absl::Status {
    r.set_probe_id(id);
    r.set_timeout_ms(timeout);
    probe_hub_.Expect(id, host);
    return SendProbe(host, std::move(r));
  };
  auto deadline = [&](auto d) { return std::chrono::steady_clock::now() + d; };

  // The receiver's host first: its capture must be armed before the packet
  // can reach it.
  if (cap_in && !one_host) {
    dfw::v1::ProbeRequest r;
    *r.add_captures() = filter_of(in, false);
    absl::Status s = ask(dst_host, std::move(r));
    if (s.ok()) s = probe_hub_.WaitArmed(id, dst_host, deadline(kArmWait)).status();
    if (!s.ok()) done.emplace(dst_host, s);
  }
  const bool send_src = cap_eg || (req.inject() && !one_host) || one_host;
  if (send_src) {
    dfw::v1::ProbeRequest r;
    if (cap_eg) *r.add_captures() = filter_of(eg, true);
    if (one_host) *r.add_captures() = filter_of(in, false);
    if (req.inject()) {
      auto* p = r.mutable_inject();
      p->set_vnic_id(eg.vnic_id());
      p->set_dst_mac(dst_mac);
      p->set_protocol(flow.protocol());
      p->set_src_ip(IpBytes(eg.address()));
      p->set_dst_ip(IpBytes(in.address()));
      p->set_src_port(flow.source_port());
      p->set_dst_port(flow.destination_port());
    }
    if (absl::Status s = ask(src_host, std::move(r)); !s.ok()) done.emplace(src_host, s);
  }
  const auto until = deadline(std::chrono::milliseconds(timeout) + kDoneGrace);
  if (send_src && !done.count(src_host)) {
    done.emplace(src_host, probe_hub_.WaitDone(id, src_host, until));
    // Dropped at the sender: the receiver's capture can only expire.
    const auto& r = done.at(src_host);
    if (cap_in && !one_host && !done.count(dst_host) && r.ok() && r->results_size() > 0 &&
        r->results(0).state() == dfw::v1::CaptureResult::STATE_MET && !r->results(0).forwarded()) {
      dfw::v1::ProbeRequest cancel;
      cancel.set_probe_id(id);
      cancel.set_cancel(true);
      (void)SendProbe(dst_host, std::move(cancel));
    }
  }
  if (cap_in && !one_host && !done.count(dst_host)) {
    done.emplace(dst_host, probe_hub_.WaitDone(id, dst_host, until));
  }
  probe_hub_.Finish(id);

  // The observations, egress then ingress.
  bool any_met = false, all_forwarded = true, all_met = true, incomplete = false;
  dfw::v1::TraceStage::Kind dropped_at = dfw::v1::TraceStage::KIND_UNSPECIFIED;
  for (int k = 0; k < 2; ++k) {
    const bool egress = k == 0;
    const dfw::v1::TraceStage& st = egress ? eg : in;
    auto* o = resp.add_observed();
    o->set_kind(st.kind());
    o->set_host_id(st.host_id());
    o->set_vnic_id(st.vnic_id());
    const std::string& not_captured = egress ? eg_not : in_not;
    if (!not_captured.empty()) {
      o->set_note(not_captured);
      continue;
    }
    o->set_captured(true);
    auto it = done.find(st.host_id());
    if (it == done.end() || !it->second.ok()) {
      o->set_note(it == done.end() ? "no answer" : std::string(it->second.status().message()));
      incomplete = true;
      continue;
    }
    // The host's results are in its request's order: egress first.
    int index = one_host && !egress ? 1 : 0;
    if (index >= it->second->results_size()) {
      o->set_note(Cat("host ", st.host_id(), " returned no result for this capture"));
      incomplete = true;
      continue;
    }
    const dfw::v1::CaptureResult& c = it->second->results(index);
    *o->mutable_capture() = c;
    if (c.state() != dfw::v1::CaptureResult::STATE_MET) {
      all_met = false;
      bool unreached = !egress && dropped_at != dfw::v1::TraceStage::KIND_UNSPECIFIED;
      o->set_note(unreached ? "not reached: dropped at the sender's egress"
                            : Cat("no packet of the flow came within ", timeout, " ms"));
      continue;
    }
    any_met = true;
    all_forwarded = all_forwarded && c.forwarded();
    if (!c.forwarded() && dropped_at == dfw::v1::TraceStage::KIND_UNSPECIFIED) {
      dropped_at = st.kind();
    }
    o->set_note(Cat(c.forwarded() ? "forwarded" : "dropped", " (",
                    dfw::v1::CaptureStage_Name(c.stage()), c.reason().empty() ? "" : ", ",
                    c.reason(), c.rule_num() ? Cat(", rule ", c.rule_num()) : std::string(),
                    c.audit() ? ", audit: would have been denied" : "", ")"));
  }
  if (dropped_at != dfw::v1::TraceStage::KIND_UNSPECIFIED) {
    resp.set_actual("denied");
  } else if (incomplete) {
    resp.set_actual("incomplete");
  } else if (!any_met) {
    resp.set_actual("unobserved");
  } else if (all_met && all_forwarded) {
    resp.set_actual("allowed");
  } else {
    resp.set_actual("lost");  // forwarded by one end, never seen at the other
  }
  resp.set_agrees(expected->allowed()
                      ? resp.actual() == "allowed"
                      : resp.actual() == "denied" && dropped_at == expected->decided_by());
  return resp;
}

}  // namespace dfw::controller
