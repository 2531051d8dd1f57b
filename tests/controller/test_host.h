// A host agent stand-in for the controller tests: one HostSessionService
// stream over a real gRPC channel, a reader thread, a queue of messages;
// MetadataVm builds a VM as a host reports it (tags from libvirt metadata).
#pragma once

#include <grpcpp/grpcpp.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "dfw/v1/host.grpc.pb.h"
#include "gtest/gtest.h"

namespace dfw::controller::testing {

using Tags = std::vector<std::pair<std::string, std::string>>;

// A VM as the host agent reports it: tags read from libvirt metadata.
inline dfw::v1::Vm MetadataVm(const std::string& id, const Tags& tags, const std::string& ip) {
  dfw::v1::Vm vm;
  vm.set_id(id);
  vm.set_name(id);
  for (const auto& [s, v] : tags) {
    auto* t = vm.add_tags();
    t->set_scope(s);
    t->set_value(v);
  }
  auto* n = vm.add_vnics();
  n->set_id(id + "-nic0");
  n->set_mac("52:54:00:00:00:01");
  n->add_addresses()->set_ip(ip);
  return vm;
}

// Write calls assert; Next waits for the controller's next message.
class TestHost {
 public:
  TestHost(int port, const std::string& id)
      : TestHost(port, id, grpc::InsecureChannelCredentials()) {}
  // Over the given channel credentials (mutual TLS as some identity).
  TestHost(int port, const std::string& id, std::shared_ptr<grpc::ChannelCredentials> creds)
      : id_(id) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(-1);
    auto ch = grpc::CreateCustomChannel("127.0.0.1:" + std::to_string(port), creds, args);
    stub_ = dfw::v1::HostSessionService::NewStub(ch);
    stream_ = stub_->Session(&ctx_);
    reader_ = std::thread([this] {
      dfw::v1::ControllerToHost m;
      while (stream_->Read(&m)) {
        std::lock_guard<std::mutex> l(mu_);
        got_.push_back(m);
        cv_.notify_all();
      }
      std::lock_guard<std::mutex> l(mu_);
      closed_ = true;
      cv_.notify_all();
    });
  }
  ~TestHost() {
    if (!finished_) stream_->WritesDone();
    ctx_.TryCancel();
    reader_.join();
  }
  void Hello(const std::vector<dfw::v1::Vm>& vms, uint64_t held = 0) {
    dfw::v1::HostToController m;
    m.mutable_hello()->set_held_revision(held);
    m.mutable_hello()->mutable_host()->set_id(id_);
    m.mutable_hello()->mutable_host()->set_hostname(id_ + ".example");
    for (const auto& vm : vms) *m.mutable_hello()->add_vms() = vm;
    ASSERT_TRUE(stream_->Write(m));
  }
  // An InventoryUpdate: these VMs added or changed, whole; these removed.
  void Inventory(const std::vector<dfw::v1::Vm>& vms_set,
                 const std::vector<std::string>& vms_removed = {}) {
    dfw::v1::HostToController m;
    for (const auto& vm : vms_set) *m.mutable_inventory()->add_vms_set() = vm;
    for (const auto& id : vms_removed) m.mutable_inventory()->add_vms_removed(id);
    m.mutable_inventory();  // an empty update is still an update
    ASSERT_TRUE(stream_->Write(m));
  }
  // One chunk of a vNIC's exported connections.
  void Connections(const dfw::v1::ConnectionExport& e) {
    dfw::v1::HostToController m;
    *m.mutable_connections() = e;
    ASSERT_TRUE(stream_->Write(m));
  }
  // Any message (flow records, ...).
  void Send(const dfw::v1::HostToController& m) { ASSERT_TRUE(stream_->Write(m)); }
  void Ack(uint64_t rev) {
    dfw::v1::HostToController m;
    m.mutable_ack()->set_revision(rev);
    m.mutable_ack()->set_ok(true);
    ASSERT_TRUE(stream_->Write(m));
  }
  // Waits for the controller to end the stream: the status it ended with
  // (DEADLINE_EXCEEDED when it is still open after `ms`).
  grpc::Status WaitClosed(int ms = 5000) {
    {
      std::unique_lock<std::mutex> l(mu_);
      if (!cv_.wait_for(l, std::chrono::milliseconds(ms), [&] { return closed_; })) {
        return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "stream still open");
      }
    }
    finished_ = true;
    return stream_->Finish();
  }
  std::optional<dfw::v1::ControllerToHost> Next(int ms = 5000) {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait_for(l, std::chrono::milliseconds(ms), [&] { return !got_.empty() || closed_; });
    if (got_.empty()) return std::nullopt;
    auto m = got_.front();
    got_.pop_front();
    return m;
  }

 private:
  std::string id_;
  grpc::ClientContext ctx_;
  std::unique_ptr<dfw::v1::HostSessionService::Stub> stub_;
  std::unique_ptr<grpc::ClientReaderWriter<dfw::v1::HostToController, dfw::v1::ControllerToHost>>
      stream_;
  std::thread reader_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<dfw::v1::ControllerToHost> got_;
  bool closed_ = false;
  bool finished_ = false;  // Finish() called (by WaitClosed)
};

// Reads h's messages, acking states, until a FlowWatch: its `enabled`
// (nullopt: none came within `ms` of the last message).
inline std::optional<bool> NextWatch(TestHost& h, int ms = 5000) {
  for (auto m = h.Next(ms); m; m = h.Next(ms)) {
    if (m->has_flow_watch()) return m->flow_watch().enabled();
    if (m->has_full()) h.Ack(m->full().revision());
    if (m->has_delta()) h.Ack(m->delta().to_revision());
  }
  return std::nullopt;
}

// A FlowBatch from h, as its flow relay sends one.
inline void SendFlows(TestHost& h, const std::vector<dfw::v1::FlowRecord>& records, uint64_t lost) {
  dfw::v1::HostToController m;
  for (const auto& r : records) *m.mutable_flows()->add_records() = r;
  m.mutable_flows()->set_lost(lost);
  h.Send(m);
}

}  // namespace dfw::controller::testing
