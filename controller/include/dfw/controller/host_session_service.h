// HostSessionService: the gRPC bidirectional stream each host agent keeps
// open (proto/dfw/v1/host.proto), on gRPC's callback API so a thousand
// sessions cost no thread each.
//
// A session: the first message must be a Hello (host id and inventory); the
// controller applies the inventory as one change and requests the host's
// full desired state; from then on the host's HostFeed collects what changes
// for it, inventory updates go up as InventoryUpdate and acks record the
// host's realized revision. Messages are built by a small pool of sender
// threads (never on the writer's path and never on gRPC's threads), one
// write in flight per stream; a host that reads slowly gets coalesced deltas
// (host_feed.h).
//
// Trust: the stream opens only for a host or VM identity (authz.h,
// kHostSession); a host's Hello must carry the certificate's host id, a
// guest agent's (spiffe://<td>/vm/<uuid>) the id "guest:<uuid>" and exactly
// that VM, and its inventory updates only that VM; every message re-checks
// that the certificate is neither revoked nor expired. The host's changes
// are logged with its SPIFFE ID as the actor.
//
// Thread safety: gRPC calls the reactors on its own threads; everything they
// touch is locked.
#pragma once

#include <condition_variable>
#include <deque>
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

 private:
  void SenderLoop();
  ModelService* model_;
  const Authorizer* authz_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::weak_ptr<HostFeed>> ready_;
  std::deque<std::weak_ptr<HostFeed>> waiting_;  // for a slot
  int in_flight_ = 0;
  bool stop_ = false;
  std::vector<std::thread> senders_;
};

}  // namespace dfw::controller
