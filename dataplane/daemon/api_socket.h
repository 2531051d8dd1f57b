// ApiSocket: the unix socket dfw-dataplane's local API listens on, and the
// check of who may use it.
//
// What. The local API (LocalApi, proto DataplaneService) rewrites the
// firewall: whoever can call SetState decides what every VM on the host may
// send. It has no TLS and no tokens; its trust is the kernel's. Two gates:
//
//   1. The file. The socket is created 0600 (umask 0077 around bind(2) and an
//      explicit chmod(2) after it, before listen(2), so nobody can connect
//      while the mode is anything else), owned by the dataplane's euid; a
//      parent directory that did not exist is created 0700. connect(2) on a
//      unix socket needs write permission on the file, so other users cannot
//      even reach the second gate (root passes file permissions regardless).
//   2. The peer. gRPC does not listen on the socket: this class does. A
//      thread accepts each connection, reads the peer's credentials from the
//      kernel (getsockopt SO_PEERCRED: the uid of the process that called
//      connect, not something the peer says) and admits only uid 0, the
//      dataplane's own euid, and the uids given with --api-allow-uid. An
//      admitted connection's fd is handed to gRPC (the caller's Admit, in
//      dfw-dataplane grpc::AddInsecureChannelFromFd on a server built with no
//      listening port); any other is closed at once, counted (refused(), the
//      Counters RPC's api_refused_connections) and logged once per uid, so a
//      flood of connections cannot flood the log.
//
//   An --api-allow-uid uid (an unprivileged agent) must also pass gate 1: the
//   socket gets a POSIX ACL entry user:UID:rw-, and a parent directory this
//   class created gets user:UID:--x (the group-owner and other entries stay
//   empty; stat(2) then shows the ACL mask, 0660 and 0710, in the group
//   bits). A filesystem without POSIX ACLs refuses that, and so does Open.
//   A parent directory that already existed is left as it is: it must let
//   that uid search it.
//
// How. Open prepares the path and returns a bound, listening socket: a stale
// socket file left by a killed dataplane is removed, but only a socket that
// nobody listens on; a regular file, a symlink or anything else at the path
// is refused with an error naming it (never removed), as is a socket another
// process still listens on. Start runs the accept loop on its own thread;
// the loop polls the listening fd with a 100 ms timeout, so Stop returns
// within that. The destructor stops the loop, closes the socket and removes
// the path if it is still the file this object bound.
//
// Thread safety. Open, Start, Stop and the destructor are for one
// controlling thread (dfw-dataplane's main and control threads, in order).
// Admit runs on the accept thread, one connection at a time. refused() and
// admitted() may be read from any thread (relaxed atomics). The umask is
// process-wide: Open sets it for the duration of one bind(2) and restores it.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace dfw::dataplane {

// Where --api asks the local API to listen.
struct ApiEndpoint {
  enum class Kind { kUnix, kTcp };
  Kind kind = Kind::kUnix;
  std::string path;       // kUnix: the socket's path
  std::string host_port;  // kTcp: HOST:PORT as given (a loopback HOST)
};

// Parses --api: "unix:PATH" (or "unix:///ABSOLUTE") is the norm; "HOST:PORT"
// (plaintext TCP, no peer check) only with `insecure_tcp` and only on a
// loopback HOST (127.0.0.0/8, ::1, localhost). Returns "" or why it is
// refused, as a sentence for the operator.
std::string ParseApiEndpoint(const std::string& api, bool insecure_tcp, ApiEndpoint* out);

class ApiSocket {
 public:
  // Called on the accept thread with an admitted connection's fd
  // (non-blocking, close-on-exec); it owns the fd from then on.
  using Admit = std::function<void(int fd)>;

  // "" if `path` may be used: nothing there, or a socket (stale or not,
  // decided by Open). Otherwise why not. For a check before the slow start.
  static std::string CheckPath(const std::string& path);

  // Creates the parent directory if missing (0700), removes a stale socket,
  // binds `path` (0600), listens. `allowed_uids` are admitted besides uid 0
  // and geteuid(). Null and *error set on failure.
  static std::unique_ptr<ApiSocket> Open(const std::string& path,
                                         const std::vector<uid_t>& allowed_uids,
                                         std::string* error);
  ~ApiSocket();
  ApiSocket(const ApiSocket&) = delete;
  ApiSocket& operator=(const ApiSocket&) = delete;

  // Starts the accept loop. Once.
  void Start(Admit admit);
  // Stops the accept loop and waits for it (at most ~100 ms). Idempotent.
  // Connections already admitted stay with gRPC.
  void Stop();

  const std::string& path() const { return path_; }
  uint64_t refused() const { return refused_.load(std::memory_order_relaxed); }
  uint64_t admitted() const { return admitted_.load(std::memory_order_relaxed); }
  bool Allowed(uid_t uid) const;

 private:
  ApiSocket(std::string path, int fd, std::vector<uid_t> allowed);
  void Loop();
  void Refuse(int fd, bool known, uid_t uid, pid_t pid);

  const std::string path_;
  const int fd_;
  const std::vector<uid_t> allowed_;  // uid 0, euid, --api-allow-uid
  dev_t dev_ = 0;                     // the bound file, removed at the end if still it
  ino_t ino_ = 0;
  Admit admit_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> refused_{0};
  std::atomic<uint64_t> admitted_{0};
  std::set<uid_t> logged_;  // uids whose refusal was logged (accept thread only)
  bool logged_overflow_ = false;
};

}  // namespace dfw::dataplane
