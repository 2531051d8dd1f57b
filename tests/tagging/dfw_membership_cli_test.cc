// The demo tool as a user runs it: the real binary on the shipped example.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <string>

namespace {

struct ToolRun {
  std::string out;
  int rc = -1;
};

ToolRun RunTool(const std::string& args) {
  std::string cmd =
      std::string(DFW_MEMBERSHIP_BIN) + " " + DFW_DEMO_SNAPSHOT + " " + args + " 2>&1";
  ToolRun r;
  FILE* p = popen(cmd.c_str(), "r");
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) r.out.append(buf, n);
  int status = pclose(p);
  r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

TEST(DfwMembershipCli, TagChangePrintsExactDeltaIncludingNestedGroup) {
  ToolRun r = RunTool("tag vm-web-2 env=prod");
  EXPECT_EQ(r.rc, 0) << r.out;
  auto at = r.out.find("$ tag vm-web-2 env=prod");
  ASSERT_NE(at, std::string::npos) << r.out;
  std::string delta = r.out.substr(at, r.out.find("== security groups after") - at);
  EXPECT_NE(delta.find("group prod\n    + VMs       vm-web-2"), std::string::npos) << delta;
  EXPECT_NE(delta.find("group prod-web\n    + VMs       vm-web-2"), std::string::npos) << delta;
  EXPECT_NE(delta.find("+ addresses 198.18.1.12"), std::string::npos) << delta;
  EXPECT_EQ(delta.find("group web"), std::string::npos) << "web did not change: " << delta;
}

TEST(DfwMembershipCli, RejectedChangesExitOneAndChangeNothing) {
  ToolRun r = RunTool("remove-group prod members prod");
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_NE(
      r.out.find("rejected, nothing changed: group 'prod' is referenced by group(s) prod-web"),
      std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("VMs: vm-db-1, vm-web-1"), std::string::npos) << r.out;
}

TEST(DfwMembershipCli, BadUsageExitsTwo) { EXPECT_EQ(RunTool("frobnicate").rc, 2); }

}  // namespace
