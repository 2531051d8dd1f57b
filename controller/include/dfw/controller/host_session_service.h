// HostSessionService: the gRPC bidirectional stream each host agent keeps
// open (proto/dfw/v1/host.proto), on gRPC's callback API so a thousand
// sessions cost no thread each.
//
// A session: the first message must be a Hello (host id and inventory); the
// controller applies the inventory and requests the host's full desired
// state; from then on the host's HostFeed collects what changes for it,
// inventory updates go up as InventoryUpdate and acks record the host's
// realized revision. Messages are built by a small pool of sender threads
// (never on the writer's path and never on gRPC's threads), one write in
// flight per stream; a host that reads slowly gets coalesced deltas
// (host_feed.h).
//
// Registration. Hellos are applied by one registration thread, never on
// gRPC's threads: it takes every Hello queued (up to kMaxBatchHellos Hellos
// and kMaxBatchVms VMs, at least one) and applies them as one change
// (ModelService::AttachHosts), so the Hellos that arrive while a change is
// applied cost one membership update, one compile, one store write and one
// delta per connected host together, not one each: a storm of N Hellos is
// O(N), not O(N^2). It never waits for more Hellos to come: a Hello waits at
// most for the batch being applied and then its own. A session reads its
// next message only once its Hello is applied.
//
// Trust: the stream opens only for a host or VM identity (authz.h,
// kHostSession); a host's Hello must carry the certificate's host id, a
// guest agent's (spiffe://<td>/vm/<uuid>) the id "guest:<uuid>" and exactly
// that VM, and its inventory updates only that VM; every message re-checks
// that the certificate is neither revoked nor expired. The host's changes
// are logged with its SPIFFE ID as the actor.
//
// Thread safety: gRPC calls the reactors on its own threads; everything they
// touch is locked. SubmitHello is safe from any thread; a Hello's `done`
// runs on the registration thread.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "dfw/controller/authz.h"
#include "dfw/controller/host_feed.h"
#include "dfw/controller/model_service.h"
#include "dfw/v1/host.grpc.pb.h"

namespace dfw::controller {

class HostSessionService final : public dfw::v1::HostSessionService::CallbackService {
 public:
  HostSessionService(ModelService* model, const Authorizer* authz, int sender_threads = 2);
  ~HostSessionService() override;

  grpc::ServerBidiReactor<dfw::v1::HostToController, dfw::v1::ControllerToHost>* Session(
      grpc::CallbackServerContext* context) override;

  // Queues a feed for a sender thread (non-blocking).
  void Schedule(std::weak_ptr<HostFeed> feed);
  // A message finished writing (or was dropped): frees its slot.
  void WriteSlotDone();

  // Messages built and in flight at once, over all streams. A message is
  // built only when it has a slot, so a storm (1,000 hosts registering or
  // reconnecting, hosts far behind getting whole sets) holds at most this
  // many built messages in memory; the rest wait as merged feed state.
  static constexpr int kMaxInFlight = 64;

  // Queues a Hello for the registration thread; `done` gets its result
  // there (UNAVAILABLE when the service stops first). Never blocks.
  void SubmitHello(ModelService::HostHelloRequest hello,
                   std::function<void(absl::StatusOr<ModelService::Attached>)> done);
  // A batch's bounds (registration above), which bound how long the batch
  // holds the writer lock (API writes, readers and senders wait): at 100 VMs
  // per host the VM bound comes first, 50 hosts, 2-4 s at 1,000 hosts and
  // 10,000 groups on a busy 2-core machine (docs/PERFORMANCE.md).
  static constexpr size_t kMaxBatchHellos = 128;
  static constexpr size_t kMaxBatchVms = 5000;

 private:
  struct HelloJob {
    ModelService::HostHelloRequest hello;
    std::function<void(absl::StatusOr<ModelService::Attached>)> done;
  };
  void SenderLoop();
  void RegistrationLoop();
  ModelService* model_;
  const Authorizer* authz_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::weak_ptr<HostFeed>> ready_;
  std::deque<std::weak_ptr<HostFeed>> waiting_;  // for a slot
  int in_flight_ = 0;
  bool stop_ = false;
  std::vector<std::thread> senders_;

  std::mutex reg_mu_;
  std::condition_variable reg_cv_;
  std::deque<HelloJob> hellos_;
  bool reg_stop_ = false;
  std::thread registrar_;
};

}  // namespace dfw::controller
