// The dataplane's conformance cases (tests/dataplane/pipeline_test.cc) run
// against the guest agent's nftables rules in a real kernel: the same
// expectations where the kernel can meet them, and where it cannot, the
// kernel's behaviour asserted and the difference named (docs/architecture.md,
// "vmagent: conformance with the dataplane").
//
// Setup (as root; every namespace is the test's own and always removed):
//   dfwc-<pid>-vm   eth0 198.18.0.1/24 2001:db8::1/64  <- the guest, rules loaded here
//   dfwc-<pid>-peer p0   198.18.0.2/24 2001:db8::2/64  <- the other end
// joined by a veth. Real sockets on both sides where that is simplest; frames
// crafted on the peer with an AF_PACKET socket come from 198.18.0.10 /
// 2001:db8::10, an address no stack owns (the guest has a permanent
// neighbour entry for it), so the peer's kernel never answers for them and
// the test sees exactly what the guest sent back.
//
// The policy (vNIC "vm0" on eth0), rule numbers as the dataplane suite's:
//   10 IN  tcp 5432 from g:peer   allow stateful   (handshake; the db's rule 20)
//   11 IN  tcp 6000               allow stateless  (replies classified again)
//   12 IN  tcp 6001 + 13 OUT tcp sport 6001, both stateless
//   30 OUT icmp echo / icmpv6 echo allow stateful
//   40 OUT udp 53 reject, 41 IN udp 53 reject
//   50 OUT tcp 8443 reject, 51 IN tcp 8443 reject
//   60 OUT udp 9999 allow stateful, 61 IN udp 9999 allow stateful
//   default: drop, logged
#include <fcntl.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <optional>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include <google/protobuf/text_format.h>
#include <gtest/gtest.h>

#include "conformance_wire.h"
#include "dfw/vmagent/conntrack.h"
#include "dfw/vmagent/flow_monitor.h"
#include "dfw/vmagent/nft_backend.h"
#include "dfw/vmagent/nft_ruleset.h"
#include "dfw/vmagent/revalidate.h"
#include "nft_test_netns.h"

namespace dfw::vmagent {
namespace {

using namespace conformance;
using dataplane::Ip128;
using dataplane::testing::Ext8;
using dataplane::testing::IcmpHeader;
using dataplane::testing::Ip4;
using dataplane::testing::Ipv4;
using dataplane::testing::Ipv6;
using dataplane::testing::Tcp;
using dataplane::testing::TcpHeader;
using dataplane::testing::UdpHeader;
using testing::EnterNetns;
using testing::Sh;
namespace tcpflag = dataplane::tcpflag;

constexpr uint32_t kVm4 = Ip4(198, 18, 0, 1), kCrafted4 = Ip4(198, 18, 0, 10);
const Ip128 kVm6{0x20010db800000000ull, 1}, kCrafted6{0x20010db800000000ull, 0x10};
const char* const kVm4Text = "198.18.0.1";
const char* const kPeer4Text = "198.18.0.2";
const char* const kCrafted4Text = "198.18.0.10";
const char* const kVm6Text = "2001:db8::1";
const char* const kPeer6Text = "2001:db8::2";
const char* const kCrafted6Text = "2001:db8::10";
const Mac kVmMac{0x02, 0, 0, 0, 0, 0x01}, kPeerMac{0x02, 0, 0, 0, 0, 0x02};

using Clock = std::chrono::steady_clock;

bool Eventually(const std::function<bool()>& cond, int ms = 2000) {
  const auto end = Clock::now() + std::chrono::milliseconds(ms);
  while (Clock::now() < end) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return cond();
}

struct Fd {
  int fd = -1;
  Fd() = default;
  explicit Fd(int f) : fd(f) {}
  Fd(Fd&& o) noexcept : fd(o.fd) { o.fd = -1; }
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd = o.fd;
      o.fd = -1;
    }
    return *this;
  }
  ~Fd() { reset(); }
  void reset() {
    if (fd >= 0) close(fd);
    fd = -1;
  }
  bool ok() const { return fd >= 0; }
};

// The two namespaces and the veth. Removes both when destroyed, whatever
// happened before (also when set-up failed half-way).
struct Topology {
  std::string vm, peer;
  int vm_fd = -1, peer_fd = -1;
  bool ok = false;
  std::string error;

  Topology() {
    vm = "dfwc-" + std::to_string(getpid()) + "-vm";
    peer = "dfwc-" + std::to_string(getpid()) + "-peer";
    Remove();
    const std::vector<std::string> steps = {
        "ip netns add " + vm,
        "ip netns add " + peer,
        InVm("ip link set lo up"),
        InPeer("ip link set lo up"),
        InVm("ip link add eth0 address 02:00:00:00:00:01 type veth peer name p0 address "
             "02:00:00:00:00:02 netns " +
             peer),
        // Neither side routes (a forwarding peer would answer for the crafted
        // addresses); no redirects, no router solicitations.
        InVm("sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0 "
             "net.ipv4.conf.all.send_redirects=0 net.ipv6.conf.all.accept_ra=0 "
             "net.ipv6.conf.default.accept_ra=0"),
        InPeer("sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0 "
               "net.ipv4.conf.all.send_redirects=0 net.ipv6.conf.all.accept_ra=0 "
               "net.ipv6.conf.default.accept_ra=0"),
        InVm("ip addr add 198.18.0.1/24 dev eth0"),
        InVm("ip addr add 2001:db8::1/64 dev eth0 nodad"),
        InPeer("ip addr add 198.18.0.2/24 dev p0"),
        InPeer("ip addr add 2001:db8::2/64 dev p0 nodad"),
        InVm("ip link set eth0 up"),
        InPeer("ip link set p0 up"),
        InVm("ip neigh replace 198.18.0.10 lladdr 02:00:00:00:00:02 dev eth0 nud permanent"),
        InVm("ip neigh replace 2001:db8::10 lladdr 02:00:00:00:00:02 dev eth0 nud permanent"),
        InVm("ip neigh replace 198.18.0.2 lladdr 02:00:00:00:00:02 dev eth0 nud permanent"),
        InVm("ip neigh replace 2001:db8::2 lladdr 02:00:00:00:00:02 dev eth0 nud permanent"),
        InPeer("ip neigh replace 198.18.0.1 lladdr 02:00:00:00:00:01 dev p0 nud permanent"),
        InPeer("ip neigh replace 2001:db8::1 lladdr 02:00:00:00:00:01 dev p0 nud permanent"),
    };
    for (const auto& s : steps) {
      std::string out;
      if (Sh(s, &out) != 0) {
        error = s + ": " + out;
        return;
      }
    }
    vm_fd = open(("/run/netns/" + vm).c_str(), O_RDONLY | O_CLOEXEC);
    peer_fd = open(("/run/netns/" + peer).c_str(), O_RDONLY | O_CLOEXEC);
    ok = vm_fd >= 0 && peer_fd >= 0;
    if (!ok) error = "open /run/netns";
  }
  ~Topology() {
    if (vm_fd >= 0) close(vm_fd);
    if (peer_fd >= 0) close(peer_fd);
    Remove();
  }
  Topology(const Topology&) = delete;
  Topology& operator=(const Topology&) = delete;

  void Remove() {
    Sh("ip netns del " + vm);
    Sh("ip netns del " + peer);
  }
  std::string InVm(const std::string& cmd) const { return "ip netns exec " + vm + " " + cmd; }
  std::string InPeer(const std::string& cmd) const { return "ip netns exec " + peer + " " + cmd; }
};

sockaddr_storage SockAddr(int family, const std::string& ip, uint16_t port, socklen_t* len) {
  sockaddr_storage ss{};
  if (family == AF_INET) {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    inet_pton(AF_INET, ip.c_str(), &a->sin_addr);
    *len = sizeof(sockaddr_in);
  } else {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(port);
    inet_pton(AF_INET6, ip.c_str(), &a->sin6_addr);
    *len = sizeof(sockaddr_in6);
  }
  return ss;
}

// Waits for `events` on fd; true when they came within ms.
bool PollFor(int fd, short events, int ms) {
  pollfd p{fd, events, 0};
  return poll(&p, 1, ms) > 0 && (p.revents & (events | POLLERR | POLLHUP));
}

// recv with a deadline: bytes read, 0 at EOF, -errno on error, -EAGAIN on timeout.
ssize_t RecvWithin(int fd, void* buf, size_t n, int ms) {
  if (!PollFor(fd, POLLIN, ms)) return -EAGAIN;
  ssize_t r = recv(fd, buf, n, MSG_DONTWAIT);
  return r < 0 ? -errno : r;
}

std::string RecvText(int fd, int ms = 2000) {
  char buf[256];
  ssize_t r = RecvWithin(fd, buf, sizeof(buf), ms);
  return r > 0 ? std::string(buf, static_cast<size_t>(r)) : "";
}

// The peer's AF_PACKET socket on p0: sends crafted frames, reads what the
// guest sends (frames the peer itself sent are skipped).
class Tap {
 public:
  explicit Tap(int peer_ns_fd) {
    EnterNetns in(peer_ns_fd);
    if (!in.ok()) return;
    fd_ = Fd(socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL)));
    const unsigned idx = if_nametoindex("p0");
    if (!fd_.ok() || idx == 0) return;
    sockaddr_ll sll{};
    sll.sll_family = AF_PACKET;
    sll.sll_protocol = htons(ETH_P_ALL);
    sll.sll_ifindex = static_cast<int>(idx);
    if (bind(fd_.fd, reinterpret_cast<sockaddr*>(&sll), sizeof(sll)) != 0) fd_.reset();
  }
  bool ok() const { return fd_.ok(); }

  bool Send4(const Bytes& ip) { return SendFrame(Ether(kVmMac, kPeerMac, 0x0800, ip)); }
  bool Send6(const Bytes& ip) { return SendFrame(Ether(kVmMac, kPeerMac, 0x86dd, ip)); }
  bool SendFrame(const Bytes& f) {
    return send(fd_.fd, f.data(), f.size(), 0) == static_cast<ssize_t>(f.size());
  }

  // The first frame from the guest that matches, within ms.
  std::optional<Seen> Await(const std::function<bool(const Seen&)>& match, int ms = 2000) {
    const auto end = Clock::now() + std::chrono::milliseconds(ms);
    uint8_t buf[2048];
    for (;;) {
      const int left = static_cast<int>(
          std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now()).count());
      if (left < 0 || !PollFor(fd_.fd, POLLIN, left)) return std::nullopt;
      sockaddr_ll from{};
      socklen_t fl = sizeof(from);
      ssize_t n =
          recvfrom(fd_.fd, buf, sizeof(buf), MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&from), &fl);
      if (n <= 0 || from.sll_pkttype == PACKET_OUTGOING) continue;
      auto s = ParseFrame(buf, static_cast<size_t>(n));
      if (s && match(*s)) return s;
    }
  }
  // Reads everything queued (frames from before the next step).
  void Drain() {
    uint8_t buf[2048];
    while (recv(fd_.fd, buf, sizeof(buf), MSG_DONTWAIT) > 0) {
    }
  }

 private:
  Fd fd_;
};

// --- the policy ---

v1::CompiledRule* AddRule(v1::VNicRuleset* rs, uint32_t num, v1::Direction dir, v1::Action a,
                          uint32_t proto, uint16_t dport, bool stateful = true) {
  auto* r = rs->add_rules();
  r->set_rule_num(num);
  r->set_policy_id("conformance");
  r->set_rule_id("r" + std::to_string(num));
  r->mutable_sources()->set_any(true);
  r->mutable_destinations()->set_any(true);
  auto* s = r->add_services();
  s->set_protocol(proto);
  if (dport) s->add_destination_ports()->set_first(dport);
  r->set_direction(dir);
  r->set_action(a);
  r->set_stateful(stateful);
  return r;
}

v1::HostDesiredState BaseState() {
  v1::HostDesiredState st;
  st.set_revision(1);
  auto* peer = st.add_address_sets();
  peer->set_id("g:peer");
  peer->add_prefixes("198.18.0.0/24");
  peer->add_prefixes("2001:db8::/64");
  auto* rs = st.add_rulesets();
  rs->set_vnic_id("vm0");
  {
    auto* r = AddRule(rs, 10, v1::DIRECTION_IN, v1::ACTION_ALLOW, 6, 5432);
    r->mutable_sources()->set_any(false);
    r->mutable_sources()->add_address_set_ids("g:peer");
  }
  AddRule(rs, 11, v1::DIRECTION_IN, v1::ACTION_ALLOW, 6, 6000, /*stateful=*/false);
  AddRule(rs, 12, v1::DIRECTION_IN, v1::ACTION_ALLOW, 6, 6001, /*stateful=*/false);
  {
    auto* r = AddRule(rs, 13, v1::DIRECTION_OUT, v1::ACTION_ALLOW, 6, 0, /*stateful=*/false);
    r->mutable_services(0)->add_source_ports()->set_first(6001);
  }
  {
    auto* r = rs->add_rules();
    r->set_rule_num(30);
    r->mutable_sources()->set_any(true);
    r->mutable_destinations()->set_any(true);
    auto* s4 = r->add_services();
    s4->set_protocol(1);
    s4->set_icmp_type(8);
    auto* s6 = r->add_services();
    s6->set_protocol(58);
    s6->set_icmp_type(128);
    r->set_direction(v1::DIRECTION_OUT);
    r->set_action(v1::ACTION_ALLOW);
    r->set_stateful(true);
  }
  AddRule(rs, 40, v1::DIRECTION_OUT, v1::ACTION_REJECT, 17, 53);
  AddRule(rs, 41, v1::DIRECTION_IN, v1::ACTION_REJECT, 17, 53);
  AddRule(rs, 50, v1::DIRECTION_OUT, v1::ACTION_REJECT, 6, 8443);
  AddRule(rs, 51, v1::DIRECTION_IN, v1::ACTION_REJECT, 6, 8443);
  AddRule(rs, 60, v1::DIRECTION_OUT, v1::ACTION_ALLOW, 17, 9999);
  AddRule(rs, 61, v1::DIRECTION_IN, v1::ACTION_ALLOW, 17, 9999);
  rs->mutable_default_rule()->set_action(v1::ACTION_DROP);
  rs->mutable_default_rule()->set_log(true);
  return st;
}

const InterfaceMap kIfaces = {{"vm0", "eth0"}};

class NftConformanceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root (network namespaces, nftables)";
    topo_ = std::make_unique<Topology>();
    ASSERT_TRUE(topo_->ok) << topo_->error;
    tap_ = std::make_unique<Tap>(topo_->peer_fd);
    ASSERT_TRUE(tap_->ok()) << "AF_PACKET socket on p0";
  }
  void TearDown() override {
    tap_.reset();
    topo_.reset();  // the namespaces go, whatever the test did
  }

  // Renders `st` and loads it in the guest with `nft -f` (the text the
  // agent's ApplyFull sends as one transaction). "" on success.
  std::string Load(const v1::HostDesiredState& st, const RenderOptions& o = {}) {
    SetNames names;
    auto text = RenderTable(st, kIfaces, o, &names);
    if (!text.ok()) return std::string(text.status().message());
    rendered_ = *text;
    const std::string path = "/tmp/" + topo_->vm + ".nft";
    FILE* f = fopen(path.c_str(), "w");
    if (!f) return "cannot write " + path;
    fputs(text->c_str(), f);
    fclose(f);
    std::string out;
    const int rc = Sh(topo_->InVm("nft -f " + path), &out);
    unlink(path.c_str());
    return rc == 0 ? "" : out + "\n" + *text;
  }

  // Packets counted by the rules of `chain` carrying comment `comment`.
  uint64_t Counter(const std::string& chain, const std::string& comment) {
    std::string out;
    if (Sh(topo_->InVm("nft list chain inet dfw " + chain), &out) != 0) return ~0ull;
    uint64_t sum = 0;
    static const std::regex re("packets ([0-9]+)");
    size_t start = 0;
    while (start < out.size()) {
      size_t end = out.find('\n', start);
      if (end == std::string::npos) end = out.size();
      const std::string line = out.substr(start, end - start);
      std::smatch m;
      if (line.find("comment \"" + comment + "\"") != std::string::npos &&
          std::regex_search(line, m, re)) {
        sum += std::stoull(m[1].str());
      }
      start = end + 1;
    }
    return sum;
  }
  // Waits until the counter has grown by `by` from `before`.
  bool CounterReaches(const std::string& chain, const std::string& comment, uint64_t target) {
    return Eventually([&] { return Counter(chain, comment) >= target; });
  }

  std::vector<CtEntry> Conntrack() {
    EnterNetns in(topo_->vm_fd);
    auto l = Conntrack::List();
    return l.ok() ? *l : std::vector<CtEntry>{};
  }
  std::optional<CtEntry> CtFor(uint8_t proto, uint16_t dport, const std::string& src = "") {
    for (const auto& e : Conntrack()) {
      if (e.proto == proto && e.dport == dport && (src.empty() || e.src == src)) return e;
    }
    return std::nullopt;
  }

  Fd SocketIn(int ns_fd, int family, int type, int proto = 0) {
    EnterNetns in(ns_fd);
    return Fd(in.ok() ? socket(family, type | SOCK_CLOEXEC, proto) : -1);
  }
  Fd Listen(int family, uint16_t port) {
    Fd s = SocketIn(topo_->vm_fd, family, SOCK_STREAM);
    const int one = 1;
    setsockopt(s.fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    socklen_t len;
    auto a = SockAddr(family, family == AF_INET ? "0.0.0.0" : "::", port, &len);
    if (bind(s.fd, reinterpret_cast<sockaddr*>(&a), len) != 0 || listen(s.fd, 16) != 0) s.reset();
    return s;
  }
  // A UDP socket bound in `ns_fd` to `ip`:`port`.
  Fd Udp(int ns_fd, int family, const std::string& ip, uint16_t port) {
    Fd s = SocketIn(ns_fd, family, SOCK_DGRAM);
    if (family == AF_INET6) {
      const int one = 1;
      setsockopt(s.fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    }
    socklen_t len;
    auto a = SockAddr(family, ip, port, &len);
    if (bind(s.fd, reinterpret_cast<sockaddr*>(&a), len) != 0) s.reset();
    return s;
  }
  // A TCP connection from `ns_fd` to ip:port; *err = 0 or the errno
  // (ETIMEDOUT after ms).
  Fd Connect(int ns_fd, int family, const std::string& ip, uint16_t port, int ms, int* err) {
    Fd s = SocketIn(ns_fd, family, SOCK_STREAM | SOCK_NONBLOCK);
    socklen_t len;
    auto a = SockAddr(family, ip, port, &len);
    *err = 0;
    if (connect(s.fd, reinterpret_cast<sockaddr*>(&a), len) != 0 && errno != EINPROGRESS) {
      *err = errno;
      return Fd();
    }
    if (!PollFor(s.fd, POLLOUT, ms)) {
      *err = ETIMEDOUT;
      return Fd();
    }
    int e = 0;
    socklen_t el = sizeof(e);
    getsockopt(s.fd, SOL_SOCKET, SO_ERROR, &e, &el);
    *err = e;
    if (e != 0) return Fd();
    return s;
  }
  Fd Accept(const Fd& l, int ms = 2000) {
    if (!PollFor(l.fd, POLLIN, ms)) return Fd();
    return Fd(accept4(l.fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
  }

  // Crafted from the peer: 198.18.0.10 -> the guest / 2001:db8::10 -> the guest.
  static Tcp Seg(uint16_t sport, uint16_t dport, uint32_t seq, uint32_t ack, uint8_t flags,
                 uint16_t payload = 0) {
    Tcp t;
    t.sport = sport;
    t.dport = dport;
    t.seq = seq;
    t.ack = ack;
    t.flags = flags;
    t.payload = payload;
    return t;
  }
  bool SendTcp4(const Tcp& t) {
    return tap_->Send4(FixIpv4(Ipv4(kCrafted4, kVm4, 6, TcpHeader(t))));
  }
  bool SendTcp6(const Tcp& t, const Bytes& ext = {}, uint8_t first_next = 6) {
    return tap_->Send6(FixIpv6(Ipv6(kCrafted6, kVm6, first_next, Cat(ext, TcpHeader(t)))));
  }
  std::optional<Seen> AwaitTcp(uint16_t from_port, uint16_t to_port, int ms = 2000) {
    return tap_->Await(
        [&](const Seen& s) { return s.proto == 6 && s.sport == from_port && s.dport == to_port; },
        ms);
  }
  // A full handshake crafted from 198.18.0.10:sport to the guest's dport
  // (a listener there); returns the guest's ISN + 1 (0 on failure).
  uint32_t Handshake4(uint16_t sport, uint16_t dport, uint32_t isn = 1000) {
    using namespace tcpflag;
    if (!SendTcp4(Seg(sport, dport, isn, 0, kSyn))) return 0;
    auto sa = AwaitTcp(dport, sport);
    if (!sa || sa->flags != (kSyn | kAck) || sa->ack != isn + 1) return 0;
    if (!SendTcp4(Seg(sport, dport, isn + 1, sa->seq + 1, kAck))) return 0;
    return sa->seq + 1;
  }

  std::unique_ptr<Topology> topo_;
  std::unique_ptr<Tap> tap_;
  std::string rendered_;
};

// --- handshake, default deny ---

TEST_F(NftConformanceTest, HandshakeAllowedByStatefulRuleRepliesPassCtMarkIsTheRule) {
  ASSERT_EQ(Load(BaseState()), "");
  for (int family : {AF_INET, AF_INET6}) {
    SCOPED_TRACE(family == AF_INET ? "IPv4" : "IPv6");
    const std::string vm = family == AF_INET ? kVm4Text : kVm6Text;
    const std::string peer = family == AF_INET ? kPeer4Text : kPeer6Text;
    const uint64_t before = Counter("in_1", "r10");
    Fd l = Listen(family, 5432);
    ASSERT_TRUE(l.ok());
    int err = 0;
    Fd c = Connect(topo_->peer_fd, family, vm, 5432, 2000, &err);
    ASSERT_TRUE(c.ok()) << strerror(err);
    Fd a = Accept(l);
    ASSERT_TRUE(a.ok());
    ASSERT_EQ(send(c.fd, "hello", 5, 0), 5);
    EXPECT_EQ(RecvText(a.fd), "hello");
    ASSERT_EQ(send(a.fd, "world", 5, 0), 5);
    EXPECT_EQ(RecvText(c.fd), "world") << "the reply passes as established";
    auto ct = CtFor(6, 5432, peer);
    ASSERT_TRUE(ct.has_value());
    EXPECT_EQ(ct->mark, 10u) << "ct mark = the admitting rule";
    EXPECT_EQ(Counter("in_1", "r10"), before + 1) << "only the SYN is classified";
    // FIN teardown both ways: each side sees the other's EOF.
    shutdown(c.fd, SHUT_WR);
    char b;
    EXPECT_EQ(RecvWithin(a.fd, &b, 1, 2000), 0);
    shutdown(a.fd, SHUT_WR);
    EXPECT_EQ(RecvWithin(c.fd, &b, 1, 2000), 0);
  }
  // The guest's replies (SYN-ACK, data, FIN) passed as established, and
  // were never classified: no TCP rule allows OUT.
  EXPECT_GE(Counter("out_1", "ct-established"), 6u);
}

TEST_F(NftConformanceTest, DefaultDenyAndRepliesOnlyForTrackedConnections) {
  using namespace tcpflag;
  ASSERT_EQ(Load(BaseState()), "");
  Fd l = Listen(AF_INET, 22);
  ASSERT_TRUE(l.ok());
  const uint64_t r0 = Counter("in_1", "r0");
  ASSERT_TRUE(SendTcp4(Seg(40000, 22, 1, 0, kSyn)));
  ASSERT_TRUE(CounterReaches("in_1", "r0", r0 + 1)) << "dropped by the default rule";
  EXPECT_FALSE(AwaitTcp(22, 40000, 100).has_value()) << "no SYN-ACK, no RST";
  // A SYN-ACK that answers nothing the guest sent: no connection, so it
  // cannot pass as a reply. The kernel's conntrack calls it invalid (only a
  // SYN opens, or with loose pickup an ACK) and "ct-invalid" drops it.
  const uint64_t inv = Counter("in_1", "ct-invalid");
  ASSERT_TRUE(SendTcp4(Seg(5433, 40001, 1, 777, kSyn | kAck)));
  ASSERT_TRUE(CounterReaches("in_1", "ct-invalid", inv + 1));
  EXPECT_FALSE(AwaitTcp(40001, 5433, 100).has_value());
  // The guest may not open connections (OUT has no TCP allow): its SYN
  // never reaches the wire.
  const uint64_t out0 = Counter("out_1", "r0");
  int err = 0;
  Fd c = Connect(topo_->vm_fd, AF_INET, kCrafted4Text, 22, 50, &err);
  EXPECT_FALSE(c.ok());
  ASSERT_TRUE(CounterReaches("out_1", "r0", out0 + 1));
  EXPECT_FALSE(AwaitTcp(0, 22, 50).has_value());
  EXPECT_FALSE(tap_->Await([](const Seen& s) { return s.proto == 6 && s.dport == 22; }, 50));
}

TEST_F(NftConformanceTest, StatelessAllowRepliesAreClassifiedAgain) {
  using namespace tcpflag;
  ASSERT_EQ(Load(BaseState()), "");
  Fd l6000 = Listen(AF_INET, 6000), l6001 = Listen(AF_INET, 6001);
  ASSERT_TRUE(l6000.ok() && l6001.ok());
  // Rule 11 lets the SYN in, but keeps no state: the SYN-ACK meets the out
  // chain as a new packet and the default rule drops it.
  const uint64_t out0 = Counter("out_1", "r0");
  ASSERT_TRUE(SendTcp4(Seg(40100, 6000, 1000, 0, kSyn)));
  ASSERT_TRUE(CounterReaches("out_1", "r0", out0 + 1)) << "the SYN-ACK was classified and dropped";
  EXPECT_FALSE(AwaitTcp(6000, 40100, 100).has_value());
  EXPECT_EQ(Counter("in_1", "r11"), 1u);
  auto ct = CtFor(6, 6000);
  if (ct) {
    EXPECT_EQ(ct->mark, 0u) << "a stateless allow marks nothing";
  }
  // With a stateless allow for the reply too (rule 13), it passes.
  ASSERT_TRUE(SendTcp4(Seg(40101, 6001, 1000, 0, kSyn)));
  auto sa = AwaitTcp(6001, 40101);
  ASSERT_TRUE(sa.has_value());
  EXPECT_EQ(sa->flags, kSyn | kAck);
  EXPECT_EQ(Counter("out_1", "r13"), 1u);
  // ...and so does every later packet, each classified again.
  ASSERT_TRUE(SendTcp4(Seg(40101, 6001, 1001, sa->seq + 1, kAck | kPsh, 10)));
  auto ack = AwaitTcp(6001, 40101);
  ASSERT_TRUE(ack.has_value());
  EXPECT_EQ(ack->ack, 1011u);
  EXPECT_EQ(Counter("in_1", "r12"), 2u);
  EXPECT_EQ(Counter("out_1", "r13"), 2u);
  // DIFFERENCE: an ICMP error about this flow. The dataplane keeps no entry
  // for a stateless allow, so the error is unrelated there and dropped. The
  // kernel tracks every flow; the table accepts "ct state related" whatever
  // the mark (nft_ruleset.cc: so that the RST/ICMP of our own reject, which
  // the kernel attaches to the rejected packet's unmarked entry, can leave),
  // so the error passes as related.
  const uint64_t rel = Counter("in_1", "ct-related");
  Bytes inner =
      FixIpv4(Ipv4(kVm4, kCrafted4, 6, TcpHeader(Seg(6001, 40101, sa->seq, 1001, kSyn | kAck))));
  Bytes icmp{3, 3, 0, 0, 0, 0, 0, 0};
  icmp.insert(icmp.end(), inner.begin(), inner.begin() + 28);
  ASSERT_TRUE(tap_->Send4(FixIpv4(Ipv4(kCrafted4, kVm4, 1, icmp))));
  EXPECT_TRUE(CounterReaches("in_1", "ct-related", rel + 1));
}

// --- strict window ---

TEST_F(NftConformanceTest, OutOfWindowSegmentsOnAnEstablishedConnection) {
  using namespace tcpflag;
  ASSERT_EQ(Load(BaseState()), "");
  Fd l = Listen(AF_INET, 5432);
  ASSERT_TRUE(l.ok());
  const uint32_t their = Handshake4(40200, 5432);
  ASSERT_NE(their, 0u);
  Fd a = Accept(l);
  ASSERT_TRUE(a.ok());
  tap_->Drain();
  const uint64_t inv = Counter("in_1", "ct-invalid");
  // SEQ far beyond the window: ct state invalid, dropped ("ct-invalid"), as
  // the dataplane's kCtInvalid. The guest's stack never sees it (it would
  // answer with a duplicate ACK).
  ASSERT_TRUE(SendTcp4(Seg(40200, 5432, 1001 + 0x40000000, their, kAck | kPsh, 10)));
  ASSERT_TRUE(CounterReaches("in_1", "ct-invalid", inv + 1));
  EXPECT_FALSE(AwaitTcp(5432, 40200, 100).has_value());
  // RST far outside the window: invalid as well; the connection survives.
  ASSERT_TRUE(SendTcp4(Seg(40200, 5432, 1001 + 0x20000000, 0, kRst)));
  ASSERT_TRUE(CounterReaches("in_1", "ct-invalid", inv + 2));
  // ACK of data the guest never sent: invalid too.
  ASSERT_TRUE(SendTcp4(Seg(40200, 5432, 1001, their + 0x10000000, kAck)));
  ASSERT_TRUE(CounterReaches("in_1", "ct-invalid", inv + 3));
  EXPECT_FALSE(AwaitTcp(5432, 40200, 100).has_value());
  // In-window data still gets through: the connection survived.
  ASSERT_TRUE(SendTcp4(Seg(40200, 5432, 1001, their, kAck | kPsh, 10)));
  char buf[64];
  EXPECT_EQ(RecvWithin(a.fd, buf, sizeof(buf), 2000), 10);
  // An in-window RST ends it (the guest's socket sees ECONNRESET).
  const uint64_t est = Counter("in_1", "ct-established");
  ASSERT_TRUE(SendTcp4(Seg(40200, 5432, 1011, 0, kRst)));
  EXPECT_EQ(RecvWithin(a.fd, buf, sizeof(buf), 2000), -ECONNRESET);
  EXPECT_EQ(Counter("in_1", "ct-established"), est + 1);
  // DIFFERENCE: in the dataplane only a new SYN is valid after a RST. The
  // kernel keeps the entry in CLOSE for nf_conntrack_tcp_timeout_close
  // (10 s) and lets a segment on it pass as established; the guest's own
  // stack, which has no such connection any more, answers with a RST. No
  // socket ever sees the data.
  tap_->Drain();
  ASSERT_TRUE(SendTcp4(Seg(40200, 5432, 1011, their, kAck | kPsh, 10)));
  auto rst = AwaitTcp(5432, 40200);
  ASSERT_TRUE(rst.has_value());
  EXPECT_TRUE(rst->flags & kRst);
  EXPECT_EQ(Counter("in_1", "ct-established"), est + 2);
  EXPECT_EQ(Counter("in_1", "ct-invalid"), inv + 3);
}

// --- mid-stream segment without a connection ---

TEST_F(NftConformanceTest, MidStreamAckWithoutConnectionIsRefusedWithTcpLooseOff) {
  using namespace tcpflag;
  ASSERT_EQ(Load(BaseState()), "");
  // The agent's setting (see docs/architecture.md): strict as the dataplane.
  ASSERT_EQ(Sh(topo_->InVm("sysctl -qw net.netfilter.nf_conntrack_tcp_loose=0")), 0);
  Fd l = Listen(AF_INET, 5432);
  ASSERT_TRUE(l.ok());
  const uint64_t inv = Counter("in_1", "ct-invalid");
  ASSERT_TRUE(SendTcp4(Seg(40300, 5432, 777, 888, kAck, 10)));
  ASSERT_TRUE(CounterReaches("in_1", "ct-invalid", inv + 1)) << "the dataplane's ct-no-connection";
  EXPECT_FALSE(AwaitTcp(5432, 40300, 100).has_value()) << "the guest's stack never saw it";
  EXPECT_FALSE(CtFor(6, 5432).has_value());
  EXPECT_EQ(Counter("in_1", "r10"), 0u);
  // A SYN still opens a connection.
  EXPECT_NE(Handshake4(40301, 5432), 0u);
}

TEST_F(NftConformanceTest, MidStreamAckWithKernelDefaultLoosePickupIsClassifiedAsNew) {
  using namespace tcpflag;
  ASSERT_EQ(Load(BaseState()), "");
  std::string loose;
  Sh(topo_->InVm("sysctl -n net.netfilter.nf_conntrack_tcp_loose"), &loose);
  ASSERT_EQ(loose, "1\n") << "the kernel's default";
  Fd l = Listen(AF_INET, 5432);
  ASSERT_TRUE(l.ok());
  // DIFFERENCE (the dataplane with --tcp-loose does the same): the ACK is
  // picked up as a new connection and classified; rule 10 admits it (ct
  // mark 10) and the guest's stack, which has no such connection, answers
  // with a RST.
  ASSERT_TRUE(SendTcp4(Seg(40400, 5432, 777, 888, kAck, 10)));
  auto rst = AwaitTcp(5432, 40400);
  ASSERT_TRUE(rst.has_value());
  EXPECT_TRUE(rst->flags & kRst);
  EXPECT_EQ(Counter("in_1", "r10"), 1u);
  // What a SYN could not open, a mid-stream ACK cannot either.
  const uint64_t r0 = Counter("in_1", "r0");
  ASSERT_TRUE(SendTcp4(Seg(40401, 22, 777, 888, kAck, 10)));
  ASSERT_TRUE(CounterReaches("in_1", "r0", r0 + 1));
  EXPECT_FALSE(AwaitTcp(22, 40401, 100).has_value());
}

// --- reject ---

TEST_F(NftConformanceTest, RejectSendsRstForTcp) {
  using namespace tcpflag;
  ASSERT_EQ(Load(BaseState()), "");
  // IN: the peer's SYN gets a RST from the guest's address, ACKing the SYN.
  for (bool v6 : {false, true}) {
    SCOPED_TRACE(v6 ? "IPv6" : "IPv4");
    const uint16_t sport = v6 ? 41001 : 41000;
    ASSERT_TRUE(v6 ? SendTcp6(Seg(sport, 8443, 7000, 0, kSyn))
                   : SendTcp4(Seg(sport, 8443, 7000, 0, kSyn)));
    auto r = AwaitTcp(8443, sport);
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->src, v6 ? kVm6Text : kVm4Text);
    EXPECT_EQ(r->dst, v6 ? kCrafted6Text : kCrafted4Text);
    EXPECT_EQ(r->flags, kRst | kAck);
    EXPECT_EQ(r->ack, 7001u);
  }
  EXPECT_EQ(Counter("in_1", "r51"), 2u);
  // OUT: the guest's own connect() is refused at once, nothing on the wire.
  int err = 0;
  Fd c = Connect(topo_->vm_fd, AF_INET, kPeer4Text, 8443, 2000, &err);
  EXPECT_FALSE(c.ok());
  EXPECT_EQ(err, ECONNREFUSED) << strerror(err);
  EXPECT_EQ(Counter("out_1", "r50"), 1u);
  EXPECT_FALSE(tap_->Await([](const Seen& s) { return s.proto == 6 && s.dport == 8443; }, 50));
}

TEST_F(NftConformanceTest, RejectSendsIcmpAdminProhibitedForUdp) {
  ASSERT_EQ(Load(BaseState()), "");
  // IN, IPv4: ICMP 3/13 quoting the datagram, back to the sender.
  ASSERT_TRUE(tap_->Send4(FixIpv4(Ipv4(kCrafted4, kVm4, 17, UdpHeader(5555, 53)))));
  auto r = tap_->Await([](const Seen& s) { return s.proto == 1 && s.icmp_type == 3; });
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->icmp_code, 13) << "admin prohibited";
  EXPECT_EQ(r->dst, kCrafted4Text);
  EXPECT_EQ(r->inner_src, kCrafted4Text);
  EXPECT_EQ(r->inner_sport, 5555);
  EXPECT_EQ(r->inner_dport, 53);
  // IN, IPv6: ICMPv6 1/1.
  ASSERT_TRUE(tap_->Send6(FixIpv6(Ipv6(kCrafted6, kVm6, 17, UdpHeader(5556, 53)))));
  auto r6 = tap_->Await([](const Seen& s) { return s.proto == 58 && s.icmp_type == 1; });
  ASSERT_TRUE(r6.has_value());
  EXPECT_EQ(r6->icmp_code, 1) << "administratively prohibited";
  EXPECT_EQ(r6->inner_sport, 5556);
  EXPECT_EQ(r6->inner_dport, 53);
  EXPECT_EQ(Counter("in_1", "r41"), 2u);
  // OUT: the guest's socket gets the error, nothing on the wire.
  Fd u = Udp(topo_->vm_fd, AF_INET, kVm4Text, 5557);
  ASSERT_TRUE(u.ok());
  socklen_t len;
  auto dst = SockAddr(AF_INET, kPeer4Text, 53, &len);
  ASSERT_EQ(connect(u.fd, reinterpret_cast<sockaddr*>(&dst), len), 0);
  (void)send(u.fd, "q", 1, 0);
  char b;
  const ssize_t got = RecvWithin(u.fd, &b, 1, 2000);
  EXPECT_EQ(got, -EHOSTUNREACH) << "ICMP admin prohibited, as the socket reports it";
  EXPECT_EQ(Counter("out_1", "r40"), 1u);
  EXPECT_FALSE(tap_->Await([](const Seen& s) { return s.proto == 17 && s.dport == 53; }, 50));
}

// --- ICMP ---

TEST_F(NftConformanceTest, IcmpEchoAndRelatedErrors) {
  ASSERT_EQ(Load(BaseState()), "");
  // Echo out (rule 30, stateful): the reply with the same id passes.
  Fd raw = SocketIn(topo_->vm_fd, AF_INET, SOCK_RAW, IPPROTO_ICMP);
  ASSERT_TRUE(raw.ok());
  Bytes echo = IcmpHeader(8, 0, 77);
  Set16(echo, 2, Fold(SumBytes(echo.data(), echo.size())));
  socklen_t len;
  auto to = SockAddr(AF_INET, kCrafted4Text, 0, &len);
  ASSERT_EQ(sendto(raw.fd, echo.data(), echo.size(), 0, reinterpret_cast<sockaddr*>(&to), len),
            static_cast<ssize_t>(echo.size()));
  auto req = tap_->Await([](const Seen& s) { return s.proto == 1 && s.icmp_type == 8; });
  ASSERT_TRUE(req.has_value());
  EXPECT_EQ(req->icmp_id, 77);
  auto got_reply = [&](uint16_t id) {
    uint8_t buf[512];
    for (;;) {
      ssize_t n = RecvWithin(raw.fd, buf, sizeof(buf), 300);
      if (n <= 0) return false;
      auto s = ParseIp(buf, static_cast<size_t>(n));
      if (s && s->icmp_type == 0 && s->icmp_id == id) return true;
    }
  };
  ASSERT_TRUE(tap_->Send4(FixIpv4(Ipv4(kCrafted4, kVm4, 1, IcmpHeader(0, 0, 77)))));
  EXPECT_TRUE(got_reply(77)) << "the echo reply matches";
  const uint64_t inv = Counter("in_1", "ct-invalid");
  ASSERT_TRUE(tap_->Send4(FixIpv4(Ipv4(kCrafted4, kVm4, 1, IcmpHeader(0, 0, 78)))));
  ASSERT_TRUE(CounterReaches("in_1", "ct-invalid", inv + 1))
      << "an unsolicited echo reply is ct state invalid";
  EXPECT_FALSE(got_reply(78));
  EXPECT_EQ(Counter("out_1", "r30"), 1u);

  // A UDP flow out (rule 60), then an ICMP port unreachable about it:
  // RELATED, it passes and the guest's socket learns ECONNREFUSED.
  Fd u = Udp(topo_->vm_fd, AF_INET, kVm4Text, 6000);
  ASSERT_TRUE(u.ok());
  auto dst = SockAddr(AF_INET, kCrafted4Text, 9999, &len);
  ASSERT_EQ(connect(u.fd, reinterpret_cast<sockaddr*>(&dst), len), 0);
  ASSERT_EQ(send(u.fd, "12345678", 8, 0), 8);
  ASSERT_TRUE(tap_->Await([](const Seen& s) { return s.proto == 17 && s.dport == 9999; }));
  auto icmp_about = [&](uint16_t sport) {
    Bytes inner = FixIpv4(Ipv4(kVm4, kCrafted4, 17, UdpHeader(sport, 9999)));
    Bytes icmp{3, 3, 0, 0, 0, 0, 0, 0};
    icmp.insert(icmp.end(), inner.begin(), inner.begin() + 28);
    return FixIpv4(Ipv4(kCrafted4, kVm4, 1, icmp));
  };
  ASSERT_TRUE(tap_->Send4(icmp_about(6000)));
  char b;
  EXPECT_EQ(RecvWithin(u.fd, &b, 1, 2000), -ECONNREFUSED) << "related to the UDP flow";
  // About a flow that does not exist: invalid (the dataplane's
  // icmp-error-unrelated), dropped.
  const uint64_t inv2 = Counter("in_1", "ct-invalid");
  ASSERT_TRUE(tap_->Send4(icmp_about(6001)));
  ASSERT_TRUE(CounterReaches("in_1", "ct-invalid", inv2 + 1));
  EXPECT_EQ(Counter("in_1", "r0"), 0u);
}

TEST_F(NftConformanceTest, UdpRepliesPassOnlyForTheFlow) {
  ASSERT_EQ(Load(BaseState()), "");
  Fd u = Udp(topo_->vm_fd, AF_INET, kVm4Text, 6100);
  Fd other = Udp(topo_->vm_fd, AF_INET, kVm4Text, 6101);
  ASSERT_TRUE(u.ok() && other.ok());
  socklen_t len;
  auto dst = SockAddr(AF_INET, kCrafted4Text, 9999, &len);
  ASSERT_EQ(sendto(u.fd, "ping", 4, 0, reinterpret_cast<sockaddr*>(&dst), len), 4);
  ASSERT_TRUE(tap_->Await([](const Seen& s) { return s.proto == 17 && s.sport == 6100; }));
  ASSERT_TRUE(tap_->Send4(FixIpv4(Ipv4(kCrafted4, kVm4, 17, UdpHeader(9999, 6100, 4)))));
  char buf[16];
  EXPECT_EQ(RecvWithin(u.fd, buf, sizeof(buf), 2000), 4) << "the reply passes";
  auto ct = CtFor(17, 9999);
  ASSERT_TRUE(ct.has_value());
  EXPECT_EQ(ct->mark, 60u);
  const uint64_t r0 = Counter("in_1", "r0");
  ASSERT_TRUE(tap_->Send4(FixIpv4(Ipv4(kCrafted4, kVm4, 17, UdpHeader(9999, 6101, 4)))));
  ASSERT_TRUE(CounterReaches("in_1", "r0", r0 + 1)) << "not the flow's: the default rule";
  EXPECT_EQ(RecvWithin(other.fd, buf, sizeof(buf), 50), -EAGAIN);
}

// --- fragments ---

// A UDP datagram crafted -> guest:dport of `payload` bytes, checksummed whole.
Bytes Datagram4(uint16_t sport, uint16_t dport, uint16_t payload) {
  return FixIpv4(Ipv4(kCrafted4, kVm4, 17, UdpHeader(sport, dport, payload)));
}

TEST_F(NftConformanceTest, FragmentsAreReassembledBeforeTheRules) {
  using namespace tcpflag;
  ASSERT_EQ(Load(BaseState()), "");
  Fd allowed = Udp(topo_->vm_fd, AF_INET, "0.0.0.0", 9999);
  Fd denied = Udp(topo_->vm_fd, AF_INET, "0.0.0.0", 9998);
  Fd allowed6 = Udp(topo_->vm_fd, AF_INET6, "::", 9999);
  ASSERT_TRUE(allowed.ok() && denied.ok() && allowed6.ok());
  char buf[256];
  // Each case ends with a whole marker datagram to the allowed port: when
  // it has arrived, everything sent before it has been dealt with.
  auto marker = [&](uint16_t size) {
    EXPECT_TRUE(tap_->Send4(Datagram4(7000, 9999, size)));
    return RecvWithin(allowed.fd, buf, sizeof(buf), 2000);
  };

  // An allowed datagram in two fragments: delivered once, classified once.
  const Bytes whole = Datagram4(6000, 9999, 32);  // 8 + 32 bytes of UDP
  auto frags = Fragments4(whole, {{0, 16}, {16, 24}}, 500);
  ASSERT_TRUE(tap_->Send4(frags[0]));
  ASSERT_TRUE(tap_->Send4(frags[1]));
  EXPECT_EQ(RecvWithin(allowed.fd, buf, sizeof(buf), 2000), 32);
  EXPECT_EQ(Counter("in_1", "r61"), 1u) << "the reassembled datagram meets the rules, once";
  // The same last fragment again: it starts a new reassembly that never
  // completes (the dataplane: overlapping-fragment). Nothing delivered.
  ASSERT_TRUE(tap_->Send4(frags[1]));
  // A fragment whose first never came (the dataplane: fragment-no-first).
  ASSERT_TRUE(tap_->Send4(Fragments4(Datagram4(6001, 9999, 32), {{16, 24}}, 501)[0]));
  // Overlapping fragments: the kernel discards the whole datagram.
  const Bytes ov = Datagram4(6002, 9999, 32);
  auto ovf = Fragments4(ov, {{0, 24}, {16, 24}}, 502);
  ASSERT_TRUE(tap_->Send4(ovf[0]));
  ASSERT_TRUE(tap_->Send4(ovf[1]));
  EXPECT_EQ(marker(3), 3) << "only the marker arrived";
  EXPECT_EQ(RecvWithin(allowed.fd, buf, sizeof(buf), 50), -EAGAIN);
  EXPECT_EQ(Counter("in_1", "r61"), 2u) << "the marker; no fragment met the rules alone";

  // A denied datagram's fragments: none delivered, one default-rule drop.
  const uint64_t r0 = Counter("in_1", "r0");
  for (const auto& f : Fragments4(Datagram4(6003, 9998, 32), {{0, 16}, {16, 24}}, 503)) {
    ASSERT_TRUE(tap_->Send4(f));
  }
  ASSERT_TRUE(CounterReaches("in_1", "r0", r0 + 1));
  EXPECT_EQ(RecvWithin(denied.fd, buf, sizeof(buf), 50), -EAGAIN);
  EXPECT_EQ(Counter("in_1", "r0"), r0 + 1);

  // Tiny first fragment (8 bytes: the ports only) of a TCP SYN to the
  // allowed port. DIFFERENCE: the dataplane drops it (tiny-fragment); the
  // kernel reassembles, the rules see the whole header, the SYN is allowed.
  Fd l = Listen(AF_INET, 5432);
  ASSERT_TRUE(l.ok());
  const Bytes syn = FixIpv4(Ipv4(kCrafted4, kVm4, 6, TcpHeader(Seg(40500, 5432, 1000, 0, kSyn))));
  for (const auto& f : Fragments4(syn, {{0, 8}, {8, 12}}, 504)) ASSERT_TRUE(tap_->Send4(f));
  auto sa = AwaitTcp(5432, 40500);
  ASSERT_TRUE(sa.has_value());
  EXPECT_EQ(sa->flags, kSyn | kAck);
  // ...and the same split of a SYN to a denied port is denied as a whole.
  const uint64_t r0b = Counter("in_1", "r0");
  const Bytes syn22 = FixIpv4(Ipv4(kCrafted4, kVm4, 6, TcpHeader(Seg(40501, 22, 1000, 0, kSyn))));
  for (const auto& f : Fragments4(syn22, {{0, 8}, {8, 12}}, 505)) ASSERT_TRUE(tap_->Send4(f));
  ASSERT_TRUE(CounterReaches("in_1", "r0", r0b + 1));

  // IPv6: the same through nf_defrag_ipv6.
  const Bytes whole6 = FixIpv6(Ipv6(kCrafted6, kVm6, 17, UdpHeader(6004, 9999, 32)));
  for (const auto& f : Fragments6(whole6, {{0, 16}, {16, 24}}, 600)) ASSERT_TRUE(tap_->Send6(f));
  EXPECT_EQ(RecvWithin(allowed6.fd, buf, sizeof(buf), 2000), 32);
  const uint64_t r0c = Counter("in_1", "r0");
  const Bytes denied6 = FixIpv6(Ipv6(kCrafted6, kVm6, 17, UdpHeader(6005, 9998, 32)));
  for (const auto& f : Fragments6(denied6, {{0, 16}, {16, 24}}, 601)) ASSERT_TRUE(tap_->Send6(f));
  ASSERT_TRUE(CounterReaches("in_1", "r0", r0c + 1));
}

// --- IPv6 extension headers ---

TEST_F(NftConformanceTest, Ipv6WithExtensionHeadersIsClassifiedOnItsL4) {
  using namespace tcpflag;
  ASSERT_EQ(Load(BaseState()), "");
  Fd l = Listen(AF_INET6, 5432);
  ASSERT_TRUE(l.ok());
  // Hop-by-hop, then destination options, then TCP.
  const Bytes ext = Cat(Ext8(60), Ext8(6));
  ASSERT_TRUE(SendTcp6(Seg(40600, 5432, 1, 0, kSyn), ext, /*first_next=*/0));
  auto sa = AwaitTcp(5432, 40600);
  ASSERT_TRUE(sa.has_value()) << "the TCP rule matched behind the extension headers";
  EXPECT_EQ(sa->flags, kSyn | kAck);
  EXPECT_EQ(Counter("in_1", "r10"), 1u);
  const uint64_t r0 = Counter("in_1", "r0");
  ASSERT_TRUE(SendTcp6(Seg(40601, 22, 1, 0, kSyn), ext, 0));
  ASSERT_TRUE(CounterReaches("in_1", "r0", r0 + 1));
  EXPECT_FALSE(AwaitTcp(22, 40601, 100).has_value());
  // Reject behind extension headers: still a RST.
  ASSERT_TRUE(SendTcp6(Seg(40602, 8443, 1, 0, kSyn), ext, 0));
  auto rst = AwaitTcp(8443, 40602);
  ASSERT_TRUE(rst.has_value());
  EXPECT_EQ(rst->flags, kRst | kAck);
}

// --- audit ---

class Lines {
 public:
  void Add(const std::string& l) {
    std::lock_guard<std::mutex> g(mu_);
    lines_.push_back(l);
  }
  bool Has(const std::vector<std::string>& parts) {
    std::lock_guard<std::mutex> g(mu_);
    for (const auto& l : lines_) {
      bool all = true;
      for (const auto& p : parts) all = all && l.find(p) != std::string::npos;
      if (all) return true;
    }
    return false;
  }
  std::string All() {
    std::lock_guard<std::mutex> g(mu_);
    std::string s;
    for (const auto& l : lines_) s += l + "\n";
    return s;
  }

 private:
  std::mutex mu_;
  std::vector<std::string> lines_;
};

TEST_F(NftConformanceTest, AuditModeLogsAndLetsThrough) {
  v1::HostDesiredState st;
  st.set_revision(2);
  auto* rs = st.add_rulesets();
  rs->set_vnic_id("vm0");
  auto* r = AddRule(rs, 70, v1::DIRECTION_IN, v1::ACTION_DROP, 6, 22);
  r->set_mode(v1::POLICY_MODE_AUDIT);
  rs->mutable_default_rule()->set_action(v1::ACTION_DROP);
  ASSERT_EQ(Load(st), "");
  ASSERT_NE(rendered_.find("log prefix \"dfw:audit:70\""), std::string::npos) << rendered_;

  Lines lines;
  FlowMonitorOptions fo;
  fo.netns_fd = topo_->vm_fd;
  fo.conntrack_events = false;
  FlowMonitor mon(fo, [&](const std::string& l) { lines.Add(l); });
  ASSERT_TRUE(mon.Start().ok());
  {
    unsigned idx = 0;
    EnterNetns in(topo_->vm_fd);
    idx = if_nametoindex("eth0");
    mon.SetInterfaces({{idx, "vm0"}});
  }
  Fd l = Listen(AF_INET, 22);
  ASSERT_TRUE(l.ok());
  int err = 0;
  Fd c = Connect(topo_->peer_fd, AF_INET, kVm4Text, 22, 2000, &err);
  ASSERT_TRUE(c.ok()) << "the would-be drop passes: " << strerror(err);
  Fd a = Accept(l);
  ASSERT_TRUE(a.ok());
  ASSERT_EQ(send(c.fd, "x", 1, 0), 1);
  EXPECT_EQ(RecvText(a.fd), "x");
  ASSERT_EQ(send(a.fd, "y", 1, 0), 1);
  EXPECT_EQ(RecvText(c.fd), "y") << "the connection carries on as established";
  EXPECT_TRUE(Eventually([&] {
    return lines.Has({"\"kind\":\"audit\"", "\"rule\":70", "\"dport\":22", "\"vnic\":\"vm0\"",
                      "\"direction\":\"in\"", "\"action\":\"drop\""});
  })) << lines.All();
  EXPECT_EQ(Counter("in_1", "r70"), 1u) << "audited once: the connection's first packet";
  mon.Stop();

  // --audit-first: the default rule's drop only logs too.
  RenderOptions o;
  o.audit_all = true;
  ASSERT_EQ(Load(BaseState(), o), "");
  Fd l2 = Listen(AF_INET, 2222);
  ASSERT_TRUE(l2.ok());
  Fd c2 = Connect(topo_->peer_fd, AF_INET, kVm4Text, 2222, 2000, &err);
  EXPECT_TRUE(c2.ok()) << strerror(err);
  EXPECT_EQ(Counter("in_1", "r0"), 1u);
  EXPECT_NE(rendered_.find("log prefix \"dfw:audit:0\""), std::string::npos);
}

// --- revalidate vs keep ---

TEST_F(NftConformanceTest, PolicyChangeRevalidatesOrKeepsEstablishedConnections) {
  v1::HostDesiredState before;
  before.set_revision(3);
  auto* rs = before.add_rulesets();
  rs->set_vnic_id("vm0");
  AddRule(rs, 80, v1::DIRECTION_IN, v1::ACTION_ALLOW, 6, 5432)
      ->set_on_change(v1::ON_CHANGE_REVALIDATE);
  AddRule(rs, 81, v1::DIRECTION_IN, v1::ACTION_ALLOW, 6, 6432)->set_on_change(v1::ON_CHANGE_KEEP);
  rs->mutable_default_rule()->set_action(v1::ACTION_DROP);
  v1::HostDesiredState after = before;
  after.set_revision(4);
  after.mutable_rulesets(0)->clear_rules();  // the new policy allows neither port

  NftBackend backend;
  {
    EnterNetns in(topo_->vm_fd);
    ASSERT_TRUE(in.ok());
    auto s = backend.ApplyFull(before, kIfaces, RenderOptions{});
    ASSERT_TRUE(s.ok()) << s;
  }
  Fd l1 = Listen(AF_INET, 5432), l2 = Listen(AF_INET, 6432);
  ASSERT_TRUE(l1.ok() && l2.ok());
  int err = 0;
  Fd c1 = Connect(topo_->peer_fd, AF_INET, kVm4Text, 5432, 2000, &err);
  ASSERT_TRUE(c1.ok()) << strerror(err);
  Fd c2 = Connect(topo_->peer_fd, AF_INET, kVm4Text, 6432, 2000, &err);
  ASSERT_TRUE(c2.ok()) << strerror(err);
  Fd a1 = Accept(l1), a2 = Accept(l2);
  ASSERT_TRUE(a1.ok() && a2.ok());
  ASSERT_EQ(CtFor(6, 5432)->mark, 80u);
  ASSERT_EQ(CtFor(6, 6432)->mark, 81u);

  {
    EnterNetns in(topo_->vm_fd);
    auto s = backend.ApplyFull(after, kIfaces, RenderOptions{});
    ASSERT_TRUE(s.ok()) << s;
    auto n = RevalidateConnections(before, backend, {{kVm4Text, "vm0"}, {kVm6Text, "vm0"}});
    ASSERT_TRUE(n.ok()) << n.status();
    EXPECT_EQ(*n, 1u) << "the revalidating rule's connection only";
  }
  EXPECT_FALSE(CtFor(6, 5432).has_value()) << "revalidated and cut";
  ASSERT_TRUE(CtFor(6, 6432).has_value());
  EXPECT_EQ(CtFor(6, 6432)->mark, 81u) << "kept";

  // The cut connection's next segment is new to conntrack, classified by the
  // new rules and dropped; the kept one carries on both ways.
  ASSERT_EQ(send(c1.fd, "cut", 3, 0), 3);
  ASSERT_EQ(send(c2.fd, "kept", 4, 0), 4);
  EXPECT_EQ(RecvText(a2.fd), "kept");
  ASSERT_EQ(send(a2.fd, "back", 4, 0), 4);
  EXPECT_EQ(RecvText(c2.fd), "back");
  char buf[16];
  EXPECT_EQ(RecvWithin(a1.fd, buf, sizeof(buf), 300), -EAGAIN) << "nothing gets through any more";
  EXPECT_GE(Counter("in_1", "r0"), 1u);
}

// --- what the agent does not see ---

TEST_F(NftConformanceTest, InterfacesWithoutAVnicAreNotFiltered) {
  // DIFFERENCE: the dataplane fails closed for an unknown vNIC; the guest's
  // table only jumps from the vNICs' interfaces, so another interface of the
  // guest (here eth1, no vNIC for it) is not ours and passes unfiltered.
  ASSERT_EQ(Sh(topo_->InVm("ip link add eth1 type veth peer name p1 netns " + topo_->peer)), 0);
  ASSERT_EQ(Sh(topo_->InVm("ip addr add 198.19.0.1/24 dev eth1")), 0);
  ASSERT_EQ(Sh(topo_->InPeer("ip addr add 198.19.0.2/24 dev p1")), 0);
  ASSERT_EQ(Sh(topo_->InVm("ip link set eth1 up")), 0);
  ASSERT_EQ(Sh(topo_->InPeer("ip link set p1 up")), 0);
  ASSERT_EQ(Load(BaseState()), "");
  Fd l = Listen(AF_INET, 22);
  ASSERT_TRUE(l.ok());
  int err = 0;
  Fd c = Connect(topo_->peer_fd, AF_INET, "198.19.0.1", 22, 2000, &err);
  EXPECT_TRUE(c.ok()) << strerror(err);
  // The same port through the vNIC's interface is denied.
  Fd d = Connect(topo_->peer_fd, AF_INET, kVm4Text, 22, 200, &err);
  EXPECT_FALSE(d.ok());
  // A ruleset for a vNIC with no interface in the guest is skipped, named.
  v1::HostDesiredState st = BaseState();
  st.mutable_rulesets(0)->set_vnic_id("vm9");
  SetNames names;
  std::vector<std::string> skipped;
  ASSERT_TRUE(RenderTable(st, kIfaces, {}, &names, &skipped).ok());
  EXPECT_EQ(skipped, std::vector<std::string>{"vm9"});
}

}  // namespace
}  // namespace dfw::vmagent
