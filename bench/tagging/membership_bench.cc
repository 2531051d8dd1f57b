// Membership engine benchmark: full evaluation and per-tag-change deltas at
// scale. Default: 100k VMs with 10 tags each, 10k groups of mixed criteria
// (tags, tag conjunctions, VM name, guest OS, nesting, static members).
//
//   bench_membership [--vms N] [--groups N] [--changes N] [--seed N]
//
// Prints: full evaluation time (MembershipIndex::Load), the latency of one tag
// change to its delta (median, p90, p99, max over --changes changes), delta
// sizes, and memory (RSS growth and the index's own estimate).
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "dfw/tagging/membership_index.h"

using namespace dfw::tagging;

namespace {

long RssKiB() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::strtol(line.c_str() + 6, nullptr, 10);
  }
  return 0;
}

double CpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

struct Scope {
  const char* name;
  int values;
};
// One tag per scope per VM: 10 tags. Cardinalities from broad (env) to narrow (owner).
constexpr Scope kScopes[] = {{"app", 1000},  {"tier", 4},  {"env", 4},      {"team", 200},
                             {"region", 10}, {"zone", 30}, {"owner", 2000}, {"cost", 100},
                             {"pci", 2},     {"backup", 3}};
const char* kTiers[] = {"web", "app", "db", "cache"};
const char* kOs[] = {"Debian GNU/Linux 12", "Debian GNU/Linux 11",
                     "Ubuntu 22.04 LTS",    "Ubuntu 24.04 LTS",
                     "Rocky Linux 9",       "Windows Server 2022",
                     "Windows Server 2019", "FreeBSD 14",
                     "Alpine 3.19",         "RHEL 9.3"};

std::string Value(int scope, int v) {
  if (scope == 1) return kTiers[v];
  return std::string(kScopes[scope].name) + "-" + std::to_string(v);
}

Condition TagCond(int scope, int v) {
  Condition c;
  c.kind = Condition::Kind::kTag;
  c.tag = {kScopes[scope].name, Value(scope, v)};
  return c;
}

// Runs f() and appends its wall time in µs to `out`; f()'s result.
template <typename F>
auto Timed(std::vector<double>& out, F&& f) {
  auto c0 = std::chrono::steady_clock::now();
  auto r = f();
  out.push_back(
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - c0).count());
  return r;
}

// The p-th value of a sorted, non-empty sample.
double Percentile(const std::vector<double>& sorted, double p) {
  return sorted[std::min(sorted.size() - 1, size_t(p * sorted.size()))];
}

}  // namespace

int main(int argc, char** argv) {
  int n_vms = 100000, n_groups = 10000, n_changes = 2000, n_new = 0;
  uint64_t seed = 42;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--vms"))
      n_vms = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--groups"))
      n_groups = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--changes"))
      n_changes = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--new-vms"))
      n_new = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--seed"))
      seed = strtoull(argv[i + 1], nullptr, 10);
    else {
      fprintf(stderr, "usage: %s [--vms N] [--groups N] [--changes N] [--new-vms N] [--seed N]\n",
              argv[0]);
      return 2;
    }
  }
  std::mt19937_64 rng(seed);
  auto pick = [&](int n) {
    return static_cast<int>(std::uniform_int_distribution<int>(0, n - 1)(rng));
  };

  // ---- inventory
  std::vector<VmSpec> vms(n_vms);
  for (int i = 0; i < n_vms; ++i) {
    VmSpec& vm = vms[i];
    vm.id = "vm-" + std::to_string(i);
    std::vector<int> vals;
    for (int s = 0; s < 10; ++s) {
      vals.push_back(pick(kScopes[s].values));
      vm.tags.push_back({kScopes[s].name, Value(s, vals.back())});
    }
    std::sort(vm.tags.begin(), vm.tags.end());
    vm.name = std::string(kTiers[vals[1]]) + "-" + Value(0, vals[0]) + "-" + std::to_string(i);
    vm.guest_os = kOs[pick(10)];
    VNicSpec n;
    n.id = "vnic-" + std::to_string(i);
    uint32_t a = 0xC6120000u + static_cast<uint32_t>(i);  // 198.18.0.0/15 holds 131k hosts
    n.addresses.push_back(IpPrefix::V4(a));
    vm.vnics.push_back(std::move(n));
  }

  // ---- groups
  std::vector<GroupSpec> groups;
  int kinds[8] = {};
  for (int i = 0; i < n_groups; ++i) {
    GroupSpec g;
    g.id = "g-" + std::to_string(i);
    int r = pick(100);
    Conjunction c;
    if (r < 30) {  // app=X
      c.push_back(TagCond(0, pick(1000)));
      kinds[0]++;
    } else if (r < 50) {  // app=X AND tier=Y
      c.push_back(TagCond(0, pick(1000)));
      c.push_back(TagCond(1, pick(4)));
      kinds[1]++;
    } else if (r < 65) {  // team=T AND env=E
      c.push_back(TagCond(3, pick(200)));
      c.push_back(TagCond(2, pick(4)));
      kinds[2]++;
    } else if (r < 75) {  // owner=O, or region AND zone
      if (pick(2)) {
        c.push_back(TagCond(6, pick(2000)));
      } else {
        c.push_back(TagCond(4, pick(10)));
        c.push_back(TagCond(5, pick(30)));
      }
      kinds[3]++;
    } else if (r < 80) {  // VM name: prefix alone, or contains with a tag
      Condition nc;
      nc.kind = Condition::Kind::kVmName;
      if (pick(2)) {
        nc.match = {StringOp::kStartsWith,
                    std::string(kTiers[pick(4)]) + "-app-" + std::to_string(pick(100))};
      } else {
        nc.match = {StringOp::kContains, "-app-" + std::to_string(pick(1000)) + "-"};
        c.push_back(TagCond(3, pick(200)));
      }
      c.push_back(nc);
      kinds[4]++;
    } else if (r < 85) {  // guest OS contains, with env
      Condition oc;
      oc.kind = Condition::Kind::kGuestOs;
      const char* needles[] = {"debian", "ubuntu", "windows", "rocky", "22.04", "bsd"};
      oc.match = {StringOp::kContains, needles[pick(6)]};
      c.push_back(oc);
      c.push_back(TagCond(2, pick(4)));
      c.push_back(TagCond(8, pick(2)));
      kinds[5]++;
    } else if (r < 97 && i > 10) {  // nesting: member_of an earlier group AND a tag; or inclusion
      if (pick(2)) {
        Condition mc;
        mc.kind = Condition::Kind::kMemberOf;
        mc.group = "g-" + std::to_string(pick(i));
        c.push_back(mc);
        c.push_back(TagCond(9, pick(3)));
      } else {
        for (int k = 0; k < 3; ++k) g.included_groups.push_back("g-" + std::to_string(pick(i)));
        std::sort(g.included_groups.begin(), g.included_groups.end());
        g.included_groups.erase(std::unique(g.included_groups.begin(), g.included_groups.end()),
                                g.included_groups.end());
      }
      kinds[6]++;
    } else {  // static members
      for (int k = 0; k < 10; ++k) g.static_vms.push_back("vm-" + std::to_string(pick(n_vms)));
      std::sort(g.static_vms.begin(), g.static_vms.end());
      g.static_vms.erase(std::unique(g.static_vms.begin(), g.static_vms.end()), g.static_vms.end());
      g.static_prefixes.push_back(
          IpPrefix::V4(0xC6130000u + (static_cast<uint32_t>(pick(256)) << 8), 24));
      kinds[7]++;
    }
    if (!c.empty()) g.criteria.push_back(std::move(c));
    groups.push_back(std::move(g));
  }

  // --new-vms: the last N VMs are left out of the load and registered one
  // at a time afterwards (UpsertVm of a VM the index has never seen, as a
  // host's Hello does during the registration storm).
  n_new = std::clamp(n_new, 0, n_vms);
  std::vector<VmSpec> fresh(std::make_move_iterator(vms.end() - n_new),
                            std::make_move_iterator(vms.end()));
  vms.resize(vms.size() - n_new);
  long rss0 = RssKiB();
  MembershipIndex index;
  double t0 = CpuSeconds();
  auto wall0 = std::chrono::steady_clock::now();
  auto st = index.Load(std::move(vms), std::move(groups));  // as the controller does from its store
  double load_cpu = CpuSeconds() - t0;
  double load_wall =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
  if (!st.ok()) {
    fprintf(stderr, "load failed: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  long rss1 = RssKiB();
  IndexStats stats = index.Stats();

  // ---- tag changes: move a random VM to another app (unset app, set app=Y).
  std::vector<double> lat_us;
  size_t groups_touched = 0, max_touched = 0;
  for (int i = 0; i < n_changes; ++i) {
    std::string id = "vm-" + std::to_string(pick(n_vms - n_new));
    Tag next{"app", Value(0, pick(1000))};
    auto d = Timed(lat_us, [&] { return index.ChangeTags(id, {next}, {{"app", ""}}); });
    if (!d.ok()) {
      fprintf(stderr, "change failed: %s\n", std::string(d.status().message()).c_str());
      return 1;
    }
    groups_touched += d->groups.size();
    max_touched = std::max(max_touched, d->groups.size());
  }
  std::sort(lat_us.begin(), lat_us.end());
  auto pct = [&](double p) { return Percentile(lat_us, p); };

  std::vector<double> new_us;
  size_t new_groups = 0;
  for (auto& vm : fresh) {
    auto d = Timed(new_us, [&] { return index.UpsertVm(std::move(vm)); });
    if (!d.ok()) {
      fprintf(stderr, "new VM failed: %s\n", std::string(d.status().message()).c_str());
      return 1;
    }
    new_groups += d->groups.size();
  }
  std::sort(new_us.begin(), new_us.end());

  printf("membership benchmark: %d VMs x 10 tags, %d groups (seed %llu)\n", n_vms, n_groups,
         static_cast<unsigned long long>(seed));
  printf(
      "  group mix: app=%d app+tier=%d team+env=%d owner|region+zone=%d name=%d os=%d nested=%d "
      "static=%d\n",
      kinds[0], kinds[1], kinds[2], kinds[3], kinds[4], kinds[5], kinds[6], kinds[7]);
  printf("  memberships (group,VM) pairs: %zu; (group,vNIC): %zu; (group,address): %zu\n",
         stats.memberships, stats.vnic_refs, stats.address_refs);
  printf("  full evaluation (Load): %.3f s CPU, %.3f s wall\n", load_cpu, load_wall);
  printf(
      "  tag change -> delta over %d changes: median %.1f us, p90 %.1f us, p99 %.1f us, max %.1f "
      "us\n",
      n_changes, pct(0.5), pct(0.9), pct(0.99), lat_us.back());
  printf("  groups changed per tag change: mean %.1f, max %zu\n",
         static_cast<double>(groups_touched) / n_changes, max_touched);
  if (!new_us.empty()) {
    double sum = 0;
    for (double u : new_us) sum += u;
    auto npct = [&](double p) { return Percentile(new_us, p); };
    printf(
        "  new VM (UpsertVm of a VM not loaded) over %zu VMs: mean %.1f us, median %.1f us, p99 "
        "%.1f us; groups joined per VM: mean %.1f\n",
        new_us.size(), sum / new_us.size(), npct(0.5), npct(0.99),
        static_cast<double>(new_groups) / new_us.size());
  }
  printf("  memory: index RSS growth %.1f MiB; index estimate %.1f MiB\n", (rss1 - rss0) / 1024.0,
         stats.approx_bytes / 1048576.0);
  return 0;
}
