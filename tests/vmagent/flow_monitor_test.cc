// FlowMonitor against real traffic between two namespaces over a veth pair,
// the monitor in the "VM" namespace b: a logged drop gives a denied record
// (rule, addresses, ports, direction, vNIC), a logged reject on output an
// OUT one, a connection marked 9 one allowed record (NFLOG and conntrack
// paired) and, once it closed, an ended record with its counters. The
// lines are compared whole: the dataplane's keys and value forms.
#include "dfw/vmagent/flow_monitor.h"

#include <gtest/gtest.h>
#include <net/if.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <regex>
#include <thread>

#include "dfw/vmagent/conntrack.h"
#include "monitor_netns.h"
#include "monitor_sockets.h"

namespace dfw::vmagent {
namespace {

using namespace dfw::vmagent::testing;  // NOLINT

constexpr const char* kRules = R"(table inet dfw {
  chain input {
    type filter hook input priority filter; policy accept;
    iif lo accept
    ct state established,related ct mark != 0 accept
    udp dport 5555 counter log group 1 prefix "dfw:drop:5" drop comment "r5"
    tcp dport 8080 counter log group 1 prefix "dfw:allow:9" ct mark set 9 accept comment "r9"
  }
  chain output {
    type filter hook output priority filter; policy accept;
    oif lo accept
    udp dport 6666 counter log group 1 prefix "dfw:reject:0" drop comment "r0"
    udp dport 7777 counter log group 1 prefix "other:thing" drop
  }
}
)";

class Lines {
 public:
  void Add(const std::string& s) {
    std::lock_guard<std::mutex> l(mu_);
    lines_.push_back(s);
    cv_.notify_all();
  }
  // The first line matching `re` (whole line), "" on timeout.
  std::string WaitFor(const std::string& re, std::chrono::milliseconds t) {
    std::regex r(re);
    std::unique_lock<std::mutex> l(mu_);
    std::string found;
    cv_.wait_for(l, t, [&] {
      for (const auto& s : lines_) {
        if (std::regex_match(s, r)) {
          found = s;
          return true;
        }
      }
      return false;
    });
    return found;
  }
  int Count(const std::string& re) {
    std::regex r(re);
    std::lock_guard<std::mutex> l(mu_);
    return static_cast<int>(std::count_if(lines_.begin(), lines_.end(), [&](const std::string& s) {
      return std::regex_match(s, r);
    }));
  }
  std::string Dump() {
    std::lock_guard<std::mutex> l(mu_);
    std::string out;
    for (const auto& s : lines_) out += s + "\n";
    return out;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> lines_;
};

TEST(FlowMonitorTest, DeniedAllowedAndEndedRecords) {
  if (!IsRoot()) GTEST_SKIP() << "needs root (network namespaces)";
  VethPair p;
  ASSERT_EQ(p.b.Nft(kRules), 0);
  // Closed connections leave conntrack quickly (the test waits for it).
  ASSERT_EQ(p.b.Exec("sysctl -q -w net.netfilter.nf_conntrack_tcp_timeout_time_wait=1 "
                     "net.netfilter.nf_conntrack_tcp_timeout_close=1 "
                     "net.netfilter.nf_conntrack_tcp_timeout_fin_wait=1 "
                     "net.netfilter.nf_conntrack_tcp_timeout_last_ack=1 "
                     "net.netfilter.nf_conntrack_tcp_timeout_close_wait=1"),
            0);
  uint32_t vb = 0;
  {
    InNetns in(p.b.fd());
    absl::Status s = Conntrack::EnableAccounting();
    ASSERT_TRUE(s.ok()) << s;
    vb = if_nametoindex("vb");
  }
  ASSERT_NE(vb, 0u);

  Lines lines;
  FlowMonitorOptions o;
  o.netns_fd = p.b.fd();
  FlowMonitor mon(o, [&](const std::string& line) { lines.Add(line); });
  mon.SetInterfaces({{vb, "vnic-b"}});
  absl::Status started = mon.Start();
  ASSERT_TRUE(started.ok()) << started;

  // Denied, IN: a UDP datagram to 5555 (IP 20 + UDP 8 + 3 bytes = 31).
  {
    Fd u = SocketIn(p.a.fd(), SOCK_DGRAM, "198.18.0.1", 40000);
    ASSERT_TRUE(u.ok());
    sockaddr_in to = Sin("198.18.0.2", 5555);
    ASSERT_EQ(sendto(u.get(), "abc", 3, 0, reinterpret_cast<sockaddr*>(&to), sizeof(to)), 3);
  }
  std::string denied = lines.WaitFor(
      R"(\{"kind":"denied","time_ms":[0-9]+,"vnic":"vnic-b","direction":"in","proto":17,)"
      R"("src":"198\.18\.0\.1","sport":40000,"dst":"198\.18\.0\.2","dport":5555,"rule":5,)"
      R"("action":"drop","reason":"policy-drop","packets":1,"bytes":31\})",
      std::chrono::seconds(5));
  EXPECT_FALSE(denied.empty()) << lines.Dump();

  // Denied, OUT, by the default rule (rule 0) whose action is reject; and a
  // prefix that is not ours, ignored.
  {
    Fd u = SocketIn(p.b.fd(), SOCK_DGRAM, "198.18.0.2", 40002);
    ASSERT_TRUE(u.ok());
    sockaddr_in to = Sin("198.18.0.1", 6666);
    ASSERT_EQ(sendto(u.get(), "abcd", 4, 0, reinterpret_cast<sockaddr*>(&to), sizeof(to)), -1);
    to = Sin("198.18.0.1", 7777);
    ASSERT_EQ(sendto(u.get(), "abcd", 4, 0, reinterpret_cast<sockaddr*>(&to), sizeof(to)), -1);
  }
  std::string out = lines.WaitFor(
      R"(\{"kind":"denied","time_ms":[0-9]+,"vnic":"vnic-b","direction":"out","proto":17,)"
      R"("src":"198\.18\.0\.2","sport":40002,"dst":"198\.18\.0\.1","dport":6666,"rule":0,)"
      R"("action":"reject","reason":"default-rule","packets":1,"bytes":32\})",
      std::chrono::seconds(5));
  EXPECT_FALSE(out.empty()) << lines.Dump();

  // A connection admitted by rule 9 (mark 9): allowed once, ended after close.
  {
    Fd l = Listener(p.b.fd(), "198.18.0.2", 8080);
    ASSERT_TRUE(l.ok());
    Fd c, s;
    ASSERT_TRUE(Connect(p.a.fd(), "198.18.0.1", 40001, l, "198.18.0.2", 8080, &c, &s));
    ASSERT_TRUE(Echo(c, s, "request"));
    ASSERT_TRUE(Echo(s, c, "response"));
    c.Reset();
    char buf[16];
    EXPECT_EQ(recv(s.get(), buf, sizeof(buf), 0), 0);  // the FIN
  }
  const std::string conn =
      R"("vnic":"vnic-b","direction":"in","proto":6,"src":"198\.18\.0\.1","sport":40001,)"
      R"("dst":"198\.18\.0\.2","dport":8080,"rule":9,"action":"allow","reason":"none",)";
  // From NFLOG: the SYN's 60 bytes; from conntrack's NEW event (which
  // carries no counters): 0. Whichever came first is kept.
  std::string allowed = lines.WaitFor(
      R"(\{"kind":"allowed","time_ms":[0-9]+,)" + conn + R"("packets":1,"bytes":(60|0)\})",
      std::chrono::seconds(5));
  EXPECT_FALSE(allowed.empty()) << lines.Dump();
  // The kernel reports an expired entry when it reaps it: its GC may take
  // up to a minute, a dump reaps expired entries at once.
  std::string ended;
  for (int i = 0; i < 30 && ended.empty(); ++i) {
    {
      InNetns in(p.b.fd());
      (void)Conntrack::List();
    }
    ended = lines.WaitFor(R"(\{"kind":"ended","time_ms":[0-9]+,)" + conn +
                              R"("packets":[1-9][0-9]*,"bytes":[1-9][0-9]*\})",
                          std::chrono::seconds(1));
  }
  EXPECT_FALSE(ended.empty()) << lines.Dump();
  mon.Stop();

  // NFLOG's and conntrack's allowed records for the SYN were paired.
  EXPECT_EQ(lines.Count(R"(\{"kind":"allowed".*)"), 1) << lines.Dump();
  std::smatch m;
  ASSERT_TRUE(std::regex_search(ended, m, std::regex(R"("packets":([0-9]+))")));
  EXPECT_GE(std::stoi(m[1]), 8);  // 3 handshake, 2 data (+acks), 4 teardown
  FlowMonitorStats st = mon.stats();
  EXPECT_EQ(st.duplicates, 1u);
  EXPECT_GE(st.ignored, 1u);  // "other:thing"
  EXPECT_EQ(st.queue_drops, 0u);
  EXPECT_EQ(st.nflog_overruns, 0u);
  EXPECT_EQ(st.records, static_cast<uint64_t>(lines.Count(".*")));
}

TEST(FlowMonitorTest, SecondListenerOnTheGroupIsAnError) {
  if (!IsRoot()) GTEST_SKIP() << "needs root (network namespaces)";
  TestNetns ns("grp");
  FlowMonitorOptions o;
  o.netns_fd = ns.fd();
  o.nflog_group = 3;
  FlowMonitor a(o, [](const std::string&) {});
  FlowMonitor b(o, [](const std::string&) {});
  ASSERT_TRUE(a.Start().ok());
  absl::Status s = b.Start();
  EXPECT_FALSE(s.ok());
  EXPECT_NE(std::string(s.message()).find("NFLOG group 3"), std::string::npos) << s;
}

}  // namespace
}  // namespace dfw::vmagent
