// PortWorker: the DPDK poll loop of dfw-dataplane. It owns one Pipeline and
// one ethdev port (the firewall port: net_virtio_user on OVS's vhost-user
// socket in production; net_ring / net_pcap / net_null in tests and
// benchmarks), and runs to completion on bursts of 32:
//
//   rx burst -> Pipeline::Process -> tx the allowed frames back to the same
//   port (OVS forwards them on; or to `tx_port` when set, e.g. net_null in
//   benchmarks), plus reject replies -> free the rest.
//
// When the port is idle it ages connections and backs off (pause, then short
// sleeps up to `max_idle_sleep_us`), so a 2-core host stays usable.
// Requests from the control thread that need the worker's own state (the
// connection table) travel through a mailbox checked once per loop.
//
// Several workers (WorkerRings): worker w polls rx queue w and transmits on
// tx queue w of the port, or (one port per worker) queue 0 of port w, and
// owns the vNICs whose local id % workers == w:
// their connections live in its Pipeline only. OVS puts a vNIC's frames on
// whichever queue its PMD thread uses (unless the agent steers each vNIC to
// its owner's own firewall port), so a frame read by the wrong worker
// is handed to its owner through a single-producer single-consumer ring
// (software redispatch, read from the steering tag alone), and both
// directions of every connection meet in one table with no lock. A frame
// with no steering tag stays where it was read (it is dropped there, by
// name). The others' frames go first; a worker whose ring toward another is
// nearly full leaves its queue unread that turn (backpressure to the port).
// So a ring never overflows (a worker reads at most a burst, and only when
// each of its rings has room for one); should a frame still find its ring
// full it is dropped and counted as `worker-handoff-full`.
//
// Thread safety: Run() on the worker's lcore; RequestConnections /
// RequestFlush / RequestExport / RequestImport / Stop from one control
// thread. A WorkerRings is shared by the workers' Run() loops.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "dfw/dataplane/pipeline.h"

struct rte_mempool;
struct rte_mbuf;
struct rte_ring;

namespace dfw::dataplane {

// The redispatch rings between N workers: ring(i, j) carries frames that
// worker i read and worker j owns.
class WorkerRings {
 public:
  // nullptr (and *error set) if a ring cannot be made. `name` keeps the
  // rings of several sets apart (DPDK ring names are global).
  static std::unique_ptr<WorkerRings> Create(const std::string& name, uint32_t workers,
                                             uint32_t size, std::string* error);
  ~WorkerRings();
  WorkerRings(const WorkerRings&) = delete;
  WorkerRings& operator=(const WorkerRings&) = delete;
  uint32_t workers() const { return workers_; }
  rte_ring* ring(uint32_t from, uint32_t to) const { return rings_[from * workers_ + to]; }
  // Frames handed over and not yet taken (once the workers stopped: the
  // frames in flight when they did, freed with the rings).
  uint64_t InFlight() const;

 private:
  explicit WorkerRings(uint32_t workers) : workers_(workers), rings_(workers * workers, nullptr) {}
  uint32_t workers_;
  std::vector<rte_ring*> rings_;
};

struct PortWorkerConfig {
  uint16_t port = 0;
  uint16_t queue = 0;     // rx and tx queue of `port` this worker uses
  int32_t tx_port = -1;   // < 0: allowed frames go back out of `port`
  int32_t tx_queue = -1;  // < 0: `queue` (tx_port's queue, or port's when it has none)
  uint32_t burst = 32;
  uint32_t max_idle_sleep_us = 1000;
  uint32_t sweep_budget = 256;  // connection slots aged per idle turn (and every 64 bursts)
  // Several workers: the rings between them and this worker's index, which
  // must be its Pipeline's worker index. nullptr: one worker, no redispatch.
  WorkerRings* rings = nullptr;
  uint32_t index = 0;
};

class PortWorker {
 public:
  PortWorker(Pipeline* pipeline, rte_mempool* pool, const PortWorkerConfig& config);
  ~PortWorker();

  // The loop; returns after Stop().
  void Run();
  void Stop() { stop_.store(true, std::memory_order_release); }

  // Control thread: served by the worker between bursts; blocks until then
  // (or `timeout_ms`). False on timeout.
  bool RequestConnections(int zone, uint32_t limit, std::vector<ConnInfo>* out,
                          uint32_t timeout_ms = 2000);
  bool RequestFlush(int zone, uint64_t* flushed, uint32_t timeout_ms = 2000);
  // ConnTable::ExportZone / ImportAll on the worker (conn_table.h). The
  // exported entries leave with their VM: MarkMoved (their removal here is
  // not their end for the rules' session totals).
  bool RequestExport(uint16_t zone, uint32_t max, std::vector<ConnExport>* out, uint32_t* total,
                     uint32_t timeout_ms = 2000);
  bool RequestImport(uint16_t zone, const std::vector<ConnExport>& entries,
                     const std::vector<uint32_t>& numbers, ConnImportResult* result,
                     uint32_t timeout_ms = 2000);

  uint64_t rx_packets() const { return rx_.load(std::memory_order_relaxed); }
  uint64_t tx_packets() const { return tx_.load(std::memory_order_relaxed); }
  uint64_t tx_dropped() const { return tx_dropped_.load(std::memory_order_relaxed); }
  uint64_t idle_sleeps() const { return sleeps_.load(std::memory_order_relaxed); }
  // Frames this worker read for another worker and handed over.
  uint64_t redispatched() const { return redispatched_.load(std::memory_order_relaxed); }

 private:
  struct Request;
  bool Submit(Request* r, uint32_t timeout_ms);
  void Serve(uint64_t now_ms);
  // Hands the frames of rx[0..n) that other workers own to them; returns how
  // many stay, compacted at the front.
  uint16_t Redispatch(rte_mbuf** rx, uint16_t n);

  Pipeline* pipeline_;
  rte_mempool* pool_;
  PortWorkerConfig config_;
  std::atomic<bool> stop_{false};
  std::atomic<Request*> mailbox_{nullptr};
  std::atomic<uint64_t> rx_{0}, tx_{0}, tx_dropped_{0}, sleeps_{0}, redispatched_{0};
};

uint64_t MonotonicMs();

}  // namespace dfw::dataplane
