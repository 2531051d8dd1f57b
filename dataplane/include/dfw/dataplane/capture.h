// CaptureTable: one-shot captures of what the pipeline does to one flow's
// next frame (dfwctl trace --live, dfwctl probe; dataplane.proto
// ArmCapture).
//
// What. The control thread arms a capture: a filter (a vNIC, a direction,
// optionally the protocol, addresses and ports) and a deadline. The first
// frame a worker judges that meets it is recorded with its verdict — the
// stage that decided (Stage, pipeline.h), the drop reason, the deciding
// rule — and the capture is over. A capture never changes a verdict.
//
// How. kSlots slots, each with an atomic state word (the slot's generation
// in the high bits, its state in the low two). A worker looks at the slots
// only when the count of armed slots is nonzero (one relaxed load per
// burst); then, for each frame, it compares the frame with each armed
// slot's filter, and claims a match by compare-and-swap of the state word
// it read (armed -> claimed), so one frame wins a capture, writes the
// result and publishes it (claimed -> met, release). A frame meets every
// armed capture whose filter it matches (two operators tracing one flow
// both see it). A filter is written
// only into a free slot, and a slot is freed (its generation advanced)
// before it is written again after one grace period of the VnicTable
// (VnicTable::Synchronize): no worker still reads the filter it replaces.
//
// Thread safety. Arm/Poll/Cancel/Expire: the control thread only (one, the
// caller serialises them). Armed/Offer: any number of workers, each inside
// its VnicTable read-side section (Enter ... Leave).
// Per packet: no allocation, lock, exception, virtual call or log line;
// nothing at all while no capture is armed.
#pragma once

#include <atomic>
#include <cstdint>
#include <optional>

#include "dfw/dataplane/drop_reason.h"
#include "dfw/dataplane/packet_parser.h"
#include "dfw/dataplane/rule_model.h"

namespace dfw::dataplane {

class VnicTable;

// Where the pipeline decided a frame (dataplane.proto CaptureStage).
enum class Stage : uint8_t {
  kNone = 0,
  kParse,              // malformed
  kNoRuleset,          // unknown vNIC, or no ruleset yet: fail closed
  kSpoofguard,         // egress: not the vNIC's MAC or address
  kAddressResolution,  // ARP, ND: passed
  kFragment,           // a non-first fragment: its first fragment's verdict
  kConntrack,          // part of a tracked connection, or invalid for it
  kRule,               // a new flow, decided by a rule
  kDefaultRule,        // a new flow, decided by the vNIC's default
};

struct CaptureFilter {
  uint16_t local_id = 0;
  Direction dir = Direction::kOut;
  uint8_t proto = 0;  // 0: any
  Family family = Family::kV4;
  bool has_src = false, has_dst = false;
  Ip128 src, dst;                 // as ParsedPacket's (IPv4 in lo)
  uint16_t sport = 0, dport = 0;  // 0: any
};

// What a frame met (Stage and verdict) and the frame's flow.
struct CaptureHit {
  bool forward = false;
  DropReason reason = DropReason::kNone;
  Stage stage = Stage::kNone;
  bool audit = false;     // an audit-mode rule would have denied it
  uint32_t rule_num = 0;  // kRule: the deciding rule
  Family family = Family::kV4;
  uint8_t proto = 0;
  Ip128 src, dst;
  uint16_t sport = 0, dport = 0;
  uint32_t frame_len = 0;
  uint32_t worker = 0;
  uint64_t time_ms = 0;  // the pipeline's clock
};

class CaptureTable {
 public:
  static constexpr uint32_t kSlots = 16;

  // `vnics`: whose grace period makes a freed slot's filter unread.
  explicit CaptureTable(VnicTable* vnics) : vnics_(vnics) {}

  // ---- control thread
  // Arms a capture until `deadline_ms` (the workers' clock); its handle, or
  // nullopt when all kSlots are in use.
  std::optional<uint32_t> Arm(const CaptureFilter& f, uint64_t deadline_ms);
  enum class State { kFree, kArmed, kMet, kExpired };
  struct Status {
    State state = State::kFree;
    CaptureFilter filter;
    CaptureHit hit;  // kMet
    uint64_t deadline_ms = 0;
  };
  // The capture's state; kExpired once `now_ms` is past its deadline
  // unmet (the slot is then disarmed). kFree: no such capture (never armed,
  // or released).
  Status Poll(uint32_t handle, uint64_t now_ms);
  // Disarms (if still armed) and frees the slot; the handle is then unknown.
  void Release(uint32_t handle);
  uint32_t armed() const { return armed_.load(std::memory_order_relaxed); }

  // ---- workers
  // Nonzero while any capture is armed: one load per burst.
  bool Armed() const noexcept { return armed_.load(std::memory_order_relaxed) != 0; }
  // `p` was judged `hit` (its verdict and stage filled in; the flow fields
  // are taken from `p` here): each armed capture it meets records it.
  void Offer(const ParsedPacket& p, CaptureHit hit) noexcept;

 private:
  // State word: generation << 2 | kind.
  static constexpr uint64_t kFreeKind = 0, kArmedKind = 1, kClaimedKind = 2, kMetKind = 3;
  static uint64_t KindOf(uint64_t w) { return w & 3; }
  static bool Meets(const CaptureFilter& f, const ParsedPacket& p) noexcept;

  struct alignas(64) Slot {
    std::atomic<uint64_t> word{0};
    CaptureFilter filter;  // written while free; read while armed
    CaptureHit hit;        // written by the claiming worker
    // Control thread only.
    uint64_t deadline_ms = 0;
    bool in_use = false;   // from Arm to Release
    bool expired = false;  // disarmed unmet at its deadline
    bool dirty = false;    // armed since the last grace period
  };
  // A handle is the slot index and its generation's low bits.
  static uint32_t HandleOf(uint32_t slot, uint64_t word) {
    return static_cast<uint32_t>(((word >> 2) & 0x0fffffff) << 4 | slot);
  }
  Slot* SlotOf(uint32_t handle, uint64_t* word);

  VnicTable* vnics_;
  std::atomic<uint32_t> armed_{0};
  Slot slots_[kSlots];
};

}  // namespace dfw::dataplane
