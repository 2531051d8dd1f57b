#include "nft_test_netns.h"

#include <fcntl.h>
#include <nftables/libnftables.h>
#include <sched.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>

namespace dfw::vmagent::testing {

int Sh(const std::string& cmd, std::string* out) {
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return -1;
  std::string text;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) text.append(buf, n);
  const int st = pclose(p);
  if (out) *out = text;
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

Netns::Netns(const std::string& tag) {
  static std::atomic<int> seq{0};
  name_ = "dfwt-" + std::to_string(getpid()) + "-" + tag + std::to_string(seq++);
  Sh("ip netns del " + name_);
  ok_ = Sh("ip netns add " + name_) == 0 && Exec("ip link set lo up") == 0;
}

Netns::~Netns() { Sh("ip netns del " + name_); }

int Netns::Exec(const std::string& cmd, std::string* out) const {
  std::string quoted = "'";
  for (char c : cmd) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  quoted += "'";
  return Sh("ip netns exec " + name_ + " sh -c " + quoted, out);
}

EnterNetns::EnterNetns(const std::string& name) {
  const int fd = open(("/run/netns/" + name).c_str(), O_RDONLY | O_CLOEXEC);
  saved_ = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  ok_ = saved_ >= 0 && fd >= 0 && setns(fd, CLONE_NEWNET) == 0;
  if (fd >= 0) close(fd);
}

EnterNetns::EnterNetns(int ns_fd) {
  saved_ = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  ok_ = saved_ >= 0 && ns_fd >= 0 && setns(ns_fd, CLONE_NEWNET) == 0;
}

EnterNetns::~EnterNetns() {
  if (saved_ >= 0) {
    if (setns(saved_, CLONE_NEWNET) != 0) abort();  // never continue in the test's namespace
    close(saved_);
  }
}

std::string NftRun(const std::string& text) {
  nft_ctx* ctx = nft_ctx_new(NFT_CTX_DEFAULT);
  nft_ctx_buffer_output(ctx);
  nft_ctx_buffer_error(ctx);
  const int rc = nft_run_cmd_from_buffer(ctx, text.c_str());
  std::string err = rc == 0 ? "" : std::string(nft_ctx_get_error_buffer(ctx));
  if (rc != 0 && err.empty()) err = "nft failed";
  nft_ctx_free(ctx);
  return err;
}

}  // namespace dfw::vmagent::testing
