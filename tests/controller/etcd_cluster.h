// EtcdCluster: real etcd members (Debian's etcd-server, /usr/bin/etcd) on
// loopback ports of their own, each in a temporary data directory, for the
// etcd store and high-availability tests. Members are child processes,
// killed (SIGKILL) and reaped by the destructor, also when a test fails.
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "dfw/trust/loopback.h"
#include "test_util.h"

namespace dfw::controller::testing {

using trust::FreeLoopbackPort;

class EtcdCluster {
 public:
  static constexpr char kBinary[] = "/usr/bin/etcd";

  explicit EtcdCluster(int members, const std::vector<std::string>& extra_args = {})
      : extra_(extra_args) {
    for (int i = 0; i < members; ++i) {
      Member m;
      m.name = "m" + std::to_string(i);
      m.client_port = FreeLoopbackPort();
      m.peer_port = FreeLoopbackPort();
      members_.push_back(m);
    }
    for (size_t i = 0; i < members_.size(); ++i) {
      if (!initial_.empty()) initial_ += ",";
      initial_ += members_[i].name + "=http://127.0.0.1:" + std::to_string(members_[i].peer_port);
    }
  }
  ~EtcdCluster() {
    for (size_t i = 0; i < members_.size(); ++i) Kill(i);
  }
  EtcdCluster(const EtcdCluster&) = delete;
  EtcdCluster& operator=(const EtcdCluster&) = delete;

  // Starts every member and waits until the cluster answers; false (with
  // the members' logs in `why`) when etcd is missing or does not come up.
  bool Start(std::string* why) {
    if (access(kBinary, X_OK) != 0) {
      *why = std::string(kBinary) + " not found: run scripts/install-deps.sh (etcd-server)";
      return false;
    }
    for (size_t i = 0; i < members_.size(); ++i) Launch(i);
    if (!WaitHealthy(20000)) {
      *why = "etcd did not become healthy:\n" + Logs();
      return false;
    }
    return true;
  }

  std::vector<std::string> endpoints() const {
    std::vector<std::string> out;
    for (const auto& m : members_) out.push_back("127.0.0.1:" + std::to_string(m.client_port));
    return out;
  }
  std::string endpoint_list() const {
    std::string s;
    for (const auto& e : endpoints()) s += (s.empty() ? "" : ",") + e;
    return s;
  }
  size_t size() const { return members_.size(); }
  bool running(size_t i) const { return members_[i].pid > 0; }

  void Kill(size_t i) {
    Member& m = members_[i];
    if (m.pid <= 0) return;
    kill(m.pid, SIGKILL);
    waitpid(m.pid, nullptr, 0);
    m.pid = -1;
  }
  // Starts a killed member again on its data directory.
  void Restart(size_t i) { Launch(i); }

  // The index of the member that is etcd's raft leader, or -1 (asked with
  // etcdctl endpoint status of the running members).
  int LeaderIndex() const {
    for (size_t i = 0; i < members_.size(); ++i) {
      if (members_[i].pid <= 0) continue;
      std::string out =
          Run("ETCDCTL_API=3 etcdctl --command-timeout=2s --endpoints=127.0.0.1:" +
              std::to_string(members_[i].client_port) + " endpoint status -w fields 2>/dev/null");
      // "MemberID" : N and "Leader" : N are the same on the leader.
      auto field = [&](const std::string& name) {
        size_t p = out.find("\"" + name + "\" : ");
        if (p == std::string::npos) return std::string();
        p += name.size() + 5;
        return out.substr(p, out.find('\n', p) - p);
      };
      std::string id = field("MemberID"), leader = field("Leader");
      if (!id.empty() && id == leader) return static_cast<int>(i);
    }
    return -1;
  }

  // Compacts etcd's history to its current revision (a write outside any
  // test prefix, then `etcdctl compact`); false with etcdctl's output.
  bool Compact(std::string* why) const {
    std::string ep = "--endpoints=127.0.0.1:" + std::to_string(members_[0].client_port);
    std::string out =
        Run("ETCDCTL_API=3 etcdctl --command-timeout=2s " + ep + " put /compact-mark x -w fields");
    size_t p = out.find("\"Revision\" : ");
    if (p == std::string::npos) {
      *why = "etcdctl put: " + out;
      return false;
    }
    std::string rev = std::to_string(std::stoll(out.substr(p + 13)));
    out = Run("ETCDCTL_API=3 etcdctl --command-timeout=2s " + ep + " compact " + rev + " 2>&1");
    if (out.find("compacted revision") == std::string::npos) {
      *why = "etcdctl compact " + rev + ": " + out;
      return false;
    }
    return true;
  }

  bool WaitHealthy(int ms) const {
    return WaitFor(
        [&] {
          for (size_t i = 0; i < members_.size(); ++i) {
            if (members_[i].pid <= 0) continue;
            std::string out =
                Run("ETCDCTL_API=3 etcdctl --command-timeout=1s --endpoints=127.0.0.1:" +
                    std::to_string(members_[i].client_port) + " endpoint health 2>&1");
            if (out.find("is healthy") == std::string::npos) return false;
          }
          return true;
        },
        ms);
  }

  std::string Logs() const {
    std::string all;
    for (const auto& m : members_) {
      std::ifstream f(dir_.path() + "/" + m.name + ".log");
      std::stringstream ss;
      ss << f.rdbuf();
      std::string s = ss.str();
      if (s.size() > 3000) s = "..." + s.substr(s.size() - 3000);
      all += "--- " + m.name + "\n" + s + "\n";
    }
    return all;
  }

 private:
  struct Member {
    std::string name;
    int client_port = 0, peer_port = 0;
    pid_t pid = -1;
    bool started_once = false;
  };

  static std::string Run(const std::string& cmd) {
    std::string out;
    FILE* p = popen(cmd.c_str(), "r");
    if (!p) return out;
    char buf[512];
    while (fgets(buf, sizeof buf, p)) out += buf;
    pclose(p);
    return out;
  }

  void Launch(size_t i) {
    Member& m = members_[i];
    if (m.pid > 0) return;
    std::string client = "http://127.0.0.1:" + std::to_string(m.client_port);
    std::string peer = "http://127.0.0.1:" + std::to_string(m.peer_port);
    std::vector<std::string> args = {kBinary,
                                     "--name=" + m.name,
                                     "--data-dir=" + dir_.path() + "/" + m.name,
                                     "--listen-client-urls=" + client,
                                     "--advertise-client-urls=" + client,
                                     "--listen-peer-urls=" + peer,
                                     "--initial-advertise-peer-urls=" + peer,
                                     "--initial-cluster=" + initial_,
                                     "--initial-cluster-state=new",
                                     "--initial-cluster-token=dfw-test",
                                     "--heartbeat-interval=50",
                                     "--election-timeout=500",
                                     "--logger=zap",
                                     "--log-outputs=stderr"};
    for (const auto& a : extra_) args.push_back(a);
    std::string log = dir_.path() + "/" + m.name + ".log";
    pid_t pid = fork();
    if (pid == 0) {
      int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
      }
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(kBinary, argv.data());
      _exit(127);
    }
    m.pid = pid;
    m.started_once = true;
  }

  TempDir dir_;
  std::vector<std::string> extra_;
  std::vector<Member> members_;
  std::string initial_;
};

}  // namespace dfw::controller::testing
