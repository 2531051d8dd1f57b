// ProbeHub (probe_hub.h): the controller's waits for the hosts' probe
// reports — armed, done, an error in the host's words, a host that lost its
// session, a deadline, reports of other hosts or probes ignored.
#include "dfw/controller/probe_hub.h"

#include <gtest/gtest.h>

#include <thread>

namespace dfw::controller {
namespace {

using Clock = std::chrono::steady_clock;

v1::ProbeReport Report(uint64_t id, bool armed, bool done, std::string error = "") {
  v1::ProbeReport r;
  r.set_probe_id(id);
  r.set_armed(armed);
  r.set_done(done);
  r.set_error(std::move(error));
  if (done) r.add_results()->set_state(v1::CaptureResult::STATE_MET);
  return r;
}

TEST(ProbeHub, WaitsForArmedThenDoneFromTheHostAsked) {
  ProbeHub hub;
  uint64_t id = hub.NewId();
  EXPECT_NE(hub.NewId(), id);
  hub.Expect(id, "h1");
  std::thread host([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    hub.Report("h2", Report(id, true, true));      // another host: not asked
    hub.Report("h1", Report(id + 7, true, true));  // another probe
    hub.Report("h1", Report(id, true, false));
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    hub.Report("h1", Report(id, true, true));
  });
  auto armed = hub.WaitArmed(id, "h1", Clock::now() + std::chrono::seconds(5));
  ASSERT_TRUE(armed.ok()) << armed.status();
  EXPECT_TRUE(armed->armed());
  auto done = hub.WaitDone(id, "h1", Clock::now() + std::chrono::seconds(5));
  host.join();
  ASSERT_TRUE(done.ok()) << done.status();
  ASSERT_EQ(done->results_size(), 1);
  EXPECT_EQ(done->results(0).state(), v1::CaptureResult::STATE_MET);
  EXPECT_EQ(hub.in_flight(), 1u);
  hub.Finish(id);
  EXPECT_EQ(hub.in_flight(), 0u);
  EXPECT_EQ(hub.WaitDone(id, "h1", Clock::now()).status().code(), absl::StatusCode::kNotFound);
}

TEST(ProbeHub, AHostErrorALostSessionAndADeadlineEndTheWait) {
  ProbeHub hub;
  uint64_t id = hub.NewId();
  hub.Expect(id, "h1");
  hub.Expect(id, "h2");
  hub.Expect(id, "h3");
  hub.Report("h1", Report(id, false, true, "captures[0] (vNIC v1): filter.vnic_id: unknown"));
  auto e = hub.WaitDone(id, "h1", Clock::now() + std::chrono::seconds(5));
  EXPECT_EQ(e.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(e.status().message().find("vnic_id: unknown"), std::string::npos) << e.status();
  auto start = Clock::now();
  std::thread lose([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    hub.HostLost("h2");
  });
  auto lost = hub.WaitDone(id, "h2", Clock::now() + std::chrono::seconds(30));
  lose.join();
  EXPECT_EQ(lost.status().code(), absl::StatusCode::kUnavailable) << lost.status();
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(5)) << "not the deadline's 30 s";
  auto late = hub.WaitArmed(id, "h3", Clock::now() + std::chrono::milliseconds(20));
  EXPECT_EQ(late.status().code(), absl::StatusCode::kDeadlineExceeded);
  // A done report counts as armed.
  hub.Report("h3", Report(id, false, true));
  EXPECT_TRUE(hub.WaitArmed(id, "h3", Clock::now()).ok());
}

}  // namespace
}  // namespace dfw::controller
