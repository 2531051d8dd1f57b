// OvsdbMonitor: the host's OVS Interface rows, as a snapshot plus deltas.
//
// What. The host agent needs to know which vNICs sit on the bridge: libvirt
// creates one OVS Interface row per vNIC and fills external_ids:iface-id,
// attached-mac and vm-uuid; ovs-vswitchd assigns its ofport (DESIGN.md §4).
// OvsdbMonitor replicates the OVSDB database over its unix socket with
// libopenvswitch's IDL (lib/ovsdb-idl.h + the generated vswitch IDL) and turns
// each change of the Interface table into an InterfaceDelta: rows added, rows
// whose reported fields changed, rows removed. Rows are identified by their
// OVSDB UUID (a row deleted and re-created under the same name is a removal
// plus an addition).
//
// How. Poll() runs the IDL: it reads what the server sent, waits up to a
// timeout for more, and, if the table changed, diffs it against the previous
// snapshot and calls the callback with the delta. The first complete copy of
// the database arrives as one delta with every existing row "added". If the
// connection drops, the IDL reconnects by itself and re-reads the database;
// the delta after that is again exact (removed rows included). Either the
// caller drives Poll() from a thread of its own, or Start() runs a thread of
// ours that polls until Stop().
//
// Thread safety. Snapshot(), synced() and Stop() may be called from any
// thread at any time. Poll() must not run in two threads at once, nor while
// the Start() thread runs. The callback runs on the polling thread (the
// caller's in Poll(), ours after Start()), never concurrently with itself; it
// may call Snapshot() but not Poll(), Start() or Stop(). Set it before the
// first Poll()/Start().
//
// Usage.
//   OvsdbMonitor mon("/run/openvswitch/db.sock");
//   mon.SetCallback([](const InterfaceDelta& d) { ... });
//   mon.Start();  ...  mon.Stop();
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"

struct dfw_ovsdb;

namespace dfw::ovs {

// What we report of one OVS Interface row.
struct OvsInterface {
  std::string uuid;  // OVSDB row UUID
  std::string name;
  std::string type;          // "" = system, "internal", "dpdkvhostuser", ...
  std::string iface_id;      // external_ids:iface-id ("" if absent)
  std::string attached_mac;  // external_ids:attached-mac
  std::string vm_uuid;       // external_ids:vm-uuid
  int64_t ofport = -1;       // -1 until ovs-vswitchd assigned one (or failed)

  bool operator==(const OvsInterface&) const = default;
};

struct InterfaceDelta {
  std::vector<OvsInterface> added;
  std::vector<OvsInterface> changed;  // new values
  std::vector<OvsInterface> removed;  // last values seen
  bool empty() const { return added.empty() && changed.empty() && removed.empty(); }
};

class OvsdbMonitor {
 public:
  using Callback = std::function<void(const InterfaceDelta&)>;

  // `db_socket` is the path of ovsdb-server's unix socket (punix: remote).
  // Connecting happens in Poll(); the constructor does not block.
  explicit OvsdbMonitor(const std::string& db_socket);
  ~OvsdbMonitor();  // Stop()s
  OvsdbMonitor(const OvsdbMonitor&) = delete;
  OvsdbMonitor& operator=(const OvsdbMonitor&) = delete;

  void SetCallback(Callback cb);

  // Runs the IDL once, waiting up to `timeout` for news. Returns true if a
  // (non-empty) delta was delivered.
  bool Poll(std::chrono::milliseconds timeout);

  // Polls in a thread of ours until Stop(). Stop() wakes the thread at once.
  void Start();
  void Stop();

  // The Interface table as last polled, sorted by name. Empty until synced.
  std::vector<OvsInterface> Snapshot() const;
  // True once the first full copy of the database has been received.
  bool synced() const { return synced_.load(); }

 private:
  void Update();

  dfw_ovsdb* db_;
  Callback callback_;
  mutable std::mutex mu_;                     // guards rows_
  std::map<std::string, OvsInterface> rows_;  // by uuid
  std::atomic<bool> synced_{false};
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// Adds the firewall's port `port` (one Interface of type `type`, with the
// Interface `options`) to bridge `bridge` through an OVSDB transaction of the
// IDL. In production the type is "dpdkvhostuserclient" with
// options {"vhost-server-path": <socket>}: the dataplane serves the vhost-user
// socket and OVS connects to it, again after ovs-vswitchd restarted
// (DESIGN.md §4; "dpdkvhostuser", OVS as the server, is deprecated by OVS and
// leaves the dataplane unconnected after a restart). Tests use "internal".
// `ofport_request` > 0 asks ovs-vswitchd for that ofport. Idempotent: OK if
// the port already exists with that type and each of `options` has that
// value (other options are left alone). Blocks: up to `timeout` to connect
// and read the database, then until the server commits (or rejects) the
// transaction. The ofport arrives later, through an OvsdbMonitor. Errors name
// what was wrong (no such bridge, port exists with another type or another
// option value, server error); an existing port is never modified. Any
// thread (it uses its own connection).
absl::Status CreateFirewallPort(const std::string& db_socket, const std::string& bridge,
                                const std::string& port,
                                const std::string& type = "dpdkvhostuserclient",
                                const std::map<std::string, std::string>& options = {},
                                int64_t ofport_request = 0,
                                std::chrono::milliseconds timeout = std::chrono::seconds(10));

}  // namespace dfw::ovs
