// Test helpers for the monitor tests (nft_monitor, conntrack, flow_monitor):
// network namespaces the test creates and always removes, entering them on
// the calling thread, shell commands. Addresses only in 198.18.0.0/15.
#pragma once

#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <stdexcept>
#include <string>

#include "nft_test_netns.h"

namespace dfw::vmagent::testing {

// Sh (nft_test_netns.h) with its output, for the tests that read it.
inline std::string ShOut(const std::string& cmd) {
  std::string out;
  Sh(cmd, &out);
  return out;
}

// `ip netns add dfwm-<pid>-<tag>`; deleted by the destructor (also when the
// test fails: gtest assertions return, they do not unwind past it).
class TestNetns {
 public:
  explicit TestNetns(const std::string& tag)
      : name_("dfwm-" + std::to_string(getpid()) + "-" + tag) {
    Sh("ip netns del " + name_ + " 2>/dev/null");
    if (Sh("ip netns add " + name_) != 0) throw std::runtime_error("ip netns add " + name_);
    fd_ = open(("/run/netns/" + name_).c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) {
      Sh("ip netns del " + name_);
      throw std::runtime_error("open /run/netns/" + name_);
    }
    Exec("ip link set lo up");
  }
  ~TestNetns() {
    if (fd_ >= 0) close(fd_);
    Sh("ip netns del " + name_ + " 2>/dev/null");
  }
  TestNetns(const TestNetns&) = delete;
  TestNetns& operator=(const TestNetns&) = delete;

  const std::string& name() const { return name_; }
  int fd() const { return fd_; }
  // Runs a command inside the namespace; returns its exit status.
  int Exec(const std::string& cmd) const { return Sh("ip netns exec " + name_ + " " + cmd); }
  std::string Out(const std::string& cmd) const {
    return ShOut("ip netns exec " + name_ + " " + cmd);
  }
  // Loads an nft ruleset (text) in the namespace.
  int Nft(const std::string& ruleset) const {
    std::string path = "/tmp/" + name_ + ".nft";
    FILE* f = fopen(path.c_str(), "w");
    if (!f) return -1;
    fputs(ruleset.c_str(), f);
    fclose(f);
    int rc = Exec("nft -f " + path);
    unlink(path.c_str());
    return rc;
  }

 private:
  std::string name_;
  int fd_ = -1;
};

// EnterNetns (nft_test_netns.h) that throws when it cannot enter: the
// monitors' tests must never go on in the host's namespace.
class InNetns : public EnterNetns {
 public:
  explicit InNetns(int ns_fd) : EnterNetns(ns_fd) {
    if (!ok()) throw std::runtime_error("setns");
  }
};

// Two namespaces joined by a veth pair: a (198.18.0.1/24, dev va) and
// b (198.18.0.2/24, dev vb).
struct VethPair {
  TestNetns a{"a"}, b{"b"};
  VethPair() {
    if (a.Exec("ip link add va type veth peer name vb netns " + b.name()) != 0 ||
        a.Exec("ip addr add 198.18.0.1/24 dev va") != 0 || a.Exec("ip link set va up") != 0 ||
        b.Exec("ip addr add 198.18.0.2/24 dev vb") != 0 || b.Exec("ip link set vb up") != 0) {
      throw std::runtime_error("veth setup");
    }
  }
};

inline bool IsRoot() { return geteuid() == 0; }

}  // namespace dfw::vmagent::testing
