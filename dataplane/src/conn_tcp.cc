// TCP connection tracker: per-peer states and sequence-window checks after
// Guido van Rooij, "Real Stateful TCP Packet Filtering in IP Filter", as in
// pf's pf_test_tcp() and OVS's lib/conntrack-tcp.c, with these differences:
//
// - A first SYN from the reply side (simultaneous open) initialises that
//   peer's window instead of passing unchecked, so the SYN+ACKs that follow
//   are window-checked too.
// - A SYN retransmission is accepted only with the same ISN; a SYN with a new
//   ISN before the peer answered restarts the connection (kReopen), after it
//   answered it is invalid.
// - An RST must carry the exact expected sequence number (±1) also in the
//   loose ("funky") branch: an in-window guess does not reset a connection.
// - After an accepted RST every segment but a new SYN is invalid.
// - Loose pickup seeds both peers from the picked-up segment: the sender's
//   sequence and window, the receiver's sequence from the ACK field.
#include "conn_table_impl.h"

namespace dfw::dataplane::ct {
namespace {

using namespace tcpflag;

// pf: "1500 is an arbitrary fudge factor".
constexpr int32_t kMaxAckWindow = 0xffff + 1500;

inline uint8_t WscaleOption(const ParsedPacket& p) {
  if (p.tcp_wscale == 0xff) return 0;
  return kWscaleFlag | (p.tcp_wscale > kMaxWscale ? kMaxWscale : p.tcp_wscale);
}

inline uint32_t Max1(uint32_t v) { return v > 1 ? v : 1; }

}  // namespace

bool TcpFlagsInvalid(uint8_t flags) {
  if (flags & kSyn) {
    if (flags & (kRst | kFin)) return true;
  } else if (!(flags & (kAck | kRst))) {
    return true;
  }
  // "ACK is on all packets except the first."
  if (!(flags & kAck) && (flags & (kFin | kPsh | kUrg))) return true;
  return false;
}

DropReason TcpCanOpen(const ParsedPacket& p, bool loose) {
  const uint8_t f = p.tcp_flags;
  if (TcpFlagsInvalid(f)) return DropReason::kCtInvalid;
  if ((f & (kSyn | kAck)) == kSyn) return DropReason::kNone;
  // Loose pickup: a plain mid-stream segment (not SYN+ACK, RST or FIN).
  if (loose && (f & (kSyn | kRst | kFin | kAck)) == kAck) return DropReason::kNone;
  return DropReason::kCtNoConnection;
}

void TcpInit(ConnEntry& e, const ParsedPacket& p) {
  TcpPeer& src = e.peer[0];
  TcpPeer& dst = e.peer[1];
  const bool syn = p.tcp_flags & kSyn;
  const uint32_t end = p.tcp_seq + p.tcp_payload + (syn ? 1 : 0);
  src.seqlo = end;
  src.seqhi = end + 1;
  src.max_win = Max1(p.tcp_win);
  dst.seqlo = 0;
  dst.seqhi = 1;
  dst.max_win = 1;
  e.tcp_state[1] = kPeerClosed;
  if (syn) {
    e.tcp_wscale[0] = WscaleOption(p);
    e.tcp_wscale[1] = 0;
    const uint8_t sws = e.tcp_wscale[0] & kWscaleMask;
    // The SYN's window is never scaled; keep max_win in the peer's scaled units.
    if (sws) src.max_win = (src.max_win + (1u << sws) - 1) >> sws;
    e.tcp_state[0] = kPeerSynSent;
  } else {
    // Loose pickup: the scale is unknown (pf then allows the maximum), the
    // receiver's next sequence number is what this segment acknowledges.
    e.tcp_wscale[0] = e.tcp_wscale[1] = kWscaleUnknown;
    dst.seqlo = p.tcp_ack;
    dst.seqhi = p.tcp_ack + Max1(static_cast<uint32_t>(p.tcp_win) << kMaxWscale);
    e.tcp_state[0] = kPeerEstablished;
    e.flags |= kEntryLoose;
  }
  e.state = static_cast<uint8_t>(TcpAggregate(e));
}

ConnState TcpAggregate(const ConnEntry& e) {
  const uint8_t o = e.tcp_state[0], r = e.tcp_state[1];
  if (e.flags & kEntryRst) return ConnState::kClosed;
  if (o >= kPeerFinWait2 && r >= kPeerFinWait2) return ConnState::kTimeWait;
  if (o >= kPeerClosing && r >= kPeerClosing) return ConnState::kClosing;
  if (o >= kPeerClosing || r >= kPeerClosing) return ConnState::kFinWait;
  if (o >= kPeerEstablished && r >= kPeerEstablished) return ConnState::kEstablished;
  if (e.flags & kEntryLoose) return ConnState::kEstablished;
  if (r == kPeerClosed) return ConnState::kSynSent;
  if (o == kPeerSynSent && r == kPeerSynSent) return ConnState::kSynSent2;
  return ConnState::kSynRecv;
}

TcpResult TcpUpdate(ConnEntry& e, bool reply, const ParsedPacket& p) {
  const int si = reply ? 1 : 0, di = reply ? 0 : 1;
  TcpPeer& src = e.peer[si];  // the peer that sent `p`
  TcpPeer& dst = e.peer[di];  // the peer that receives it
  uint8_t& sstate = e.tcp_state[si];
  uint8_t& dstate = e.tcp_state[di];
  const uint8_t flags = p.tcp_flags;
  const uint8_t old_state = e.state;

  if (TcpFlagsInvalid(flags)) return TcpResult::kInvalid;

  if ((flags & (kSyn | kAck)) == kSyn) {
    if (sstate >= kPeerFinWait2 && dstate >= kPeerFinWait2) return TcpResult::kReopen;
    if (sstate == kPeerSynSent) {
      // Retransmission: same ISN (its end is what we recorded).
      if (p.tcp_seq + 1 + p.tcp_payload == src.seqlo) return TcpResult::kValid;
      return dstate == kPeerClosed ? TcpResult::kReopen : TcpResult::kInvalid;
    }
    // First SYN from the reply side (simultaneous open): checked below.
  }
  // Reset: only a new SYN (above) may follow. pf and OVS would still pass
  // in-window segments here; nothing valid can follow an RST, so drop them.
  if (e.flags & kEntryRst) return TcpResult::kInvalid;

  uint8_t sws = 0, dws = 0;
  if ((e.tcp_wscale[si] & kWscaleFlag) && (e.tcp_wscale[di] & kWscaleFlag) && !(flags & kSyn)) {
    sws = e.tcp_wscale[si] & kWscaleMask;
    dws = e.tcp_wscale[di] & kWscaleMask;
  } else if ((e.tcp_wscale[si] & kWscaleUnknown) && (e.tcp_wscale[di] & kWscaleUnknown) &&
             !(flags & kSyn)) {
    sws = dws = kMaxWscale;
  }

  uint32_t win = p.tcp_win;
  const uint32_t orig_seq = p.tcp_seq;
  uint32_t seq = orig_seq;
  uint32_t ack = p.tcp_ack;
  uint32_t end = seq + p.tcp_payload;
  bool check_ackskew = true;

  if (sstate < kPeerSynSent) {
    // First segment from this peer.
    if (flags & kSyn) {
      ++end;
      if (e.tcp_wscale[di] & kWscaleFlag) {
        e.tcp_wscale[si] = WscaleOption(p);
        if (e.tcp_wscale[si] & kWscaleFlag) {
          // Remove the scale factor from the initial window.
          sws = e.tcp_wscale[si] & kWscaleMask;
          win = (win + (1u << sws) - 1) >> sws;
          dws = e.tcp_wscale[di] & kWscaleMask;
        } else {
          // No scaling after all: the other side's window was kept scaled down.
          dst.max_win <<= e.tcp_wscale[di] & kWscaleMask;
          e.tcp_wscale[di] = 0;
        }
      }
    }
    if (flags & kFin) ++end;
    src.seqlo = seq;
    sstate = kPeerSynSent;
    // Slide the window (seqhi may come from a pickup or be the initial 1).
    if (src.seqhi == 1 || SeqGeq(end + Max1(dst.max_win << dws), src.seqhi)) {
      src.seqhi = end + Max1(dst.max_win << dws);
      check_ackskew = false;
    }
    if (win > src.max_win) src.max_win = win;
  } else {
    if (flags & kSyn) ++end;
    if (flags & kFin) ++end;
  }

  if (!(flags & kAck)) {
    ack = dst.seqlo;  // let it pass the ACK skew check
  } else if (ack == 0 && (flags & (kAck | kRst)) == (kAck | kRst)) {
    ack = dst.seqlo;  // broken stacks do not set the ACK on RST
  }

  if (seq == end) {
    // Ease sequencing restrictions on segments without data.
    seq = src.seqlo;
    end = seq;
  }

  const int32_t ackskew = check_ackskew ? static_cast<int32_t>(dst.seqlo - ack) : 0;
  const bool rst_ok = !(flags & kRst) || orig_seq == src.seqlo || orig_seq == src.seqlo + 1 ||
                      orig_seq + 1 == src.seqlo;

  if (SeqGeq(src.seqhi, end) &&                         // last octet inside the window
      SeqGeq(seq, src.seqlo - (dst.max_win << dws)) &&  // retransmit: <= one window back
      ackskew >= -kMaxAckWindow &&                      // ACK not too far back
      static_cast<int64_t>(ackskew) <= (int64_t{kMaxAckWindow} << sws) &&  // nor forward
      rst_ok) {
    if (src.max_win < win) src.max_win = win;
    if (SeqGt(end, src.seqlo)) src.seqlo = end;
    if (SeqGeq(ack + (win << sws), dst.seqhi)) dst.seqhi = ack + Max1(win << sws);

    if ((flags & kSyn) && sstate < kPeerSynSent) sstate = kPeerSynSent;
    if ((flags & kFin) && sstate < kPeerClosing) sstate = kPeerClosing;
    if (flags & kAck) {
      if (dstate == kPeerSynSent) {
        dstate = kPeerEstablished;
      } else if (dstate == kPeerClosing) {
        dstate = kPeerFinWait2;
      }
    }
    if (flags & kRst) {
      sstate = dstate = kPeerTimeWait;
      e.flags |= kEntryRst;
    }
    e.state = static_cast<uint8_t>(TcpAggregate(e));
    return TcpResult::kValid;
  }

  if ((dstate < kPeerSynSent || dstate >= kPeerFinWait2 || sstate >= kPeerFinWait2) &&
      SeqGeq(src.seqhi + kMaxAckWindow, end) &&  // within a window forward
      SeqGeq(seq, src.seqlo - kMaxAckWindow) &&  // within a window backward
      rst_ok) {
    // Shotgunned SYNs before the peer answers, packets just after a close:
    // accepted, but the timeout is not refreshed (a flood must not keep the
    // entry alive).
    if (src.max_win < win) src.max_win = win;
    if (SeqGt(end, src.seqlo)) src.seqlo = end;
    if (SeqGeq(ack + (win << sws), dst.seqhi)) dst.seqhi = ack + Max1(win << sws);
    if ((flags & kFin) && sstate < kPeerClosing) sstate = kPeerClosing;
    if (flags & kRst) {
      sstate = dstate = kPeerTimeWait;
      e.flags |= kEntryRst;
    }
    e.state = static_cast<uint8_t>(TcpAggregate(e));
    return e.state != old_state ? TcpResult::kValid : TcpResult::kValidNoRefresh;
  }
  return TcpResult::kInvalid;
}

}  // namespace dfw::dataplane::ct
