#include "conn_snapshot.h"

#include <unistd.h>

#include <chrono>
#include <map>
#include <vector>

#include "durable_file.h"
#include "local_api.h"

namespace dfw::dataplane {
namespace {

// 2^20 entries (the default table) of about 70 bytes each, with room.
constexpr off_t kMaxSnapshotBytes = off_t{1} << 30;

}  // namespace

uint64_t UnixMs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

Status SaveConnections(const std::string& path, const std::vector<const ConnTable*>& tables,
                       const DataplaneState& state, uint64_t now_ms, SnapshotResult* result) {
  *result = SnapshotResult{};
  v1::ConnectionSnapshot snap;
  snap.set_written_unix_ms(UnixMs());
  std::vector<ConnExport> entries;
  for (const v1::DataplaneVNic& v : state.Vnics()) {
    entries.clear();
    const ConnTable& table =
        *tables[OwnerWorker(v.local_id(), static_cast<uint32_t>(tables.size()))];
    table.ExportZone(static_cast<uint16_t>(v.local_id()), now_ms, 0, &entries);
    if (entries.empty()) continue;
    auto* out = snap.add_vnics();
    out->set_vnic_id(v.id());
    out->mutable_entries()->Reserve(static_cast<int>(entries.size()));
    for (const ConnExport& c : entries) ConnectionEntryToProto(c, out->add_entries());
    ++result->vnics;
    result->entries += static_cast<uint32_t>(entries.size());
  }
  std::string data;
  if (!snap.SerializeToString(&data)) return Status::Error(path + ": cannot serialize");
  return WriteFileDurably(path, data);
}

Status LoadConnections(const std::string& path, const std::vector<ConnTable*>& tables,
                       const DataplaneState& state, uint64_t now_ms, SnapshotResult* result) {
  *result = SnapshotResult{};
  std::string data;
  bool missing = false;
  Status read = ReadSmallFile(path, kMaxSnapshotBytes, "a connection snapshot", &data, &missing);
  if (missing) return Status::Ok();
  unlink(path.c_str());  // read once, whatever it held
  if (!read.ok()) return read;
  v1::ConnectionSnapshot snap;
  if (!snap.ParseFromString(data)) return Status::Error(path + ": is not a connection snapshot");
  const uint64_t now_unix = UnixMs();
  // Down for this long (0 if the clock went back).
  const uint64_t down_ms =
      now_unix > snap.written_unix_ms() ? now_unix - snap.written_unix_ms() : 0;
  std::map<std::string, uint16_t> zones;
  for (const v1::DataplaneVNic& v : state.Vnics())
    zones[v.id()] = static_cast<uint16_t>(v.local_id());
  std::vector<ConnExport> entries;
  std::vector<uint32_t> numbers;
  for (int i = 0; i < snap.vnics_size(); ++i) {
    const auto& v = snap.vnics(i);
    auto zone = zones.find(v.vnic_id());
    if (zone == zones.end()) {
      result->unknown += static_cast<uint32_t>(v.entries_size());
      continue;
    }
    entries.clear();
    numbers.clear();
    for (int j = 0; j < v.entries_size(); ++j) {
      ConnExport c;
      if (Status st = ConnectionEntryFromProto(v.entries(j), &c); !st.ok()) {
        if (result->first_error.empty()) {
          result->first_error =
              "vnics[" + std::to_string(i) + "].entries[" + std::to_string(j) + "]." + st.message();
        }
        ++result->rejected;
        continue;
      }
      if (c.expires_in_ms <= down_ms) {
        ++result->expired;
        continue;
      }
      c.expires_in_ms -= static_cast<uint32_t>(down_ms);
      entries.push_back(c);
      numbers.push_back(static_cast<uint32_t>(j));
    }
    if (entries.empty()) continue;
    ConnTable* table = tables[OwnerWorker(zone->second, static_cast<uint32_t>(tables.size()))];
    ConnImportResult r =
        table->ImportAll(zone->second, entries.data(), entries.size(), now_ms, numbers.data());
    result->entries += r.imported;
    result->rejected += r.rejected_count;
    if (r.imported) ++result->vnics;
    if (result->first_error.empty() && !r.rejected.empty()) {
      result->first_error = "vnics[" + std::to_string(i) + "]." + r.rejected.front();
    }
  }
  return Status::Ok();
}

}  // namespace dfw::dataplane
