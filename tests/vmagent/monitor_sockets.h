// Socket helpers for the monitor tests: TCP/UDP sockets created inside a
// given network namespace (a socket stays in the namespace it was made in).
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <string>

#include "monitor_netns.h"

namespace dfw::vmagent::testing {

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      Reset();
      fd_ = o.fd_;
      o.fd_ = -1;
    }
    return *this;
  }
  ~Fd() { Reset(); }
  void Reset() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }
  int get() const { return fd_; }
  bool ok() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

inline sockaddr_in Sin(const std::string& ip, uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  inet_pton(AF_INET, ip.c_str(), &a.sin_addr);
  return a;
}

inline void SetRecvTimeout(int fd, int ms) {
  timeval tv{ms / 1000, (ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

// A socket of `type` in namespace `ns_fd`, bound to ip:port (port 0: any).
inline Fd SocketIn(int ns_fd, int type, const std::string& ip, uint16_t port) {
  InNetns in(ns_fd);
  Fd s(socket(AF_INET, type | SOCK_CLOEXEC, 0));
  if (!s.ok()) return s;
  int one = 1;
  setsockopt(s.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in a = Sin(ip, port);
  if (bind(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) return Fd();
  return s;
}

inline Fd Listener(int ns_fd, const std::string& ip, uint16_t port) {
  Fd s = SocketIn(ns_fd, SOCK_STREAM, ip, port);
  if (s.ok() && listen(s.get(), 8) != 0) return Fd();
  return s;
}

// Connects (the listener's backlog completes the handshake) and accepts.
inline bool Connect(int client_ns, const std::string& client_ip, uint16_t client_port,
                    const Fd& listener, const std::string& server_ip, uint16_t server_port,
                    Fd* client, Fd* server) {
  *client = SocketIn(client_ns, SOCK_STREAM, client_ip, client_port);
  if (!client->ok()) return false;
  sockaddr_in a = Sin(server_ip, server_port);
  SetRecvTimeout(client->get(), 3000);
  if (connect(client->get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) return false;
  *server = Fd(accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
  if (!server->ok()) return false;
  SetRecvTimeout(server->get(), 3000);
  return true;
}

// Sends `msg` on `from` and reads it on `to` (false if it does not arrive
// within to's receive timeout).
inline bool Echo(const Fd& from, const Fd& to, const std::string& msg) {
  if (send(from.get(), msg.data(), msg.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(msg.size())) {
    return false;
  }
  std::string got;
  char buf[256];
  while (got.size() < msg.size()) {
    ssize_t n = recv(to.get(), buf, sizeof(buf), 0);
    if (n <= 0) return false;
    got.append(buf, static_cast<size_t>(n));
  }
  return got == msg;
}

}  // namespace dfw::vmagent::testing
