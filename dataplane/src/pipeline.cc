// Pipeline implementation; the order of stages is the header's.
#include "dfw/dataplane/pipeline.h"

#include <cstring>

namespace dfw::dataplane {
namespace {

constexpr uint8_t kProtoUdp = 17;

bool IsDhcpClient(const ParsedPacket& p) {
  return p.family == Family::kV4 && p.proto == kProtoUdp && p.sport == 68 && p.dport == 67 &&
         p.src.lo == 0;
}

}  // namespace

FlowKey KeyOf(const ParsedPacket& p, bool reverse) noexcept {
  FlowKey k;
  k.family = p.family;
  k.proto = p.proto;
  if (!reverse) {
    k.dir = p.dir;
    k.src = p.src;
    k.dst = p.dst;
    k.sport = p.sport;
    k.dport = p.dport;
  } else {
    k.dir = p.dir == Direction::kIn ? Direction::kOut : Direction::kIn;
    k.src = p.dst;
    k.dst = p.src;
    if (IsIcmpProto(p.proto)) {
      // The orig direction of an echo reply is the request: type 8 / 128.
      k.sport = p.proto == 1 ? 8 : 128;
      k.dport = 0;
    } else {
      k.sport = p.dport;
      k.dport = p.sport;
    }
  }
  return k;
}

Pipeline::Pipeline(VnicTable* vnics, const PipelineConfig& config, uint32_t worker)
    : vnics_(vnics),
      config_(config),
      worker_(worker),
      conntrack_(config.conntrack),
      fragments_(config.fragment_entries, config.fragment_timeout_ms),
      flows_(config.flow_ring),
      counters_(std::make_unique<PipelineCounters>(config.max_rule_num)) {
  // Connections that end fold their totals into their rule's (any end:
  // aged out, evicted, removed on revalidation, flushed).
  conntrack_.SetSessionTotals(counters_->rule_session_packets.get(),
                              counters_->rule_session_bytes.get(), counters_->rules);
  // ... and each end is an "ended" flow record, whichever path ended it.
  conntrack_.SetEndedRecords(&flows_);
}

Pipeline::~Pipeline() = default;

void Pipeline::Process(const uint8_t* const* frames, const uint16_t* lens, uint32_t n,
                       uint64_t now_ms, Verdict* out, uint8_t (*replies)[kMaxReplyLen]) noexcept {
  vnics_->Enter(worker_);
  conntrack_.Tick(now_ms);
  // Three passes over each chunk of the burst, so that the cache misses of
  // its connection lookups overlap instead of queueing: parse everything,
  // hash each key once and prefetch its bucket; then prefetch the entry each
  // bucket points to; then judge.
  constexpr uint32_t kChunk = 32;
  ParsedPacket parsed[kChunk];
  DropReason parse[kChunk];
  ConnTable::Probe probe[kChunk];
  uint64_t forwarded = 0, forwarded_bytes = 0;
  const bool capturing = captures_ && captures_->Armed();
  for (uint32_t base = 0; base < n; base += kChunk) {
    uint32_t m = n - base < kChunk ? n - base : kChunk;
    for (uint32_t i = 0; i < m; ++i) {
      parse[i] = ParseFrame(frames[base + i], lens[base + i], &parsed[i]);
      probe[i].keyed = false;
      if (parse[i] == DropReason::kNone && !(parsed[i].fragment && !parsed[i].first_fragment)) {
        conntrack_.Prefetch(parsed[i].local_id, parsed[i], &probe[i]);
      }
    }
    for (uint32_t i = 0; i < m; ++i) conntrack_.PrefetchEntry(probe[i]);
    for (uint32_t i = 0; i < m; ++i) {
      const Verdict v = One(parsed[i], parse[i], probe[i], frames[base + i], lens[base + i], now_ms,
                            replies[base + i]);
      out[base + i] = v;
      if (capturing && parse[i] == DropReason::kNone) {
        OfferCapture(parsed[i], v, lens[base + i], now_ms);
      }
      forwarded += v.forward;
      forwarded_bytes += v.forward ? lens[base + i] : 0;
    }
  }
  // The totals once per burst (VPP adds its counters once per frame).
  counters_->forwarded.Add(forwarded);
  counters_->forwarded_bytes.Add(forwarded_bytes);
  vnics_->Leave(worker_);
}

void Pipeline::Maintain(uint64_t now_ms, uint32_t budget) noexcept {
  // Each connection aged out becomes an "ended" record in the table itself
  // (SetEndedRecords), as those removed on any other path do.
  conntrack_.Sweep(now_ms, budget, [](const ConnInfo&) {});
}

void Pipeline::Record(FlowEvent::Kind kind, const ParsedPacket& p, uint32_t rule_num, Action a,
                      DropReason r, uint64_t now_ms) noexcept {
  FlowEvent e;
  e.kind = kind;
  e.family = p.family;
  e.dir = p.dir;
  e.action = a;
  e.reason = r;
  e.proto = p.proto;
  e.local_id = p.local_id;
  e.sport = p.sport;
  e.dport = p.dport;
  e.rule_num = rule_num;
  e.src = p.src;
  e.dst = p.dst;
  e.time_ms = now_ms;
  e.packets = 1;
  e.bytes = p.ip_len;
  flows_.Push(e);
}

DropReason Pipeline::Spoofguard(const VnicState& v, const ParsedPacket& p) const noexcept {
  if (std::memcmp(p.src_mac, v.mac, 6) != 0) return DropReason::kSpoofSrcMac;
  if (p.l3 == L3Kind::kArp) {
    if (std::memcmp(p.arp_sha, v.mac, 6) != 0) return DropReason::kSpoofArp;
    // Sender 0.0.0.0 is an ARP probe (RFC 5227).
    if (p.arp_spa != 0 && !v.BindsV4(p.arp_spa)) return DropReason::kSpoofArp;
    return DropReason::kNone;
  }
  if (p.family == Family::kV4) {
    if (!v.BindsV4(static_cast<uint32_t>(p.src.lo)) && !IsDhcpClient(p)) {
      return DropReason::kSpoofSrcIp;
    }
    return DropReason::kNone;
  }
  if (p.nd) {
    // Router advertisements and redirects come from routers, not VMs.
    if (p.icmp_type == 134 || p.icmp_type == 137) return DropReason::kSpoofNd;
    if (p.nd_has_lladdr && std::memcmp(p.nd_lladdr, v.mac, 6) != 0) return DropReason::kSpoofNd;
    if (p.icmp_type == 136 && !v.BindsV6(p.nd_target)) return DropReason::kSpoofNd;
    // Duplicate address detection solicits from the unspecified address.
    bool unspecified = p.src.hi == 0 && p.src.lo == 0;
    if (p.icmp_type == 135 && unspecified) return DropReason::kNone;
  }
  if (!v.BindsV6(p.src)) return DropReason::kSpoofSrcIp;
  return DropReason::kNone;
}

void Pipeline::OfferCapture(const ParsedPacket& p, const Verdict& v, uint32_t len,
                            uint64_t now_ms) noexcept {
  CaptureHit hit;
  hit.forward = v.forward;
  hit.reason = v.reason;
  hit.stage = v.stage;
  hit.frame_len = len;
  hit.worker = worker_;
  hit.time_ms = now_ms;
  if (v.stage == Stage::kRule) {
    // The deciding rule, looked up again (side-effect free, same ruleset:
    // still inside this burst's read-side section).
    const VnicState* vs = vnics_->Get(p.local_id);
    const VnicPolicy* pol = vs ? vs->policy.get() : nullptr;
    if (pol) {
      uint32_t idx = pol->ruleset->ClassifyOne(KeyOf(p));
      if (idx != Ruleset::kNoMatch) {
        const RuleMeta& m = pol->rules[idx];
        hit.rule_num = m.rule_num;
        hit.audit = m.audit && m.action != Action::kAllow;
      }
    }
  }
  captures_->Offer(p, hit);
}

Verdict Pipeline::One(const ParsedPacket& p, DropReason parse, const ConnTable::Probe& probe,
                      const uint8_t* frame, uint32_t len, uint64_t now_ms,
                      uint8_t* reply) noexcept {
  Verdict v = parse != DropReason::kNone ? Verdict{false, parse, 0, Stage::kParse}
                                         : Judge(p, probe, frame, len, now_ms, reply);
  // The first fragment's verdict is remembered for the rest of its datagram.
  if (parse == DropReason::kNone && p.first_fragment) {
    DropReason r = fragments_.RecordFirst(p.local_id, p, v.forward, v.reason, now_ms);
    if (v.forward && r != DropReason::kNone) v = Verdict{false, r, 0, Stage::kFragment};
  }
  // Counters: once per packet, from the final verdict (the totals of
  // forwarded packets once per burst, in Process).
  if (v.forward) {
    VnicCounters& vc = counters_->vnics[p.local_id];
    if (p.dir == Direction::kIn) {
      vc.to_vm_packets.Add();
      vc.to_vm_bytes.Add(len);
    } else {
      vc.from_vm_packets.Add();
      vc.from_vm_bytes.Add(len);
    }
  } else {
    counters_->drops[static_cast<int>(v.reason)].Add();
    bool has_vnic = parse == DropReason::kNone
                        ? v.reason != DropReason::kUnknownVnic
                        : parse != DropReason::kRunt && parse != DropReason::kNoSteeringTag;
    if (has_vnic) counters_->vnics[p.local_id].drops.Add();
  }
  return v;
}

Verdict Pipeline::Judge(const ParsedPacket& p, const ConnTable::Probe& probe, const uint8_t* frame,
                        uint32_t len, uint64_t now_ms, uint8_t* reply) noexcept {
  auto pass = [](Stage s) { return Verdict{true, DropReason::kNone, 0, s}; };
  auto drop = [](DropReason r, Stage s) { return Verdict{false, r, 0, s}; };
  const VnicState* v = vnics_->Get(p.local_id);
  if (!v) return drop(DropReason::kUnknownVnic, Stage::kNoRuleset);
  const VnicPolicy* pol = v->policy.get();
  // Fail closed until rules arrive.
  if (!pol) return drop(DropReason::kNoRuleset, Stage::kNoRuleset);
  if (p.dir == Direction::kOut) {
    if (DropReason r = Spoofguard(*v, p); r != DropReason::kNone) {
      return drop(r, Stage::kSpoofguard);
    }
  }
  // Address resolution is infrastructure: past spoofguard it passes.
  if (p.l3 == L3Kind::kArp || p.nd) return pass(Stage::kAddressResolution);
  if (p.fragment && !p.first_fragment) {
    DropReason r = fragments_.Follow(p.local_id, p, now_ms);
    return r == DropReason::kNone ? pass(Stage::kFragment) : drop(r, Stage::kFragment);
  }

  ConnVerdict cv = conntrack_.Track(p.local_id, p, now_ms, &probe);
  switch (cv.kind) {
    case ConnVerdict::Kind::kEstablished: {
      if (cv.policy.generation == pol->generation || !cv.policy.revalidate) {
        return pass(Stage::kConntrack);
      }
      // Admitted under an older ruleset by a policy that revalidates.
      uint32_t idx = pol->ruleset->ClassifyOne(KeyOf(p, cv.reply));
      const RuleMeta* m = idx == Ruleset::kNoMatch ? nullptr : &pol->rules[idx];
      Action a = m ? m->action : pol->default_action;
      if (a != Action::kAllow && !(m && m->audit)) {
        conntrack_.Remove(cv.entry);
        DropReason why = m ? DropReason::kPolicyDrop : DropReason::kDefaultRule;
        Record(FlowEvent::Kind::kDenied, p, m ? m->rule_num : 0, a, why, now_ms);
        return drop(why, m ? Stage::kRule : Stage::kDefaultRule);
      }
      conntrack_.SetPolicy(
          cv.entry, ConnPolicy{m ? m->rule_num : 0, pol->generation, m ? m->revalidate : true});
      return pass(Stage::kConntrack);
    }
    case ConnVerdict::Kind::kRelated:
      return pass(Stage::kConntrack);
    case ConnVerdict::Kind::kInvalid:
      return drop(cv.reason, Stage::kConntrack);
    case ConnVerdict::Kind::kNew:
      break;
  }
  if (p.icmp_error) return drop(DropReason::kIcmpErrorUnrelated, Stage::kConntrack);

  // A new flow: the vNIC's rules decide.
  uint32_t idx = pol->ruleset->ClassifyOne(KeyOf(p));
  const RuleMeta* m = idx == Ruleset::kNoMatch ? nullptr : &pol->rules[idx];
  Action action = m ? m->action : pol->default_action;
  uint32_t rule_num = m ? m->rule_num : 0;
  const Stage decided = m ? Stage::kRule : Stage::kDefaultRule;
  bool log = m ? m->log : pol->default_log;
  if (m && rule_num < counters_->rules) {
    counters_->rule_packets[rule_num].Add();
    counters_->rule_bytes[rule_num].Add(len);
  }
  if (action != Action::kAllow && m && m->audit) {
    counters_->audited.Add();
    Record(FlowEvent::Kind::kAudit, p, rule_num, action, DropReason::kNone, now_ms);
    action = Action::kAllow;
  }
  if (action == Action::kAllow) {
    if (!m || m->stateful) {
      uint32_t entry;
      DropReason why;
      ConnPolicy cp{rule_num, pol->generation, m ? m->revalidate : true};
      if (!conntrack_.Commit(p.local_id, p, cp, now_ms, &entry, &why, &probe)) {
        return drop(why, Stage::kConntrack);  // a connection limit
      }
    }
    if (config_.record_allowed || log) {
      Record(FlowEvent::Kind::kAllowed, p, rule_num, action, DropReason::kNone, now_ms);
    }
    return pass(decided);
  }
  DropReason why =
      !m ? DropReason::kDefaultRule
         : (action == Action::kReject ? DropReason::kPolicyReject : DropReason::kPolicyDrop);
  if (config_.record_denied || log)
    Record(FlowEvent::Kind::kDenied, p, rule_num, action, why, now_ms);
  Verdict out = drop(why, decided);
  if (action == Action::kReject) {
    out.reply_len = static_cast<uint16_t>(BuildReject(frame, len, p, reply));
    if (out.reply_len) counters_->rejects_sent.Add();
  }
  return out;
}

}  // namespace dfw::dataplane
