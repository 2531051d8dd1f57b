// Pipeline: everything the dataplane does to one burst of frames from the
// firewall port, in order:
//
//   parse -> vNIC (steering id; no vNIC or no rules yet: drop, fail closed)
//   -> spoofguard (egress: source MAC and IP are the vNIC's; ARP sender and
//      ND target/link-layer checked; no router advertisements or redirects
//      from VMs) -> ARP and ND pass -> non-first fragments follow their first
//   -> conntrack (established/related pass; invalid drop; ICMP errors need a
//      matching connection) -> new flows: classifier -> rule (audit mode:
//      would-be drops pass and are recorded) -> allow (stateful rules open a
//      connection) | drop | reject (RST / ICMP unreachable built back to the
//      sender) -> counters and flow records.
//
// Established connections admitted under an older ruleset of their vNIC are
// re-checked against the current one when the admitting rule's policy says
// revalidate; if now denied, the connection is removed and the packet dropped.
//
// Thread safety. A Pipeline belongs to one worker thread (its ConnTable,
// FragmentTable and counters are its own). It reads vNIC states from the
// shared VnicTable inside one read-side section per burst. Counters and the
// flow ring may be read by the control thread at any time.
// Per packet: no allocation, lock, exception, virtual call or log line.
#pragma once

#include <cstdint>
#include <memory>

#include "dfw/dataplane/capture.h"
#include "dfw/dataplane/conn_table.h"
#include "dfw/dataplane/counter.h"
#include "dfw/dataplane/drop_reason.h"
#include "dfw/dataplane/flow_records.h"
#include "dfw/dataplane/fragment_table.h"
#include "dfw/dataplane/reject.h"
#include "dfw/dataplane/vnic_table.h"

namespace dfw::dataplane {

struct VnicCounters {
  Counter to_vm_packets, to_vm_bytes;      // ingress, forwarded
  Counter from_vm_packets, from_vm_bytes;  // egress, forwarded
  Counter drops;
};

struct PipelineCounters {
  explicit PipelineCounters(uint32_t max_rule_num)
      : rules(max_rule_num),
        rule_packets(new Counter[max_rule_num]),
        rule_bytes(new Counter[max_rule_num]),
        rule_session_packets(new Counter[max_rule_num]),
        rule_session_bytes(new Counter[max_rule_num]) {}
  Counter drops[static_cast<int>(DropReason::kCount)];
  Counter forwarded, forwarded_bytes, rejects_sent, audited;
  uint32_t rules;
  std::unique_ptr<Counter[]> rule_packets, rule_bytes;  // by rule_num
  // Session totals by rule_num: the packets and bytes (both directions) of
  // the connections the rule admitted, added when each ends (the conntrack's
  // "Session totals"), never per packet.
  std::unique_ptr<Counter[]> rule_session_packets, rule_session_bytes;
  VnicCounters vnics[VnicTable::kSlots];
};

struct PipelineConfig {
  ConnTableConfig conntrack;
  uint32_t fragment_entries = 4096;
  uint32_t fragment_timeout_ms = 5000;
  uint32_t max_rule_num = 1u << 16;  // rule numbers are below this
  uint32_t flow_ring = 1u << 14;
  bool record_allowed = true;  // a flow record for every new allowed connection
  bool record_denied = true;   // ... and for every denied packet
};

struct Verdict {
  bool forward = false;
  DropReason reason = DropReason::kNone;
  uint16_t reply_len = 0;      // > 0: a reject reply was written to replies[i]
  Stage stage = Stage::kNone;  // the stage that decided (capture.h)
};

class Pipeline {
 public:
  Pipeline(VnicTable* vnics, const PipelineConfig& config, uint32_t worker = 0);
  ~Pipeline();

  // Judges frames[0..n). `replies` has room for n replies of kMaxReplyLen
  // bytes; verdict i says whether replies[i] holds one. `now_ms` is a
  // monotonic clock. Reports quiescence to the VnicTable when done.
  void Process(const uint8_t* const* frames, const uint16_t* lens, uint32_t n, uint64_t now_ms,
               Verdict* out, uint8_t (*replies)[kMaxReplyLen]) noexcept;

  // Background work for idle moments: ages connections (`budget` slots).
  void Maintain(uint64_t now_ms, uint32_t budget) noexcept;

  // Where armed captures are offered the frames judged (may be null: none).
  // Set before the first Process.
  void SetCaptures(CaptureTable* captures) { captures_ = captures; }

  PipelineCounters& counters() { return *counters_; }
  FlowRing& flows() { return flows_; }
  ConnTable& conntrack() { return conntrack_; }
  uint32_t worker() const { return worker_; }

 private:
  Verdict One(const ParsedPacket& p, DropReason parse, const ConnTable::Probe& probe,
              const uint8_t* frame, uint32_t len, uint64_t now_ms, uint8_t* reply) noexcept;
  Verdict Judge(const ParsedPacket& p, const ConnTable::Probe& probe, const uint8_t* frame,
                uint32_t len, uint64_t now_ms, uint8_t* reply) noexcept;
  void Record(FlowEvent::Kind kind, const ParsedPacket& p, uint32_t rule_num, Action a,
              DropReason r, uint64_t now_ms) noexcept;
  DropReason Spoofguard(const VnicState& v, const ParsedPacket& p) const noexcept;
  // Cold: a frame judged while a capture is armed.
  void OfferCapture(const ParsedPacket& p, const Verdict& v, uint32_t len,
                    uint64_t now_ms) noexcept;

  VnicTable* vnics_;
  PipelineConfig config_;
  uint32_t worker_;
  ConnTable conntrack_;
  FragmentTable fragments_;
  FlowRing flows_;
  std::unique_ptr<PipelineCounters> counters_;
  CaptureTable* captures_ = nullptr;
};

// The classifier's key for a parsed packet (or its reverse, for the orig
// direction of a reply).
FlowKey KeyOf(const ParsedPacket& p, bool reverse = false) noexcept;

}  // namespace dfw::dataplane
