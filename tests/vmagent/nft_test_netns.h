// Test helpers for the nftables tests: network namespaces the test creates
// (dfwt-<pid>-<tag>) and always deletes, entering one on the calling thread,
// running a command inside one, and libnftables in the current namespace.
//
// Thread safety: Netns is a plain RAII value; EnterNetns changes the calling
// thread's namespace only (setns) and restores it when destroyed.
#pragma once

#include <string>

namespace dfw::vmagent::testing {

// Creates the namespace (deleting a stale one of the same name first) with
// lo up; deletes it when destroyed.
class Netns {
 public:
  explicit Netns(const std::string& tag);
  ~Netns();
  Netns(const Netns&) = delete;
  Netns& operator=(const Netns&) = delete;
  const std::string& name() const { return name_; }
  bool ok() const { return ok_; }
  // `ip netns exec <name> sh -c <cmd>`; returns the exit status, output in *out.
  int Exec(const std::string& cmd, std::string* out = nullptr) const;

 private:
  std::string name_;
  bool ok_ = false;
};

// While alive, the calling thread is in the namespace (sockets opened now
// belong to it).
class EnterNetns {
 public:
  explicit EnterNetns(const std::string& name);
  explicit EnterNetns(int ns_fd);  // a namespace held open by the caller
  ~EnterNetns();
  bool ok() const { return ok_; }

 private:
  int saved_ = -1;
  bool ok_ = false;
};

// Runs nft text through libnftables in the current namespace; "" on
// success, else nft's error text.
std::string NftRun(const std::string& text);
// Runs a shell command on the host (for `ip netns ...`); exit status.
int Sh(const std::string& cmd, std::string* out = nullptr);

}  // namespace dfw::vmagent::testing
