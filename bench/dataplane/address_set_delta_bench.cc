// bench_address_set_delta: an address joining (then leaving) a group named by
// 4,000 rules that are applied to 500 vNICs, from the host agent's call
// (DataplaneState::ApplyDelta, as the local API makes it) to the packet path:
// a worker thread, inside its read-side sections as the PortWorker is,
// watches the last vNIC's published policy and stamps the moment it sees the
// new one. Also the call's return (the state file written, when --state-dir
// is given) and what a full state of the same rules costs.
//
// The 500 vNICs enforce the same rules (what the controller sends the
// members of one applied-to group), so they share one compiled ruleset and
// the delta updates it once; --distinct N spreads them over N rulesets that
// differ in one rule each (N updates per delta).
//
// Each join is checked: the new member must meet its rule on every vNIC.
//
//   bench_address_set_delta [--vnics 500] [--rules 4000] [--distinct 1]
//                           [--changes 100] [--state-dir DIR]
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "dataplane_state.h"

namespace {

using namespace dfw::dataplane;
namespace v1 = dfw::v1;
using Clock = std::chrono::steady_clock;

double Us(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::micro>(b - a).count();
}

struct Stats {
  double p50, p99, max;
};
Stats Of(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  auto at = [&](double q) {
    return v[std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())))];
  };
  return {at(0.5), at(0.99), v.back()};
}

std::string Ip4(uint32_t a) {
  return std::to_string(a >> 24) + "." + std::to_string((a >> 16) & 255) + "." +
         std::to_string((a >> 8) & 255) + "." + std::to_string(a & 255);
}

// The group `grp` (256 hosts of 198.18.0.0/24) is the source of every rule;
// the destination is one of 100 sets of 16 hosts; TCP to port 1000 + rule.
// Content `variant` differs in its last rule's port only (up to 5,000).
v1::VNicRuleset Rules(uint32_t rules, uint32_t variant) {
  v1::VNicRuleset rs;
  for (uint32_t i = 0; i < rules; ++i) {
    auto* r = rs.add_rules();
    r->set_rule_num(i + 1);
    r->set_policy_id("bench");
    r->set_rule_id("r" + std::to_string(i));
    r->mutable_sources()->add_address_set_ids("grp");
    r->mutable_destinations()->add_address_set_ids("d" + std::to_string(i % 100));
    auto* s = r->add_services();
    s->set_protocol(6);
    s->add_destination_ports()->set_first(i + 1 == rules && variant ? 60000 + variant % 5000
                                                                    : 1000 + i % 50000);
    r->set_direction(v1::DIRECTION_OUT);
    r->set_action(v1::ACTION_ALLOW);
    r->set_stateful(true);
  }
  rs.mutable_default_rule()->set_action(v1::ACTION_DROP);
  return rs;
}

int Fail(const std::string& what, const Status& st) {
  std::fprintf(stderr, "bench_address_set_delta: %s: %s\n", what.c_str(), st.message().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  uint32_t vnics = 500, rules = 4000, distinct = 1, changes = 100;
  std::string state_dir;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help") {
      std::printf(
          "usage: bench_address_set_delta [--vnics N] [--rules N] [--distinct N] [--changes N] "
          "[--state-dir DIR]\n");
      return 0;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "bench_address_set_delta: %s needs a value\n", a.c_str());
      return 2;
    }
    const std::string v = argv[++i];
    char* end = nullptr;
    const unsigned long n = std::strtoul(v.c_str(), &end, 10);
    const bool num = !v.empty() && *end == '\0' && n > 0 && n <= 100000;
    if (a == "--state-dir") {
      state_dir = v;
    } else if (!num) {
      std::fprintf(stderr, "bench_address_set_delta: %s %s: not a number in 1..100000\n", a.c_str(),
                   v.c_str());
      return 2;
    } else if (a == "--vnics") {
      vnics = static_cast<uint32_t>(std::min<unsigned long>(n, kMaxLocalId));
    } else if (a == "--rules") {
      rules = static_cast<uint32_t>(n);
    } else if (a == "--distinct") {
      distinct = static_cast<uint32_t>(n);
    } else if (a == "--changes") {
      changes = static_cast<uint32_t>(n);
    } else {
      std::fprintf(stderr, "bench_address_set_delta: unknown option %s\n", a.c_str());
      return 2;
    }
  }
  distinct = std::min({distinct, vnics, 5000u});

  VnicTable table(1);
  DataplaneState state(&table, state_dir.empty() ? "" : state_dir + "/state.pb");
  for (uint32_t i = 0; i < vnics; ++i) {
    v1::DataplaneVNic v;
    v.set_id("vnic-" + std::to_string(i));
    v.set_local_id(i + 1);
    char mac[18];
    std::snprintf(mac, sizeof(mac), "52:54:00:00:%02x:%02x", ((i + 1) >> 8) & 255u, (i + 1) & 255u);
    v.set_mac(mac);
    v.add_bound_ips(Ip4((198u << 24 | 19u << 16) + i + 1));
    if (Status st = state.SetVnic(v); !st.ok()) return Fail("vNIC " + v.id(), st);
  }
  v1::HostDesiredState full;
  full.set_revision(1);
  auto* grp = full.add_address_sets();
  grp->set_id("grp");
  for (uint32_t h = 0; h < 256; ++h) grp->add_prefixes(Ip4((198u << 24 | 18u << 16) + h) + "/32");
  for (uint32_t d = 0; d < 100; ++d) {
    auto* set = full.add_address_sets();
    set->set_id("d" + std::to_string(d));
    for (uint32_t h = 0; h < 16; ++h)
      set->add_prefixes(Ip4((198u << 24 | 19u << 16 | (100 + d) << 8) + h) + "/32");
  }
  std::vector<v1::VNicRuleset> contents;
  for (uint32_t k = 0; k < distinct; ++k) contents.push_back(Rules(rules, k));
  for (uint32_t i = 0; i < vnics; ++i) {
    v1::VNicRuleset* rs = full.add_rulesets();
    *rs = contents[i % distinct];
    rs->set_vnic_id("vnic-" + std::to_string(i));
  }
  const auto f0 = Clock::now();
  if (Status st = state.ApplyFull(full); !st.ok()) return Fail("full state", st);
  const double full_ms = Us(f0, Clock::now()) / 1000;

  // The worker: read-side sections over the last vNIC, as a PortWorker's
  // bursts; it stamps the first section that sees a new policy.
  std::atomic<bool> stop{false};
  std::atomic<const VnicPolicy*> seen{nullptr};
  std::atomic<int64_t> seen_at{0};
  const uint16_t watched = static_cast<uint16_t>(vnics);
  std::thread worker([&] {
    const VnicPolicy* last = nullptr;
    while (!stop.load(std::memory_order_relaxed)) {
      table.Enter(0);
      const VnicState* vs = table.Get(watched);
      const VnicPolicy* p = vs ? vs->policy.get() : nullptr;
      if (p != last) {
        last = p;
        seen_at.store(Clock::now().time_since_epoch().count(), std::memory_order_relaxed);
        seen.store(p, std::memory_order_release);
      }
      table.Leave(0);
    }
  });
  while (!seen.load(std::memory_order_acquire)) std::this_thread::yield();

  std::vector<double> join_seen, join_call, leave_seen, leave_call;
  uint64_t rev = 1;
  int bad = 0;
  for (uint32_t c = 0; c < 2 * changes; ++c) {
    const bool join = c < changes;
    const uint32_t k = join ? c : c - changes;
    const std::string member = Ip4((198u << 24 | 18u << 16 | 1u << 8) + k) + "/32";
    v1::HostDelta d;
    d.set_from_revision(rev);
    d.set_to_revision(++rev);
    auto* sd = d.add_address_set_deltas();
    sd->set_id("grp");
    (join ? sd->add_added() : sd->add_removed())->assign(member);
    const VnicPolicy* before = table.Current(watched)->policy.get();
    const auto t0 = Clock::now();
    if (Status st = state.ApplyDelta(d); !st.ok()) return Fail("delta", st);
    const auto t1 = Clock::now();
    while (seen.load(std::memory_order_acquire) == before) std::this_thread::yield();
    const Clock::time_point ts{Clock::duration(seen_at.load(std::memory_order_relaxed))};
    (join ? join_seen : leave_seen).push_back(Us(t0, ts));
    (join ? join_call : leave_call).push_back(Us(t0, t1));
    // The member meets rule 1 (to d0's first host, TCP 1000) on every vNIC
    // after it joined, and no rule after it left.
    const uint32_t src = (198u << 24 | 18u << 16 | 1u << 8) + k;
    const FlowKey key =
        FlowKey::V4(src, 198u << 24 | 19u << 16 | 100u << 8, 40000, 1000, 6, Direction::kOut);
    for (uint32_t i = 1; i <= vnics; ++i) {
      const uint32_t got =
          table.Current(static_cast<uint16_t>(i))->policy->ruleset->ClassifyOne(key);
      if ((join && got != 0) || (!join && got != Ruleset::kNoMatch)) ++bad;
    }
  }
  stop = true;
  worker.join();
  if (bad) {
    std::fprintf(stderr, "bench_address_set_delta: %d vNIC lookups disagree with the group\n", bad);
    return 1;
  }
  // What the previous code did per delta: a full compile per vNIC.
  RulesetSpec spec;
  std::vector<RuleMeta> meta;
  std::map<std::string, v1::AddressSet> sets;
  for (const auto& s : full.address_sets()) sets[s.id()] = s;
  v1::VNicRuleset one = contents[0];
  one.set_vnic_id("x");
  if (Status st = RulesetSpecFromProto(one, sets, &spec, &meta); !st.ok()) return Fail("spec", st);
  std::vector<double> compile;
  for (int r = 0; r < 5; ++r) {
    RulesetCompiler compiler;
    const auto t0 = Clock::now();
    if (Status st = compiler.Compile(spec); !st.ok()) return Fail("compile", st);
    compile.push_back(Us(t0, Clock::now()) / 1000);
  }

  std::printf(
      "%u vNICs, %u rules each naming the group (256 hosts), %u distinct rulesets "
      "(held: %zu), state file: %s\n",
      vnics, rules, distinct, state.shared_rulesets(),
      state_dir.empty() ? "none" : (state_dir + "/state.pb").c_str());
  std::printf(
      "full state of all vNICs: %.1f ms; one full compile of the rules: %.1f ms "
      "(median of 5)\n",
      full_ms, Of(compile).p50);
  const std::string head = "a /32 (x" + std::to_string(changes) + ")";
  std::printf("%-32s %10s %10s %10s\n", head.c_str(), "p50 us", "p99 us", "max us");
  auto row = [](const char* what, const std::vector<double>& v) {
    const Stats s = Of(v);
    std::printf("%-32s %10.0f %10.0f %10.0f\n", what, s.p50, s.p99, s.max);
  };
  row("joins: call -> packet path", join_seen);
  row("joins: call returned", join_call);
  row("leaves: call -> packet path", leave_seen);
  row("leaves: call returned", leave_call);
  return 0;
}
