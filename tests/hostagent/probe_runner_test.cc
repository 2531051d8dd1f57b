// ProbeRunner (probe_runner.h) with fake edges: captures armed all or none,
// the probe packet sent only once they are, from the source vNIC's port
// with its MAC; "armed" then "done" with the dataplane's results in the
// request's order; a capture that never meets a frame ends at the deadline,
// a cancel ends a probe at once; probes run side by side.
#include "dfw/hostagent/probe_runner.h"

#include <gtest/gtest.h>

#include <condition_variable>

#include "fake_edges.h"

namespace dfw::hostagent::testing {
namespace {

using Clock = std::chrono::steady_clock;

class ProbeRunnerTest : public ::testing::Test {
 protected:
  ProbeRunnerTest()
      : dp_(&log_), ovs_(&log_), runner_(&dp_, &ovs_, [this](const v1::ProbeReport& r) {
          std::lock_guard<std::mutex> l(mu_);
          reports_.push_back(r);
          cv_.notify_all();
          return session_open_.load();
        }) {
    AddVnic("web", 5, "02:00:00:00:00:11");
    AddVnic("db", 6, "02:00:00:00:00:21");
    runner_.Start();
  }
  ~ProbeRunnerTest() override { runner_.Stop(); }

  void AddVnic(const std::string& id, uint32_t local_id, const std::string& mac) {
    v1::DataplaneVNic v;
    v.set_id(id);
    v.set_local_id(local_id);
    v.set_mac(mac);
    dp_.vnics[id] = v;
  }
  static v1::CaptureFilter Capture(const std::string& vnic, bool in) {
    v1::CaptureFilter f;
    f.set_vnic_id(vnic);
    f.set_direction(in ? v1::DIRECTION_IN : v1::DIRECTION_OUT);
    f.set_protocol(6);
    f.set_dst_port(5432);
    return f;
  }
  static v1::ProbeRequest Request(uint64_t id, std::vector<v1::CaptureFilter> captures, bool inject,
                                  uint32_t timeout_ms = 10000) {
    v1::ProbeRequest r;
    r.set_probe_id(id);
    r.set_timeout_ms(timeout_ms);
    for (auto& c : captures) *r.add_captures() = c;
    if (inject) {
      auto* p = r.mutable_inject();
      p->set_vnic_id("web");
      p->set_dst_mac("02:00:00:00:00:21");
      p->set_protocol(6);
      p->set_src_ip(std::string("\xc6\x12\x01\x0b", 4));  // 198.18.1.11
      p->set_dst_ip(std::string("\xc6\x12\x02\x15", 4));  // 198.18.2.21
      p->set_src_port(50000);
      p->set_dst_port(5432);
    }
    return r;
  }
  // The report of probe `id` that is done (or armed), waiting up to `wait`.
  std::optional<v1::ProbeReport> WaitFor(uint64_t id, bool done,
                                         std::chrono::milliseconds wait = std::chrono::seconds(5)) {
    std::unique_lock<std::mutex> l(mu_);
    std::optional<v1::ProbeReport> got;
    cv_.wait_for(l, wait, [&] {
      for (const auto& r : reports_) {
        if (r.probe_id() == id && (done ? r.done() : r.armed())) got = r;
      }
      return got.has_value();
    });
    return got;
  }

  CallLog log_;
  FakeDataplane dp_;
  FakeOvs ovs_;
  std::atomic<bool> session_open_{true};
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<v1::ProbeReport> reports_;
  ProbeRunner runner_;  // last: stopped first
};

TEST_F(ProbeRunnerTest, ArmsThenInjectsFromTheVnicPortThenReportsResultsInOrder) {
  runner_.Submit(Request(1, {Capture("web", false), Capture("db", true)}, true));
  auto armed = WaitFor(1, false);
  ASSERT_TRUE(armed) << log_.Dump();
  EXPECT_FALSE(armed->done());
  int arm_web = log_.Find("dp.Arm web out"), arm_db = log_.Find("dp.Arm db in");
  int out = log_.Find("ovs.PacketOut 5");
  ASSERT_GE(arm_web, 0) << log_.Dump();
  EXPECT_LT(arm_web, arm_db);
  EXPECT_LT(arm_db, out) << "the packet goes only once every capture is armed\n" << log_.Dump();
  ASSERT_EQ(ovs_.sent.size(), 1u);
  const std::vector<uint8_t>& f = ovs_.sent[0];
  ASSERT_GE(f.size(), 54u);
  EXPECT_EQ(std::vector<uint8_t>(f.begin(), f.begin() + 6),
            (std::vector<uint8_t>{2, 0, 0, 0, 0, 0x21}))
      << "to db's MAC";
  EXPECT_EQ(std::vector<uint8_t>(f.begin() + 6, f.begin() + 12),
            (std::vector<uint8_t>{2, 0, 0, 0, 0, 0x11}))
      << "from web's own MAC (spoofguard would drop any other)";
  EXPECT_EQ(f[23], 6) << "TCP";
  EXPECT_EQ(f[34] << 8 | f[35], 50000);
  EXPECT_EQ(f[36] << 8 | f[37], 5432);
  // Ingress met first: the probe is done only when both are.
  dp_.Meet(2, true);
  EXPECT_FALSE(WaitFor(1, true, std::chrono::milliseconds(200)));
  dp_.Meet(1, true);
  auto done = WaitFor(1, true);
  ASSERT_TRUE(done);
  ASSERT_EQ(done->results_size(), 2);
  EXPECT_EQ(done->results(0).filter().vnic_id(), "web");
  EXPECT_EQ(done->results(1).filter().vnic_id(), "db");
  EXPECT_EQ(done->results(0).state(), v1::CaptureResult::STATE_MET);
  EXPECT_TRUE(done->error().empty());
  EXPECT_EQ(runner_.stats().injected, 1u);
}

TEST_F(ProbeRunnerTest, ACaptureThatCannotBeArmedCancelsTheOthersAndSendsNothing) {
  runner_.Submit(Request(2, {Capture("web", false), Capture("gone", true)}, true));
  auto done = WaitFor(2, true);
  ASSERT_TRUE(done) << log_.Dump();
  EXPECT_FALSE(done->armed());
  EXPECT_NE(done->error().find("captures[1] (vNIC gone)"), std::string::npos) << done->error();
  EXPECT_GE(log_.Find("dp.CaptureResults 1 cancel"), 0) << log_.Dump();
  EXPECT_EQ(log_.Count("ovs.PacketOut"), 0) << "no packet without its captures";
}

TEST_F(ProbeRunnerTest, AnUnmetCaptureEndsAtItsDeadlineAndACancelEndsAProbeAtOnce) {
  auto start = Clock::now();
  runner_.Submit(Request(3, {Capture("db", true)}, false, /*timeout_ms=*/100));
  runner_.Submit(Request(4, {Capture("web", false)}, false, /*timeout_ms=*/60000));
  auto done3 = WaitFor(3, true);
  ASSERT_TRUE(done3) << log_.Dump();
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(3)) << "timeout + grace, not more";
  ASSERT_EQ(done3->results_size(), 1);
  EXPECT_EQ(done3->results(0).state(), v1::CaptureResult::STATE_CANCELLED);
  EXPECT_FALSE(WaitFor(4, true, std::chrono::milliseconds(100))) << "still waiting, side by side";
  v1::ProbeRequest cancel;
  cancel.set_probe_id(4);
  cancel.set_cancel(true);
  runner_.Submit(cancel);
  EXPECT_TRUE(WaitFor(4, true, std::chrono::seconds(2)));
}

TEST_F(ProbeRunnerTest, InjectOnlyReadsNoCapturesAndALostSessionCancelsThem) {
  runner_.Submit(Request(5, {}, true));
  ASSERT_TRUE(WaitFor(5, true)) << log_.Dump();
  EXPECT_EQ(log_.Count("dp.CaptureResults"), 0)
      << "no ids would read (and cancel) every capture on the host\n"
      << log_.Dump();
  session_open_ = false;  // the armed report cannot be sent
  runner_.Submit(Request(6, {Capture("web", false)}, false));
  for (int i = 0; i < 100 && log_.FindPrefix("dp.CaptureResults") < 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_GE(log_.Find("dp.CaptureResults 1 cancel"), 0) << log_.Dump();
}

TEST_F(ProbeRunnerTest, InjectFromAVnicNotOnThisHostFails) {
  v1::ProbeRequest r = Request(7, {}, true);
  r.mutable_inject()->set_vnic_id("elsewhere");
  runner_.Submit(r);
  auto done = WaitFor(7, true);
  ASSERT_TRUE(done);
  EXPECT_NE(done->error().find("'elsewhere' is not on this host"), std::string::npos)
      << done->error();
  EXPECT_EQ(log_.Count("ovs.PacketOut"), 0);
}

}  // namespace
}  // namespace dfw::hostagent::testing
