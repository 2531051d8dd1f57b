// The guest's nftables ruleset: a host desired state (compiled.proto) as
// one `table inet dfw`, with the dataplane's semantics.
//
// What. RenderTable() turns the vNICs' compiled rulesets and the address
// sets they use into nft's text syntax, to be applied as one transaction
// (nft_backend.h). The layout:
//
//   table inet dfw {
//     set a<N>_4 { type ipv4_addr; flags interval; comment "<address set id>" }
//     set a<N>_6 { type ipv6_addr; flags interval; ... }    one pair per AddressSet
//     chain input  { type filter hook input priority filter; policy accept;
//                    iif lo accept; <bypass>; iifname "<if>" jump in_<k>; ... }
//     chain output { type filter hook output ...; oif lo accept; <bypass>;
//                    oifname "<if>" jump out_<k>; ... }
//     chain in_<k>  { ct state invalid drop; ct state established
//                     ct mark != 0 accept; ct state related accept;
//                     <rules, first match>; <default> }
//     chain out_<k> { the same for traffic the VM sends }
//   }
//
// Conventions other parts rely on (flow records, counters, revalidation):
//  - A connection admitted by a stateful allow rule carries the rule's
//    rule_num in `ct mark`; 0 = none (stateless allows, bypass). Only marked
//    connections pass as established: a stateless allow's replies are
//    classified again, as in the dataplane. Related traffic (ICMP errors,
//    helpers' expected connections, and the RST / ICMP our reject sends,
//    which the kernel attaches to the rejected packet's conntrack as
//    related) passes whatever the mark, as the dataplane passes kRelated. The default rule's allow
//    is stateful (as in the dataplane) and marks kDefaultAllowMark; rule_num 0 is refused for a
//    rule (it is the default rule's number).
//  - Every rule has a counter and the comment "r<rule_num>" (the default
//    rule "r0", the invalid drop "ct-invalid"), so counters map back to
//    rules; one compiled rule may expand to several nft rules (families,
//    services, set pairs): their counters add up.
//  - A logged hit (rule.log, the default rule's log, every audit hit) goes
//    to NFLOG group `nflog_group` with the prefix "dfw:<kind>:<rule_num>",
//    kind one of allow, drop, reject, audit.
//  - Directions: IN = the input hook on that interface (to the VM), OUT =
//    the output hook; BOTH/unspecified = both. The guest is not a router:
//    forwarded traffic is not ours (docs/architecture.md, vmagent).
//
// Thread safety: pure functions; SetNames is a plain value.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "dfw/v1/compiled.pb.h"
#include "dfw/vmagent/addr_ranges.h"

namespace dfw::vmagent {

// Traffic that always passes, before any rule: without it a bad policy
// would cut the agent off from the controller that could fix it.
struct Bypass {
  std::vector<std::string> controller_ips;  // the controller's addresses (v4 or v6)
  uint16_t controller_port = 0;             // TCP; 0 = no controller bypass
  bool dhcp = true;                         // DHCPv4 client and DHCPv6 client
  bool neighbour_discovery = true;          // ICMPv6 NS/NA/RS/RA (ARP is not inet's)
};

struct RenderOptions {
  std::string table = "dfw";  // tests use their own
  uint16_t nflog_group = 1;
  bool audit_all = false;  // --audit-first: every drop/reject (and default) only logs
  Bypass bypass;
};

// Address set id -> nft set base name ("a<N>": sets a<N>_4 and a<N>_6).
// Names are stable for an id while it exists, so a delta can name a set
// without re-rendering; a new id takes the next free number.
class SetNames {
 public:
  const std::string& NameFor(const std::string& address_set_id);  // assigns when new
  const std::string* Find(const std::string& address_set_id) const;
  void Erase(const std::string& address_set_id);
  const std::map<std::string, std::string>& all() const { return names_; }

 private:
  std::map<std::string, std::string> names_;
  uint64_t next_ = 1;
};

// vNIC id -> chain number k (chains in_<k>, out_<k>), stable while the vNIC
// is enforced, so that a delta replaces one vNIC's chains alone.
class ChainIds {
 public:
  uint64_t IdFor(const std::string& vnic_id);  // assigns when new
  const uint64_t* Find(const std::string& vnic_id) const;
  void Erase(const std::string& vnic_id);
  const std::map<std::string, uint64_t>& all() const { return ids_; }

 private:
  std::map<std::string, uint64_t> ids_;
  uint64_t next_ = 1;
};

// ct mark of a connection the default rule admitted (stateful, rule_num 0).
inline constexpr uint32_t kDefaultAllowMark = 0xffffffffu;

// vNIC id -> interface name in the guest ("eth0").
using InterfaceMap = std::map<std::string, std::string>;

// The whole table, as the body of one nft transaction that replaces any
// table of that name ("table inet dfw\ndelete table inet dfw\ntable inet dfw
// {...}"), elements included. vNICs without an interface in `ifaces`, or
// whose interface name nft text cannot carry, are skipped and named in
// `*skipped` (if given): the others are enforced. INVALID_ARGUMENT names the
// vNIC, rule and field of anything that cannot be expressed.
// `chains` (optional) numbers the vNIC chains; without it they are numbered
// 1.. in the state's order.
absl::StatusOr<std::string> RenderTable(const dfw::v1::HostDesiredState& state,
                                        const InterfaceMap& ifaces, const RenderOptions& o,
                                        SetNames* names,
                                        std::vector<std::string>* skipped = nullptr,
                                        ChainIds* chains = nullptr);

// --- The parts RenderTable is made of; NftBackend uses them for deltas. ---
// Rules are nft statements as they follow "add rule inet <table> <chain> ".

// One vNIC's two chains. `names` must hold every address set the rules use
// (NOT_FOUND-free: a missing one is INVALID_ARGUMENT naming the rule).
struct VnicChains {
  std::string vnic_id;
  std::string iface;
  uint64_t id = 0;  // in_<id>, out_<id>
  std::vector<std::string> in;
  std::vector<std::string> out;
};
absl::StatusOr<VnicChains> RenderVnic(const dfw::v1::VNicRuleset& rs, const std::string& iface,
                                      uint64_t chain_id, const RenderOptions& o,
                                      const SetNames& names);

// The base chain's rules (input: is_input) with the bypass and one jump per vNIC.
absl::StatusOr<std::vector<std::string>> RenderBaseRules(bool is_input,
                                                         const std::vector<VnicChains>& vnics,
                                                         const RenderOptions& o);
// "type filter hook input priority filter; policy accept;"
std::string BaseChainSpec(bool is_input);
// "set a1_4 { type ipv4_addr; flags interval; comment "..."; elements = {...} }"
// without elements when `ranges` is empty. The comment was checked by
// CheckText (RenderTable does it).
std::string RenderSetDecl(const std::string& name, Family f, const std::string& comment,
                          const std::vector<AddrRange>& ranges);
std::string SetName(const std::string& base, Family f);  // "a1" -> "a1_4" / "a1_6"

// Checks text that goes into nft quotes (interface names, comments):
// printable ASCII without '"', '\\', '*' (nft's wildcard), at most max_len.
absl::Status CheckText(const std::string& text, const std::string& field, size_t max_len);
absl::Status CheckInterfaceName(const std::string& name, const std::string& field);
absl::Status CheckTableName(const std::string& name);

}  // namespace dfw::vmagent
