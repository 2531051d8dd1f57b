#include "port_worker.h"

#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_pause.h>
#include <rte_ring.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>

namespace dfw::dataplane {

uint64_t MonotonicMs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

std::unique_ptr<WorkerRings> WorkerRings::Create(const std::string& name, uint32_t workers,
                                                 uint32_t size, std::string* error) {
  std::unique_ptr<WorkerRings> r(new WorkerRings(workers));
  for (uint32_t from = 0; from < workers; ++from) {
    for (uint32_t to = 0; to < workers; ++to) {
      if (from == to) continue;
      const std::string ring =
          name + "_" + std::to_string(from) + "_" + std::to_string(to);  // e.g. dfw_0_1
      rte_ring* x =
          rte_ring_create(ring.c_str(), size, SOCKET_ID_ANY, RING_F_SP_ENQ | RING_F_SC_DEQ);
      if (x == nullptr) {
        *error = "redispatch ring " + ring + ": " + rte_strerror(rte_errno);
        return nullptr;
      }
      r->rings_[from * workers + to] = x;
    }
  }
  return r;
}

uint64_t WorkerRings::InFlight() const {
  uint64_t n = 0;
  for (rte_ring* x : rings_) n += x == nullptr ? 0 : rte_ring_count(x);
  return n;
}

WorkerRings::~WorkerRings() {
  for (rte_ring* x : rings_) {
    if (x == nullptr) continue;
    void* m = nullptr;
    while (rte_ring_sc_dequeue(x, &m) == 0) rte_pktmbuf_free(static_cast<rte_mbuf*>(m));
    rte_ring_free(x);
  }
}

struct PortWorker::Request {
  enum class Kind { kConnections, kFlush, kExport, kImport } kind;
  int zone = -1;
  uint32_t limit = 0;
  std::vector<ConnInfo>* conns = nullptr;
  uint64_t flushed = 0;
  std::atomic<bool> done{false};
  std::vector<ConnExport>* exported = nullptr;  // kExport
  uint32_t total = 0;
  const std::vector<ConnExport>* to_import = nullptr;  // kImport
  const uint32_t* numbers = nullptr;
  ConnImportResult imported;
};

PortWorker::PortWorker(Pipeline* pipeline, rte_mempool* pool, const PortWorkerConfig& config)
    : pipeline_(pipeline), pool_(pool), config_(config) {
  if (config_.burst > 64) config_.burst = 64;
}
PortWorker::~PortWorker() = default;

bool PortWorker::Submit(Request* r, uint32_t timeout_ms) {
  Request* expected = nullptr;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (!mailbox_.compare_exchange_weak(expected, r, std::memory_order_acq_rel)) {
    expected = nullptr;
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  while (!r->done.load(std::memory_order_acquire)) {
    if (std::chrono::steady_clock::now() > deadline) {
      // Take the request back if the worker has not started it.
      Request* mine = r;
      if (mailbox_.compare_exchange_strong(mine, nullptr)) return false;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  return true;
}

bool PortWorker::RequestConnections(int zone, uint32_t limit, std::vector<ConnInfo>* out,
                                    uint32_t timeout_ms) {
  Request r{Request::Kind::kConnections, zone, limit, out};
  return Submit(&r, timeout_ms);
}

bool PortWorker::RequestFlush(int zone, uint64_t* flushed, uint32_t timeout_ms) {
  Request r{Request::Kind::kFlush, zone};
  bool ok = Submit(&r, timeout_ms);
  if (ok) *flushed = r.flushed;
  return ok;
}

bool PortWorker::RequestExport(uint16_t zone, uint32_t max, std::vector<ConnExport>* out,
                               uint32_t* total, uint32_t timeout_ms) {
  Request r{Request::Kind::kExport, zone, max};
  r.exported = out;
  bool ok = Submit(&r, timeout_ms);
  if (ok) *total = r.total;
  return ok;
}

bool PortWorker::RequestImport(uint16_t zone, const std::vector<ConnExport>& entries,
                               const std::vector<uint32_t>& numbers, ConnImportResult* result,
                               uint32_t timeout_ms) {
  Request r{Request::Kind::kImport, zone};
  r.to_import = &entries;
  r.numbers = numbers.size() == entries.size() ? numbers.data() : nullptr;
  bool ok = Submit(&r, timeout_ms);
  if (ok) *result = std::move(r.imported);
  return ok;
}

void PortWorker::Serve(uint64_t now_ms) {
  Request* r = mailbox_.load(std::memory_order_acquire);
  if (!r) return;
  if (!mailbox_.compare_exchange_strong(r, nullptr, std::memory_order_acq_rel)) return;
  ConnTable& ct = pipeline_->conntrack();
  if (r->kind == Request::Kind::kConnections) {
    ct.ForEach(now_ms, [&](uint32_t, const ConnInfo& c) {
      if (r->conns->size() >= r->limit) return;
      if (r->zone < 0 || c.zone == r->zone) r->conns->push_back(c);
    });
  } else if (r->kind == Request::Kind::kFlush) {
    r->flushed = ct.Flush(r->zone);
  } else if (r->kind == Request::Kind::kExport) {
    r->total = ct.ExportZone(static_cast<uint16_t>(r->zone), now_ms, r->limit, r->exported);
    ct.MarkMoved(static_cast<uint16_t>(r->zone), now_ms, r->limit);
  } else {
    r->imported = ct.ImportAll(static_cast<uint16_t>(r->zone), r->to_import->data(),
                               r->to_import->size(), now_ms, r->numbers);
  }
  r->done.store(true, std::memory_order_release);
}

uint16_t PortWorker::Redispatch(rte_mbuf** rx, uint16_t n) {
  WorkerRings& rings = *config_.rings;
  const uint32_t workers = rings.workers();
  constexpr uint32_t kMax = 64;
  rte_mbuf* away[VnicTable::kMaxWorkers][kMax];
  uint16_t away_n[VnicTable::kMaxWorkers] = {};
  uint16_t kept = 0;
  for (uint16_t i = 0; i < n; ++i) {
    const uint8_t* f = rte_pktmbuf_mtod(rx[i], const uint8_t*);
    uint32_t owner = config_.index;
    // The steering tag alone (ParseFrame reads it the same way); a frame
    // without one is judged (and dropped) where it was read.
    if (rte_pktmbuf_data_len(rx[i]) >= 18 && f[12] == 0x81 && f[13] == 0x00) {
      const uint32_t vid = (static_cast<uint32_t>(f[14]) << 8 | f[15]) & 0xfff;
      owner = OwnerWorker(vid & kMaxLocalId, workers);
    }
    if (owner == config_.index) {
      rx[kept++] = rx[i];
    } else {
      away[owner][away_n[owner]++] = rx[i];
    }
  }
  uint64_t handed = 0, lost = 0;
  for (uint32_t w = 0; w < workers; ++w) {
    if (away_n[w] == 0) continue;
    const unsigned sent = rte_ring_sp_enqueue_burst(
        rings.ring(config_.index, w), reinterpret_cast<void* const*>(away[w]), away_n[w], nullptr);
    for (unsigned i = sent; i < away_n[w]; ++i) rte_pktmbuf_free(away[w][i]);
    handed += sent;
    lost += away_n[w] - sent;
  }
  if (handed)
    redispatched_.store(redispatched_.load(std::memory_order_relaxed) + handed,
                        std::memory_order_relaxed);
  // Not expected (Run reads only when each ring has room for a burst); a
  // guard, counted by name in this worker's own counters.
  if (lost) pipeline_->counters().drops[static_cast<int>(DropReason::kWorkerHandoffFull)].Add(lost);
  return kept;
}

void PortWorker::Run() {
  constexpr uint32_t kMax = 64;
  rte_mbuf* rx[kMax];
  rte_mbuf* tx[2 * kMax];
  const uint8_t* frames[kMax];
  uint16_t lens[kMax];
  Verdict verdicts[kMax];
  alignas(64) static thread_local uint8_t replies[kMax][kMaxReplyLen];
  uint32_t idle = 0, bursts = 0;
  while (!stop_.load(std::memory_order_acquire)) {
    uint16_t n = 0, read = 0;
    bool blocked = false;
    if (config_.rings == nullptr) {
      n = read =
          rte_eth_rx_burst(config_.port, config_.queue, rx, static_cast<uint16_t>(config_.burst));
    } else {
      // First what the others read for us (up to a burst), then the port
      // for the room left (at least a quarter burst, so our own queue is
      // never starved). A worker whose ring toward another is nearly full
      // does not read the port at all this turn: the frames wait in the
      // port's queue (and overflow there, counted by the port) instead of
      // being read only to be dropped, and a fast worker cannot flood a
      // slow one.
      WorkerRings& rings = *config_.rings;
      const uint16_t burst = static_cast<uint16_t>(config_.burst);
      bool room = true;
      for (uint32_t w = 0; w < rings.workers(); ++w) {
        if (w == config_.index) continue;
        n += static_cast<uint16_t>(rte_ring_sc_dequeue_burst(
            rings.ring(w, config_.index), reinterpret_cast<void**>(rx + n), burst - n, nullptr));
        room = room && rte_ring_free_count(rings.ring(config_.index, w)) >= burst;
      }
      blocked = !room;
      if (room) {
        const uint16_t want = std::max<uint16_t>(static_cast<uint16_t>(burst - n), burst / 4);
        read = rte_eth_rx_burst(config_.port, config_.queue, rx + n, want);
        if (read) n += Redispatch(rx + n, read);
      }
    }
    uint64_t now = MonotonicMs();
    if (n == 0 && (read || blocked)) {
      // All handed to other workers, or waiting for room toward them: busy,
      // not idle.
      rx_.store(rx_.load(std::memory_order_relaxed) + read, std::memory_order_relaxed);
      idle = 0;
      if ((++bursts & 63) == 0) {
        pipeline_->Maintain(now, config_.sweep_budget);
        Serve(now);
      }
      continue;
    }
    if (n == 0) {
      pipeline_->Maintain(now, config_.sweep_budget);
      Serve(now);
      if (++idle > 64) {
        // Back off: the longer the silence, the longer the nap (capped).
        uint32_t us = std::min<uint32_t>(config_.max_idle_sleep_us, (idle - 64) * 10);
        sleeps_.fetch_add(1, std::memory_order_relaxed);
        std::this_thread::sleep_for(std::chrono::microseconds(us));
      } else {
        rte_pause();
      }
      continue;
    }
    idle = 0;
    for (uint16_t i = 0; i < n; ++i) {
      rte_mbuf* m = rx[i];
      frames[i] = rte_pktmbuf_mtod(m, const uint8_t*);
      // Multi-segment frames are judged on their first segment's bytes; the
      // parser treats what is missing as truncated and drops it by name.
      lens[i] = rte_pktmbuf_data_len(m);
    }
    pipeline_->Process(frames, lens, n, now, verdicts, replies);
    uint16_t out = 0;
    for (uint16_t i = 0; i < n; ++i) {
      if (verdicts[i].forward) {
        tx[out++] = rx[i];
      } else {
        rte_pktmbuf_free(rx[i]);
      }
      if (verdicts[i].reply_len) {
        rte_mbuf* r = rte_pktmbuf_alloc(pool_);
        if (r) {
          char* d = rte_pktmbuf_append(r, verdicts[i].reply_len);
          if (d) {
            std::memcpy(d, replies[i], verdicts[i].reply_len);
            tx[out++] = r;
          } else {
            rte_pktmbuf_free(r);
          }
        }
      }
    }
    const uint16_t tx_port =
        config_.tx_port < 0 ? config_.port : static_cast<uint16_t>(config_.tx_port);
    const uint16_t tx_queue =
        config_.tx_queue < 0 ? config_.queue : static_cast<uint16_t>(config_.tx_queue);
    uint16_t sent = out ? rte_eth_tx_burst(tx_port, tx_queue, tx, out) : 0;
    for (uint16_t i = sent; i < out; ++i) rte_pktmbuf_free(tx[i]);
    rx_.store(rx_.load(std::memory_order_relaxed) + read, std::memory_order_relaxed);
    tx_.store(tx_.load(std::memory_order_relaxed) + sent, std::memory_order_relaxed);
    if (sent < out) {
      tx_dropped_.store(tx_dropped_.load(std::memory_order_relaxed) + (out - sent),
                        std::memory_order_relaxed);
    }
    if ((++bursts & 63) == 0) {
      pipeline_->Maintain(now, config_.sweep_budget);
      Serve(now);
    }
  }
}

}  // namespace dfw::dataplane
