// Two workers on one DPDK port (net_ring with two queues), as dfw-dataplane
// --workers 2 runs them: each polls its own queue, owns the vNICs whose
// local id % 2 is its index, and hands frames of the other's vNICs over
// through the redispatch rings. A connection's packets may arrive on either
// queue (OVS picks the queue by its PMD thread, not by flow): both
// directions must still meet in the owner's table, and only there.
#include <gtest/gtest.h>

#include <optional>

#include "dataplane_state.h"
#include "dataplane_test_policy.h"
#include "dpdk_harness.h"
#include "frame_builder.h"

namespace dfw::dataplane {
namespace {

using namespace testing;

constexpr uint32_t kWebIp = Ip4(198, 18, 1, 11), kDbIp = Ip4(198, 18, 2, 21);
constexpr uint32_t kWorkers = 2;  // web (local id 1): worker 1; db (local id 2): worker 0

PipelineConfig Config() {
  PipelineConfig pc;
  pc.conntrack.max_connections = 4096;
  pc.max_rule_num = 1024;
  return pc;
}

class MultiWorkerDpdkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(EalEnvironment::up);
    static int n = 0;
    const std::string name = "mw" + std::to_string(n++);
    for (uint32_t q = 0; q < kWorkers; ++q) {
      const std::string s = name + std::to_string(q);
      rx_[q] = rte_ring_create((s + "rx").c_str(), 1024, 0, RING_F_SP_ENQ | RING_F_SC_DEQ);
      tx_[q] = rte_ring_create((s + "tx").c_str(), 1024, 0, RING_F_SP_ENQ | RING_F_SC_DEQ);
      ASSERT_NE(rx_[q], nullptr);
      ASSERT_NE(tx_[q], nullptr);
    }
    const int port = rte_eth_from_rings((name + "fw").c_str(), rx_, kWorkers, tx_, kWorkers, 0);
    ASSERT_GE(port, 0);
    port_ = static_cast<uint16_t>(port);
    pool_ =
        rte_pktmbuf_pool_create((name + "pool").c_str(), 2047, 0, 0, RTE_MBUF_DEFAULT_BUF_SIZE, 0);
    ASSERT_NE(pool_, nullptr);
    rte_eth_conf conf;
    std::memset(&conf, 0, sizeof(conf));
    ASSERT_EQ(rte_eth_dev_configure(port_, kWorkers, kWorkers, &conf), 0);
    for (uint16_t q = 0; q < kWorkers; ++q) {
      ASSERT_EQ(rte_eth_rx_queue_setup(port_, q, 256, 0, nullptr, pool_), 0);
      ASSERT_EQ(rte_eth_tx_queue_setup(port_, q, 256, 0, nullptr), 0);
    }
    ASSERT_EQ(rte_eth_dev_start(port_), 0);
    std::string error;
    rings_ = WorkerRings::Create(name + "rd", kWorkers, 256, &error);
    ASSERT_NE(rings_, nullptr) << error;
    for (uint32_t w = 0; w < kWorkers; ++w) {
      pipelines_[w] = std::make_unique<Pipeline>(&vnics_, Config(), w);
      PortWorkerConfig wc;
      wc.port = port_;
      wc.queue = static_cast<uint16_t>(w);
      wc.max_idle_sleep_us = 50;
      wc.rings = rings_.get();
      wc.index = w;
      workers_[w] = std::make_unique<PortWorker>(pipelines_[w].get(), pool_, wc);
      threads_[w] = std::thread([this, w] { workers_[w]->Run(); });
    }
    ASSERT_TRUE(state_.SetVnic(WebVnic()).ok());
    ASSERT_TRUE(state_.SetVnic(DbVnic()).ok());
    ASSERT_TRUE(state_.ApplyFull(WebDbState(7)).ok());
  }
  void TearDown() override {
    for (uint32_t w = 0; w < kWorkers; ++w) {
      if (!workers_[w]) continue;
      workers_[w]->Stop();
      threads_[w].join();
    }
    rings_.reset();
    if (pool_ != nullptr) {
      rte_eth_dev_stop(port_);
      rte_eth_dev_close(port_);
    }
    for (uint32_t q = 0; q < kWorkers; ++q) {
      void* obj = nullptr;
      while (tx_[q] != nullptr && rte_ring_dequeue(tx_[q], &obj) == 0)
        rte_pktmbuf_free(static_cast<rte_mbuf*>(obj));
      rte_ring_free(rx_[q]);
      rte_ring_free(tx_[q]);
    }
    rte_mempool_free(pool_);
  }

  // Puts `f` on rx queue `q`; returns the tx queue it left by (the queue of
  // the worker that judged it), or nothing once a worker counted it dropped.
  std::optional<uint32_t> Send(const Bytes& f, uint32_t q) {
    const uint64_t drops = AllDrops();
    rte_mbuf* m = rte_pktmbuf_alloc(pool_);
    std::memcpy(rte_pktmbuf_append(m, static_cast<uint16_t>(f.size())), f.data(), f.size());
    EXPECT_EQ(rte_ring_enqueue(rx_[q], m), 0);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (std::chrono::steady_clock::now() < deadline) {
      for (uint32_t t = 0; t < kWorkers; ++t) {
        void* obj = nullptr;
        if (rte_ring_dequeue(tx_[t], &obj) != 0) continue;
        rte_mbuf* out = static_cast<rte_mbuf*>(obj);
        const uint8_t* d = rte_pktmbuf_mtod(out, const uint8_t*);
        Bytes got(d, d + rte_pktmbuf_data_len(out));
        rte_pktmbuf_free(out);
        EXPECT_EQ(got, f) << "only the frame itself may come out";
        return t;
      }
      if (AllDrops() != drops) return std::nullopt;
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
    ADD_FAILURE() << "the frame was neither forwarded nor dropped";
    return std::nullopt;
  }
  uint64_t AllDrops() const {
    uint64_t n = 0;
    for (int r = 0; r < static_cast<int>(DropReason::kCount); ++r)
      n += Drops(static_cast<DropReason>(r));
    return n;
  }
  uint64_t Drops(DropReason r) const {
    uint64_t n = 0;
    for (const auto& p : pipelines_) n += p->counters().drops[static_cast<int>(r)].Get();
    return n;
  }
  size_t ConnectionsOf(uint32_t worker) {
    std::vector<ConnInfo> conns;
    EXPECT_TRUE(workers_[worker]->RequestConnections(-1, 100, &conns));
    return conns.size();
  }
  // web -> db (web's egress, zone 1) and back (web's ingress, zone 1).
  static Bytes WebToDb(const Tcp& t) {
    return Cat(Eth(1, false, MacOf(0x11), MacOf(0x21), 0x0800),
               Ipv4(kWebIp, kDbIp, 6, TcpHeader(t)));
  }
  static Bytes DbToWeb(const Tcp& t) {
    return Cat(Eth(1, true, MacOf(0x21), MacOf(0x11), 0x0800),
               Ipv4(kDbIp, kWebIp, 6, TcpHeader(t)));
  }

  VnicTable vnics_{kWorkers};
  DataplaneState state_{&vnics_, ""};
  rte_ring* rx_[kWorkers] = {};
  rte_ring* tx_[kWorkers] = {};
  uint16_t port_ = 0;
  rte_mempool* pool_ = nullptr;
  std::unique_ptr<WorkerRings> rings_;
  std::unique_ptr<Pipeline> pipelines_[kWorkers];
  std::unique_ptr<PortWorker> workers_[kWorkers];
  std::thread threads_[kWorkers];
};

TEST_F(MultiWorkerDpdkTest, AConnectionsPacketsOnEitherQueueMeetInItsOwnersTableOnly) {
  Tcp syn;
  syn.sport = 40000;
  syn.dport = 5432;
  syn.seq = 1000;
  Tcp syn_ack = syn;
  std::swap(syn_ack.sport, syn_ack.dport);
  syn_ack.flags = tcpflag::kSyn | tcpflag::kAck;
  syn_ack.seq = 5000;
  syn_ack.ack = 1001;
  Tcp ack = syn;
  ack.flags = tcpflag::kAck;
  ack.seq = 1001;
  ack.ack = 5001;
  Tcp data = ack;
  data.payload = 100;
  Tcp data_ack = syn_ack;
  data_ack.flags = tcpflag::kAck;
  data_ack.seq = 5001;
  data_ack.ack = 1101;

  // Strict TCP: each segment passes only if the table saw the ones before
  // it, whichever queue they came by. Every one is judged by worker 1.
  EXPECT_EQ(Send(WebToDb(syn), 0), std::optional<uint32_t>(1));
  EXPECT_EQ(Send(DbToWeb(syn_ack), 1), std::optional<uint32_t>(1));
  EXPECT_EQ(Send(WebToDb(ack), 0), std::optional<uint32_t>(1));
  EXPECT_EQ(Send(WebToDb(data), 1), std::optional<uint32_t>(1));
  EXPECT_EQ(Send(DbToWeb(data_ack), 0), std::optional<uint32_t>(1));
  EXPECT_EQ(Drops(DropReason::kCtNoConnection) + Drops(DropReason::kCtInvalid), 0u);
  EXPECT_EQ(ConnectionsOf(1), 1u);
  EXPECT_EQ(ConnectionsOf(0), 0u) << "a vNIC's connections live in its owner's table only";
  EXPECT_EQ(workers_[0]->redispatched(), 3u);
  EXPECT_EQ(workers_[1]->redispatched(), 0u);

  // db's side of the same traffic (zone 2) is worker 0's, from either queue.
  Tcp to_db = syn;
  to_db.sport = 40001;
  EXPECT_EQ(Send(Cat(Eth(2, true, MacOf(0x11), MacOf(0x21), 0x0800),
                     Ipv4(kWebIp, kDbIp, 6, TcpHeader(to_db))),
                 1),
            std::optional<uint32_t>(0));
  EXPECT_EQ(ConnectionsOf(0), 1u);
  EXPECT_EQ(workers_[1]->redispatched(), 1u);

  // A segment of no connection is dropped by the owner and counted once.
  Tcp stray = ack;
  stray.sport = 40999;
  EXPECT_EQ(Send(WebToDb(stray), 0), std::nullopt);
  EXPECT_EQ(Drops(DropReason::kCtNoConnection), 1u);
  EXPECT_EQ(pipelines_[1]->counters().drops[static_cast<int>(DropReason::kCtNoConnection)].Get(),
            1u);
}

TEST_F(MultiWorkerDpdkTest, FramesWithoutASteeringTagAreDroppedWhereTheyWereRead) {
  const Bytes untagged = Ipv4(kWebIp, kDbIp, 17, UdpHeader(1, 2));
  Bytes frame(12, 0x02);
  Put16(frame, 0x0800);
  frame.insert(frame.end(), untagged.begin(), untagged.end());
  EXPECT_EQ(Send(frame, 1), std::nullopt);
  EXPECT_EQ(pipelines_[1]->counters().drops[static_cast<int>(DropReason::kNoSteeringTag)].Get(),
            1u);
  EXPECT_EQ(workers_[1]->redispatched(), 0u);
}

}  // namespace
}  // namespace dfw::dataplane
