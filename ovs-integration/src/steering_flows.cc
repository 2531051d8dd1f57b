#include "dfw/ovs/steering_flows.h"

#include <arpa/inet.h>

#include <cctype>
#include <map>
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

// A vNIC's bound addresses in the form OVS prints them, each once, sorted.
struct BoundAddresses {
  std::set<std::string> v4, v6;
};

// Parses one bound address ("198.18.10.11", "2001:db8::5", optionally with
// a full-length prefix "/32", "/128", as the dataplane's bound_ips take
// them) into *out; false if it is not one such address.
bool AddBoundAddress(const std::string& text, BoundAddresses* out) {
  std::string addr = text;
  int full_len = -1;  // the prefix length written, -1 if none
  if (const size_t slash = text.find('/'); slash != std::string::npos) {
    const std::string len = text.substr(slash + 1);
    if (len != "32" && len != "128") return false;
    full_len = len == "32" ? 32 : 128;
    addr = text.substr(0, slash);
  }
  char buf[INET6_ADDRSTRLEN];
  unsigned char raw[16];
  if (full_len != 128 && inet_pton(AF_INET, addr.c_str(), raw) == 1) {
    out->v4.insert(inet_ntop(AF_INET, raw, buf, sizeof buf));
    return true;
  }
  if (full_len != 32 && inet_pton(AF_INET6, addr.c_str(), raw) == 1) {
    out->v6.insert(inet_ntop(AF_INET6, raw, buf, sizeof buf));
    return true;
  }
  return false;
}

// The flows of excluded vNIC `v` (normalized MAC `mac`, bound addresses `a`)
// instead of its steering flows: OVS port security mirroring the dataplane's
// spoofguard, then table 1 as from an uplink; delivery straight to it
// (steering_flows.h).
void AppendExcludedFlows(const VnicSteering& v, const std::string& mac, const BoundAddresses& a,
                         std::vector<FlowSpec>* flows) {
  const uint64_t c = Cookie(v.ofport);
  const std::string in_port = absl::StrFormat("in_port=%u", v.ofport);
  const std::string from = absl::StrCat(in_port, ",dl_src=", mac);
  constexpr const char* kOk = "resubmit(,1)";
  constexpr const char* kNoLladdr = "00:00:00:00:00:00";  // OVS: no such option
  auto add = [&](uint16_t priority, const std::string& match, const char* actions) {
    flows->push_back({0, priority, c, match, actions});
  };
  add(kPriorityVmTagged, in_port + ",vlan_tci=0x1000/0x1000", "drop");
  // Router advertisements and redirects come from routers, not VMs. A
  // neighbour message whose options OVS could not parse (e.g. a second
  // link-layer option, which the spoofguard would judge by the last one)
  // has nd_target :: in OVS: dropped, whatever else it matches.
  add(kPriorityExcludedNdDeny, in_port + ",icmp6,icmp_type=134", "drop");
  add(kPriorityExcludedNdDeny, in_port + ",icmp6,icmp_type=137", "drop");
  add(kPriorityExcludedNdDeny, in_port + ",icmp6,icmp_type=135,icmp_code=0,nd_target=::", "drop");
  add(kPriorityExcludedNdDeny, in_port + ",icmp6,icmp_type=136,icmp_code=0,nd_target=::", "drop");
  // Solicitations from its addresses, or from :: (duplicate address
  // detection), with its MAC or no source link-layer option.
  std::set<std::string> ns_sources = a.v6;
  ns_sources.insert("::");
  for (const std::string& src : ns_sources) {
    for (const std::string& lladdr : {mac, std::string(kNoLladdr)}) {
      add(kPriorityExcludedNd,
          absl::StrCat(from, ",icmp6,ipv6_src=", src, ",icmp_type=135,icmp_code=0,nd_sll=", lladdr),
          kOk);
    }
  }
  // Advertisements from its addresses of its addresses, with its MAC or no
  // target link-layer option.
  for (const std::string& src : a.v6) {
    for (const std::string& target : a.v6) {
      for (const std::string& lladdr : {mac, std::string(kNoLladdr)}) {
        add(kPriorityExcludedNd,
            absl::StrCat(from, ",icmp6,ipv6_src=", src,
                         ",icmp_type=136,icmp_code=0,nd_target=", target, ",nd_tll=", lladdr),
            kOk);
      }
    }
  }
  add(kPriorityExcludedNdDefault, in_port + ",icmp6,icmp_type=135", "drop");
  add(kPriorityExcludedNdDefault, in_port + ",icmp6,icmp_type=136", "drop");
  // ARP from its MAC and addresses; sender 0.0.0.0 is a probe (RFC 5227).
  std::set<std::string> arp_senders = a.v4;
  arp_senders.insert("0.0.0.0");
  for (const std::string& spa : arp_senders) {
    add(kPriorityExcludedSource, absl::StrCat(from, ",arp,arp_spa=", spa, ",arp_sha=", mac), kOk);
  }
  for (const std::string& src : a.v4) {
    add(kPriorityExcludedSource, absl::StrCat(from, ",ip,nw_src=", src), kOk);
  }
  // A DHCP client has no address yet.
  add(kPriorityExcludedSource, from + ",udp,nw_src=0.0.0.0,tp_src=68,tp_dst=67", kOk);
  for (const std::string& src : a.v6) {
    add(kPriorityExcludedSource, absl::StrCat(from, ",ipv6,ipv6_src=", src), kOk);
  }
  add(kPrioritySteer, in_port, "drop");
  flows->push_back(
      {1, kPrioritySteer, c, absl::StrCat("dl_dst=", mac), absl::StrFormat("output:%u", v.ofport)});
}

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
  std::vector<BoundAddresses> bound(config.vnics.size());
  std::map<std::string, uint32_t> address_owner;  // address -> vNIC ofport
  for (size_t i = 0; i < config.vnics.size(); ++i) {
    const VnicSteering& v = config.vnics[i];
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
    for (const std::string& text : v.addresses) {
      if (!AddBoundAddress(text, &bound[i])) {
        return absl::InvalidArgumentError(
            absl::StrCat(what, "address '", text, "' is not one IPv4 or IPv6 address"));
      }
    }
    // Two vNICs with one address could each send as the other.
    for (const std::set<std::string>* family : {&bound[i].v4, &bound[i].v6}) {
      for (const std::string& addr : *family) {
        if (auto [it, fresh] = address_owner.emplace(addr, v.ofport); !fresh) {
          return absl::InvalidArgumentError(absl::StrCat(
              what, "address ", addr, " is bound to another vNIC (ofport ", it->second, ")"));
        }
      }
    }
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

  // Copies of a group-addressed frame into the ingress of each protected
  // local vNIC but `except`: "mod_vlan_vid:<R|0x800>,output:<fw>," per
  // receiver R. Excluded vNICs get NORMAL's flood instead.
  auto copies_to_vnics = [&](uint32_t except) {
    std::string out;
    for (const VnicSteering& r : config.vnics) {
      if (r.ofport == except || r.excluded) continue;
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
    if (v.excluded) {
      AppendExcludedFlows(v, norm_macs[i], bound[i], &flows);
      continue;
    }
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
