// Conntrack against real connections between two namespaces over a veth
// pair: entries are listed with the ct mark an nft rule set, DeleteIf
// deletes exactly the selected ones, and a connection whose entry was
// deleted is refused by a ruleset that only admits established traffic and
// new connections to another port (revalidate-on-change).
#include "dfw/vmagent/conntrack.h"

#include <gtest/gtest.h>
#include <netinet/in.h>

#include <algorithm>

#include "monitor_netns.h"
#include "monitor_sockets.h"

namespace dfw::vmagent {
namespace {

using namespace dfw::vmagent::testing;  // NOLINT

constexpr const char* kAdmit = R"(table inet t {
  chain input {
    type filter hook input priority filter; policy drop;
    iif lo accept
    ct state established,related accept
    tcp dport 8080 ct state new ct mark set 7 accept
    tcp dport 8082 ct state new ct mark set 8 accept
  }
}
)";

// After the change: established traffic and new connections to 8081 only.
constexpr const char* kNarrow = R"(flush table inet t
table inet t {
  chain input {
    type filter hook input priority filter; policy drop;
    iif lo accept
    ct state established,related accept
    tcp dport 8081 ct state new accept
  }
}
)";

const CtEntry* FindTcp(const std::vector<CtEntry>& v, uint16_t dport) {
  for (const auto& e : v) {
    if (e.proto == IPPROTO_TCP && e.dport == dport && e.src == "198.18.0.1") return &e;
  }
  return nullptr;
}

TEST(ConntrackTest, ListsMarksDeletesSelectedAndDeletedConnectionIsRefused) {
  if (!IsRoot()) GTEST_SKIP() << "needs root (network namespaces)";
  VethPair p;
  ASSERT_EQ(p.b.Nft(kAdmit), 0);
  {
    InNetns in(p.b.fd());
    absl::Status s = Conntrack::EnableAccounting();
    ASSERT_TRUE(s.ok()) << s;
  }
  EXPECT_EQ(p.b.Out("cat /proc/sys/net/netfilter/nf_conntrack_acct"), "1\n");

  Fd l7 = Listener(p.b.fd(), "198.18.0.2", 8080);
  Fd l8 = Listener(p.b.fd(), "198.18.0.2", 8082);
  ASSERT_TRUE(l7.ok() && l8.ok());
  Fd c7, s7, c8, s8;
  ASSERT_TRUE(Connect(p.a.fd(), "198.18.0.1", 40007, l7, "198.18.0.2", 8080, &c7, &s7));
  ASSERT_TRUE(Connect(p.a.fd(), "198.18.0.1", 40008, l8, "198.18.0.2", 8082, &c8, &s8));
  ASSERT_TRUE(Echo(c7, s7, "hello 7"));
  ASSERT_TRUE(Echo(s7, c7, "back 7"));
  ASSERT_TRUE(Echo(c8, s8, "hello 8"));

  absl::StatusOr<std::vector<CtEntry>> list;
  {
    InNetns in(p.b.fd());
    list = Conntrack::List();
  }
  ASSERT_TRUE(list.ok()) << list.status();
  const CtEntry* e7 = FindTcp(*list, 8080);
  const CtEntry* e8 = FindTcp(*list, 8082);
  ASSERT_NE(e7, nullptr);
  ASSERT_NE(e8, nullptr);
  EXPECT_EQ(e7->family, AF_INET);
  EXPECT_EQ(e7->dst, "198.18.0.2");
  EXPECT_EQ(e7->sport, 40007);
  EXPECT_EQ(e7->reply_src, "198.18.0.2");
  EXPECT_EQ(e7->reply_dport, 40007);
  EXPECT_EQ(e7->mark, 7u);
  EXPECT_EQ(e8->mark, 8u);
  EXPECT_GE(e7->orig_packets, 3u);  // SYN, ACK, data
  EXPECT_GE(e7->reply_packets, 2u);
  EXPECT_GT(e7->bytes(), 0u);

  // The rules change: 8080's rule is gone. Revalidate: delete what it admitted.
  ASSERT_EQ(p.b.Nft(kNarrow), 0);
  absl::StatusOr<size_t> deleted;
  {
    InNetns in(p.b.fd());
    deleted = Conntrack::DeleteIf([](const CtEntry& e) { return e.mark == 7; });
  }
  ASSERT_TRUE(deleted.ok()) << deleted.status();
  EXPECT_EQ(*deleted, 1u);

  // The surviving connection still flows; the deleted one is refused: its
  // next segment is a new connection to 8080, which nothing admits.
  EXPECT_TRUE(Echo(c8, s8, "still 8"));
  SetRecvTimeout(s7.get(), 1500);
  EXPECT_FALSE(Echo(c7, s7, "again 7"));

  {
    InNetns in(p.b.fd());
    list = Conntrack::List();
  }
  ASSERT_TRUE(list.ok()) << list.status();
  EXPECT_EQ(FindTcp(*list, 8080), nullptr);
  ASSERT_NE(FindTcp(*list, 8082), nullptr);
  EXPECT_EQ(FindTcp(*list, 8082)->mark, 8u);
  // Nothing left to delete.
  {
    InNetns in(p.b.fd());
    deleted = Conntrack::DeleteIf([](const CtEntry& e) { return e.mark == 7; });
  }
  ASSERT_TRUE(deleted.ok());
  EXPECT_EQ(*deleted, 0u);
}

}  // namespace
}  // namespace dfw::vmagent
