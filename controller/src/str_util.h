// String assembly for error messages: dfw::Cat / dfw::Join (shared with
// tagging), and the RocksDB status conversion.
#pragma once

#include "dfw/tagging/str_cat.h"

namespace rocksdb {
class Status;
}

#include "absl/status/status.h"
namespace dfw::controller {
absl::Status FromIter(const rocksdb::Status& s);
}
