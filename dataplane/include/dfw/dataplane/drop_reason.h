// Every reason the dataplane drops a packet, one counter each.
//
// The pipeline returns a DropReason with each verdict; counters are indexed by
// it; the local API reports them by name. Adding a drop path means adding a
// reason here (and its name below): no drop goes uncounted or unnamed.
#pragma once

#include <cstdint>

namespace dfw::dataplane {

enum class DropReason : uint8_t {
  kNone = 0,
  // Frame and steering.
  kRunt,           // shorter than an Ethernet header
  kNoSteeringTag,  // frame on the firewall port without the steering 802.1Q tag
  kUnknownVnic,    // steering id names no vNIC
  kNoRuleset,      // the vNIC has no ruleset yet: fail closed
  kInnerVlan,      // a VM sent a tagged (or double-tagged) frame
  kL2NotIp,        // neither IPv4, IPv6 nor ARP
  // Malformed headers.
  kMalformedIpv4,
  kMalformedIpv6,
  kIpv6ExtChain,  // extension-header chain malformed, too long or truncated
  kMalformedTcp,
  kMalformedUdp,
  kMalformedIcmp,
  kMalformedArp,
  // Fragments.
  kTinyFragment,  // first fragment too short to hold the L4 ports / TCP flags
  kOverlappingFragment,
  kFragmentNoFirst,  // non-first fragment whose first fragment was not seen
  kFragmentTableFull,
  // Spoofguard (egress).
  kSpoofSrcMac,
  kSpoofSrcIp,
  kSpoofArp,
  kSpoofNd,
  // Policy.
  kPolicyDrop,
  kPolicyReject,
  kDefaultRule,
  // Connection tracking.
  kCtInvalid,       // not a valid packet for the connection's state (e.g. TCP out of window)
  kCtNoConnection,  // mid-stream packet with no connection and loose pickup off
  kCtLimitVnic,
  kCtLimitGlobal,
  kIcmpErrorUnrelated,  // ICMP error whose inner header matches no connection
  // Several workers.
  kWorkerHandoffFull,  // read by one worker for another whose ring was full (overload)
  kCount,
};

constexpr const char* DropReasonName(DropReason r) {
  switch (r) {
    case DropReason::kNone:
      return "none";
    case DropReason::kRunt:
      return "runt-frame";
    case DropReason::kNoSteeringTag:
      return "no-steering-tag";
    case DropReason::kUnknownVnic:
      return "unknown-vnic";
    case DropReason::kNoRuleset:
      return "no-ruleset";
    case DropReason::kInnerVlan:
      return "vlan-from-vm";
    case DropReason::kL2NotIp:
      return "l2-not-ip";
    case DropReason::kMalformedIpv4:
      return "malformed-ipv4";
    case DropReason::kMalformedIpv6:
      return "malformed-ipv6";
    case DropReason::kIpv6ExtChain:
      return "ipv6-ext-chain";
    case DropReason::kMalformedTcp:
      return "malformed-tcp";
    case DropReason::kMalformedUdp:
      return "malformed-udp";
    case DropReason::kMalformedIcmp:
      return "malformed-icmp";
    case DropReason::kMalformedArp:
      return "malformed-arp";
    case DropReason::kTinyFragment:
      return "tiny-fragment";
    case DropReason::kOverlappingFragment:
      return "overlapping-fragment";
    case DropReason::kFragmentNoFirst:
      return "fragment-without-first";
    case DropReason::kFragmentTableFull:
      return "fragment-table-full";
    case DropReason::kSpoofSrcMac:
      return "spoof-src-mac";
    case DropReason::kSpoofSrcIp:
      return "spoof-src-ip";
    case DropReason::kSpoofArp:
      return "spoof-arp";
    case DropReason::kSpoofNd:
      return "spoof-nd";
    case DropReason::kPolicyDrop:
      return "policy-drop";
    case DropReason::kPolicyReject:
      return "policy-reject";
    case DropReason::kDefaultRule:
      return "default-rule";
    case DropReason::kCtInvalid:
      return "ct-invalid";
    case DropReason::kCtNoConnection:
      return "ct-no-connection";
    case DropReason::kCtLimitVnic:
      return "ct-limit-vnic";
    case DropReason::kCtLimitGlobal:
      return "ct-limit-global";
    case DropReason::kIcmpErrorUnrelated:
      return "icmp-error-unrelated";
    case DropReason::kWorkerHandoffFull:
      return "worker-handoff-full";
    case DropReason::kCount:
      break;
  }
  return "?";
}

}  // namespace dfw::dataplane
