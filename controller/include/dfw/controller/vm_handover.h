// VmHandover: who takes a VM over when it moves between hypervisors, and the
// connections that move with it.
//
// What. A VM has one owner host (Vm.host): the only host that gets its
// rules. During a live migration two hosts report the VM at once (libvirt
// starts the destination paused while the source still runs). The
// destination's report is then a *claim*: remembered here, not applied. When
// the owner lets the VM go (its report no longer lists it), the newest claim
// of a connected host becomes the VM in the same change: the VM never leaves
// the model, its addresses never leave its groups, and only one host at a
// time holds its rules. A host that still lists a VM another connected host
// owns (a stale report from the source after the move, or a host restarted
// with an old view) only adds a claim: it cannot take the VM back while the
// owner keeps it.
//
// Connections. Before its report drops a VM, the owner's agent exports the
// VM's vNIC connections from its dataplane (host.proto, ConnectionExport).
// They are kept here (bounded, for kExportTtl) and handed to the next owner
// as ConnectionImport messages, which its feed sends before the revision
// that gives it the VM's rules. An export is taken by an owner other than
// its sender only: it also serves a VM removed first and reported by the
// new host a moment later.
//
// Limits. At most kMaxEntriesPerVnic entries per vNIC and kMaxEntries kept
// in all; an export beyond them is cut (the rest of that vNIC's entries are
// dropped and counted) — the VM then moves with fewer connections, never
// with wrong ones.
//
// Thread safety: none; the ModelService calls it under its writer lock.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "dfw/v1/host.pb.h"
#include "dfw/v1/model.pb.h"

namespace dfw::controller {

struct HandoverStats {
  uint64_t claims_waiting = 0;   // (vm, host) claims held now
  uint64_t handovers = 0;        // VMs given to a claimant when their owner let go
  uint64_t exports = 0;          // vNIC exports received complete
  uint64_t imports_sent = 0;     // vNIC imports handed to a new owner
  uint64_t entries_moved = 0;    // connections in those imports
  uint64_t entries_dropped = 0;  // cut by the limits, or expired before a new owner came
};

class VmHandover {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr std::chrono::seconds kExportTtl{60};
  static constexpr size_t kMaxEntriesPerVnic = 262144;  // the dataplane's per-vNIC default
  static constexpr size_t kMaxEntries = 4 * kMaxEntriesPerVnic;
  static constexpr int kEntriesPerImport = 8192;  // per ConnectionImport message

  // `host` reports `vm` (Vm.host already set to it) while another host owns
  // it: kept as its claim (replacing its previous one).
  void Claim(const dfw::v1::Vm& vm, Clock::time_point now);
  // `host` no longer reports these VMs (InventoryUpdate.vms_removed).
  void Unclaim(const std::string& vm_id, const std::string& host);
  // A Hello lists every VM of `host`: its claims of VMs not in `listed` go.
  void KeepClaims(const std::string& host, const std::function<bool(const std::string&)>& listed);
  // The claim that takes `vm_id` over now that `owner` let it go: the newest
  // of a host for which `eligible` is true (connected, not the owner), or
  // nullopt. The chosen claim is removed; the others stay.
  std::optional<dfw::v1::Vm> TakeClaim(const std::string& vm_id, const std::string& owner,
                                       const std::function<bool(const std::string&)>& eligible);
  // Hosts claiming `vm_id` (for read-outs), sorted.
  std::vector<std::string> Claimants(const std::string& vm_id) const;

  // One chunk of the owner's export (the caller checked that `host` owns
  // msg.vm_id() and that the vNIC is the VM's). A first chunk of a vNIC
  // replaces an older export of that vNIC. INVALID_ARGUMENT when the message
  // is malformed (no vm_id or vnic_id); the limits cut, they do not fail.
  absl::Status AddExport(const std::string& host, dfw::v1::ConnectionExport msg,
                         Clock::time_point now);
  // The imports for `new_owner` of `vm_id`: the complete vNIC exports of
  // another host, younger than kExportTtl, in chunks of kEntriesPerImport
  // (`last` on each vNIC's final chunk). They are removed.
  std::vector<dfw::v1::ConnectionImport> TakeImports(const std::string& vm_id,
                                                     const std::string& new_owner,
                                                     Clock::time_point now);
  // Drops exports older than kExportTtl.
  void Expire(Clock::time_point now);

  HandoverStats stats() const;

 private:
  struct VnicExport {
    std::vector<dfw::v1::ConnectionEntry> entries;
    bool complete = false;
    uint64_t cut = 0;  // entries dropped by the limits
  };
  struct VmExport {
    std::string host;
    Clock::time_point at;
    std::map<std::string, VnicExport> vnics;
  };
  struct ClaimRec {
    dfw::v1::Vm vm;
    Clock::time_point at;
  };
  void DropExport(std::map<std::string, VmExport>::iterator it);

  std::map<std::string, std::map<std::string, ClaimRec>> claims_;  // vm -> host -> claim
  std::map<std::string, VmExport> exports_;                        // vm -> export
  size_t entries_held_ = 0;
  HandoverStats stats_;
};

}  // namespace dfw::controller
