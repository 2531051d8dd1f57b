// GuestAgent: dfw-vmagent's whole job inside one VM.
//
// What. The agent holds a guest session with the controller (the host
// session protocol, host.proto, as spiffe://<td>/vm/<uuid> with host id
// "guest:<uuid>"): its Hello carries the guest's facts (guest_facts.h), the
// controller streams the VM's compiled rules (a full state, then deltas)
// and the agent acks each revision once nftables enforces it. It also:
//
//  - enforces with one `table inet dfw` (nft_ruleset.h, nft_backend.h): a
//    full state is one transaction; a delta's rule changes are one
//    transaction and its set changes one libnftnl batch; the table stays in
//    the kernel when the agent dies (no owner flag), so enforcement does
//    not depend on the agent running;
//  - revalidates: after a change, conntrack entries admitted by a rule of a
//    revalidating policy (ct mark = rule_num) that the new rules no longer
//    allow are deleted (conntrack.h, ruleset_eval.h); KEEP leaves them;
//  - repairs: the nf_tables monitor (nft_monitor.h) reports changes to our
//    table by another process; the agent then applies it again whole, logs
//    what was found missing and by whom, and counts the repair; a failed
//    apply of any kind (repair, re-render, audit end) is retried every
//    housekeeping tick until the kernel holds the state again;
//  - reports the other tables' base chains on our hooks (their drop wins
//    over our accept), every 10 s and at each repair;
//  - writes flow records (flow_monitor.h) as JSON lines to the flow log, and
//    a status file (JSON: session, revision, counters per rule, drops by
//    reason, repairs, foreign base chains) every second;
//  - --audit-first: for the given time after the first state every drop and
//    reject only logs (lock-out safety while an operator checks the flows);
//    then the same rules enforce, and the connections audit let through
//    are judged again (those the rules deny are cut).
//
// Before the first state arrives the agent changes nothing in the kernel:
// a restarted agent leaves the table of its previous run enforcing.
//
// Thread safety. Start/Stop from one thread. Threads: the session's (apply
// hook), a housekeeping thread (facts, audit timer, repair, status), the
// monitor's and the flow monitor's. One mutex serializes everything that
// touches the kernel table and the desired state.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "dfw/v1/host.pb.h"
#include "dfw/vmagent/guest_facts.h"
#include "dfw/vmagent/nft_ruleset.h"

namespace grpc {
class ChannelCredentials;
}

namespace dfw::hostagent {
class ControllerSession;
}

namespace dfw::vmagent {

class NftBackend;
class NftMonitor;
class FlowMonitor;

struct GuestAgentConfig {
  std::string controller_target;  // host:port, or several comma-separated (HA)
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  FactsOptions facts;
  RenderOptions render;                      // bypass filled by the caller
  std::chrono::milliseconds audit_first{0};  // 0: enforce from the first state
  std::string flow_log;                      // JSON lines; empty: none
  std::string status_file;                   // JSON; empty: none
  std::chrono::milliseconds facts_interval{2000};
  std::chrono::milliseconds status_interval{1000};
  // Strict TCP as the dataplane's default: this long after the first state
  // (and after audit-first) the agent sets nf_conntrack_tcp_loose=0, so a
  // mid-stream segment with no connection is invalid, not a new connection.
  // Not at once: conntrack starts tracking with the first table, and the
  // connections open then (an operator's SSH, the agent's own session) are
  // picked up loosely first. Negative: leave the kernel's setting alone.
  std::chrono::milliseconds strict_tcp_after{30000};
};

struct GuestAgentStatus {
  std::string vm_id;
  bool connected = false;
  uint64_t applied_revision = 0;
  uint64_t repairs = 0;
  std::string last_repair;  // what was wrong, and who changed it
  uint64_t revalidated_deleted = 0;
  bool audit_all = false;
  std::vector<std::string> foreign_base_chains;  // "ip filter input hook input prio 0 policy drop"
  std::string last_error;
};

class GuestAgent {
 public:
  explicit GuestAgent(GuestAgentConfig cfg);
  ~GuestAgent();  // Stop()s
  GuestAgent(const GuestAgent&) = delete;
  GuestAgent& operator=(const GuestAgent&) = delete;

  absl::Status Start();
  void Stop();

  GuestAgentStatus status() const;
  // The status file's JSON (also what Start/housekeeping write).
  std::string StatusJson() const;
  // GET /metrics's text (Prometheus 0.0.4; --metrics-listen): the session,
  // revision, repairs, and the table's counters read now (per rule by
  // policy and rule id, drops by reason). Thread-safe.
  std::string MetricsText() const;

 private:
  absl::StatusOr<uint64_t> Apply(const dfw::v1::ControllerToHost& msg);
  dfw::v1::HostHello Hello();
  void Housekeeping();
  void RefreshFacts();
  void RepairIfNeeded(const std::string& what);
  // Cuts the connections the rules in force deny, of those `before`'s
  // revalidating rules (or, with `all`, any rule) admitted; how many.
  size_t Revalidate(const dfw::v1::HostDesiredState& before, bool all = false);
  // The table's counters now, rule numbers named (read: false when there
  // is no table yet or nftables did not answer). Takes mu_.
  struct RuleHits {
    uint32_t rule_num = 0;
    std::string policy, rule;  // "", "default" for the default rule
    uint64_t packets = 0, bytes = 0;
  };
  struct Counters {
    bool read = false;
    std::vector<RuleHits> rules;
    std::map<std::string, uint64_t> drops;
  };
  Counters ReadCounters() const;
  RenderOptions CurrentRender() const;  // mu_ held
  void WriteStatus();

  GuestAgentConfig cfg_;
  std::string uuid_;

  mutable std::mutex mu_;  // the kernel table, the state, the facts
  std::unique_ptr<NftBackend> backend_;
  bool have_state_ = false;
  dfw::v1::HostDesiredState state_;
  InterfaceMap ifaces_;  // vNIC id -> interface name
  std::vector<GuestInterface> interfaces_;
  dfw::v1::Vm vm_;  // the facts as last reported
  std::chrono::steady_clock::time_point audit_until_{};
  std::chrono::steady_clock::time_point first_state_at_{};
  bool strict_tcp_done_ = false;
  // The kernel may not hold state_ (an apply, repair or re-render failed):
  // housekeeping applies state_ again every tick until it succeeds.
  bool kernel_dirty_ = false;
  bool audit_all_ = false;
  GuestAgentStatus st_;

  std::mutex hk_mu_;  // housekeeping wake-ups
  std::condition_variable hk_cv_;
  bool stop_ = false;
  std::vector<std::string> pending_repairs_;

  std::unique_ptr<NftMonitor> monitor_;
  std::unique_ptr<FlowMonitor> flows_;
  std::unique_ptr<hostagent::ControllerSession> session_;
  std::thread housekeeping_;
};

// Applies a delta to a desired state in memory (the agent's copy; also the
// reference the tests compare the kernel against). FAILED_PRECONDITION when
// the delta does not start at state->revision().
absl::Status ApplyDeltaToState(const dfw::v1::HostDelta& d, dfw::v1::HostDesiredState* state);

}  // namespace dfw::vmagent
