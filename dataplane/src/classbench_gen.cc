#include "dfw/dataplane/classbench_gen.h"

#include <array>
#include <random>
#include <tuple>
#include <utility>

namespace dfw::dataplane::classbench {
namespace {

struct ShapeInfo {
  Shape shape;
  const char* name;
  uint32_t default_count;
};

constexpr ShapeInfo kShapes[] = {
    {Shape::kWideRanges, "wide-ranges", 5000},
    {Shape::kWildcards, "wildcards", 2000},
    {Shape::kOverlap, "overlap", 5000},
    {Shape::kFew, "few", 32},
    {Shape::kMany, "many", 30000},
    {Shape::kDfw, "dfw", 4000},
};

uint32_t Mask(uint32_t a, uint8_t len) { return len == 0 ? 0 : a & (~0u << (32 - len)); }

struct Service {
  uint8_t proto;  // 0 = any
  uint16_t lo, hi;
};

// The services dfw policies use (proto 0 = any protocol, any port).
constexpr Service kServices[] = {
    {6, 22, 22},     {6, 80, 80},       {6, 443, 443},     {6, 3306, 3306},   {6, 5432, 5432},
    {6, 6379, 6379}, {6, 8080, 8090},   {6, 9000, 9100},   {17, 53, 53},      {6, 53, 53},
    {17, 123, 123},  {17, 161, 162},    {6, 1024, 65535},  {17, 1024, 65535}, {1, 0, 65535},
    {6, 2379, 2380}, {6, 10250, 10259}, {6, 30000, 32767}, {0, 0, 65535},
};

class Gen {
 public:
  explicit Gen(uint64_t seed) : rng_(seed) {
    for (auto& a : anchors_) a = static_cast<uint32_t>(rng_());
    anchors_[0] = 0;
    for (auto& n : nets16_) n = static_cast<uint32_t>(rng_()) & 0xffff0000u;
  }

  uint64_t U(uint64_t n) { return rng_() % n; }
  bool P(uint32_t percent) { return U(100) < percent; }

  // An anchor with up to 31 low bits scrambled: prefixes around it nest and
  // overlap.
  uint32_t Around() {
    uint32_t a = anchors_[U(anchors_.size())];
    const uint32_t bits = static_cast<uint32_t>(U(32));
    if (bits > 0) a ^= static_cast<uint32_t>(rng_()) & (~0u >> (32 - bits));
    return a;
  }
  static void SetSrc(Filter* f, uint32_t a, uint8_t len) {
    f->src = Mask(a, len);
    f->src_len = len;
  }
  static void SetDst(Filter* f, uint32_t a, uint8_t len) {
    f->dst = Mask(a, len);
    f->dst_len = len;
  }
  // A range of `width` + 1 ports at an arbitrary start.
  std::pair<uint16_t, uint16_t> Range(uint32_t width) {
    const uint32_t lo = static_cast<uint32_t>(U(65536 - width));
    return {static_cast<uint16_t>(lo), static_cast<uint16_t>(lo + width)};
  }
  void Proto(Filter* f, uint32_t p_tcp, uint32_t p_udp) {
    const uint32_t r = static_cast<uint32_t>(U(100));
    f->proto_any = r >= p_tcp + p_udp;
    f->proto = r < p_tcp ? 6 : (r < p_tcp + p_udp ? 17 : 0);
  }

  Filter Wide() {
    Filter f;
    SetSrc(&f, Around(), P(20) ? 0 : static_cast<uint8_t>(8 + U(17)));
    SetDst(&f, Around(), static_cast<uint8_t>(8 + U(25)));
    if (!P(30)) std::tie(f.sport_lo, f.sport_hi) = Range(1000 + static_cast<uint32_t>(U(39000)));
    if (!P(10)) std::tie(f.dport_lo, f.dport_hi) = Range(1000 + static_cast<uint32_t>(U(39000)));
    Proto(&f, 50, 40);
    return f;
  }

  Filter Wildcard() {
    Filter f;
    const uint32_t fields = 1 + static_cast<uint32_t>(U(2));
    uint32_t used = 0;
    while (static_cast<uint32_t>(__builtin_popcount(used)) < fields) {
      const uint32_t field = static_cast<uint32_t>(U(5));
      if (used & (1u << field)) continue;
      used |= 1u << field;
      switch (field) {
        case 0:
          SetSrc(&f, static_cast<uint32_t>(rng_()), static_cast<uint8_t>(8 + U(25)));
          break;
        case 1:
          SetDst(&f, static_cast<uint32_t>(rng_()), static_cast<uint8_t>(8 + U(25)));
          break;
        case 2:
          std::tie(f.sport_lo, f.sport_hi) = Range(P(60) ? 0 : static_cast<uint32_t>(U(1000)));
          break;
        case 3:
          std::tie(f.dport_lo, f.dport_hi) = Range(P(60) ? 0 : static_cast<uint32_t>(U(1000)));
          break;
        default: {
          static constexpr uint8_t kProtos[] = {6, 17, 1, 47, 50};
          f.proto_any = false;
          f.proto = kProtos[U(std::size(kProtos))];
        }
      }
    }
    return f;
  }

  uint8_t OverlapLen() { return static_cast<uint8_t>(P(50) ? U(33) : 16 + U(17)); }
  void OverlapPorts(uint16_t* lo, uint16_t* hi) {
    const uint32_t r = static_cast<uint32_t>(U(10));
    if (r < 5) return;
    std::tie(*lo, *hi) = Range(r < 8 ? 0 : static_cast<uint32_t>(U(65536)));
  }
  Filter Overlap() {
    Filter f;
    SetSrc(&f, Around(), OverlapLen());
    SetDst(&f, Around(), OverlapLen());
    OverlapPorts(&f.sport_lo, &f.sport_hi);
    OverlapPorts(&f.dport_lo, &f.dport_hi);
    Proto(&f, 45, 35);
    return f;
  }

  // ACL-like: addresses inside a few hundred /16s, /20-/32, mostly /24 and /32.
  uint8_t AclLen() {
    const uint32_t r = static_cast<uint32_t>(U(10));
    return static_cast<uint8_t>(r < 3 ? 24 : (r < 7 ? 32 : 20 + U(13)));
  }
  uint32_t AclAddr() { return nets16_[U(nets16_.size())] | static_cast<uint32_t>(U(65536)); }
  Filter Acl() {
    Filter f;
    if (!P(5)) SetSrc(&f, AclAddr(), AclLen());
    if (!P(3)) SetDst(&f, AclAddr(), AclLen());
    if (P(10)) std::tie(f.sport_lo, f.sport_hi) = Range(static_cast<uint32_t>(U(65536)));
    const uint32_t r = static_cast<uint32_t>(U(10));
    if (r < 5) {
      std::tie(f.dport_lo, f.dport_hi) = Range(0);
    } else if (r < 7) {
      std::tie(f.dport_lo, f.dport_hi) = Range(static_cast<uint32_t>(U(P(50) ? 64 : 65536)));
    }
    Proto(&f, 60, 30);
    return f;
  }

  std::vector<Filter> Dfw(uint32_t count);

 private:
  std::mt19937_64 rng_;
  std::array<uint32_t, 8> anchors_{};
  std::array<uint32_t, 256> nets16_{};
};

// Groups as the controller's address sets: 60 groups, most of 1-32 /32
// hosts drawn from two or three /24s of a tenant /16, some a subnet or two;
// policy rules between two groups (or any) with one to three services,
// expanded member x member x service (at most 512 filters per rule).
std::vector<Filter> Gen::Dfw(uint32_t count) {
  struct Group {
    std::vector<std::pair<uint32_t, uint8_t>> members;
  };
  const uint32_t tenant = 0x0a000000u | (static_cast<uint32_t>(U(256)) << 16);
  std::vector<Group> groups(60);
  for (Group& g : groups) {
    if (P(15)) {
      const uint32_t subnets = 1 + static_cast<uint32_t>(U(2));
      for (uint32_t i = 0; i < subnets; ++i) {
        static constexpr uint8_t kLens[] = {16, 20, 22, 24, 24, 26, 28};
        const uint8_t len = kLens[U(std::size(kLens))];
        g.members.emplace_back(Mask(tenant | static_cast<uint32_t>(U(65536)), len), len);
      }
      continue;
    }
    uint32_t nets[3];
    for (uint32_t& n : nets) n = tenant | (static_cast<uint32_t>(U(256)) << 8);
    const uint32_t hosts = 1 + static_cast<uint32_t>(U(1 + U(32)));
    for (uint32_t i = 0; i < hosts; ++i) {
      g.members.emplace_back(nets[U(3)] | static_cast<uint32_t>(1 + U(254)), 32);
    }
  }
  const Group any{{{0, 0}}};
  std::vector<Filter> out;
  while (out.size() < count) {
    const Group& src = P(15) ? any : groups[U(groups.size())];
    const Group& dst = P(5) ? any : groups[U(groups.size())];
    std::vector<Service> svcs(1 + U(3));
    for (Service& s : svcs) s = kServices[U(std::size(kServices))];
    if (src.members.size() * dst.members.size() * svcs.size() > 512) continue;
    for (const auto& [sa, sl] : src.members) {
      for (const auto& [da, dl] : dst.members) {
        for (const Service& s : svcs) {
          Filter f;
          SetSrc(&f, sa, sl);
          SetDst(&f, da, dl);
          f.proto_any = s.proto == 0;
          f.proto = s.proto;
          f.dport_lo = s.lo;
          f.dport_hi = s.hi;
          out.push_back(f);
        }
      }
    }
  }
  out.resize(count);
  return out;
}

}  // namespace

const std::vector<Shape>& AllShapes() {
  static const std::vector<Shape> all = [] {
    std::vector<Shape> v;
    for (const ShapeInfo& i : kShapes) v.push_back(i.shape);
    return v;
  }();
  return all;
}

const char* ShapeName(Shape s) {
  for (const ShapeInfo& i : kShapes) {
    if (i.shape == s) return i.name;
  }
  return "?";
}

bool ParseShape(const std::string& name, Shape* out) {
  for (const ShapeInfo& i : kShapes) {
    if (name == i.name) {
      *out = i.shape;
      return true;
    }
  }
  return false;
}

uint32_t DefaultCount(Shape s) {
  for (const ShapeInfo& i : kShapes) {
    if (i.shape == s) return i.default_count;
  }
  return 1000;
}

std::vector<Filter> GenerateFilters(Shape shape, uint32_t count, uint64_t seed) {
  if (count == 0) count = DefaultCount(shape);
  // Each shape draws from its own stream: seed 1 of one shape is unrelated to
  // seed 1 of another.
  Gen g(seed * 0x9e3779b97f4a7c15ull + static_cast<uint64_t>(shape) + 1);
  if (shape == Shape::kDfw) return g.Dfw(count);
  std::vector<Filter> out;
  out.reserve(count);
  for (uint32_t i = 0; i < count; ++i) {
    // The enum's order: wide-ranges, wildcards, overlap, then ACL-like (few
    // mixes all four).
    const uint64_t kind = shape == Shape::kFew ? g.U(4) : static_cast<uint64_t>(shape);
    out.push_back(kind == 0   ? g.Wide()
                  : kind == 1 ? g.Wildcard()
                  : kind == 2 ? g.Overlap()
                              : g.Acl());
  }
  return out;
}

}  // namespace dfw::dataplane::classbench
