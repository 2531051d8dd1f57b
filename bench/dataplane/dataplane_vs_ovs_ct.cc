// Side by side, in one process and one run: the dfw dataplane pipeline vs
// OVS userspace conntrack (libopenvswitch conntrack_execute), on identical
// pre-built frames in memory, one core (the thread is pinned).
//
//   (a) established fast path, 32 hot UDP flows of one vNIC;
//   (b) 1M concurrent UDP flows of 64 vNICs, random order;
//   (c) new connections/s: every packet a TCP SYN of a new connection, toward
//       64 vNICs whose policy is ClassBench acl1_10k (10k rules); the traffic
//       is drawn from points inside the last rules and matches late rules.
//
// Ours: Pipeline::Process on bursts of 32 — parse, vNIC lookup, spoofguard
// (egress), conntrack, classifier for new flows, verdict, counters, flow
// records — with a VnicTable of vNICs holding MACs, bound IPs and a compiled
// policy that allows the traffic. Frames carry the steering 802.1Q tag (64
// bytes with a 60-byte untagged frame behind it).
//
// OVS: the same frames without the steering tag (60 bytes), as dp_packets
// whose L3/L4 offsets are set once beforehand (as `ovstest test-conntrack
// benchmark` does), through what an OpenFlow conntrack firewall does per rx
// batch: conntrack_execute(zone = the vNIC's, commit=false), then for the
// +new packets conntrack_execute(commit=true) (the ct(commit) after
// recirculation). Per packet OVS's conntrack metadata is reset, as for a
// packet fresh from rx. A second OVS row adds miniflow_extract() per packet
// (dpif-netdev parses every received packet so); OVS's OpenFlow/megaflow
// lookup is not included in either (the OVS side gets no rule lookup at all,
// also in (c)). Each rx batch comes from one vNIC (one zone), as a batch from
// one VM port would in OVS; flows inside a batch are random in (b).
//
// Correctness first: every packet must be forwarded by both sides (ours: no
// drop counter moves; OVS: +est, or +new and committed), and both tables
// must hold the same number of connections. Exit 1 otherwise.
//
// Timing: TSC (__rdtsc) around each burst's processing. Before it, the burst's
// frames are copied into a fixed rx area of 32 frames (not timed, as a NIC's
// DMA would place them; --in-place 1 judges them where they were built
// instead). Flow records are drained every 64 bursts, outside the timed region
// (the daemon drains them on its control thread). Each scenario runs R rounds alternating ours /
// OVS; the median round is reported. Memory per connection: ours = bytes allocated by a ConnTable
// of the same configuration / its capacity; OVS = growth of malloc'd bytes (mallinfo2) while (b)'s
// connections are created / their number.
#include <malloc.h>
#include <sched.h>
#include <x86intrin.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include "dfw/dataplane/classbench.h"
#include "dfw/dataplane/pipeline.h"
#include "dfw/dataplane/ruleset_compiler.h"
#include "ovs_ct_shim.h"

namespace dp = dfw::dataplane;
namespace cb = dfw::dataplane::classbench;

namespace {

constexpr uint32_t kBurst = 32;
constexpr uint32_t kChunk = 64;  // bursts between flow-record drains
// false: each burst is first copied into a fixed 32-frame rx area (untimed,
// as a NIC's DMA places a burst), so the timed work starts, as after an rx,
// with the frames in a small, reused buffer. true (--in-place): frames are
// judged where they were built (every packet then also pays a cache and TLB
// miss on its frame, and OVS one on its dp_packet, in (b) and (c)).
bool g_in_place = false;

uint64_t NowMs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

double TscHz() {
  auto t0 = std::chrono::steady_clock::now();
  uint64_t c0 = __rdtsc();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  uint64_t c1 = __rdtsc();
  auto t1 = std::chrono::steady_clock::now();
  return static_cast<double>(c1 - c0) / std::chrono::duration<double>(t1 - t0).count();
}

size_t MallocBytes() {
  struct mallinfo2 m = mallinfo2();
  return m.uordblks + m.hblkhd;
}

// --- frames ---------------------------------------------------------------

using Bytes = std::vector<uint8_t>;
void Put16(Bytes& b, uint16_t v) {
  b.push_back(v >> 8);
  b.push_back(v & 0xff);
}
void Put32(Bytes& b, uint32_t v) {
  Put16(b, v >> 16);
  Put16(b, v & 0xffff);
}
uint16_t Csum(const uint8_t* p, size_t n, uint32_t sum = 0) {
  for (size_t i = 0; i + 1 < n; i += 2) sum += static_cast<uint32_t>(p[i] << 8 | p[i + 1]);
  if (n & 1) sum += static_cast<uint32_t>(p[n - 1] << 8);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum);
}

struct Mac {
  uint8_t b[6];
};
Mac VnicMac(uint16_t v) {
  return Mac{{0x52, 0x54, 0x00, 0x00, static_cast<uint8_t>(v >> 8), static_cast<uint8_t>(v)}};
}
const Mac kRouterMac{{0x52, 0x54, 0x00, 0xff, 0xff, 0xfe}};
uint32_t VnicIp(uint16_t v) { return 0xC6120000u | v; }  // 198.18.x.y

// One IPv4 packet (with correct IP, and TCP, checksums), framed twice.
struct Flow {
  uint16_t vnic = 1;
  bool ingress = false;  // toward the VM
  uint8_t proto = 17;
  uint32_t src = 0, dst = 0;
  uint16_t sport = 0, dport = 0;
  uint32_t seq = 0;
};

Bytes IpPacket(const Flow& f) {
  Bytes l4;
  if (f.proto == 17) {
    Put16(l4, f.sport);
    Put16(l4, f.dport);
    Put16(l4, 8 + 18);
    Put16(l4, 0);
    l4.insert(l4.end(), 18, 0);
  } else {
    Put16(l4, f.sport);
    Put16(l4, f.dport);
    Put32(l4, f.seq);
    Put32(l4, 0);
    l4.push_back(5 << 4);
    l4.push_back(0x02);  // SYN
    Put16(l4, 64240);
    Put32(l4, 0);
    Bytes ph;
    Put32(ph, f.src);
    Put32(ph, f.dst);
    Put16(ph, 6);
    Put16(ph, static_cast<uint16_t>(l4.size()));
    uint32_t s = 0;
    for (size_t i = 0; i < ph.size(); i += 2) s += static_cast<uint32_t>(ph[i] << 8 | ph[i + 1]);
    uint16_t c = Csum(l4.data(), l4.size(), s);
    l4[16] = c >> 8;
    l4[17] = c & 0xff;
  }
  Bytes ip;
  ip.push_back(0x45);
  ip.push_back(0);
  Put16(ip, static_cast<uint16_t>(20 + l4.size()));
  Put16(ip, 0);
  Put16(ip, 0x4000);
  ip.push_back(64);
  ip.push_back(f.proto);
  Put16(ip, 0);
  Put32(ip, f.src);
  Put32(ip, f.dst);
  uint16_t c = Csum(ip.data(), 20);
  ip[10] = c >> 8;
  ip[11] = c & 0xff;
  ip.insert(ip.end(), l4.begin(), l4.end());
  return ip;
}

// Frames of both sides, same order: ours (tagged) and OVS's (untagged).
struct FrameSet {
  static constexpr size_t kStride = 64;
  size_t n = 0;
  std::unique_ptr<uint8_t[]> ours_buf, ovs_buf;
  std::vector<const uint8_t*> ours, ovs;
  std::vector<uint16_t> ours_len, ovs_len;
  std::vector<uint16_t> zone;

  explicit FrameSet(const std::vector<Flow>& flows) : n(flows.size()) {
    ours_buf.reset(new (std::align_val_t(64)) uint8_t[n * kStride]());
    ovs_buf.reset(new (std::align_val_t(64)) uint8_t[n * kStride]());
    for (size_t i = 0; i < n; ++i) {
      const Flow& f = flows[i];
      Bytes ip = IpPacket(f);
      const Mac vm = VnicMac(f.vnic);
      const Mac& src = f.ingress ? kRouterMac : vm;
      const Mac& dst = f.ingress ? vm : kRouterMac;
      Bytes e(dst.b, dst.b + 6), t;
      e.insert(e.end(), src.b, src.b + 6);
      t = e;
      Put16(t, 0x8100);
      Put16(t, static_cast<uint16_t>(f.vnic | (f.ingress ? dp::kSteerIngressBit : 0)));
      Put16(t, 0x0800);
      Put16(e, 0x0800);
      t.insert(t.end(), ip.begin(), ip.end());
      e.insert(e.end(), ip.begin(), ip.end());
      if (e.size() < 60) e.resize(60, 0);  // Ethernet minimum (without FCS)
      if (t.size() < 64) t.resize(64, 0);
      std::memcpy(&ours_buf[i * kStride], t.data(), std::min(t.size(), kStride));
      std::memcpy(&ovs_buf[i * kStride], e.data(), std::min(e.size(), kStride));
      ours.push_back(&ours_buf[i * kStride]);
      ovs.push_back(&ovs_buf[i * kStride]);
      ours_len.push_back(static_cast<uint16_t>(t.size()));
      ovs_len.push_back(static_cast<uint16_t>(e.size()));
      zone.push_back(f.vnic);
    }
  }
};

// --- policies -------------------------------------------------------------

// (a), (b): the vNIC may send UDP to 198.19.0.0/16 on 53, 80, 443, 5432; a few
// unrelated rules before it; default drop.
dp::RulesetSpec SmallPolicy() {
  dp::RulesetSpec s;
  s.address_sets = {{"svc", {dp::IpPrefix::V4(0xC6130000u, 16)}},
                    {"mgmt", {dp::IpPrefix::V4(0x0A000000u, 8)}}};
  auto rule = [](uint32_t num, std::string dst, uint8_t proto, std::vector<dp::PortRange> ports,
                 dp::Action a) {
    dp::RuleSpec r;
    r.rule_num = num;
    if (!dst.empty()) r.dst = dp::EndpointSpec{false, {dst}, false};
    dp::ServiceSpec sv;
    sv.proto = proto;
    sv.dports = std::move(ports);
    r.services = {sv};
    r.direction = dp::RuleDirection::kOut;
    r.action = a;
    return r;
  };
  s.rules.push_back(rule(1, "mgmt", 6, {{22, 22}}, dp::Action::kDrop));
  s.rules.push_back(rule(2, "", 6, {{23, 23}}, dp::Action::kReject));
  s.rules.push_back(
      rule(3, "svc", 17, {{53, 53}, {80, 80}, {443, 443}, {5432, 5432}}, dp::Action::kAllow));
  return s;
}

std::shared_ptr<const dp::VnicPolicy> CompilePolicy(const dp::RulesetSpec& spec) {
  dp::RulesetCompiler compiler;
  dp::Status st = compiler.Compile(spec);
  if (!st.ok()) {
    std::fprintf(stderr, "compile: %s\n", st.message().c_str());
    std::exit(1);
  }
  auto pol = std::make_shared<dp::VnicPolicy>();
  pol->ruleset = compiler.ruleset();
  for (const auto& r : spec.rules) {
    dp::RuleMeta m;
    m.rule_num = r.rule_num;
    m.action = r.action;
    pol->rules.push_back(m);
  }
  pol->default_action = spec.default_action;
  pol->generation = 1;
  return pol;
}

void PublishVnics(dp::VnicTable* t, uint16_t n, std::shared_ptr<const dp::VnicPolicy> pol) {
  for (uint16_t v = 1; v <= n; ++v) {
    auto st = std::make_unique<dp::VnicState>();
    st->id = "vm-" + std::to_string(v) + "-eth0";
    st->local_id = v;
    std::memcpy(st->mac, VnicMac(v).b, 6);
    st->bound_v4 = {VnicIp(v)};
    st->policy = pol;
    t->Publish(std::move(st));
  }
}

// --- the two sides --------------------------------------------------------

struct Result {
  uint64_t packets = 0, cycles = 0, forwarded = 0, fresh = 0;
};

// A run: bursts given as (zone, 32 frame indices).
struct Bursts {
  std::vector<uint16_t> zone;
  std::vector<uint32_t> idx;  // kBurst per burst
  size_t size() const { return zone.size(); }
};

struct Ours {
  dp::VnicTable vnics{1};
  std::unique_ptr<dp::Pipeline> pipe;
  Ours(const dp::PipelineConfig& c, uint16_t nvnics, std::shared_ptr<const dp::VnicPolicy> pol) {
    PublishVnics(&vnics, nvnics, std::move(pol));
    pipe = std::make_unique<dp::Pipeline>(&vnics, c, 0);
  }
  uint64_t Drops() {
    uint64_t d = 0;
    for (int r = 0; r < static_cast<int>(dp::DropReason::kCount); ++r)
      d += pipe->counters().drops[r].Get();
    return d;
  }
  Result Run(const FrameSet& fs, const Bursts& b) {
    Result res;
    const uint8_t* frames[kBurst];
    uint16_t lens[kBurst];
    dp::Verdict v[kBurst];
    alignas(64) static uint8_t replies[kBurst][dp::kMaxReplyLen];
    dp::FlowEvent ev;
    uint64_t fwd0 = pipe->counters().forwarded.Get();
    alignas(64) static uint8_t rx[kBurst][FrameSet::kStride];
    for (size_t c0 = 0; c0 < b.size(); c0 += kChunk) {
      const size_t c1 = std::min(b.size(), c0 + kChunk);
      const uint64_t now = NowMs();
      for (size_t k = c0; k < c1; ++k) {
        const uint32_t* ix = &b.idx[k * kBurst];
        for (uint32_t i = 0; i < kBurst; ++i) {
          lens[i] = fs.ours_len[ix[i]];
          if (g_in_place) {
            frames[i] = fs.ours[ix[i]];
          } else {
            std::memcpy(rx[i], fs.ours[ix[i]], FrameSet::kStride);
            frames[i] = rx[i];
          }
        }
        const uint64_t t0 = __rdtsc();
        pipe->Process(frames, lens, kBurst, now, v, replies);
        res.cycles += __rdtsc() - t0;
      }
      while (pipe->flows().Pop(&ev)) {
      }
    }
    res.packets = b.size() * kBurst;
    res.forwarded = pipe->counters().forwarded.Get() - fwd0;
    return res;
  }
};

struct Ovs {
  dfw_ovs_ct* ct = nullptr;
  dfw_ovs_pkts* pkts = nullptr;
  Ovs(uint32_t max_conns, const FrameSet& fs) {
    ct = dfw_ovs_ct_create(max_conns);
    pkts = dfw_ovs_pkts_create(fs.ovs.data(), fs.ovs_len.data(), fs.n);
    if (!pkts) {
      std::fprintf(stderr, "OVS: a frame is not IPv4\n");
      std::exit(1);
    }
  }
  ~Ovs() {
    dfw_ovs_pkts_destroy(pkts);
    dfw_ovs_ct_destroy(ct);
  }
  Result Run(const Bursts& b, bool extract) {
    Result res;
    for (size_t c0 = 0; c0 < b.size(); c0 += kChunk) {
      const size_t c1 = std::min(b.size(), c0 + kChunk);
      const long long now = static_cast<long long>(NowMs());
      uint64_t out = 0, fresh = 0;
      for (size_t k = c0; k < c1; ++k) {
        uint32_t nn;
        if (g_in_place) {
          const uint64_t t0 = __rdtsc();
          out += dfw_ovs_ct_firewall(ct, pkts, &b.idx[k * kBurst], kBurst, b.zone[k], now, extract,
                                     &nn);
          res.cycles += __rdtsc() - t0;
        } else {
          dfw_ovs_rx(pkts, &b.idx[k * kBurst], kBurst);
          const uint64_t t0 = __rdtsc();
          out += dfw_ovs_ct_firewall_rx(ct, pkts, kBurst, b.zone[k], now, extract, &nn);
          res.cycles += __rdtsc() - t0;
        }
        fresh += nn;
      }
      res.forwarded += out;
      res.fresh += fresh;
    }
    res.packets = b.size() * kBurst;
    return res;
  }
};

// --- reporting ------------------------------------------------------------

double g_hz = 0;
int g_failures = 0;

struct Row {
  std::string name;
  std::vector<double> cpp;  // cycles per packet, per round
  double Median() const {
    std::vector<double> s = cpp;
    std::sort(s.begin(), s.end());
    return s.empty() ? 0 : s[s.size() / 2];
  }
  std::string Spread() const {
    auto [lo, hi] = std::minmax_element(cpp.begin(), cpp.end());
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.0f-%.0f", *lo, *hi);
    return buf;
  }
};

void Check(bool ok, const std::string& what) {
  if (!ok) {
    std::fprintf(stderr, "CHECK FAILED: %s\n", what.c_str());
    ++g_failures;
  }
}

void Report(const char* title, const std::vector<Row>& rows, const char* unit, double goal_ratio,
            double goal_cpp) {
  std::printf("\n%s\n", title);
  std::printf("  %-34s %10s %12s %10s %12s\n", "side", "cycles/pkt", "(min-max)", unit,
              "ratio vs ours");
  const double ours = rows[0].Median();
  for (const Row& r : rows) {
    const double m = r.Median();
    std::printf("  %-34s %10.0f %12s %10.2f %12.2f\n", r.name.c_str(), m, r.Spread().c_str(),
                g_hz / m / 1e6, m / ours);
  }
  const double ovs = rows[1].Median();
  if (goal_ratio > 0)
    std::printf("  goal: ours >= %.0fx OVS ct-only: %.2fx -> %s\n", goal_ratio, ovs / ours,
                ovs / ours >= goal_ratio ? "MET" : "MISSED");
  if (goal_cpp > 0)
    std::printf("  goal: ours <= %.0f cycles/packet: %.0f -> %s\n", goal_cpp, ours,
                ours <= goal_cpp ? "MET" : "MISSED");
  std::fflush(stdout);
}

// --- scenarios ------------------------------------------------------------

struct Options {
  uint32_t rounds = 3;
  uint64_t a_packets = 10'000'000;
  uint32_t b_flows = 1u << 20;
  uint64_t b_packets = 5'000'000;
  uint64_t c_conns = 1'000'000;
  uint16_t vnics = 64;
  int cpu = 1;
  std::string classbench = DFW_CLASSBENCH_DIR "/acl1_10k";
  std::string only;
};

uint32_t Pow2(uint64_t n) {
  uint32_t p = 1;
  while (p < n) p <<= 1;
  return p;
}

// UDP flows from vNICs 1..nv (flow f belongs to vNIC f % nv + 1); unique per
// vNIC by destination.
std::vector<Flow> UdpFlows(uint32_t n, uint16_t nv, std::mt19937_64& rng) {
  static const uint16_t kPorts[] = {53, 80, 443, 5432};
  std::vector<Flow> flows(n);
  for (uint32_t f = 0; f < n; ++f) {
    Flow& x = flows[f];
    x.vnic = static_cast<uint16_t>(f % nv + 1);
    const uint32_t k = f / nv;
    x.proto = 17;
    x.src = VnicIp(x.vnic);
    x.dst = 0xC6130000u | (k & 0xffff);
    x.sport = static_cast<uint16_t>(1024 + (k >> 16) * 4096 + rng() % 4096);
    x.dport = kPorts[rng() % 4];
  }
  return flows;
}

// Every flow once, in bursts from one vNIC each (the last burst of a vNIC
// is padded with repeats of its flows).
Bursts WarmupBursts(uint32_t n, uint16_t nv) {
  Bursts b;
  for (uint16_t v = 0; v < nv; ++v) {
    std::vector<uint32_t> mine;
    for (uint32_t f = v; f < n; f += nv) mine.push_back(f);
    for (size_t i = 0; i < mine.size(); i += kBurst) {
      b.zone.push_back(static_cast<uint16_t>(v + 1));
      for (uint32_t j = 0; j < kBurst; ++j)
        b.idx.push_back(mine[i + j < mine.size() ? i + j : (i + j) % mine.size()]);
    }
  }
  return b;
}

dp::PipelineConfig PipeConfig(uint64_t conns, uint16_t nv) {
  dp::PipelineConfig pc;
  pc.conntrack.max_connections = Pow2(conns + conns / 4);
  pc.conntrack.max_per_zone = Pow2(conns / nv * 2 + 1024);
  pc.max_rule_num = 1u << 14;
  return pc;
}

size_t ConnTableBytes(const dp::ConnTableConfig& c, uint32_t* capacity) {
  size_t before = MallocBytes();
  auto t = std::make_unique<dp::ConnTable>(c);
  size_t after = MallocBytes();
  *capacity = t->capacity();
  return after - before;
}

// (a) and (b): established traffic.
void Established(const Options& o, const char* title, uint32_t nflows, uint16_t nv,
                 uint64_t packets, bool random_order, double goal_cpp, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<Flow> flows = UdpFlows(nflows, nv, rng);
  // Frames [nflows, 2 nflows): one reply per flow, toward the VM. The warm-up
  // sends every flow once and its reply once: OVS's conntrack then calls the
  // UDP connection established (+est; unreplied UDP stays +new there and
  // would take the ct(commit) pass too); ours tracks it as replied.
  for (uint32_t f = 0; f < nflows; ++f) {
    Flow r = flows[f];
    r.ingress = true;
    std::swap(r.src, r.dst);
    std::swap(r.sport, r.dport);
    flows.push_back(r);
  }
  FrameSet fs(flows);
  Bursts warm = WarmupBursts(nflows, nv);
  {
    Bursts replies = WarmupBursts(nflows, nv);
    for (uint32_t& i : replies.idx) i += nflows;
    warm.zone.insert(warm.zone.end(), replies.zone.begin(), replies.zone.end());
    warm.idx.insert(warm.idx.end(), replies.idx.begin(), replies.idx.end());
  }
  Bursts timed;
  const size_t nb = (packets + kBurst - 1) / kBurst;
  const uint32_t per = nflows / nv;
  for (size_t k = 0; k < nb; ++k) {
    const uint16_t v = static_cast<uint16_t>(random_order ? rng() % nv : k % nv);
    timed.zone.push_back(static_cast<uint16_t>(v + 1));
    for (uint32_t j = 0; j < kBurst; ++j) {
      const uint32_t within = random_order ? static_cast<uint32_t>(rng() % per)
                                           : static_cast<uint32_t>((k / nv * kBurst + j) % per);
      timed.idx.push_back(within * nv + v);
    }
  }

  dp::PipelineConfig pc = PipeConfig(nflows, nv);
  Ours ours(pc, nv, CompilePolicy(SmallPolicy()));
  size_t m0 = MallocBytes();
  Ovs ovs(Pow2(nflows) * 2, fs);
  Result w1 = ours.Run(fs, warm);
  Result w2 = ovs.Run(warm, false);
  size_t ovs_bytes = MallocBytes() - m0;  // dp_packets + connections
  ovs_bytes -= fs.n * dfw_ovs_dp_packet_size();
  Check(w1.forwarded == w1.packets && ours.Drops() == 0, "ours forwards every warm-up packet");
  Check(w2.forwarded == w2.packets, "OVS forwards every warm-up packet");
  Check(ours.pipe->conntrack().size() == nflows, "ours holds every flow");
  Check(dfw_ovs_ct_nconns(ovs.ct) == nflows, "OVS holds every flow");
  Check(w2.fresh >= nflows, "OVS committed every flow");

  Row r_ours{"dfw Pipeline (whole pipeline)"}, r_ovs{"OVS conntrack_execute"},
      r_ovsx{"OVS miniflow_extract + ct"};
  for (uint32_t round = 0; round < o.rounds; ++round) {
    Result a = ours.Run(fs, timed);
    Result b = ovs.Run(timed, false);
    Result c = ovs.Run(timed, true);
    Check(a.forwarded == a.packets, "ours forwards every packet");
    Check(b.forwarded == b.packets && b.fresh == 0, "OVS: every packet +est");
    Check(c.forwarded == c.packets && c.fresh == 0, "OVS(+extract): every packet +est");
    r_ours.cpp.push_back(static_cast<double>(a.cycles) / a.packets);
    r_ovs.cpp.push_back(static_cast<double>(b.cycles) / b.packets);
    r_ovsx.cpp.push_back(static_cast<double>(c.cycles) / c.packets);
  }
  Check(ours.Drops() == 0, "ours: drop counters are zero");
  Check(ours.pipe->conntrack().size() == nflows && dfw_ovs_ct_nconns(ovs.ct) == nflows,
        "tables still hold every flow");
  char t[256];
  std::snprintf(t, sizeof t, "%s: %u flows, %u vNICs, %llu packets/round, %u rounds", title, nflows,
                nv, static_cast<unsigned long long>(timed.size() * kBurst), o.rounds);
  Report(t, {r_ours, r_ovs, r_ovsx}, "Mpps", 2.0, goal_cpp);
  if (nflows >= 100000) {
    uint32_t cap;
    size_t ours_bytes = ConnTableBytes(pc.conntrack, &cap);
    std::printf(
        "  bytes per connection: ours %.0f (ConnTable %.1f MiB / capacity %u, "
        "preallocated); OVS %.0f (malloc growth %.1f MiB / %u connections)\n",
        static_cast<double>(ours_bytes) / cap, ours_bytes / 1048576.0, cap,
        static_cast<double>(ovs_bytes) / nflows, ovs_bytes / 1048576.0, nflows);
  }
}

// (c): new connections.
void NewConnections(const Options& o, uint64_t seed) {
  std::string text, err;
  std::vector<cb::Filter> filters;
  if (!cb::ReadFile(o.classbench, &text, &err) ||
      !cb::ParseFilters(text, o.classbench, &filters, &err)) {
    std::fprintf(stderr, "%s\n", err.c_str());
    std::exit(1);
  }
  dp::RulesetSpec spec = cb::ToRulesetSpec(filters);
  auto pol = CompilePolicy(spec);
  const dp::Ruleset& rs = *pol->ruleset;
  const uint32_t nrules = rs.num_rules();
  // Late rules: filters of the last quarter admitting TCP; keep points whose
  // first match is in the second half of the ruleset.
  std::vector<cb::Filter> late;
  for (size_t i = filters.size() * 3 / 4; i < filters.size(); ++i)
    if (filters[i].proto_any || filters[i].proto == 6) late.push_back(filters[i]);
  std::mt19937_64 rng(seed);
  std::vector<Flow> flows;
  flows.reserve(o.c_conns);
  std::unordered_set<uint64_t> seen;
  std::vector<uint32_t> matched;
  uint64_t attempt = 0;
  const uint16_t nv = o.vnics;
  while (flows.size() < o.c_conns) {
    std::vector<dp::FlowKey> keys = cb::TraceInsideFilters(late, 65536, seed + ++attempt);
    for (dp::FlowKey& k : keys) {
      if (flows.size() >= o.c_conns) break;
      k.proto = 6;
      k.dir = dp::Direction::kIn;
      // Hosts and ports a TCP connection can have (OVS's conntrack refuses
      // port 0; both sides skip martians here).
      auto martian = [](uint32_t a) {
        return (a >> 24) == 0 || (a >> 24) == 127 || (a >> 29) == 7 || (a >> 28) == 14;
      };
      if (k.sport == 0 || k.dport == 0 || martian(static_cast<uint32_t>(k.src.lo)) ||
          martian(static_cast<uint32_t>(k.dst.lo)) || k.src.lo == k.dst.lo)
        continue;
      const uint32_t idx = rs.ClassifyOne(k);
      if (idx == dp::Ruleset::kNoMatch || idx < nrules / 2) continue;
      const uint16_t v = static_cast<uint16_t>((flows.size() / kBurst) % nv + 1);
      const uint64_t h = (static_cast<uint64_t>(k.src.lo) * 0x9e3779b97f4a7c15ull) ^
                         (static_cast<uint64_t>(k.dst.lo) << 32 | k.sport << 16 | k.dport) ^
                         (static_cast<uint64_t>(v) << 52);
      // Same (src, dst, ports) at most once per vNIC zone.
      if (!seen.insert(h).second) continue;
      Flow f;
      f.vnic = v;
      f.ingress = true;
      f.proto = 6;
      f.src = static_cast<uint32_t>(k.src.lo);
      f.dst = static_cast<uint32_t>(k.dst.lo);
      f.sport = k.sport;
      f.dport = k.dport;
      f.seq = static_cast<uint32_t>(rng());
      flows.push_back(f);
      matched.push_back(idx);
    }
    if (attempt > 4096) {
      std::fprintf(stderr, "(c): cannot draw %llu distinct late-rule connections\n",
                   static_cast<unsigned long long>(o.c_conns));
      std::exit(1);
    }
  }
  std::vector<uint32_t> sorted = matched;
  std::sort(sorted.begin(), sorted.end());
  const uint64_t n = flows.size() / kBurst * kBurst;
  flows.resize(n);
  FrameSet fs(flows);
  Bursts bursts;
  for (size_t k = 0; k < n / kBurst; ++k) {
    bursts.zone.push_back(fs.zone[k * kBurst]);
    for (uint32_t j = 0; j < kBurst; ++j)
      bursts.idx.push_back(static_cast<uint32_t>(k * kBurst + j));
  }
  dp::PipelineConfig pc = PipeConfig(n, nv);
  Ours ours(pc, nv, pol);
  Ovs ovs(Pow2(n) * 2, fs);
  Row r_ours{"dfw Pipeline (whole pipeline)"}, r_ovs{"OVS ct lookup + ct(commit)"},
      r_ovsx{"OVS miniflow_extract + ct + commit"};
  // Round 0 warms (page faults, malloc arenas) and is not reported.
  for (uint32_t round = 0; round <= o.rounds; ++round) {
    ours.pipe->conntrack().Flush(-1);
    Result a = ours.Run(fs, bursts);
    Check(a.forwarded == a.packets, "(c) ours forwards every SYN");
    Check(ours.pipe->conntrack().size() == n, "(c) ours holds every connection");
    dfw_ovs_ct_flush(ovs.ct);
    Result b = ovs.Run(bursts, false);
    Check(b.forwarded == b.packets && b.fresh == n, "(c) OVS commits every SYN");
    Check(dfw_ovs_ct_nconns(ovs.ct) == n, "(c) OVS holds every connection");
    dfw_ovs_ct_flush(ovs.ct);
    Result c = ovs.Run(bursts, true);
    Check(c.forwarded == c.packets && c.fresh == n, "(c) OVS(+extract) commits every SYN");
    if (round == 0) continue;
    r_ours.cpp.push_back(static_cast<double>(a.cycles) / a.packets);
    r_ovs.cpp.push_back(static_cast<double>(b.cycles) / b.packets);
    r_ovsx.cpp.push_back(static_cast<double>(c.cycles) / c.packets);
  }
  Check(ours.Drops() == 0, "(c) ours: drop counters are zero");
  char t[320];
  std::snprintf(t, sizeof t,
                "(c) new connections (TCP SYN, each a new connection), %llu per round, %u "
                "rounds; %u vNICs with %s (%u rules); first match: median rule %u, min %u",
                static_cast<unsigned long long>(n), o.rounds, nv, o.classbench.c_str(), nrules,
                sorted[sorted.size() / 2] + 1, sorted.front() + 1);
  Report(t, {r_ours, r_ovs, r_ovsx}, "M conn/s", 0, 0);
  const double ours_cps = g_hz / r_ours.Median();
  std::printf("  goal: ours >= 1M new connections/s per core: %.2fM -> %s\n", ours_cps / 1e6,
              ours_cps >= 1e6 ? "MET" : "MISSED");
  std::printf("  ruleset: %.1f MiB lookup tables (shared by the %u vNICs)\n",
              rs.memory_bytes() / 1048576.0, nv);
}

int Usage() {
  std::fprintf(stderr,
               "usage: bench_dataplane_vs_ovs_ct [--rounds R] [--a-packets N] [--b-flows N]\n"
               "         [--b-packets N] [--c-conns N] [--vnics N] [--cpu N] [--classbench FILE]\n"
               "         [--only a|b|c] [--in-place 0|1]\n"
               "       bench_dataplane_vs_ovs_ct --tsc-hz\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (argc == 2 && std::string(argv[1]) == "--tsc-hz") {  // for dataplane_vs_ovs_anchor.sh
    std::printf("%.0f\n", TscHz());
    return 0;
  }
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (i + 1 >= argc) return Usage();
    const char* v = argv[++i];
    if (a == "--rounds")
      o.rounds = static_cast<uint32_t>(std::stoul(v));
    else if (a == "--a-packets")
      o.a_packets = std::stoull(v);
    else if (a == "--b-flows")
      o.b_flows = static_cast<uint32_t>(std::stoul(v));
    else if (a == "--b-packets")
      o.b_packets = std::stoull(v);
    else if (a == "--c-conns")
      o.c_conns = std::stoull(v);
    else if (a == "--vnics")
      o.vnics = static_cast<uint16_t>(std::stoul(v));
    else if (a == "--cpu")
      o.cpu = std::stoi(v);
    else if (a == "--classbench")
      o.classbench = v;
    else if (a == "--only")
      o.only = v;
    else if (a == "--in-place")
      g_in_place = std::string(v) == "1";
    else
      return Usage();
  }
  if (o.rounds < 1 || o.vnics < 1 || o.vnics > 2047) return Usage();
  if (o.cpu >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(o.cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) std::perror("sched_setaffinity");
  }
  g_hz = TscHz();
  std::printf(
      "bench_dataplane_vs_ovs_ct: TSC %.3f GHz, pinned to cpu %d; cycles are TSC "
      "cycles; median of %u rounds (min-max shown)\n",
      g_hz / 1e9, o.cpu, o.rounds);
  std::printf(
      "ours: tagged 64-byte frames through Pipeline::Process (bursts of 32); OVS: the "
      "same packets untagged (60 bytes) as dp_packets through conntrack_execute; %s\n",
      g_in_place ? "frames judged in place"
                 : "each burst copied to a 32-frame rx area first (untimed)");
  if (o.only.empty() || o.only == "a")
    Established(o, "(a) established fast path, 32 hot flows", 32, 1, o.a_packets, false, 0, 1);
  if (o.only.empty() || o.only == "b")
    Established(o, "(b) concurrent flows, random order", o.b_flows, o.vnics, o.b_packets, true, 150,
                2);
  if (o.only.empty() || o.only == "c") NewConnections(o, 3);
  if (g_failures) {
    std::printf("\n%d correctness checks FAILED\n", g_failures);
    return 1;
  }
  std::printf("\nall correctness checks passed\n");
  return 0;
}
