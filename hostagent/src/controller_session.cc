#include "dfw/hostagent/controller_session.h"

#include <google/protobuf/util/message_differencer.h>
#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include <algorithm>

namespace dfw::hostagent {

using std::chrono::milliseconds;

ControllerSession::ControllerSession(std::string target,
                                     std::shared_ptr<grpc::ChannelCredentials> credentials,
                                     Hooks hooks)
    : targets_(SplitTargets(target)),
      credentials_(std::move(credentials)),
      hooks_(std::move(hooks)) {}

std::vector<std::string> ControllerSession::SplitTargets(const std::string& list) {
  std::vector<std::string> out;
  size_t b = 0;
  while (b <= list.size()) {
    size_t e = list.find(',', b);
    if (e == std::string::npos) e = list.size();
    if (e > b) out.push_back(list.substr(b, e - b));
    b = e + 1;
  }
  if (out.empty()) out.push_back(list);
  return out;
}

ControllerSession::~ControllerSession() { Stop(); }

void ControllerSession::SetHooks(Hooks hooks) { hooks_ = std::move(hooks); }

void ControllerSession::Start() {
  thread_ = std::thread([this] { Run(); });
}

void ControllerSession::Stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
    if (ctx_ != nullptr) ctx_->TryCancel();
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void ControllerSession::Restart() {
  std::lock_guard<std::mutex> l(mu_);
  if (ctx_ != nullptr) ctx_->TryCancel();
}

void ControllerSession::SetInventory(std::vector<v1::Vm> vms) {
  std::lock_guard<std::mutex> l(mu_);
  inventory_.clear();
  for (auto& vm : vms) inventory_[vm.id()] = std::move(vm);
  have_inventory_ = true;
  // Exports still waiting go first (the next session writes them, then this).
  if (stream_ != nullptr && exports_.empty() && !SendInventoryLocked()) ctx_->TryCancel();
}

void ControllerSession::SendConnections(v1::ConnectionExport msg) {
  std::lock_guard<std::mutex> l(mu_);
  if (stream_ != nullptr && exports_.empty()) {
    v1::HostToController out;
    *out.mutable_connections() = msg;
    if (stream_->Write(out)) return;
    ctx_->TryCancel();  // broken: the next session writes it
  }
  if (exports_.empty()) {
    hello_inventory_.reset();
    if (have_inventory_) hello_inventory_ = inventory_;
  }
  if (exports_.size() >= kMaxQueuedExports) {
    spdlog::warn("controller: {} connection exports waiting; dropped the oldest (vNIC {})",
                 exports_.size(), exports_.front().vnic_id());
    exports_.pop_front();
    exports_dropped_++;
  }
  exports_.push_back(std::move(msg));
}

bool ControllerSession::WriteNow(const v1::HostToController& out) {
  std::lock_guard<std::mutex> l(mu_);
  if (stream_ == nullptr) return false;
  if (stream_->Write(out)) return true;
  ctx_->TryCancel();  // broken: the session ends
  return false;
}

bool ControllerSession::SendFlows(const v1::FlowBatch& batch) {
  v1::HostToController out;
  *out.mutable_flows() = batch;
  return WriteNow(out);
}

bool ControllerSession::SendProbeReport(const v1::ProbeReport& report) {
  v1::HostToController out;
  *out.mutable_probe() = report;
  return WriteNow(out);
}

bool ControllerSession::FlushExportsLocked(
    grpc::ClientReaderWriter<v1::HostToController, v1::ControllerToHost>* s) {
  while (!exports_.empty()) {
    v1::HostToController out;
    *out.mutable_connections() = exports_.front();
    if (!s->Write(out)) return false;
    exports_.pop_front();
  }
  hello_inventory_.reset();
  return true;
}

bool ControllerSession::SendInventoryLocked() {
  v1::HostToController msg;
  auto* up = msg.mutable_inventory();
  for (const auto& [id, vm] : inventory_) {
    auto it = sent_.find(id);
    if (it == sent_.end() || !google::protobuf::util::MessageDifferencer::Equals(it->second, vm)) {
      *up->add_vms_set() = vm;
    }
  }
  for (const auto& [id, vm] : sent_) {
    if (!inventory_.count(id)) up->add_vms_removed(id);
  }
  if (up->vms_set_size() == 0 && up->vms_removed_size() == 0) return true;
  if (!stream_->Write(msg)) return false;
  sent_ = inventory_;
  spdlog::info("controller: inventory update sent ({} set, {} removed)", up->vms_set_size(),
               up->vms_removed_size());
  return true;
}

void ControllerSession::Run() {
  milliseconds backoff(500);
  size_t failed_in_cycle = 0;  // sessions in a row that got nothing
  for (;;) {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (stop_) return;
    }
    bool got_message = RunOnce();
    if (got_message) backoff = milliseconds(500);
    failed_in_cycle = got_message ? 0 : failed_in_cycle + 1;
    std::unique_lock<std::mutex> l(mu_);
    if (stop_) return;
    // To the leader a standby named, now; to the next of several
    // controllers after a short pause: the backoff grows only once every
    // one of them was tried.
    if (follow_ || (targets_.size() > 1 && failed_in_cycle % targets_.size() != 0)) {
      follow_ = false;
      cv_.wait_for(l, milliseconds(100), [this] { return stop_; });
      continue;
    }
    cv_.wait_for(l, backoff, [this] { return stop_; });
    backoff = std::min(backoff * 2, milliseconds(10000));
  }
}

bool ControllerSession::RunOnce() {
  // A full state of a host with many rules and addresses exceeds gRPC's
  // default 4 MB: take what the dataplane takes (256 MB).
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(256 << 20);
  const std::string& target = targets_[current_];
  auto channel = grpc::CreateCustomChannel(target, credentials_, args);
  auto stub = v1::HostSessionService::NewStub(channel);
  grpc::ClientContext ctx;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (stop_) return false;
    ctx_ = &ctx;
  }
  auto stream = stub->Session(&ctx);
  v1::HostToController hello_msg;
  *hello_msg.mutable_hello() = hooks_.hello();
  bool got_message = false;
  {
    std::lock_guard<std::mutex> l(mu_);
    // The Hello carries the inventory as it is now; updates follow from it.
    // With exports waiting, the inventory as it was when the first was sent:
    // they name VMs this host still owned then; the update after them says
    // what left.
    if (have_inventory_) {
      hello_msg.mutable_hello()->clear_vms();
      const auto& vms = hello_inventory_ ? *hello_inventory_ : inventory_;
      for (const auto& [id, vm] : vms) *hello_msg.mutable_hello()->add_vms() = vm;
    }
    if (stream->Write(hello_msg)) {
      sent_.clear();
      for (const auto& vm : hello_msg.hello().vms()) sent_[vm.id()] = vm;
      if (FlushExportsLocked(stream.get())) {
        stream_ = stream.get();
        // Without SetInventory() yet the Hello's VMs are the hook's: no update.
        if (have_inventory_ && !SendInventoryLocked()) stream_ = nullptr;
      }
    }
  }
  if (stream_ != nullptr) {
    // Open from here on, whether or not the controller has anything to send
    // (a Hello holding what it last sent gets nothing until the next change).
    connected_ = true;
    sessions_++;
    spdlog::info("controller: session open to {} (held revision {}, {} VMs)", target,
                 hello_msg.hello().held_revision(), hello_msg.hello().vms_size());
    v1::ControllerToHost in;
    while (stream->Read(&in)) {
      got_message = true;
      if (in.has_flow_watch()) {  // not acked: no revision
        if (hooks_.flow_watch) hooks_.flow_watch(in.flow_watch().enabled());
        continue;
      }
      if (in.has_probe()) {  // not acked: no revision
        if (hooks_.probe) {
          hooks_.probe(in.probe());
        } else {
          v1::HostToController out;
          out.mutable_probe()->set_probe_id(in.probe().probe_id());
          out.mutable_probe()->set_done(true);
          out.mutable_probe()->set_error("probes: this agent has no dataplane to capture in");
          std::lock_guard<std::mutex> l(mu_);
          if (!stream->Write(out)) break;
        }
        continue;
      }
      if (in.has_connections()) {  // not acked: no revision
        if (hooks_.connections) {
          hooks_.connections(in.connections());
        } else {
          spdlog::warn("controller: connections for vNIC {} ignored (no importer here)",
                       in.connections().vnic_id());
        }
        continue;
      }
      auto applied = hooks_.apply(in);
      v1::HostToController ack_msg;
      auto* ack = ack_msg.mutable_ack();
      bool restart = false;
      if (applied.ok()) {
        ack->set_revision(*applied);
        ack->set_ok(true);
        acked_ = *applied;
      } else {
        ack->set_revision(in.has_full() ? in.full().revision() : in.delta().to_revision());
        ack->set_ok(false);
        ack->set_error(std::string(applied.status().message()));
        spdlog::error("controller: revision {} not applied: {}", ack->revision(),
                      applied.status().ToString());
        // A delta from another revision, or a dataplane that is not there:
        // a new session (after the backoff) brings a full state or a delta
        // from what the dataplane then holds.
        const absl::Status& s = applied.status();
        restart = (in.has_delta() && absl::IsFailedPrecondition(s)) || absl::IsUnavailable(s) ||
                  absl::IsDeadlineExceeded(s);
      }
      std::lock_guard<std::mutex> l(mu_);
      if (!stream->Write(ack_msg) || restart) break;
    }
  }
  {
    std::lock_guard<std::mutex> l(mu_);
    stream_ = nullptr;
    ctx_ = nullptr;
    ctx.TryCancel();
  }
  connected_ = false;
  if (hooks_.flow_watch) hooks_.flow_watch(false);  // the next session asks again
  grpc::Status st = stream->Finish();
  spdlog::warn("controller: session to {} ended: {}", target,
               st.ok() ? std::string("closed") : st.error_message());
  std::string leader;
  if (st.error_code() == grpc::StatusCode::UNAVAILABLE) {
    const auto& md = ctx.GetServerTrailingMetadata();
    if (auto it = md.find("dfw-leader-grpc"); it != md.end()) {
      leader.assign(it->second.data(), it->second.size());
    }
  }
  if (!leader.empty()) {
    auto it = std::find(targets_.begin(), targets_.end(), leader);
    if (it == targets_.end()) {
      spdlog::warn(
          "controller: {} names the leader {}, which is not one of --controller's; "
          "not followed",
          target, leader);
    } else if (static_cast<size_t>(it - targets_.begin()) != current_) {
      current_ = static_cast<size_t>(it - targets_.begin());
      follow_ = true;
      spdlog::info("controller: following the leader to {}", leader);
      return got_message;
    }
  }
  if (!got_message) current_ = (current_ + 1) % targets_.size();
  return got_message;
}

}  // namespace dfw::hostagent
