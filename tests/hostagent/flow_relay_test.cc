// FlowRelay (dfwctl observe's host end, issue 16) with fake edges: every
// record the dataplane produced while the controller observes is either
// sent once, in order, or counted as lost — on random sequences of
// production faster than the buffer, ring drops, refused sends, an
// unreachable dataplane and dataplane restarts; nothing before the watch
// started and nothing while it is off.
#include "dfw/hostagent/flow_relay.h"

#include <gtest/gtest.h>

#include <random>

#include "fake_edges.h"

namespace dfw::hostagent::testing {
namespace {

struct Totals {
  uint64_t records = 0, lost = 0;
};

Totals Sum(const std::vector<v1::FlowBatch>& batches) {
  Totals t;
  for (const auto& b : batches) {
    t.records += static_cast<uint64_t>(b.records_size());
    t.lost += b.lost();
  }
  return t;
}

TEST(FlowRelayTest, EveryRecordIsSentOnceInOrderOrCountedLost) {
  for (uint64_t seed : {1, 2, 3, 4, 5}) {
    CallLog log;
    FakeDataplane dp(&log);
    FakeController ctl(&log);
    FlowRelay relay(&dp, &ctl);  // not started: PollOnce drives it
    std::mt19937_64 rng(seed);
    int instance = 0;
    auto vnic = [&] {  // sorts like the instances
      char buf[32];
      std::snprintf(buf, sizeof buf, "instance-%04d", instance);
      return std::string(buf);
    };
    dp.flows.Produce(10, vnic());  // before anyone observes: never sent
    relay.PollOnce();
    relay.SetEnabled(true);
    relay.PollOnce();  // starts at the newest record
    EXPECT_TRUE(ctl.batches().empty());
    uint64_t produced = 0, evictions = 0;
    for (int step = 0; step < 3000; ++step) {
      switch (rng() % 10) {
        case 0:
        case 1:
        case 2:
        case 3: {
          const uint64_t n = rng() % (rng() % 8 ? 40 : 150);  // sometimes more than the 64 held
          evictions += n > 64;
          dp.flows.Produce(n, vnic());
          produced += n;
          break;
        }
        case 4: {
          const uint64_t d = rng() % 5;
          dp.flows.DropInRing(d);
          produced += d;
          break;
        }
        case 5:
          ctl.flows_refused = rng() % 3 == 0;
          break;
        case 6:
          dp.flows_down = rng() % 4 == 0;
          break;
        case 7:
          if (rng() % 10 == 0) {
            // What a stopping dataplane held unread is gone uncounted (the
            // agent cannot know it): read everything first.
            dp.flows_down = false;
            relay.PollOnce();
            dp.flows.Restart();
            ++instance;
          }
          break;
        default:
          relay.PollOnce();
      }
    }
    dp.flows_down = false;
    ctl.flows_refused = false;
    relay.PollOnce();
    relay.PollOnce();
    const auto batches = ctl.batches();
    const Totals t = Sum(batches);
    EXPECT_EQ(t.records + t.lost, produced) << "seed " << seed;
    EXPECT_GT(t.records, produced / 4) << "seed " << seed;
    EXPECT_GT(t.lost, 0u) << "seed " << seed;
    EXPECT_GT(evictions, 0u);
    EXPECT_EQ(relay.stats().lost, t.lost) << "seed " << seed;
    EXPECT_EQ(relay.stats().records, t.records);
    // In order, once: seqs rise within an instance; instances in order.
    std::string last_vnic;
    uint64_t last_seq = 0;
    for (const auto& b : batches) {
      for (const auto& r : b.records()) {
        if (r.vnic_id() != last_vnic) {
          ASSERT_LT(last_vnic, r.vnic_id()) << "seed " << seed;
          last_vnic = r.vnic_id();
          last_seq = 0;
        }
        ASSERT_GT(r.seq(), last_seq) << "seed " << seed;
        last_seq = r.seq();
      }
    }
    EXPECT_GT(instance, 3) << "seed " << seed;
  }
}

TEST(FlowRelayTest, NothingWhileOffAndAWatchStartsAtTheNewestRecord) {
  CallLog log;
  FakeDataplane dp(&log);
  FakeController ctl(&log);
  FlowRelay relay(&dp, &ctl);
  relay.SetEnabled(true);
  relay.PollOnce();
  dp.flows.Produce(3);
  relay.PollOnce();
  ASSERT_EQ(Sum(ctl.batches()).records, 3u);
  relay.SetEnabled(false);
  dp.flows.Produce(5);
  relay.PollOnce();
  EXPECT_EQ(Sum(ctl.batches()).records, 3u);  // off: nothing read or sent
  relay.SetEnabled(true);
  relay.PollOnce();
  EXPECT_EQ(Sum(ctl.batches()).records, 3u);  // the 5 from before are not sent
  dp.flows.Produce(2);
  relay.PollOnce();
  const auto b = ctl.batches();
  ASSERT_EQ(Sum(b).records, 5u);
  EXPECT_EQ(b.back().records(0).seq(), 9u);
  EXPECT_EQ(Sum(b).lost, 0u);
  // A read that fails loses nothing: the next one reads on.
  dp.flows_down = true;
  dp.flows.Produce(4);
  relay.PollOnce();
  EXPECT_EQ(relay.stats().read_errors, 1u);
  dp.flows_down = false;
  relay.PollOnce();
  EXPECT_EQ(Sum(ctl.batches()).records, 9u);
  EXPECT_EQ(Sum(ctl.batches()).lost, 0u);
}

TEST(FlowRelayTest, ALargeBacklogGoesInBatchesOfAtMostKMaxBatch) {
  CallLog log;
  FakeDataplane dp(&log);
  FakeController ctl(&log);
  FlowRelay relay(&dp, &ctl);
  dp.flows.SetCapacity(10000);
  relay.SetEnabled(true);
  relay.PollOnce();
  dp.flows.Produce(5000);
  relay.PollOnce();  // one round reads until nothing is left
  const auto b = ctl.batches();
  ASSERT_EQ(b.size(), 3u);
  EXPECT_EQ(b[0].records_size(), static_cast<int>(FlowRelay::kMaxBatch));
  EXPECT_EQ(Sum(b).records, 5000u);
}

}  // namespace
}  // namespace dfw::hostagent::testing
