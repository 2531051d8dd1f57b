// Internal: small POSIX file helpers for key material (explicit modes, fsync,
// atomic replace). Errors name the path and errno text.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace dfw::trust::internal {

// Creates `dir` (and missing parents, 0755) with mode `mode` if it does not
// exist; an existing directory is left as it is.
absl::Status MakeDir(const std::string& dir, mode_t mode);

// Writes `content` to a temporary file in the same directory, sets `mode`
// explicitly (fchmod, whatever the umask), fsyncs it, then moves it to `path`
// (rename; with `exclusive`, link + unlink so that an existing `path` is an
// AlreadyExists error and is never replaced), then fsyncs the directory.
absl::Status WriteFileAtomic(const std::string& path, std::string_view content, mode_t mode,
                             bool exclusive = false);

// The whole file; NotFound if it does not exist, other errors with errno text.
absl::StatusOr<std::string> ReadFile(const std::string& path);

bool Exists(const std::string& path);

}  // namespace dfw::trust::internal
