// bench_conn_export: how long the dataplane's worker is busy exporting and
// importing one vNIC's connections (a VM's move between hosts): ESTABLISHED
// TCP connections of one zone, in a table of the daemon's default size
// (2^20 entries) that also holds other zones' connections, exported with
// ConnTable::ExportZone and imported with ConnTable::ImportAll into another
// zone of a second table. Prints ms and ns per entry (median of --runs).
//
//   bench_conn_export [--runs N] [--others N]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "dfw/dataplane/conn_table.h"

namespace {

using namespace dfw::dataplane;
using Clock = std::chrono::steady_clock;

// An established TCP connection: 198.18.x.y:port -> 198.19.0.1:443.
ConnExport Established(uint32_t i) {
  ConnExport c;
  c.proto = 6;
  c.src = Ip128{0, (198u << 24 | 18u << 16) + (i >> 12)};
  c.dst = Ip128{0, 198u << 24 | 19u << 16 | 1};
  c.sport = static_cast<uint16_t>(1024 + (i & 0xfff));
  c.dport = 443;
  c.state = ConnState::kEstablished;
  c.rule_num = 10;
  c.revalidate = true;
  c.expires_in_ms = 3600'000;
  c.packets = 10;
  c.bytes = 5000;
  c.tcp[0] = ConnTcpPeer{1000 + i, 70000 + i,          65535,
                         7,        kConnTcpWscaleSeen, ConnTcpPeerState::kEstablished};
  c.tcp[1] = ConnTcpPeer{9000 + i, 80000 + i,          65535,
                         7,        kConnTcpWscaleSeen, ConnTcpPeerState::kEstablished};
  return c;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double Ms(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

}  // namespace

int main(int argc, char** argv) {
  int runs = 5;
  uint32_t others = 100'000;  // other zones' connections in the source table
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--runs") {
      runs = std::max(1, std::atoi(argv[i + 1]));
    } else if (a == "--others") {
      others = static_cast<uint32_t>(std::strtoul(argv[i + 1], nullptr, 10));
    } else {
      std::fprintf(stderr, "usage: bench_conn_export [--runs N] [--others N]\n");
      return 2;
    }
  }
  constexpr uint16_t kFrom = 5, kTo = 9;
  constexpr uint64_t kNow = 1000;
  std::printf("%-8s %12s %12s %12s %12s\n", "entries", "export ms", "ns/entry", "import ms",
              "ns/entry");
  for (uint32_t n : {10'000u, 100'000u}) {
    std::vector<double> ex, im;
    for (int r = 0; r < runs; ++r) {
      ConnTableConfig cfg;  // the daemon's defaults: 2^20 entries, 2^18 per vNIC
      ConnTable from(cfg), to(cfg);
      std::vector<ConnExport> load;
      for (uint32_t i = 0; i < n; ++i) load.push_back(Established(i));
      if (from.ImportAll(kFrom, load.data(), load.size(), kNow).imported != n) return 1;
      std::vector<ConnExport> other;
      for (uint32_t i = 0; i < others; ++i) other.push_back(Established(n + i));
      from.ImportAll(kFrom + 1, other.data(), other.size(), kNow);

      std::vector<ConnExport> out;
      out.reserve(n);
      const auto t0 = Clock::now();
      const uint32_t total = from.ExportZone(kFrom, kNow, 0, &out);
      const auto t1 = Clock::now();
      const ConnImportResult res = to.ImportAll(kTo, out.data(), out.size(), kNow);
      const auto t2 = Clock::now();
      if (total != n || out.size() != n || res.imported != n || to.zone_size(kTo) != n) {
        std::fprintf(stderr, "CHECK FAILED: exported %zu of %u, imported %u\n", out.size(), total,
                     res.imported);
        return 1;
      }
      ex.push_back(Ms(t0, t1));
      im.push_back(Ms(t1, t2));
    }
    const double e = Median(ex), i = Median(im);
    std::printf("%-8u %12.2f %12.1f %12.2f %12.1f\n", n, e, e * 1e6 / n, i, i * 1e6 / n);
  }
  std::printf("(table of 2^20 entries, %u connections of another zone beside; median of %d)\n",
              others, runs);
  return 0;
}
