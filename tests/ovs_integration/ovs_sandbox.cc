#include "ovs_sandbox.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

namespace dfw::ovs::testing {

OvsSandbox::OvsSandbox() {
  char tmpl[] = "/tmp/dfw-ovsi.XXXXXX";
  if (mkdtemp(tmpl) != nullptr) dir_ = tmpl;
  env_ = "OVS_RUNDIR=" + dir_ + " OVS_LOGDIR=" + dir_ + " OVS_DBDIR=" + dir_ +
         " OVS_SYSCONFDIR=" + dir_ + " ";
}

int OvsSandbox::Run(const std::string& cmd, std::string* out) {
  const std::string full = env_ + cmd + " 2>&1";
  FILE* p = popen(full.c_str(), "r");
  if (p == nullptr) return -1;
  std::string text;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) text.append(buf, n);
  const int status = pclose(p);
  if (out != nullptr) *out = text;
  const int rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  if (rc != 0) error_ = cmd + ": " + text;
  return rc;
}

int OvsSandbox::Vsctl(const std::string& args, std::string* out) {
  return Run("ovs-vsctl --db=unix:" + db_socket() + " --timeout=10 " + args, out);
}

int OvsSandbox::Ofctl(const std::string& cmd, const std::string& args, std::string* out,
                      const std::string& bridge) {
  return Run("ovs-ofctl -O OpenFlow13 " + cmd + " " + mgmt_target(bridge) + " " + args, out);
}

bool OvsSandbox::Start(const std::string& bridge) {
  if (dir_.empty()) {
    error_ = "mkdtemp failed";
    return false;
  }
  const std::string& d = dir_;
  if (Run("ovsdb-tool create " + d + "/conf.db /usr/share/openvswitch/vswitch.ovsschema") != 0)
    return false;
  if (Run("ovsdb-server --remote=punix:" + db_socket() + " --pidfile=" + d +
          "/ovsdb.pid --unixctl=" + d + "/ovsdb.ctl --detach --log-file=" + d + "/ovsdb.log " + d +
          "/conf.db") != 0)
    return false;
  if (Vsctl("--no-wait init") != 0) return false;
  if (Run("/usr/sbin/ovs-vswitchd unix:" + db_socket() + " --pidfile=" + d +
          "/vswitchd.pid --unixctl=" + d + "/vswitchd.ctl --detach --log-file=" + d +
          "/vswitchd.log --enable-dummy=override --disable-system") != 0)
    return false;
  if (Vsctl("add-br " + bridge + " -- set bridge " + bridge +
            " datapath_type=netdev protocols=OpenFlow10,OpenFlow13") != 0)
    return false;
  const std::string mgmt = d + "/" + bridge + ".mgmt";
  if (!WaitFor([&] { return access(mgmt.c_str(), F_OK) == 0; })) {
    error_ = "no " + mgmt + " after 10 s";
    return false;
  }
  return true;
}

namespace {

// Gone, or a zombie waiting for whoever adopted the detached daemon to reap it.
bool Exited(pid_t pid) {
  if (kill(pid, 0) != 0) return true;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(stat, line);
  const size_t paren = line.rfind(')');
  return paren == std::string::npos || paren + 2 >= line.size() || line[paren + 2] == 'Z';
}

}  // namespace

void OvsSandbox::StopDaemon(const std::string& pidfile) {
  std::ifstream in(pidfile);
  long pid = 0;
  if (!(in >> pid) || pid <= 1) return;
  if (kill(static_cast<pid_t>(pid), SIGTERM) != 0) return;
  if (!WaitFor([&] { return Exited(static_cast<pid_t>(pid)); }, std::chrono::seconds(5))) {
    kill(static_cast<pid_t>(pid), SIGKILL);
    WaitFor([&] { return Exited(static_cast<pid_t>(pid)); }, std::chrono::seconds(2));
  }
}

OvsSandbox::~OvsSandbox() {
  if (dir_.empty()) return;
  StopDaemon(dir_ + "/vswitchd.pid");
  StopDaemon(dir_ + "/ovsdb.pid");
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

}  // namespace dfw::ovs::testing
