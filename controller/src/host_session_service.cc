#include "dfw/controller/host_session_service.h"

#include <spdlog/spdlog.h>

namespace dfw::controller {
namespace {

class SessionReactor final
    : public grpc::ServerBidiReactor<dfw::v1::HostToController, dfw::v1::ControllerToHost> {
 public:
  SessionReactor(ModelService* model, HostSessionService* service)
      : model_(model), service_(service), outbox_(std::make_shared<HostOutbox>()) {
    StartRead(&in_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      FinishOnce(grpc::Status::OK);
      return;
    }
    grpc::Status error = Handle();
    if (!error.ok()) {
      FinishOnce(error);
      return;
    }
    StartRead(&in_);
  }

  void OnWriteDone(bool ok) override {
    {
      std::lock_guard<std::mutex> l(mu_);
      writing_ = false;
      if (!ok) write_failed_ = true;
    }
    if (!ok) {
      FinishOnce(grpc::Status(grpc::StatusCode::UNAVAILABLE, "write failed"));
      return;
    }
    TryWrite();
  }

  void OnCancel() override { FinishOnce(grpc::Status::CANCELLED); }

  void OnDone() override {
    outbox_->ClearWake();
    if (!host_id_.empty()) model_->DetachHost(host_id_, outbox_.get());
    delete this;
  }

  void TryWrite() {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (writing_ || finished_ || write_failed_) return;
      HostOutbox::Next n = outbox_->Pop();
      if (n.need_full) {
        service_->RequestResync(host_id_, outbox_);
        return;
      }
      if (!n.msg) return;
      out_ = std::move(*n.msg);
      writing_ = true;
    }
    StartWrite(&out_);
  }

 private:
  grpc::Status Handle() {
    switch (in_.msg_case()) {
      case dfw::v1::HostToController::kHello: {
        if (!host_id_.empty()) {
          return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "hello: sent twice");
        }
        outbox_->SetWake([this] { TryWrite(); });
        absl::Status s = model_->AttachHost(in_.hello(), outbox_);
        if (!s.ok()) {
          outbox_->ClearWake();
          return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
        }
        host_id_ = in_.hello().host().id();
        spdlog::info("host {} connected with {} VMs", host_id_, in_.hello().vms_size());
        return grpc::Status::OK;
      }
      case dfw::v1::HostToController::kInventory: {
        if (host_id_.empty()) {
          return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "inventory: send hello first");
        }
        absl::Status s = model_->UpdateInventory(host_id_, in_.inventory());
        if (!s.ok()) {
          return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
        }
        return grpc::Status::OK;
      }
      case dfw::v1::HostToController::kAck:
        if (host_id_.empty()) {
          return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "ack: send hello first");
        }
        model_->Ack(host_id_, in_.ack());
        return grpc::Status::OK;
      default:
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "msg: empty message");
    }
  }

  void FinishOnce(const grpc::Status& s) {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (finished_) return;
      finished_ = true;
    }
    outbox_->ClearWake();
    Finish(s);
  }

  ModelService* model_;
  HostSessionService* service_;
  std::shared_ptr<HostOutbox> outbox_;
  std::string host_id_;
  dfw::v1::HostToController in_;
  dfw::v1::ControllerToHost out_;
  std::mutex mu_;
  bool writing_ = false;
  bool finished_ = false;
  bool write_failed_ = false;
};

}  // namespace

HostSessionService::HostSessionService(ModelService* model)
    : model_(model), resync_thread_([this] { ResyncLoop(); }) {}

HostSessionService::~HostSessionService() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  resync_thread_.join();
}

grpc::ServerBidiReactor<dfw::v1::HostToController, dfw::v1::ControllerToHost>*
HostSessionService::Session(grpc::CallbackServerContext* /*context*/) {
  return new SessionReactor(model_, this);
}

void HostSessionService::RequestResync(std::string host_id, std::weak_ptr<HostOutbox> outbox) {
  {
    std::lock_guard<std::mutex> l(mu_);
    resync_.emplace_back(std::move(host_id), std::move(outbox));
  }
  cv_.notify_one();
}

void HostSessionService::ResyncLoop() {
  for (;;) {
    std::pair<std::string, std::weak_ptr<HostOutbox>> job;
    {
      std::unique_lock<std::mutex> l(mu_);
      cv_.wait(l, [&] { return stop_ || !resync_.empty(); });
      if (stop_) return;
      job = std::move(resync_.front());
      resync_.pop_front();
    }
    if (auto ob = job.second.lock()) ob->PushFull(model_->FullState(job.first));
  }
}

}  // namespace dfw::controller
