#include "dfw/ovs/ovsdb_monitor.h"

#include <algorithm>
#include <cstdlib>
#include <vector>

#include "ovsdb_shim.h"

namespace dfw::ovs {
namespace {

std::string Remote(const std::string& db_socket) { return "unix:" + db_socket; }

void CollectRow(void* ctx, const dfw_ovsdb_iface* i) {
  auto* rows = static_cast<std::map<std::string, OvsInterface>*>(ctx);
  OvsInterface r;
  r.uuid = i->uuid;
  r.name = i->name;
  r.type = i->type;
  r.iface_id = i->iface_id;
  r.attached_mac = i->attached_mac;
  r.vm_uuid = i->vm_uuid;
  r.ofport = i->ofport;
  rows->emplace(r.uuid, std::move(r));
}

}  // namespace

OvsdbMonitor::OvsdbMonitor(const std::string& db_socket)
    : db_(dfw_ovsdb_create(Remote(db_socket).c_str())) {}

OvsdbMonitor::~OvsdbMonitor() {
  Stop();
  dfw_ovsdb_destroy(db_);
}

void OvsdbMonitor::SetCallback(Callback cb) { callback_ = std::move(cb); }

bool OvsdbMonitor::Poll(std::chrono::milliseconds timeout) {
  const int ms = static_cast<int>(std::max<int64_t>(0, timeout.count()));
  const bool changed = dfw_ovsdb_poll(db_, ms) != 0;
  if (!dfw_ovsdb_is_synced(db_)) return false;
  if (!changed && synced_.load()) return false;

  std::map<std::string, OvsInterface> now;
  dfw_ovsdb_for_each_interface(db_, &CollectRow, &now);
  InterfaceDelta delta;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [uuid, row] : now) {
      auto it = rows_.find(uuid);
      if (it == rows_.end()) {
        delta.added.push_back(row);
      } else if (!(it->second == row)) {
        delta.changed.push_back(row);
      }
    }
    for (const auto& [uuid, row] : rows_) {
      if (!now.contains(uuid)) delta.removed.push_back(row);
    }
    rows_ = std::move(now);
  }
  synced_.store(true);
  if (delta.empty()) return false;
  if (callback_) callback_(delta);
  return true;
}

void OvsdbMonitor::Start() {
  if (thread_.joinable()) return;
  stop_.store(false);
  thread_ = std::thread([this] {
    while (!stop_.load()) Poll(std::chrono::milliseconds(1000));
  });
}

void OvsdbMonitor::Stop() {
  if (!thread_.joinable()) return;
  stop_.store(true);
  dfw_ovsdb_wake(db_);
  thread_.join();
}

std::vector<OvsInterface> OvsdbMonitor::Snapshot() const {
  std::vector<OvsInterface> out;
  {
    std::lock_guard<std::mutex> lock(mu_);
    out.reserve(rows_.size());
    for (const auto& [uuid, row] : rows_) out.push_back(row);
  }
  std::sort(out.begin(), out.end(),
            [](const OvsInterface& a, const OvsInterface& b) { return a.name < b.name; });
  return out;
}

absl::Status CreateFirewallPort(const std::string& db_socket, const std::string& bridge,
                                const std::string& port, const std::string& type,
                                const std::map<std::string, std::string>& options,
                                int64_t ofport_request, std::chrono::milliseconds timeout) {
  if (bridge.empty() || port.empty()) {
    return absl::InvalidArgumentError("CreateFirewallPort: bridge and port names must be set");
  }
  std::unique_ptr<dfw_ovsdb, void (*)(dfw_ovsdb*)> db(dfw_ovsdb_create(Remote(db_socket).c_str()),
                                                      &dfw_ovsdb_destroy);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!dfw_ovsdb_is_synced(db.get())) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      return absl::UnavailableError("CreateFirewallPort: no OVSDB server answered on unix:" +
                                    db_socket + " within the timeout");
    }
    dfw_ovsdb_poll(db.get(), static_cast<int>(std::min<int64_t>(left.count(), 100)));
  }
  std::vector<const char*> keys, values;
  for (const auto& [k, v] : options) {
    keys.push_back(k.c_str());
    values.push_back(v.c_str());
  }
  char* error = nullptr;
  const int rc =
      dfw_ovsdb_add_port(db.get(), bridge.c_str(), port.c_str(), type.c_str(), keys.data(),
                         values.data(), keys.size(), ofport_request, &error);
  if (rc < 0) {
    std::string msg = error ? error : "unknown error";
    std::free(error);
    return absl::FailedPreconditionError("CreateFirewallPort: " + msg);
  }
  return absl::OkStatus();
}

}  // namespace dfw::ovs
