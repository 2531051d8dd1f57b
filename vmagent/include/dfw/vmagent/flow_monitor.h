// FlowMonitor: the guest's flow records (allowed, denied, audit, ended), in
// the dataplane's JSON line form, from NFLOG and conntrack events.
//
// What. A reader thread of its own listens to
//  - NFLOG group `nflog_group` (libnetfilter_log): the rules' logged hits,
//    prefix "dfw:<kind>:<rule_num>" (nft_ruleset.h). allow -> "allowed",
//    drop/reject -> "denied" (reason policy-drop / policy-reject, or
//    default-rule for rule 0), audit -> "audit" (action: the rule's, see
//    SetRejectRules; reason none). Addresses, protocol and ports come from
//    the logged packet's IPv4/IPv6 header (IPv6 extension headers skipped;
//    ICMP: sport = type, dport = code, as the dataplane); direction from the
//    hook: an output device means OUT (output hook), else IN (input hook);
//    the vNIC from that device's ifindex through the map SetInterfaces()
//    gives ("" when unknown). packets = 1, bytes = the IP length, as the
//    dataplane's per-packet records. Prefixes not starting "dfw:" (another
//    table's logging on the same group) are ignored and counted.
//  - conntrack events (ctnetlink NEW and DESTROY) of connections whose ct
//    mark is not 0, i.e. admitted by a stateful allow rule (rule = mark):
//    DESTROY -> "ended" with both directions' packets/bytes (0 unless
//    accounting is on, conntrack.h EnableAccounting), and NEW -> "allowed"
//    when `allowed_from_conntrack`.
//
// Where allowed records come from (decided from dataplane/src/pipeline.cc):
// the dataplane records every new allowed connection (record_allowed,
// default on) and, for logged rules, every packet the rule admits (a
// stateless allow classifies every packet). So: a stateful allow's new
// connection is recorded from its conntrack NEW event (the event only comes
// when the connection was confirmed, i.e. really admitted, and carries the
// rule in the mark), whether or not the rule logs; a logged allow's packets
// are recorded from NFLOG. A logged stateful allow would yield both for the
// first packet: the second of the pair (same original tuple within 5 s) is
// suppressed and counted as a duplicate. The kernel's NEW event carries no
// counters, so an allowed record from conntrack says packets 1, bytes 0
// (NFLOG's says the packet's IP length, as the dataplane). Stateless allows that do not log
// produce no allowed record (the guest has nothing to see them by). The
// direction and vNIC of conntrack records are found from the guest's own
// addresses (getifaddrs, refreshed on a miss at most once a second): a
// connection from a local address is OUT on that address's interface, one
// to a local address IN; connections that involve none are not ours and are
// counted as unattributed. Records have the dataplane's keys and value forms
// exactly (they are made by dfw::dataplane::FlowEventJson); time_ms is the
// wall clock at reception.
//
// Timing of ended records: the kernel reports a connection's end when it
// removes the entry; a closed or timed-out entry is removed by conntrack's
// garbage collector, which may run up to about a minute later, or at once
// by any ctnetlink dump (Conntrack::List), which reaps expired entries. An
// agent wanting timely ended records lists the table now and then.
//
// Records go through a bounded queue to a writer thread that calls the
// sink, so a slow sink never stalls the kernel sockets: when the queue is
// full the record is dropped and counted. Socket overruns (ENOBUFS: the
// kernel dropped messages) are counted per socket.
//
// Namespaces: the sockets are opened by the reader thread in `netns_fd` when
// given (setns), else in the namespace of the thread that calls Start().
//
// Thread safety: Start()/Stop() from one owning thread. SetInterfaces() and
// SetRejectRules() may be called from any thread at any time; stats() too.
// The sink is called on the writer thread, one line at a time.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "absl/status/status.h"

namespace dfw::vmagent {

struct FlowMonitorOptions {
  uint16_t nflog_group = 1;
  int netns_fd = -1;                   // >= 0: open the sockets in this network namespace
  bool conntrack_events = true;        // ended records (and allowed, below)
  bool allowed_from_conntrack = true;  // an allowed record per new marked connection
  size_t queue_capacity = 8192;        // records waiting for the sink
  uint32_t copy_range = 256;           // bytes of each logged packet the kernel copies
  int rcvbuf_bytes = 8 << 20;          // per socket (SO_RCVBUFFORCE, then SO_RCVBUF)
};

struct FlowMonitorStats {
  uint64_t records = 0;             // lines handed to the sink
  uint64_t queue_drops = 0;         // records dropped: the queue was full
  uint64_t nflog_overruns = 0;      // ENOBUFS on the NFLOG socket (messages were lost)
  uint64_t conntrack_overruns = 0;  // ENOBUFS on the conntrack event socket
  uint64_t nflog_packets = 0;       // NFLOG messages received
  uint64_t conntrack_events = 0;    // conntrack events received (any mark)
  uint64_t ignored = 0;             // NFLOG messages without a dfw prefix or unparsable
  uint64_t unattributed = 0;        // marked connections with no local address
  uint64_t duplicates = 0;          // allowed records suppressed (NFLOG and conntrack, same flow)
};

class FlowMonitor {
 public:
  using Sink = std::function<void(const std::string& json_line)>;

  FlowMonitor(FlowMonitorOptions options, Sink sink);
  ~FlowMonitor();  // Stop()
  FlowMonitor(const FlowMonitor&) = delete;
  FlowMonitor& operator=(const FlowMonitor&) = delete;

  // Opens the sockets (NFLOG group bound, conntrack groups joined) on the
  // reader thread and returns once they are, or with what failed (e.g. the
  // NFLOG group has another listener in this namespace).
  absl::Status Start();
  // Stops reading, then hands the queued records to the sink and returns.
  void Stop();

  // ifindex -> vNIC id, replacing the previous map.
  void SetInterfaces(std::map<uint32_t, std::string> ifindex_to_vnic);
  // Rules whose action is reject: their audit records say "reject" (the
  // NFLOG prefix only says "audit"); others say "drop".
  void SetRejectRules(std::set<uint32_t> rule_nums);

  FlowMonitorStats stats() const;

  struct Impl;  // the reader thread's state (internal)

 private:
  void Reader(std::function<void(absl::Status)> ready);
  void Writer();
  void Emit(std::string line);

  FlowMonitorOptions options_;
  Sink sink_;
  std::unique_ptr<Impl> impl_;
  std::thread reader_, writer_;
  int stop_fd_ = -1;

  mutable std::mutex map_mu_;
  std::map<uint32_t, std::string> vnics_;
  std::set<uint32_t> reject_rules_;

  std::mutex q_mu_;
  std::condition_variable q_cv_;
  std::deque<std::string> queue_;
  bool writer_stop_ = false;

  std::atomic<uint64_t> records_{0}, queue_drops_{0};
  friend struct Impl;
};

}  // namespace dfw::vmagent
