#include "files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "str_cat.h"

namespace dfw::trust::internal {
namespace {

absl::Status Errno(std::string_view what, const std::string& path, int err) {
  std::string msg = Cat(what, " ", path, ": ", std::strerror(err));
  if (err == ENOENT) return absl::NotFoundError(msg);
  if (err == EACCES || err == EPERM) return absl::PermissionDeniedError(msg);
  if (err == EEXIST) return absl::AlreadyExistsError(msg);
  return absl::InternalError(msg);
}

std::string DirOf(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// Closes an fd on scope exit.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

bool Exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

absl::Status MakeDir(const std::string& dir, mode_t mode) {
  if (dir.empty()) return absl::InvalidArgumentError("directory name is empty");
  struct stat st;
  if (::stat(dir.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) {
      return absl::FailedPreconditionError(Cat(dir, " exists and is not a directory"));
    }
    return absl::OkStatus();
  }
  std::string parent = DirOf(dir);
  if (parent != dir && !Exists(parent)) {
    if (auto s = MakeDir(parent, 0755); !s.ok()) return s;
  }
  if (::mkdir(dir.c_str(), mode) != 0 && errno != EEXIST) return Errno("cannot create", dir, errno);
  // mkdir's mode is filtered by the umask; set it exactly.
  if (::chmod(dir.c_str(), mode) != 0) return Errno("cannot chmod", dir, errno);
  return absl::OkStatus();
}

absl::Status WriteFileAtomic(const std::string& path, std::string_view content, mode_t mode,
                             bool exclusive) {
  std::string dir = DirOf(path);
  std::string tmpl = path + ".tmp.XXXXXX";
  Fd f;
  f.fd = ::mkstemp(tmpl.data());  // created 0600
  if (f.fd < 0) return Errno("cannot create a temporary file for", path, errno);
  std::string tmp = tmpl;
  auto fail = [&](std::string_view what) {
    int err = errno;
    ::unlink(tmp.c_str());
    return Errno(what, tmp, err);
  };
  if (::fchmod(f.fd, mode) != 0) return fail("cannot chmod");
  size_t done = 0;
  while (done < content.size()) {
    ssize_t n = ::write(f.fd, content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail("cannot write");
    done += static_cast<size_t>(n);
  }
  if (::fsync(f.fd) != 0) return fail("cannot fsync");
  if (::close(f.fd) != 0) {
    f.fd = -1;
    return fail("cannot close");
  }
  f.fd = -1;
  if (exclusive) {
    if (::link(tmp.c_str(), path.c_str()) != 0) {
      int err = errno;
      ::unlink(tmp.c_str());
      return Errno("cannot create", path, err);
    }
    ::unlink(tmp.c_str());
  } else if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return Errno("cannot rename a temporary file to", path, err);
  }
  Fd d;
  d.fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (d.fd < 0) return Errno("cannot open", dir, errno);
  if (::fsync(d.fd) != 0) return Errno("cannot fsync", dir, errno);
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  Fd f;
  f.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (f.fd < 0) return Errno("cannot read", path, errno);
  std::string out;
  char buf[8192];
  for (;;) {
    ssize_t n = ::read(f.fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Errno("cannot read", path, errno);
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > (1u << 24)) {
      return absl::InvalidArgumentError(Cat(path, " is larger than 16 MiB"));
    }
  }
  return out;
}

}  // namespace dfw::trust::internal
