#include "dfw/controller/recommend.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <cstddef>
#include <cstdio>
#include <tuple>

namespace dfw::recommend {
namespace {

using nlohmann::json;

constexpr uint32_t kTcp = 6, kUdp = 17, kSctp = 132, kIcmp = 1, kIcmp6 = 58;
constexpr size_t kMaxId = 128;

bool HasPorts(uint32_t protocol) {
  return protocol == kTcp || protocol == kUdp || protocol == kSctp;
}

// "198.18.0.1:80" or "[2001:db8::1]:80" -> canonical address and port.
std::optional<std::pair<std::string, uint32_t>> SplitAddress(const std::string& text) {
  std::string host, port;
  if (!text.empty() && text[0] == '[') {
    const size_t close = text.find("]:");
    if (close == std::string::npos) return std::nullopt;
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string::npos) return std::nullopt;
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos)
    return std::nullopt;
  const unsigned long p = std::stoul(port);
  if (p > 65535) return std::nullopt;
  unsigned char bytes[16];
  char out[INET6_ADDRSTRLEN];
  const int family = host.find(':') == std::string::npos ? AF_INET : AF_INET6;
  if (inet_pton(family, host.c_str(), bytes) != 1 ||
      inet_ntop(family, bytes, out, sizeof out) == nullptr)
    return std::nullopt;
  return std::make_pair(std::string(out), static_cast<uint32_t>(p));
}

std::string Str(const json& j, const char* key) {
  const auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}

uint32_t Uint(const json& j, const char* key) {
  const auto it = j.find(key);
  if (it == j.end()) return 0;
  if (it->is_number_unsigned()) return it->get<uint32_t>();
  if (it->is_string()) {
    const std::string s = it->get<std::string>();
    if (!s.empty() && s.size() <= 9 && s.find_first_not_of("0123456789") == std::string::npos)
      return static_cast<uint32_t>(std::stoul(s));
  }
  return 0;
}

// What an endpoint stands for in the policy: a group (existing or proposed)
// or an address prefix.
struct Endpoint {
  bool group = true;
  std::string id;  // group id or prefix
  auto operator<=>(const Endpoint&) const = default;
};

using TagSet = std::set<std::pair<std::string, std::string>>;

// A VM's tags of one scope.
TagSet TagsOf(const VmFacts& vm, const std::string& scope) {
  TagSet out;
  for (const auto& t : vm.tags)
    if (t.first == scope) out.insert(t);
  return out;
}

class Builder {
 public:
  Builder(const Facts& facts, const Options& options, Recommendation* out)
      : facts_(facts), scope_(options.scope), out_(out) {}

  Endpoint Of(const std::string& vm_id, const std::string& ip) {
    const auto vm = vm_id.empty() ? facts_.vms.end() : facts_.vms.find(vm_id);
    if (vm == facts_.vms.end()) {
      return {false, ip + (ip.find(':') == std::string::npos ? "/32" : "/128")};
    }
    const TagSet app = scope_.empty() ? TagSet{} : TagsOf(vm->second, scope_);
    const std::string* best = nullptr;
    size_t best_size = 0;
    for (const std::string& g : vm->second.groups) {
      const auto members = facts_.group_members.find(g);
      if (members == facts_.group_members.end() || !WithinApp(members->second, app)) continue;
      const size_t size = members->second.size();
      if (!best || std::tie(size, g) < std::tie(best_size, *best)) {
        best = &g;
        best_size = size;
      }
    }
    if (best) return {true, *best};
    return {true, Proposed(vm_id, vm->second, app)};
  }

 private:
  // Every member carries exactly the application tags `app` (any group
  // when `app` is empty).
  bool WithinApp(const std::vector<std::string>& members, const TagSet& app) const {
    if (app.empty()) return true;
    for (const std::string& m : members) {
      const auto vm = facts_.vms.find(m);
      if (vm == facts_.vms.end() || TagsOf(vm->second, scope_) != app) return false;
    }
    return true;
  }

  // The proposed group that stands for a VM in no fitting group: the VMs
  // with its application tags, else with all its tags, else the VM itself.
  std::string Proposed(const std::string& vm_id, const VmFacts& vm, const TagSet& app) {
    const TagSet tags = !app.empty() ? app : TagSet(vm.tags.begin(), vm.tags.end());
    const std::string key = tags.empty() ? "vm " + vm_id : "";
    auto [it, fresh] = proposed_.try_emplace(std::make_pair(tags, key));
    Proposal& p = it->second;
    if (!fresh) {
      if (p.for_vms.insert(vm.name.empty() ? vm_id : vm.name).second) Describe(p);
      return p.id;
    }
    std::string name = "rec";
    json group;
    if (tags.empty()) {
      name += "-vm-" + (vm.name.empty() ? vm_id : vm.name);
      group["static_members"] = {{"vm_ids", json::array({vm_id})}};
    } else {
      json conditions = json::array();
      for (const auto& [scope, value] : tags) {
        name += "-" + (scope.empty() ? value : scope + "-" + value);
        conditions.push_back({{"tag", {{"scope", scope}, {"value", value}}}});
      }
      group["criteria"] = json::array({{{"conditions", conditions}}});
    }
    p.id = Unique(IdOf(name));
    p.index = out_->groups.size();
    p.for_vms.insert(vm.name.empty() ? vm_id : vm.name);
    group["id"] = p.id;
    group["display_name"] = p.id;
    out_->groups.push_back(group);
    Describe(p);
    return p.id;
  }

  // A proposed group and the VMs (names) it was drawn for.
  struct Proposal {
    std::string id;
    size_t index = 0;  // in out_->groups
    std::set<std::string> for_vms;
  };

  // "proposed ... for a, b, c, d, e and 7 more": a few names, not all.
  void Describe(const Proposal& p) {
    std::string text = "proposed by dfwctl policy recommend for ";
    size_t n = 0;
    for (const std::string& name : p.for_vms) {
      if (n == 5) break;
      text += (n++ ? ", " : "") + name;
    }
    if (p.for_vms.size() > n) text += " and " + std::to_string(p.for_vms.size() - n) + " more";
    out_->groups[p.index]["description"] = text;
  }

  std::string Unique(const std::string& id) {
    std::string out = id;
    for (int n = 2; facts_.existing_group_ids.count(out) || taken_.count(out); ++n) {
      const std::string suffix = "-" + std::to_string(n);
      out = id.substr(0, kMaxId - suffix.size()) + suffix;
    }
    taken_.insert(out);
    return out;
  }

  const Facts& facts_;
  const std::string scope_;
  Recommendation* out_;
  // (tags, "vm <id>" for an untagged VM) -> its proposed group
  std::map<std::pair<TagSet, std::string>, Proposal> proposed_;
  std::set<std::string> taken_;
};

// An endpoint set of a rule: its groups and its prefixes.
json EndpointsJson(const std::vector<Endpoint>& set) {
  json out = json::object();
  for (const Endpoint& e : set) out[e.group ? "group_ids" : "ip_prefixes"].push_back(e.id);
  return out;
}

// A set cut into parts a rule's endpoint takes (groups and prefixes each
// under their limit).
std::vector<std::vector<Endpoint>> Chunks(const std::set<Endpoint>& set) {
  std::vector<std::vector<Endpoint>> out(1);
  size_t groups = 0, prefixes = 0;
  for (const Endpoint& e : set) {
    size_t& n = e.group ? groups : prefixes;
    if (n == (e.group ? kMaxGroupsPerEndpoint : kMaxPrefixesPerEndpoint)) {
      out.emplace_back();
      groups = prefixes = 0;
    }
    out.back().push_back(e);
    ++n;
  }
  return out;
}

const char* ProtocolName(uint32_t p) {
  switch (p) {
    case kTcp:
      return "tcp";
    case kUdp:
      return "udp";
    case kSctp:
      return "sctp";
    case kIcmp:
      return "icmp";
    case kIcmp6:
      return "icmp6";
    default:
      return nullptr;
  }
}

// The services of one rule: ports per protocol, merged into ranges.
json ServicesJson(const std::map<uint32_t, std::set<uint32_t>>& seen, std::string* text) {
  json out = json::array();
  for (const auto& [protocol, ports] : seen) {
    const char* name = ProtocolName(protocol);
    const std::string proto = name ? name : "protocol " + std::to_string(protocol);
    if (!text->empty()) *text += ", ";
    json s = {{"protocol", protocol}};
    if (HasPorts(protocol)) {
      json ranges = json::array();
      std::string list;
      for (auto it = ports.begin(); it != ports.end();) {
        uint32_t first = *it, last = *it;
        for (++it; it != ports.end() && *it == last + 1; ++it) last = *it;
        json r = {{"first", first}};
        if (last != first) r["last"] = last;
        ranges.push_back(r);
        list += (list.empty() ? "" : ",") + std::to_string(first) +
                (last != first ? "-" + std::to_string(last) : "");
      }
      *text += proto + "/" + list;
      for (size_t at = 0; at < ranges.size(); at += kMaxPortRangesPerService) {
        json part = s;
        part["destination_ports"] =
            json(ranges.begin() + static_cast<std::ptrdiff_t>(at),
                 ranges.begin() + static_cast<std::ptrdiff_t>(
                                      std::min(ranges.size(), at + kMaxPortRangesPerService)));
        out.push_back(part);
      }
      continue;
    }
    if (protocol == kIcmp || protocol == kIcmp6) {
      s["icmp_type"] = protocol == kIcmp ? 8 : 128;  // echo request
      *text += proto + " echo";
    } else {
      *text += proto;
    }
    out.push_back(s);
  }
  return out;
}

}  // namespace

std::string IdOf(const std::string& text) {
  std::string id;
  for (unsigned char c : text) {
    const bool ok = std::isalnum(c) || c == '.' || c == '_' || c == ':' || c == '-';
    id += ok ? static_cast<char>(c) : '-';
  }
  if (id.empty() || id == "." || id == "..") id = "id" + id;
  if (id.size() > kMaxId) {
    uint32_t h = 2166136261u;  // FNV-1a of the whole text
    for (unsigned char c : text) h = (h ^ c) * 16777619u;
    char hex[10];
    std::snprintf(hex, sizeof hex, "-%08x", h);
    id = id.substr(0, kMaxId - 9) + hex;
  }
  return id;
}

std::optional<Connection> ConnectionOf(const json& observed) {
  if (!observed.is_object() || observed.contains("lost") || observed.contains("missed"))
    return std::nullopt;
  const auto rec = observed.find("record");
  if (rec == observed.end() || !rec->is_object()) return std::nullopt;
  const std::string kind = Str(*rec, "kind");
  if (kind != "KIND_ALLOWED" && kind != "KIND_AUDIT") return std::nullopt;
  const auto src = SplitAddress(Str(*rec, "src")), dst = SplitAddress(Str(*rec, "dst"));
  if (!src || !dst) return std::nullopt;
  Connection c;
  c.protocol = Uint(*rec, "protocol");
  if (c.protocol == 0 || c.protocol > 255) return std::nullopt;  // 0 would be "any"
  c.port = HasPorts(c.protocol) ? dst->second : 0;
  c.client_ip = src->first;
  c.server_ip = dst->first;
  // The record's VM is the source of an OUT record, the destination of an
  // IN one; the peer is the other end.
  const bool in = Str(*rec, "direction") == "DIRECTION_IN";
  (in ? c.server_vm : c.client_vm) = Str(observed, "vm_id");
  (in ? c.client_vm : c.server_vm) = Str(observed, "peer_vm_id");
  return c;
}

Recommendation Recommend(const std::vector<Connection>& connections, const Facts& facts,
                         const Options& options) {
  Recommendation out;
  Builder builder(facts, options, &out);
  const std::set<Connection> unique(connections.begin(), connections.end());
  using Services = std::map<uint32_t, std::set<uint32_t>>;  // protocol -> ports (or 0)
  std::map<std::pair<Endpoint, Endpoint>, Services> pairs;
  std::vector<std::pair<const Connection*, std::pair<Endpoint, Endpoint>>> mapped;
  for (const Connection& c : unique) {
    auto key =
        std::make_pair(builder.Of(c.client_vm, c.client_ip), builder.Of(c.server_vm, c.server_ip));
    pairs[key][c.protocol].insert(c.port);
    mapped.emplace_back(&c, key);
  }
  // Fewer rules, the same connections allowed: the sources of one
  // destination with the same services share a rule, then the destinations
  // of one source set with the same services.
  std::map<std::pair<Endpoint, Services>, std::set<Endpoint>> sources_of;
  for (const auto& [key, services] : pairs) sources_of[{key.second, services}].insert(key.first);
  std::map<std::pair<std::set<Endpoint>, Services>, std::set<Endpoint>> merged;
  for (const auto& [key, sources] : sources_of) merged[{sources, key.second}].insert(key.first);

  std::map<std::pair<Endpoint, Endpoint>, std::string> rule_of;
  std::set<std::string> taken;
  json rules = json::array();
  for (const auto& [key, destinations] : merged) {
    const auto& [sources, services] = key;
    std::string text;
    const json all = ServicesJson(services, &text);
    const auto src_chunks = Chunks(sources), dst_chunks = Chunks(destinations);
    for (const auto& src : src_chunks) {
      for (const auto& dst : dst_chunks) {
        for (size_t s = 0; s < all.size(); s += kMaxServicesPerRule) {
          auto label = [](const std::vector<Endpoint>& e) {
            return e[0].id + (e.size() > 1 ? "-and-" + std::to_string(e.size() - 1) + "-more" : "");
          };
          std::string id = IdOf("allow-" + label(src) + "-to-" + label(dst));
          for (int n = 2; taken.count(id); ++n) {
            const std::string suffix = "-" + std::to_string(n);
            id = IdOf("allow-" + label(src) + "-to-" + label(dst))
                     .substr(0, kMaxId - suffix.size()) +
                 suffix;
          }
          taken.insert(id);
          for (const Endpoint& a : src)
            for (const Endpoint& b : dst) rule_of[{a, b}] = id;
          auto names = [](const std::vector<Endpoint>& e) {
            std::string t;
            for (const Endpoint& x : e) t += (t.empty() ? "" : ", ") + x.id;
            return t;
          };
          std::string display = names(src) + " -> " + names(dst) + " : " + text;
          if (display.size() > kMaxDisplayName)
            display = display.substr(0, kMaxDisplayName - 3) + "...";
          json chunk(all.begin() + static_cast<std::ptrdiff_t>(s),
                     all.begin() + static_cast<std::ptrdiff_t>(
                                       std::min(all.size(), s + kMaxServicesPerRule)));
          rules.push_back({{"id", id},
                           {"display_name", display},
                           {"sources", EndpointsJson(src)},
                           {"destinations", EndpointsJson(dst)},
                           {"services", chunk},
                           {"action", "ACTION_ALLOW"},
                           {"log", true}});
        }
      }
    }
  }
  if (rules.size() > kMaxRulesPerPolicy) {
    out.error = std::to_string(rules.size()) + " rules; a policy holds at most " +
                std::to_string(kMaxRulesPerPolicy) +
                ": narrow what is recommended for (a group, a VM, a host)";
  }
  out.policy = {{"id", options.policy_id},
                {"display_name",
                 "Recommended from " + std::to_string(unique.size()) + " observed connection(s)"},
                {"category", "CATEGORY_APPLICATION"},
                {"priority", options.priority},
                {"stateful", true},
                {"mode", options.enforce ? "POLICY_MODE_ENFORCE" : "POLICY_MODE_AUDIT"},
                {"rules", rules}};
  for (const auto& [c, key] : mapped) {
    auto name = [&](const std::string& vm, const std::string& ip) {
      const auto it = facts.vms.find(vm);
      return it == facts.vms.end() || it->second.name.empty() ? ip : it->second.name;
    };
    out.observed.push_back({{"client", name(c->client_vm, c->client_ip)},
                            {"server", name(c->server_vm, c->server_ip)},
                            {"protocol", c->protocol},
                            {"port", c->port},
                            {"rule", rule_of[key]}});
  }
  return out;
}

}  // namespace dfw::recommend
