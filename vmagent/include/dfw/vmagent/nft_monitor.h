// NftMonitor: tells the agent when someone else changed its nftables table,
// and which other tables' base chains could override its verdicts.
//
// What. A thread of its own listens to the kernel's nf_tables notifications
// (NETLINK_NETFILTER, group NFNLGRP_NFTABLES: what `nft monitor` reads). The
// notifications of one transaction end with NFT_MSG_NEWGEN, which names the
// process that committed it (NFTA_GEN_PROC_PID, NFTA_GEN_PROC_NAME). When a
// transaction touched the watched table (family inet, `table`: the table
// itself, its chains, rules, sets or set elements; `nft flush ruleset`
// deletes the table) and was not committed by this process, the callback
// gets one sentence saying what happened:
//   "nft (pid 4242) deleted table inet dfw"
//   "nft (pid 4242) deleted 3 rules in chain in_0, added 1 element to set a1_4"
// The agent then verifies its table and repairs it. If the socket overran
// (ENOBUFS: notifications were lost) the callback is told so, as a change of
// unknown origin: the agent must verify then too. If the socket fails for
// good, the callback says "nf_tables monitor stopped: ..." once and the
// thread ends (changes are no longer seen; the agent may restart it).
//
// "This process": the kernel reports the committing thread's id (in the
// initial pid namespace); a transaction is ours if that id is `self_pid` or,
// when self_pid is this process, any of this process's threads. An agent
// inside a pid namespace of its own would see foreign pids for itself.
//
// ListForeignBaseChains() dumps every chain (libnftnl) and returns the base
// chains of all other tables: an accept of ours cannot override their drop
// on the same hook, so the agent reports the ones on input/output.
//
// Namespaces: the monitor's socket is opened by its thread in `netns_fd`
// when given (setns), else in the network namespace of the thread that
// calls Start(). ListForeignBaseChains works in the calling thread's.
//
// Thread safety: Start() and Stop() from one owning thread (not from the
// callback: Stop joins the monitor's thread). The callback runs on the
// monitor's thread, one call at a time; it should be quick (queue work for
// the agent). Counters may be read from any thread.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

struct nlmsghdr;  // <linux/netlink.h>

namespace dfw::vmagent {

struct NftMonitorOptions {
  std::string table = "dfw";   // watched: table inet <table>
  int netns_fd = -1;           // >= 0: open the socket in this network namespace
  pid_t self_pid = 0;          // 0 = getpid(); tests name another process as "us"
  int rcvbuf_bytes = 8 << 20;  // socket receive buffer (SO_RCVBUFFORCE, then SO_RCVBUF)
};

struct ForeignBaseChain {
  std::string family;  // "ip", "ip6", "inet", "arp", "bridge", "netdev"
  std::string table;
  std::string chain;
  std::string type;  // "filter", "nat", "route"
  std::string hook;  // "input", "output", "prerouting", ... ("hook<N>" if unknown)
  int32_t priority = 0;
  std::string policy;  // "accept" or "drop"
  std::string device;  // netdev/ingress chains: the device, else empty
  // An ip/ip6/inet chain on the input or output hook: its drop (policy or
  // rule) drops what our table accepts.
  bool on_input_or_output = false;
};

class NftMonitor {
 public:
  using Callback = std::function<void(std::string what)>;

  NftMonitor(NftMonitorOptions options, Callback on_foreign_change);
  ~NftMonitor();  // Stop()
  NftMonitor(const NftMonitor&) = delete;
  NftMonitor& operator=(const NftMonitor&) = delete;

  // Opens the socket (on the monitor's thread) and starts listening; returns
  // once the socket is subscribed, so any change committed after Start()
  // returns is seen. Error if the socket cannot be opened or joined.
  absl::Status Start();
  void Stop();

  uint64_t transactions() const { return transactions_.load(std::memory_order_relaxed); }
  uint64_t foreign_changes() const { return foreign_.load(std::memory_order_relaxed); }
  uint64_t overruns() const { return overruns_.load(std::memory_order_relaxed); }

  // Base chains of every table but `table inet <our_table>`, all families.
  static absl::StatusOr<std::vector<ForeignBaseChain>> ListForeignBaseChains(
      std::string_view our_table);

  struct Pending;  // one transaction's changes to the watched table (internal)

 private:
  void Run(int netns_fd, std::function<void(absl::Status)> ready);
  bool IsOurs(uint32_t pid) const;
  int HandleMessage(const struct nlmsghdr* nlh);

  NftMonitorOptions options_;
  Callback callback_;
  pid_t self_pid_;
  std::thread thread_;
  int stop_fd_ = -1;
  std::unique_ptr<Pending> pending_;  // monitor thread only
  std::atomic<uint64_t> transactions_{0}, foreign_{0}, overruns_{0};
};

}  // namespace dfw::vmagent
