// HostSessionService: the gRPC bidirectional stream each host agent keeps
// open (proto/dfw/v1/host.proto), on gRPC's callback API so a thousand
// sessions cost no thread each.
//
// A session: the first message must be a Hello (host id and inventory); the
// controller applies the inventory as one change and queues the host's full
// desired state; from then on deltas arrive through the host's HostOutbox
// as changes land, inventory updates go up as InventoryUpdate and acks
// record the host's realized revision. One write in flight per stream; a
// slow host's outbox coalesces to a full state (host_outbox.h). Full states
// requested by an overflowing outbox are computed on a small resync thread,
// never on the writer's path.
//
// Thread safety: gRPC calls the reactors on its own threads; everything they
// touch is locked.
#pragma once

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>

#include "dfw/controller/host_outbox.h"
#include "dfw/controller/model_service.h"
#include "dfw/v1/host.grpc.pb.h"

namespace dfw::controller {

class HostSessionService final : public dfw::v1::HostSessionService::CallbackService {
 public:
  explicit HostSessionService(ModelService* model);
  ~HostSessionService() override;

  grpc::ServerBidiReactor<dfw::v1::HostToController, dfw::v1::ControllerToHost>* Session(
      grpc::CallbackServerContext* context) override;

  // Queues a full-state computation for an outbox that overflowed.
  void RequestResync(std::string host_id, std::weak_ptr<HostOutbox> outbox);

 private:
  void ResyncLoop();
  ModelService* model_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<std::string, std::weak_ptr<HostOutbox>>> resync_;
  bool stop_ = false;
  std::thread resync_thread_;
};

}  // namespace dfw::controller
