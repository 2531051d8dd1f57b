// ControllerSession against a fake HostSessionService (in process, loopback)
// that records what it reads: connection exports are written in order with
// inventory updates (also when queued while no session was open), and a
// ConnectionImport goes to its hook, never acked, ignored without one.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "dfw/hostagent/controller_session.h"

namespace dfw::hostagent {
namespace {

using std::chrono::milliseconds;

template <typename Pred>
bool Eventually(Pred pred, milliseconds within = milliseconds(10000)) {
  const auto deadline = std::chrono::steady_clock::now() + within;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(milliseconds(5));
  }
  return true;
}

// Writes `to_send` at the start of each session, then records every message
// it reads as a line: "hello <vm ids>", "inventory +<set> -<removed>",
// "export <vnic> <n>[ last]", "ack <revision>".
class FakeControllerService final : public v1::HostSessionService::Service {
 public:
  std::vector<v1::ControllerToHost> to_send;

  grpc::Status Session(
      grpc::ServerContext*,
      grpc::ServerReaderWriter<v1::ControllerToHost, v1::HostToController>* stream) override {
    for (const auto& m : to_send) stream->Write(m);
    v1::HostToController in;
    while (stream->Read(&in)) {
      std::string line;
      if (in.has_hello()) {
        line = "hello";
        for (const auto& vm : in.hello().vms()) line += " " + vm.id();
      } else if (in.has_inventory()) {
        line = "inventory";
        for (const auto& vm : in.inventory().vms_set()) line += " +" + vm.id();
        for (const auto& id : in.inventory().vms_removed()) line += " -" + id;
      } else if (in.has_connections()) {
        line = "export " + in.connections().vnic_id() + " " +
               std::to_string(in.connections().entries_size()) +
               (in.connections().last() ? " last" : "");
      } else if (in.has_ack()) {
        line = "ack " + std::to_string(in.ack().revision());
      }
      std::lock_guard<std::mutex> l(mu_);
      lines_.push_back(line);
    }
    return grpc::Status::OK;
  }
  std::vector<std::string> lines() {
    std::lock_guard<std::mutex> l(mu_);
    return lines_;
  }

 private:
  std::mutex mu_;
  std::vector<std::string> lines_;
};

v1::Vm Vm(const std::string& id) {
  v1::Vm vm;
  vm.set_id(id);
  return vm;
}

v1::ConnectionExport Export(const std::string& vnic, int n, bool last) {
  v1::ConnectionExport m;
  m.set_vm_id("vm-a");
  m.set_vnic_id(vnic);
  for (int i = 0; i < n; ++i) m.add_entries()->set_src_port(static_cast<uint32_t>(i));
  m.set_last(last);
  return m;
}

class SessionOrderTest : public ::testing::Test {
 protected:
  void StartServer() {
    grpc::ServerBuilder b;
    b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    b.RegisterService(&service_);
    server_ = b.BuildAndStart();
    ASSERT_NE(server_, nullptr);
  }
  void TearDown() override {
    if (session_) session_->Stop();
    if (server_) server_->Shutdown(std::chrono::system_clock::now());
  }
  void MakeSession(ControllerSession::Hooks hooks) {
    session_ = std::make_unique<ControllerSession>("127.0.0.1:" + std::to_string(port_),
                                                   grpc::InsecureChannelCredentials(), hooks);
  }
  ControllerSession::Hooks BasicHooks() {
    ControllerSession::Hooks h;
    h.hello = [] { return v1::HostHello(); };
    h.apply = [](const v1::ControllerToHost& m) -> absl::StatusOr<uint64_t> {
      return m.full().revision();
    };
    return h;
  }

  FakeControllerService service_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<ControllerSession> session_;
};

TEST_F(SessionOrderTest, ExportSentBeforeAnInventoryChangeIsWrittenBeforeIt) {
  StartServer();
  MakeSession(BasicHooks());
  session_->SetInventory({Vm("vm-a"), Vm("vm-b")});
  session_->Start();
  ASSERT_TRUE(Eventually([&] { return session_->connected(); }));
  session_->SendConnections(Export("vnic-a", 3, false));
  session_->SendConnections(Export("vnic-a", 1, true));
  session_->SetInventory({Vm("vm-b")});
  ASSERT_TRUE(Eventually([&] { return service_.lines().size() >= 4; }));
  EXPECT_EQ(service_.lines(),
            (std::vector<std::string>{"hello vm-a vm-b", "export vnic-a 3", "export vnic-a 1 last",
                                      "inventory -vm-a"}));
}

TEST_F(SessionOrderTest, ExportsQueuedWithoutASessionFollowAHelloThatStillListsTheirVm) {
  StartServer();
  MakeSession(BasicHooks());
  session_->SetInventory({Vm("vm-a"), Vm("vm-b")});
  session_->SendConnections(Export("vnic-a", 2, true));
  session_->SetInventory({Vm("vm-b")});
  session_->Start();
  ASSERT_TRUE(Eventually([&] { return service_.lines().size() >= 3; }));
  EXPECT_EQ(service_.lines(), (std::vector<std::string>{"hello vm-a vm-b", "export vnic-a 2 last",
                                                        "inventory -vm-a"}));
}

TEST_F(SessionOrderTest, ImportGoesToItsHookAndIsNotAcked) {
  v1::ControllerToHost imp;
  imp.mutable_connections()->set_vnic_id("vnic-b");
  imp.mutable_connections()->add_entries()->set_src_port(7);
  imp.mutable_connections()->set_last(true);
  v1::ControllerToHost full;
  full.mutable_full()->set_revision(5);
  service_.to_send = {imp, full};
  StartServer();
  std::mutex mu;
  std::vector<std::string> got;
  auto hooks = BasicHooks();
  hooks.connections = [&](const v1::ConnectionImport& m) {
    std::lock_guard<std::mutex> l(mu);
    got.push_back(m.vnic_id());
  };
  MakeSession(hooks);
  session_->Start();
  ASSERT_TRUE(Eventually([&] { return session_->last_acked_revision() == 5; }));
  ASSERT_TRUE(Eventually([&] { return service_.lines().size() >= 2; }));
  EXPECT_EQ(service_.lines(), (std::vector<std::string>{"hello", "ack 5"}));
  std::lock_guard<std::mutex> l(mu);
  EXPECT_EQ(got, std::vector<std::string>{"vnic-b"});
}

TEST_F(SessionOrderTest, WithoutAnImportHookAnImportIsIgnoredNotNacked) {
  v1::ControllerToHost imp;
  imp.mutable_connections()->set_vnic_id("vnic-b");
  v1::ControllerToHost full;
  full.mutable_full()->set_revision(3);
  service_.to_send = {imp, full};
  StartServer();
  MakeSession(BasicHooks());  // the guest agent's: no import hook
  session_->Start();
  ASSERT_TRUE(Eventually([&] { return session_->last_acked_revision() == 3; }));
  ASSERT_TRUE(Eventually([&] { return service_.lines().size() >= 2; }));
  EXPECT_EQ(service_.lines(), (std::vector<std::string>{"hello", "ack 3"}));
  EXPECT_EQ(session_->sessions_opened(), 1u) << "the session went on";
}

}  // namespace
}  // namespace dfw::hostagent
