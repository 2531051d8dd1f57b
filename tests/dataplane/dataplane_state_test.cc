// DataplaneState's robustness (issue 14): what it refuses, naming the field,
// with what was in force staying in force; revisions that only go forward
// (a delta) or replace what is held (a full state), never wrapping; and its
// state file: written durably, and at start anything there that is not a
// saved state (0 bytes, a directory, a FIFO) refused, while a missing file
// is a first start. No DPDK here: it runs in test_dataplane_dpdk with the
// other DataplaneState tests.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <limits>
#include <string>

#include "dataplane_state.h"
#include "dataplane_test_policy.h"

namespace dfw::dataplane {
namespace {

using namespace testing;
namespace fs = std::filesystem;

constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();

class DataplaneStateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("dfw-state-test-" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    path_ = (dir_ / "state.pb").string();
  }
  void TearDown() override { fs::remove_all(dir_); }

  // web and db with WebDbState(rev) applied, persisted to path_.
  void Start(DataplaneState* s, uint64_t rev) {
    ASSERT_TRUE(s->SetVnic(WebVnic()).ok());
    ASSERT_TRUE(s->SetVnic(DbVnic()).ok());
    Status st = s->ApplyFull(WebDbState(rev));
    ASSERT_TRUE(st.ok()) << st.message();
  }
  // The message of a refused status (empty if it was not refused).
  static std::string Refused(const Status& st) {
    EXPECT_FALSE(st.ok());
    return st.ok() ? "" : st.message();
  }
  static v1::HostDelta Delta(uint64_t from, uint64_t to) {
    v1::HostDelta d;
    d.set_from_revision(from);
    d.set_to_revision(to);
    return d;
  }

  fs::path dir_;
  std::string path_;
  VnicTable table_;
};

// --- 1, 2: the state file ---------------------------------------------------

TEST_F(DataplaneStateTest, MissingStateFileIsAFirstStart) {
  DataplaneState s(&table_, path_);
  EXPECT_TRUE(s.Load().ok());
  EXPECT_FALSE(s.restored());
  EXPECT_EQ(s.applied_revision(), 0u);
}

TEST_F(DataplaneStateTest, ZeroLengthStateFileIsRefused) {
  std::ofstream(path_).close();
  DataplaneState s(&table_, path_);
  Status st = s.Load();
  EXPECT_EQ(Refused(st), path_ + ": is empty (0 bytes), not a saved state");
  EXPECT_FALSE(s.restored());
}

TEST_F(DataplaneStateTest, DirectoryOrFifoAsStateFileIsRefused) {
  fs::create_directories(path_);
  {
    DataplaneState s(&table_, path_);
    EXPECT_EQ(Refused(s.Load()), path_ + ": is a directory, not a saved state");
  }
  fs::remove(path_);
  ASSERT_EQ(mkfifo(path_.c_str(), 0600), 0);
  DataplaneState s(&table_, path_);
  EXPECT_EQ(Refused(s.Load()), path_ + ": is not a regular file, not a saved state");
}

TEST_F(DataplaneStateTest, UnparsableStateFileIsRefused) {
  std::ofstream(path_) << "\xff\xff\xff garbage";
  DataplaneState s(&table_, path_);
  EXPECT_EQ(Refused(s.Load()), path_ + ": is not a dataplane state file");
}

TEST_F(DataplaneStateTest, StateFileIsReplacedWholeAndLoadsBack) {
  {
    DataplaneState s(&table_, path_);
    ASSERT_NO_FATAL_FAILURE(Start(&s, 7));
  }
  EXPECT_FALSE(fs::exists(path_ + ".tmp"));  // renamed into place
  struct stat sb;
  ASSERT_EQ(stat(path_.c_str(), &sb), 0);
  EXPECT_EQ(sb.st_mode & 0777, 0600u);
  VnicTable table2;
  DataplaneState s(&table2, path_);
  Status st = s.Load();
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_TRUE(s.restored());
  EXPECT_EQ(s.applied_revision(), 7u);
  EXPECT_EQ(s.Vnics().size(), 2u);
  // An empty state is never 0 bytes on disk (0 bytes means a cut write).
  DataplaneState empty(&table_, (dir_ / "empty.pb").string());
  ASSERT_TRUE(empty.ApplyFull(v1::HostDesiredState()).ok());
  EXPECT_GT(fs::file_size(dir_ / "empty.pb"), 0u);
  DataplaneState again(&table_, (dir_ / "empty.pb").string());
  EXPECT_TRUE(again.Load().ok());
}

TEST_F(DataplaneStateTest, PersistedStateWithTwoVnicsOnOneMacIsRefusedNamingTheEntry) {
  v1::DataplanePersistedState ps;
  *ps.add_vnics() = WebVnic();
  v1::DataplaneVNic twin = DbVnic();
  twin.set_mac(WebVnic().mac());
  *ps.add_vnics() = twin;
  ps.mutable_state()->set_revision(3);
  std::ofstream(path_, std::ios::binary) << ps.SerializeAsString();
  DataplaneState s(&table_, path_);
  EXPECT_EQ(Refused(s.Load()),
            path_ + ": vnics[1].mac: 52:54:00:00:00:11 is bound to vNIC 'web-1-eth0'");
  EXPECT_FALSE(s.restored());
}

TEST_F(DataplaneStateTest, PersistedStateRefusedHalfwayIsLeftAsItWas) {
  // Its vNICs are fine, its rulesets are not: nothing is written back.
  v1::DataplanePersistedState ps;
  *ps.add_vnics() = WebVnic();
  *ps.add_vnics() = DbVnic();
  *ps.mutable_state() = WebDbState(9);
  ps.mutable_state()->mutable_rulesets(1)->mutable_rules(0)->set_rule_num(20);
  *ps.mutable_state()->mutable_rulesets(1)->add_rules() = ps.state().rulesets(1).rules(0);
  const std::string bytes = ps.SerializeAsString();
  std::ofstream(path_, std::ios::binary) << bytes;
  DataplaneState s(&table_, path_);
  EXPECT_EQ(Refused(s.Load()),
            path_ + ": vNIC 'db-1-eth0' rules[1].rule_num: 20 is also rules[0]'s");
  EXPECT_FALSE(s.restored());
  std::ifstream in(path_, std::ios::binary);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), bytes);
}

// --- 3: revisions -----------------------------------------------------------

TEST_F(DataplaneStateTest, DeltaMustGoForwardFromTheAppliedRevision) {
  DataplaneState s(&table_, path_);
  ASSERT_NO_FATAL_FAILURE(Start(&s, 100));
  // Backwards, or standing still: refused, revision 100 stays.
  EXPECT_EQ(Refused(s.ApplyDelta(Delta(100, 1))),
            "delta.to_revision: 1 is not above 100, the revision it is from");
  EXPECT_EQ(Refused(s.ApplyDelta(Delta(100, 100))),
            "delta.to_revision: 100 is not above 100, the revision it is from");
  // From another revision: the message names from_revision (the API maps it
  // to FAILED_PRECONDITION, on which the host agent asks for a full state).
  EXPECT_NE(Refused(s.ApplyDelta(Delta(99, 101))).find("from_revision 99 does not match"),
            std::string::npos);
  EXPECT_EQ(s.applied_revision(), 100u);
  Status st = s.ApplyDelta(Delta(100, 101));
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(s.applied_revision(), 101u);
}

TEST_F(DataplaneStateTest, LastRevisionIsReservedSoNoRevisionWraps) {
  DataplaneState s(&table_, path_);
  ASSERT_NO_FATAL_FAILURE(Start(&s, kMax - 2));
  EXPECT_EQ(Refused(s.ApplyDelta(Delta(kMax - 2, kMax))),
            "delta.to_revision: 18446744073709551615 is reserved (no delta could follow it)");
  EXPECT_EQ(Refused(s.ApplyFull(WebDbState(kMax))),
            "revision: 18446744073709551615 is reserved (no delta could follow it)");
  ASSERT_TRUE(s.ApplyDelta(Delta(kMax - 2, kMax - 1)).ok());
  EXPECT_EQ(s.applied_revision(), kMax - 1);
  // The end: only a full state may follow (a delta to 0 would wrap).
  EXPECT_FALSE(s.ApplyDelta(Delta(kMax - 1, 0)).ok());
  EXPECT_EQ(s.applied_revision(), kMax - 1);
}

TEST_F(DataplaneStateTest, FullStateReplacesWhatIsHeldAlsoAtALowerRevision) {
  // The controller sends a full state when the host's held revision proves
  // nothing, e.g. after its store was restored with lower revisions: it is
  // the policy wanted now, whatever its number.
  DataplaneState s(&table_, path_);
  ASSERT_NO_FATAL_FAILURE(Start(&s, 100));
  ASSERT_TRUE(s.ApplyFull(WebDbState(100)).ok());  // the same again (a reconnect)
  ASSERT_TRUE(s.ApplyFull(WebDbState(5)).ok());
  EXPECT_EQ(s.applied_revision(), 5u);
  // Deltas then continue from there.
  EXPECT_TRUE(s.ApplyDelta(Delta(5, 6)).ok());
}

// --- 4: validation ----------------------------------------------------------

TEST_F(DataplaneStateTest, RepeatedOrEmptyIdsAndRuleNumbersAreRefusedAndNothingApplied) {
  DataplaneState s(&table_, path_);
  ASSERT_NO_FATAL_FAILURE(Start(&s, 7));
  const std::string before = fs::exists(path_) ? std::to_string(fs::file_size(path_)) : "";

  v1::HostDesiredState twice = WebDbState(8);
  *twice.add_rulesets() = twice.rulesets(0);
  twice.mutable_rulesets(2)->clear_rules();  // web: allow nothing
  EXPECT_EQ(Refused(s.ApplyFull(twice)),
            "rulesets[2].vnic_id: 'web-1-eth0' appears twice (also rulesets[0])");

  v1::HostDesiredState unnamed = WebDbState(8);
  unnamed.mutable_rulesets(1)->clear_vnic_id();
  EXPECT_EQ(Refused(s.ApplyFull(unnamed)), "rulesets[1].vnic_id: must not be empty");

  v1::HostDesiredState sets = WebDbState(8);
  *sets.add_address_sets() = sets.address_sets(0);
  EXPECT_EQ(Refused(s.ApplyFull(sets)),
            "address_sets[2].id: 'g:web' appears twice (also address_sets[0])");

  v1::HostDesiredState nums = WebDbState(8);
  nums.mutable_rulesets(0)->mutable_rules(1)->set_rule_num(10);
  EXPECT_EQ(Refused(s.ApplyFull(nums)),
            "vNIC 'web-1-eth0' rules[1].rule_num: 10 is also rules[0]'s");

  v1::HostDelta d = Delta(7, 8);
  *d.add_rulesets_set() = WebDbState(8).rulesets(0);
  *d.add_rulesets_set() = WebDbState(8).rulesets(0);
  EXPECT_EQ(Refused(s.ApplyDelta(d)),
            "delta.rulesets_set[1].vnic_id: 'web-1-eth0' appears twice (also "
            "delta.rulesets_set[0])");
  d = Delta(7, 8);
  d.add_rulesets_set()->add_rules()->set_action(v1::ACTION_ALLOW);
  EXPECT_EQ(Refused(s.ApplyDelta(d)), "delta.rulesets_set[0].vnic_id: must not be empty");
  d = Delta(7, 8);
  *d.add_rulesets_set() = nums.rulesets(0);
  EXPECT_EQ(Refused(s.ApplyDelta(d)), "vNIC 'web-1-eth0' rules[1].rule_num: 10 is also rules[0]'s");
  d = Delta(7, 8);
  *d.add_address_sets_set() = WebDbState(8).address_sets(1);
  d.add_address_sets_set()->add_prefixes("198.18.9.0/24");
  EXPECT_NE(Refused(s.ApplyDelta(d)).find("delta.address_sets_set[1].id: must not be empty"),
            std::string::npos);

  // Revision 7 and its rules stay in force, on disk too.
  EXPECT_EQ(s.applied_revision(), 7u);
  EXPECT_EQ(s.RuleOf(11).second, "no-8443");
  const VnicState* web = table_.Current(1);
  ASSERT_NE(web, nullptr);
  ASSERT_NE(web->policy, nullptr);
  EXPECT_EQ(web->policy->revision, 7u);
  EXPECT_EQ(web->policy->rules.size(), 2u);
  EXPECT_EQ(std::to_string(fs::file_size(path_)), before);
}

TEST_F(DataplaneStateTest, MulticastZeroAndTakenMacsAndTakenAddressesAreRefused) {
  DataplaneState s(&table_, path_);
  ASSERT_NO_FATAL_FAILURE(Start(&s, 7));
  v1::DataplaneVNic v = WebVnic();
  v.set_id("app-1-eth0");
  v.set_local_id(3);
  v.set_bound_ips(0, "198.18.3.31");

  v.set_mac("01:00:5E:00:00:01");
  EXPECT_EQ(Refused(s.SetVnic(v)),
            "vnic 'app-1-eth0'.mac: 01:00:5e:00:00:01 is a multicast address");
  v.set_mac("ff:ff:ff:ff:ff:ff");
  EXPECT_EQ(Refused(s.SetVnic(v)),
            "vnic 'app-1-eth0'.mac: ff:ff:ff:ff:ff:ff is a multicast address");
  v.set_mac("00:00:00:00:00:00");
  EXPECT_EQ(Refused(s.SetVnic(v)),
            "vnic 'app-1-eth0'.mac: 00:00:00:00:00:00 is the all-zero address");
  v.set_mac("52:54:00:00:00:21");  // db's
  EXPECT_EQ(Refused(s.SetVnic(v)),
            "vnic 'app-1-eth0'.mac: 52:54:00:00:00:21 is bound to vNIC 'db-1-eth0'");
  v.set_mac("52:54:00:00:00:31");
  v.add_bound_ips("198.18.2.21");  // db's
  EXPECT_EQ(Refused(s.SetVnic(v)),
            "vnic 'app-1-eth0'.bound_ips[1]: 198.18.2.21 is bound to vNIC 'db-1-eth0'");
  v.clear_bound_ips();
  v.set_id("");
  EXPECT_EQ(Refused(s.SetVnic(v)), "vnic.id: must not be empty");
  EXPECT_EQ(s.Vnics().size(), 2u);
  EXPECT_EQ(table_.Current(3), nullptr);

  // The same address in another spelling is the same address.
  v.set_id("app-1-eth0");
  v.add_bound_ips("2001:db8::21");
  ASSERT_TRUE(s.SetVnic(v).ok());
  v1::DataplaneVNic w = DbVnic();
  w.set_id("app-2-eth0");
  w.set_local_id(4);
  w.set_mac("52:54:00:00:00:41");
  w.set_bound_ips(0, "2001:DB8:0::21");
  EXPECT_EQ(Refused(s.SetVnic(w)),
            "vnic 'app-2-eth0'.bound_ips[0]: 2001:DB8:0::21 is bound to vNIC 'app-1-eth0'");
  // A vNIC keeps its own MAC and addresses when set again; once one leaves,
  // they are free.
  ASSERT_TRUE(s.SetVnic(v).ok());
  ASSERT_TRUE(s.RemoveVnic("app-1-eth0").ok());
  EXPECT_TRUE(s.SetVnic(w).ok());
}

// The exclusion list: an excluded ruleset is held (and persisted) like any
// other and listed by ExcludedVnics (GetState); one that carries rules or
// another default rule is refused, naming the vNIC, and what was in force
// stays.
TEST_F(DataplaneStateTest, ExcludedRulesetsAreListedAndOnlyTheirEmptyAllowFormIsAccepted) {
  DataplaneState s(&table_, path_);
  ASSERT_NO_FATAL_FAILURE(Start(&s, 7));
  EXPECT_TRUE(s.ExcludedVnics().empty());
  v1::HostDelta d = Delta(7, 8);
  auto* rs = d.add_rulesets_set();
  rs->set_vnic_id("db-1-eth0");
  rs->set_excluded(true);
  rs->mutable_default_rule()->set_action(v1::ACTION_DROP);
  EXPECT_NE(Refused(s.ApplyDelta(d)).find("db-1-eth0"), std::string::npos);
  rs->mutable_default_rule()->set_action(v1::ACTION_ALLOW);
  *rs->add_rules() = WebDbState(7).rulesets(1).rules(0);
  EXPECT_NE(Refused(s.ApplyDelta(d)).find("carries no rules"), std::string::npos);
  EXPECT_EQ(s.applied_revision(), 7u);
  EXPECT_TRUE(s.ExcludedVnics().empty());
  rs->clear_rules();
  Status st = s.ApplyDelta(d);
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(s.ExcludedVnics(), std::vector<std::string>{"db-1-eth0"});
  VnicTable table2;
  DataplaneState loaded(&table2, path_);
  ASSERT_TRUE(loaded.Load().ok());
  EXPECT_EQ(loaded.ExcludedVnics(), std::vector<std::string>{"db-1-eth0"});
  // Back on the list's other side: an enforced ruleset again.
  v1::HostDelta back = Delta(8, 9);
  *back.add_rulesets_set() = WebDbState(9).rulesets(1);
  st = s.ApplyDelta(back);
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_TRUE(s.ExcludedVnics().empty());
}

}  // namespace
}  // namespace dfw::dataplane
