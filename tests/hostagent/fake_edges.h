// Fakes of the host agent's edges (agent_edges.h) for unit tests of
// HostAgent's ordering rules: each records its calls in one CallLog shared
// by all, so a test asserts which call came before which.
//
// Thread safety: CallLog is locked; the fakes' state is for the test's one
// thread (HostAgent driven by Pass(), hooks called by the test), but for
// the flow records (FakeFlows: the relay reads them on its own thread).
#pragma once

#include <atomic>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "dfw/hostagent/agent_edges.h"

namespace dfw::hostagent::testing {

class CallLog {
 public:
  void Add(std::string call) {
    std::lock_guard<std::mutex> l(mu_);
    calls_.push_back(std::move(call));
  }
  std::vector<std::string> calls() const {
    std::lock_guard<std::mutex> l(mu_);
    return calls_;
  }
  // Index of the first call equal to `call` at or after `from`, or -1.
  int Find(const std::string& call, int from = 0) const {
    std::lock_guard<std::mutex> l(mu_);
    for (int i = from; i < static_cast<int>(calls_.size()); ++i)
      if (calls_[i] == call) return i;
    return -1;
  }
  // Index of the first call starting with `prefix` at or after `from`, or -1.
  int FindPrefix(const std::string& prefix, int from = 0) const {
    std::lock_guard<std::mutex> l(mu_);
    for (int i = from; i < static_cast<int>(calls_.size()); ++i)
      if (calls_[i].rfind(prefix, 0) == 0) return i;
    return -1;
  }
  int Count(const std::string& prefix) const {
    int n = 0;
    for (const auto& c : calls()) n += c.rfind(prefix, 0) == 0;
    return n;
  }
  int size() const {
    std::lock_guard<std::mutex> l(mu_);
    return static_cast<int>(calls_.size());
  }
  std::string Dump() const { return absl::StrJoin(calls(), "\n"); }
  // Each of `seq` logged at or after `from`, in this order (each found after
  // the one before it).
  ::testing::AssertionResult InOrder(const std::vector<std::string>& seq, int from = 0) const {
    int at = from - 1;
    for (const auto& c : seq) {
      int i = Find(c, at + 1);
      if (i < 0) {
        return ::testing::AssertionFailure()
               << "'" << c << "' not logged after index " << at << ":\n"
               << Dump();
      }
      at = i;
    }
    return ::testing::AssertionSuccess();
  }

 private:
  mutable std::mutex mu_;
  std::vector<std::string> calls_;
};

// Logs "dp.SetVnic <id>", "dp.RemoveVnic <id>", "dp.SetState <rev>",
// "dp.Export <id>", "dp.Import <id> <n>". GetState is not logged (every pass).
// The dataplane's flow record buffer as LocalApi keeps it: the newest
// `capacity` records with consecutive seqs; reads after a seq (locked).
class FakeFlows {
 public:
  explicit FakeFlows(size_t capacity = 64) : capacity_(capacity) {}
  void SetCapacity(size_t capacity) {
    std::lock_guard<std::mutex> l(mu_);
    capacity_ = capacity;
  }
  // n records for `vnic` (the workers' ring took them).
  void Produce(size_t n, const std::string& vnic = "vnic-1") {
    std::lock_guard<std::mutex> l(mu_);
    for (size_t i = 0; i < n; ++i) {
      v1::FlowRecord r;
      r.set_seq(++last_seq_);
      r.set_vnic_id(vnic);
      held_.push_back(r);
      if (held_.size() > capacity_) held_.pop_front();
    }
  }
  // n records the workers dropped (their ring was full).
  void DropInRing(uint64_t n) {
    std::lock_guard<std::mutex> l(mu_);
    ring_lost_ += n;
  }
  void Restart() {  // a new dataplane process: seqs from 1 again
    std::lock_guard<std::mutex> l(mu_);
    ++instance_;
    held_.clear();
    last_seq_ = 0;
    ring_lost_ = 0;
  }
  v1::FlowRecordsResponse Read(uint64_t after, uint32_t max) {
    std::lock_guard<std::mutex> l(mu_);
    v1::FlowRecordsResponse r;
    r.set_last_seq(last_seq_);
    r.set_ring_lost(ring_lost_);
    r.set_instance_id(instance_);
    for (const auto& f : held_) {
      if (f.seq() > after && r.records_size() < static_cast<int>(max)) *r.add_records() = f;
    }
    return r;
  }

 private:
  size_t capacity_;
  std::mutex mu_;
  std::deque<v1::FlowRecord> held_;
  uint64_t last_seq_ = 0, ring_lost_ = 0, instance_ = 1;
};

class FakeDataplane final : public DataplaneEdge {
 public:
  explicit FakeDataplane(CallLog* log) : log_(log) {}
  bool down = false;
  bool export_fails = false;
  bool refuse_deltas = false;
  uint64_t revision = 0;
  uint64_t instance_id = 1;
  uint32_t firewall_ports = 0;  // GetState's (0: not reported)
  v1::HeldDigests held;         // GetState(true)
  std::map<std::string, v1::DataplaneVNic> vnics;
  std::map<std::string, std::vector<v1::ConnectionEntry>> conns;
  std::map<std::string, std::vector<v1::ConnectionEntry>> imported;
  v1::CountersResponse counters;   // what Counters() answers (not logged)
  std::set<std::string> excluded;  // vNICs of excluded rulesets (from SetState)

  absl::Status SetVnic(const v1::DataplaneVNic& v) override {
    if (down) return absl::UnavailableError("dataplane SetVNic: connection refused");
    log_->Add("dp.SetVnic " + v.id());
    vnics[v.id()] = v;
    return absl::OkStatus();
  }
  absl::Status RemoveVnic(const std::string& id) override {
    if (down) return absl::UnavailableError("dataplane RemoveVNic: connection refused");
    log_->Add("dp.RemoveVnic " + id);
    vnics.erase(id);
    return absl::OkStatus();
  }
  absl::StatusOr<uint64_t> SetState(const v1::SetStateRequest& req) override {
    std::lock_guard<std::mutex> l(state_mu_);  // the session thread, or a test's
    if (down) return absl::UnavailableError("dataplane SetState: connection refused");
    if (refuse_deltas && req.has_delta()) {
      return absl::FailedPreconditionError("delta: an earlier delta failed halfway");
    }
    revision = req.has_full() ? req.full().revision() : req.delta().to_revision();
    if (req.has_full()) excluded.clear();
    for (const auto& rs : req.has_full() ? req.full().rulesets() : req.delta().rulesets_set()) {
      if (rs.excluded()) {
        excluded.insert(rs.vnic_id());
      } else {
        excluded.erase(rs.vnic_id());
      }
    }
    for (const auto& id : req.delta().rulesets_removed()) excluded.erase(id);
    log_->Add(absl::StrCat("dp.SetState ", revision));
    return revision;
  }
  absl::StatusOr<v1::GetStateResponse> GetState(bool with_digests) override {
    std::lock_guard<std::mutex> l(state_mu_);
    if (down) return absl::UnavailableError("dataplane GetState: connection refused");
    v1::GetStateResponse r;
    r.set_applied_revision(revision);
    r.set_instance_id(instance_id);
    r.set_firewall_ports(firewall_ports);
    for (const auto& [id, v] : vnics) *r.add_vnics() = v;
    for (const auto& id : excluded) r.add_excluded_vnics(id);
    if (with_digests) *r.mutable_held() = held;
    return r;
  }
  absl::StatusOr<v1::ExportConnectionsResponse> ExportConnections(const std::string& id) override {
    log_->Add("dp.Export " + id);
    if (down) return absl::UnavailableError("dataplane ExportConnections: connection refused");
    if (export_fails) return absl::InternalError("dataplane ExportConnections: worker busy");
    v1::ExportConnectionsResponse r;
    for (const auto& e : conns[id]) *r.add_entries() = e;
    r.set_total(static_cast<uint32_t>(conns[id].size()));
    return r;
  }
  absl::StatusOr<v1::ImportConnectionsResponse> ImportConnections(
      const v1::ImportConnectionsRequest& req) override {
    log_->Add(absl::StrCat("dp.Import ", req.vnic_id(), " ", req.entries_size()));
    if (down) return absl::UnavailableError("dataplane ImportConnections: connection refused");
    if (!vnics.count(req.vnic_id())) {
      return absl::NotFoundError("dataplane ImportConnections: vnic_id: unknown");
    }
    auto& to = imported[req.vnic_id()];
    to.insert(to.end(), req.entries().begin(), req.entries().end());
    v1::ImportConnectionsResponse r;
    r.set_imported(static_cast<uint32_t>(req.entries_size()));
    return r;
  }
  absl::StatusOr<v1::CountersResponse> Counters(std::chrono::milliseconds) override {
    if (down) return absl::UnavailableError("dataplane Counters: connection refused");
    return counters;
  }
  FakeFlows flows;
  std::atomic<bool> flows_down{false};  // FlowRecords fails (UNAVAILABLE)
  absl::StatusOr<v1::FlowRecordsResponse> FlowRecords(uint64_t after, uint32_t max) override {
    if (flows_down) return absl::UnavailableError("dataplane FlowRecords: connection refused");
    return flows.Read(after, max);
  }
  // Captures: "dp.Arm <vnic> <in|out>", "dp.CaptureResults <ids> [cancel]".
  // A test marks one met with Meet(); cancel marks the armed ones cancelled.
  absl::StatusOr<v1::ArmCaptureResponse> ArmCapture(const v1::ArmCaptureRequest& req) override {
    std::lock_guard<std::mutex> l(capture_mu_);
    const auto& f = req.filter();
    log_->Add(
        absl::StrCat("dp.Arm ", f.vnic_id(), f.direction() == v1::DIRECTION_IN ? " in" : " out"));
    if (!vnics.count(f.vnic_id())) {
      return absl::NotFoundError("filter.vnic_id: '" + f.vnic_id() + "' is not known here");
    }
    uint64_t id = next_capture_++;
    v1::CaptureResult& r = captures_[id];
    r.set_capture_id(id);
    *r.mutable_filter() = f;
    r.set_state(v1::CaptureResult::STATE_ARMED);
    v1::ArmCaptureResponse resp;
    resp.set_capture_id(id);
    return resp;
  }
  absl::StatusOr<v1::CaptureResultsResponse> CaptureResults(
      const v1::CaptureResultsRequest& req) override {
    std::lock_guard<std::mutex> l(capture_mu_);
    log_->Add(absl::StrCat("dp.CaptureResults ", absl::StrJoin(req.capture_ids(), ","),
                           req.cancel() ? " cancel" : ""));
    v1::CaptureResultsResponse resp;
    for (uint64_t id : req.capture_ids()) {
      auto it = captures_.find(id);
      if (it == captures_.end()) continue;
      if (req.cancel() && it->second.state() == v1::CaptureResult::STATE_ARMED) {
        it->second.set_state(v1::CaptureResult::STATE_CANCELLED);
      }
      *resp.add_results() = it->second;
    }
    return resp;
  }
  void Meet(uint64_t capture_id, bool forwarded) {
    std::lock_guard<std::mutex> l(capture_mu_);
    captures_[capture_id].set_state(v1::CaptureResult::STATE_MET);
    captures_[capture_id].set_forwarded(forwarded);
  }
  std::string target() const override { return "fake"; }

 private:
  CallLog* log_;
  std::mutex state_mu_;  // revision, excluded: SetState and GetState on two threads
  std::mutex capture_mu_;
  uint64_t next_capture_ = 1;
  std::map<uint64_t, v1::CaptureResult> captures_;
};

// Logs "ovs.CreateFirewallPort", "ovs.Connect" (a new OpenFlow connection),
// "ovs.NoFlood <ofport>", "ovs.Reconcile steer=<ofports steered, sorted>"
// (or "ovs.Reconcile failed").
class FakeOvs final : public OvsEdge {
 public:
  explicit FakeOvs(CallLog* log) : log_(log) {}
  bool is_synced = true;
  bool fail_next_reconcile = false;  // as after ovs-vswitchd restarted
  std::vector<ovs::OvsInterface> rows;
  std::vector<ovs::FlowSpec> flows;  // as last reconciled

  void Start(std::function<void()>) override {}
  void Stop() override {}
  bool synced() const override { return is_synced; }
  std::vector<ovs::OvsInterface> Snapshot() const override { return rows; }
  absl::Status CreateFirewallPorts() override {
    log_->Add("ovs.CreateFirewallPort");
    return absl::OkStatus();
  }
  absl::Status ConnectOpenFlow() override {
    if (connected_) return absl::OkStatus();
    log_->Add("ovs.Connect");
    connected_ = true;
    epoch_++;
    return absl::OkStatus();
  }
  bool openflow_connected() const override { return connected_; }
  uint64_t openflow_epoch() const override { return epoch_; }
  absl::StatusOr<ovs::ReconcileResult> ReconcileFlows(
      const std::vector<ovs::FlowSpec>& desired) override {
    if (fail_next_reconcile) {
      fail_next_reconcile = false;
      connected_ = false;
      log_->Add("ovs.Reconcile failed");
      return absl::UnavailableError("openflow: connection reset");
    }
    // Table 0 flows "in_port=N actions=mod_vlan_vid:..": N is steered.
    std::set<int> steered;
    static const std::regex kSteer("^in_port=([0-9]+)$");
    for (const auto& f : desired) {
      std::smatch m;
      if (f.table == 0 && f.actions.rfind("mod_vlan_vid", 0) == 0 &&
          std::regex_match(f.match, m, kSteer))
        steered.insert(std::stoi(m[1].str()));
    }
    log_->Add("ovs.Reconcile steer=" + absl::StrJoin(steered, ","));
    ovs::ReconcileResult r;
    r.bundles = desired == flows ? 0 : 1;
    flows = desired;
    return r;
  }
  absl::Status SetPortNoFlood(uint32_t ofport, bool no_flood) override {
    log_->Add(absl::StrCat(no_flood ? "ovs.NoFlood " : "ovs.Flood ", ofport));
    return absl::OkStatus();
  }
  // "ovs.PacketOut <ofport>"; the frame kept in `sent`.
  std::vector<std::vector<uint8_t>> sent;
  absl::Status PacketOut(uint32_t ofport, const std::vector<uint8_t>& frame) override {
    log_->Add(absl::StrCat("ovs.PacketOut ", ofport));
    sent.push_back(frame);
    return absl::OkStatus();
  }

 private:
  CallLog* log_;
  bool connected_ = false;
  uint64_t epoch_ = 0;
};

class FakeLibvirt final : public LibvirtEdge {
 public:
  bool is_synced = true;
  std::vector<Domain> domains;
  LibvirtStats counted;  // what stats() answers
  LibvirtStats stats() const override { return counted; }
  absl::Status Start(std::function<void()>) override { return absl::OkStatus(); }
  void Stop() override {}
  bool synced() const override { return is_synced; }
  std::vector<Domain> Snapshot() const override { return domains; }
};

// Logs "ctl.Start", "ctl.Hello <vm ids>", "ctl.Restart",
// "ctl.Inventory <vm ids>" (when the list changed), and per export chunk
// "ctl.Export <vm> <vnic> <entries>[ last total=<n>]".
class FakeController final : public ControllerEdge {
 public:
  explicit FakeController(CallLog* log) : log_(log) {}
  ControllerSession::Hooks hooks;
  uint64_t acked = 0;
  uint64_t sessions = 0;  // sessions_opened()
  bool is_connected = true;
  std::vector<v1::ConnectionExport> exports;

  void SetHooks(ControllerSession::Hooks h) override { hooks = std::move(h); }
  void Start() override {
    log_->Add("ctl.Start");
    v1::HostHello hello = hooks.hello();
    std::vector<std::string> ids;
    for (const auto& vm : hello.vms()) ids.push_back(vm.id());
    log_->Add("ctl.Hello " + absl::StrJoin(ids, ","));
  }
  void Stop() override {}
  void Restart() override { log_->Add("ctl.Restart"); }
  void SetInventory(std::vector<v1::Vm> vms) override {
    std::vector<std::string> ids;
    for (const auto& vm : vms) ids.push_back(vm.id());
    std::string line = "ctl.Inventory " + absl::StrJoin(ids, ",");
    if (line != last_) log_->Add(line);
    last_ = line;
  }
  void SendConnections(v1::ConnectionExport m) override {
    std::string line =
        absl::StrCat("ctl.Export ", m.vm_id(), " ", m.vnic_id(), " ", m.entries_size());
    if (m.last()) absl::StrAppend(&line, " last total=", m.total());
    log_->Add(line);
    exports.push_back(std::move(m));
  }
  uint64_t last_acked_revision() const override { return acked; }
  bool connected() const override { return is_connected; }
  uint64_t sessions_opened() const override { return sessions; }

  // Flow batches sent (locked: the relay sends from its own thread); while
  // `flows_refused`, SendFlows fails as with no session open.
  std::atomic<bool> flows_refused{false};
  bool SendFlows(const v1::FlowBatch& b) override {
    if (flows_refused) return false;
    std::lock_guard<std::mutex> l(flows_mu_);
    batches_.push_back(b);
    return true;
  }
  std::vector<v1::FlowBatch> batches() {
    std::lock_guard<std::mutex> l(flows_mu_);
    return batches_;
  }

 private:
  CallLog* log_;
  std::string last_;
  std::mutex flows_mu_;
  std::vector<v1::FlowBatch> batches_;
};

// An OVS Interface row ("uuid-<name>").
inline ovs::OvsInterface Row(std::string name, std::string iface_id, std::string mac,
                             int64_t ofport) {
  ovs::OvsInterface r;
  r.uuid = "uuid-" + name;
  r.name = std::move(name);
  r.iface_id = std::move(iface_id);
  r.attached_mac = std::move(mac);
  r.ofport = ofport;
  return r;
}

// One of each fake, logging to `log`: `edges` owns them (give it to a
// HostAgent), the pointers stay valid as long as that agent.
struct FakeEdgeSet {
  explicit FakeEdgeSet(CallLog* log) {
    auto d = std::make_unique<FakeDataplane>(log);
    auto o = std::make_unique<FakeOvs>(log);
    auto l = std::make_unique<FakeLibvirt>();
    auto c = std::make_unique<FakeController>(log);
    dp = d.get();
    ovs = o.get();
    lv = l.get();
    ctl = c.get();
    edges.dataplane = std::move(d);
    edges.ovs = std::move(o);
    edges.libvirt = std::move(l);
    edges.controller = std::move(c);
  }
  FakeDataplane* dp;
  FakeOvs* ovs;
  FakeLibvirt* lv;
  FakeController* ctl;
  HostAgentEdges edges;
};

}  // namespace dfw::hostagent::testing
