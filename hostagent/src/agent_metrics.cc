#include "dfw/hostagent/agent_metrics.h"

#include <map>

#include "dfw/hostagent/dataplane_client.h"
#include "dfw/hostagent/host_agent.h"
#include "dfw/trust/peer.h"
#include "dfw/trust/svid.h"

namespace dfw::hostagent {

const char* DataplaneCallMetrics::MethodName(Method m) {
  switch (m) {
    case kSetVnic:
      return "SetVNic";
    case kRemoveVnic:
      return "RemoveVNic";
    case kSetState:
      return "SetState";
    case kGetState:
      return "GetState";
    case kExportConnections:
      return "ExportConnections";
    case kImportConnections:
      return "ImportConnections";
    case kCounters:
      return "Counters";
    case kFlowRecords:
      return "FlowRecords";
    case kArmCapture:
      return "ArmCapture";
    case kCaptureResults:
      return "CaptureResults";
    case kMethodCount:
      break;
  }
  return "other";
}

const char* DataplaneCallMetrics::ResultName(Result r) {
  switch (r) {
    case kOk:
      return "ok";
    case kUnreachable:
      return "unreachable";
    case kError:
    case kResultCount:
      break;
  }
  return "error";
}

DataplaneCallMetrics::DataplaneCallMetrics() {
  for (auto& h : latency_) h = std::make_unique<metrics::Histogram>(metrics::LatencyBuckets());
}

void DataplaneCallMetrics::Record(Method m, const absl::Status& s, double seconds) {
  const Result r = s.ok() ? kOk : IsUnreachable(s) ? kUnreachable : kError;
  calls_[m][r].fetch_add(1, std::memory_order_relaxed);
  latency_[m]->Observe(seconds);
}

const char* HostAgentMetrics::ApplyErrorName(ApplyError e) {
  switch (e) {
    case kApplyUnreachable:
      return "unreachable";
    case kApplyRefused:
      return "refused";
    case kApplyInvalid:
    case kApplyErrorCount:
      break;
  }
  return "invalid";
}

namespace {

using Method = DataplaneCallMetrics::Method;

class MeteredDataplane final : public DataplaneEdge {
 public:
  MeteredDataplane(std::unique_ptr<DataplaneEdge> inner, DataplaneCallMetrics* m)
      : inner_(std::move(inner)), m_(m) {}

  std::string target() const override { return inner_->target(); }

 private:
  // (Before the methods that use it: its return type is deduced.)
  static const absl::Status& StatusOf(const absl::Status& s) { return s; }
  template <typename T>
  static const absl::Status& StatusOf(const absl::StatusOr<T>& s) {
    return s.status();
  }
  template <typename F>
  auto Timed(Method m, F&& call) {
    const auto t0 = std::chrono::steady_clock::now();
    auto r = call();
    m_->Record(m, StatusOf(r),
               std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    return r;
  }

 public:
  absl::Status SetVnic(const v1::DataplaneVNic& vnic) override {
    return Timed(DataplaneCallMetrics::kSetVnic, [&] { return inner_->SetVnic(vnic); });
  }
  absl::Status RemoveVnic(const std::string& id) override {
    return Timed(DataplaneCallMetrics::kRemoveVnic, [&] { return inner_->RemoveVnic(id); });
  }
  absl::StatusOr<uint64_t> SetState(const v1::SetStateRequest& req) override {
    return Timed(DataplaneCallMetrics::kSetState, [&] { return inner_->SetState(req); });
  }
  absl::StatusOr<v1::GetStateResponse> GetState(bool digests) override {
    return Timed(DataplaneCallMetrics::kGetState, [&] { return inner_->GetState(digests); });
  }
  absl::StatusOr<v1::ExportConnectionsResponse> ExportConnections(
      const std::string& vnic_id) override {
    return Timed(DataplaneCallMetrics::kExportConnections,
                 [&] { return inner_->ExportConnections(vnic_id); });
  }
  absl::StatusOr<v1::ImportConnectionsResponse> ImportConnections(
      const v1::ImportConnectionsRequest& req) override {
    return Timed(DataplaneCallMetrics::kImportConnections,
                 [&] { return inner_->ImportConnections(req); });
  }
  absl::StatusOr<v1::CountersResponse> Counters(std::chrono::milliseconds deadline) override {
    return Timed(DataplaneCallMetrics::kCounters, [&] { return inner_->Counters(deadline); });
  }
  absl::StatusOr<v1::FlowRecordsResponse> FlowRecords(uint64_t after_seq, uint32_t max) override {
    return Timed(DataplaneCallMetrics::kFlowRecords,
                 [&] { return inner_->FlowRecords(after_seq, max); });
  }
  absl::StatusOr<v1::ArmCaptureResponse> ArmCapture(const v1::ArmCaptureRequest& req) override {
    return Timed(DataplaneCallMetrics::kArmCapture, [&] { return inner_->ArmCapture(req); });
  }
  absl::StatusOr<v1::CaptureResultsResponse> CaptureResults(
      const v1::CaptureResultsRequest& req) override {
    return Timed(DataplaneCallMetrics::kCaptureResults,
                 [&] { return inner_->CaptureResults(req); });
  }

 private:
  std::unique_ptr<DataplaneEdge> inner_;
  DataplaneCallMetrics* m_;
};

double D(uint64_t v) { return static_cast<double>(v); }

}  // namespace

std::unique_ptr<DataplaneEdge> MeterDataplane(std::unique_ptr<DataplaneEdge> inner,
                                              DataplaneCallMetrics* m) {
  return std::make_unique<MeteredDataplane>(std::move(inner), m);
}

std::string RenderAgentMetrics(const AgentScrape& s, bool per_vnic) {
  const HostAgentMetrics& a = s.agent;
  metrics::Exposition e;
  auto gauge = [&e](const char* name, const char* help, double v) {
    e.Family(name, "gauge", help);
    e.Sample(name, {}, v);
  };
  auto counter = [&e](const char* name, const char* help, double v) {
    e.Family(name, "counter", help);
    e.Sample(name, {}, v);
  };

  // ---- the controller session
  gauge("dfw_hostagent_controller_connected",
        "1 while the session with the controller is open (its Hello sent), else 0 (also when no "
        "controller is configured).",
        a.controller_connected ? 1 : 0);
  counter("dfw_hostagent_controller_reconnects_total",
          "Sessions with the controller opened after the first one.",
          D(a.sessions_opened > 0 ? a.sessions_opened - 1 : 0));
  gauge("dfw_hostagent_flow_watch",
        "1 while the controller asks for flow records (someone observes), else 0.",
        a.flow_watch ? 1 : 0);
  counter("dfw_hostagent_flow_records_sent_total",
          "Flow records relayed to the controller while it observed.", D(a.flow_records_sent));
  counter("dfw_hostagent_flow_records_lost_total",
          "Flow records lost on the way to the controller while it observed (the dataplane's "
          "ring full, gone from its buffer before read, no session).",
          D(a.flow_records_lost));
  gauge("dfw_hostagent_realized_revision",
        "The last revision acked to the controller (enforced by the dataplane).",
        D(a.realized_revision));
  gauge("dfw_hostagent_wanted_revision",
        "The last revision the controller sent (a full state or a delta's target).",
        D(a.wanted_revision));
  e.Family("dfw_hostagent_apply_errors_total", "counter",
           "Full states and deltas from the controller that did not apply, by reason: the "
           "dataplane unreachable, refused by it, or an invalid message.");
  for (int i = 0; i < HostAgentMetrics::kApplyErrorCount; ++i) {
    auto r = static_cast<HostAgentMetrics::ApplyError>(i);
    e.Sample("dfw_hostagent_apply_errors_total", {{"reason", HostAgentMetrics::ApplyErrorName(r)}},
             D(a.apply_errors[i]));
  }

  // ---- vNICs and VMs (the last view)
  e.Family("dfw_hostagent_vnics", "gauge",
           "vNICs in the last view by state: steered (through the dataplane), excluded (on the "
           "exclusion list: past the dataplane, OVS port security only), waiting (the "
           "firewall port has no ofport yet), isolated (cannot be steered: OVS drops what it "
           "sends), not_on_bridge (a libvirt interface not on the bridge).");
  e.Sample("dfw_hostagent_vnics", {{"state", "steered"}}, D(a.vnics_steered));
  e.Sample("dfw_hostagent_vnics", {{"state", "excluded"}}, D(a.vnics_excluded));
  e.Sample("dfw_hostagent_vnics", {{"state", "waiting"}}, D(a.vnics_waiting));
  e.Sample("dfw_hostagent_vnics", {{"state", "isolated"}}, D(a.vnics_isolated));
  e.Sample("dfw_hostagent_vnics", {{"state", "not_on_bridge"}}, D(a.vnics_not_on_bridge));
  gauge("dfw_hostagent_vms", "VMs reported to the controller (the last view).", D(a.vms));
  gauge("dfw_hostagent_host_view_errors",
        "Ports the last view could not join or steer (each logged).", D(a.view_errors));
  counter("dfw_hostagent_reconcile_passes_total", "Reconcile passes.", D(a.reconcile_passes));
  counter("dfw_hostagent_flow_bundles_total", "OpenFlow bundles sent to change the steering flows.",
          D(a.flow_bundles));
  e.Family("dfw_hostagent_connection_exports_total", "counter",
           "vNICs whose connections were exported to the controller as their VM left, by "
           "result.");
  e.Sample("dfw_hostagent_connection_exports_total", {{"result", "ok"}}, D(a.migration.exports));
  e.Sample("dfw_hostagent_connection_exports_total", {{"result", "error"}},
           D(a.migration.export_failures));
  e.Family("dfw_hostagent_connection_entries_total", "counter",
           "Connections moved with VMs: exported, imported (taken by the dataplane), rejected "
           "(refused, failed or over a bound), expired (their vNIC did not come).");
  e.Sample("dfw_hostagent_connection_entries_total", {{"op", "exported"}},
           D(a.migration.entries_exported));
  e.Sample("dfw_hostagent_connection_entries_total", {{"op", "imported"}},
           D(a.migration.entries_imported));
  e.Sample("dfw_hostagent_connection_entries_total", {{"op", "rejected"}},
           D(a.migration.entries_rejected));
  e.Sample("dfw_hostagent_connection_entries_total", {{"op", "expired"}},
           D(a.migration.entries_expired));

  // ---- libvirt
  if (a.libvirt) {
    e.Family("dfw_hostagent_libvirt_refreshes_total", "counter",
             "libvirt inventory reads: every active domain of a URI (full), one domain after an "
             "event (domain).");
    e.Sample("dfw_hostagent_libvirt_refreshes_total", {{"kind", "full"}},
             D(a.libvirt_stats.full_reads));
    e.Sample("dfw_hostagent_libvirt_refreshes_total", {{"kind", "domain"}},
             D(a.libvirt_stats.domain_reads));
    e.Family("dfw_hostagent_libvirt_errors_total", "counter",
             "libvirt failures: a URI not opened or registered (connect), a list or a domain not "
             "read or parsed (read), a connection that died (lost).");
    e.Sample("dfw_hostagent_libvirt_errors_total", {{"kind", "connect"}},
             D(a.libvirt_stats.connect_errors));
    e.Sample("dfw_hostagent_libvirt_errors_total", {{"kind", "read"}},
             D(a.libvirt_stats.read_errors));
    e.Sample("dfw_hostagent_libvirt_errors_total", {{"kind", "lost"}},
             D(a.libvirt_stats.connections_lost));
  }

  // ---- the dataplane's local API, as the agent calls it
  if (a.dataplane_calls) {
    const DataplaneCallMetrics& c = *a.dataplane_calls;
    e.Family("dfw_hostagent_dataplane_calls_total", "counter",
             "Calls of the dataplane's local API by method and result (ok, unreachable, error).");
    for (int m = 0; m < DataplaneCallMetrics::kMethodCount; ++m) {
      for (int r = 0; r < DataplaneCallMetrics::kResultCount; ++r) {
        auto mm = static_cast<DataplaneCallMetrics::Method>(m);
        auto rr = static_cast<DataplaneCallMetrics::Result>(r);
        e.Sample("dfw_hostagent_dataplane_calls_total",
                 {{"method", DataplaneCallMetrics::MethodName(mm)},
                  {"result", DataplaneCallMetrics::ResultName(rr)}},
                 D(c.calls(mm, rr)));
      }
    }
    e.Family("dfw_hostagent_dataplane_call_duration_seconds", "histogram",
             "One call of the dataplane's local API, by method (every result).");
    for (int m = 0; m < DataplaneCallMetrics::kMethodCount; ++m) {
      auto mm = static_cast<DataplaneCallMetrics::Method>(m);
      e.Histogram("dfw_hostagent_dataplane_call_duration_seconds",
                  {{"method", DataplaneCallMetrics::MethodName(mm)}}, c.latency(mm));
    }
  }

  // ---- the agent's identity
  if (s.svid_not_after) {
    gauge("dfw_hostagent_svid_expiry_timestamp_seconds",
          "When the agent's SVID expires (Unix time; it renews at half-life).", *s.svid_not_after);
  }

  // ---- the dataplane's own counters, read for this scrape (none if down)
  gauge("dfw_dataplane_up",
        "1 when the dataplane answered this scrape's Counters call, else 0 (and no dfw_dataplane_ "
        "value is shown).",
        s.dataplane.ok() ? 1 : 0);
  if (!s.dataplane.ok()) return e.text();
  const v1::CountersResponse& d = *s.dataplane;
  gauge("dfw_dataplane_applied_revision", "The revision the dataplane enforces.",
        D(d.applied_revision()));
  e.Family("dfw_dataplane_drops_total", "counter",
           "Packets the dataplane dropped, by reason (a reason appears once it counted one).");
  std::map<std::string, uint64_t> drops;  // sorted, each reason once
  for (const auto& dc : d.drops()) drops[dc.reason()] += dc.packets();
  for (const auto& [reason, n] : drops)
    e.Sample("dfw_dataplane_drops_total", {{"reason", reason}}, D(n));
  // Per rule, by policy and rule id: what the host enforces bounds it (the
  // rules of the policies applied here), and "is this rule hit?" is the
  // operator's question. A hit is a new connection (or a stateless packet)
  // the rule decided, audited ones included; its session totals are the
  // packets and bytes of the connections it admitted, added when each ends.
  // A rule appears once hit or once such a connection ended. Rule numbers
  // naming one policy rule (it is on several vNICs) add up.
  metrics::RuleHits rules;
  for (const auto& rc : d.rules()) {
    rules.Add(rc.policy_id(), rc.rule_id(), rc.packets(), rc.bytes());
    rules.AddSessions(rc.policy_id(), rc.rule_id(), rc.session_packets(), rc.session_bytes());
  }
  rules.Write(e, "dfw_dataplane_",
              "New connections (and stateless packets) a rule decided, by policy and rule id.",
              true);
  uint64_t rx_p = 0, rx_b = 0, tx_p = 0, tx_b = 0, conns = 0;
  for (const auto& v : d.vnics()) {
    rx_p += v.rx_packets();
    rx_b += v.rx_bytes();
    tx_p += v.tx_packets();
    tx_b += v.tx_bytes();
    conns += v.connections();
  }
  e.Family("dfw_dataplane_packets_total", "counter",
           "Packets of the vNICs the dataplane holds, summed: sent by the VMs (from_vm) and "
           "delivered to them (to_vm).");
  e.Sample("dfw_dataplane_packets_total", {{"direction", "from_vm"}}, D(tx_p));
  e.Sample("dfw_dataplane_packets_total", {{"direction", "to_vm"}}, D(rx_p));
  e.Family("dfw_dataplane_bytes_total", "counter",
           "Bytes of the vNICs the dataplane holds, summed, by direction.");
  e.Sample("dfw_dataplane_bytes_total", {{"direction", "from_vm"}}, D(tx_b));
  e.Sample("dfw_dataplane_bytes_total", {{"direction", "to_vm"}}, D(rx_b));
  gauge("dfw_dataplane_connections", "Tracked connections, summed over the vNICs.", D(conns));
  gauge("dfw_dataplane_vnics", "vNICs the dataplane holds.", D(d.vnics_size()));
  counter("dfw_dataplane_api_refused_connections_total",
          "Connections to the local API socket refused by peer uid.",
          D(d.api_refused_connections()));
  if (!per_vnic) return e.text();
  // One series per vNIC per family (--metrics-per-vnic): by direction when
  // `to_vm` is given.
  using Get = uint64_t (v1::VNicStats::*)() const;
  auto per_vnic_family = [&](const char* name, const char* type, const char* help, Get from_vm,
                             Get to_vm) {
    e.Family(name, type, help);
    for (const auto& v : d.vnics()) {
      if (!to_vm) {
        e.Sample(name, {{"vnic", v.vnic_id()}}, D((v.*from_vm)()));
        continue;
      }
      e.Sample(name, {{"vnic", v.vnic_id()}, {"direction", "from_vm"}}, D((v.*from_vm)()));
      e.Sample(name, {{"vnic", v.vnic_id()}, {"direction", "to_vm"}}, D((v.*to_vm)()));
    }
  };
  per_vnic_family("dfw_dataplane_vnic_packets_total", "counter",
                  "Packets of one vNIC by direction (per vNIC: --metrics-per-vnic).",
                  &v1::VNicStats::tx_packets, &v1::VNicStats::rx_packets);
  per_vnic_family("dfw_dataplane_vnic_bytes_total", "counter",
                  "Bytes of one vNIC by direction (per vNIC: --metrics-per-vnic).",
                  &v1::VNicStats::tx_bytes, &v1::VNicStats::rx_bytes);
  per_vnic_family("dfw_dataplane_vnic_drops_total", "counter",
                  "Packets of one vNIC dropped (per vNIC: --metrics-per-vnic).",
                  &v1::VNicStats::drops, nullptr);
  per_vnic_family("dfw_dataplane_vnic_connections", "gauge",
                  "Tracked connections of one vNIC (per vNIC: --metrics-per-vnic).",
                  &v1::VNicStats::connections, nullptr);
  return e.text();
}

std::string ScrapeAgent(HostAgent& agent, const AgentMetricsOptions& o) {
  AgentScrape s;
  s.agent = agent.Metrics();
  s.dataplane = agent.DataplaneCounters(o.dataplane_deadline);
  if (!o.svid_dir.empty()) {
    auto svid = trust::ReadSvid(o.svid_dir);
    if (svid.ok()) {
      auto na = trust::NotAfter(svid->cert_pem);
      if (na.ok()) {
        s.svid_not_after = std::chrono::duration<double>(na->time_since_epoch()).count();
      }
    }
  }
  return RenderAgentMetrics(s, o.per_vnic);
}

}  // namespace dfw::hostagent
