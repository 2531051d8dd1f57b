// dfw::recommend: a draft policy from observed connections, the heart of
// `dfwctl policy recommend` (the staged rollout: a default-deny policy in
// audit mode, observe, recommend, enforce).
//
// Input: the connections that flow records show (allowed and audit records,
// as GET /api/v1/flows returns them), the facts of the VMs at their ends
// (tags, groups) and the size of those groups. Output: the groups to create
// and one policy whose rules allow exactly those connections, at the grain of
// groups:
//  - a VM stands for its smallest existing group (fewest VMs; ties: the
//    lowest id) that does not reach across applications: every member
//    carries the VM's values of the application scope (Options::scope,
//    "app" by default; a VM without that scope, or scope "", takes any
//    group). A VM with no such group stands for a proposed group of the VMs
//    that carry its application tags (all of its tags, when it has none of
//    that scope), or, with no tag at all, a proposed group listing it;
//  - an address that is no known VM's stands for itself (/32 or /128);
//  - one rule per (source, destination) pair, allowing the services seen:
//    TCP/UDP/SCTP destination ports (adjacent ports merged into ranges),
//    ICMP/ICMPv6 echo, any other protocol whole.
// The policy is in audit mode unless asked to enforce, logs its hits (so
// observing goes on) and is applied to the groups its rules name.
//
// Pure functions, no I/O; thread-compatible.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace dfw::recommend {

// One connection as its initiator opened it.
struct Connection {
  std::string client_vm;  // VM id; "" when the address is no known VM's
  std::string client_ip;  // address text, canonical, no port
  std::string server_vm;
  std::string server_ip;
  uint32_t protocol = 0;  // IP protocol number
  uint32_t port = 0;      // TCP/UDP/SCTP destination port; 0 for other protocols
  auto operator<=>(const Connection&) const = default;
};

// The connection an observed flow record (an ObservedFlow in proto JSON)
// shows, or nullopt: a loss marker, a denied or ended record, a record whose
// addresses do not parse.
std::optional<Connection> ConnectionOf(const nlohmann::json& observed);

struct VmFacts {
  std::string name;
  std::vector<std::pair<std::string, std::string>> tags;  // effective (scope, value)
  std::vector<std::string> groups;  // ids of the groups it is in (the ends' only)
};

struct Facts {
  // By id: the VMs at the connections' ends (a VM not here stands for its
  // address), and the members of their groups (for their tags).
  std::map<std::string, VmFacts> vms;
  // The VMs of each group an end is in; a group not here is no candidate.
  std::map<std::string, std::vector<std::string>> group_members;
  std::set<std::string> existing_group_ids;  // every group: proposed ids avoid them
};

struct Options {
  std::string policy_id = "recommended";
  bool enforce = false;  // false: POLICY_MODE_AUDIT
  int priority = 100;
  std::string scope = "app";  // the application scope ("": groups may span anything)
};

// The controller's limits on one policy (policy_validator.h; a test checks
// they agree): a recommendation keeps within them, cutting a rule's endpoint
// sets and services into several rules, and says when it cannot.
inline constexpr size_t kMaxRulesPerPolicy = 1000;
inline constexpr size_t kMaxServicesPerRule = 64;
inline constexpr size_t kMaxPortRangesPerService = 64;
inline constexpr size_t kMaxGroupsPerEndpoint = 256;
inline constexpr size_t kMaxPrefixesPerEndpoint = 4096;
inline constexpr size_t kMaxDisplayName = 256;

struct Recommendation {
  nlohmann::json groups = nlohmann::json::array();  // SecurityGroup (proto JSON) to create
  nlohmann::json policy;                            // Policy (proto JSON)
  // A line per connection: {client, server, protocol, port, rule}.
  nlohmann::json observed = nlohmann::json::array();
  std::string error;  // why the policy cannot be applied as it is ("" when it can)
};

// Connections may repeat (both ends record one); each counts once.
Recommendation Recommend(const std::vector<Connection>& connections, const Facts& facts,
                         const Options& options);

// `text` made an id (1..128 of [A-Za-z0-9._:-]): other characters become
// '-'; a longer one is cut and ends in a hash of the whole.
std::string IdOf(const std::string& text);

}  // namespace dfw::recommend
