#include "dfw/ovs/steering_flows.h"

#include <cctype>
#include <set>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace dfw::ovs {
namespace {

// Lower-cases `mac` into *out; false if it is not a unicast MAC
// "xx:xx:xx:xx:xx:xx".
bool NormalizeUnicastMac(const std::string& mac, std::string* out) {
  if (mac.size() != 17) return false;
  char buf[17];
  bool all_zero = true;
  for (size_t i = 0; i < 17; ++i) {
    const unsigned char ch = static_cast<unsigned char>(mac[i]);
    if (i % 3 == 2) {
      if (ch != ':') return false;
    } else if (!std::isxdigit(ch)) {
      return false;
    } else if (ch != '0') {
      all_zero = false;
    }
    buf[i] = static_cast<char>(std::tolower(ch));
  }
  const int first_low_nibble =
      std::isdigit(static_cast<unsigned char>(buf[1])) ? buf[1] - '0' : buf[1] - 'a' + 10;
  if ((first_low_nibble & 1) || all_zero) return false;  // group bit / zero MAC
  out->assign(buf, sizeof buf);
  return true;
}

uint64_t Cookie(uint32_t vnic_ofport) { return kSteeringCookieBase | vnic_ofport; }

}  // namespace

std::string FlowSpec::ToString() const {
  std::string s = absl::StrFormat("table=%u,priority=%u,cookie=0x%x", table, priority, cookie);
  if (!match.empty()) absl::StrAppend(&s, ",", match);
  absl::StrAppend(&s, " actions=", actions);
  return s;
}

absl::StatusOr<std::vector<FlowSpec>> ComputeSteeringFlows(const SteeringConfig& config) {
  const std::vector<uint32_t>& fws = config.firewall_ofports;
  if (fws.empty() || fws.size() > kMaxFirewallPorts) {
    return absl::InvalidArgumentError(
        absl::StrCat("firewall_ofports: ", fws.size(), " ports, want 1..", kMaxFirewallPorts));
  }
  std::set<uint32_t> ports;
  for (uint32_t fw : fws) {
    if (fw == 0 || fw >= kMaxOfport) {
      return absl::InvalidArgumentError(
          absl::StrCat("firewall_ofport ", fw, " is not a port number (1..", kMaxOfport - 1, ")"));
    }
    if (!ports.insert(fw).second) {
      return absl::InvalidArgumentError(absl::StrCat("firewall_ofport ", fw, " listed twice"));
    }
  }
  const std::set<uint32_t> fw_ports = ports;
  auto fw_of = [&](uint16_t local_id) { return fws[FirewallPortIndex(local_id, fws.size())]; };
  if (config.vnics.size() > kMaxSteeredVnics) {
    return absl::InvalidArgumentError(
        absl::StrCat("vnics: ", config.vnics.size(), " vNICs, at most ", kMaxSteeredVnics,
                     " fit one broadcast flow (OpenFlow's 64 KiB message)"));
  }
  std::set<uint16_t> ids;
  std::set<std::string> macs;
  std::vector<std::string> norm_macs;
  for (const VnicSteering& v : config.vnics) {
    const std::string what =
        absl::StrCat("vNIC ofport ", v.ofport, " (local id ", v.local_id, ", mac '", v.mac, "'): ");
    if (v.ofport == 0 || v.ofport >= kMaxOfport) {
      return absl::InvalidArgumentError(absl::StrCat(what, "ofport is not a port number"));
    }
    if (fw_ports.count(v.ofport)) {
      return absl::InvalidArgumentError(absl::StrCat(what, "ofport is a firewall port's"));
    }
    if (v.local_id == 0 || v.local_id > kMaxLocalId) {
      return absl::InvalidArgumentError(absl::StrCat(what, "local id must be in 1..2047"));
    }
    std::string mac;
    if (!NormalizeUnicastMac(v.mac, &mac)) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, "mac is not a unicast MAC xx:xx:xx:xx:xx:xx"));
    }
    if (!ports.insert(v.ofport).second) {
      return absl::InvalidArgumentError(absl::StrCat(what, "ofport listed twice"));
    }
    if (!ids.insert(v.local_id).second) {
      return absl::InvalidArgumentError(absl::StrCat(what, "local id used by another vNIC"));
    }
    if (!macs.insert(mac).second) {
      return absl::InvalidArgumentError(absl::StrCat(what, "mac used by another vNIC"));
    }
    norm_macs.push_back(mac);
  }

  // Isolated and uplink ports: each a port number, not the firewall's, in
  // one role only.
  auto check_port = [&](const char* role, uint32_t port, bool may_be_local) -> absl::Status {
    const std::string what = absl::StrCat(role, " ofport ", port, ": ");
    if (port == 0 || (port >= kMaxOfport && !(may_be_local && port == kLocalOfport))) {
      return absl::InvalidArgumentError(absl::StrCat(what, "not a port number (1..", kMaxOfport - 1,
                                                     may_be_local ? " or LOCAL 65534)" : ")"));
    }
    if (fw_ports.count(port)) {
      return absl::InvalidArgumentError(absl::StrCat(what, "a firewall port"));
    }
    if (!ports.insert(port).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, "also listed as a vNIC, an isolated or uplink port, or twice"));
    }
    return absl::OkStatus();
  };
  for (uint32_t port : config.isolated_ofports) {
    if (absl::Status st = check_port("isolated", port, false); !st.ok()) return st;
  }
  for (uint32_t port : config.uplink_ofports) {
    if (absl::Status st = check_port("uplink", port, true); !st.ok()) return st;
  }

  // Copies of a group-addressed frame into the ingress of each local vNIC
  // but `except`: "mod_vlan_vid:<R|0x800>,output:<fw>," per receiver R.
  auto copies_to_vnics = [&](uint32_t except) {
    std::string out;
    for (const VnicSteering& r : config.vnics) {
      if (r.ofport == except) continue;
      absl::StrAppendFormat(&out, "mod_vlan_vid:%u,output:%u,", r.local_id | kIngressVlanBit,
                            fw_of(r.local_id));
    }
    // The frame leaves the copies tagged: NORMAL gets it as it came.
    return out.empty() ? std::string("NORMAL") : absl::StrCat(out, "strip_vlan,NORMAL");
  };
  constexpr const char* kGroupDst = "dl_dst=01:00:00:00:00:00/01:00:00:00:00:00";

  std::vector<FlowSpec> flows;
  flows.reserve(config.vnics.size() * 6 + config.isolated_ofports.size() +
                config.uplink_ofports.size() * 2 + fws.size() + 3);
  for (uint32_t port : config.isolated_ofports) {
    flows.push_back({0, kPrioritySteer, Cookie(port), absl::StrFormat("in_port=%u", port), "drop"});
  }
  for (uint32_t port : config.uplink_ofports) {
    const std::string in_port =
        port == kLocalOfport ? std::string("in_port=LOCAL") : absl::StrFormat("in_port=%u", port);
    // The provider network is untagged: a tagged frame would have its VLAN
    // overwritten by a steering tag and reach a vNIC whatever its VLAN.
    flows.push_back(
        {0, kPriorityVmTagged, Cookie(port), in_port + ",vlan_tci=0x1000/0x1000", "drop"});
    flows.push_back({0, kPrioritySteer, Cookie(port), in_port, "resubmit(,1)"});
  }
  for (size_t i = 0; i < config.vnics.size(); ++i) {
    const VnicSteering& v = config.vnics[i];
    const uint64_t c = Cookie(v.ofport);
    const unsigned id = v.local_id, in_id = v.local_id | kIngressVlanBit;
    const uint32_t fw = fw_of(v.local_id);
    flows.push_back({0, kPriorityVmTagged, c,
                     absl::StrFormat("in_port=%u,vlan_tci=0x1000/0x1000", v.ofport), "drop"});
    flows.push_back({0, kPrioritySteer, c, absl::StrFormat("in_port=%u", v.ofport),
                     absl::StrFormat("mod_vlan_vid:%u,output:%u", id, fw)});
    flows.push_back(
        {0, kPrioritySteer, c, absl::StrFormat("in_port=%u,dl_vlan=%u", fw, id),
         absl::StrFormat("strip_vlan,load:%u->NXM_OF_IN_PORT[],resubmit(,1)", v.ofport)});
    flows.push_back({0, kPrioritySteer, c, absl::StrFormat("in_port=%u,dl_vlan=%u", fw, in_id),
                     absl::StrFormat("strip_vlan,output:%u", v.ofport)});
    flows.push_back({1, kPrioritySteer, c, absl::StrCat("dl_dst=", norm_macs[i]),
                     absl::StrFormat("mod_vlan_vid:%u,output:%u", in_id, fw)});
    flows.push_back({1, kPrioritySteer, c, absl::StrFormat("in_port=%u,%s", v.ofport, kGroupDst),
                     copies_to_vnics(v.ofport)});
  }
  for (uint32_t fw : fws) {
    flows.push_back(
        {0, kPriorityFirewallDefault, Cookie(0), absl::StrFormat("in_port=%u", fw), "drop"});
  }
  flows.push_back({0, kPriorityDefault, Cookie(0), "", "drop"});
  flows.push_back({1, kPriorityGroupFromUplink, Cookie(0), kGroupDst, copies_to_vnics(0)});
  flows.push_back({1, kPriorityDefault, Cookie(0), "", "NORMAL"});
  return flows;
}

}  // namespace dfw::ovs
