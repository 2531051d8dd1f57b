// The connection table kept across a restart or an upgrade of dfw-dataplane.
//
// On a clean stop (SIGTERM, SIGINT), once the worker has stopped, every
// vNIC's live connections are written to STATE_DIR/connections.pb (proto
// ConnectionSnapshot: the entries as ConnectionEntry, the same form a VM's
// move uses, with their time left and the wall-clock time of writing). At the
// next start, after the persisted state is loaded and before the worker
// runs, they are imported into the vNICs with the same ids (their zones are
// the local ids of now), less the time the process was down: an entry whose
// time ran out meanwhile is not imported. The file is removed once read, so
// a crash later can never bring back connections from an older stop.
//
// An imported connection has the generation kConnGenerationImported: one
// whose policy revalidates is re-checked against the ruleset in force at its
// next packet, as after a VM's move (conn_table.h). Strict TCP tracking keeps
// each connection's windows, so an established connection goes on; without
// the snapshot (a crash, or --no-keep-connections) its next segment is not a
// SYN and is dropped.
//
// Thread safety: the main thread only, while no worker runs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "dataplane_state.h"
#include "dfw/dataplane/conn_table.h"

namespace dfw::dataplane {

struct SnapshotResult {
  uint32_t vnics = 0;       // vNICs with connections written / imported into
  uint32_t entries = 0;     // written / imported
  uint32_t expired = 0;     // load: time ran out while the process was down
  uint32_t unknown = 0;     // load: entries of a vNIC not known any more
  uint32_t rejected = 0;    // load: refused by the import (limits, bad fields)
  std::string first_error;  // load: the first refusal, named
};

// Writes every known vNIC's live connections to `path`; tables[w] is worker
// w's, a vNIC's connections are in its owner's (OwnerWorker, vnic_table.h).
Status SaveConnections(const std::string& path, const std::vector<const ConnTable*>& tables,
                       const DataplaneState& state, uint64_t now_ms, SnapshotResult* result);

// Imports the snapshot at `path` (none there: nothing to do), each vNIC's
// connections into the table of its owner among `tables` (the number of
// workers may differ from the stop's), then removes the file. A file that
// is not a snapshot is an error (the start goes on without it: connections
// are not policy) and is removed too.
Status LoadConnections(const std::string& path, const std::vector<ConnTable*>& tables,
                       const DataplaneState& state, uint64_t now_ms, SnapshotResult* result);

// Wall-clock milliseconds since the epoch (what the snapshot is stamped with).
uint64_t UnixMs();

}  // namespace dfw::dataplane
