#include "local_api.h"

#include <arpa/inet.h>

#include <algorithm>
#include <chrono>
#include <optional>
#include <random>

namespace dfw::dataplane {
namespace {

constexpr size_t kRecentFlows = 16384;

std::string Addr(Family f, const Ip128& a, uint16_t port) {
  char buf[INET6_ADDRSTRLEN];
  if (f == Family::kV4) {
    uint32_t n = htonl(static_cast<uint32_t>(a.lo));
    inet_ntop(AF_INET, &n, buf, sizeof(buf));
    return std::string(buf) + ":" + std::to_string(port);
  }
  uint8_t b[16];
  for (int i = 0; i < 8; ++i) {
    b[i] = static_cast<uint8_t>(a.hi >> (56 - 8 * i));
    b[8 + i] = static_cast<uint8_t>(a.lo >> (56 - 8 * i));
  }
  inet_ntop(AF_INET6, b, buf, sizeof(buf));
  // Appended, not `"[" + std::string(...)`: GCC 12's -Wrestrict misfires on
  // that at -O3 (GCC PR 105651).
  std::string out = "[";
  out.append(buf).append("]:").append(std::to_string(port));
  return out;
}

grpc::Status ToGrpc(const Status& s) {
  if (s.ok()) return grpc::Status::OK;
  bool revision = s.message().find("from_revision") != std::string::npos;
  return grpc::Status(
      revision ? grpc::StatusCode::FAILED_PRECONDITION : grpc::StatusCode::INVALID_ARGUMENT,
      s.message());
}

// Addresses as ConnectionEntry carries them: 4 or 16 bytes, network order.
std::string AddrBytes(Family f, const Ip128& a) {
  std::string b(f == Family::kV4 ? 4 : 16, '\0');
  for (size_t i = 0; i < b.size(); ++i) {
    const size_t shift = 8 * (b.size() - 1 - i);  // of the 32- or 128-bit number
    const uint64_t word = shift >= 64 ? a.hi : a.lo;
    b[i] = static_cast<char>(word >> (shift % 64));
  }
  return b;
}

Ip128 AddrFromBytes(const std::string& b) {
  Ip128 a{0, 0};
  for (size_t i = 0; i < b.size(); ++i) {
    const uint64_t v = static_cast<uint8_t>(b[i]);
    if (b.size() == 16 && i < 8) {
      a.hi = a.hi << 8 | v;
    } else {
      a.lo = a.lo << 8 | v;
    }
  }
  return a;
}

void PeerToProto(const ConnTcpPeer& p, v1::TcpPeerState* out) {
  out->set_seq_end(p.seq_end);
  out->set_ack_end(p.ack_end);
  out->set_max_win(p.max_win);
  out->set_wscale(p.wscale);
  out->set_flags(p.flags);
  out->set_state(static_cast<uint32_t>(p.state));
}

Status PeerFromProto(const v1::TcpPeerState& p, const std::string& f, ConnTcpPeer* out) {
  // Wider than the tracker's fields: refused here, the rest is checked at import.
  if (p.wscale() > 255)
    return Status::Error(f + ".wscale: " + std::to_string(p.wscale()) + " is above 14");
  if (p.flags() > 255)
    return Status::Error(f + ".flags: " + std::to_string(p.flags()) +
                         " has bits other than 1 and 2");
  if (p.state() > 255)
    return Status::Error(f + ".state: " + std::to_string(p.state()) + " is not a peer state 0..5");
  out->seq_end = p.seq_end();
  out->ack_end = p.ack_end();
  out->max_win = p.max_win();
  out->wscale = static_cast<uint8_t>(p.wscale());
  out->flags = static_cast<uint8_t>(p.flags());
  out->state = static_cast<ConnTcpPeerState>(p.state());
  return Status::Ok();
}

uint64_t RandomInstanceId() {
  std::random_device rd;
  uint64_t id = 0;
  while (id == 0) id = static_cast<uint64_t>(rd()) << 32 | rd();
  return id;
}

v1::Action ProtoAction(Action a) {
  return a == Action::kAllow  ? v1::ACTION_ALLOW
         : a == Action::kDrop ? v1::ACTION_DROP
                              : v1::ACTION_REJECT;
}

}  // namespace

void ConnectionEntryToProto(const ConnExport& c, v1::ConnectionEntry* out) {
  out->set_protocol(c.proto);
  out->set_src_ip(AddrBytes(c.family, c.src));
  out->set_dst_ip(AddrBytes(c.family, c.dst));
  out->set_src_port(c.sport);
  out->set_dst_port(c.dport);
  out->set_direction(c.dir == Direction::kIn ? v1::DIRECTION_IN : v1::DIRECTION_OUT);
  out->set_state(static_cast<v1::ConnectionState>(c.state));  // same numbering
  out->set_rule_num(c.rule_num);
  out->set_revalidate(c.revalidate);
  out->set_expires_in_ms(c.expires_in_ms);
  out->set_packets(c.packets);
  out->set_bytes(c.bytes);
  if (c.proto == 6) {
    PeerToProto(c.tcp[0], out->mutable_tcp_orig());
    PeerToProto(c.tcp[1], out->mutable_tcp_reply());
    out->set_tcp_picked_up(c.tcp_picked_up);
  }
}

Status ConnectionEntryFromProto(const v1::ConnectionEntry& in, ConnExport* out) {
  auto bad = [](const std::string& f, const std::string& why) {
    return Status::Error(f + ": " + why);
  };
  *out = ConnExport{};
  const size_t n = in.src_ip().size();
  if (n != 4 && n != 16) return bad("src_ip", std::to_string(n) + " bytes, not 4 or 16");
  if (in.dst_ip().size() != n) {
    return bad("dst_ip",
               std::to_string(in.dst_ip().size()) + " bytes, src_ip has " + std::to_string(n));
  }
  out->family = n == 4 ? Family::kV4 : Family::kV6;
  out->src = AddrFromBytes(std::string(in.src_ip()));
  out->dst = AddrFromBytes(std::string(in.dst_ip()));
  if (in.protocol() > 255) return bad("protocol", std::to_string(in.protocol()) + " is above 255");
  out->proto = static_cast<uint8_t>(in.protocol());
  if (in.src_port() > 65535)
    return bad("src_port", std::to_string(in.src_port()) + " is above 65535");
  if (in.dst_port() > 65535)
    return bad("dst_port", std::to_string(in.dst_port()) + " is above 65535");
  out->sport = static_cast<uint16_t>(in.src_port());
  out->dport = static_cast<uint16_t>(in.dst_port());
  if (in.direction() == v1::DIRECTION_IN) {
    out->dir = Direction::kIn;
  } else if (in.direction() == v1::DIRECTION_OUT) {
    out->dir = Direction::kOut;
  } else {
    return bad("direction", v1::Direction_Name(in.direction()) + ", not IN or OUT");
  }
  const int state = static_cast<int>(in.state());
  if (state <= 0 || state >= static_cast<int>(ConnState::kCount)) {
    return bad("state", std::to_string(state) + " is not a connection state");
  }
  out->state = static_cast<ConnState>(state);
  out->rule_num = in.rule_num();
  out->revalidate = in.revalidate();
  out->expires_in_ms = in.expires_in_ms();
  out->packets = in.packets();
  out->bytes = in.bytes();
  out->tcp_picked_up = in.tcp_picked_up();
  if (in.has_tcp_orig()) {
    if (Status st = PeerFromProto(in.tcp_orig(), "tcp_orig", &out->tcp[0]); !st.ok()) return st;
  }
  if (in.has_tcp_reply()) {
    if (Status st = PeerFromProto(in.tcp_reply(), "tcp_reply", &out->tcp[1]); !st.ok()) return st;
  }
  return Status::Ok();
}

grpc::Status LocalApi::ZoneOfOne(const std::string& vnic_id, uint16_t* zone) const {
  int z = -1;
  if (vnic_id.empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "vnic_id: empty; name one vNIC");
  }
  if (!ZoneOf(vnic_id, &z).ok()) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        "vnic_id: '" + vnic_id + "' is not known here (SetVNic first)");
  }
  *zone = static_cast<uint16_t>(z);
  return grpc::Status::OK;
}

grpc::Status LocalApi::ZoneOf(const std::string& vnic_id, int* zone) const {
  if (vnic_id.empty()) return grpc::Status::OK;  // all zones
  for (const auto& v : state_->Vnics()) {
    if (v.id() == vnic_id) {
      *zone = static_cast<int>(v.local_id());
      return grpc::Status::OK;
    }
  }
  return grpc::Status(grpc::StatusCode::NOT_FOUND, "vnic '" + vnic_id + "' is not known here");
}

LocalApi::LocalApi(DataplaneState* state, std::vector<Pipeline*> pipelines,
                   std::vector<PortWorker*> workers)
    : state_(state),
      pipelines_(std::move(pipelines)),
      workers_(std::move(workers)),
      instance_id_(RandomInstanceId()) {}

grpc::Status LocalApi::SetVNic(grpc::ServerContext*, const v1::SetVNicRequest* req,
                               v1::DataplaneVNic* resp) {
  if (auto st = state_->SetVnic(req->vnic()); !st.ok()) return ToGrpc(st);
  *resp = req->vnic();
  return grpc::Status::OK;
}

grpc::Status LocalApi::RemoveVNic(grpc::ServerContext*, const v1::RemoveVNicRequest* req,
                                  v1::SetStateResponse* resp) {
  if (auto st = state_->RemoveVnic(req->id()); !st.ok()) return ToGrpc(st);
  resp->set_applied_revision(state_->applied_revision());
  return grpc::Status::OK;
}

grpc::Status LocalApi::SetState(grpc::ServerContext*, const v1::SetStateRequest* req,
                                v1::SetStateResponse* resp) {
  Status st = req->has_full()    ? state_->ApplyFull(req->full())
              : req->has_delta() ? state_->ApplyDelta(req->delta())
                                 : Status::Error("state: set full or delta");
  if (!st.ok()) return ToGrpc(st);
  resp->set_applied_revision(state_->applied_revision());
  return grpc::Status::OK;
}

grpc::Status LocalApi::Counters(grpc::ServerContext*, const v1::CountersRequest*,
                                v1::CountersResponse* resp) {
  auto sum = [&](auto&& get) {
    uint64_t n = 0;
    for (Pipeline* p : pipelines_) n += get(p->counters());
    return n;
  };
  resp->set_applied_revision(state_->applied_revision());
  if (refused_connections_) resp->set_api_refused_connections(refused_connections_());
  for (int r = 1; r < static_cast<int>(DropReason::kCount); ++r) {
    uint64_t n = sum([r](PipelineCounters& c) { return c.drops[r].Get(); });
    if (!n) continue;
    auto* d = resp->add_drops();
    d->set_reason(DropReasonName(static_cast<DropReason>(r)));
    d->set_packets(n);
  }
  // A rule's vNICs may belong to several workers.
  const uint32_t rules = pipelines_[0]->counters().rules;
  // A rule appears once hit or once a connection it admitted ended (after a
  // restart, imported connections end under rules not hit since).
  for (uint32_t r = 0; r < rules; ++r) {
    uint64_t n = sum([r](PipelineCounters& c) { return c.rule_packets[r].Get(); });
    uint64_t sessions = sum([r](PipelineCounters& c) { return c.rule_session_packets[r].Get(); });
    if (!n && !sessions) continue;
    auto* rc = resp->add_rules();
    rc->set_rule_num(r);
    auto [policy, rule] = state_->RuleOf(r);
    rc->set_policy_id(policy);
    rc->set_rule_id(rule);
    rc->set_packets(n);
    rc->set_bytes(sum([r](PipelineCounters& c) { return c.rule_bytes[r].Get(); }));
    rc->set_session_packets(sessions);
    rc->set_session_bytes(sum([r](PipelineCounters& c) { return c.rule_session_bytes[r].Get(); }));
  }
  for (const auto& v : state_->Vnics()) {
    // A vNIC's frames are all judged by its owner (frames without a tag,
    // counted by whoever read them, belong to no vNIC).
    Pipeline& owner = *pipelines_[Owner(v.local_id())];
    const VnicCounters& vc = owner.counters().vnics[v.local_id() & kMaxLocalId];
    auto* s = resp->add_vnics();
    s->set_vnic_id(v.id());
    s->set_rx_packets(vc.to_vm_packets.Get());
    s->set_rx_bytes(vc.to_vm_bytes.Get());
    s->set_tx_packets(vc.from_vm_packets.Get());
    s->set_tx_bytes(vc.from_vm_bytes.Get());
    s->set_drops(vc.drops.Get());
    s->set_connections(owner.conntrack().zone_size(static_cast<uint16_t>(v.local_id())));
  }
  return grpc::Status::OK;
}

grpc::Status LocalApi::Connections(grpc::ServerContext*, const v1::ConnectionsRequest* req,
                                   v1::ConnectionsResponse* resp) {
  int zone = -1;
  if (grpc::Status st = ZoneOf(req->vnic_id(), &zone); !st.ok()) return st;
  std::vector<ConnInfo> conns;
  uint32_t limit = req->limit() ? req->limit() : 1000;
  for (uint32_t w = 0; w < workers_.size() && conns.size() < limit; ++w) {
    if (zone >= 0 && w != Owner(static_cast<uint32_t>(zone))) continue;
    std::vector<ConnInfo> part;
    if (!workers_[w]->RequestConnections(zone, limit - static_cast<uint32_t>(conns.size()),
                                         &part)) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                          "worker " + std::to_string(w) + " did not answer in time");
    }
    conns.insert(conns.end(), part.begin(), part.end());
  }
  for (const auto& c : conns) {
    auto* o = resp->add_connections();
    o->set_vnic_id(state_->VnicIdOf(c.zone));
    o->set_protocol(c.proto);
    o->set_src(Addr(c.family, c.src, c.sport));
    o->set_dst(Addr(c.family, c.dst, c.dport));
    o->set_state(ConnStateName(c.state));
    o->set_rule_num(c.policy.rule_num);
    o->set_generation(c.policy.generation);
    o->set_packets(c.packets);
    o->set_bytes(c.bytes);
  }
  return grpc::Status::OK;
}

grpc::Status LocalApi::Flush(grpc::ServerContext*, const v1::FlushRequest* req,
                             v1::FlushResponse* resp) {
  int zone = -1;
  if (grpc::Status st = ZoneOf(req->vnic_id(), &zone); !st.ok()) return st;
  uint64_t n = 0;
  for (uint32_t w = 0; w < workers_.size(); ++w) {
    if (zone >= 0 && w != Owner(static_cast<uint32_t>(zone))) continue;
    uint64_t flushed = 0;
    if (!workers_[w]->RequestFlush(zone, &flushed)) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                          "worker " + std::to_string(w) + " did not answer in time (" +
                              std::to_string(n) + " connections flushed by the others)");
    }
    n += flushed;
  }
  resp->set_flushed(n);
  return grpc::Status::OK;
}

void LocalApi::DrainFlows(std::FILE* sink) {
  FlowEvent e;
  // The workers stamp the monotonic clock (MonotonicMs); records carry Unix time.
  const uint64_t wall_offset_ms =
      static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                std::chrono::system_clock::now().time_since_epoch())
                                .count()) -
      MonotonicMs();
  std::lock_guard<std::mutex> lock(flows_mu_);
  for (Pipeline* pipeline : pipelines_) {
    while (pipeline->flows().Pop(&e)) {
      std::string vnic = state_->VnicIdOf(e.local_id);
      if (sink) {
        std::string line = FlowEventJson(e, vnic);
        std::fprintf(sink, "%s\n", line.c_str());
      }
      v1::FlowRecord r;
      switch (e.kind) {
        case FlowEvent::Kind::kAllowed:
          r.set_kind(v1::FlowRecord::KIND_ALLOWED);
          break;
        case FlowEvent::Kind::kDenied:
          r.set_kind(v1::FlowRecord::KIND_DENIED);
          break;
        case FlowEvent::Kind::kAudit:
          r.set_kind(v1::FlowRecord::KIND_AUDIT);
          break;
        case FlowEvent::Kind::kEnded:
          r.set_kind(v1::FlowRecord::KIND_ENDED);
          break;
      }
      r.set_time_ns((e.time_ms + wall_offset_ms) * 1000000ull);
      r.set_vnic_id(vnic);
      r.set_direction(e.dir == Direction::kIn ? v1::DIRECTION_IN : v1::DIRECTION_OUT);
      r.set_protocol(e.proto);
      r.set_src(Addr(e.family, e.src, e.sport));
      r.set_dst(Addr(e.family, e.dst, e.dport));
      r.set_rule_num(e.rule_num);
      r.set_action(ProtoAction(e.action));
      r.set_reason(DropReasonName(e.reason));
      r.set_packets(e.packets);
      r.set_bytes(e.bytes);
      if (e.rule_num != 0) {
        auto [policy, rule] = state_->RuleOf(e.rule_num);
        r.set_policy_id(policy);
        r.set_rule_id(rule);
      }
      r.set_seq(++last_seq_);
      recent_.push_back(std::move(r));
      if (recent_.size() > kRecentFlows) recent_.pop_front();
    }
  }
  if (sink) std::fflush(sink);
}

grpc::Status LocalApi::FlowRecords(grpc::ServerContext*, const v1::FlowRecordsRequest* req,
                                   v1::FlowRecordsResponse* resp) {
  std::lock_guard<std::mutex> lock(flows_mu_);
  const uint32_t max = req->max() ? req->max() : 100;
  resp->set_last_seq(last_seq_);
  resp->set_instance_id(instance_id_);
  uint64_t ring_lost = 0;
  for (Pipeline* pipeline : pipelines_) ring_lost += pipeline->flows().lost();
  resp->set_ring_lost(ring_lost);
  if (!req->has_after_seq()) {  // the newest `max`
    size_t start = recent_.size() > max ? recent_.size() - max : 0;
    for (size_t i = start; i < recent_.size(); ++i) *resp->add_records() = recent_[i];
    return grpc::Status::OK;
  }
  // The oldest `max` after after_seq: recent_ holds consecutive seqs ending
  // at last_seq_.
  if (recent_.empty() || req->after_seq() >= last_seq_) return grpc::Status::OK;
  const uint64_t first = recent_.front().seq();
  size_t start = req->after_seq() < first ? 0 : static_cast<size_t>(req->after_seq() - first + 1);
  for (size_t i = start; i < recent_.size() && resp->records_size() < static_cast<int>(max); ++i) {
    *resp->add_records() = recent_[i];
  }
  return grpc::Status::OK;
}

}  // namespace dfw::dataplane

namespace dfw::dataplane {

grpc::Status LocalApi::GetState(grpc::ServerContext*, const v1::GetStateRequest* req,
                                v1::GetStateResponse* resp) {
  resp->set_applied_revision(state_->applied_revision());
  for (auto& v : state_->Vnics()) *resp->add_vnics() = std::move(v);
  resp->set_instance_id(instance_id_);
  resp->set_restored(state_->restored());
  resp->set_firewall_ports(firewall_ports_);
  for (auto& v : state_->ExcludedVnics()) resp->add_excluded_vnics(std::move(v));
  if (req->digests()) {  // and the revision they are of
    uint64_t revision = 0;
    *resp->mutable_held() = state_->HeldDigests(&revision);
    resp->set_applied_revision(revision);
  }
  return grpc::Status::OK;
}

grpc::Status LocalApi::ExportConnections(grpc::ServerContext*,
                                         const v1::ExportConnectionsRequest* req,
                                         v1::ExportConnectionsResponse* resp) {
  uint16_t zone = 0;
  if (grpc::Status st = ZoneOfOne(req->vnic_id(), &zone); !st.ok()) return st;
  std::vector<ConnExport> out;
  uint32_t total = 0;
  if (!workers_[Owner(zone)]->RequestExport(zone, req->max_entries(), &out, &total)) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the worker did not answer in time");
  }
  resp->mutable_entries()->Reserve(static_cast<int>(out.size()));
  for (const ConnExport& c : out) ConnectionEntryToProto(c, resp->add_entries());
  resp->set_total(total);
  return grpc::Status::OK;
}

grpc::Status LocalApi::ImportConnections(grpc::ServerContext*,
                                         const v1::ImportConnectionsRequest* req,
                                         v1::ImportConnectionsResponse* resp) {
  uint16_t zone = 0;
  if (grpc::Status st = ZoneOfOne(req->vnic_id(), &zone); !st.ok()) return st;
  // Entries the conversion refuses are counted here; the worker validates
  // and imports the rest. Indexes in the errors are the request's.
  std::vector<ConnExport> entries;
  std::vector<uint32_t> index;  // request index of entries[k]
  entries.reserve(static_cast<size_t>(req->entries_size()));
  uint32_t rejected = 0;
  std::vector<std::string> errors;
  for (int i = 0; i < req->entries_size(); ++i) {
    ConnExport c;
    if (Status st = ConnectionEntryFromProto(req->entries(i), &c); !st.ok()) {
      ++rejected;
      if (errors.size() < ConnImportResult::kMaxRejectedShown)
        errors.push_back("entries[" + std::to_string(i) + "]." + st.message());
      continue;
    }
    entries.push_back(c);
    index.push_back(static_cast<uint32_t>(i));
  }
  ConnImportResult r;
  if (!entries.empty() && !workers_[Owner(zone)]->RequestImport(zone, entries, index, &r)) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the worker did not answer in time");
  }
  for (std::string& e : r.rejected) {
    if (errors.size() >= ConnImportResult::kMaxRejectedShown) break;
    errors.push_back(std::move(e));
  }
  resp->set_imported(r.imported);
  resp->set_rejected_count(rejected + r.rejected_count);
  for (auto& e : errors) resp->add_rejected(std::move(e));
  return grpc::Status::OK;
}

// ------------------------------------------------------------------ captures

namespace {

constexpr uint32_t kDefaultCaptureMs = 10000;
constexpr uint32_t kMaxCaptureMs = 120000;

v1::CaptureStage ProtoStage(Stage s) {
  switch (s) {
    case Stage::kNone:
      return v1::CAPTURE_STAGE_UNSPECIFIED;
    case Stage::kParse:
      return v1::CAPTURE_STAGE_PARSE;
    case Stage::kNoRuleset:
      return v1::CAPTURE_STAGE_NO_RULESET;
    case Stage::kSpoofguard:
      return v1::CAPTURE_STAGE_SPOOFGUARD;
    case Stage::kAddressResolution:
      return v1::CAPTURE_STAGE_ADDRESS_RESOLUTION;
    case Stage::kFragment:
      return v1::CAPTURE_STAGE_FRAGMENT;
    case Stage::kConntrack:
      return v1::CAPTURE_STAGE_CONNTRACK;
    case Stage::kRule:
      return v1::CAPTURE_STAGE_RULE;
    case Stage::kDefaultRule:
      return v1::CAPTURE_STAGE_DEFAULT_RULE;
  }
  return v1::CAPTURE_STAGE_UNSPECIFIED;
}

grpc::Status BadCapture(const std::string& what) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "filter." + what);
}

}  // namespace

grpc::Status LocalApi::ArmCapture(grpc::ServerContext*, const v1::ArmCaptureRequest* req,
                                  v1::ArmCaptureResponse* resp) {
  if (!captures_) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "captures are not served by this process");
  }
  const v1::CaptureFilter& f = req->filter();
  CaptureFilter cf;
  uint16_t zone = 0;
  if (grpc::Status z = ZoneOfOne(f.vnic_id(), &zone); !z.ok()) {
    return grpc::Status(z.error_code(), "filter." + z.error_message());
  }
  cf.local_id = zone;
  if (f.direction() == v1::DIRECTION_IN) {
    cf.dir = Direction::kIn;
  } else if (f.direction() == v1::DIRECTION_OUT) {
    cf.dir = Direction::kOut;
  } else {
    return BadCapture("direction: " + v1::Direction_Name(f.direction()) +
                      "; a capture is of one direction, IN or OUT");
  }
  if (f.protocol() > 255) {
    return BadCapture("protocol: " + std::to_string(f.protocol()) + " is not 0..255");
  }
  cf.proto = static_cast<uint8_t>(f.protocol());
  using Field = std::pair<const char*, const std::string*>;
  for (const auto& [name, bytes] : {Field{"src_ip", &f.src_ip()}, Field{"dst_ip", &f.dst_ip()}}) {
    size_t n = bytes->size();
    if (n != 0 && n != 4 && n != 16) {
      return BadCapture(std::string(name) + ": " + std::to_string(n) +
                        " bytes, not 4 (IPv4) or 16 (IPv6)");
    }
  }
  if (!f.src_ip().empty() && !f.dst_ip().empty() && f.src_ip().size() != f.dst_ip().size()) {
    return BadCapture("dst_ip: not of src_ip's family");
  }
  cf.has_src = !f.src_ip().empty();
  cf.has_dst = !f.dst_ip().empty();
  size_t len = cf.has_src ? f.src_ip().size() : f.dst_ip().size();
  cf.family = len == 16 ? Family::kV6 : Family::kV4;
  if (cf.has_src) cf.src = AddrFromBytes(f.src_ip());
  if (cf.has_dst) cf.dst = AddrFromBytes(f.dst_ip());
  if (f.src_port() > 65535 || f.dst_port() > 65535) {
    return BadCapture(std::string(f.src_port() > 65535 ? "src_port: " : "dst_port: ") +
                      std::to_string(std::max(f.src_port(), f.dst_port())) + " is not 0..65535");
  }
  cf.sport = static_cast<uint16_t>(f.src_port());
  cf.dport = static_cast<uint16_t>(f.dst_port());
  if (req->timeout_ms() > kMaxCaptureMs) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "timeout_ms: " + std::to_string(req->timeout_ms()) + " is over " +
                            std::to_string(kMaxCaptureMs));
  }
  const uint64_t now = MonotonicMs();
  const uint32_t timeout = req->timeout_ms() ? req->timeout_ms() : kDefaultCaptureMs;
  std::lock_guard<std::mutex> l(captures_mu_);
  SweepCapturesLocked(now);
  std::optional<uint32_t> handle = captures_->Arm(cf, now + timeout);
  if (!handle) {
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        "captures: all " + std::to_string(CaptureTable::kSlots) +
                            " are armed; wait for one to end or cancel one");
  }
  ArmedCapture a{next_capture_id_++, *handle, f, now};
  armed_captures_.push_back(a);
  resp->set_capture_id(a.id);
  return grpc::Status::OK;
}

v1::CaptureResult LocalApi::CaptureResultOf(const ArmedCapture& a,
                                            const CaptureTable::Status& st) const {
  v1::CaptureResult r;
  r.set_capture_id(a.id);
  *r.mutable_filter() = a.filter;
  switch (st.state) {
    case CaptureTable::State::kArmed:
      r.set_state(v1::CaptureResult::STATE_ARMED);
      break;
    case CaptureTable::State::kExpired:
      r.set_state(v1::CaptureResult::STATE_EXPIRED);
      break;
    case CaptureTable::State::kFree:
      r.set_state(v1::CaptureResult::STATE_CANCELLED);
      break;
    case CaptureTable::State::kMet: {
      const CaptureHit& h = st.hit;
      r.set_state(v1::CaptureResult::STATE_MET);
      r.set_forwarded(h.forward);
      r.set_stage(ProtoStage(h.stage));
      if (!h.forward) r.set_reason(DropReasonName(h.reason));
      r.set_rule_num(h.rule_num);
      if (h.rule_num) {
        auto [policy, rule] = state_->RuleOf(h.rule_num);
        r.set_policy_id(policy);
        r.set_rule_id(rule);
      }
      r.set_audit(h.audit);
      r.set_protocol(h.proto);
      r.set_src(Addr(h.family, h.src, h.sport));
      r.set_dst(Addr(h.family, h.dst, h.dport));
      r.set_frame_len(h.frame_len);
      r.set_worker(h.worker);
      r.set_met_after_ms(h.time_ms > a.armed_ms ? h.time_ms - a.armed_ms : 0);
      break;
    }
  }
  return r;
}

void LocalApi::SweepCapturesLocked(uint64_t now_ms) {
  for (size_t i = 0; i < armed_captures_.size();) {
    ArmedCapture& a = armed_captures_[i];
    CaptureTable::Status st = captures_->Poll(a.handle, now_ms);
    if (st.state == CaptureTable::State::kArmed) {
      ++i;
      continue;
    }
    ended_captures_.push_back(CaptureResultOf(a, st));
    if (ended_captures_.size() > kEndedCaptures) ended_captures_.pop_front();
    captures_->Release(a.handle);
    armed_captures_.erase(armed_captures_.begin() + static_cast<std::ptrdiff_t>(i));
  }
}

void LocalApi::SweepCaptures() {
  if (!captures_) return;
  std::lock_guard<std::mutex> l(captures_mu_);
  SweepCapturesLocked(MonotonicMs());
}

grpc::Status LocalApi::CaptureResults(grpc::ServerContext*, const v1::CaptureResultsRequest* req,
                                      v1::CaptureResultsResponse* resp) {
  if (!captures_) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "captures are not served by this process");
  }
  std::lock_guard<std::mutex> l(captures_mu_);
  SweepCapturesLocked(MonotonicMs());
  auto wanted = [&](uint64_t id) {
    if (req->capture_ids().empty()) return true;
    for (uint64_t w : req->capture_ids()) {
      if (w == id) return true;
    }
    return false;
  };
  if (req->cancel()) {
    for (size_t i = 0; i < armed_captures_.size();) {
      ArmedCapture& a = armed_captures_[i];
      if (!wanted(a.id)) {
        ++i;
        continue;
      }
      captures_->Release(a.handle);  // the slot's state is then kFree: cancelled
      ended_captures_.push_back(CaptureResultOf(a, CaptureTable::Status{}));
      if (ended_captures_.size() > kEndedCaptures) ended_captures_.pop_front();
      armed_captures_.erase(armed_captures_.begin() + static_cast<std::ptrdiff_t>(i));
    }
  }
  for (const ArmedCapture& a : armed_captures_) {
    if (wanted(a.id)) {
      CaptureTable::Status st;
      st.state = CaptureTable::State::kArmed;
      *resp->add_results() = CaptureResultOf(a, st);
    }
  }
  for (const v1::CaptureResult& r : ended_captures_) {
    if (wanted(r.capture_id())) *resp->add_results() = r;
  }
  return grpc::Status::OK;
}

}  // namespace dfw::dataplane
