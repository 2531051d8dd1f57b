// The guest kernel's connection tracking table, read and pruned through
// ctnetlink (libnetfilter_conntrack).
//
// What. Conntrack::List() dumps the entries (original-direction tuple,
// reply tuple, ct mark, counters when accounting is on); DeleteIf() removes
// the entries a predicate selects and says how many went. The agent uses it
// for revalidate-on-change: after a rule change it deletes the entries
// whose admitting rule (their ct mark, nft_ruleset.h) the new rules deny;
// the next packet of such a connection is then classified as new and
// refused. EnableAccounting() turns on per-connection packet/byte counters
// (net.netfilter.nf_conntrack_acct), which only connections created after
// it carry; ended flow records (flow_monitor.h) report them.
//
// Namespaces: every call works on the network namespace of the calling
// thread (the socket is opened there, /proc/sys/net is resolved there).
//
// Thread safety: stateless functions; each call opens and closes its own
// netlink sockets, so concurrent calls from different threads are safe. The
// predicate runs on the calling thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

struct nf_conntrack;  // libnetfilter_conntrack

namespace dfw::vmagent {

struct CtEntry {
  int family = 0;     // AF_INET or AF_INET6
  uint8_t proto = 0;  // IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP, ...
  // Original direction (the connection's first packet).
  std::string src, dst;  // text form ("198.18.0.1", "2001:db8::1")
  // TCP/UDP/SCTP/DCCP ports; for ICMP and ICMPv6 the type and the code, as
  // the dataplane's rules and flow records carry them.
  uint16_t sport = 0, dport = 0;
  uint16_t icmp_id = 0;  // ICMP echo identifier (0 otherwise)
  // Reply direction (differs from the swapped original only under NAT).
  std::string reply_src, reply_dst;
  uint16_t reply_sport = 0, reply_dport = 0;
  uint32_t mark = 0;  // ct mark: the admitting rule's rule_num, 0 = none
  // Counters, 0 unless nf_conntrack_acct was on when the entry was created.
  uint64_t orig_packets = 0, orig_bytes = 0;
  uint64_t reply_packets = 0, reply_bytes = 0;
  uint64_t packets() const { return orig_packets + reply_packets; }
  uint64_t bytes() const { return orig_bytes + reply_bytes; }
  uint8_t tcp_state = 0;  // TCP_CONNTRACK_* (TCP only)
  uint32_t status = 0;    // IPS_* bits
  uint32_t timeout = 0;   // seconds left
  uint32_t id = 0;        // the kernel's entry id
  uint16_t zone = 0;
};

// Converts a parsed libnetfilter_conntrack object (dump or event).
CtEntry CtEntryFrom(const struct nf_conntrack* ct);

class Conntrack {
 public:
  // All entries of `family` (AF_INET, AF_INET6, or AF_UNSPEC = both).
  static absl::StatusOr<std::vector<CtEntry>> List(int family = 0);

  // Deletes the entries for which `pred` returns true; returns how many were
  // deleted. An entry that vanished between the dump and the delete (it
  // ended on its own) is not counted and not an error; the kernel's entry id
  // is part of the delete, so a new connection that reused the tuple since
  // the dump is never hit.
  static absl::StatusOr<size_t> DeleteIf(const std::function<bool(const CtEntry&)>& pred,
                                         int family = 0);

  // Writes 1 to /proc/sys/net/netfilter/nf_conntrack_acct (loading
  // conntrack through ctnetlink first if the sysctl is not there yet).
  static absl::Status EnableAccounting();
};

}  // namespace dfw::vmagent
