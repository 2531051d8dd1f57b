// Files the dataplane keeps in its --state-dir (state.pb, connections.pb):
// written so that a crash leaves the old contents or the new, never a cut
// file, and read refusing whatever cannot be one of them.
//
// Thread safety: plain functions; callers serialise writes to one path.
#pragma once

#include <sys/types.h>

#include <string>

#include "dfw/dataplane/ruleset_compiler.h"  // Status

namespace dfw::dataplane {

// Writes `data` to `path`: a temporary file (mode 0600), fsync, rename over
// `path`, fsync of the directory. The error names the file and errno.
Status WriteFileDurably(const std::string& path, const std::string& data);

// Reads `path` into *data. A missing file sets *missing and is not an error;
// a directory, a FIFO or another non-regular file, 0 bytes (what a cut write
// leaves: the files written here are never empty) or more than `max_bytes`
// are ("PATH: is a directory, not WHAT", WHAT e.g. "a saved state").
Status ReadSmallFile(const std::string& path, off_t max_bytes, const std::string& what,
                     std::string* data, bool* missing);

}  // namespace dfw::dataplane
