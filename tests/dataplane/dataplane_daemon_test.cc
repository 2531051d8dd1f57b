// dfw-dataplane as a process: configured over its local gRPC API, killed with
// SIGKILL, restarted with no agent at all — and it enforces the persisted
// state on real frames (net_pcap in, net_pcap out) before anyone connects.
// And the local API's trust: the socket 0600 in a directory created 0700,
// other uids refused (by the file mode, and by the SO_PEERCRED check for one
// that gets past it), --api-allow-uid, a stale socket replaced but a regular
// file or symlink never, plaintext TCP only with --api-insecure-tcp on
// loopback. These run as root (CI does); the uid cases skip otherwise.
#include <fcntl.h>
#include <grp.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/fsuid.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
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

// web and db (dataplane_test_policy.h) and their rules at `revision`,
// through the local API.
void SetWebDb(v1::DataplaneService::Stub* api, uint64_t revision) {
  for (const auto& v : {WebVnic(), DbVnic()}) {
    grpc::ClientContext ctx;
    v1::SetVNicRequest req;
    *req.mutable_vnic() = v;
    v1::DataplaneVNic resp;
    ASSERT_TRUE(api->SetVNic(&ctx, req, &resp).ok());
  }
  grpc::ClientContext ctx;
  v1::SetStateRequest req;
  *req.mutable_full() = WebDbState(revision);
  v1::SetStateResponse resp;
  auto st = api->SetState(&ctx, req, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(resp.applied_revision(), revision);
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
    for (const char* p : {"dpa", "dpb", "dpc", "dpd", "dpe"}) {
      fs::remove_all("/var/run/dpdk/" + std::string(p) + std::to_string(getpid()), ec);
    }
  }

  std::vector<std::string> Args(const std::string& api, const std::string& vdev,
                                const std::string& prefix, uint64_t exit_after_ms = 0) {
    return ApiArgs({"--api", "unix:" + (dir_ / api).string()}, vdev, prefix, exit_after_ms);
  }
  // `api` is every --api* argument.
  std::vector<std::string> ApiArgs(const std::vector<std::string>& api, const std::string& vdev,
                                   const std::string& prefix, uint64_t exit_after_ms = 0) {
    std::vector<std::string> a = {DFW_DATAPLANE_BIN};
    a.insert(a.end(), api.begin(), api.end());
    for (const std::string& e : {std::string("--state-dir"), dir_.string(),
                                 std::string("--flow-log"), (dir_ / "flows.jsonl").string()})
      a.push_back(e);
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
    ASSERT_NO_FATAL_FAILURE(SetWebDb(api.get(), 7));
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
  // The same API path: the killed run's socket file is stale and replaced.
  Child dp2(Args("api.sock",
                 "net_pcap0,rx_pcap=" + (dir_ / "in.pcap").string() +
                     ",tx_pcap=" + (dir_ / "out.pcap").string(),
                 "dpb", /*exit_after_ms=*/1500),
            log2);
  ASSERT_EQ(dp2.Wait(30), 0) << Slurp(log2);
  EXPECT_NE(
      Slurp(log2).find("ready api=unix:" + (dir_ / "api.sock").string() + " vnics=2 revision=7"),
      std::string::npos)
      << Slurp(log2);
  EXPECT_NE(Slurp(log2).find("removed the stale api socket " + (dir_ / "api.sock").string()),
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

// --workers 2 --port-per-worker: port w is worker w's, and the host agent
// steers each vNIC to its owner's port (local id % 2). A frame that arrives
// on the other port anyway is judged by its owner and leaves through the
// owner's port: OVS takes a vNIC's tagged frames back only from that port.
TEST_F(DataplaneDaemonTest, PortPerWorkerSendsEachVnicsFramesOutOfItsOwnersPort) {
  using namespace tcpflag;
  std::string log1 = (dir_ / "setup.log").string();
  {
    Child dp(Args("api.sock", "net_null0", "dpc"), log1);
    ASSERT_TRUE(WaitFor(log1, "dfw-dataplane: ready", 20)) << Slurp(log1);
    auto api = v1::DataplaneService::NewStub(grpc::CreateChannel(
        "unix:" + (dir_ / "api.sock").string(), grpc::InsecureChannelCredentials()));
    ASSERT_NO_FATAL_FAILURE(SetWebDb(api.get(), 3));
    dp.Kill9();
  }
  const Mac web_mac = MacOf(0x11), db_mac = MacOf(0x21);
  Tcp syn;
  syn.sport = 40000;
  syn.dport = 5432;
  Tcp ssh = syn;
  ssh.dport = 22;
  auto frame = [&](uint16_t id, bool ingress, const Tcp& t) {
    return Cat(Eth(id, ingress, web_mac, db_mac, 0x0800),
               Ipv4(Ip4(198, 18, 1, 11), Ip4(198, 18, 2, 21), 6, TcpHeader(t)));
  };
  // web (local id 1) is worker 1's, db (2) worker 0's.
  const Bytes web_out = frame(1, false, syn), db_in = frame(2, true, syn);
  WritePcap((dir_ / "in0.pcap").string(), {web_out, db_in});
  WritePcap((dir_ / "in1.pcap").string(), {frame(1, false, ssh), frame(2, true, ssh)});
  std::vector<std::string> args = Args("api.sock",
                                       "net_pcap0,rx_pcap=" + (dir_ / "in0.pcap").string() +
                                           ",tx_pcap=" + (dir_ / "out0.pcap").string(),
                                       "dpd", /*exit_after_ms=*/1500);
  args.insert(args.begin() + 1, {"--workers", "2", "--port-per-worker"});
  *(std::find(args.begin(), args.end(), "-l") + 1) = "0,1";
  args.push_back("--vdev=net_pcap1,rx_pcap=" + (dir_ / "in1.pcap").string() +
                 ",tx_pcap=" + (dir_ / "out1.pcap").string());
  std::string log2 = (dir_ / "ports.log").string();
  Child dp(args, log2);
  ASSERT_EQ(dp.Wait(30), 0) << Slurp(log2);
  EXPECT_NE(Slurp(log2).find("vnics=2 revision=3 workers=2 ports=2"), std::string::npos)
      << Slurp(log2);
  // web's allowed SYN was read on port 0 and left through port 1; db's
  // ingress of it stayed on port 0; both port-22 frames were dropped.
  EXPECT_EQ(ReadPcap((dir_ / "out0.pcap").string()), std::vector<Bytes>{db_in}) << Slurp(log2);
  EXPECT_EQ(ReadPcap((dir_ / "out1.pcap").string()), std::vector<Bytes>{web_out}) << Slurp(log2);
  EXPECT_NE(Slurp(log2).find("stopped rx=4 tx=2 forwarded=2 dropped=2"), std::string::npos)
      << Slurp(log2);
  EXPECT_NE(Slurp(log2).find("redispatched=2"), std::string::npos) << Slurp(log2);

  // Fewer ports than workers: refused before any frame is read.
  std::string log3 = (dir_ / "short.log").string();
  args.pop_back();
  Child short_of_ports(args, log3);
  EXPECT_EQ(short_of_ports.Wait(30), 1) << Slurp(log3);
  EXPECT_NE(Slurp(log3).find("--port-per-worker with --workers 2 needs 2 ports"), std::string::npos)
      << Slurp(log3);
}

// --- GetState and connections that move with their VM -----------------------

v1::GetStateResponse GetState(v1::DataplaneService::Stub* api) {
  grpc::ClientContext ctx;
  v1::GetStateResponse r;
  auto st = api->GetState(&ctx, v1::GetStateRequest(), &r);
  EXPECT_TRUE(st.ok()) << st.error_message();
  return r;
}

grpc::Status SetVnic(v1::DataplaneService::Stub* api, const v1::DataplaneVNic& v) {
  grpc::ClientContext ctx;
  v1::SetVNicRequest req;
  *req.mutable_vnic() = v;
  v1::DataplaneVNic resp;
  return api->SetVNic(&ctx, req, &resp);
}

grpc::Status Export(v1::DataplaneService::Stub* api, const std::string& vnic,
                    v1::ExportConnectionsResponse* r) {
  grpc::ClientContext ctx;
  v1::ExportConnectionsRequest req;
  req.set_vnic_id(vnic);
  return api->ExportConnections(&ctx, req, r);
}

grpc::Status Import(v1::DataplaneService::Stub* api, const std::string& vnic,
                    const std::vector<v1::ConnectionEntry>& entries,
                    v1::ImportConnectionsResponse* r) {
  grpc::ClientContext ctx;
  v1::ImportConnectionsRequest req;
  req.set_vnic_id(vnic);
  for (const auto& e : entries) *req.add_entries() = e;
  return api->ImportConnections(&ctx, req, r);
}

TEST_F(DataplaneDaemonTest, GetStateThenAVnicsConnectionsMoveToAnotherVnic) {
  std::string log1 = (dir_ / "run1.log").string();
  uint64_t first_instance = 0;
  {
    Child dp(Args("api.sock", "net_null0", "dpa"), log1);
    ASSERT_TRUE(WaitFor(log1, "dfw-dataplane: ready", 20)) << Slurp(log1);
    auto api = v1::DataplaneService::NewStub(grpc::CreateChannel(
        "unix:" + (dir_ / "api.sock").string(), grpc::InsecureChannelCredentials()));
    v1::GetStateResponse s0 = GetState(api.get());
    EXPECT_EQ(s0.applied_revision(), 0u);
    EXPECT_EQ(s0.vnics_size(), 0);
    EXPECT_FALSE(s0.restored());
    EXPECT_NE(s0.instance_id(), 0u);
    for (const auto& v : {WebVnic(), DbVnic()}) ASSERT_TRUE(SetVnic(api.get(), v).ok());
    grpc::ClientContext ctx;
    v1::SetStateRequest req;
    *req.mutable_full() = WebDbState(7);
    v1::SetStateResponse resp;
    ASSERT_TRUE(api->SetState(&ctx, req, &resp).ok());
    v1::GetStateResponse s1 = GetState(api.get());
    EXPECT_EQ(s1.applied_revision(), 7u);
    ASSERT_EQ(s1.vnics_size(), 2);
    std::set<std::string> ids = {s1.vnics(0).id(), s1.vnics(1).id()};
    EXPECT_EQ(ids, (std::set<std::string>{"web-1-eth0", "db-1-eth0"}));
    EXPECT_EQ(s1.instance_id(), s0.instance_id());  // one run, one id
    EXPECT_FALSE(s1.restored());
    first_instance = s0.instance_id();
    dp.Kill9();
  }

  // Restarted from --state-dir, with a SYN from web to db:5432 (allowed, so
  // tracked in web's zone) on its port.
  const Mac web_mac = MacOf(0x11), db_mac = MacOf(0x21);
  Tcp syn;
  syn.sport = 40000;
  syn.dport = 5432;
  WritePcap((dir_ / "in.pcap").string(),
            {Cat(Eth(1, false, web_mac, db_mac, 0x0800),
                 Ipv4(Ip4(198, 18, 1, 11), Ip4(198, 18, 2, 21), 6, TcpHeader(syn)))});
  std::string log2 = (dir_ / "run2.log").string();
  Child dp(Args("api.sock",
                "net_pcap0,rx_pcap=" + (dir_ / "in.pcap").string() +
                    ",tx_pcap=" + (dir_ / "out.pcap").string(),
                "dpb"),
           log2);
  ASSERT_TRUE(WaitFor(log2, "dfw-dataplane: ready", 20)) << Slurp(log2);
  const std::string target = "unix:" + (dir_ / "api.sock").string();
  auto api = v1::DataplaneService::NewStub(
      grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  v1::GetStateResponse s2 = GetState(api.get());
  EXPECT_TRUE(s2.restored());
  EXPECT_EQ(s2.applied_revision(), 7u);
  EXPECT_EQ(s2.vnics_size(), 2);
  EXPECT_NE(s2.instance_id(), first_instance);  // a restart shows
  EXPECT_EQ(GetState(api.get()).instance_id(), s2.instance_id());

  v1::ExportConnectionsResponse web;
  for (int i = 0; i < 100 && web.entries_size() == 0; ++i) {
    web.Clear();
    ASSERT_TRUE(Export(api.get(), "web-1-eth0", &web).ok());
    if (web.entries_size() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_EQ(web.entries_size(), 1) << Slurp(log2);
  EXPECT_EQ(web.total(), 1u);
  const v1::ConnectionEntry& c = web.entries(0);
  EXPECT_EQ(c.protocol(), 6u);
  EXPECT_EQ(c.src_ip(), std::string("\xc6\x12\x01\x0b", 4));  // 198.18.1.11
  EXPECT_EQ(c.dst_ip(), std::string("\xc6\x12\x02\x15", 4));  // 198.18.2.21
  EXPECT_EQ(c.src_port(), 40000u);
  EXPECT_EQ(c.dst_port(), 5432u);
  EXPECT_EQ(c.direction(), v1::DIRECTION_OUT);
  EXPECT_EQ(c.state(), v1::CONNECTION_STATE_SYN_SENT);
  EXPECT_EQ(c.rule_num(), 10u);
  EXPECT_EQ(c.tcp_orig().state(), 1u);
  EXPECT_EQ(c.tcp_orig().seq_end(), 1001u);  // ISN 1000 + the SYN
  EXPECT_GT(c.expires_in_ms(), 0u);

  // Into another vNIC that has no ruleset yet (as right after SetVNic on the
  // host the VM reaches), next to a malformed entry. Its own MAC and address:
  // one dataplane binds each to one vNIC (the entries carry theirs).
  v1::DataplaneVNic web2 = WebVnic();
  web2.set_id("web-2-eth0");
  web2.set_local_id(3);
  web2.set_mac("52:54:00:00:00:12");
  web2.set_bound_ips(0, "198.18.1.12");
  ASSERT_TRUE(SetVnic(api.get(), web2).ok());
  v1::ConnectionEntry bad = c;
  bad.set_src_ip("12345");
  v1::ImportConnectionsResponse imported;
  ASSERT_TRUE(Import(api.get(), "web-2-eth0", {c, bad}, &imported).ok());
  EXPECT_EQ(imported.imported(), 1u);
  EXPECT_EQ(imported.rejected_count(), 1u);
  ASSERT_EQ(imported.rejected_size(), 1);
  EXPECT_EQ(imported.rejected(0), "entries[1].src_ip: 5 bytes, not 4 or 16");
  v1::ExportConnectionsResponse moved;
  ASSERT_TRUE(Export(api.get(), "web-2-eth0", &moved).ok());
  ASSERT_EQ(moved.entries_size(), 1);
  v1::ConnectionEntry want = c;
  want.set_expires_in_ms(moved.entries(0).expires_in_ms());
  EXPECT_EQ(moved.entries(0).SerializeAsString(), want.SerializeAsString())
      << moved.entries(0).DebugString();
  EXPECT_LE(moved.entries(0).expires_in_ms(), c.expires_in_ms());

  // Unknown and empty vNIC ids.
  v1::ExportConnectionsResponse none;
  grpc::Status st = Export(api.get(), "nope", &none);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_NE(st.error_message().find("vnic_id: 'nope'"), std::string::npos) << st.error_message();
  st = Import(api.get(), "nope", {c}, &imported);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Export(api.get(), "", &none).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  // The same through dfw-dpctl: state, export as JSON lines, import them.
  const std::string dpctl = std::string(DFW_DPCTL_BIN) + " --api " + target + " ";
  const std::string out = (dir_ / "dpctl.out").string();
  ASSERT_EQ(std::system((dpctl + "state > " + out + " 2>&1").c_str()), 0) << Slurp(out);
  EXPECT_NE(Slurp(out).find("restored from state dir: yes"), std::string::npos) << Slurp(out);
  EXPECT_NE(Slurp(out).find("web-2-eth0"), std::string::npos) << Slurp(out);
  const std::string lines = (dir_ / "conns.jsonl").string();
  ASSERT_EQ(std::system((dpctl + "connections export web-1-eth0 > " + lines).c_str()), 0);
  const std::string exported = Slurp(lines);
  EXPECT_NE(exported.find("\"dstPort\":5432"), std::string::npos) << exported;
  EXPECT_EQ(std::count(exported.begin(), exported.end(), '\n'), 1) << exported;
  v1::DataplaneVNic web3 = web2;
  web3.set_id("web-3-eth0");
  web3.set_local_id(4);
  web3.set_mac("52:54:00:00:00:13");
  web3.set_bound_ips(0, "198.18.1.13");
  ASSERT_TRUE(SetVnic(api.get(), web3).ok());
  ASSERT_EQ(std::system((dpctl + "connections import web-3-eth0 " + lines + " > " + out).c_str()),
            0)
      << Slurp(out);
  EXPECT_NE(Slurp(out).find("imported 1 connections into web-3-eth0, rejected 0"),
            std::string::npos)
      << Slurp(out);
  EXPECT_NE(std::system((dpctl + "connections export nope > " + out + " 2>&1").c_str()), 0);

  // Session totals (RuleCounter): a connection counts for its rule when it
  // ends here. web-1-eth0's was exported (moved): flushing it counts
  // nothing. One of rule 20 (db's, not hit in this run) imported into
  // db-1-eth0 and flushed: rule 20 shows its totals with no hit.
  auto flush = [&](const std::string& vnic) {
    grpc::ClientContext fctx;
    v1::FlushRequest freq;
    freq.set_vnic_id(vnic);
    v1::FlushResponse fresp;
    EXPECT_TRUE(api->Flush(&fctx, freq, &fresp).ok());
    return fresp.flushed();
  };
  auto rule = [&](uint32_t num) {
    grpc::ClientContext cctx;
    v1::CountersResponse counters;
    EXPECT_TRUE(api->Counters(&cctx, v1::CountersRequest(), &counters).ok());
    for (const auto& r : counters.rules()) {
      if (r.rule_num() == num) return r;
    }
    return v1::RuleCounter();
  };
  EXPECT_EQ(flush("web-1-eth0"), 1u);
  EXPECT_EQ(rule(10).packets(), 1u);  // the SYN's hit
  EXPECT_EQ(rule(10).session_packets(), 0u);
  v1::ConnectionEntry db = c;
  db.set_direction(v1::DIRECTION_IN);
  db.set_rule_num(20);
  db.set_packets(7);
  db.set_bytes(700);
  ASSERT_TRUE(Import(api.get(), "db-1-eth0", {db}, &imported).ok());
  EXPECT_EQ(imported.imported(), 1u);
  EXPECT_EQ(rule(20).rule_num(), 0u) << "open: not counted yet";
  EXPECT_EQ(flush("db-1-eth0"), 1u);
  const v1::RuleCounter r20 = rule(20);
  EXPECT_EQ(r20.rule_num(), 20u);
  EXPECT_EQ(r20.rule_id(), "db-from-web");
  EXPECT_EQ(r20.packets(), 0u);
  EXPECT_EQ(r20.session_packets(), 7u);
  EXPECT_EQ(r20.session_bytes(), 700u);
}

// --- The local API's trust ---------------------------------------------------

constexpr uid_t kNobody = 65534;

// Runs `args` in a child as uid/gid `uid` (no supplementary groups), output
// to `out_path`; its exit code, or -1 after 20 s.
int RunAs(uid_t uid, std::vector<std::string> args, const std::string& out_path) {
  const pid_t pid = fork();
  if (pid == 0) {
    const int fd = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0666);
    dup2(fd, 1);
    dup2(fd, 2);
    if (setgroups(0, nullptr) != 0 || setgid(uid) != 0 || setuid(uid) != 0) _exit(120);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  for (int i = 0; i < 400; ++i) {
    int status;
    if (waitpid(pid, &status, WNOHANG) == pid)
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  return -1;
}

// What a raw HTTP/2 client gets from the socket, in a child with effective
// uid `euid` but filesystem uid 0 (setresuid keeps 0 as the saved uid, so
// setfsuid(0) is allowed): the file mode lets it connect, and only the
// dataplane's SO_PEERCRED check (which reports the effective uid) stands in
// its way. 0: the server answered the connection preface (served); 1: closed
// without a byte (refused); 2: timeout; 10+: the probe itself failed.
int RawProbe(const std::string& path, uid_t euid) {
  const pid_t pid = fork();
  if (pid == 0) {
    if (euid != 0) {
      if (setgroups(0, nullptr) != 0 || setresuid(euid, euid, 0) != 0) _exit(11);
      setfsuid(0);
      if (setfsuid(static_cast<uid_t>(-1)) != 0) _exit(12);  // reads it back
      if (geteuid() != euid) _exit(13);
    }
    sockaddr_un addr;
    std::memset(&addr, 0, sizeof(addr));
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.c_str(), path.size());
    const int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) _exit(14);
    static const char kPreface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    static const unsigned char kSettings[9] = {0, 0, 0, 4, 0, 0, 0, 0, 0};
    // The server may close before or while we write: then the answer is 1.
    signal(SIGPIPE, SIG_IGN);
    (void)!write(fd, kPreface, sizeof(kPreface) - 1);
    (void)!write(fd, kSettings, sizeof(kSettings));
    pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 5000) != 1) _exit(2);
    char buf[64];
    _exit(read(fd, buf, sizeof(buf)) > 0 ? 0 : 1);
  }
  int status;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

unsigned ModeOf(const fs::path& p) {
  struct stat st;
  if (lstat(p.c_str(), &st) != 0) return 0xffffffffu;
  return st.st_mode & 07777;
}

uint64_t RefusedConnections(const std::string& target) {
  auto api = v1::DataplaneService::NewStub(
      grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::CountersResponse resp;
  auto st = api->Counters(&ctx, v1::CountersRequest(), &resp);
  EXPECT_TRUE(st.ok()) << st.error_message();
  return resp.api_refused_connections();
}

TEST_F(DataplaneDaemonTest, ApiSocketIs0600InA0700DirectoryAndRefusesOtherUids) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root (to act as another uid)";
  // Two missing directory levels: both created 0700.
  const fs::path sock = dir_ / "run" / "dfw" / "api.sock";
  const std::string log = (dir_ / "dp.log").string();
  Child dp(ApiArgs({"--api", "unix:" + sock.string()}, "net_null0", "dpc"), log);
  ASSERT_TRUE(WaitFor(log, "dfw-dataplane: ready", 20)) << Slurp(log);
  struct stat st;
  ASSERT_EQ(lstat(sock.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_uid, 0u);
  EXPECT_EQ(ModeOf(sock), 0600u);
  EXPECT_EQ(ModeOf(dir_ / "run" / "dfw"), 0700u);
  EXPECT_EQ(ModeOf(dir_ / "run"), 0700u);

  // Root's Counters works; nothing refused yet.
  EXPECT_EQ(RefusedConnections("unix:" + sock.string()), 0u);
  EXPECT_EQ(RawProbe(sock.string(), 0), 0);

  // nobody, through dfw-dpctl: the 0600 socket in a 0700 directory keeps it
  // out before the dataplane sees it (unreachable: exit 3).
  const std::string out = (dir_ / "nobody.out").string();
  EXPECT_EQ(RunAs(kNobody, {DFW_DPCTL_BIN, "--api", "unix:" + sock.string(), "counters"}, out), 3)
      << Slurp(out);
  EXPECT_EQ(RefusedConnections("unix:" + sock.string()), 0u);

  // nobody with filesystem uid 0 gets past the file mode: the SO_PEERCRED
  // check closes its connection before a byte of HTTP/2; each is counted,
  // the first logged.
  for (int i = 0; i < 3; ++i) EXPECT_EQ(RawProbe(sock.string(), kNobody), 1) << i;
  EXPECT_EQ(RefusedConnections("unix:" + sock.string()), 3u);
  std::string text = Slurp(log);
  const std::string line = "refused a connection from uid 65534";
  ASSERT_NE(text.find(line), std::string::npos) << text;
  EXPECT_EQ(text.find(line, text.find(line) + 1), std::string::npos) << "logged once:\n" << text;
  // dfw-dpctl shows the counter.
  ASSERT_EQ(RunAs(0, {DFW_DPCTL_BIN, "--api", "unix:" + sock.string(), "counters"}, out), 0)
      << Slurp(out);
  EXPECT_NE(Slurp(out).find("api connections refused: 3\n"), std::string::npos) << Slurp(out);
}

TEST_F(DataplaneDaemonTest, ApiAllowUidAdmitsThatUidOnly) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root (to act as another uid)";
  const fs::path sock = dir_ / "run" / "api.sock";
  const std::string log = (dir_ / "dp.log").string();
  Child dp(ApiArgs({"--api", "unix:" + sock.string(), "--api-allow-uid", "65534"}, "net_null0",
                   "dpd", /*exit_after_ms=*/8000),
           log);
  ASSERT_TRUE(WaitFor(log, "dfw-dataplane: ready", 20)) << Slurp(log);
  // The group bits show the ACL mask: user:65534 may rw the socket and
  // search the directory; the group owner and others get nothing.
  EXPECT_EQ(ModeOf(sock), 0660u);
  EXPECT_EQ(ModeOf(dir_ / "run"), 0710u);
  const std::string out = (dir_ / "nobody.out").string();
  EXPECT_EQ(RunAs(kNobody, {DFW_DPCTL_BIN, "--api", "unix:" + sock.string(), "counters"}, out), 0)
      << Slurp(out);
  EXPECT_NE(Slurp(out).find("api connections refused: 0\n"), std::string::npos) << Slurp(out);
  // Another unprivileged uid is still refused (by the file mode).
  EXPECT_EQ(RunAs(65533, {DFW_DPCTL_BIN, "--api", "unix:" + sock.string(), "counters"}, out), 3)
      << Slurp(out);
  // On a clean stop the socket file goes.
  ASSERT_EQ(dp.Wait(30), 0) << Slurp(log);
  EXPECT_FALSE(fs::exists(sock)) << Slurp(log);
}

TEST_F(DataplaneDaemonTest, RefusesToReplaceAFileOrSymlinkAtTheApiPath) {
  const fs::path file = dir_ / "file.sock", link = dir_ / "link.sock";
  std::ofstream(file) << "not a socket";
  fs::create_symlink(dir_ / "elsewhere", link);
  const std::vector<std::pair<fs::path, std::string>> cases = {{file, "a regular file"},
                                                               {link, "a symlink"}};
  for (const auto& [path, what] : cases) {
    const std::string log = (dir_ / "refused.log").string();
    Child dp(Args(path.filename().string(), "net_null0", "dpe", 1000), log);
    EXPECT_EQ(dp.Wait(20), 1) << Slurp(log);
    EXPECT_NE(Slurp(log).find(path.string() + " exists and is " + what + ", not a socket"),
              std::string::npos)
        << Slurp(log);
  }
  EXPECT_EQ(Slurp(file.string()), "not a socket");
  EXPECT_TRUE(fs::is_symlink(link));
}

TEST_F(DataplaneDaemonTest, PlaintextTcpOnlyWithTheFlagAndOnlyOnLoopback) {
  const std::string log = (dir_ / "tcp.log").string();
  {
    Child dp(ApiArgs({"--api", "127.0.0.1:0"}, "net_null0", "dpe", 1000), log);
    EXPECT_EQ(dp.Wait(20), 2) << Slurp(log);
    EXPECT_NE(Slurp(log).find("refusing to start: --api 127.0.0.1:0 is plaintext TCP with no "
                              "authentication"),
              std::string::npos)
        << Slurp(log);
  }
  for (const char* host : {"0.0.0.0:0", "[::]:0", "192.0.2.1:0", "example.com:0"}) {
    Child dp(ApiArgs({"--api", host, "--api-insecure-tcp"}, "net_null0", "dpe", 1000), log);
    EXPECT_EQ(dp.Wait(20), 2) << Slurp(log);
    EXPECT_NE(Slurp(log).find("--api-insecure-tcp listens only on a loopback address"),
              std::string::npos)
        << Slurp(log);
  }
  {
    Child dp(ApiArgs({"--api", "unix-abstract:dfw"}, "net_null0", "dpe", 1000), log);
    EXPECT_EQ(dp.Wait(20), 2) << Slurp(log);
  }
  // With the flag, on loopback: it starts, warns, and serves.
  Child dp(ApiArgs({"--api", "127.0.0.1:0", "--api-insecure-tcp"}, "net_null0", "dpe"), log);
  ASSERT_TRUE(WaitFor(log, "dfw-dataplane: ready", 20)) << Slurp(log);
  const std::string text = Slurp(log);
  EXPECT_NE(text.find("WARNING: the local API listens on plaintext TCP"), std::string::npos);
  const size_t at = text.find("ready api=127.0.0.1:");
  ASSERT_NE(at, std::string::npos) << text;
  const int port = std::atoi(text.c_str() + at + std::strlen("ready api=127.0.0.1:"));
  ASSERT_GT(port, 0) << text;
  EXPECT_EQ(RefusedConnections("127.0.0.1:" + std::to_string(port)), 0u);
}

// --- Robustness of the start (issue 14) ---------------------------------------

TEST_F(DataplaneDaemonTest, RefusesToStartOnAZeroLengthOrDirectoryStateFile) {
  const fs::path state = dir_ / "state.pb";
  const std::string log = (dir_ / "state.log").string();
  std::ofstream(state).close();
  {
    Child dp(Args("api.sock", "net_null0", "dpe", 1000), log);
    EXPECT_EQ(dp.Wait(20), 1) << Slurp(log);
    EXPECT_NE(
        Slurp(log).find("refusing to start: the persisted state is not a valid saved state: " +
                        state.string() + ": is empty (0 bytes), not a saved state"),
        std::string::npos)
        << Slurp(log);
    EXPECT_EQ(Slurp(log).find("dfw-dataplane: ready"), std::string::npos) << Slurp(log);
    EXPECT_EQ(fs::file_size(state), 0u);  // left for the operator, not overwritten
  }
  fs::remove(state);
  fs::create_directories(state);
  {
    Child dp(Args("api.sock", "net_null0", "dpe", 1000), log);
    EXPECT_EQ(dp.Wait(20), 1) << Slurp(log);
    EXPECT_NE(Slurp(log).find(state.string() + ": is a directory, not a saved state"),
              std::string::npos)
        << Slurp(log);
  }
  // No file at all: a first start.
  fs::remove(state);
  Child dp(Args("api.sock", "net_null0", "dpe", 1000), log);
  EXPECT_EQ(dp.Wait(30), 0) << Slurp(log);
  EXPECT_NE(
      Slurp(log).find("ready api=unix:" + (dir_ / "api.sock").string() + " vnics=0 revision=0"),
      std::string::npos)
      << Slurp(log);
}

TEST_F(DataplaneDaemonTest, BadNumericFlagsAreUsageErrorsNamingTheFlag) {
  const std::string log = (dir_ / "flags.log").string();
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--max-connections", "abc"},
      {"--max-connections", "99999999999"},
      {"--max-connections", "0"},
      {"--exit-after-ms", "-1"},
      {"--exit-after-ms", "1e3"},
      {"--tx-port", "x"},
      {"--tx-port", "100000"},
      {"--mbufs", ""},
      {"--mbufs", "8191 "},
      {"--api-allow-uid", "12abc"},
      {"--api-allow-uid", "4294967295"}};
  for (const auto& [flag, value] : cases) {
    Child dp(ApiArgs({"--api", "unix:" + (dir_ / "api.sock").string(), flag, value}, "net_null0",
                     "dpe", 1000),
             log);
    EXPECT_EQ(dp.Wait(20), 2) << flag << " " << value << ": " << Slurp(log);
    EXPECT_NE(Slurp(log).find("dfw-dataplane: " + flag + " wants a number within "),
              std::string::npos)
        << Slurp(log);
    EXPECT_NE(Slurp(log).find("not '" + value + "'"), std::string::npos) << Slurp(log);
    EXPECT_NE(Slurp(log).find("usage: dfw-dataplane"), std::string::npos) << Slurp(log);
  }
  // A flag given last, without its value.
  std::vector<std::string> args = {DFW_DATAPLANE_BIN, "--max-connections"};
  Child dp(args, log);
  EXPECT_EQ(dp.Wait(20), 2) << Slurp(log);
  EXPECT_NE(Slurp(log).find("--max-connections wants a number"), std::string::npos) << Slurp(log);
}

}  // namespace
}  // namespace dfw::dataplane
