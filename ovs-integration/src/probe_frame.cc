#include "dfw/ovs/probe_frame.h"

#include <algorithm>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace dfw::ovs {
namespace {

constexpr size_t kEthLen = 14, kIpv4Len = 20, kIpv6Len = 40, kTcpLen = 24, kUdpLen = 8,
                 kIcmpLen = 8;

void Put16(std::vector<uint8_t>& f, size_t at, uint16_t v) {
  f[at] = static_cast<uint8_t>(v >> 8);
  f[at + 1] = static_cast<uint8_t>(v);
}
void Put32(std::vector<uint8_t>& f, size_t at, uint32_t v) {
  Put16(f, at, static_cast<uint16_t>(v >> 16));
  Put16(f, at + 2, static_cast<uint16_t>(v));
}

// The one's-complement sum of big-endian 16-bit words, not yet folded.
uint32_t Sum(const uint8_t* p, size_t len, uint32_t sum = 0) {
  for (size_t i = 0; i + 1 < len; i += 2) sum += static_cast<uint32_t>(p[i] << 8 | p[i + 1]);
  if (len % 2) sum += static_cast<uint32_t>(p[len - 1] << 8);
  return sum;
}
uint16_t Fold(uint32_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum);
}

std::string FamilyOf(size_t len) { return len == 4 ? "IPv4" : "IPv6"; }

absl::Status CheckSpec(const ProbeFrameSpec& s) {
  for (const auto& [name, ip] :
       {std::pair<const char*, const std::vector<uint8_t>*>{"src_ip", &s.src_ip},
        {"dst_ip", &s.dst_ip}}) {
    if (ip->size() != 4 && ip->size() != 16) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": ", ip->size(), " bytes, not 4 or 16"));
    }
  }
  if (s.src_ip.size() != s.dst_ip.size()) {
    return absl::InvalidArgumentError(absl::StrCat("dst_ip: an ", FamilyOf(s.dst_ip.size()),
                                                   " address, but src_ip is an ",
                                                   FamilyOf(s.src_ip.size()), " one"));
  }
  if (s.src_mac[0] & 1) {
    return absl::InvalidArgumentError(
        "src_mac: a group (multicast or broadcast) address cannot be a frame's source");
  }
  if (std::all_of(s.src_mac.begin(), s.src_mac.end(), [](uint8_t b) { return b == 0; })) {
    return absl::InvalidArgumentError("src_mac: 00:00:00:00:00:00 cannot be a frame's source");
  }
  const bool v6 = s.src_ip.size() == 16;
  switch (s.protocol) {
    case kProtoTcp:
    case kProtoUdp: {
      const char* l4 = s.protocol == kProtoTcp ? "TCP" : "UDP";
      if (s.src_port == 0) return absl::InvalidArgumentError(absl::StrCat("src_port: 0 in ", l4));
      if (s.dst_port == 0) return absl::InvalidArgumentError(absl::StrCat("dst_port: 0 in ", l4));
      break;
    }
    case kProtoIcmp:
      if (v6) {
        return absl::InvalidArgumentError(
            "protocol: 1 (ICMP) with IPv6 addresses; IPv6 uses ICMPv6 (58)");
      }
      break;
    case kProtoIcmpv6:
      if (!v6) {
        return absl::InvalidArgumentError(
            "protocol: 58 (ICMPv6) with IPv4 addresses; IPv4 uses ICMP (1)");
      }
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("protocol: ", static_cast<int>(s.protocol),
                                                     " is not TCP, UDP, ICMP or ICMPv6"));
  }
  return absl::OkStatus();
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

absl::StatusOr<std::vector<uint8_t>> BuildProbeFrame(const ProbeFrameSpec& s) {
  if (absl::Status st = CheckSpec(s); !st.ok()) return st;
  const bool v6 = s.src_ip.size() == 16;
  const size_t l3_len = v6 ? kIpv6Len : kIpv4Len;
  size_t l4_len = 0;
  switch (s.protocol) {
    case kProtoTcp:
      l4_len = kTcpLen;
      break;
    case kProtoUdp:
      l4_len = kUdpLen + kProbeUdpPayload.size();
      break;
    default:  // ICMP, ICMPv6
      l4_len = kIcmpLen + kProbeUdpPayload.size();
      break;
  }
  std::vector<uint8_t> f(kEthLen + l3_len + l4_len, 0);

  // Ethernet II.
  std::copy(s.dst_mac.begin(), s.dst_mac.end(), f.begin());
  std::copy(s.src_mac.begin(), s.src_mac.end(), f.begin() + 6);
  Put16(f, 12, v6 ? 0x86dd : 0x0800);

  // IP.
  const size_t ip = kEthLen, l4 = kEthLen + l3_len;
  uint32_t pseudo = 0;  // the pseudo-header's sum (TCP, UDP, ICMPv6)
  if (v6) {
    f[ip] = 0x60;  // version 6, traffic class 0, flow label 0
    Put16(f, ip + 4, static_cast<uint16_t>(l4_len));
    f[ip + 6] = s.protocol;
    f[ip + 7] = kProbeTtl;
    std::copy(s.src_ip.begin(), s.src_ip.end(), f.begin() + ip + 8);
    std::copy(s.dst_ip.begin(), s.dst_ip.end(), f.begin() + ip + 24);
    pseudo = Sum(&f[ip + 8], 32);
    pseudo += static_cast<uint32_t>(l4_len) + s.protocol;  // upper-layer length, next header
  } else {
    f[ip] = 0x45;  // version 4, IHL 5
    Put16(f, ip + 2, static_cast<uint16_t>(l3_len + l4_len));
    // A nonzero identification that differs between probes of different
    // flows (it only matters to fragment reassembly, and DF is set).
    uint16_t id = static_cast<uint16_t>(s.src_port ^ (s.dst_port << 1) ^ s.icmp_seq ^ 0x6466);
    if (id == 0) id = 1;
    Put16(f, ip + 4, id);
    Put16(f, ip + 6, 0x4000);  // DF, offset 0
    f[ip + 8] = kProbeTtl;
    f[ip + 9] = s.protocol;
    std::copy(s.src_ip.begin(), s.src_ip.end(), f.begin() + ip + 12);
    std::copy(s.dst_ip.begin(), s.dst_ip.end(), f.begin() + ip + 16);
    Put16(f, ip + 10, Fold(Sum(&f[ip], kIpv4Len)));
    pseudo = Sum(&f[ip + 12], 8);
    pseudo += static_cast<uint32_t>(l4_len) + s.protocol;
  }

  // L4.
  switch (s.protocol) {
    case kProtoTcp:
      Put16(f, l4, s.src_port);
      Put16(f, l4 + 2, s.dst_port);
      Put32(f, l4 + 4, kProbeTcpSeq);
      f[l4 + 12] = (kTcpLen / 4) << 4;  // data offset 6, no flags there
      f[l4 + 13] = 0x02;                // SYN
      Put16(f, l4 + 14, kProbeTcpWindow);
      f[l4 + 20] = 2;  // option MSS, length 4
      f[l4 + 21] = 4;
      Put16(f, l4 + 22, kProbeTcpMss);
      Put16(f, l4 + 16, Fold(Sum(&f[l4], l4_len, pseudo)));
      break;
    case kProtoUdp: {
      Put16(f, l4, s.src_port);
      Put16(f, l4 + 2, s.dst_port);
      Put16(f, l4 + 4, static_cast<uint16_t>(l4_len));
      std::copy(kProbeUdpPayload.begin(), kProbeUdpPayload.end(), f.begin() + l4 + kUdpLen);
      const uint16_t sum = Fold(Sum(&f[l4], l4_len, pseudo));
      Put16(f, l4 + 6, sum == 0 ? 0xffff : sum);  // 0 means "no checksum" (RFC 768)
      break;
    }
    default: {  // ICMP / ICMPv6 echo request
      f[l4] = s.protocol == kProtoIcmp ? 8 : 128;
      Put16(f, l4 + 4, s.icmp_id != 0 ? s.icmp_id : s.src_port);
      Put16(f, l4 + 6, s.icmp_seq);
      std::copy(kProbeUdpPayload.begin(), kProbeUdpPayload.end(), f.begin() + l4 + kIcmpLen);
      // ICMP (IPv4) has no pseudo-header; ICMPv6 does (RFC 4443 §2.3).
      Put16(f, l4 + 2, Fold(Sum(&f[l4], l4_len, s.protocol == kProtoIcmp ? 0 : pseudo)));
      break;
    }
  }
  return f;
}

absl::StatusOr<std::array<uint8_t, 6>> ParseMac(std::string_view text) {
  std::array<uint8_t, 6> mac{};
  auto bad = [&] {
    return absl::InvalidArgumentError(absl::StrCat("MAC address '", std::string(text),
                                                   "': expected six ':'-separated hex bytes"));
  };
  if (text.size() != 17) return bad();
  for (size_t i = 0; i < 6; ++i) {
    const int hi = HexDigit(text[3 * i]), lo = HexDigit(text[3 * i + 1]);
    if (hi < 0 || lo < 0 || (i < 5 && text[3 * i + 2] != ':')) return bad();
    mac[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return mac;
}

}  // namespace dfw::ovs
