// The store under damage (issue 15), with the real dfw-controller binary:
// a cut, bit-flipped or deleted write-ahead log refuses the start (naming
// the files and both revisions) unless --accept-store-loss, which starts,
// says what was lost and reuses no revision; a full disk refuses writes
// (HTTP 507 / RESOURCE_EXHAUSTED) and serves reads, also when the
// controller starts on it, and writes work again once space is freed.
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <sched.h>
#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "controller_process.h"
#include "dfw/controller/rocks_store.h"
#include "dfw/controller/store.h"
#include "dfw/v1/controller.grpc.pb.h"
#include "test_util.h"

namespace dfw::controller::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

uint64_t RevisionOf(const json& j) {
  const json& r = j["revision"];
  return r.is_string() ? std::stoull(r.get<std::string>()) : r.get<uint64_t>();
}

// Creates `n` VMs named <prefix>-<i>; returns the last acknowledged revision.
uint64_t PostVms(Rest& rest, const std::string& prefix, int n) {
  uint64_t rev = 0;
  for (int i = 0; i < n; ++i) {
    char ip[32];
    std::snprintf(ip, sizeof ip, "198.18.%d.%d", i / 250, i % 250 + 1);
    auto r = rest.Post("/api/v1/vms", VmJson(prefix + "-" + std::to_string(i), "h1", {}, ip));
    EXPECT_EQ(r.status, 201) << r.body;
    if (r.status == 201) rev = RevisionOf(r.body);
  }
  return rev;
}

// The newest RocksDB WAL file in `dir`.
std::string NewestWal(const std::string& dir) {
  std::vector<std::string> wals;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() == ".log") wals.push_back(e.path().string());
  }
  std::sort(wals.begin(), wals.end());
  return wals.empty() ? "" : wals.back();
}

bool Contains(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

TEST(StoreDurabilityTest, KillNineRestartKeepsEveryWriteAndAStoreWithoutWatermarkStarts) {
  TempDir dir;
  ControllerProcess proc(dir.path());
  proc.Start();
  Rest rest(proc.http_port());
  uint64_t acked = PostVms(rest, "vm", 30);
  proc.Kill(SIGKILL);
  proc.Start();
  Rest again(proc.http_port());
  for (int i = 0; i < 30; ++i) {
    EXPECT_EQ(again.Get("/api/v1/vms/vm-" + std::to_string(i)).status, 200) << i;
  }
  // A store from before the watermark (no file): starts and gets one.
  std::string mark = proc.data_dir() + "/" + RocksStore::kWatermarkFile;
  ASSERT_TRUE(fs::exists(mark));
  proc.Kill(SIGTERM);
  fs::remove(mark);
  proc.Start();
  EXPECT_TRUE(fs::exists(mark));
  Rest third(proc.http_port());
  auto r = third.Post("/api/v1/vms", VmJson("vm-after", "h1", {}, "198.18.9.1"));
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(RevisionOf(r.body), acked + 1);
}

enum class Damage { kTruncate, kTruncateAtRecord, kFlip, kDelete };

// The end of the record that ends closest to the middle of a RocksDB WAL
// of one block (records: crc32 4, length 2, type 1, payload).
uintmax_t RecordBoundaryNearMiddle(const std::string& wal) {
  std::ifstream f(wal, std::ios::binary);
  std::string b((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  size_t off = 0, best = 0;
  while (off + 7 <= b.size() && off < b.size() / 2) {
    size_t len = static_cast<unsigned char>(b[off + 4]) |
                 static_cast<size_t>(static_cast<unsigned char>(b[off + 5])) << 8;
    if (len == 0 || off + 7 + len > b.size()) break;
    off += 7 + len;
    best = off;
  }
  return best;
}

class DamagedWalTest : public ::testing::TestWithParam<Damage> {};

TEST_P(DamagedWalTest, RefusesToStartThenAcceptStoreLossStartsAndReusesNoRevision) {
  TempDir dir;
  uint64_t acked = 0;
  {
    ControllerProcess proc(dir.path());
    proc.Start();
    Rest rest(proc.http_port());
    acked = PostVms(rest, "vm", 40);
    proc.Kill(SIGKILL);  // every write only in the WAL
  }
  ASSERT_GE(acked, 40u);
  std::string data = dir.path() + "/db";
  std::string wal = NewestWal(data);
  ASSERT_FALSE(wal.empty());
  auto size = fs::file_size(wal);
  ASSERT_GT(size, 1000u);
  switch (GetParam()) {
    case Damage::kTruncate:
      fs::resize_file(wal, size / 2);
      break;
    case Damage::kTruncateAtRecord: {
      auto at = RecordBoundaryNearMiddle(wal);
      ASSERT_GT(at, 0u);
      ASSERT_LT(at, size);
      fs::resize_file(wal, at);
      break;
    }
    case Damage::kFlip: {
      std::fstream f(wal, std::ios::in | std::ios::out | std::ios::binary);
      f.seekg(static_cast<std::streamoff>(size / 2));
      char c = 0;
      f.get(c);
      f.seekp(static_cast<std::streamoff>(size / 2));
      f.put(static_cast<char>(c ^ 0x5a));
      break;
    }
    case Damage::kDelete:
      fs::remove(wal);
      break;
  }
  {
    ControllerProcess proc(dir.path());
    ASSERT_FALSE(proc.Launch()) << "started on a damaged WAL:\n" << proc.Log();
    EXPECT_EQ(proc.exit_code(), 1);
    std::string log = proc.Log();
    EXPECT_TRUE(Contains(log, "acknowledged revision " + std::to_string(acked))) << log;
    EXPECT_TRUE(Contains(log, "Refusing to start")) << log;
    EXPECT_TRUE(Contains(log, "--accept-store-loss")) << log;
    if (GetParam() != Damage::kDelete) {
      EXPECT_TRUE(Contains(log, wal)) << log;
    }
    // A refusal leaves the directory as it was: the next attempt says the same.
    ASSERT_FALSE(proc.Launch());
  }
  ControllerProcess proc(dir.path(), {"--accept-store-loss"});
  proc.Start();
  std::string log = proc.Log();
  EXPECT_TRUE(Contains(log, "STORE LOSS ACCEPTED")) << log;
  Rest rest(proc.http_port());
  auto r = rest.Post("/api/v1/vms", VmJson("vm-new", "h1", {}, "198.18.9.1"));
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_GT(RevisionOf(r.body), acked) << "a revision given before the loss is given again";
  proc.Kill(SIGTERM);
  // The loss accepted once: the next start needs no flag.
  ControllerProcess plain(dir.path());
  plain.Start();
  EXPECT_EQ(Rest(plain.http_port()).Get("/api/v1/vms/vm-new").status, 200);
}

INSTANTIATE_TEST_SUITE_P(Wal, DamagedWalTest,
                         ::testing::Values(Damage::kTruncate, Damage::kTruncateAtRecord,
                                           Damage::kFlip, Damage::kDelete),
                         [](const ::testing::TestParamInfo<Damage>& i) {
                           switch (i.param) {
                             case Damage::kTruncate:
                               return std::string("Truncated");
                             case Damage::kTruncateAtRecord:
                               return std::string("TruncatedAtARecordBoundary");
                             case Damage::kFlip:
                               return std::string("ByteFlipped");
                             default:
                               return std::string("Deleted");
                           }
                         });

// A tmpfs of a few MiB on a temporary directory, in a mount namespace of
// this process (and the controllers it starts): gone when the test ends,
// even if it crashes.
class SmallFilesystem {
 public:
  explicit SmallFilesystem(const std::string& path, const char* size) : path_(path) {
    if (unshare(CLONE_NEWNS) != 0) {
      denied_ = errno == EPERM;
      error_ = Cat("unshare(CLONE_NEWNS): ", std::strerror(errno));
      return;
    }
    if (mount("none", "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
      error_ = Cat("make / private: ", std::strerror(errno));
      return;
    }
    std::string opts = Cat("size=", size);
    if (mount("tmpfs", path.c_str(), "tmpfs", 0, opts.c_str()) != 0) {
      denied_ = errno == EPERM;
      error_ = Cat("mount tmpfs: ", std::strerror(errno));
      return;
    }
    mounted_ = true;
  }
  ~SmallFilesystem() {
    if (mounted_) umount2(path_.c_str(), MNT_DETACH);
  }
  const std::string& error() const { return error_; }
  // Root without the right to mount (a container without CAP_SYS_ADMIN).
  bool denied() const { return denied_; }

  // Writes a file until the filesystem is full.
  void Fill(const std::string& file) {
    int fd = open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0);
    std::string chunk(64 << 10, 'x');
    while (write(fd, chunk.data(), chunk.size()) > 0) {
    }
    while (write(fd, chunk.data(), 1) > 0) {
    }
    close(fd);
  }

 private:
  static std::string Cat(const std::string& a, const std::string& b) { return a + b; }
  std::string path_;
  std::string error_;
  bool mounted_ = false;
  bool denied_ = false;
};

grpc::Status GrpcPutVm(int port, const std::string& id) {
  auto stub = dfw::v1::ControllerService::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
  dfw::v1::PutVmRequest req;
  req.mutable_vm()->set_id(id);
  req.mutable_vm()->set_host("h1");
  dfw::v1::Vm out;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  return stub->PutVm(&ctx, req, &out);
}

// A controller on a 24 MiB tmpfs, 10 VMs written, then `filler_` fills it.
class FullDiskTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root: mounts a small tmpfs in a mount namespace";
    small_ = std::make_unique<SmallFilesystem>(dir_.path(), "24m");
    if (small_->denied()) GTEST_SKIP() << "cannot mount a tmpfs here: " << small_->error();
    ASSERT_TRUE(small_->error().empty()) << small_->error();
  }
  void StartWithVmsThenFill(const char* min_free_mb) {
    proc_ = std::make_unique<ControllerProcess>(
        dir_.path(), std::vector<std::string>{"--store-min-free-mb", min_free_mb});
    proc_->Start();
    rest_ = std::make_unique<Rest>(proc_->http_port());
    PostVms(*rest_, "vm", 10);
    small_->Fill(filler_);
  }

  TempDir dir_;
  std::string filler_ = dir_.path() + "/filler";
  std::unique_ptr<SmallFilesystem> small_;  // unmounted after the controller is gone
  std::unique_ptr<ControllerProcess> proc_;
  std::unique_ptr<Rest> rest_;
};

TEST_F(FullDiskTest, RefusesWritesServesReadsAndStartsOnIt) {
  StartWithVmsThenFill("4");
  ControllerProcess& proc = *proc_;
  Rest& rest = *rest_;
  auto r = rest.Post("/api/v1/vms", VmJson("vm-full", "h1", {}, "198.18.9.1"));
  EXPECT_EQ(r.status, 507) << r.body;
  EXPECT_EQ(r.body["error"]["code"], "RESOURCE_EXHAUSTED") << r.body;
  EXPECT_TRUE(Contains(r.body["error"]["message"].get<std::string>(), "full")) << r.body;
  EXPECT_EQ(GrpcPutVm(proc.grpc_port(), "vm-full").error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(rest.Get("/api/v1/vms/vm-3").status, 200);
  EXPECT_EQ(rest.Get("/api/v1/vms/vm-full").status, 404);

  // A restart on the full disk: serves reads, refuses writes, no abort.
  proc.Kill(SIGTERM);
  EXPECT_EQ(proc.exit_code(), 0) << proc.Log();
  proc.Start();
  Rest ro(proc.http_port());
  for (int i = 0; i < 10; ++i) EXPECT_EQ(ro.Get("/api/v1/vms/vm-" + std::to_string(i)).status, 200);
  EXPECT_EQ(ro.Post("/api/v1/vms", VmJson("vm-full", "h1", {}, "198.18.9.1")).status, 507);
  proc.Kill(SIGKILL);
  proc.Start();
  Rest ro2(proc.http_port());
  EXPECT_EQ(ro2.Get("/api/v1/vms/vm-9").status, 200);
  EXPECT_EQ(ro2.Post("/api/v1/vms", VmJson("vm-full", "h1", {}, "198.18.9.1")).status, 507);

  // Space back: writes work again without a restart.
  fs::remove(filler_);
  r = ro2.Post("/api/v1/vms", VmJson("vm-back", "h1", {}, "198.18.9.2"));
  EXPECT_EQ(r.status, 201) << r.body << proc.Log();
  EXPECT_EQ(ro2.Get("/api/v1/vms/vm-back").status, 200);
  proc.Kill(SIGKILL);
  proc.Start();
  EXPECT_EQ(Rest(proc.http_port()).Get("/api/v1/vms/vm-back").status, 200);
  proc.Kill(SIGTERM);
}

// "policy/rule" -> rule_num of what vm-0 enforces.
std::map<std::string, uint64_t> RuleNums(Rest& rest) {
  std::map<std::string, uint64_t> out;
  auto r = rest.Get("/api/v1/vms/vm-0/effective-rules");
  for (const auto& rs : r.body["rulesets"]) {
    for (const auto& rule : rs["rules"]) {
      out[rule["policy_id"].get<std::string>() + "/" + rule["rule_id"].get<std::string>()] =
          rule["rule_num"].get<uint64_t>();
    }
  }
  return out;
}

// A policy refused on the full disk leaves no rule number behind: the
// numbers its rules get once it is accepted are stored and survive a restart.
TEST_F(FullDiskTest, APolicyRefusedOnTheFullDiskKeepsRuleNumbersStable) {
  StartWithVmsThenFill("4");
  auto policy = [](const std::string& id) {
    return json::parse(R"({"id":")" + id + R"(","category":"CATEGORY_APPLICATION",
      "rules":[{"id":"r1","sources":{"any":true},"destinations":{"any":true},
                "action":"ACTION_ALLOW"}]})");
  };
  ASSERT_EQ(rest_->Post("/api/v1/policies", policy("a")).status, 507);
  fs::remove(filler_);
  ASSERT_EQ(rest_->Post("/api/v1/policies", policy("a")).status, 201);
  ASSERT_EQ(rest_->Post("/api/v1/policies", policy("b")).status, 201);
  auto before = RuleNums(*rest_);
  ASSERT_EQ(before.size(), 2u);
  proc_->Kill(SIGTERM);
  proc_->Start();
  Rest again(proc_->http_port());
  EXPECT_EQ(RuleNums(again), before);
}

// Without the reserve (--store-min-free-mb 0) RocksDB meets the full disk
// itself: the write fails, the process stays up and serves reads, later
// writes are refused, and every acknowledged write is there after a restart.
TEST_F(FullDiskTest, AWriteRocksDbFailsIsRefusedWithoutAnAbort) {
  StartWithVmsThenFill("0");
  ControllerProcess& proc = *proc_;
  Rest& rest = *rest_;
  int refused = 0;
  std::vector<std::string> acked;
  for (int i = 0; i < 200 && refused < 3; ++i) {
    std::string id = "more-" + std::to_string(i);
    char ip[32];
    std::snprintf(ip, sizeof ip, "198.19.%d.%d", i / 250, i % 250 + 1);
    auto r = rest.Post("/api/v1/vms", VmJson(id, "h1", {}, ip));
    if (r.status == 201) {
      acked.push_back(id);
    } else {
      ASSERT_TRUE(r.status == 507 || r.status == 503) << r.status << " " << r.body;
      std::printf("after %zu writes on the full disk: %d %s\n", acked.size(), r.status,
                  r.body["error"]["message"].dump().c_str());
      ++refused;
    }
  }
  EXPECT_EQ(refused, 3);
  EXPECT_EQ(rest.Get("/api/v1/vms/vm-1").status, 200) << proc.Log();
  proc.Kill(SIGTERM);
  EXPECT_EQ(proc.exit_code(), 0) << proc.Log();
  fs::remove(filler_);
  proc.Start();
  Rest again(proc.http_port());
  for (const auto& id : acked) EXPECT_EQ(again.Get("/api/v1/vms/" + id).status, 200) << id;
  EXPECT_EQ(again.Post("/api/v1/vms", VmJson("last", "h1", {}, "198.18.9.3")).status, 201);
}

// The cost of the watermark: a commit (WAL sync + watermark sync) against
// the watermark's pwrite + fdatasync alone, on the temporary directory's
// filesystem, in interleaved rounds (fdatasync times on a VM drift); the
// medians of the rounds' means.
//   test_controller_store_durability --gtest_also_run_disabled_tests
//     --gtest_filter='*CommitCost*'
TEST(StoreDurabilityTest, DISABLED_CommitCost) {
  TempDir dir;
  auto store = Store::Open(dir.path() + "/db");
  ASSERT_TRUE(store.ok()) << store.status();
  int fd = open((dir.path() + "/mark").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  constexpr int kRounds = 15, kPerRound = 200;
  dfw::v1::Vm vm;
  vm.set_host("h1");
  std::vector<double> commit_us, mark_us;
  uint64_t rev = 0;
  using Clock = std::chrono::steady_clock;
  auto us = [](Clock::duration d) {
    return std::chrono::duration<double, std::micro>(d).count() / kPerRound;
  };
  for (int r = 0; r < kRounds; ++r) {
    auto t0 = Clock::now();
    for (int i = 0; i < kPerRound; ++i) {
      ChangeSet cs(++rev);
      vm.set_id("vm-" + std::to_string(rev));
      cs.Put(Kind::kVm, vm.id(), vm);
      cs.AddEvent(dfw::v1::ChangeEvent::KIND_VM, vm.id(), false);
      ASSERT_TRUE((*store)->Commit(cs).ok());
    }
    auto t1 = Clock::now();
    char rec[32] = {};
    for (int i = 0; i < kPerRound; ++i) {
      std::memcpy(rec + 8, &i, sizeof i);
      ASSERT_EQ(pwrite(fd, rec, sizeof rec, 0), 32);
      ASSERT_EQ(fdatasync(fd), 0);
    }
    auto t2 = Clock::now();
    commit_us.push_back(us(t1 - t0));
    mark_us.push_back(us(t2 - t1));
  }
  close(fd);
  std::sort(commit_us.begin(), commit_us.end());
  std::sort(mark_us.begin(), mark_us.end());
  std::printf(
      "%d x %d commits: Store::Commit %.0f us (WAL sync, then the watermark's); the "
      "watermark's pwrite + fdatasync alone %.0f us\n",
      kRounds, kPerRound, commit_us[kRounds / 2], mark_us[kRounds / 2]);
}

}  // namespace
}  // namespace dfw::controller::testing
