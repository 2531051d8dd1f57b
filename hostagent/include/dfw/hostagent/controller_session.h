// ControllerSession: the host's session with the controller
// (proto dfw.v1.HostSessionService.Session), kept open for the agent's life.
//
// What. On each (re)connect the session sends a Hello built by the caller
// (host, every VM, the revision the dataplane enforces now), then applies
// every full state or delta the controller streams through the caller's
// `apply` hook and acks it (ok, or the error and what is still in force).
// Inventory changes go up as InventoryUpdate: SetInventory() takes the whole
// current VM list and the session sends only what changed since the last
// Hello or update.
//
// Connections that move with a VM (host.proto). SendConnections() sends a
// ConnectionExport in order with the inventory updates: an export sent
// before a SetInventory() is written before that update. While no session
// is open, exports wait (at most kMaxQueuedExports, the oldest dropped and
// counted); the next session's Hello then lists the VMs as they were when
// the first waiting export was sent, the exports follow, then the update to
// the inventory of now (so the controller gets a VM's connections while the
// sender still owns it). A ConnectionImport from the controller goes to the
// `connections` hook (not acked: it has no revision); without that hook (the
// guest agent) it is logged and ignored, never nacked.
//
// Lost controller. When the stream breaks (controller stopped, network), the
// session reconnects with exponential backoff (0.5 s doubling to 10 s, reset
// once a session has received a message). Nothing is undone meanwhile: the
// dataplane keeps enforcing the last applied state. The next Hello carries
// that revision, so the controller answers with a delta or a full state.
// A delta that does not apply (wrong from_revision) is nacked and the
// session restarts to get a full state.
//
// Several controllers (high availability, the controller's etcd_store.h):
// the target may list them, "host:port,host:port". A session goes to one;
// when it ends without the controller having sent anything, the next is
// tried after 0.1 s (the backoff above grows only once every controller
// was tried in turn). A standby ends the session at once with UNAVAILABLE and the
// leader's address (trailing metadata dfw-leader-grpc): when that address
// is in the list the next session goes there without waiting out the
// backoff. An address not in the list is not followed (logged).
//
// Trust. The channel's credentials are the caller's: mutual TLS with the
// host's SVID (svid_client.h), or plaintext only for a loopback controller
// the operator explicitly marked insecure.
//
// Flow records (host.proto FlowWatch, FlowBatch): the controller turns the
// `flow_watch` hook on while someone observes; SendFlows() writes a batch
// on the open session (or returns false).
//
// Thread safety. Start() runs one thread of ours, on which the hooks run
// (never concurrently with themselves). SetHooks() only before Start().
// SetInventory(), SendConnections(), Restart(), connected() and Stop() may
// be called from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "dfw/v1/host.grpc.pb.h"

namespace grpc {
class ChannelCredentials;
class ClientContext;
}  // namespace grpc

namespace dfw::hostagent {

class ControllerSession {
 public:
  struct Hooks {
    // Builds the Hello for a new session (called on the session thread).
    std::function<v1::HostHello()> hello;
    // Applies a full state or a delta; returns the revision now enforced.
    std::function<absl::StatusOr<uint64_t>(const v1::ControllerToHost&)> apply;
    // A ConnectionImport (optional; without it imports are ignored).
    std::function<void(const v1::ConnectionImport&)> connections;
    // The controller asks for flow records (FlowWatch) or stops asking;
    // false also when a session ends (optional; without it the request is
    // ignored: the guest agent has no dataplane records).
    std::function<void(bool)> flow_watch;
    // A probe request (host.proto ProbeRequest; optional: without it the
    // session answers with an error report). Must not block.
    std::function<void(const v1::ProbeRequest&)> probe;
  };

  static constexpr size_t kMaxQueuedExports = 1024;

  ControllerSession(std::string target, std::shared_ptr<grpc::ChannelCredentials> credentials,
                    Hooks hooks);
  ~ControllerSession();  // Stop()s
  ControllerSession(const ControllerSession&) = delete;
  ControllerSession& operator=(const ControllerSession&) = delete;

  // Replaces the constructor's hooks; before Start() only.
  void SetHooks(Hooks hooks);
  void Start();
  void Stop();

  // The host's whole VM list as it is now.
  void SetInventory(std::vector<v1::Vm> vms);
  // Ends the current session (if any) and opens a new one with a new Hello.
  void Restart();
  // A vNIC's connections (one chunk), in order with SetInventory().
  void SendConnections(v1::ConnectionExport msg);
  // Flow records for the controller, written now on the open session; false
  // (nothing sent) when none is open. Never queued: a record's worth is now.
  bool SendFlows(const v1::FlowBatch& batch);
  // A probe's report, written now on the open session; false when none is
  // open (the controller then reports the probe lost).
  bool SendProbeReport(const v1::ProbeReport& report);

  // True while a session is open: its Hello was sent and the stream has not
  // ended (the controller may have nothing to send yet).
  bool connected() const { return connected_.load(); }
  uint64_t sessions_opened() const { return sessions_.load(); }
  uint64_t last_acked_revision() const { return acked_.load(); }
  // Exports dropped because kMaxQueuedExports were already waiting.
  uint64_t exports_dropped() const { return exports_dropped_.load(); }

  // "a:1,b:2" -> {"a:1", "b:2"} (empty items dropped).
  static std::vector<std::string> SplitTargets(const std::string& list);

 private:
  void Run();
  // One session; returns true if it received at least one message.
  bool RunOnce();
  // Writes `out` on the open session now (false: none open, or it broke).
  bool WriteNow(const v1::HostToController& out);
  // Under write_mu_: sends the difference between `inventory_` and `sent_`.
  bool SendInventoryLocked();
  // Under mu_: writes the waiting exports; false if the stream broke.
  bool FlushExportsLocked(grpc::ClientReaderWriter<v1::HostToController, v1::ControllerToHost>* s);

  const std::vector<std::string> targets_;
  size_t current_ = 0;   // index in targets_ (session thread only)
  bool follow_ = false;  // a standby named the leader: reconnect at once
  const std::shared_ptr<grpc::ChannelCredentials> credentials_;
  Hooks hooks_;  // set before Start()

  // guards stop_, ctx_, inventory_, sent_, stream_, exports_, hello_inventory_
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  grpc::ClientContext* ctx_ = nullptr;
  grpc::ClientReaderWriter<v1::HostToController, v1::ControllerToHost>* stream_ = nullptr;
  bool have_inventory_ = false;
  std::map<std::string, v1::Vm> inventory_;
  std::map<std::string, v1::Vm> sent_;
  std::deque<v1::ConnectionExport> exports_;  // not yet written, in order
  // The inventory when the first of `exports_` was queued (the next Hello's).
  std::optional<std::map<std::string, v1::Vm>> hello_inventory_;
  std::atomic<uint64_t> exports_dropped_{0};

  std::atomic<bool> connected_{false};
  std::atomic<uint64_t> sessions_{0};
  std::atomic<uint64_t> acked_{0};
  std::thread thread_;
};

}  // namespace dfw::hostagent
