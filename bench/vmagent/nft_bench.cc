// NftBackend at scale: 10k rules and 100k address set elements in a network
// namespace this program creates (and deletes): full apply, one-element
// deltas through the libnftnl batch (p50/p99), a one-vNIC rule change
// through libnftables, and the same one-element add through the `nft` tool
// (fork/exec) beside it. Run as root:
//   build/bench/vmagent/bench_vmagent_nft [delta_iterations] [nft_iterations]
#include <fcntl.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "dfw/vmagent/nft_backend.h"

using namespace dfw::vmagent;
namespace v1 = dfw::v1;

namespace {

double Ms(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

double Pct(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

int Run(const std::vector<std::string>& argv) {
  const pid_t pid = fork();
  if (pid == 0) {
    std::vector<char*> a;
    for (const auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
    a.push_back(nullptr);
    int devnull = open("/dev/null", O_WRONLY);
    dup2(devnull, 1);
    execvp(a[0], a.data());
    _exit(127);
  }
  int st = 0;
  waitpid(pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

std::string V4(uint32_t a) { return FormatAddr(Family::kV4, Addr{0, a}); }

}  // namespace

int main(int argc, char** argv) {
  const int delta_iters = argc > 1 ? atoi(argv[1]) : 400;
  const int nft_iters = argc > 2 ? atoi(argv[2]) : 10;
  const std::string ns = "dfwb-" + std::to_string(getpid());
  if (Run({"ip", "netns", "add", ns}) != 0) {
    fprintf(stderr, "ip netns add %s failed (root needed)\n", ns.c_str());
    return 1;
  }
  const int fd = open(("/run/netns/" + ns).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) {
    Run({"ip", "netns", "del", ns});
    return 1;
  }
  // The state: one big set (65536 IPv4 /32 + 34464 IPv6 /128, none adjacent
  // = 100000 elements as ranges), 100 small sets, 10000 rules on one vNIC.
  v1::HostDesiredState st;
  st.set_revision(1);
  auto* big = st.add_address_sets();
  big->set_id("g:big");
  for (uint32_t i = 0; i < 65536; ++i) big->add_prefixes(V4(0xc6120000u + 2 * i) + "/32");
  for (uint32_t i = 0; i < 34464; ++i) {
    char b[64];
    snprintf(b, sizeof(b), "2001:db8::%x:%x/128", i / 4096, (i % 4096) * 2);
    big->add_prefixes(b);
  }
  for (int s = 0; s < 100; ++s) {
    auto* a = st.add_address_sets();
    a->set_id("g:s" + std::to_string(s));
    a->add_prefixes(V4(0xc6130000u + 256u * static_cast<uint32_t>(s)) + "/24");
    a->add_prefixes("2001:db8:1:" + std::to_string(s) + "::/64");
  }
  auto* rs = st.add_rulesets();
  rs->set_vnic_id("vm");
  for (uint32_t i = 0; i < 10000; ++i) {
    auto* r = rs->add_rules();
    r->set_rule_num(i + 1);
    r->mutable_sources()->add_address_set_ids(i == 0 ? "g:big" : "g:s" + std::to_string(i % 100));
    r->mutable_destinations()->set_any(true);
    auto* s = r->add_services();
    s->set_protocol(6);
    s->add_destination_ports()->set_first(1000 + i % 50000);
    r->set_direction(i % 2 ? v1::DIRECTION_IN : v1::DIRECTION_OUT);
    r->set_action(i % 3 ? v1::ACTION_ALLOW : v1::ACTION_DROP);
    r->set_stateful(true);
  }
  RenderOptions o;  // table "dfw"
  NftBackend b;
  auto t0 = std::chrono::steady_clock::now();
  auto s = b.ApplyFull(st, {{"vm", "eth0"}}, o);
  const double full_ms = Ms(t0);
  if (!s.ok()) {
    fprintf(stderr, "full apply: %s\n", std::string(s.message()).c_str());
    Run({"ip", "netns", "del", ns});
    return 1;
  }
  size_t nft_rules = 0;
  {
    auto c = b.Counters();
    t0 = std::chrono::steady_clock::now();
    c = b.Counters();
    const double counters_ms = Ms(t0);
    t0 = std::chrono::steady_clock::now();
    auto v = b.Verify();
    const double verify_ms = Ms(t0);
    for (const auto& [num, pb] : c->rules) (void)pb, ++nft_rules;
    printf("counters (libnftnl rule dump): %.1f ms; verify: %.1f ms (%s)\n", counters_ms, verify_ms,
           v.ok() ? "OK" : std::string(v.message()).c_str());
  }
  // One-element deltas: add then remove a /32 in the big set, alternately.
  std::vector<double> total, batch;
  uint64_t rev = 1;
  for (int i = 0; i < delta_iters; ++i) {
    v1::HostDelta d;
    d.set_from_revision(rev);
    d.set_to_revision(rev + 1);
    auto* sd = d.add_address_set_deltas();
    sd->set_id("g:big");
    const std::string p = V4(0xc6120001u + 2 * static_cast<uint32_t>((i / 2) % 65536)) + "/32";
    if (i % 2 == 0) {
      sd->add_added(p);
    } else {
      sd->add_removed(p);
    }
    t0 = std::chrono::steady_clock::now();
    s = b.ApplyDelta(d, {{"vm", "eth0"}});
    total.push_back(Ms(t0));
    if (!s.ok()) {
      fprintf(stderr, "delta: %s\n", std::string(s.message()).c_str());
      break;
    }
    batch.push_back(b.last_delta().elements_ms);
    ++rev;
  }
  // A rule change: the vNIC's 10k rules replaced (one rule's port changed).
  std::vector<double> rule_ms;
  for (int i = 0; i < 5; ++i) {
    v1::HostDelta d;
    d.set_from_revision(rev);
    d.set_to_revision(rev + 1);
    auto* r = d.add_rulesets_set();
    *r = st.rulesets(0);
    r->mutable_rules(5)->mutable_services(0)->mutable_destination_ports(0)->set_first(
        60000 + static_cast<uint32_t>(i));
    t0 = std::chrono::steady_clock::now();
    s = b.ApplyDelta(d, {{"vm", "eth0"}});
    rule_ms.push_back(Ms(t0));
    if (!s.ok()) {
      fprintf(stderr, "rule delta: %s\n", std::string(s.message()).c_str());
      break;
    }
    ++rev;
  }
  // The same one-element add through the nft tool.
  std::vector<double> tool;
  const std::string set = SetName(*b.set_names().Find("g:big"), Family::kV4);
  for (int i = 0; i < nft_iters; ++i) {
    const std::string e =
        V4(0xc6130001u + 2 * static_cast<uint32_t>(i + 40000));  // outside the others
    t0 = std::chrono::steady_clock::now();
    const int rc = Run({"nft", "add", "element", "inet", "dfw", set, "{ " + e + " }"});
    tool.push_back(Ms(t0));
    if (rc != 0) fprintf(stderr, "nft add element exited %d\n", rc);
  }
  printf(
      "\nNftBackend, %u rules (%zu with counters), 100000 elements in one interval set "
      "(65536 IPv4 + 34464 IPv6), 100 small sets; namespace %s\n",
      10000u, nft_rules, ns.c_str());
  printf("%-58s %10s %10s %10s\n", "operation", "p50 ms", "p99 ms", "n");
  printf("%-58s %10.1f %10s %10d\n", "full apply (libnftables, one transaction)", full_ms, "-", 1);
  printf("%-58s %10.2f %10.2f %10zu\n", "1-element delta, ApplyDelta total (libnftnl batch)",
         Pct(total, 0.5), Pct(total, 0.99), total.size());
  printf("%-58s %10.2f %10.2f %10zu\n", "  of which the libnftnl batch (send + ack)",
         Pct(batch, 0.5), Pct(batch, 0.99), batch.size());
  printf("%-58s %10.1f %10.1f %10zu\n", "rule change: 10k-rule vNIC chain replaced (libnftables)",
         Pct(rule_ms, 0.5), Pct(rule_ms, 0.99), rule_ms.size());
  printf("%-58s %10.1f %10.1f %10zu\n", "1-element add via `nft add element` (fork/exec)",
         Pct(tool, 0.5), Pct(tool, 0.99), tool.size());
  close(fd);
  Run({"ip", "netns", "del", ns});
  return 0;
}
