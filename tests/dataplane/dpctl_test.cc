// dfw-dpctl against a real dfw-dataplane (EAL --no-huge --no-pci, net_pcap
// port): every subcommand, its table and JSON output, and its exit codes.
// Run 1 is configured through the CLI; run 2 restarts on the persisted state
// with two frames in its rx pcap (one allowed, one denied) so that counters,
// connections and flow records have something to show.
#include <fcntl.h>
#include <google/protobuf/text_format.h>
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "dataplane_test_policy.h"
#include "dfw/v1/dataplane.pb.h"
#include "frame_builder.h"

namespace dfw::dataplane {
namespace {

using namespace testing;
namespace fs = std::filesystem;

struct Result {
  int code = -1;
  std::string out, err;
};

std::string ReadAll(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

template <typename M>
M FromJson(const std::string& json) {
  M m;
  auto st = google::protobuf::util::JsonStringToMessage(json, &m);
  EXPECT_TRUE(st.ok()) << st.ToString() << "\n" << json;
  return m;
}

class DpctlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("dfw-dpctl-test-" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    api_ = "unix:" + (dir_ / "dp.sock").string();
  }
  void TearDown() override {
    StopDataplane();
    fs::remove_all(dir_);
    std::error_code ec;
    for (int run = 1; run <= 2; ++run) fs::remove_all("/var/run/dpdk/" + Prefix(run), ec);
  }

  static std::string Prefix(int run) {
    return "dpctl" + std::to_string(run) + "-" + std::to_string(getpid());
  }

  // Starts dfw-dataplane reading `rx_pcap`; waits for its ready line.
  void StartDataplane(int run, const Bytes& frames_pcap) {
    const fs::path rx = dir_ / ("rx" + std::to_string(run) + ".pcap");
    std::ofstream(rx, std::ios::binary)
        .write(reinterpret_cast<const char*>(frames_pcap.data()),
               static_cast<std::streamsize>(frames_pcap.size()));
    fs::remove(dir_ / "dp.sock");
    log_ = dir_ / ("dp" + std::to_string(run) + ".log");
    std::vector<std::string> args = {
        DFW_DATAPLANE_BIN,
        "--api",
        api_,
        "--state-dir",
        (dir_ / "state").string(),
        "--flow-log",
        (dir_ / "flows.jsonl").string(),
        "--",
        "-l",
        "0",
        "--no-huge",
        "--no-pci",
        "--no-shconf",
        "-m",
        "128",
        "--file-prefix=" + Prefix(run),
        "--vdev=net_pcap0,rx_pcap=" + rx.string() + ",tx_pcap=" + (dir_ / "tx.pcap").string()};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    ASSERT_EQ(posix_spawn(&pid_, argv[0], &fa, nullptr, argv.data(), environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (ReadAll(log_).find("dfw-dataplane: ready") == std::string::npos) {
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << ReadAll(log_);
      ASSERT_EQ(waitpid(pid_, nullptr, WNOHANG), 0) << "dfw-dataplane exited:\n" << ReadAll(log_);
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  void StopDataplane() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

  // Runs dfw-dpctl with `args` (the --api of this test's dataplane first).
  Result Dpctl(const std::string& args, const std::string& api = "") {
    const fs::path out = dir_ / "dpctl.out", err = dir_ / "dpctl.err";
    std::string cmd = std::string(DFW_DPCTL_BIN) + " --api " + (api.empty() ? api_ : api) + " " +
                      args + " >" + out.string() + " 2>" + err.string();
    int status = std::system(cmd.c_str());
    Result r;
    r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r.out = ReadAll(out);
    r.err = ReadAll(err);
    return r;
  }

  std::string WriteText(const std::string& name, const google::protobuf::Message& m) {
    std::string text;
    google::protobuf::TextFormat::PrintToString(m, &text);
    std::ofstream(dir_ / name) << text;
    return (dir_ / name).string();
  }

  fs::path dir_, log_;
  std::string api_;
  pid_t pid_ = -1;
};

// A pcap file image holding `frames`.
Bytes Pcap(const std::vector<Bytes>& frames) {
  struct __attribute__((packed)) {
    uint32_t magic = 0xa1b2c3d4;
    uint16_t major = 2, minor = 4;
    int32_t zone = 0;
    uint32_t sigfigs = 0, snaplen = 65535, linktype = 1;
  } file_header;
  Bytes out(reinterpret_cast<uint8_t*>(&file_header),
            reinterpret_cast<uint8_t*>(&file_header) + sizeof(file_header));
  for (const Bytes& f : frames) {
    const uint32_t rec[4] = {1, 0, static_cast<uint32_t>(f.size()),
                             static_cast<uint32_t>(f.size())};
    out.insert(out.end(), reinterpret_cast<const uint8_t*>(rec),
               reinterpret_cast<const uint8_t*>(rec) + sizeof(rec));
    out.insert(out.end(), f.begin(), f.end());
  }
  return out;
}

TEST_F(DpctlTest, UnreachableSocketExitsThreeAndSaysSo) {
  Result r = Dpctl("counters", "unix:" + (dir_ / "nobody.sock").string());
  EXPECT_EQ(r.code, 3) << r.out << r.err;
  EXPECT_NE(r.err.find("cannot reach the dataplane at unix:"), std::string::npos) << r.err;
  EXPECT_EQ(r.out, "");
}

TEST_F(DpctlTest, UsageErrorsExitTwo) {
  EXPECT_EQ(Dpctl("").code, 2);
  EXPECT_EQ(Dpctl("frobnicate").code, 2);
  EXPECT_EQ(Dpctl("set-vnic --id x").code, 2);
  EXPECT_EQ(Dpctl("flows --max zero").code, 2);
  EXPECT_EQ(Dpctl("counters --bogus 1").code, 2);
  Result r = Dpctl("-o yaml counters");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("-o wants table or json"), std::string::npos) << r.err;
}

TEST_F(DpctlTest, BadNumbersAreUsageErrorsNamingTheFlag) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--timeout abc counters", "--timeout wants seconds"},
      {"--timeout 99999999999999999999999 counters", "--timeout wants seconds"},
      {"--timeout -5 counters", "--timeout wants seconds"},
      {"flows --max 18446744073709551616", "--max wants a positive number"},
      {"connections --max 1x", "--max wants a positive number"},
      {"connections export web --max -1", "--max wants a positive number"},
      {"set-vnic --id x --mac 52:54:00:00:00:01 --local-id 0x10", "--local-id wants a number"},
      {"set-vnic --id x --mac 52:54:00:00:00:01 --local-id 99999999999999999999",
       "--local-id wants a number"}};
  for (const auto& [args, says] : cases) {
    Result r = Dpctl(args);
    EXPECT_EQ(r.code, 2) << args << ": " << r.err;
    EXPECT_NE(r.err.find(says), std::string::npos) << args << ": " << r.err;
  }
}

TEST_F(DpctlTest, InputFilesMustBeRegularAndBounded) {
  // Nothing to reach: each is refused before a call (exit 2, not 3).
  const std::string fifo = (dir_ / "fifo").string();
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"set-state /dev/zero", "cannot read /dev/zero: not a regular file"},
      {"set-state " + dir_.string(), "cannot read " + dir_.string() + ": a directory, not a file"},
      {"set-state " + fifo, "cannot read " + fifo + ": not a regular file"},
      {"connections import web /dev/zero", "cannot read /dev/zero: not a regular file"},
      {"set-state " + (dir_ / "missing.txt").string(),
       "cannot read " + (dir_ / "missing.txt").string() + ": No such file or directory"}};
  for (const auto& [args, says] : cases) {
    Result r = Dpctl(args, "unix:" + (dir_ / "nobody.sock").string());
    EXPECT_EQ(r.code, 2) << args << ": " << r.err;
    EXPECT_NE(r.err.find("dfw-dpctl: " + says), std::string::npos) << args << ": " << r.err;
  }
  // Over the API's 256 MiB message limit (a sparse file: no disk used).
  const fs::path big = dir_ / "big.txt";
  std::ofstream(big) << "revision: 1\n";
  fs::resize_file(big, (256u << 20) + 1);
  Result r = Dpctl("set-state " + big.string(), "unix:" + (dir_ / "nobody.sock").string());
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_NE(r.err.find("268435457 bytes, above the limit of 268435456"), std::string::npos)
      << r.err;
  // The state file of `vnics --state-dir` likewise.
  fs::create_directories(dir_ / "sd" / "state.pb");
  r = Dpctl("vnics --state-dir " + (dir_ / "sd").string(),
            "unix:" + (dir_ / "nobody.sock").string());
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_NE(r.err.find("a directory, not a file"), std::string::npos) << r.err;
}

TEST_F(DpctlTest, DrivesEverySubcommandAgainstARealDataplane) {
  // Run 1: configure through the CLI.
  ASSERT_NO_FATAL_FAILURE(StartDataplane(1, Pcap({})));
  Result r =
      Dpctl("set-vnic --id web-1-eth0 --local-id 1 --mac 52:54:00:00:00:11 --ip 198.18.1.11");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "vnic web-1-eth0 set: local id 1, mac 52:54:00:00:00:11, ips 198.18.1.11\n");
  r = Dpctl(
      "-o json set-vnic --id db-1-eth0 --local-id 2 --mac 52:54:00:00:00:21 --ip "
      "198.18.2.21");
  ASSERT_EQ(r.code, 0) << r.err;
  auto db = FromJson<v1::DataplaneVNic>(r.out);
  EXPECT_EQ(db.local_id(), 2u);
  EXPECT_EQ(db.bound_ips(0), "198.18.2.21");

  // A refused state: exit 1 with the dataplane's own words; nothing applied.
  v1::HostDesiredState bad = WebDbState(8);
  bad.mutable_address_sets(0)->set_prefixes(0, "198.18.1.11/24");
  r = Dpctl("set-state " + WriteText("bad.txt", bad));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("set-state refused: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("address set 'g:web' prefixes[0]"), std::string::npos) << r.err;
  // Not text format: exit 2 naming the line.
  std::ofstream(dir_ / "garbage.txt") << "revision: 1\nrulesets { vnic: \"x\" }\n";
  r = Dpctl("set-state " + (dir_ / "garbage.txt").string());
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("line 2:"), std::string::npos) << r.err;
  EXPECT_EQ(Dpctl("set-state " + (dir_ / "missing.txt").string()).code, 2);

  r = Dpctl("set-state " + WriteText("good.txt", WebDbState(7)));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "state applied: revision 7\n");

  r = Dpctl("vnics --state-dir " + (dir_ / "state").string());
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("VNIC        LOCAL_ID  MAC                IPS          CONNS\n"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("web-1-eth0  1         52:54:00:00:00:11  198.18.1.11  0\n"),
            std::string::npos)
      << r.out;
  r = Dpctl("-o json vnics");
  ASSERT_EQ(r.code, 0) << r.err;
  auto known = FromJson<v1::DataplanePersistedState>(r.out);
  ASSERT_EQ(known.vnics_size(), 2);
  EXPECT_EQ(known.vnics(0).id(), "db-1-eth0");  // sorted by id
  EXPECT_EQ(known.vnics(1).id(), "web-1-eth0");
  StopDataplane();

  // Run 2: the persisted state is enforced on two frames from web to db.
  using namespace tcpflag;
  Tcp allowed;
  allowed.sport = 40000;
  allowed.dport = 5432;
  Tcp denied = allowed;
  denied.dport = 22;
  const uint32_t web_ip = Ip4(198, 18, 1, 11), db_ip = Ip4(198, 18, 2, 21);
  ASSERT_NO_FATAL_FAILURE(
      StartDataplane(2, Pcap({Cat(Eth(1, false, MacOf(0x11), MacOf(0x21), 0x0800),
                                  Ipv4(web_ip, db_ip, 6, TcpHeader(allowed))),
                              Cat(Eth(1, false, MacOf(0x11), MacOf(0x21), 0x0800),
                                  Ipv4(web_ip, db_ip, 6, TcpHeader(denied)))})));
  v1::FlowRecordsResponse flows;
  for (int i = 0; i < 100 && flows.records_size() < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    r = Dpctl("-o json flows");
    ASSERT_EQ(r.code, 0) << r.err;
    flows = FromJson<v1::FlowRecordsResponse>(r.out);
  }
  ASSERT_EQ(flows.records_size(), 2) << r.out;
  EXPECT_EQ(flows.records(0).kind(), v1::FlowRecord::KIND_ALLOWED);
  EXPECT_EQ(flows.records(0).dst(), "198.18.2.21:5432");
  EXPECT_EQ(flows.records(1).kind(), v1::FlowRecord::KIND_DENIED);
  EXPECT_EQ(flows.records(1).reason(), "default-rule");
  // What a follower (the host agent's relay) reads: consecutive seqs, the
  // rule's policy and rule ids, Unix time.
  EXPECT_EQ(flows.records(0).seq(), 1u);
  EXPECT_EQ(flows.records(1).seq(), 2u);
  EXPECT_EQ(flows.last_seq(), 2u);
  EXPECT_EQ(flows.records(0).policy_id(), "app");
  EXPECT_EQ(flows.records(0).rule_id(), "web-to-db");
  EXPECT_EQ(flows.records(1).policy_id(), "");  // the default rule
  const uint64_t now_ns =
      static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                std::chrono::system_clock::now().time_since_epoch())
                                .count());
  EXPECT_LT(now_ns - flows.records(0).time_ns(), 60ull * 1000000000ull)
      << flows.records(0).time_ns();
  r = Dpctl("-o json flows --after 1");
  ASSERT_EQ(r.code, 0) << r.err;
  auto after = FromJson<v1::FlowRecordsResponse>(r.out);
  ASSERT_EQ(after.records_size(), 1) << r.out;
  EXPECT_EQ(after.records(0).seq(), 2u);
  r = Dpctl("-o json flows --after 0 --max 1");  // the oldest first
  ASSERT_EQ(r.code, 0) << r.err;
  after = FromJson<v1::FlowRecordsResponse>(r.out);
  ASSERT_EQ(after.records_size(), 1) << r.out;
  EXPECT_EQ(after.records(0).seq(), 1u);
  r = Dpctl("-o json flows --after 2");  // nothing newer
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(FromJson<v1::FlowRecordsResponse>(r.out).records_size(), 0) << r.out;
  EXPECT_EQ(Dpctl("flows --after x").code, 2);
  r = Dpctl("flows --max 1");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out.rfind("SEQ", 0), 0u) << r.out;
  EXPECT_NE(r.out.find("  denied  web-1-eth0  out  tcp    198.18.1.11:40000  198.18.2.21:22  0     "
                       "drop    default-rule  1"),
            std::string::npos)
      << r.out;
  EXPECT_EQ(r.out.find("allowed"), std::string::npos) << r.out;

  r = Dpctl("counters");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out.rfind("applied revision: 7\n", 0), 0u) << r.out;
  EXPECT_NE(r.out.find("RULE  POLICY  RULE_ID    PACKETS  BYTES  SESSION_PKTS  SESSION_BYTES\n"
                       "10    app     web-to-db  1"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("default-rule  1\n"), std::string::npos) << r.out;
  r = Dpctl("counters -o json");
  ASSERT_EQ(r.code, 0) << r.err;
  auto counters = FromJson<v1::CountersResponse>(r.out);
  EXPECT_EQ(counters.applied_revision(), 7u);
  ASSERT_EQ(counters.vnics_size(), 2);
  EXPECT_EQ(counters.vnics(1).vnic_id(), "web-1-eth0");
  EXPECT_EQ(counters.vnics(1).tx_packets(), 1u);  // what it let through
  EXPECT_EQ(counters.vnics(1).connections(), 1u);

  r = Dpctl("connections");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("web-1-eth0  tcp    198.18.1.11:40000  198.18.2.21:5432  SYN_SENT  10"),
            std::string::npos)
      << r.out;
  r = Dpctl("-o json connections --vnic db-1-eth0");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(FromJson<v1::ConnectionsResponse>(r.out).connections_size(), 0);
  r = Dpctl("connections --vnic nope");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("vnic 'nope' is not known here"), std::string::npos) << r.err;

  r = Dpctl("flush --vnic web-1-eth0");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "flushed 1 connections\n");
  r = Dpctl("-o json connections");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(FromJson<v1::ConnectionsResponse>(r.out).connections_size(), 0);
  r = Dpctl("-o json flush");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(FromJson<v1::FlushResponse>(r.out).flushed(), 0u);

  r = Dpctl("remove-vnic db-1-eth0");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out.rfind("vnic db-1-eth0 removed; applied revision 7", 0), 0u) << r.out;
  r = Dpctl("-o json vnics");
  ASSERT_EQ(r.code, 0) << r.err;
  known = FromJson<v1::DataplanePersistedState>(r.out);
  ASSERT_EQ(known.vnics_size(), 1);
  EXPECT_EQ(known.vnics(0).id(), "web-1-eth0");
}

}  // namespace
}  // namespace dfw::dataplane
