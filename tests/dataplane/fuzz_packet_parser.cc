// libFuzzer target for the packet parser (scripts/fuzz-parser.sh runs it).
// Checks more than "no crash": whatever parses must be self-consistent.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "dfw/dataplane/packet_parser.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 65535) return 0;
  dfw::dataplane::ParsedPacket p;
  auto r = dfw::dataplane::ParseFrame(data, static_cast<uint32_t>(size), &p);
  if (r == dfw::dataplane::DropReason::kNone && p.l3 != dfw::dataplane::L3Kind::kArp) {
    // Offsets and lengths stay inside the frame.
    if (p.l4_offset > size || p.l4_offset + p.l4_len > size) abort();
    if (p.l3_offset + p.ip_len > size) abort();
  }
  return 0;
}
