#include "durable_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace dfw::dataplane {
namespace {

Status Failed(const std::string& path, const std::string& what) {
  return Status::Error(path + ": " + what + ": " + std::strerror(errno));
}

}  // namespace

Status WriteFileDurably(const std::string& path, const std::string& data) {
  // Durable before it replaces the old file: the new contents reach the disk
  // (fsync), then the rename, then the directory entry (fsync of the
  // directory). A crash leaves the old file or the new one, never a
  // truncated file.
  const std::string tmp = path + ".tmp";
  const int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Failed(tmp, "cannot write the file");
  auto fail = [&](const std::string& what) {
    Status st = Failed(tmp, what);
    close(fd);
    unlink(tmp.c_str());
    return st;
  };
  for (size_t done = 0; done < data.size();) {
    const ssize_t n = write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return fail("cannot write the file");
    done += static_cast<size_t>(n);
  }
  if (fsync(fd) != 0) return fail("cannot sync the file");
  if (close(fd) != 0) {
    Status st = Failed(tmp, "cannot write the file");
    unlink(tmp.c_str());
    return st;
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    Status st = Failed(path, "cannot replace the file");
    unlink(tmp.c_str());
    return st;
  }
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "."
                          : slash == 0               ? "/"
                                                     : path.substr(0, slash);
  const int dfd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return Failed(dir, "cannot sync the directory");
  const bool synced = fsync(dfd) == 0;
  Status result = synced ? Status::Ok() : Failed(dir, "cannot sync the directory");
  close(dfd);
  return result;
}

Status ReadSmallFile(const std::string& path, off_t max_bytes, const std::string& what,
                     std::string* data, bool* missing) {
  *missing = false;
  data->clear();
  // O_NONBLOCK: a FIFO put there must not hang the start.
  const int fd = open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT) {
    *missing = true;
    return Status::Ok();
  }
  if (fd < 0) return Failed(path, "cannot read the file");
  struct stat sb;
  Status read = Status::Ok();
  if (fstat(fd, &sb) != 0) {
    read = Failed(path, "cannot read the file");
  } else if (!S_ISREG(sb.st_mode)) {
    read = Status::Error(path + ": is " +
                         (S_ISDIR(sb.st_mode) ? "a directory" : "not a regular file") + ", not " +
                         what);
  } else if (sb.st_size == 0) {
    // What a write cut short by a crash may leave; a first start has no file.
    read = Status::Error(path + ": is empty (0 bytes), not " + what);
  } else if (sb.st_size > max_bytes) {
    read = Status::Error(path + ": " + std::to_string(sb.st_size) + " bytes is above the " +
                         std::to_string(max_bytes) + " such a file may have");
  } else {
    data->resize(static_cast<size_t>(sb.st_size));
    for (size_t done = 0; done < data->size() && read.ok();) {
      const ssize_t n = ::read(fd, data->data() + done, data->size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) read = Failed(path, "cannot read the file");
      if (n == 0) {
        data->resize(done);  // shrank meanwhile: parsed as it is
        break;
      }
      done += n > 0 ? static_cast<size_t>(n) : 0;
    }
  }
  close(fd);
  return read;
}

}  // namespace dfw::dataplane
