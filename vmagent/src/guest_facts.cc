#include "dfw/vmagent/guest_facts.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netpacket/packet.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <fstream>
#include <set>

namespace dfw::vmagent {
namespace {

std::string Trim(std::string s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  size_t i = 0;
  while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
  return s.substr(i);
}

bool IsUuid(const std::string& s) {
  if (s.size() != 36) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (s[i] != '-') return false;
    } else if (!std::isxdigit(static_cast<unsigned char>(s[i]))) {
      return false;
    }
  }
  return true;
}

}  // namespace

absl::StatusOr<std::string> ReadVmUuid(const FactsOptions& o) {
  std::string u = o.vm_uuid;
  std::string from = "--vm-uuid";
  if (u.empty()) {
    std::ifstream f(o.uuid_file);
    if (!f) {
      return absl::NotFoundError("vm uuid: cannot read " + o.uuid_file +
                                 " (no SMBIOS? give --vm-uuid)");
    }
    std::getline(f, u);
    from = o.uuid_file;
  }
  u = Trim(u);
  std::transform(u.begin(), u.end(), u.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (!IsUuid(u)) {
    return absl::InvalidArgumentError("vm uuid: '" + u + "' from " + from + " is not a UUID");
  }
  return u;
}

std::string VnicIdFor(const std::string& uuid, const std::string& ifname) {
  std::string out = uuid + ".";
  for (char c : ifname) {
    bool ok =
        std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-' || c == ':';
    out += ok ? c : '_';
  }
  return out;
}

absl::StatusOr<std::vector<GuestInterface>> ListInterfaces(const FactsOptions& o) {
  struct ifaddrs* all = nullptr;
  if (getifaddrs(&all) != 0) return absl::InternalError("getifaddrs failed");
  std::map<std::string, GuestInterface> by_name;
  std::set<std::string> wanted(o.interfaces.begin(), o.interfaces.end());
  for (auto* a = all; a != nullptr; a = a->ifa_next) {
    if (a->ifa_name == nullptr || a->ifa_addr == nullptr) continue;
    std::string name = a->ifa_name;
    if (wanted.empty()) {
      // Up or down: an interface whose link goes down and up again keeps
      // its chains (dropping it would leave it unfiltered when it is up).
      if (a->ifa_flags & IFF_LOOPBACK) continue;
    } else if (!wanted.count(name)) {
      continue;
    }
    GuestInterface& g = by_name[name];
    g.name = name;
    g.ifindex = static_cast<int>(if_nametoindex(name.c_str()));
    int fam = a->ifa_addr->sa_family;
    if (fam == AF_PACKET) {
      const auto* ll = reinterpret_cast<const struct sockaddr_ll*>(a->ifa_addr);
      if (ll->sll_halen == 6) {
        char mac[18];
        std::snprintf(mac, sizeof mac, "%02x:%02x:%02x:%02x:%02x:%02x", ll->sll_addr[0],
                      ll->sll_addr[1], ll->sll_addr[2], ll->sll_addr[3], ll->sll_addr[4],
                      ll->sll_addr[5]);
        g.mac = mac;
      }
    } else if (fam == AF_INET) {
      char buf[INET_ADDRSTRLEN];
      const auto* in = reinterpret_cast<const struct sockaddr_in*>(a->ifa_addr);
      if (inet_ntop(AF_INET, &in->sin_addr, buf, sizeof buf)) g.addresses.push_back(buf);
    } else if (fam == AF_INET6) {
      const auto* in6 = reinterpret_cast<const struct sockaddr_in6*>(a->ifa_addr);
      if (IN6_IS_ADDR_LINKLOCAL(&in6->sin6_addr)) continue;
      char buf[INET6_ADDRSTRLEN];
      if (inet_ntop(AF_INET6, &in6->sin6_addr, buf, sizeof buf)) g.addresses.push_back(buf);
    }
  }
  freeifaddrs(all);
  std::vector<GuestInterface> out;
  for (auto& [name, g] : by_name) {
    std::sort(g.addresses.begin(), g.addresses.end());
    g.addresses.erase(std::unique(g.addresses.begin(), g.addresses.end()), g.addresses.end());
    out.push_back(std::move(g));
  }
  for (const auto& w : wanted) {
    if (!by_name.count(w)) return absl::NotFoundError("interface '" + w + "': no such interface");
  }
  return out;
}

std::string ReadOsPrettyName(const std::string& path) {
  std::ifstream f(path);
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("PRETTY_NAME=", 0) != 0) continue;
    std::string v = Trim(line.substr(12));
    if (v.size() >= 2 && (v.front() == '"' || v.front() == '\'') && v.back() == v.front()) {
      v = v.substr(1, v.size() - 2);
    }
    return v;
  }
  return "";
}

std::string Hostname(const FactsOptions& o) {
  if (!o.hostname.empty()) return o.hostname;
  char buf[256] = {};
  gethostname(buf, sizeof(buf) - 1);
  return buf;
}

dfw::v1::Vm FactsToVm(const std::string& uuid, const std::string& hostname, const std::string& os,
                      const std::vector<GuestInterface>& ifaces) {
  dfw::v1::Vm vm;
  vm.set_id(uuid);
  vm.set_name(hostname);
  vm.mutable_guest()->set_os(os);
  vm.mutable_guest()->set_hostname(hostname);
  for (const auto& i : ifaces) {
    auto* n = vm.add_vnics();
    n->set_id(VnicIdFor(uuid, i.name));
    n->set_mac(i.mac);
    for (const auto& a : i.addresses) {
      auto* b = n->add_addresses();
      b->set_ip(a);
      b->set_source(dfw::v1::ADDRESS_SOURCE_GUEST_AGENT);
    }
  }
  return vm;
}

}  // namespace dfw::vmagent
