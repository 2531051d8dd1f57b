// ModelService::ProbeFlow (REST POST /api/v1/probes) against hosts on real
// sessions (TestHost): the receiver's host is asked first and the sender's
// only once that capture is armed; the sender's request carries the probe
// packet (the source vNIC, the receiver's MAC, the flow, an ephemeral
// source port); the answers make `actual` and `agrees`; a drop at the
// sender cancels the receiver's capture; a host that loses its session, a
// live trace nothing meets and an injection from a VM no connected host
// holds each say so.
#include <gtest/gtest.h>

#include <future>

#include "test_host.h"
#include "test_util.h"

namespace dfw::controller::testing {
namespace {

using nlohmann::json;

class ProbeFlowTest : public WebAndDbOnTwoHostsTest {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(WebAndDbOnTwoHostsTest::SetUp());
    Post("/api/v1/policies", WebToDb());
  }
  // The next probe request h receives (other messages skipped).
  static std::optional<dfw::v1::ProbeRequest> NextProbe(TestHost& h, int ms = 5000) {
    for (auto m = h.Next(ms); m; m = h.Next(ms)) {
      if (m->has_probe()) return m->probe();
    }
    return std::nullopt;
  }
  static void Report(TestHost& h, uint64_t id, bool done,
                     std::vector<dfw::v1::CaptureResult> results = {}) {
    dfw::v1::HostToController m;
    m.mutable_probe()->set_probe_id(id);
    m.mutable_probe()->set_armed(true);
    m.mutable_probe()->set_done(done);
    for (auto& r : results) *m.mutable_probe()->add_results() = r;
    h.Send(m);
  }
  static dfw::v1::CaptureResult Met(bool forwarded, dfw::v1::CaptureStage stage, uint32_t rule) {
    dfw::v1::CaptureResult r;
    r.set_state(dfw::v1::CaptureResult::STATE_MET);
    r.set_forwarded(forwarded);
    r.set_stage(stage);
    r.set_rule_num(rule);
    return r;
  }
  static dfw::v1::CaptureResult Ended(dfw::v1::CaptureResult::State s) {
    dfw::v1::CaptureResult r;
    r.set_state(s);
    return r;
  }
  std::future<HttpResult> Probe(const std::string& from, const std::string& to, int port,
                                bool inject, int timeout_ms = 2000) {
    json body = {
        {"flow",
         {{"from_vm_id", from}, {"to_vm_id", to}, {"protocol", 6}, {"destination_port", port}}},
        {"inject", inject},
        {"timeout_ms", timeout_ms}};
    return std::async(std::launch::async, [this, body] {
      Rest rest(server_.http_port());  // its own connection: this one blocks
      return rest.Post("/api/v1/probes", body);
    });
  }
  void Connect(TestHost& h1, TestHost& h2) {
    h1.Hello({MetadataVm("web-1", {{"app", "web"}}, "198.18.0.1")});
    auto db = MetadataVm("db-1", {{"app", "db"}}, "198.18.0.2");
    db.mutable_vnics(0)->set_mac("52:54:00:00:00:02");
    h2.Hello({db});
    // Both sessions open and db's report applied before anything is probed.
    for (int i = 0; i < 500; ++i) {
      int connected = 0;
      for (const auto& h : rest_->Get("/api/v1/hosts").body.value("hosts", json::array())) {
        connected += h.value("connected", false) ? 1 : 0;
      }
      json db_vm = rest_->Get("/api/v1/vms/db-1").body;
      if (connected == 2 && db_vm["vnics"][0].value("mac", "") == "52:54:00:00:00:02") return;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    FAIL() << "h1 and h2 did not connect";
  }
};

TEST_F(ProbeFlowTest, ReceiverArmsFirstTheSenderInjectsAndBothAllowAgree) {
  TestHost h1(server_.grpc_port(), "h1"), h2(server_.grpc_port(), "h2");
  Connect(h1, h2);
  auto result = Probe("web-1", "db-1", 5432, true);
  auto in = NextProbe(h2);
  ASSERT_TRUE(in);
  ASSERT_EQ(in->captures_size(), 1);
  EXPECT_FALSE(in->has_inject());
  EXPECT_EQ(in->captures(0).vnic_id(), "db-1-nic0");
  EXPECT_EQ(in->captures(0).direction(), dfw::v1::DIRECTION_IN);
  EXPECT_EQ(in->captures(0).dst_ip(), std::string("\xc6\x12\x00\x02", 4));
  EXPECT_EQ(in->captures(0).dst_port(), 5432u);
  const uint32_t sport = in->captures(0).src_port();
  EXPECT_GE(sport, 49152u) << "an ephemeral port of the probe's own";
  EXPECT_FALSE(NextProbe(h1, 300)) << "the sender waits until the receiver is armed";
  Report(h2, in->probe_id(), false);
  auto out = NextProbe(h1);
  ASSERT_TRUE(out);
  EXPECT_EQ(out->probe_id(), in->probe_id());
  ASSERT_EQ(out->captures_size(), 1);
  EXPECT_EQ(out->captures(0).direction(), dfw::v1::DIRECTION_OUT);
  EXPECT_EQ(out->captures(0).src_port(), sport);
  ASSERT_TRUE(out->has_inject());
  EXPECT_EQ(out->inject().vnic_id(), "web-1-nic0");
  EXPECT_EQ(out->inject().dst_mac(), "52:54:00:00:00:02");
  EXPECT_EQ(out->inject().src_port(), sport);
  EXPECT_EQ(out->inject().dst_port(), 5432u);
  Report(h1, out->probe_id(), true, {Met(true, dfw::v1::CAPTURE_STAGE_RULE, 1)});
  Report(h2, in->probe_id(), true, {Met(true, dfw::v1::CAPTURE_STAGE_RULE, 2)});
  auto r = result.get();
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body["actual"], "allowed");
  EXPECT_EQ(r.body["agrees"], true);
  EXPECT_EQ(r.body["expected"]["allowed"], true);
  ASSERT_EQ(r.body["observed"].size(), 2u);
  EXPECT_EQ(r.body["observed"][0]["capture"]["state"], "STATE_MET");
  EXPECT_EQ(r.body["observed"][1]["host_id"], "h2");
}

TEST_F(ProbeFlowTest, ADropAtTheSenderCancelsTheReceiverAndAgreesWithTheTrace) {
  TestHost h1(server_.grpc_port(), "h1"), h2(server_.grpc_port(), "h2");
  Connect(h1, h2);
  auto result = Probe("web-1", "db-1", 80, true, 60000);
  auto in = NextProbe(h2);
  ASSERT_TRUE(in);
  Report(h2, in->probe_id(), false);
  auto out = NextProbe(h1);
  ASSERT_TRUE(out);
  Report(h1, out->probe_id(), true, {Met(false, dfw::v1::CAPTURE_STAGE_RULE, 3)});
  auto cancel = NextProbe(h2);
  ASSERT_TRUE(cancel) << "the receiver's capture is ended, not waited out (60 s)";
  EXPECT_TRUE(cancel->cancel());
  Report(h2, in->probe_id(), true, {Ended(dfw::v1::CaptureResult::STATE_CANCELLED)});
  auto r = result.get();
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body["expected"]["decided_by"], "KIND_EGRESS");
  EXPECT_EQ(r.body["actual"], "denied");
  EXPECT_EQ(r.body["agrees"], true);
  EXPECT_NE(r.body["observed"][1]["note"].get<std::string>().find("not reached"), std::string::npos)
      << r.body;
  // The same flow seen forwarded where the policy denies it: a difference.
  auto again = Probe("web-1", "db-1", 80, true, 60000);
  in = NextProbe(h2);
  ASSERT_TRUE(in);
  Report(h2, in->probe_id(), false);
  out = NextProbe(h1);
  ASSERT_TRUE(out);
  Report(h1, out->probe_id(), true, {Met(true, dfw::v1::CAPTURE_STAGE_RULE, 3)});
  Report(h2, in->probe_id(), true, {Met(true, dfw::v1::CAPTURE_STAGE_DEFAULT_RULE, 0)});
  r = again.get();
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body["actual"], "allowed");
  EXPECT_EQ(r.body["agrees"], false);
}

TEST_F(ProbeFlowTest, ALostHostANeverMetLiveTraceAndAnUnreachableSenderSaySo) {
  {
    TestHost h1(server_.grpc_port(), "h1");
    auto h2 = std::make_unique<TestHost>(server_.grpc_port(), "h2");
    Connect(h1, *h2);
    auto result = Probe("web-1", "db-1", 5432, true, 60000);
    ASSERT_TRUE(NextProbe(*h2));
    auto start = std::chrono::steady_clock::now();
    h2.reset();  // its session ends before it armed
    auto out = NextProbe(h1);
    ASSERT_TRUE(out);
    Report(h1, out->probe_id(), true, {Met(true, dfw::v1::CAPTURE_STAGE_RULE, 1)});
    auto r = result.get();
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(4));
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.body["actual"], "incomplete");
    EXPECT_EQ(r.body["agrees"], false);
    EXPECT_NE(r.body["observed"][1]["note"].get<std::string>().find("h2"), std::string::npos)
        << r.body;
  }
  TestHost h1(server_.grpc_port(), "h1"), h2(server_.grpc_port(), "h2");
  Connect(h1, h2);
  // A live trace (no packet sent): both ends wait; nothing comes.
  auto live = Probe("web-1", "db-1", 5432, false, 300);
  auto in = NextProbe(h2);
  ASSERT_TRUE(in);
  EXPECT_EQ(in->captures(0).src_port(), 0u) << "any source port: the VM picks it";
  Report(h2, in->probe_id(), false);
  auto out = NextProbe(h1);
  ASSERT_TRUE(out);
  EXPECT_FALSE(out->has_inject());
  Report(h1, out->probe_id(), true, {Ended(dfw::v1::CaptureResult::STATE_EXPIRED)});
  Report(h2, in->probe_id(), true, {Ended(dfw::v1::CaptureResult::STATE_EXPIRED)});
  auto r = live.get();
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body["actual"], "unobserved");
  EXPECT_EQ(r.body["agrees"], false);
  // From a VM on no connected host: nothing can send the probe.
  Post("/api/v1/vms", VmJson("far-1", "h9", {{"app", "web"}}, "198.18.0.9"));
  auto far = Probe("far-1", "db-1", 5432, true).get();
  EXPECT_EQ(far.status / 100, 4) << far.body;
  EXPECT_NE(far.body.dump().find("inject: VM 'far-1'"), std::string::npos) << far.body;
}

}  // namespace
}  // namespace dfw::controller::testing
