// The connection table kept across a restart (conn_snapshot.h): what a
// clean stop writes, the next start imports into the vNICs with the same ids
// (zones by their local ids of now), less the time it was down; the file is
// read once; entries whose time ran out, of vNICs gone or refused are
// counted, not imported; a file that is not a snapshot is refused and
// removed. The strict-TCP continuation through a real restart is the e2e's
// (tests/e2e/e2e_test.sh, step 5).
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "conn_snapshot.h"
#include "dataplane_test_policy.h"
#include "local_api.h"

namespace dfw::dataplane {
namespace {

namespace fs = std::filesystem;
using testing::DbVnic;
using testing::WebVnic;

ConnTableConfig Config() {
  ConnTableConfig cfg;
  cfg.max_connections = 1u << 12;
  cfg.zones = 16;
  cfg.seed = 5;
  return cfg;
}

// An established strict-TCP connection from the vNIC's address.
ConnExport Established(uint32_t src, uint16_t sport, uint32_t expires_in_ms) {
  ConnExport c;
  c.proto = 6;
  c.src = Ip128{0, src};
  c.dst = Ip128{0, 198u << 24 | 19u << 16 | 1};
  c.sport = sport;
  c.dport = 5432;
  c.dir = Direction::kOut;
  c.state = ConnState::kEstablished;
  c.rule_num = 10;
  c.revalidate = true;
  c.expires_in_ms = expires_in_ms;
  c.packets = 7;
  c.bytes = 900;
  c.tcp[0] = ConnTcpPeer{
      1000u + sport, 70000u + sport, 65535, 7, kConnTcpWscaleSeen, ConnTcpPeerState::kEstablished};
  c.tcp[1] = ConnTcpPeer{
      9000u + sport, 80000u + sport, 65535, 7, kConnTcpWscaleSeen, ConnTcpPeerState::kEstablished};
  return c;
}

class ConnSnapshotTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("dfw-snapshot-test-" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    path_ = (dir_ / "connections.pb").string();
    ASSERT_TRUE(state_.SetVnic(WebVnic()).ok());  // local id 1
    ASSERT_TRUE(state_.SetVnic(DbVnic()).ok());   // local id 2
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path dir_;
  std::string path_;
  VnicTable vnics_;
  DataplaneState state_{&vnics_, ""};
};

TEST_F(ConnSnapshotTest, AStopsConnectionsComeBackAtTheNextStartOnce) {
  ConnTable before(Config());
  const uint64_t t0 = 1'000'000;
  std::vector<ConnExport> web, db;
  for (uint16_t p = 0; p < 50; ++p) web.push_back(Established(0xc6120b0b, 40000 + p, 3'600'000));
  for (uint16_t p = 0; p < 20; ++p) db.push_back(Established(0xc6121515, 41000 + p, 3'600'000));
  ASSERT_EQ(before.ImportAll(1, web.data(), web.size(), t0).imported, 50u);
  ASSERT_EQ(before.ImportAll(2, db.data(), db.size(), t0).imported, 20u);
  SnapshotResult saved;
  Status st = SaveConnections(path_, {&before}, state_, t0, &saved);
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(saved.entries, 70u);
  EXPECT_EQ(saved.vnics, 2u);
  EXPECT_EQ(fs::status(path_).permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);

  // The restarted process: another table, another clock.
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ConnTable after(Config());
  const uint64_t t1 = 5'000;
  SnapshotResult loaded;
  st = LoadConnections(path_, {&after}, state_, t1, &loaded);
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(loaded.entries, 70u);
  EXPECT_EQ(loaded.vnics, 2u);
  EXPECT_EQ(loaded.expired + loaded.unknown + loaded.rejected, 0u) << loaded.first_error;
  EXPECT_FALSE(fs::exists(path_)) << "a snapshot is read once";
  for (const auto& [zone, want] : {std::pair{uint16_t{1}, &web}, std::pair{uint16_t{2}, &db}}) {
    std::vector<ConnExport> got;
    ASSERT_EQ(after.ExportZone(zone, t1, 0, &got), want->size());
    std::sort(got.begin(), got.end(),
              [](const auto& a, const auto& b) { return a.sport < b.sport; });
    for (size_t i = 0; i < got.size(); ++i) {
      ConnExport w = (*want)[i];
      // Time left: less the time it was down (20 ms here, and a margin).
      EXPECT_LE(got[i].expires_in_ms, w.expires_in_ms - 20);
      EXPECT_GE(got[i].expires_in_ms, w.expires_in_ms - 5'000);
      got[i].expires_in_ms = w.expires_in_ms;
      EXPECT_EQ(got[i], w) << "zone " << zone << " entry " << i;
    }
  }
  // Nothing there: a start with nothing to restore.
  ConnTable again(Config());
  st = LoadConnections(path_, {&again}, state_, t1, &loaded);
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(loaded.entries, 0u);
}

// Workers own vNICs by local id (OwnerWorker): a stop with two workers and a
// start with one (or the other way round) keeps every connection, each in
// the table of the worker that owns its vNIC now.
TEST_F(ConnSnapshotTest, ConnectionsFollowTheirVnicsOwnerAcrossADifferentNumberOfWorkers) {
  const uint64_t t0 = 1'000'000;
  std::vector<ConnExport> web, db;  // local ids 1 and 2: workers 1 and 0 of two
  for (uint16_t p = 0; p < 30; ++p) web.push_back(Established(0xc6120b0b, 40000 + p, 3'600'000));
  for (uint16_t p = 0; p < 10; ++p) db.push_back(Established(0xc6121515, 41000 + p, 3'600'000));
  ConnTable w0(Config()), w1(Config());
  ASSERT_EQ(w1.ImportAll(1, web.data(), web.size(), t0).imported, 30u);
  ASSERT_EQ(w0.ImportAll(2, db.data(), db.size(), t0).imported, 10u);
  SnapshotResult r;
  ASSERT_TRUE(SaveConnections(path_, {&w0, &w1}, state_, t0, &r).ok());
  EXPECT_EQ(r.entries, 40u);

  ConnTable one(Config());
  ASSERT_TRUE(LoadConnections(path_, {&one}, state_, 5'000, &r).ok());
  EXPECT_EQ(r.entries, 40u);
  EXPECT_EQ(one.zone_size(1), 30u);
  EXPECT_EQ(one.zone_size(2), 10u);

  ASSERT_TRUE(SaveConnections(path_, {&one}, state_, 5'000, &r).ok());
  ConnTable a(Config()), b(Config());
  ASSERT_TRUE(LoadConnections(path_, {&a, &b}, state_, 9'000, &r).ok());
  EXPECT_EQ(r.entries, 40u);
  EXPECT_EQ(b.zone_size(1), 30u);
  EXPECT_EQ(a.zone_size(2), 10u);
  EXPECT_EQ(a.size() + b.size(), 40u) << "each vNIC's connections in its owner's table only";
}

TEST_F(ConnSnapshotTest, ExpiredAndUnknownAndRefusedEntriesAreCountedNotImported) {
  v1::ConnectionSnapshot snap;
  snap.set_written_unix_ms(UnixMs() - 10'000);  // down for 10 s
  auto* web = snap.add_vnics();
  web->set_vnic_id(WebVnic().id());
  ConnectionEntryToProto(Established(0xc6120b0b, 40000, 3'600'000), web->add_entries());
  ConnectionEntryToProto(Established(0xc6120b0b, 40001, 9'000), web->add_entries());  // ran out
  auto* bad = web->add_entries();
  ConnectionEntryToProto(Established(0xc6120b0b, 40002, 3'600'000), bad);
  bad->mutable_tcp_orig()->set_wscale(15);
  auto* gone = snap.add_vnics();
  gone->set_vnic_id("vnic-not-here");
  ConnectionEntryToProto(Established(0xc6120b0c, 40000, 3'600'000), gone->add_entries());
  std::ofstream(path_, std::ios::binary) << snap.SerializeAsString();
  ConnTable table(Config());
  SnapshotResult r;
  Status st = LoadConnections(path_, {&table}, state_, 1000, &r);
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(r.entries, 1u);
  EXPECT_EQ(r.expired, 1u);
  EXPECT_EQ(r.unknown, 1u);
  EXPECT_EQ(r.rejected, 1u);
  EXPECT_EQ(r.first_error, "vnics[0].entries[2].tcp_orig.wscale: 15 is above 14");
  std::vector<ConnExport> got;
  ASSERT_EQ(table.ExportZone(1, 1000, 0, &got), 1u);
  EXPECT_EQ(got[0].sport, 40000);
  EXPECT_LE(got[0].expires_in_ms, 3'600'000u - 10'000u);
}

TEST_F(ConnSnapshotTest, AFileThatIsNoSnapshotIsRefusedAndRemoved) {
  std::ofstream(path_, std::ios::binary) << "not a snapshot \xff\xff\xff";
  ConnTable table(Config());
  SnapshotResult r;
  Status st = LoadConnections(path_, {&table}, state_, 1000, &r);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.message(), path_ + ": is not a connection snapshot");
  EXPECT_FALSE(fs::exists(path_));
  std::ofstream(path_, std::ios::binary).close();  // 0 bytes: a cut write
  st = LoadConnections(path_, {&table}, state_, 1000, &r);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.message(), path_ + ": is empty (0 bytes), not a connection snapshot");
  EXPECT_FALSE(fs::exists(path_));
}

}  // namespace
}  // namespace dfw::dataplane
