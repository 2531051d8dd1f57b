// NftMonitor against the real kernel, in a network namespace of the test's
// own: foreign changes (`nft` run by `ip netns exec`) are reported with the
// process's name, our own process's changes are not, an overrun is, and
// another table's base chain is listed.
#include "dfw/vmagent/nft_monitor.h"

#include <gtest/gtest.h>
#include <nftables/libnftables.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <regex>
#include <thread>

#include "monitor_netns.h"

namespace dfw::vmagent {
namespace {

using testing::InNetns;
using testing::TestNetns;

class Collector {
 public:
  void Add(std::string s) {
    std::lock_guard<std::mutex> l(mu_);
    got_.push_back(std::move(s));
    cv_.notify_all();
  }
  // Waits until a message contains `needle`; returns it ("" on timeout).
  std::string WaitFor(const std::string& needle,
                      std::chrono::milliseconds t = std::chrono::seconds(5)) {
    std::unique_lock<std::mutex> l(mu_);
    std::string found;
    cv_.wait_for(l, t, [&] {
      for (const auto& s : got_) {
        if (s.find(needle) != std::string::npos) {
          found = s;
          return true;
        }
      }
      return false;
    });
    return found;
  }
  std::vector<std::string> All() {
    std::lock_guard<std::mutex> l(mu_);
    return got_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> got_;
};

constexpr const char* kTable = R"(table inet dfw {
  chain input { type filter hook input priority filter; policy accept; jump in_0; }
  chain in_0 {
    tcp dport 22 counter accept comment "r1"
    tcp dport 80 counter accept comment "r2"
    tcp dport 443 counter accept comment "r3"
  }
}
)";

class NftMonitorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!testing::IsRoot()) GTEST_SKIP() << "needs root (network namespaces)";
  }
};

TEST_F(NftMonitorTest, ReportsForeignDeleteRuleAndFlushRuleset) {
  TestNetns ns("nm");
  ASSERT_EQ(ns.Nft(kTable), 0);
  Collector got;
  NftMonitorOptions o;
  o.netns_fd = ns.fd();
  NftMonitor mon(o, [&](std::string what) { got.Add(std::move(what)); });
  ASSERT_TRUE(mon.Start().ok());

  // One rule by handle.
  std::string listing = ns.Out("nft -a list chain inet dfw in_0");
  std::smatch m;
  ASSERT_TRUE(std::regex_search(listing, m, std::regex("dport 80 .*# handle ([0-9]+)"))) << listing;
  ASSERT_EQ(ns.Exec("nft delete rule inet dfw in_0 handle " + m[1].str()), 0);
  std::string what = got.WaitFor("deleted 1 rule in chain in_0");
  EXPECT_TRUE(
      std::regex_search(what, std::regex("^nft \\(pid [0-9]+\\) deleted 1 rule in chain in_0$")))
      << what;

  ASSERT_EQ(ns.Exec("nft flush ruleset"), 0);
  what = got.WaitFor("deleted table inet dfw");
  EXPECT_TRUE(std::regex_search(what, std::regex("^nft \\(pid [0-9]+\\) deleted table inet dfw")))
      << what;
  EXPECT_NE(what.find("2 chains"), std::string::npos) << what;
  EXPECT_NE(what.find("3 rules"), std::string::npos) << what;  // 2 left in in_0 + the jump

  // Another table's changes are not ours to report.
  ASSERT_EQ(ns.Exec("nft add table inet other"), 0);
  ASSERT_EQ(ns.Exec("nft add table ip dfw"), 0);
  ASSERT_EQ(ns.Exec("nft add table inet dfw"), 0);
  what = got.WaitFor("added or changed table inet dfw");
  EXPECT_FALSE(what.empty());
  mon.Stop();
  EXPECT_EQ(got.All().size(), 3u);
  EXPECT_EQ(mon.foreign_changes(), 3u);
}

TEST_F(NftMonitorTest, IgnoresOwnProcessFromAnyThread) {
  TestNetns ns("own");
  Collector got;
  NftMonitorOptions o;
  o.netns_fd = ns.fd();
  NftMonitor mon(o, [&](std::string what) { got.Add(std::move(what)); });
  ASSERT_TRUE(mon.Start().ok());

  // Our own process commits through libnftables, on a thread of its own
  // (the kernel names the thread, not the process).
  // The thread stays alive until the monitor has read both transactions:
  // the monitor tells our threads by /proc/self/task/<tid>, as the agent's
  // long-lived apply threads are.
  std::atomic<bool> ok{false}, release{false};
  std::thread t([&] {
    InNetns in(ns.fd());
    nft_ctx* ctx = nft_ctx_new(NFT_CTX_DEFAULT);
    ok = ctx && nft_run_cmd_from_buffer(ctx, kTable) == 0 &&
         nft_run_cmd_from_buffer(ctx, "flush chain inet dfw in_0\n") == 0;
    if (ctx) nft_ctx_free(ctx);
    while (!release) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  });
  for (int i = 0; i < 400 && mon.transactions() < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  release = true;
  t.join();
  ASSERT_TRUE(ok);
  // Then a foreign one: it must be the only report.
  ASSERT_EQ(ns.Exec("nft delete table inet dfw"), 0);
  std::string what = got.WaitFor("nft (pid");
  EXPECT_FALSE(what.empty());
  mon.Stop();
  auto all = got.All();
  ASSERT_EQ(all.size(), 1u) << all[0];
  EXPECT_GE(mon.transactions(), 3u);
}

TEST_F(NftMonitorTest, SelfPidOptionNamesAnotherProcessAsUs) {
  TestNetns ns("self");
  Collector got;
  NftMonitorOptions o;
  o.netns_fd = ns.fd();
  o.self_pid = 1;  // not us: our own commits now count as foreign
  NftMonitor mon(o, [&](std::string what) { got.Add(std::move(what)); });
  ASSERT_TRUE(mon.Start().ok());
  {
    InNetns in(ns.fd());
    nft_ctx* ctx = nft_ctx_new(NFT_CTX_DEFAULT);
    ASSERT_NE(ctx, nullptr);
    EXPECT_EQ(nft_run_cmd_from_buffer(ctx, "add table inet dfw\n"), 0);
    nft_ctx_free(ctx);
  }
  std::string what = got.WaitFor("added or changed table inet dfw");
  EXPECT_NE(what.find("(pid " + std::to_string(getpid()) + ")"), std::string::npos) << what;
}

TEST_F(NftMonitorTest, OverrunIsReportedAsUnknownOrigin) {
  TestNetns ns("ovr");
  // A table with many rules, so that its deletion is a burst of
  // notifications a tiny socket buffer cannot hold.
  std::string big = "table inet dfw {\n chain in_0 {\n";
  for (int i = 0; i < 3000; ++i) big += "  tcp dport " + std::to_string(1000 + i) + " accept\n";
  big += " }\n}\n";
  ASSERT_EQ(ns.Nft(big), 0);
  Collector got;
  NftMonitorOptions o;
  o.netns_fd = ns.fd();
  o.rcvbuf_bytes = 1;  // the kernel's minimum
  // The first report holds the monitor's thread while the burst comes.
  std::atomic<int> calls{0};
  NftMonitor mon(o, [&](std::string what) {
    if (calls++ == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    got.Add(std::move(what));
  });
  ASSERT_TRUE(mon.Start().ok());
  ASSERT_EQ(ns.Exec("nft add chain inet dfw x"), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  ASSERT_EQ(ns.Exec("nft flush ruleset"), 0);
  std::string what = got.WaitFor("lost");
  EXPECT_NE(what.find("unknown origin"), std::string::npos) << what;
  mon.Stop();
  EXPECT_GE(mon.overruns(), 1u);
}

TEST_F(NftMonitorTest, ListsForeignBaseChains) {
  TestNetns ns("fbc");
  ASSERT_EQ(ns.Nft(std::string(kTable) + R"(
table ip fw {
  chain inp { type filter hook input priority 0; policy drop; }
  chain helper { }
}
table inet other {
  chain fw_c { type filter hook forward priority -10; policy accept; }
}
)"),
            0);
  absl::StatusOr<std::vector<ForeignBaseChain>> chains;
  {
    InNetns in(ns.fd());
    chains = NftMonitor::ListForeignBaseChains("dfw");
  }
  ASSERT_TRUE(chains.ok()) << chains.status();
  ASSERT_EQ(chains->size(), 2u);
  const ForeignBaseChain* inp = nullptr;
  const ForeignBaseChain* fwd = nullptr;
  for (const auto& c : *chains) {
    if (c.chain == "inp") inp = &c;
    if (c.chain == "fw_c") fwd = &c;
  }
  ASSERT_NE(inp, nullptr);
  EXPECT_EQ(inp->family, "ip");
  EXPECT_EQ(inp->table, "fw");
  EXPECT_EQ(inp->type, "filter");
  EXPECT_EQ(inp->hook, "input");
  EXPECT_EQ(inp->priority, 0);
  EXPECT_EQ(inp->policy, "drop");
  EXPECT_TRUE(inp->on_input_or_output);
  ASSERT_NE(fwd, nullptr);
  EXPECT_EQ(fwd->family, "inet");
  EXPECT_EQ(fwd->hook, "forward");
  EXPECT_EQ(fwd->priority, -10);
  EXPECT_EQ(fwd->policy, "accept");
  EXPECT_FALSE(fwd->on_input_or_output);
}

}  // namespace
}  // namespace dfw::vmagent
