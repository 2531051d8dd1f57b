// OpenFlowBridge: an OpenFlow 1.3 connection to one OVS bridge that installs
// a flow set atomically and reconciles it with what the bridge holds.
//
// What. The host agent owns a set of flows on the bridge (the steering flows,
// steering_flows.h), identified by a cookie prefix. Reconcile(desired) makes
// the bridge's flows with that cookie prefix equal to `desired`:
//   1. dump the flows whose cookie & mask == prefix (OFPMP_FLOW, all tables);
//   2. compare them with `desired`, both in the canonical form OVS itself
//      prints after an OpenFlow 1.3 round trip (so `mod_vlan_vid` and
//      `push_vlan,set_field` compare equal), keyed by table + priority + match;
//      the canonical forms of the previous call's flows are kept and reused
//      for the same flow text;
//   3. send one bundle (OFPBCT_OPEN, OFPT_BUNDLE_ADD per flow mod, barrier,
//      OFPBCT_COMMIT, flags ATOMIC|ORDERED) with: an add for each missing
//      flow, an add (which replaces) for each flow whose actions or cookie
//      differ, a strict delete (cookie matched exactly) for each stale one.
// Correct flows are not touched (their counters survive); flows of other
// cookies are never deleted. OVS applies a bundle all-or-nothing and packets
// see either the old or the new table, so a restart of the caller, which
// simply reconciles again, leaves no moment without steering. Nothing is sent
// when nothing differs.
//
// A flow of another owner with exactly our table, priority and match is
// replaced by ours (OpenFlow add semantics): the steering wins.
//
// Thread safety. One OpenFlowBridge is used by one thread at a time. Several
// objects (connections) may be used concurrently; the caller must be the only
// writer of its cookie prefix (dump-then-bundle is not a transaction).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "dfw/ovs/steering_flows.h"

struct dfw_of;

namespace dfw::ovs {

// A flow as the switch reports it (canonical form).
struct InstalledFlow {
  uint64_t cookie = 0;
  std::string key;      // "table=T,priority=P[,match]"
  std::string actions;  // e.g. "push_vlan:0x8100,set_field:4103->vlan_vid,output:1"
  bool operator==(const InstalledFlow&) const = default;
};

struct ReconcileResult {
  size_t kept = 0;      // already correct, untouched
  size_t added = 0;     // missing, added
  size_t modified = 0;  // same key, other actions or cookie: replaced
  size_t deleted = 0;   // ours but not desired: deleted
  size_t bundles = 0;   // bundles committed (0 if nothing differed, else 1)
};

enum class FlowModKind { kAdd, kDeleteStrict };
struct FlowMod {
  FlowModKind kind = FlowModKind::kAdd;
  std::string flow;  // ovs-ofctl syntax
};

// The canonical form of `flow` (see above); InvalidArgument if OVS cannot
// parse it or OpenFlow 1.3 cannot carry it.
absl::StatusOr<InstalledFlow> CanonicalFlow(const FlowSpec& flow);

class OpenFlowBridge {
 public:
  // `target`: the bridge's OpenFlow management socket, e.g.
  // "unix:/run/openvswitch/br0.mgmt".
  static absl::StatusOr<std::unique_ptr<OpenFlowBridge>> Connect(
      const std::string& target, std::chrono::milliseconds timeout = std::chrono::seconds(5));
  ~OpenFlowBridge();
  OpenFlowBridge(const OpenFlowBridge&) = delete;
  OpenFlowBridge& operator=(const OpenFlowBridge&) = delete;

  // Flows of all tables whose cookie & mask == cookie & mask.
  absl::StatusOr<std::vector<InstalledFlow>> DumpFlows(uint64_t cookie = kSteeringCookieBase,
                                                       uint64_t mask = kSteeringCookieMask);

  // All mods in one atomic, ordered bundle; nothing applied on error.
  absl::Status ApplyBundle(const std::vector<FlowMod>& mods);

  // See the header comment. Every desired flow's cookie must carry the
  // prefix (InvalidArgument otherwise: we could never see it again).
  absl::StatusOr<ReconcileResult> Reconcile(const std::vector<FlowSpec>& desired,
                                            uint64_t cookie = kSteeringCookieBase,
                                            uint64_t mask = kSteeringCookieMask);

  // Injects `frame` (a whole Ethernet frame, e.g. BuildProbeFrame()'s,
  // probe_frame.h) into the bridge as if it had arrived on port `in_port`:
  // an OpenFlow packet-out (no buffer, in_port, actions=output:TABLE), so
  // the frame crosses the flow table from table 0 (the steering flows, and
  // through them the firewall) exactly as a frame the VM behind that port
  // sent would; in particular flows matching in_port=<in_port> apply to it
  // and their counters count it. A barrier follows and its reply is awaited:
  // OK means the switch accepted and processed the packet-out (not that the
  // frame was delivered anywhere; the flows decide that).
  // Errors: InvalidArgument for a frame shorter than an Ethernet header or
  // too long for one OpenFlow message, or an in_port that is no port number
  // (0, reserved numbers other than LOCAL 0xfffffffe); NotFound when the
  // bridge has no port `in_port` (checked first, with a port-description
  // request: OVS would accept it and run the frame as from a port that does
  // not exist); Aborted with the switch's error text when the switch refuses
  // the packet-out; Unavailable when the connection fails. Thread safety as
  // the class's: one thread at a time per OpenFlowBridge.
  absl::Status PacketOut(uint32_t in_port, const std::vector<uint8_t>& frame);

  // Bundles committed through this connection so far.
  uint64_t bundles_committed() const { return bundles_committed_; }

 private:
  explicit OpenFlowBridge(dfw_of* of) : of_(of) {}
  dfw_of* of_;
  uint64_t bundles_committed_ = 0;
  // FlowSpec::ToString() -> CanonicalFlow() of the last Reconcile's flows.
  std::unordered_map<std::string, InstalledFlow> canonical_;
};

// Sets (or clears) `no-flood` on port `ofport` of the bridge at `target`, as
// `ovs-ofctl mod-port <br> <port> no-flood` does: NORMAL then never floods to
// it. The firewall port and every vNIC port need it (steering_flows.h:
// NORMAL must never deliver to them unfirewalled). OpenFlow 1.3
// has no such port flag, so this opens its own OpenFlow 1.0 connection: the
// bridge's `protocols` must include OpenFlow10. OVS keeps the flag only in
// ovs-vswitchd's memory: apply it again whenever the port (re)appears or
// ovs-vswitchd restarts (it is idempotent). Any thread.
absl::Status SetPortNoFlood(const std::string& target, uint32_t ofport, bool no_flood = true,
                            std::chrono::milliseconds timeout = std::chrono::seconds(5));

}  // namespace dfw::ovs
