// dfw-dataplane as a process: configured over its local gRPC API, killed with
// SIGKILL, restarted with no agent at all — and it enforces the persisted
// state on real frames (net_pcap in, net_pcap out) before anyone connects.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "dataplane_test_policy.h"
#include "dfw/v1/dataplane.grpc.pb.h"
#include "frame_builder.h"

namespace dfw::dataplane {
namespace {

using namespace testing;
namespace fs = std::filesystem;

// A child process with its stdout captured to a file; killed on destruction.
class Child {
 public:
  Child(std::vector<std::string> args, const std::string& out_path) {
    pid_ = fork();
    if (pid_ == 0) {
      FILE* f = freopen(out_path.c_str(), "w", stdout);
      (void)f;
      dup2(fileno(stdout), 2);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
  }
  ~Child() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  void Kill9() {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  // Waits for exit; returns the exit code, or -1 on timeout.
  int Wait(int seconds) {
    for (int i = 0; i < seconds * 20; ++i) {
      int status;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return -1;
  }

 private:
  pid_t pid_ = -1;
};

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

bool WaitFor(const std::string& path, const std::string& text, int seconds) {
  for (int i = 0; i < seconds * 20; ++i) {
    if (Slurp(path).find(text) != std::string::npos) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

void WritePcap(const std::string& path, const std::vector<Bytes>& frames) {
  std::ofstream out(path, std::ios::binary);
  auto w32 = [&](uint32_t v) { out.write(reinterpret_cast<const char*>(&v), 4); };
  auto w16 = [&](uint16_t v) { out.write(reinterpret_cast<const char*>(&v), 2); };
  w32(0xa1b2c3d4);
  w16(2);
  w16(4);
  w32(0);
  w32(0);
  w32(65535);
  w32(1);  // Ethernet
  for (const auto& f : frames) {
    w32(1);
    w32(0);
    w32(static_cast<uint32_t>(f.size()));
    w32(static_cast<uint32_t>(f.size()));
    out.write(reinterpret_cast<const char*>(f.data()), static_cast<std::streamsize>(f.size()));
  }
}

std::vector<Bytes> ReadPcap(const std::string& path) {
  std::string d = Slurp(path);
  std::vector<Bytes> out;
  size_t at = 24;
  while (at + 16 <= d.size()) {
    uint32_t len;
    std::memcpy(&len, d.data() + at + 8, 4);
    at += 16;
    if (at + len > d.size()) break;
    out.emplace_back(d.begin() + static_cast<long>(at), d.begin() + static_cast<long>(at + len));
    at += len;
  }
  return out;
}

class DataplaneDaemonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("dfw-dp-test-" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    fs::remove_all(dir_);
    // EAL's runtime directories of both runs.
    std::error_code ec;
    for (const char* p : {"dpa", "dpb"}) {
      fs::remove_all("/var/run/dpdk/" + std::string(p) + std::to_string(getpid()), ec);
    }
  }

  std::vector<std::string> Args(const std::string& api, const std::string& vdev,
                                const std::string& prefix, uint64_t exit_after_ms = 0) {
    std::vector<std::string> a = {
        DFW_DATAPLANE_BIN, "--api",      "unix:" + (dir_ / api).string(), "--state-dir",
        dir_.string(),     "--flow-log", (dir_ / "flows.jsonl").string()};
    if (exit_after_ms) {
      a.push_back("--exit-after-ms");
      a.push_back(std::to_string(exit_after_ms));
    }
    for (const char* e : {"--", "-l", "0", "--no-huge", "--no-shconf", "-m", "256"}) a.push_back(e);
    a.push_back("--file-prefix=" + prefix + std::to_string(getpid()));
    a.push_back("--vdev=" + vdev);
    return a;
  }

  fs::path dir_;
};

TEST_F(DataplaneDaemonTest, EnforcesPersistedStateAfterKill9BeforeAnyAgentConnects) {
  using namespace tcpflag;
  std::string log1 = (dir_ / "run1.log").string();
  {
    Child dp(Args("api.sock", "net_null0", "dpa"), log1);
    ASSERT_TRUE(WaitFor(log1, "dfw-dataplane: ready", 20)) << Slurp(log1);
    auto channel = grpc::CreateChannel("unix:" + (dir_ / "api.sock").string(),
                                       grpc::InsecureChannelCredentials());
    auto api = v1::DataplaneService::NewStub(channel);
    for (const auto& v : {WebVnic(), DbVnic()}) {
      grpc::ClientContext ctx;
      v1::SetVNicRequest req;
      *req.mutable_vnic() = v;
      v1::DataplaneVNic resp;
      ASSERT_TRUE(api->SetVNic(&ctx, req, &resp).ok());
    }
    {
      grpc::ClientContext ctx;
      v1::SetStateRequest req;
      *req.mutable_full() = WebDbState(7);
      v1::SetStateResponse resp;
      auto st = api->SetState(&ctx, req, &resp);
      ASSERT_TRUE(st.ok()) << st.error_message();
      EXPECT_EQ(resp.applied_revision(), 7u);
    }
    {
      // A bad change: refused, naming the field; revision 7 stays.
      grpc::ClientContext ctx;
      v1::SetStateRequest req;
      *req.mutable_full() = WebDbState(8);
      req.mutable_full()->mutable_address_sets(0)->set_prefixes(0, "198.18.1.11/24");
      v1::SetStateResponse resp;
      auto st = api->SetState(&ctx, req, &resp);
      EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
      EXPECT_NE(st.error_message().find("address set 'g:web' prefixes[0]"), std::string::npos)
          << st.error_message();
    }
    {
      grpc::ClientContext ctx;
      v1::CountersResponse resp;
      ASSERT_TRUE(api->Counters(&ctx, v1::CountersRequest(), &resp).ok());
      EXPECT_EQ(resp.applied_revision(), 7u);
    }
    dp.Kill9();
  }

  // Frames for the restarted dataplane: one allowed, one denied, one for a
  // vNIC it does not know.
  const Mac web_mac = MacOf(0x11), db_mac = MacOf(0x21);
  Tcp allowed;
  allowed.sport = 40000;
  allowed.dport = 5432;
  Tcp denied = allowed;
  denied.dport = 22;
  std::vector<Bytes> in = {
      Cat(Eth(1, false, web_mac, db_mac, 0x0800),
          Ipv4(Ip4(198, 18, 1, 11), Ip4(198, 18, 2, 21), 6, TcpHeader(allowed))),
      Cat(Eth(1, false, web_mac, db_mac, 0x0800),
          Ipv4(Ip4(198, 18, 1, 11), Ip4(198, 18, 2, 21), 6, TcpHeader(denied))),
      Cat(Eth(9, false, web_mac, db_mac, 0x0800),
          Ipv4(Ip4(198, 18, 1, 11), Ip4(198, 18, 2, 21), 6, TcpHeader(allowed))),
  };
  WritePcap((dir_ / "in.pcap").string(), in);
  std::string log2 = (dir_ / "run2.log").string();
  Child dp2(Args("api2.sock",
                 "net_pcap0,rx_pcap=" + (dir_ / "in.pcap").string() +
                     ",tx_pcap=" + (dir_ / "out.pcap").string(),
                 "dpb", /*exit_after_ms=*/1500),
            log2);
  ASSERT_EQ(dp2.Wait(30), 0) << Slurp(log2);
  EXPECT_NE(
      Slurp(log2).find("ready api=unix:" + (dir_ / "api2.sock").string() + " vnics=2 revision=7"),
      std::string::npos)
      << Slurp(log2);
  std::vector<Bytes> out = ReadPcap((dir_ / "out.pcap").string());
  ASSERT_EQ(out.size(), 1u) << Slurp(log2);
  EXPECT_EQ(out[0], in[0]);
  std::string flows = Slurp((dir_ / "flows.jsonl").string());
  EXPECT_NE(flows.find("\"kind\":\"allowed\""), std::string::npos) << flows;
  EXPECT_NE(flows.find("\"kind\":\"denied\",\"time_ms\""), std::string::npos) << flows;
  EXPECT_NE(flows.find("\"dport\":22"), std::string::npos) << flows;
}

}  // namespace
}  // namespace dfw::dataplane
