#include "api_socket.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>

namespace dfw::dataplane {
namespace {

constexpr size_t kMaxLoggedUids = 64;
constexpr int kPollMs = 100;

std::string Errno(int e) { return std::strerror(e); }

bool IsLoopbackHost(const std::string& host) {
  if (host == "localhost") return true;
  in_addr a4;
  if (inet_pton(AF_INET, host.c_str(), &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
  in6_addr a6;
  if (inet_pton(AF_INET6, host.c_str(), &a6) == 1) {
    if (IN6_IS_ADDR_LOOPBACK(&a6)) return true;
    return IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127;
  }
  return false;
}

bool FillAddr(const std::string& path, sockaddr_un* addr) {
  std::memset(addr, 0, sizeof(*addr));
  addr->sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr->sun_path)) return false;
  std::memcpy(addr->sun_path, path.c_str(), path.size());
  return true;
}

std::string Kind(mode_t m) {
  if (S_ISREG(m)) return "a regular file";
  if (S_ISLNK(m)) return "a symlink";
  if (S_ISDIR(m)) return "a directory";
  if (S_ISFIFO(m)) return "a fifo";
  return "not a socket";
}

// A POSIX access ACL (the kernel's system.posix_acl_access xattr format,
// linux/posix_acl_xattr.h): the owner `owner_perm`, each of `uids`
// `uid_perm`, the group owner and others nothing, the mask `uid_perm`.
bool SetAcl(const std::string& path, uint16_t owner_perm, const std::vector<uid_t>& uids,
            uint16_t uid_perm, std::string* error) {
  enum : uint16_t { kUserObj = 1, kUser = 2, kGroupObj = 4, kMask = 0x10, kOther = 0x20 };
  constexpr uint32_t kUndefined = 0xffffffffu;
  std::vector<uint8_t> buf;
  auto put = [&](const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    buf.insert(buf.end(), b, b + n);
  };
  auto entry = [&](uint16_t tag, uint16_t perm, uint32_t id) {
    put(&tag, 2);  // little-endian on every platform DPDK runs here
    put(&perm, 2);
    put(&id, 4);
  };
  const uint32_t version = 2;
  put(&version, 4);
  entry(kUserObj, owner_perm, kUndefined);
  std::vector<uid_t> sorted(uids);
  std::sort(sorted.begin(), sorted.end());
  sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
  for (uid_t u : sorted) entry(kUser, uid_perm, static_cast<uint32_t>(u));
  entry(kGroupObj, 0, kUndefined);
  entry(kMask, uid_perm, kUndefined);
  entry(kOther, 0, kUndefined);
  if (setxattr(path.c_str(), "system.posix_acl_access", buf.data(), buf.size(), 0) != 0) {
    *error = path + ": cannot grant --api-allow-uid access with a POSIX ACL (" + Errno(errno) +
             (errno == EOPNOTSUPP ? "; the filesystem has no ACLs" : "") + ")";
    return false;
  }
  return true;
}

}  // namespace

std::string ParseApiEndpoint(const std::string& api, bool insecure_tcp, ApiEndpoint* out) {
  *out = ApiEndpoint();
  if (api.rfind("unix-abstract:", 0) == 0)
    return "--api " + api +
           ": an abstract unix socket has no file permissions; give a path, unix:PATH";
  if (api.rfind("unix:", 0) == 0) {
    out->kind = ApiEndpoint::Kind::kUnix;
    out->path = api.substr(5);
    if (out->path.rfind("//", 0) == 0) {
      out->path = out->path.substr(2);  // unix:///abs -> /abs
      if (out->path.empty() || out->path[0] != '/')
        return "--api " + api + ": unix:// wants an absolute path (unix:///run/dfw/x.sock)";
    }
    sockaddr_un addr;
    if (!FillAddr(out->path, &addr))
      return "--api " + api + ": the path is empty or longer than " +
             std::to_string(sizeof(addr.sun_path) - 1) + " bytes";
    return "";
  }
  if (api.find("://") != std::string::npos || api.rfind("ipv4:", 0) == 0 ||
      api.rfind("ipv6:", 0) == 0 || api.rfind("dns:", 0) == 0 || api.rfind("vsock:", 0) == 0)
    return "--api " + api + ": give unix:PATH (or HOST:PORT with --api-insecure-tcp)";
  // HOST:PORT, [V6]:PORT.
  std::string host, port;
  if (!api.empty() && api[0] == '[') {
    const size_t close = api.find(']');
    if (close == std::string::npos || close + 1 >= api.size() || api[close + 1] != ':')
      return "--api " + api + ": give unix:PATH, or HOST:PORT with --api-insecure-tcp";
    host = api.substr(1, close - 1);
    port = api.substr(close + 2);
  } else {
    const size_t colon = api.rfind(':');
    if (colon == std::string::npos)
      return "--api " + api + ": give unix:PATH, or HOST:PORT with --api-insecure-tcp";
    host = api.substr(0, colon);
    port = api.substr(colon + 1);
  }
  if (port.empty() || port.find_first_not_of("0123456789") != std::string::npos ||
      port.size() > 5 || std::stoul(port) > 65535)
    return "--api " + api + ": the port is not a number from 0 to 65535";
  if (!insecure_tcp)
    return "--api " + api +
           " is plaintext TCP with no authentication: any local user, or any peer that can "
           "reach the port, could rewrite the firewall. Use --api unix:PATH (0600, callers "
           "checked by uid); for a test on loopback only, add --api-insecure-tcp";
  if (!IsLoopbackHost(host))
    return "--api " + api + ": --api-insecure-tcp listens only on a loopback address " +
           "(127.0.0.0/8, ::1, localhost), and '" + host +
           "' is not one: a plaintext API reachable from other machines would let them rewrite "
           "the firewall";
  out->kind = ApiEndpoint::Kind::kTcp;
  out->host_port = api;
  return "";
}

std::string ApiSocket::CheckPath(const std::string& path) {
  struct stat st;
  if (lstat(path.c_str(), &st) != 0) return "";
  if (S_ISSOCK(st.st_mode)) return "";
  return path + " exists and is " + Kind(st.st_mode) +
         ", not a socket: refusing to remove it (remove it by hand if it is stale, or give "
         "another --api path)";
}

std::unique_ptr<ApiSocket> ApiSocket::Open(const std::string& path,
                                           const std::vector<uid_t>& allowed_uids,
                                           std::string* error) {
  sockaddr_un addr;
  if (!FillAddr(path, &addr)) {
    *error = "api socket path '" + path + "' is empty or too long";
    return nullptr;
  }
  const uid_t euid = geteuid();
  std::vector<uid_t> grant;  // uids that need an ACL entry: not root, not the owner
  for (uid_t u : allowed_uids)
    if (u != 0 && u != euid) grant.push_back(u);

  // The parent directory: missing components are created 0700 (and, for
  // --api-allow-uid, searchable by those uids); existing ones are left alone.
  std::vector<std::string> created;
  const size_t slash = path.rfind('/');
  const std::string parent = slash == std::string::npos ? "" : path.substr(0, slash);
  if (!parent.empty()) {
    std::vector<std::string> missing;
    for (std::string p = parent; !p.empty();) {
      struct stat st;
      if (stat(p.c_str(), &st) == 0) {
        if (!S_ISDIR(st.st_mode)) {
          *error = p + " is not a directory (api socket " + path + ")";
          return nullptr;
        }
        break;
      }
      missing.push_back(p);
      const size_t s = p.rfind('/');
      p = s == std::string::npos ? "" : p.substr(0, s);
    }
    for (auto it = missing.rbegin(); it != missing.rend(); ++it) {
      if (mkdir(it->c_str(), 0700) != 0 && errno != EEXIST) {
        *error = "cannot create " + *it + ": " + Errno(errno);
        return nullptr;
      }
      if (chmod(it->c_str(), 0700) != 0) {
        *error = "cannot chmod 0700 " + *it + ": " + Errno(errno);
        return nullptr;
      }
      created.push_back(*it);
    }
  }
  for (const auto& d : created)
    if (!grant.empty() && !SetAcl(d, 7, grant, 1, error)) return nullptr;

  // Whatever is at the path: a socket nobody listens on is stale (a killed
  // dataplane's) and removed; anything else is refused, never removed.
  if (std::string why = CheckPath(path); !why.empty()) {
    *error = why;
    return nullptr;
  }
  struct stat st;
  if (lstat(path.c_str(), &st) == 0) {
    const int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe < 0) {
      *error = "socket: " + Errno(errno);
      return nullptr;
    }
    const bool live = connect(probe, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    close(probe);
    if (live) {
      *error = path + ": another process listens on it (a dfw-dataplane still running?)";
      return nullptr;
    }
    if (unlink(path.c_str()) != 0 && errno != ENOENT) {
      *error = "cannot remove the stale socket " + path + ": " + Errno(errno);
      return nullptr;
    }
    std::fprintf(stderr, "dfw-dataplane: removed the stale api socket %s\n", path.c_str());
  }

  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *error = "socket: " + Errno(errno);
    return nullptr;
  }
  const mode_t old_umask = umask(0077);
  const int bound = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  const int bind_errno = errno;
  umask(old_umask);
  if (bound != 0) {
    close(fd);
    *error = "cannot bind " + path + ": " + Errno(bind_errno);
    return nullptr;
  }
  auto fail = [&](const std::string& why) {
    close(fd);
    unlink(path.c_str());
    *error = why;
    return nullptr;
  };
  if (chmod(path.c_str(), 0600) != 0)
    return fail("cannot chmod 0600 " + path + ": " + Errno(errno));
  if (!grant.empty()) {
    std::string why;
    if (!SetAcl(path, 6, grant, 6, &why)) return fail(why);
  }
  if (lstat(path.c_str(), &st) != 0 || !S_ISSOCK(st.st_mode))
    return fail(path + ": the socket vanished after bind");
  if (listen(fd, 64) != 0) return fail("cannot listen on " + path + ": " + Errno(errno));

  std::vector<uid_t> allowed = {0, euid};
  allowed.insert(allowed.end(), allowed_uids.begin(), allowed_uids.end());
  std::sort(allowed.begin(), allowed.end());
  allowed.erase(std::unique(allowed.begin(), allowed.end()), allowed.end());
  std::unique_ptr<ApiSocket> s(new ApiSocket(path, fd, std::move(allowed)));
  s->dev_ = st.st_dev;
  s->ino_ = st.st_ino;
  return s;
}

ApiSocket::ApiSocket(std::string path, int fd, std::vector<uid_t> allowed)
    : path_(std::move(path)), fd_(fd), allowed_(std::move(allowed)) {}

ApiSocket::~ApiSocket() {
  Stop();
  close(fd_);
  struct stat st;
  if (lstat(path_.c_str(), &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_)
    unlink(path_.c_str());
}

bool ApiSocket::Allowed(uid_t uid) const {
  return std::find(allowed_.begin(), allowed_.end(), uid) != allowed_.end();
}

void ApiSocket::Start(Admit admit) {
  admit_ = std::move(admit);
  thread_ = std::thread([this] { Loop(); });
}

void ApiSocket::Stop() {
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
}

void ApiSocket::Loop() {
  while (!stop_.load()) {
    pollfd p;
    p.fd = fd_;
    p.events = POLLIN;
    p.revents = 0;
    const int n = poll(&p, 1, kPollMs);
    if (n <= 0) continue;  // timeout, EINTR
    const int c = accept4(fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (c < 0) {
      // Out of descriptors or memory: back off instead of spinning on a
      // listening socket that stays readable.
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
        std::this_thread::sleep_for(std::chrono::milliseconds(kPollMs));
      continue;  // EAGAIN, ECONNABORTED, EINTR: the next one
    }
    ucred cred;
    socklen_t len = sizeof(cred);
    if (getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || len != sizeof(cred)) {
      Refuse(c, false, 0, 0);
      continue;
    }
    if (!Allowed(cred.uid)) {
      Refuse(c, true, cred.uid, cred.pid);
      continue;
    }
    admitted_.fetch_add(1, std::memory_order_relaxed);
    admit_(c);
  }
}

void ApiSocket::Refuse(int fd, bool known, uid_t uid, pid_t pid) {
  close(fd);
  refused_.fetch_add(1, std::memory_order_relaxed);
  if (!known) {
    if (logged_.size() < kMaxLoggedUids && logged_.insert(static_cast<uid_t>(-1)).second)
      std::fprintf(stderr,
                   "dfw-dataplane: api: refused a connection whose peer credentials could not "
                   "be read (further ones counted, not logged)\n");
    return;
  }
  if (logged_.count(uid)) return;
  if (logged_.size() >= kMaxLoggedUids) {
    if (!logged_overflow_)
      std::fprintf(stderr,
                   "dfw-dataplane: api: refusing connections from more than %zu uids; further "
                   "uids are counted (api_refused_connections), not logged\n",
                   kMaxLoggedUids);
    logged_overflow_ = true;
    return;
  }
  logged_.insert(uid);
  std::string who;
  for (uid_t u : allowed_) {
    if (!who.empty()) who += ", ";
    who += std::to_string(u);
  }
  std::fprintf(stderr,
               "dfw-dataplane: api: refused a connection from uid %u (pid %d) on %s: only uids "
               "%s may use the local API (--api-allow-uid adds one); further refusals of uid %u "
               "are counted (api_refused_connections), not logged\n",
               static_cast<unsigned>(uid), static_cast<int>(pid), path_.c_str(), who.c_str(),
               static_cast<unsigned>(uid));
}

}  // namespace dfw::dataplane
