// The host agent's GET /metrics (--metrics-listen; docs/architecture.md,
// "Metrics"): what the agent counts where the work happens, and the text a
// scrape returns.
//
// What. DataplaneCallMetrics counts every call of the dataplane's local API
// by method and result (ok, unreachable, error) with its latency;
// MeterDataplane() wraps a DataplaneEdge so that every call is counted
// (HostAgent wraps the edge it is given). Everything else is read when
// scraped: HostAgent::Metrics() (session, revisions, vNICs, libvirt,
// reconcile and migration counters: atomics and one copy of the last view's
// sizes), the dataplane's counters through DataplaneEdge::Counters (one call
// with a deadline; if it fails, dfw_dataplane_up is 0 and no dataplane
// value is shown, never a stale one) and the SVID's expiry (its file).
// RenderAgentMetrics turns that into the Prometheus text format with
// dfw::metrics' writer: families dfw_hostagent_* and dfw_dataplane_*, each
// with HELP and TYPE, units in the names, counters in _total, labels of
// bounded values only; per-vNIC series (label vnic) only when asked for
// (--metrics-per-vnic: one series per vNIC per family).
//
// Cost. A dataplane call adds two relaxed atomic increments and a histogram
// observation (control path: vNIC changes, states, probes; nothing per
// packet). A scrape takes the agent's view lock once to count, makes one
// Counters call and reads one file.
//
// Thread safety. DataplaneCallMetrics: Record and the reads from any
// thread. The metered edge: as the edge it wraps. RenderAgentMetrics: pure.
// ScrapeAgent: from any thread (HostAgent::Metrics and the edge are
// thread-safe).
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "dfw/base/metrics.h"
#include "dfw/hostagent/agent_edges.h"
#include "dfw/v1/dataplane.pb.h"

namespace dfw::hostagent {

class HostAgent;

class DataplaneCallMetrics {
 public:
  // The local API's methods the agent calls (label method: their gRPC names).
  enum Method {
    kSetVnic,
    kRemoveVnic,
    kSetState,
    kGetState,
    kExportConnections,
    kImportConnections,
    kCounters,
    kFlowRecords,
    kArmCapture,
    kCaptureResults,
    kMethodCount
  };
  // ok; unreachable (UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED: not there);
  // error (the dataplane refused, or any other failure).
  enum Result { kOk, kUnreachable, kError, kResultCount };
  static const char* MethodName(Method m);
  static const char* ResultName(Result r);

  DataplaneCallMetrics();
  void Record(Method m, const absl::Status& s, double seconds);
  uint64_t calls(Method m, Result r) const { return calls_[m][r].load(std::memory_order_relaxed); }
  metrics::Histogram::Snapshot latency(Method m) const { return latency_[m]->Read(); }

 private:
  std::array<std::array<std::atomic<uint64_t>, kResultCount>, kMethodCount> calls_{};
  std::array<std::unique_ptr<metrics::Histogram>, kMethodCount> latency_;
};

// `inner` with every call counted and timed in `m` (which must outlive it).
std::unique_ptr<DataplaneEdge> MeterDataplane(std::unique_ptr<DataplaneEdge> inner,
                                              DataplaneCallMetrics* m);

// Connections moved with VMs (status lines, tests).
struct MigrationStats {
  uint64_t exports = 0;          // vNIC exports sent to the controller
  uint64_t export_failures = 0;  // ExportConnections failed: removal went on
  uint64_t entries_exported = 0;
  uint64_t entries_imported = 0;  // taken by the dataplane
  uint64_t entries_rejected = 0;  // refused by the dataplane, its call failed, or over a bound
  uint64_t entries_expired = 0;   // kept for a vNIC that did not come within import_ttl
};

// What HostAgent::Metrics() reads (a copy; any thread).
struct HostAgentMetrics {
  bool controller = false;  // a controller is configured
  bool controller_connected = false;
  uint64_t sessions_opened = 0;    // Hello sent; each after the first is a reconnect
  uint64_t realized_revision = 0;  // the last revision acked (enforced by the dataplane)
  uint64_t wanted_revision = 0;    // the last revision the controller sent
  // Full states and deltas that did not apply, by reason.
  enum ApplyError { kApplyUnreachable, kApplyRefused, kApplyInvalid, kApplyErrorCount };
  static const char* ApplyErrorName(ApplyError e);  // "unreachable", "refused", "invalid"
  std::array<uint64_t, kApplyErrorCount> apply_errors{};
  // From the last view: vNICs on the bridge steered through the dataplane,
  // waiting (on the bridge, the firewall port has no ofport yet), isolated
  // (a VM port that cannot be steered: OVS drops what it sends), and libvirt
  // interfaces not on the bridge (nothing to enforce there); excluded: on
  // the exclusion list, steered past the dataplane (not in `steered`).
  uint64_t vnics_steered = 0, vnics_waiting = 0, vnics_isolated = 0, vnics_not_on_bridge = 0;
  uint64_t vnics_excluded = 0;
  uint64_t vms = 0, view_errors = 0;
  uint64_t reconcile_passes = 0, flow_bundles = 0;
  MigrationStats migration;
  // The flow relay (dfwctl observe): on while the controller observes;
  // records sent, and records counted lost (dataplane ring full, read too
  // late, no session).
  bool flow_watch = false;
  uint64_t flow_records_sent = 0, flow_records_lost = 0;
  bool libvirt = false;  // a libvirt URI is configured
  LibvirtStats libvirt_stats;
  const DataplaneCallMetrics* dataplane_calls = nullptr;  // the agent's (outlives the copy)
};

struct AgentScrape {
  HostAgentMetrics agent;
  // The dataplane's counters, or why they could not be read.
  absl::StatusOr<v1::CountersResponse> dataplane = absl::UnavailableError("not read");
  // The agent's SVID's notAfter (Unix seconds); none: no SVID dir, or unreadable.
  std::optional<double> svid_not_after;
};

struct AgentMetricsOptions {
  bool per_vnic = false;  // --metrics-per-vnic
  std::string svid_dir;   // the agent's SVID (its expiry); empty: none
  std::chrono::milliseconds dataplane_deadline{1000};
};

// The exposition text of `s` (dfw::metrics::kContentType).
std::string RenderAgentMetrics(const AgentScrape& s, bool per_vnic);
// Reads everything a scrape shows (the agent's counters, the dataplane's
// counters with the deadline, the SVID's expiry) and renders it.
std::string ScrapeAgent(HostAgent& agent, const AgentMetricsOptions& o);

}  // namespace dfw::hostagent
