// dfw-dataplane's pieces together on the real DPDK path: DataplaneState
// applies the policy from its wire form (dfw.v1), the PortWorker polls a
// net_ring port on its own thread, frames go in and out as mbufs.
#include <gtest/gtest.h>

#include "dataplane_state.h"
#include "dataplane_test_policy.h"
#include "dpdk_harness.h"
#include "frame_builder.h"

namespace dfw::dataplane {
namespace {

using namespace testing;

constexpr uint32_t kWebIp = Ip4(198, 18, 1, 11), kDbIp = Ip4(198, 18, 2, 21);

class PortWorkerDpdkTest : public ::testing::Test {
 protected:
  static PipelineConfig Config() {
    PipelineConfig pc;
    pc.conntrack.max_connections = 4096;
    pc.max_rule_num = 1024;
    return pc;
  }
  Verdict Send(const Bytes& f) { return harness_.Send(f, reply_); }
  Bytes WebSyn(uint32_t dst, uint16_t sport, uint16_t dport) {
    Tcp t;
    t.sport = sport;
    t.dport = dport;
    return Cat(Eth(1, false, MacOf(0x11), MacOf(0x21), 0x0800), Ipv4(kWebIp, dst, 6, TcpHeader(t)));
  }

  VnicTable vnics_;
  Pipeline pipeline_{&vnics_, Config()};
  DataplaneState state_{&vnics_, ""};
  DpdkHarness harness_{&pipeline_};
  uint8_t reply_[kMaxReplyLen];
};

TEST_F(PortWorkerDpdkTest, FailsClosedUntilRulesArriveThenEnforcesThem) {
  ASSERT_TRUE(state_.SetVnic(WebVnic()).ok());
  ASSERT_TRUE(state_.SetVnic(DbVnic()).ok());
  EXPECT_EQ(Send(WebSyn(kDbIp, 40000, 5432)).reason, DropReason::kNoRuleset);

  ASSERT_TRUE(state_.ApplyFull(WebDbState(7)).ok());
  EXPECT_TRUE(Send(WebSyn(kDbIp, 40000, 5432)).forward);
  EXPECT_EQ(Send(WebSyn(kDbIp, 40001, 22)).reason, DropReason::kDefaultRule);
  Verdict rej = Send(WebSyn(kDbIp, 40002, 8443));
  EXPECT_EQ(rej.reason, DropReason::kPolicyReject);
  ParsedPacket p;
  ASSERT_EQ(ParseFrame(reply_, rej.reply_len, &p), DropReason::kNone);
  EXPECT_EQ(p.tcp_flags, tcpflag::kRst | tcpflag::kAck) << "a RST went back out of the port";
  EXPECT_EQ(p.dir, Direction::kIn);

  std::vector<ConnInfo> conns;
  ASSERT_TRUE(harness_.worker().RequestConnections(-1, 100, &conns));
  ASSERT_EQ(conns.size(), 1u);
  EXPECT_EQ(conns[0].dport, 5432);
  EXPECT_EQ(conns[0].policy.rule_num, 10u);
  uint64_t flushed = 0;
  ASSERT_TRUE(harness_.worker().RequestFlush(-1, &flushed));
  EXPECT_EQ(flushed, 1u);
}

TEST_F(PortWorkerDpdkTest, BadStateIsRefusedAndTheOldOneStaysInForce) {
  ASSERT_TRUE(state_.SetVnic(WebVnic()).ok());
  ASSERT_TRUE(state_.ApplyFull(WebDbState(3)).ok());
  v1::HostDesiredState bad = WebDbState(4);
  bad.mutable_rulesets(0)
      ->mutable_rules(0)
      ->mutable_services(0)
      ->mutable_destination_ports(0)
      ->set_first(70000);
  Status st = state_.ApplyFull(bad);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("vNIC 'web-1-eth0' rules[0].services[0].destination_ports[0]"),
            std::string::npos)
      << st.message();
  EXPECT_EQ(state_.applied_revision(), 3u);
  v1::HostDelta stale;
  stale.set_from_revision(1);
  stale.set_to_revision(5);
  st = state_.ApplyDelta(stale);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("does not match the applied revision 3"), std::string::npos)
      << st.message();
  EXPECT_TRUE(Send(WebSyn(kDbIp, 40000, 5432)).forward) << "revision 3 still enforced";
}

TEST_F(PortWorkerDpdkTest, AddressSetDeltaMovesAccessWithoutTouchingRules) {
  ASSERT_TRUE(state_.SetVnic(WebVnic()).ok());
  ASSERT_TRUE(state_.ApplyFull(WebDbState(3)).ok());
  // db's address leaves group db, another joins: rule 10 follows the group.
  v1::HostDelta d;
  d.set_from_revision(3);
  d.set_to_revision(4);
  auto* sd = d.add_address_set_deltas();
  sd->set_id("g:db");
  sd->add_removed("198.18.2.21/32");
  sd->add_added("198.18.2.22/32");
  ASSERT_TRUE(state_.ApplyDelta(d).ok());
  EXPECT_EQ(state_.applied_revision(), 4u);
  EXPECT_EQ(Send(WebSyn(kDbIp, 40000, 5432)).reason, DropReason::kDefaultRule);
  EXPECT_TRUE(Send(WebSyn(Ip4(198, 18, 2, 22), 40001, 5432)).forward);
}

}  // namespace
}  // namespace dfw::dataplane
