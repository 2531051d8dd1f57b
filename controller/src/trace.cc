#include "dfw/controller/trace.h"

#include <optional>
#include <vector>

#include "dfw/dataplane/linear_classifier.h"
#include "dfw/dataplane/rule_proto.h"
#include "str_util.h"

namespace dfw::controller {
namespace {

namespace dp = dfw::dataplane;

dfw::v1::Action ProtoAction(dp::Action a) {
  switch (a) {
    case dp::Action::kAllow:
      return dfw::v1::ACTION_ALLOW;
    case dp::Action::kReject:
      return dfw::v1::ACTION_REJECT;
    case dp::Action::kDrop:
      break;
  }
  return dfw::v1::ACTION_DROP;
}

const char* ActionWord(dp::Action a) {
  return a == dp::Action::kAllow ? "allows" : a == dp::Action::kReject ? "rejects" : "drops";
}

// A bare address (no prefix length) as the classifier reads it.
std::optional<dp::IpPrefix> Address(const std::string& text) {
  if (text.find('/') != std::string::npos) return std::nullopt;
  auto p = dp::IpPrefix::Parse(text);
  if (!p || p->len != (p->family == dp::Family::kV4 ? 32 : 128)) return std::nullopt;
  return p;
}

}  // namespace

absl::StatusOr<TraceFlow> TraceFlowOf(const dfw::v1::TraceRequest& req, const std::string& src,
                                      const std::string& dst) {
  TraceFlow f;
  f.src = src;
  f.dst = dst;
  if (req.protocol() == 0 || req.protocol() > 255) {
    return absl::InvalidArgumentError(
        Cat("protocol: ", req.protocol(), " is not an IP protocol number within 1..255"));
  }
  f.protocol = static_cast<uint8_t>(req.protocol());
  const bool icmp = f.protocol == 1 || f.protocol == 58;
  const bool ports = f.protocol == 6 || f.protocol == 17 || f.protocol == 132;
  if (icmp) {
    if (req.destination_port() || req.source_port()) {
      return absl::InvalidArgumentError("destination_port: ICMP has a type and a code, not ports");
    }
    if (req.icmp_type() > 255) {
      return absl::InvalidArgumentError(Cat("icmp_type: ", req.icmp_type(), " is above 255"));
    }
    if (req.icmp_code() > 255) {
      return absl::InvalidArgumentError(Cat("icmp_code: ", req.icmp_code(), " is above 255"));
    }
    // An echo request unless a type is given.
    f.sport = static_cast<uint16_t>(req.has_icmp_type() ? req.icmp_type()
                                    : f.protocol == 1   ? 8
                                                        : 128);
    f.dport = static_cast<uint16_t>(req.icmp_code());
    return f;
  }
  if (req.has_icmp_type() || req.icmp_code()) {
    return absl::InvalidArgumentError("icmp_type: only for protocol 1 (ICMP) or 58 (ICMPv6)");
  }
  if (!ports) {
    if (req.destination_port() || req.source_port()) {
      return absl::InvalidArgumentError(
          Cat("destination_port: protocol ", req.protocol(), " has no ports"));
    }
    f.sport = f.dport = 0;
    return f;
  }
  if (req.destination_port() == 0 || req.destination_port() > 65535) {
    return absl::InvalidArgumentError(
        Cat("destination_port: ", req.destination_port(), " is not within 1..65535"));
  }
  if (req.source_port() > 65535) {
    return absl::InvalidArgumentError(
        Cat("source_port: ", req.source_port(), " is not within 0..65535"));
  }
  f.dport = static_cast<uint16_t>(req.destination_port());
  if (req.source_port() != 0) f.sport = static_cast<uint16_t>(req.source_port());
  return f;
}

absl::Status TraceStageOf(const dfw::v1::VNicRuleset& rs,
                          const std::function<const dfw::v1::AddressSet*(const std::string&)>& sets,
                          const TraceFlow& flow, dfw::v1::TraceStage* out) {
  auto src = Address(flow.src), dst = Address(flow.dst);
  if (!src) return absl::InvalidArgumentError(Cat("from_ip: '", flow.src, "' is not an address"));
  if (!dst) return absl::InvalidArgumentError(Cat("to_ip: '", flow.dst, "' is not an address"));
  if (src->family != dst->family) {
    return absl::InvalidArgumentError(
        Cat("to_ip: ", flow.dst, " and ", flow.src, " are of different families"));
  }
  if (rs.excluded()) {
    out->set_excluded(true);
    out->set_default_rule(true);
    out->set_rule_num(0);
    out->set_action(dfw::v1::ACTION_ALLOW);
    out->set_passes(true);
    out->set_explanation(Cat(flow.egress ? "egress" : "ingress", " of vNIC ", rs.vnic_id(),
                             ": on the exclusion list, not filtered"));
    return absl::OkStatus();
  }
  dp::RulesetSpec spec;
  std::vector<dp::RuleMeta> meta;
  if (auto st = dp::RulesetSpecFromProto(rs, rs.vnic_id(), sets, &spec, &meta); !st.ok()) {
    return absl::InternalError(Cat("the ruleset the dataplane is sent is refused: ", st.message()));
  }
  const dp::Action default_action = spec.default_action;
  dp::LinearClassifier classifier(std::move(spec));
  dp::FlowKey key;
  key.family = src->family;
  key.dir = flow.egress ? dp::Direction::kOut : dp::Direction::kIn;
  key.proto = flow.protocol;
  key.sport = flow.sport;
  key.dport = flow.dport;
  key.src = src->addr;
  key.dst = dst->addr;
  const uint32_t idx = classifier.Classify(key);

  const char* where = flow.egress ? "egress" : "ingress";
  if (idx == dp::LinearClassifier::kNoMatch) {
    out->set_default_rule(true);
    out->set_rule_num(0);
    out->set_action(ProtoAction(default_action));
    out->set_passes(default_action == dp::Action::kAllow);
    out->set_explanation(Cat(where, " of vNIC ", rs.vnic_id(),
                             ": no rule matches; the default rule ", ActionWord(default_action)));
    return absl::OkStatus();
  }
  const dp::RuleMeta& m = meta[idx];
  const dfw::v1::CompiledRule& r = rs.rules(static_cast<int>(idx));
  out->set_default_rule(false);
  out->set_rule_num(m.rule_num);
  out->set_policy_id(r.policy_id());
  out->set_rule_id(r.rule_id());
  out->set_action(ProtoAction(m.action));
  out->set_audit(m.audit && m.action != dp::Action::kAllow);
  out->set_passes(m.action == dp::Action::kAllow || out->audit());
  out->set_explanation(Cat(where, " of vNIC ", rs.vnic_id(), ": rule ", r.rule_id(), " (#",
                           m.rule_num, ") of policy ", r.policy_id(), " ", ActionWord(m.action),
                           out->audit() ? " (audit mode: recorded and let through)" : ""));
  return absl::OkStatus();
}

}  // namespace dfw::controller
