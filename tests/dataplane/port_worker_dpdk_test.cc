// The real DPDK path: frames as mbufs through an ethdev port (net_ring, built
// from two rte_rings), the PortWorker loop on its own thread, the policy
// applied through DataplaneState from its wire form, exactly as
// dfw-dataplane runs. EAL runs with --no-pci --no-huge --in-memory.
#include <gtest/gtest.h>
#include <rte_eal.h>
#include <rte_eth_ring.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_ring.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>

#include "dataplane_state.h"
#include "dataplane_test_policy.h"
#include "dpdk_harness.h"
#include "frame_builder.h"
#include "port_worker.h"

namespace dfw::dataplane {
namespace {

using namespace testing;

constexpr uint32_t kWebIp = Ip4(198, 18, 1, 11), kDbIp = Ip4(198, 18, 2, 21);
const Mac kWebMac = MacOf(0x11), kDbMac = MacOf(0x21);

class PortWorkerDpdkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(EalEnvironment::up) << "EAL did not start; see the EAL error above";
    static int n = 0;
    std::string name = "t" + std::to_string(n++);
    rx_ = rte_ring_create((name + "rx").c_str(), 1024, 0, RING_F_SP_ENQ | RING_F_SC_DEQ);
    tx_ = rte_ring_create((name + "tx").c_str(), 1024, 0, RING_F_SP_ENQ | RING_F_SC_DEQ);
    ASSERT_TRUE(rx_ && tx_);
    int port = rte_eth_from_rings((name + "fw").c_str(), &rx_, 1, &tx_, 1, 0);
    ASSERT_GE(port, 0);
    port_ = static_cast<uint16_t>(port);
    pool_ =
        rte_pktmbuf_pool_create((name + "pool").c_str(), 2047, 0, 0, RTE_MBUF_DEFAULT_BUF_SIZE, 0);
    ASSERT_NE(pool_, nullptr);
    rte_eth_conf conf;
    std::memset(&conf, 0, sizeof(conf));
    ASSERT_EQ(rte_eth_dev_configure(port_, 1, 1, &conf), 0);
    ASSERT_EQ(rte_eth_rx_queue_setup(port_, 0, 256, 0, nullptr, pool_), 0);
    ASSERT_EQ(rte_eth_tx_queue_setup(port_, 0, 256, 0, nullptr), 0);
    ASSERT_EQ(rte_eth_dev_start(port_), 0);

    PipelineConfig pc;
    pc.conntrack.max_connections = 4096;
    pc.max_rule_num = 1024;
    pipeline_ = std::make_unique<Pipeline>(&vnics_, pc);
    state_ = std::make_unique<DataplaneState>(&vnics_, "");
    PortWorkerConfig wc;
    wc.port = port_;
    wc.max_idle_sleep_us = 100;
    worker_ = std::make_unique<PortWorker>(pipeline_.get(), pool_, wc);
    thread_ = std::thread([this] { worker_->Run(); });
  }
  void TearDown() override {
    if (!worker_) return;
    worker_->Stop();
    thread_.join();
    rte_eth_dev_stop(port_);
    rte_eth_dev_close(port_);
    rte_mbuf* m;
    while (rte_ring_dequeue(tx_, reinterpret_cast<void**>(&m)) == 0) rte_pktmbuf_free(m);
    rte_ring_free(rx_);
    rte_ring_free(tx_);
    rte_mempool_free(pool_);
  }

  void Inject(const Bytes& f) {
    rte_mbuf* m = rte_pktmbuf_alloc(pool_);
    ASSERT_NE(m, nullptr);
    std::memcpy(rte_pktmbuf_append(m, static_cast<uint16_t>(f.size())), f.data(), f.size());
    ASSERT_EQ(rte_ring_enqueue(rx_, m), 0);
  }
  // Frames the worker sent back out, waiting until `n` arrived or 2 s passed.
  std::vector<Bytes> Collect(size_t n) {
    std::vector<Bytes> out;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    while (out.size() < n && std::chrono::steady_clock::now() < deadline) {
      rte_mbuf* m;
      if (rte_ring_dequeue(tx_, reinterpret_cast<void**>(&m)) != 0) {
        std::this_thread::sleep_for(std::chrono::microseconds(200));
        continue;
      }
      const uint8_t* d = rte_pktmbuf_mtod(m, const uint8_t*);
      out.emplace_back(d, d + rte_pktmbuf_data_len(m));
      rte_pktmbuf_free(m);
    }
    return out;
  }
  // Injects and waits for the worker to have handled it.
  void Settle(uint64_t rx_before, uint64_t n) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    while (worker_->rx_packets() < rx_before + n && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  }

  static Tcp Seg(uint16_t sport, uint16_t dport, uint32_t seq, uint32_t ack, uint8_t flags) {
    Tcp t;
    t.sport = sport;
    t.dport = dport;
    t.seq = seq;
    t.ack = ack;
    t.flags = flags;
    return t;
  }
  Bytes WebOut(uint32_t dst, const Tcp& t) {
    return Cat(Eth(1, false, kWebMac, kDbMac, 0x0800), Ipv4(kWebIp, dst, 6, TcpHeader(t)));
  }

  rte_ring* rx_ = nullptr;
  rte_ring* tx_ = nullptr;
  rte_mempool* pool_ = nullptr;
  uint16_t port_ = 0;
  VnicTable vnics_;
  std::unique_ptr<Pipeline> pipeline_;
  std::unique_ptr<DataplaneState> state_;
  std::unique_ptr<PortWorker> worker_;
  std::thread thread_;
};

TEST_F(PortWorkerDpdkTest, FailsClosedUntilRulesArriveThenEnforcesThem) {
  using namespace tcpflag;
  // vNICs known, no rules yet: everything drops.
  ASSERT_TRUE(state_->SetVnic(WebVnic()).ok());
  ASSERT_TRUE(state_->SetVnic(DbVnic()).ok());
  Inject(WebOut(kDbIp, Seg(40000, 5432, 1, 0, kSyn)));
  Settle(0, 1);
  EXPECT_TRUE(Collect(1).empty());
  EXPECT_EQ(pipeline_->counters().drops[static_cast<int>(DropReason::kNoRuleset)].Get(), 1u);

  ASSERT_TRUE(state_->ApplyFull(WebDbState(7)).ok());
  uint64_t rx = worker_->rx_packets();
  Inject(WebOut(kDbIp, Seg(40000, 5432, 1, 0, kSyn)));  // allowed
  Inject(WebOut(kDbIp, Seg(40001, 22, 1, 0, kSyn)));    // default drop
  Inject(WebOut(kDbIp, Seg(40002, 8443, 1, 0, kSyn)));  // reject: a RST comes back
  Settle(rx, 3);
  std::vector<Bytes> out = Collect(2);
  ASSERT_EQ(out.size(), 2u);
  ParsedPacket a, b;
  ASSERT_EQ(ParseFrame(out[0].data(), static_cast<uint32_t>(out[0].size()), &a), DropReason::kNone);
  ASSERT_EQ(ParseFrame(out[1].data(), static_cast<uint32_t>(out[1].size()), &b), DropReason::kNone);
  EXPECT_EQ(a.dport, 5432) << "the allowed SYN went back to OVS unchanged";
  EXPECT_EQ(a.dir, Direction::kOut);
  EXPECT_EQ(b.tcp_flags, kRst | kAck) << "the reject reply";
  EXPECT_EQ(b.dir, Direction::kIn);
  EXPECT_EQ(b.sport, 8443);
  EXPECT_EQ(pipeline_->counters().drops[static_cast<int>(DropReason::kDefaultRule)].Get(), 1u);

  std::vector<ConnInfo> conns;
  ASSERT_TRUE(worker_->RequestConnections(-1, 100, &conns));
  ASSERT_EQ(conns.size(), 1u);
  EXPECT_EQ(conns[0].dport, 5432);
  EXPECT_EQ(conns[0].policy.rule_num, 10u);
  uint64_t flushed = 0;
  ASSERT_TRUE(worker_->RequestFlush(-1, &flushed));
  EXPECT_EQ(flushed, 1u);
}

TEST_F(PortWorkerDpdkTest, BadStateIsRefusedAndTheOldOneStaysInForce) {
  using namespace tcpflag;
  ASSERT_TRUE(state_->SetVnic(WebVnic()).ok());
  ASSERT_TRUE(state_->ApplyFull(WebDbState(3)).ok());
  v1::HostDesiredState bad = WebDbState(4);
  bad.mutable_rulesets(0)
      ->mutable_rules(0)
      ->mutable_services(0)
      ->mutable_destination_ports(0)
      ->set_first(70000);
  Status st = state_->ApplyFull(bad);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("vNIC 'web-1-eth0' rules[0].services[0].destination_ports[0]"),
            std::string::npos)
      << st.message();
  EXPECT_EQ(state_->applied_revision(), 3u);
  v1::HostDelta stale;
  stale.set_from_revision(1);
  stale.set_to_revision(5);
  st = state_->ApplyDelta(stale);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("does not match the applied revision 3"), std::string::npos)
      << st.message();
  Inject(WebOut(kDbIp, Seg(40000, 5432, 1, 0, kSyn)));
  Settle(0, 1);
  EXPECT_EQ(Collect(1).size(), 1u) << "revision 3 still enforced";
}

TEST_F(PortWorkerDpdkTest, AddressSetDeltaMovesAccessWithoutTouchingRules) {
  using namespace tcpflag;
  ASSERT_TRUE(state_->SetVnic(WebVnic()).ok());
  ASSERT_TRUE(state_->ApplyFull(WebDbState(3)).ok());
  // db's address leaves group db: web's SYN to it no longer matches rule 10.
  v1::HostDelta d;
  d.set_from_revision(3);
  d.set_to_revision(4);
  auto* sd = d.add_address_set_deltas();
  sd->set_id("g:db");
  sd->add_removed("198.18.2.21/32");
  sd->add_added("198.18.2.22/32");
  ASSERT_TRUE(state_->ApplyDelta(d).ok());
  EXPECT_EQ(state_->applied_revision(), 4u);
  Inject(WebOut(kDbIp, Seg(40000, 5432, 1, 0, kSyn)));
  Inject(WebOut(Ip4(198, 18, 2, 22), Seg(40001, 5432, 1, 0, kSyn)));
  Settle(0, 2);
  std::vector<Bytes> out = Collect(1);
  ASSERT_EQ(out.size(), 1u);
  ParsedPacket p;
  ASSERT_EQ(ParseFrame(out[0].data(), static_cast<uint32_t>(out[0].size()), &p), DropReason::kNone);
  EXPECT_EQ(p.dst.lo, Ip4(198, 18, 2, 22));
}

}  // namespace
}  // namespace dfw::dataplane
