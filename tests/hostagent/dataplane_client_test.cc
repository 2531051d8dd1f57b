// DataplaneClient against the real dfw-dataplane (EAL --no-pci --no-huge,
// a null port): what the agent relies on when a VM leaves with many
// connections, beyond gRPC's default 4 MB message.
#include "dfw/hostagent/dataplane_client.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace dfw::hostagent {
namespace {

namespace fs = std::filesystem;

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// dfw-dataplane with its output in `log`; SIGKILLed on destruction.
class Dataplane {
 public:
  Dataplane(const fs::path& dir, const std::string& log) {
    std::vector<std::string> args = {DFW_DATAPLANE_BIN,
                                     "--api",
                                     "unix:" + (dir / "api.sock").string(),
                                     "--state-dir",
                                     dir.string(),
                                     "--",
                                     "-l",
                                     "0",
                                     "--no-pci",
                                     "--no-huge",
                                     "--no-shconf",
                                     "-m",
                                     "512",
                                     "--file-prefix=dfwdpc" + std::to_string(getpid()),
                                     "--vdev=net_null0"};
    pid_ = fork();
    if (pid_ == 0) {
      FILE* f = freopen(log.c_str(), "w", stdout);
      (void)f;
      dup2(fileno(stdout), 2);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
  }
  ~Dataplane() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    std::error_code ec;
    fs::remove_all("/var/run/dpdk/dfwdpc" + std::to_string(getpid()), ec);
  }

 private:
  pid_t pid_ = -1;
};

std::string Ip4(uint32_t a) {
  std::string s(4, '\0');
  for (int i = 0; i < 4; ++i) s[i] = static_cast<char>(a >> (24 - 8 * i));
  return s;
}

// Connection k to the vNIC 198.18.0.5: inbound TCP from a 10/8 peer to
// port 5432, established in both directions (as the dataplane exports one).
v1::ConnectionEntry Established(uint32_t k) {
  v1::ConnectionEntry e;
  e.set_protocol(6);
  e.set_src_ip(Ip4((10u << 24) | (k + 1)));
  e.set_dst_ip(Ip4((198u << 24) | (18u << 16) | 5));
  e.set_src_port(32768 + k % 28000);
  e.set_dst_port(5432);
  e.set_direction(v1::DIRECTION_IN);
  e.set_state(v1::CONNECTION_STATE_ESTABLISHED);
  e.set_rule_num(1);
  e.set_expires_in_ms(432000000);
  e.set_packets(20);
  e.set_bytes(4000);
  auto peer = [](v1::TcpPeerState* p, uint32_t seq_end, uint32_t peer_seq_end) {
    p->set_seq_end(seq_end);
    p->set_ack_end(peer_seq_end + 64240);
    p->set_max_win(64240);
    p->set_wscale(7);
    p->set_flags(1);
    p->set_state(2);
  };
  peer(e.mutable_tcp_orig(), 1000 + k, 900000 + k);
  peer(e.mutable_tcp_reply(), 900000 + k, 1000 + k);
  return e;
}

TEST(DataplaneClientTest, AVnicsConnectionsBeyondFourMegabytesExportWholeAndImportBack) {
  fs::path dir = fs::temp_directory_path() / ("dfw-dpc-test-" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::string log = (dir / "dp.log").string();
  {
    Dataplane dp(dir, log);
    DataplaneClient client("unix:" + (dir / "api.sock").string(), std::chrono::seconds(30));
    v1::DataplaneVNic vnic;
    vnic.set_id("vnic-a");
    vnic.set_local_id(5);
    vnic.set_mac("52:54:00:00:00:05");
    vnic.add_bound_ips("198.18.0.5");
    absl::Status set;
    for (int i = 0; i < 200; ++i) {  // until its API is up
      set = client.SetVnic(vnic);
      if (set.ok() || !IsUnreachable(set)) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ASSERT_TRUE(set.ok()) << set.ToString() << "\n" << Slurp(log);

    // 100,000 connections, imported as the agent imports a moving VM's
    // (calls of at most 8192 entries).
    constexpr uint32_t kN = 100000;
    uint32_t imported = 0;
    for (uint32_t k = 0; k < kN;) {
      v1::ImportConnectionsRequest req;
      req.set_vnic_id("vnic-a");
      for (uint32_t end = std::min(kN, k + 8192); k < end; ++k) *req.add_entries() = Established(k);
      auto r = client.ImportConnections(req);
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      ASSERT_EQ(r->rejected_count(), 0u) << (r->rejected_size() ? r->rejected(0) : "");
      imported += r->imported();
    }
    ASSERT_EQ(imported, kN);

    // The export the agent makes as the VM leaves: one response, well above
    // gRPC's default 4 MB receive limit.
    auto out = client.ExportConnections("vnic-a");
    ASSERT_TRUE(out.ok()) << out.status().ToString();
    EXPECT_GT(out->ByteSizeLong(), 4u << 20);
    EXPECT_EQ(out->total(), kN);
    ASSERT_EQ(out->entries_size(), static_cast<int>(kN));
    std::set<std::string> peers;
    for (const auto& e : out->entries()) peers.insert(e.src_ip());
    EXPECT_EQ(peers.size(), kN) << "every connection once";
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace dfw::hostagent
