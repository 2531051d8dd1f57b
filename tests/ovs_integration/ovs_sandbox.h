// OvsSandbox: a private ovsdb-server + ovs-vswitchd for tests.
//
// Everything lives in a fresh temp dir (database, sockets, pidfiles, logs;
// OVS_RUNDIR/OVS_DBDIR/OVS_LOGDIR/OVS_SYSCONFDIR point there), so the
// machine's own OVS, if any, is never touched. ovs-vswitchd is the plain
// /usr/sbin/ovs-vswitchd (no DPDK, no hugepages) started with
// --enable-dummy=override --disable-system: every netdev (the bridge's
// internal port included) is a userspace dummy, so no kernel device is
// created. The bridge has datapath_type=netdev (the userspace datapath).
// The destructor stops both daemons by the pids in their pidfiles (SIGTERM,
// then SIGKILL after 5 s) and removes the dir, also when a test fails.
#pragma once

#include <chrono>
#include <string>

namespace dfw::ovs::testing {

class OvsSandbox {
 public:
  OvsSandbox();
  ~OvsSandbox();
  OvsSandbox(const OvsSandbox&) = delete;
  OvsSandbox& operator=(const OvsSandbox&) = delete;

  // Starts the daemons and creates bridge `bridge`; false (with error()) if
  // anything failed.
  bool Start(const std::string& bridge = "br0");

  const std::string& dir() const { return dir_; }
  std::string db_socket() const { return dir_ + "/db.sock"; }
  std::string mgmt_target(const std::string& bridge = "br0") const {
    return "unix:" + dir_ + "/" + bridge + ".mgmt";
  }
  const std::string& error() const { return error_; }

  // Runs `ovs-vsctl --db=... --timeout=10 <args>`; returns its exit code.
  int Vsctl(const std::string& args, std::string* out = nullptr);
  // Runs `ovs-ofctl -O OpenFlow13 <cmd> <mgmt> <args>`.
  int Ofctl(const std::string& cmd, const std::string& args, std::string* out = nullptr,
            const std::string& bridge = "br0");

  // Runs a shell command with the sandbox's OVS_* environment.
  int Run(const std::string& cmd, std::string* out = nullptr);

 private:
  void StopDaemon(const std::string& pidfile);
  std::string env_;
  std::string dir_;
  std::string error_;
};

// Polls `pred` every 10 ms until it holds or `timeout` passes.
template <typename Pred>
bool WaitFor(Pred pred, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, nullptr);
  }
  return true;
}

}  // namespace dfw::ovs::testing
