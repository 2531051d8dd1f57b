// The nftables backend of dfw-vmagent: puts a host desired state into the
// guest's kernel as `table inet <RenderOptions.table>` (nft_ruleset.h) and
// keeps it there cheaply.
//
// What.
//  - ApplyFull(): the whole table as ONE libnftables transaction (the table
//    is replaced; elements included). The merged ranges of every address
//    set are kept in memory (addr_ranges.h), so later changes never read the
//    kernel's sets back.
//  - ApplyDelta(): (1) changed/removed vNIC rulesets, new and removed address
//    sets, the base chains: ONE libnftables transaction of `add set`,
//    `flush chain`/`add chain` + `add rule`, `delete chain`, `delete set`
//    (measured: nft does not fetch set elements for these, 25 ms with 100k
//    elements in the table); (2) address set element changes (deltas, and a
//    re-sent existing set): ONE libnftnl batch of NFT_MSG_DELSETELEM then
//    NFT_MSG_NEWSETELEM (one kernel transaction), computed from the in-memory
//    ranges, encoded as nft itself encodes interval sets (start element; end
//    element flagged NFT_SET_ELEM_INTERVAL_END at last+1; a range ending at
//    the family's top address has no end element and carries nft's
//    "interval open" userdata; an end element at address 0 while the set is
//    non-empty and does not start at 0, as nft adds it).
//    Each transaction is all-or-nothing. A delta that has both kinds is two
//    transactions, rules first: if (1) fails nothing changed; if (2) fails
//    the new rules are in force with the previous elements (the error says
//    so, and the in-memory model matches the kernel).
//  - Counters(): packets/bytes per rule_num (the "r<N>" comments summed) and
//    per drop reason, from a libnftnl rule dump of the table (no set
//    elements are read).
//  - Verify(): table, chains, each chain's rule count and the sets against
//    what was applied, from libnftnl dumps of tables/chains/rules/sets
//    (set definitions only, never elements).
//
// Namespaces: every call opens its netlink sockets (libnftables context,
// libmnl socket) in the network namespace of the calling thread at that
// moment, and closes them before returning.
//
// Thread safety: none. One NftBackend is used by one thread (the agent's
// apply loop); it is movable, not copyable.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "dfw/v1/compiled.pb.h"
#include "dfw/vmagent/addr_ranges.h"
#include "dfw/vmagent/nft_ruleset.h"

namespace dfw::vmagent {

struct PacketsBytes {
  uint64_t packets = 0;
  uint64_t bytes = 0;
};

struct NftCounters {
  std::map<uint32_t, PacketsBytes> rules;  // rule_num -> sum over its nft rules (0 = default)
  // "ct-invalid", "default-rule", "policy-drop", "policy-reject".
  std::map<std::string, PacketsBytes> drops;
};

// One kernel element of an interval set as nft encodes it (see above).
struct SetElement {
  Addr key;
  bool end = false;   // NFT_SET_ELEM_INTERVAL_END
  bool open = false;  // the range runs to the top address (userdata flag)
  auto operator<=>(const SetElement&) const = default;
};
// The kernel elements of a set holding `ranges` (sorted), nft's encoding.
std::vector<SetElement> ElementsOf(Family f, const std::vector<AddrRange>& ranges);

class NftBackend {
 public:
  NftBackend() = default;
  NftBackend(NftBackend&&) = default;
  NftBackend& operator=(NftBackend&&) = default;

  // Replaces the table. On error the kernel is unchanged (and so is this
  // object's model). vNICs without an interface are skipped (skipped()).
  absl::Status ApplyFull(const dfw::v1::HostDesiredState& state, const InterfaceMap& ifaces,
                         const RenderOptions& o);
  // Needs a successful ApplyFull first (FAILED_PRECONDITION). from_revision
  // must be the applied revision (FAILED_PRECONDITION otherwise). `ifaces`
  // is the current map: a vNIC whose interface changed is re-rendered.
  absl::Status ApplyDelta(const dfw::v1::HostDelta& delta, const InterfaceMap& ifaces);

  absl::StatusOr<NftCounters> Counters() const;
  // OK, or FAILED_PRECONDITION / NOT_FOUND naming what differs.
  absl::Status Verify() const;

  // The model of what is in force.
  bool applied() const { return applied_; }
  uint64_t revision() const { return revision_; }
  const std::map<std::string, v1::VNicRuleset>& rulesets() const { return rulesets_; }
  const AddrRanges* Set(const std::string& address_set_id) const;
  const SetNames& set_names() const { return names_; }
  const std::vector<std::string>& skipped() const { return skipped_; }
  const RenderOptions& options() const { return options_; }

  // What the last ApplyDelta did (the benchmark reads it).
  struct DeltaStats {
    double nft_ms = 0;       // the libnftables transaction, 0 when none
    double elements_ms = 0;  // the libnftnl batch, 0 when none
    size_t elements_sent = 0;
  };
  const DeltaStats& last_delta() const { return last_delta_; }

 private:
  struct SetState {
    AddrRanges ranges;
  };
  bool applied_ = false;
  uint64_t revision_ = 0;
  RenderOptions options_;
  InterfaceMap ifaces_;
  std::map<std::string, v1::VNicRuleset> rulesets_;  // all sent, with or without interface
  std::map<std::string, VnicChains> chains_;         // those enforced (with an interface)
  std::map<std::string, SetState> sets_;
  SetNames names_;
  ChainIds chain_ids_;
  std::vector<std::string> skipped_;
  DeltaStats last_delta_;
};

}  // namespace dfw::vmagent
