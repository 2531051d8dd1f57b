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
// Lost controller. When the stream breaks (controller stopped, network), the
// session reconnects with exponential backoff (0.5 s doubling to 10 s, reset
// once a session has received a message). Nothing is undone meanwhile: the
// dataplane keeps enforcing the last applied state. The next Hello carries
// that revision, so the controller answers with a delta or a full state.
// A delta that does not apply (wrong from_revision) is nacked and the
// session restarts to get a full state.
//
// Trust. The channel's credentials are the caller's: mutual TLS with the
// host's SVID (svid_client.h), or plaintext only for a loopback controller
// the operator explicitly marked insecure.
//
// Thread safety. Start() runs one thread of ours, on which the hooks run
// (never concurrently with themselves). SetInventory(), Restart(),
// connected() and Stop() may be called from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
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
  };

  ControllerSession(std::string target, std::shared_ptr<grpc::ChannelCredentials> credentials,
                    Hooks hooks);
  ~ControllerSession();  // Stop()s
  ControllerSession(const ControllerSession&) = delete;
  ControllerSession& operator=(const ControllerSession&) = delete;

  void Start();
  void Stop();

  // The host's whole VM list as it is now.
  void SetInventory(std::vector<v1::Vm> vms);
  // Ends the current session (if any) and opens a new one with a new Hello.
  void Restart();

  // True while a session is open: its Hello was sent and the stream has not
  // ended (the controller may have nothing to send yet).
  bool connected() const { return connected_.load(); }
  uint64_t sessions_opened() const { return sessions_.load(); }
  uint64_t last_acked_revision() const { return acked_.load(); }

 private:
  void Run();
  // One session; returns true if it received at least one message.
  bool RunOnce();
  // Under write_mu_: sends the difference between `inventory_` and `sent_`.
  bool SendInventoryLocked();

  const std::string target_;
  const std::shared_ptr<grpc::ChannelCredentials> credentials_;
  const Hooks hooks_;

  std::mutex mu_;  // guards stop_, ctx_, inventory_, sent_, stream_
  std::condition_variable cv_;
  bool stop_ = false;
  grpc::ClientContext* ctx_ = nullptr;
  grpc::ClientReaderWriter<v1::HostToController, v1::ControllerToHost>* stream_ = nullptr;
  bool have_inventory_ = false;
  std::map<std::string, v1::Vm> inventory_;
  std::map<std::string, v1::Vm> sent_;

  std::atomic<bool> connected_{false};
  std::atomic<uint64_t> sessions_{0};
  std::atomic<uint64_t> acked_{0};
  std::thread thread_;
};

}  // namespace dfw::hostagent
