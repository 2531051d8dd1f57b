#include "dfw/controller/vm_handover.h"

#include <algorithm>

namespace dfw::controller {

void VmHandover::Claim(const dfw::v1::Vm& vm, Clock::time_point now) {
  claims_[vm.id()][vm.host()] = ClaimRec{vm, now};
}

void VmHandover::Unclaim(const std::string& vm_id, const std::string& host) {
  auto it = claims_.find(vm_id);
  if (it == claims_.end()) return;
  it->second.erase(host);
  if (it->second.empty()) claims_.erase(it);
}

void VmHandover::KeepClaims(const std::string& host,
                            const std::function<bool(const std::string&)>& listed) {
  for (auto it = claims_.begin(); it != claims_.end();) {
    if (!listed(it->first)) it->second.erase(host);
    it = it->second.empty() ? claims_.erase(it) : std::next(it);
  }
}

std::optional<dfw::v1::Vm> VmHandover::TakeClaim(
    const std::string& vm_id, const std::string& owner,
    const std::function<bool(const std::string&)>& eligible) {
  auto it = claims_.find(vm_id);
  if (it == claims_.end()) return std::nullopt;
  auto best = it->second.end();
  for (auto c = it->second.begin(); c != it->second.end(); ++c) {
    if (c->first == owner || !eligible(c->first)) continue;
    if (best == it->second.end() || c->second.at > best->second.at) best = c;
  }
  if (best == it->second.end()) return std::nullopt;
  dfw::v1::Vm vm = std::move(best->second.vm);
  it->second.erase(best);
  if (it->second.empty()) claims_.erase(it);
  ++stats_.handovers;
  return vm;
}

std::vector<std::string> VmHandover::Claimants(const std::string& vm_id) const {
  std::vector<std::string> out;
  auto it = claims_.find(vm_id);
  if (it == claims_.end()) return out;
  for (const auto& [host, c] : it->second) out.push_back(host);
  return out;
}

void VmHandover::DropExport(std::map<std::string, VmExport>::iterator it) {
  for (const auto& [id, v] : it->second.vnics) {
    entries_held_ -= v.entries.size();
    stats_.entries_dropped += v.entries.size();
  }
  exports_.erase(it);
}

absl::Status VmHandover::AddExport(const std::string& host, dfw::v1::ConnectionExport msg,
                                   Clock::time_point now) {
  if (msg.vm_id().empty()) return absl::InvalidArgumentError("connections.vm_id: empty");
  if (msg.vnic_id().empty()) return absl::InvalidArgumentError("connections.vnic_id: empty");
  Expire(now);
  auto it = exports_.find(msg.vm_id());
  if (it != exports_.end() && it->second.host != host) {
    DropExport(it);
    it = exports_.end();
  }
  if (it == exports_.end()) it = exports_.emplace(msg.vm_id(), VmExport{host, now, {}}).first;
  VmExport& ve = it->second;
  ve.at = now;
  VnicExport& v = ve.vnics[msg.vnic_id()];
  if (v.complete) {  // a new export of the vNIC starts: the old one is stale
    entries_held_ -= v.entries.size();
    v = VnicExport();
  }
  for (auto& e : *msg.mutable_entries()) {  // moved, not copied: 8192 per chunk
    if (v.entries.size() >= kMaxEntriesPerVnic || entries_held_ >= kMaxEntries) {
      ++v.cut;
      continue;
    }
    v.entries.push_back(std::move(e));
    ++entries_held_;
  }
  if (msg.last()) {
    v.complete = true;
    stats_.entries_dropped += v.cut;
    ++stats_.exports;
  }
  return absl::OkStatus();
}

std::vector<dfw::v1::ConnectionImport> VmHandover::TakeImports(const std::string& vm_id,
                                                               const std::string& new_owner,
                                                               Clock::time_point now) {
  std::vector<dfw::v1::ConnectionImport> out;
  Expire(now);
  auto it = exports_.find(vm_id);
  if (it == exports_.end() || it->second.host == new_owner) return out;
  for (auto& [vnic_id, v] : it->second.vnics) {
    if (!v.complete) continue;  // the owner never finished: nothing half-known moves
    size_t n = v.entries.size(), i = 0;
    do {
      dfw::v1::ConnectionImport m;
      m.set_vm_id(vm_id);
      m.set_vnic_id(vnic_id);
      m.set_from_host(it->second.host);
      size_t end = std::min(n, i + static_cast<size_t>(kEntriesPerImport));
      for (; i < end; ++i) *m.add_entries() = std::move(v.entries[i]);
      m.set_last(i == n);
      out.push_back(std::move(m));
    } while (i < n);
    stats_.entries_moved += n;
    ++stats_.imports_sent;
    entries_held_ -= n;
    v.entries.clear();
  }
  // Incomplete vNIC exports are dropped with the rest.
  DropExport(it);
  return out;
}

void VmHandover::Expire(Clock::time_point now) {
  for (auto it = exports_.begin(); it != exports_.end();) {
    auto cur = it++;
    if (now - cur->second.at > kExportTtl) DropExport(cur);
  }
}

HandoverStats VmHandover::stats() const {
  HandoverStats s = stats_;
  for (const auto& [vm, hosts] : claims_) s.claims_waiting += hosts.size();
  return s;
}

}  // namespace dfw::controller
