#include "dfw/controller/host_session_service.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <optional>

#include "grpc_auth.h"

namespace dfw::controller {
namespace {

class SessionReactor final
    : public grpc::ServerBidiReactor<dfw::v1::HostToController, dfw::v1::ControllerToHost> {
 public:
  // `caller` is the session's authorized identity, or the reason it has none
  // (the stream then ends at once with that status).
  SessionReactor(ModelService* model, HostSessionService* service, const Authorizer* authz,
                 absl::StatusOr<Caller> caller)
      : model_(model), service_(service), authz_(authz) {
    if (!caller.ok()) {
      FinishOnce(ToGrpc(caller.status()));
      return;
    }
    caller_ = std::move(*caller);
    StartRead(&in_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      FinishOnce(grpc::Status::OK);
      return;
    }
    // A certificate revoked or expired while the stream is open ends it.
    if (auto s = authz_->StillValid(caller_); !s.ok()) {
      spdlog::warn("host session of {} ended: {}", caller_.actor, std::string(s.message()));
      FinishOnce(ToGrpc(s));
      return;
    }
    ActorScope actor(caller_.actor);
    if (in_.msg_case() == dfw::v1::HostToController::kHello) {
      // Applied on the registration thread, in a batch: reading goes on
      // from OnAttached.
      if (grpc::Status s = SubmitHello(); !s.ok()) FinishOnce(s);
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
    // Free the written message now (a full state holds thousands of strings);
    // otherwise the next Send frees it on a sender thread, on the latency path.
    out_ = dfw::v1::ControllerToHost();
    service_->WriteSlotDone();
    if (!ok) {
      FinishOnce(grpc::Status(grpc::StatusCode::UNAVAILABLE, "write failed"));
      return;
    }
    feed_->WriteDone(generation_);
  }

  void OnCancel() override { FinishOnce(grpc::Status::CANCELLED); }

  void OnDone() override {
    if (feed_) model_->DetachHost(feed_->host_id(), generation_);
    delete this;
  }

 private:
  // The feed's deliver callback (under the feed's callback lock). Before
  // OnAttached has bound the session (feed_, generation_) a message is
  // parked: its write must be able to report WriteDone.
  bool Send(dfw::v1::ControllerToHost msg) {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (finished_) return false;
      if (!bound_) {
        parked_ = std::move(msg);
        return true;
      }
      out_ = std::move(msg);
    }
    StartWrite(&out_);
    return true;
  }

  // The feed's wake callback (under the feed's callback lock): a wake
  // before OnAttached is passed on by OnAttached.
  void Wake() {
    std::weak_ptr<HostFeed> feed;
    {
      std::lock_guard<std::mutex> l(mu_);
      if (!bound_) {
        missed_wake_ = true;
        return;
      }
      feed = feed_;
    }
    service_->Schedule(std::move(feed));
  }

  grpc::Status SubmitHello() {
    if (hello_sent_)
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "hello: sent twice");
    if (grpc::Status s = CheckHelloIdentity(); !s.ok()) return s;
    hello_sent_ = true;
    ModelService::HostHelloRequest req;
    req.hello = std::move(*in_.mutable_hello());
    req.actor = caller_.actor;
    req.wake = [this] { Wake(); };
    req.deliver = [this](dfw::v1::ControllerToHost m) { return Send(std::move(m)); };
    {
      std::lock_guard<std::mutex> l(mu_);
      hello_pending_ = true;
    }
    int vms = req.hello.vms_size();
    service_->SubmitHello(std::move(req), [this, vms](absl::StatusOr<ModelService::Attached> a) {
      OnAttached(std::move(a), vms);
    });
    return grpc::Status::OK;
  }

  // The registration thread applied the Hello (or failed it). The reactor
  // stays "pending" (FinishOnce defers, so OnDone cannot free it) until this
  // function no longer touches it.
  void OnAttached(absl::StatusOr<ModelService::Attached> attached, int vms) {
    if (!attached.ok()) {
      {
        std::lock_guard<std::mutex> l(mu_);
        hello_pending_ = false;
      }
      FinishOnce(ToGrpc(attached.status()));
      return;
    }
    bool wake = false;
    bool write = false;
    bool cancelled = false;
    {
      std::lock_guard<std::mutex> l(mu_);
      feed_ = attached->feed;
      generation_ = attached->generation;
      bound_ = true;
      wake = missed_wake_;
      cancelled = deferred_finish_.has_value();
      if (!cancelled && parked_) {
        out_ = std::move(*parked_);
        write = true;
      }
      parked_.reset();
    }
    if (!cancelled) {
      if (attached->full) {
        spdlog::debug("host {} connected with {} VMs (full state)", feed_->host_id(), vms);
      } else if (attached->resumed) {
        spdlog::debug("host {} connected with {} VMs (delta from its digests: {} objects differ)",
                      feed_->host_id(), vms, attached->differing);
      } else {
        spdlog::debug("host {} connected with {} VMs (delta from the revision sent)",
                      feed_->host_id(), vms);
      }
      if (write) StartWrite(&out_);
      if (wake) service_->Schedule(feed_);
      feed_->Kick();
      StartRead(&in_);
    }
    std::optional<grpc::Status> finish;
    {
      std::lock_guard<std::mutex> l(mu_);
      hello_pending_ = false;
      finish.swap(deferred_finish_);
    }
    // The stream ended while the Hello was applied: detach, then finish.
    if (finish) FinishOnce(*finish);
  }

  grpc::Status Handle() {
    switch (in_.msg_case()) {
      case dfw::v1::HostToController::kInventory: {
        if (!feed_)
          return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "inventory: send hello first");
        if (grpc::Status g = CheckGuestInventory(); !g.ok()) return g;
        absl::Status s = model_->UpdateInventory(feed_->host_id(), in_.inventory());
        return s.ok() ? grpc::Status::OK : ToGrpc(s);
      }
      case dfw::v1::HostToController::kAck: {
        if (!feed_)
          return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "ack: send hello first");
        // An ack for a revision never sent ends the session (INVALID_ARGUMENT).
        absl::Status s = model_->Ack(feed_->host_id(), in_.ack());
        return s.ok() ? grpc::Status::OK : ToGrpc(s);
      }
      case dfw::v1::HostToController::kConnections: {
        if (!feed_)
          return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                              "connections: send hello first");
        if (IsVm()) {
          return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                              "connections: a guest agent has no dataplane connections to hand on");
        }
        absl::Status s =
            model_->AddConnectionExport(feed_->host_id(), std::move(*in_.mutable_connections()));
        return s.ok() ? grpc::Status::OK : ToGrpc(s);
      }
      case dfw::v1::HostToController::kFlows: {
        if (!feed_)
          return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "flows: send hello first");
        if (IsVm()) {
          return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                              "flows: a guest agent relays no dataplane flow records");
        }
        model_->RelayFlows(feed_->host_id(), std::move(*in_.mutable_flows()));
        return grpc::Status::OK;
      }
      case dfw::v1::HostToController::kProbe: {
        if (!feed_)
          return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "probe: send hello first");
        model_->ProbeReport(feed_->host_id(), in_.probe());  // only this host's probes match
        return grpc::Status::OK;
      }
      default:
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "msg: empty message");
    }
  }

  bool IsVm() const { return caller_.peer && caller_.peer->id.kind == trust::IdKind::kVm; }

  // A host speaks only for itself: the Hello's id is its certificate's. A
  // guest agent (a VM identity) speaks for its one VM: host id
  // "guest:<uuid>" and exactly that VM in the report.
  grpc::Status CheckHelloIdentity() const {
    const auto& hello = in_.hello();
    const std::string& id = hello.host().id();
    if (!caller_.peer) {
      // Only the explicit insecure (loopback) mode has no peer: a test or a
      // lab, trusted with any id.
      return grpc::Status::OK;
    }
    if (!IsVm()) {
      if (id != caller_.peer->id.name) {
        return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                            "hello: host.id '" + id + "' is not " + caller_.actor + "'s host id '" +
                                caller_.peer->id.name + "'");
      }
      return grpc::Status::OK;
    }
    const std::string want = std::string(ModelService::kGuestHostPrefix) + caller_.peer->id.name;
    if (id != want) {
      return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                          "hello: host.id '" + id + "' is not '" + want +
                              "', the guest session of " + caller_.actor);
    }
    if (hello.vms_size() != 1 || hello.vms(0).id() != caller_.peer->id.name) {
      return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                          "hello: vms: a guest agent reports exactly its own VM '" +
                              caller_.peer->id.name + "' (" + std::to_string(hello.vms_size()) +
                              " VMs reported)");
    }
    return grpc::Status::OK;
  }

  grpc::Status CheckGuestInventory() const {
    if (!IsVm()) return grpc::Status::OK;
    const std::string& own = caller_.peer->id.name;
    for (const auto& vm : in_.inventory().vms_set()) {
      if (vm.id() != own) {
        return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                            "inventory: vms_set: a guest agent reports only its own VM '" + own +
                                "', not '" + vm.id() + "'");
      }
    }
    for (const auto& id : in_.inventory().vms_removed()) {
      if (id != own) {
        return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                            "inventory: vms_removed: a guest agent removes only its own VM '" +
                                own + "', not '" + id + "'");
      }
    }
    return grpc::Status::OK;
  }

  void FinishOnce(const grpc::Status& s) {
    std::shared_ptr<HostFeed> feed;
    {
      std::lock_guard<std::mutex> l(mu_);
      if (finished_) return;
      if (hello_pending_) {
        // The registration thread still holds this reactor: OnAttached
        // finishes (OnDone would free it under that thread's feet).
        if (!deferred_finish_) deferred_finish_ = s;
        return;
      }
      finished_ = true;
      feed = feed_;
    }
    if (feed) feed->Detach(generation_);
    Finish(s);
  }

  ModelService* model_;
  HostSessionService* service_;
  const Authorizer* authz_;
  Caller caller_;
  bool hello_sent_ = false;  // reads are sequential
  // Set once by OnAttached (under mu_), before any write starts.
  std::shared_ptr<HostFeed> feed_;
  uint64_t generation_ = 0;
  dfw::v1::HostToController in_;
  dfw::v1::ControllerToHost out_;
  std::mutex mu_;
  bool finished_ = false;
  bool hello_pending_ = false;  // the registration thread holds the Hello
  bool bound_ = false;          // feed_ and generation_ are set
  bool missed_wake_ = false;
  std::optional<dfw::v1::ControllerToHost> parked_;
  std::optional<grpc::Status> deferred_finish_;
};

}  // namespace

HostSessionService::HostSessionService(ModelService* model, const Authorizer* authz,
                                       int sender_threads)
    : model_(model), authz_(authz) {
  for (int i = 0; i < sender_threads; ++i) senders_.emplace_back([this] { SenderLoop(); });
  registrar_ = std::thread([this] { RegistrationLoop(); });
}

HostSessionService::~HostSessionService() {
  {
    std::lock_guard<std::mutex> l(reg_mu_);
    reg_stop_ = true;
  }
  reg_cv_.notify_all();
  registrar_.join();
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : senders_) t.join();
}

void HostSessionService::SubmitHello(
    ModelService::HostHelloRequest hello,
    std::function<void(absl::StatusOr<ModelService::Attached>)> done) {
  {
    std::lock_guard<std::mutex> l(reg_mu_);
    if (!reg_stop_) {
      hellos_.push_back({std::move(hello), std::move(done)});
      reg_cv_.notify_one();
      return;
    }
  }
  done(absl::UnavailableError("hello: the controller is stopping"));
}

void HostSessionService::RegistrationLoop() {
  for (;;) {
    std::vector<HelloJob> batch;
    {
      std::unique_lock<std::mutex> l(reg_mu_);
      reg_cv_.wait(l, [&] { return reg_stop_ || !hellos_.empty(); });
      if (reg_stop_) break;
      size_t vms = 0;
      while (!hellos_.empty() && batch.size() < kMaxBatchHellos) {
        size_t n = static_cast<size_t>(hellos_.front().hello.hello.vms_size());
        if (!batch.empty() && vms + n > kMaxBatchVms) break;
        vms += n;
        batch.push_back(std::move(hellos_.front()));
        hellos_.pop_front();
      }
    }
    std::vector<ModelService::HostHelloRequest> reqs;
    reqs.reserve(batch.size());
    for (auto& job : batch) reqs.push_back(std::move(job.hello));
    auto t0 = std::chrono::steady_clock::now();
    auto results = model_->AttachHosts(std::move(reqs));
    if (batch.size() > 1) {
      spdlog::info("registration: {} Hellos applied as one change in {} ms", batch.size(),
                   std::chrono::duration_cast<std::chrono::milliseconds>(
                       std::chrono::steady_clock::now() - t0)
                       .count());
    }
    for (size_t i = 0; i < batch.size(); ++i) batch[i].done(std::move(results[i]));
  }
  // Stopping: the sessions still waiting end (UNAVAILABLE).
  std::deque<HelloJob> left;
  {
    std::lock_guard<std::mutex> l(reg_mu_);
    left.swap(hellos_);
  }
  for (auto& job : left) job.done(absl::UnavailableError("hello: the controller is stopping"));
}

grpc::ServerBidiReactor<dfw::v1::HostToController, dfw::v1::ControllerToHost>*
HostSessionService::Session(grpc::CallbackServerContext* context) {
  return new SessionReactor(model_, this, authz_,
                            AuthorizeGrpc(*authz_, *context, "/dfw.v1.HostSessionService/Session"));
}

void HostSessionService::Schedule(std::weak_ptr<HostFeed> feed) {
  {
    std::lock_guard<std::mutex> l(mu_);
    ready_.push_back(std::move(feed));
  }
  cv_.notify_one();
}

void HostSessionService::SenderLoop() {
  for (;;) {
    std::weak_ptr<HostFeed> job;
    {
      std::unique_lock<std::mutex> l(mu_);
      cv_.wait(l, [&] { return stop_ || !ready_.empty(); });
      if (stop_) return;
      job = std::move(ready_.front());
      ready_.pop_front();
    }
    auto feed = job.lock();
    if (!feed) continue;
    {
      std::lock_guard<std::mutex> l(mu_);
      if (in_flight_ >= kMaxInFlight) {
        waiting_.push_back(std::move(job));
        continue;
      }
      ++in_flight_;
    }
    auto msg = model_->NextMessage(feed.get());
    if (!msg || !feed->Deliver(std::move(*msg))) WriteSlotDone();
  }
}

void HostSessionService::WriteSlotDone() {
  {
    std::lock_guard<std::mutex> l(mu_);
    --in_flight_;
    if (waiting_.empty()) return;
    ready_.push_back(std::move(waiting_.front()));
    waiting_.pop_front();
  }
  cv_.notify_one();
}

}  // namespace dfw::controller
