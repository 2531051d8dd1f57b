#include "dfw/dataplane/flow_records.h"

#include <arpa/inet.h>

#include <bit>
#include <cstdio>

namespace dfw::dataplane {

namespace {
std::string AddrText(Family f, const Ip128& a) {
  char buf[INET6_ADDRSTRLEN];
  if (f == Family::kV4) {
    uint32_t n = htonl(static_cast<uint32_t>(a.lo));
    inet_ntop(AF_INET, &n, buf, sizeof(buf));
  } else {
    uint8_t b[16];
    for (int i = 0; i < 8; ++i) {
      b[i] = static_cast<uint8_t>(a.hi >> (56 - 8 * i));
      b[8 + i] = static_cast<uint8_t>(a.lo >> (56 - 8 * i));
    }
    inet_ntop(AF_INET6, b, buf, sizeof(buf));
  }
  return buf;
}
const char* ActionName(Action a) {
  return a == Action::kAllow ? "allow" : a == Action::kDrop ? "drop" : "reject";
}
}  // namespace

const char* FlowKindName(FlowEvent::Kind k) {
  switch (k) {
    case FlowEvent::Kind::kAllowed:
      return "allowed";
    case FlowEvent::Kind::kDenied:
      return "denied";
    case FlowEvent::Kind::kAudit:
      return "audit";
    case FlowEvent::Kind::kEnded:
      return "ended";
  }
  return "?";
}

std::string FlowEventJson(const FlowEvent& e, const std::string& vnic_id) {
  char buf[512];
  snprintf(buf, sizeof(buf),
           "{\"kind\":\"%s\",\"time_ms\":%llu,\"vnic\":\"%s\",\"direction\":\"%s\",\"proto\":%u,"
           "\"src\":\"%s\",\"sport\":%u,\"dst\":\"%s\",\"dport\":%u,\"rule\":%u,\"action\":\"%s\","
           "\"reason\":\"%s\",\"packets\":%llu,\"bytes\":%llu}",
           FlowKindName(e.kind), static_cast<unsigned long long>(e.time_ms), vnic_id.c_str(),
           e.dir == Direction::kIn ? "in" : "out", e.proto, AddrText(e.family, e.src).c_str(),
           e.sport, AddrText(e.family, e.dst).c_str(), e.dport, e.rule_num, ActionName(e.action),
           DropReasonName(e.reason), static_cast<unsigned long long>(e.packets),
           static_cast<unsigned long long>(e.bytes));
  return buf;
}

FlowRing::FlowRing(uint32_t capacity_pow2)
    : buf_(std::bit_ceil(capacity_pow2 < 2 ? 2u : capacity_pow2)), mask_(buf_.size() - 1) {}

}  // namespace dfw::dataplane
