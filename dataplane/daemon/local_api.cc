#include "local_api.h"

#include <arpa/inet.h>

namespace dfw::dataplane {
namespace {

constexpr size_t kRecentFlows = 4096;

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
  return "[" + std::string(buf) + "]:" + std::to_string(port);
}

grpc::Status ToGrpc(const Status& s) {
  if (s.ok()) return grpc::Status::OK;
  bool revision = s.message().find("from_revision") != std::string::npos;
  return grpc::Status(
      revision ? grpc::StatusCode::FAILED_PRECONDITION : grpc::StatusCode::INVALID_ARGUMENT,
      s.message());
}

v1::Action ProtoAction(Action a) {
  return a == Action::kAllow  ? v1::ACTION_ALLOW
         : a == Action::kDrop ? v1::ACTION_DROP
                              : v1::ACTION_REJECT;
}

}  // namespace

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

LocalApi::LocalApi(DataplaneState* state, Pipeline* pipeline, PortWorker* worker)
    : state_(state), pipeline_(pipeline), worker_(worker) {}

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
  PipelineCounters& c = pipeline_->counters();
  resp->set_applied_revision(state_->applied_revision());
  if (refused_connections_) resp->set_api_refused_connections(refused_connections_());
  for (int r = 1; r < static_cast<int>(DropReason::kCount); ++r) {
    uint64_t n = c.drops[r].Get();
    if (!n) continue;
    auto* d = resp->add_drops();
    d->set_reason(DropReasonName(static_cast<DropReason>(r)));
    d->set_packets(n);
  }
  for (uint32_t r = 0; r < c.rules; ++r) {
    uint64_t n = c.rule_packets[r].Get();
    if (!n) continue;
    auto* rc = resp->add_rules();
    rc->set_rule_num(r);
    auto [policy, rule] = state_->RuleOf(r);
    rc->set_policy_id(policy);
    rc->set_rule_id(rule);
    rc->set_packets(n);
    rc->set_bytes(c.rule_bytes[r].Get());
  }
  for (const auto& v : state_->Vnics()) {
    const VnicCounters& vc = c.vnics[v.local_id() & kMaxLocalId];
    auto* s = resp->add_vnics();
    s->set_vnic_id(v.id());
    s->set_rx_packets(vc.to_vm_packets.Get());
    s->set_rx_bytes(vc.to_vm_bytes.Get());
    s->set_tx_packets(vc.from_vm_packets.Get());
    s->set_tx_bytes(vc.from_vm_bytes.Get());
    s->set_drops(vc.drops.Get());
    s->set_connections(pipeline_->conntrack().zone_size(static_cast<uint16_t>(v.local_id())));
  }
  return grpc::Status::OK;
}

grpc::Status LocalApi::Connections(grpc::ServerContext*, const v1::ConnectionsRequest* req,
                                   v1::ConnectionsResponse* resp) {
  int zone = -1;
  if (grpc::Status st = ZoneOf(req->vnic_id(), &zone); !st.ok()) return st;
  std::vector<ConnInfo> conns;
  uint32_t limit = req->limit() ? req->limit() : 1000;
  if (!worker_->RequestConnections(zone, limit, &conns)) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the worker did not answer in time");
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
  if (!worker_->RequestFlush(zone, &n)) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the worker did not answer in time");
  }
  resp->set_flushed(n);
  return grpc::Status::OK;
}

void LocalApi::DrainFlows(std::FILE* sink) {
  FlowEvent e;
  std::lock_guard<std::mutex> lock(flows_mu_);
  while (pipeline_->flows().Pop(&e)) {
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
    r.set_time_ns(e.time_ms * 1000000ull);
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
    recent_.push_back(std::move(r));
    if (recent_.size() > kRecentFlows) recent_.pop_front();
  }
  if (sink) std::fflush(sink);
}

grpc::Status LocalApi::FlowRecords(grpc::ServerContext*, const v1::FlowRecordsRequest* req,
                                   v1::FlowRecordsResponse* resp) {
  std::lock_guard<std::mutex> lock(flows_mu_);
  uint32_t max = req->max() ? req->max() : 100;
  size_t start = recent_.size() > max ? recent_.size() - max : 0;
  for (size_t i = start; i < recent_.size(); ++i) *resp->add_records() = recent_[i];
  return grpc::Status::OK;
}

}  // namespace dfw::dataplane
