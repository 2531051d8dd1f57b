#include "dfw/ovs/openflow_bridge.h"

#include <cstdlib>
#include <map>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "openflow_shim.h"

namespace dfw::ovs {
namespace {

std::string TakeError(char* error) {
  std::string s = error ? error : "unknown error";
  std::free(error);
  return s;
}

void CollectFlow(void* ctx, uint64_t cookie, const char* key, const char* actions) {
  static_cast<std::vector<InstalledFlow>*>(ctx)->push_back({cookie, key, actions});
}

}  // namespace

absl::StatusOr<InstalledFlow> CanonicalFlow(const FlowSpec& flow) {
  InstalledFlow out;
  char *key = nullptr, *actions = nullptr, *error = nullptr;
  if (dfw_of_canonical(flow.ToString().c_str(), &out.cookie, &key, &actions, &error) != 0) {
    return absl::InvalidArgumentError(TakeError(error));
  }
  out.key = key;
  out.actions = actions;
  std::free(key);
  std::free(actions);
  return out;
}

absl::StatusOr<std::unique_ptr<OpenFlowBridge>> OpenFlowBridge::Connect(
    const std::string& target, std::chrono::milliseconds timeout) {
  dfw_of* of = nullptr;
  char* error = nullptr;
  if (dfw_of_open(target.c_str(), static_cast<int>(timeout.count()), &of, &error) != 0) {
    return absl::UnavailableError(TakeError(error));
  }
  return std::unique_ptr<OpenFlowBridge>(new OpenFlowBridge(of));
}

OpenFlowBridge::~OpenFlowBridge() { dfw_of_close(of_); }

absl::StatusOr<std::vector<InstalledFlow>> OpenFlowBridge::DumpFlows(uint64_t cookie,
                                                                     uint64_t mask) {
  std::vector<InstalledFlow> flows;
  char* error = nullptr;
  if (dfw_of_dump(of_, cookie, mask, &CollectFlow, &flows, &error) != 0) {
    return absl::UnavailableError(TakeError(error));
  }
  return flows;
}

absl::Status OpenFlowBridge::ApplyBundle(const std::vector<FlowMod>& mods) {
  std::vector<dfw_of_mod> raw;
  raw.reserve(mods.size());
  for (const FlowMod& m : mods) {
    raw.push_back(
        {m.kind == FlowModKind::kAdd ? DFW_OF_ADD : DFW_OF_DELETE_STRICT, m.flow.c_str()});
  }
  char* error = nullptr;
  if (dfw_of_bundle(of_, raw.data(), raw.size(), &error) != 0) {
    return absl::AbortedError(TakeError(error));
  }
  ++bundles_committed_;
  return absl::OkStatus();
}

absl::Status OpenFlowBridge::PacketOut(uint32_t in_port, const std::vector<uint8_t>& frame) {
  char* error = nullptr;
  switch (dfw_of_packet_out(of_, in_port, frame.data(), frame.size(), &error)) {
    case 0:
      return absl::OkStatus();
    case DFW_OF_PO_NO_PORT:
      return absl::NotFoundError(TakeError(error));
    case DFW_OF_PO_REFUSED:
      return absl::AbortedError(TakeError(error));
    case DFW_OF_PO_FAILED:
      return absl::UnavailableError(TakeError(error));
    default:
      return absl::InvalidArgumentError(TakeError(error));
  }
}

absl::Status SetPortNoFlood(const std::string& target, uint32_t ofport, bool no_flood,
                            std::chrono::milliseconds timeout) {
  if (ofport == 0 || ofport >= 0xff00) {
    return absl::InvalidArgumentError(absl::StrCat("SetPortNoFlood: ", ofport, " is not a port"));
  }
  char* error = nullptr;
  if (dfw_of_set_no_flood(target.c_str(), ofport, no_flood ? 1 : 0,
                          static_cast<int>(timeout.count()), &error) != 0) {
    return absl::FailedPreconditionError(TakeError(error));
  }
  return absl::OkStatus();
}

absl::StatusOr<ReconcileResult> OpenFlowBridge::Reconcile(const std::vector<FlowSpec>& desired,
                                                          uint64_t cookie, uint64_t mask) {
  // Desired, canonical, by key. Canonical forms of the flows of the last
  // pass are reused (the broadcast flows of a full bridge are 64 KiB each).
  std::map<std::string, std::pair<InstalledFlow, const FlowSpec*>> want;
  std::unordered_map<std::string, InstalledFlow> canonical;
  canonical.reserve(desired.size());
  for (const FlowSpec& f : desired) {
    std::string text = f.ToString();
    if ((f.cookie & mask) != (cookie & mask)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "flow '%s': cookie 0x%x lacks the prefix 0x%x/0x%x", text, f.cookie, cookie, mask));
    }
    InstalledFlow c;
    if (auto hit = canonical_.find(text); hit != canonical_.end()) {
      c = hit->second;
    } else {
      absl::StatusOr<InstalledFlow> fresh = CanonicalFlow(f);
      if (!fresh.ok()) return fresh.status();
      c = *std::move(fresh);
    }
    const std::string key = c.key;
    canonical.emplace(std::move(text), c);
    if (!want.emplace(key, std::make_pair(std::move(c), &f)).second) {
      return absl::InvalidArgumentError(
          "two desired flows with the same table, priority and match: " + key);
    }
  }
  canonical_ = std::move(canonical);
  absl::StatusOr<std::vector<InstalledFlow>> have = DumpFlows(cookie, mask);
  if (!have.ok()) return have.status();

  ReconcileResult r;
  std::vector<FlowMod> mods;
  std::map<std::string, bool> seen;
  for (const InstalledFlow& h : *have) {
    auto it = want.find(h.key);
    if (it == want.end() || seen.contains(h.key)) {
      mods.push_back(
          {FlowModKind::kDeleteStrict, absl::StrFormat("%s,cookie=0x%x/-1", h.key, h.cookie)});
      ++r.deleted;
      continue;
    }
    seen[h.key] = true;
    if (it->second.first == h) {
      ++r.kept;
    } else {
      mods.push_back({FlowModKind::kAdd, it->second.second->ToString()});
      ++r.modified;
    }
  }
  for (const auto& [key, w] : want) {
    if (!seen.contains(key)) {
      mods.push_back({FlowModKind::kAdd, w.second->ToString()});
      ++r.added;
    }
  }
  if (mods.empty()) return r;
  absl::Status st = ApplyBundle(mods);
  if (!st.ok()) return st;
  r.bundles = 1;
  return r;
}

}  // namespace dfw::ovs
