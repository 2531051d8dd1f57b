// A Pipeline behind a real DPDK port for tests: EAL (--no-pci --no-huge
// --no-shconf), an ethdev built from two rte_rings (net_ring), and a
// PortWorker polling it on its own thread. Send() injects one frame as an
// mbuf and turns what comes out — the frame itself if forwarded, a reject
// reply — plus the drop counters back into a Verdict.
#pragma once

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
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "frame_builder.h"
#include "port_worker.h"

namespace dfw::dataplane::testing {

// Starts EAL once per test binary; removes its runtime directory at exit.
class EalEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    std::string prefix = "--file-prefix=dfwtest" + std::to_string(getpid());
    const char* args[] = {"test",
                          "--no-pci",
                          "--no-huge",
                          "--no-shconf",
                          "-m",
                          "256",
                          "--log-level=lib.eal:error",
                          prefix.c_str()};
    std::vector<char*> argv;
    for (const char* a : args) argv.push_back(const_cast<char*>(a));
    up = rte_eal_init(static_cast<int>(argv.size()), argv.data()) >= 0;
    ASSERT_TRUE(up) << rte_strerror(rte_errno);
  }
  void TearDown() override {
    if (up) rte_eal_cleanup();
    std::error_code ec;
    std::filesystem::remove_all("/var/run/dpdk/dfwtest" + std::to_string(getpid()), ec);
  }
  static inline bool up = false;
};

class DpdkHarness {
 public:
  explicit DpdkHarness(Pipeline* pipeline) : pipeline_(pipeline) {
    EXPECT_TRUE(EalEnvironment::up);
    static int n = 0;
    std::string name = "h" + std::to_string(n++);
    rx_ = rte_ring_create((name + "rx").c_str(), 1024, 0, RING_F_SP_ENQ | RING_F_SC_DEQ);
    tx_ = rte_ring_create((name + "tx").c_str(), 1024, 0, RING_F_SP_ENQ | RING_F_SC_DEQ);
    int port = rte_eth_from_rings((name + "fw").c_str(), &rx_, 1, &tx_, 1, 0);
    EXPECT_GE(port, 0);
    port_ = static_cast<uint16_t>(port);
    pool_ =
        rte_pktmbuf_pool_create((name + "pool").c_str(), 2047, 0, 0, RTE_MBUF_DEFAULT_BUF_SIZE, 0);
    rte_eth_conf conf;
    std::memset(&conf, 0, sizeof(conf));
    EXPECT_EQ(rte_eth_dev_configure(port_, 1, 1, &conf), 0);
    EXPECT_EQ(rte_eth_rx_queue_setup(port_, 0, 256, 0, nullptr, pool_), 0);
    EXPECT_EQ(rte_eth_tx_queue_setup(port_, 0, 256, 0, nullptr), 0);
    EXPECT_EQ(rte_eth_dev_start(port_), 0);
    PortWorkerConfig wc;
    wc.port = port_;
    wc.max_idle_sleep_us = 50;
    worker_ = std::make_unique<PortWorker>(pipeline_, pool_, wc);
    thread_ = std::thread([this] { worker_->Run(); });
  }
  ~DpdkHarness() {
    worker_->Stop();
    thread_.join();
    rte_eth_dev_stop(port_);
    rte_eth_dev_close(port_);
    // rte_ring_dequeue writes the object only when it returns 0, which GCC 12
    // at -Os cannot see (-Wmaybe-uninitialized): dequeue into an initialised
    // void* rather than through a cast of an uninitialised rte_mbuf*.
    void* obj = nullptr;
    while (rte_ring_dequeue(tx_, &obj) == 0) rte_pktmbuf_free(static_cast<rte_mbuf*>(obj));
    rte_ring_free(rx_);
    rte_ring_free(tx_);
    rte_mempool_free(pool_);
  }

  PortWorker& worker() { return *worker_; }

  Verdict Send(const Bytes& f, uint8_t* reply) {
    uint64_t drops[static_cast<int>(DropReason::kCount)];
    for (int r = 0; r < static_cast<int>(DropReason::kCount); ++r) {
      drops[r] = pipeline_->counters().drops[r].Get();
    }
    uint64_t rx = worker_->rx_packets();
    rte_mbuf* m = rte_pktmbuf_alloc(pool_);
    std::memcpy(rte_pktmbuf_append(m, static_cast<uint16_t>(f.size())), f.data(), f.size());
    EXPECT_EQ(rte_ring_enqueue(rx_, m), 0);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (worker_->rx_packets() == rx && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
    // The worker counts a burst's rx after transmitting it: what it sent for
    // this frame is in the tx ring now.
    Verdict v;
    void* obj = nullptr;
    while (rte_ring_dequeue(tx_, &obj) == 0) {
      rte_mbuf* out = static_cast<rte_mbuf*>(obj);
      const uint8_t* d = rte_pktmbuf_mtod(out, const uint8_t*);
      Bytes got(d, d + rte_pktmbuf_data_len(out));
      rte_pktmbuf_free(out);
      if (got == f) {
        v.forward = true;
      } else {
        std::memcpy(reply, got.data(), got.size());
        v.reply_len = static_cast<uint16_t>(got.size());
      }
    }
    for (int r = 0; r < static_cast<int>(DropReason::kCount); ++r) {
      if (pipeline_->counters().drops[r].Get() != drops[r]) v.reason = static_cast<DropReason>(r);
    }
    return v;
  }

 private:
  Pipeline* pipeline_;
  rte_ring* rx_ = nullptr;
  rte_ring* tx_ = nullptr;
  rte_mempool* pool_ = nullptr;
  uint16_t port_ = 0;
  std::unique_ptr<PortWorker> worker_;
  std::thread thread_;
};

[[maybe_unused]] inline auto* const kEalEnvironment =
    ::testing::AddGlobalTestEnvironment(new EalEnvironment);

}  // namespace dfw::dataplane::testing
