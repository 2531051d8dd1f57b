// ConnTable: connections that move with their VM (see conn_table.h). The
// checks every imported entry passes, and the zone-wide export and batch
// import over Export / Import (conn_table.cc, where the table's internals
// are). Control path only: these allocate; the packet path never calls them.
#include <string>

#include "conn_table_impl.h"

namespace dfw::dataplane {

using namespace ct;

namespace {

Status Bad(const std::string& field, const std::string& why) {
  return Status::Error(field + ": " + why);
}

bool IsTcpState(ConnState s) { return s >= ConnState::kSynSent && s <= ConnState::kClosed; }

Status ValidatePeer(const ConnTcpPeer& p, const std::string& f) {
  if (p.state >= ConnTcpPeerState::kCount) {
    return Bad(f + ".state",
               std::to_string(static_cast<int>(p.state)) + " is not a peer state 0..5");
  }
  if (p.wscale > kMaxWscale) {
    return Bad(f + ".wscale", std::to_string(p.wscale) + " is above " + std::to_string(kMaxWscale));
  }
  if (p.flags & ~kConnTcpPeerFlags) {
    return Bad(f + ".flags", std::to_string(p.flags) + " has bits other than 1 and 2");
  }
  if ((p.flags & kConnTcpWscaleSeen) && (p.flags & kConnTcpWscaleUnknown)) {
    return Bad(f + ".flags", "window scale both seen (1) and unknown (2)");
  }
  if (!(p.flags & kConnTcpWscaleSeen) && p.wscale != 0) {
    return Bad(f + ".wscale",
               std::to_string(p.wscale) + " without the scale option seen (flags 1)");
  }
  if (p.max_win == 0) return Bad(f + ".max_win", "0; a tracked window is at least 1");
  return Status::Ok();
}

}  // namespace

Status ValidateConnExport(const ConnExport& c) {
  const bool v6 = c.family == Family::kV6;
  if (c.family != Family::kV4 && !v6) return Bad("src_ip", "neither IPv4 nor IPv6");
  if (!v6) {
    if (c.src.hi != 0 || c.src.lo > 0xffffffffull) return Bad("src_ip", "not an IPv4 address");
    if (c.dst.hi != 0 || c.dst.lo > 0xffffffffull) return Bad("dst_ip", "not an IPv4 address");
  }
  if (c.proto == kProtoIcmp && v6) return Bad("protocol", "1 (ICMP) with IPv6 addresses");
  if (c.proto == kProtoIcmp6 && !v6) return Bad("protocol", "58 (ICMPv6) with IPv4 addresses");
  const std::string proto = std::to_string(c.proto);
  if (IsIcmp(c.proto)) {
    if (c.dport != 0) {
      return Bad("dst_port",
                 std::to_string(c.dport) + ", not 0: an ICMP echo's identifier is in src_port");
    }
  } else if (c.proto != kProtoTcp && c.proto != kProtoUdp) {
    if (c.sport != 0)
      return Bad("src_port", std::to_string(c.sport) + ", protocol " + proto + " has no ports");
    if (c.dport != 0)
      return Bad("dst_port", std::to_string(c.dport) + ", protocol " + proto + " has no ports");
  }
  if (c.dir != Direction::kIn && c.dir != Direction::kOut) return Bad("direction", "not IN or OUT");
  const bool tcp = c.proto == kProtoTcp;
  if (tcp ? !IsTcpState(c.state)
          : c.state != ConnState::kUnreplied && c.state != ConnState::kReplied) {
    return Bad("state", std::string(ConnStateName(c.state)) + " is not a state of protocol " +
                            proto + (tcp ? " (SYN_SENT..CLOSED)" : " (UNREPLIED or REPLIED)"));
  }
  if (c.expires_in_ms == 0) return Bad("expires_in_ms", "0: the connection has expired");
  if (!tcp) {
    if (c.tcp[0] != ConnTcpPeer{})
      return Bad("tcp_orig", "set for protocol " + proto + " (TCP only)");
    if (c.tcp[1] != ConnTcpPeer{})
      return Bad("tcp_reply", "set for protocol " + proto + " (TCP only)");
    if (c.tcp_picked_up) return Bad("tcp_picked_up", "set for protocol " + proto + " (TCP only)");
    return Status::Ok();
  }
  if (Status st = ValidatePeer(c.tcp[0], "tcp_orig"); !st.ok()) return st;
  if (Status st = ValidatePeer(c.tcp[1], "tcp_reply"); !st.ok()) return st;
  // The states must be ones the tracker can be in: the aggregate of the peer
  // states is the connection's, and a reset is both peers' and CLOSED.
  const bool reset0 = c.tcp[0].state == ConnTcpPeerState::kReset;
  const bool reset1 = c.tcp[1].state == ConnTcpPeerState::kReset;
  const bool closed = c.state == ConnState::kClosed;
  if (reset0 != closed || reset1 != closed) {
    return Bad("state", std::string(ConnStateName(c.state)) +
                            (closed ? " needs both peers reset (state 5)"
                                    : " with a peer reset (state 5): only CLOSED has one"));
  }
  ConnEntry e{};
  e.flags = static_cast<uint8_t>((c.tcp_picked_up ? kEntryLoose : 0) | (closed ? kEntryRst : 0));
  e.tcp_state[0] = static_cast<uint8_t>(c.tcp[0].state);
  e.tcp_state[1] = static_cast<uint8_t>(c.tcp[1].state);
  if (const ConnState agg = TcpAggregate(e); agg != c.state) {
    return Bad("state", std::string(ConnStateName(c.state)) +
                            " does not agree with the peer states " +
                            std::to_string(e.tcp_state[0]) + "/" + std::to_string(e.tcp_state[1]) +
                            " (" + ConnStateName(agg) + ")");
  }
  return Status::Ok();
}

uint32_t ConnTable::ExportZone(uint16_t zone, uint64_t now_ms, uint32_t max,
                               std::vector<ConnExport>* out) const {
  uint32_t total = 0;
  ConnExport c;
  ForEach(now_ms, [&](uint32_t entry, const ConnInfo& info) {
    if (info.zone != zone) return;
    ++total;
    if ((max == 0 || out->size() < max) && Export(entry, now_ms, &c)) out->push_back(c);
  });
  return total;
}

ConnImportResult ConnTable::ImportAll(uint16_t zone, const ConnExport* entries, size_t n,
                                      uint64_t now_ms, const uint32_t* numbers) {
  ConnImportResult r;
  for (size_t i = 0; i < n; ++i) {
    // A field error reads "entries[3].src_port: ...", a refusal "entries[3]: over ...".
    std::string sep = ".";
    Status st = ValidateConnExport(entries[i]);
    if (st.ok()) {
      st = ImportValid(zone, entries[i], now_ms);
      sep = ": ";
    }
    if (st.ok()) {
      ++r.imported;
      continue;
    }
    ++r.rejected_count;
    if (r.rejected.size() < ConnImportResult::kMaxRejectedShown) {
      r.rejected.push_back("entries[" + std::to_string(numbers ? numbers[i] : i) + "]" + sep +
                           st.message());
    }
  }
  return r;
}

}  // namespace dfw::dataplane
