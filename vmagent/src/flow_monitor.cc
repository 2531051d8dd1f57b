#include "dfw/vmagent/flow_monitor.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <libmnl/libmnl.h>
#include <libnetfilter_conntrack/libnetfilter_conntrack.h>
#include <libnetfilter_log/libnetfilter_log.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <charconv>
#include <future>
#include <string_view>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "dfw/dataplane/flow_records.h"
#include "dfw/vmagent/conntrack.h"
#include "spdlog/spdlog.h"

namespace dfw::vmagent {

namespace dp = dfw::dataplane;

namespace {

uint64_t NowMs() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1000000;
}

uint64_t MonoMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1000000;
}

uint16_t Be16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }

uint64_t Be64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = v << 8 | p[i];
  return v;
}

bool HasPorts(uint8_t proto) {
  return proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP ||
         proto == IPPROTO_UDPLITE || proto == IPPROTO_DCCP;
}

bool IsEcho(uint8_t proto, uint8_t type) {
  return (proto == IPPROTO_ICMP && (type == 0 || type == 8)) ||
         (proto == IPPROTO_ICMPV6 && (type == 128 || type == 129));
}

// The header fields a record carries, from the logged packet (L3 on).
struct PacketInfo {
  dp::Family family = dp::Family::kV4;
  uint8_t proto = 0;
  dp::Ip128 src, dst;
  uint16_t sport = 0, dport = 0, icmp_id = 0;
  uint32_t ip_len = 0;
};

bool ParsePacket(const uint8_t* p, size_t len, PacketInfo* out) {
  if (len < 1) return false;
  const uint8_t* l4 = nullptr;
  size_t l4len = 0;
  bool first_fragment = true;
  if ((p[0] >> 4) == 4) {
    size_t ihl = (p[0] & 0xf) * 4u;
    if (len < 20 || ihl < 20 || len < ihl) return false;
    out->family = dp::Family::kV4;
    out->proto = p[9];
    out->ip_len = Be16(p + 2);
    out->src.lo = static_cast<uint32_t>(p[12] << 24 | p[13] << 16 | p[14] << 8 | p[15]);
    out->dst.lo = static_cast<uint32_t>(p[16] << 24 | p[17] << 16 | p[18] << 8 | p[19]);
    first_fragment = (Be16(p + 6) & 0x1fff) == 0;
    l4 = p + ihl;
    l4len = len - ihl;
  } else if ((p[0] >> 4) == 6) {
    if (len < 40) return false;
    out->family = dp::Family::kV6;
    out->ip_len = 40u + Be16(p + 4);
    out->src.hi = Be64(p + 8);
    out->src.lo = Be64(p + 16);
    out->dst.hi = Be64(p + 24);
    out->dst.lo = Be64(p + 32);
    uint8_t nh = p[6];
    size_t off = 40;
    // Extension headers, as far as the copied bytes go.
    for (int i = 0; i < 16; ++i) {
      if (nh == 0 || nh == 43 || nh == 60) {  // hop-by-hop, routing, destination options
        if (len < off + 8) break;
        uint8_t next = p[off];
        off += (p[off + 1] + 1u) * 8u;
        nh = next;
      } else if (nh == 44) {  // fragment
        if (len < off + 8) break;
        first_fragment = (Be16(p + off + 2) & 0xfff8) == 0;
        nh = p[off];
        off += 8;
      } else if (nh == 51) {  // AH
        if (len < off + 8) break;
        uint8_t next = p[off];
        off += (p[off + 1] + 2u) * 4u;
        nh = next;
      } else {
        break;
      }
    }
    out->proto = nh;
    if (off <= len) {
      l4 = p + off;
      l4len = len - off;
    }
  } else {
    return false;
  }
  if (!l4 || !first_fragment) return true;  // no L4 header to read: ports 0
  if (HasPorts(out->proto) && l4len >= 4) {
    out->sport = Be16(l4);
    out->dport = Be16(l4 + 2);
  } else if ((out->proto == IPPROTO_ICMP || out->proto == IPPROTO_ICMPV6) && l4len >= 2) {
    out->sport = l4[0];
    out->dport = l4[1];
    if (IsEcho(out->proto, l4[0]) && l4len >= 6) out->icmp_id = Be16(l4 + 4);
  }
  return true;
}

bool ParseAddr(const std::string& text, int family, dp::Ip128* out) {
  if (family == AF_INET) {
    in_addr a;
    if (inet_pton(AF_INET, text.c_str(), &a) != 1) return false;
    out->hi = 0;
    out->lo = ntohl(a.s_addr);
    return true;
  }
  in6_addr a;
  if (inet_pton(AF_INET6, text.c_str(), &a) != 1) return false;
  out->hi = Be64(a.s6_addr);
  out->lo = Be64(a.s6_addr + 8);
  return true;
}

enum class PrefixKind { kAllow, kDrop, kReject, kAudit };

// "dfw:<kind>:<rule_num>"
bool ParsePrefix(std::string_view s, PrefixKind* kind, uint32_t* rule) {
  if (s.substr(0, 4) != "dfw:") return false;
  s.remove_prefix(4);
  size_t colon = s.find(':');
  if (colon == std::string_view::npos) return false;
  std::string_view k = s.substr(0, colon), n = s.substr(colon + 1);
  if (k == "allow") {
    *kind = PrefixKind::kAllow;
  } else if (k == "drop") {
    *kind = PrefixKind::kDrop;
  } else if (k == "reject") {
    *kind = PrefixKind::kReject;
  } else if (k == "audit") {
    *kind = PrefixKind::kAudit;
  } else {
    return false;
  }
  // nft pads nothing, but tolerate a trailing space ("dfw:drop:5 ").
  while (!n.empty() && n.back() == ' ') n.remove_suffix(1);
  auto [end, ec] = std::from_chars(n.data(), n.data() + n.size(), *rule);
  return ec == std::errc() && end == n.data() + n.size();
}

// An allowed record's flow, to pair NFLOG's and conntrack's.
struct FlowKey {
  dp::Family family;
  uint8_t proto;
  dp::Ip128 src, dst;
  uint16_t sport, dport, icmp_id;
  auto Tie() const { return std::tie(family, proto, src, dst, sport, dport, icmp_id); }
  bool operator<(const FlowKey& o) const { return Tie() < o.Tie(); }
};

constexpr uint64_t kPairWindowMs = 5000;

}  // namespace

struct FlowMonitor::Impl {
  FlowMonitor* self;
  nflog_handle* nflog = nullptr;
  nflog_g_handle* group = nullptr;
  mnl_socket* ct = nullptr;

  std::atomic<uint64_t> nflog_overruns{0}, conntrack_overruns{0}, nflog_packets{0},
      conntrack_events{0}, ignored{0}, unattributed{0}, duplicates{0};

  // Pairing of allowed records: flow -> (expiry, from conntrack?).
  std::map<FlowKey, std::pair<uint64_t, bool>> recent_allowed;

  // The guest's own addresses (text form) -> ifindex.
  std::map<std::string, uint32_t> local_addrs;
  uint64_t local_addrs_ms = 0;
  bool local_addrs_loaded = false;

  ~Impl() {
    if (group) nflog_unbind_group(group);
    if (nflog) nflog_close(nflog);
    if (ct) mnl_socket_close(ct);
  }

  void Prune(uint64_t now) {
    if (recent_allowed.size() < 1024) return;
    for (auto it = recent_allowed.begin(); it != recent_allowed.end();) {
      it = it->second.first < now ? recent_allowed.erase(it) : std::next(it);
    }
    if (recent_allowed.size() > 65536) recent_allowed.clear();
  }

  // True when this allowed record is the second of an NFLOG/conntrack pair.
  bool PairedDuplicate(const FlowKey& k, bool from_conntrack) {
    if (!self->options_.allowed_from_conntrack || !self->options_.conntrack_events) return false;
    uint64_t now = MonoMs();
    Prune(now);
    auto it = recent_allowed.find(k);
    if (it != recent_allowed.end() && it->second.first >= now &&
        it->second.second != from_conntrack) {
      recent_allowed.erase(it);
      duplicates.fetch_add(1, std::memory_order_relaxed);
      return true;
    }
    recent_allowed[k] = {now + kPairWindowMs, from_conntrack};
    return false;
  }

  void LoadLocalAddrs() {
    local_addrs.clear();
    ifaddrs* ifa = nullptr;
    if (getifaddrs(&ifa) != 0) return;
    for (ifaddrs* i = ifa; i; i = i->ifa_next) {
      if (!i->ifa_addr) continue;
      char buf[INET6_ADDRSTRLEN];
      int fam = i->ifa_addr->sa_family;
      if (fam == AF_INET) {
        inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr, buf,
                  sizeof(buf));
      } else if (fam == AF_INET6) {
        inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(i->ifa_addr)->sin6_addr, buf,
                  sizeof(buf));
      } else {
        continue;
      }
      local_addrs[buf] = if_nametoindex(i->ifa_name);
    }
    freeifaddrs(ifa);
    local_addrs_loaded = true;
  }

  // ifindex of a local address, 0 if it is not one.
  uint32_t LocalIf(const std::string& addr) {
    auto it = local_addrs.find(addr);
    if (it != local_addrs.end()) return it->second;
    uint64_t now = MonoMs();
    if (!local_addrs_loaded || now - local_addrs_ms >= 1000) {
      local_addrs_ms = now;
      LoadLocalAddrs();
      it = local_addrs.find(addr);
      if (it != local_addrs.end()) return it->second;
    }
    return 0;
  }

  std::string VnicOf(uint32_t ifindex) {
    std::lock_guard<std::mutex> l(self->map_mu_);
    auto it = self->vnics_.find(ifindex);
    return it == self->vnics_.end() ? std::string() : it->second;
  }

  void OnNflog(nflog_data* nfa) {
    nflog_packets.fetch_add(1, std::memory_order_relaxed);
    const char* prefix = nflog_get_prefix(nfa);
    PrefixKind kind;
    uint32_t rule = 0;
    char* payload = nullptr;
    int len = nflog_get_payload(nfa, &payload);
    PacketInfo pi;
    if (!prefix || !ParsePrefix(prefix, &kind, &rule) || len <= 0 ||
        !ParsePacket(reinterpret_cast<const uint8_t*>(payload), static_cast<size_t>(len), &pi)) {
      ignored.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    uint32_t indev = nflog_get_indev(nfa), outdev = nflog_get_outdev(nfa);
    dp::FlowEvent e;
    e.dir = outdev ? dp::Direction::kOut : dp::Direction::kIn;
    e.family = pi.family;
    e.proto = pi.proto;
    e.src = pi.src;
    e.dst = pi.dst;
    e.sport = pi.sport;
    e.dport = pi.dport;
    e.rule_num = rule;
    e.time_ms = NowMs();
    e.packets = 1;
    e.bytes = pi.ip_len;
    switch (kind) {
      case PrefixKind::kAllow:
        e.kind = dp::FlowEvent::Kind::kAllowed;
        e.action = dp::Action::kAllow;
        e.reason = dp::DropReason::kNone;
        if (PairedDuplicate(
                FlowKey{pi.family, pi.proto, pi.src, pi.dst, pi.sport, pi.dport, pi.icmp_id},
                false)) {
          return;
        }
        break;
      case PrefixKind::kDrop:
        e.kind = dp::FlowEvent::Kind::kDenied;
        e.action = dp::Action::kDrop;
        e.reason = rule == 0 ? dp::DropReason::kDefaultRule : dp::DropReason::kPolicyDrop;
        break;
      case PrefixKind::kReject:
        e.kind = dp::FlowEvent::Kind::kDenied;
        e.action = dp::Action::kReject;
        e.reason = rule == 0 ? dp::DropReason::kDefaultRule : dp::DropReason::kPolicyReject;
        break;
      case PrefixKind::kAudit: {
        e.kind = dp::FlowEvent::Kind::kAudit;
        std::lock_guard<std::mutex> l(self->map_mu_);
        e.action = self->reject_rules_.count(rule) ? dp::Action::kReject : dp::Action::kDrop;
        e.reason = dp::DropReason::kNone;
        break;
      }
    }
    self->Emit(dp::FlowEventJson(e, VnicOf(e.dir == dp::Direction::kOut ? outdev : indev)));
  }

  int OnConntrack(const nlmsghdr* nlh) {
    if (NFNL_SUBSYS_ID(nlh->nlmsg_type) != NFNL_SUBSYS_CTNETLINK) return MNL_CB_OK;
    int type = NFNL_MSG_TYPE(nlh->nlmsg_type);
    bool is_new = type == IPCTNL_MSG_CT_NEW && (nlh->nlmsg_flags & (NLM_F_CREATE | NLM_F_EXCL));
    bool is_destroy = type == IPCTNL_MSG_CT_DELETE;
    if (!is_new && !is_destroy) return MNL_CB_OK;
    conntrack_events.fetch_add(1, std::memory_order_relaxed);
    nf_conntrack* c = nfct_new();
    if (!c) return MNL_CB_OK;
    CtEntry ce;
    bool ok = nfct_nlmsg_parse(nlh, c) == 0;
    if (ok) ce = CtEntryFrom(c);
    nfct_destroy(c);
    if (!ok || ce.mark == 0) return MNL_CB_OK;
    if (is_new && !self->options_.allowed_from_conntrack) return MNL_CB_OK;

    dp::FlowEvent e;
    e.family = ce.family == AF_INET6 ? dp::Family::kV6 : dp::Family::kV4;
    if (!ParseAddr(ce.src, ce.family, &e.src) || !ParseAddr(ce.dst, ce.family, &e.dst)) {
      return MNL_CB_OK;
    }
    uint32_t ifindex = LocalIf(ce.src);
    if (ifindex) {
      e.dir = dp::Direction::kOut;
    } else if ((ifindex = LocalIf(ce.dst)) != 0) {
      e.dir = dp::Direction::kIn;
    } else {
      unattributed.fetch_add(1, std::memory_order_relaxed);
      return MNL_CB_OK;
    }
    e.proto = ce.proto;
    e.sport = ce.sport;
    e.dport = ce.dport;
    e.rule_num = ce.mark;
    e.time_ms = NowMs();
    e.action = dp::Action::kAllow;
    e.reason = dp::DropReason::kNone;
    if (is_new) {
      e.kind = dp::FlowEvent::Kind::kAllowed;
      // NEW events carry no counters (the kernel adds them to DESTROY only).
      e.packets = ce.orig_packets ? ce.orig_packets : 1;
      e.bytes = ce.orig_bytes;
      if (PairedDuplicate(FlowKey{e.family, e.proto, e.src, e.dst, e.sport, e.dport, ce.icmp_id},
                          true)) {
        return MNL_CB_OK;
      }
    } else {
      e.kind = dp::FlowEvent::Kind::kEnded;
      e.packets = ce.packets();
      e.bytes = ce.bytes();
    }
    self->Emit(dp::FlowEventJson(e, VnicOf(ifindex)));
    return MNL_CB_OK;
  }
};

namespace {

int NflogCb(nflog_g_handle*, nfgenmsg*, nflog_data* nfa, void* data) {
  static_cast<FlowMonitor::Impl*>(data)->OnNflog(nfa);
  return 0;
}

void SetRcvbuf(int fd, int bytes) {
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof(bytes)) != 0) {
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof(bytes));
  }
}

}  // namespace

FlowMonitor::FlowMonitor(FlowMonitorOptions options, Sink sink)
    : options_(std::move(options)), sink_(std::move(sink)) {}

FlowMonitor::~FlowMonitor() { Stop(); }

void FlowMonitor::SetInterfaces(std::map<uint32_t, std::string> ifindex_to_vnic) {
  std::lock_guard<std::mutex> l(map_mu_);
  vnics_ = std::move(ifindex_to_vnic);
}

void FlowMonitor::SetRejectRules(std::set<uint32_t> rule_nums) {
  std::lock_guard<std::mutex> l(map_mu_);
  reject_rules_ = std::move(rule_nums);
}

FlowMonitorStats FlowMonitor::stats() const {
  FlowMonitorStats s;
  s.records = records_.load(std::memory_order_relaxed);
  s.queue_drops = queue_drops_.load(std::memory_order_relaxed);
  if (const Impl* i = impl_.get()) {
    s.nflog_overruns = i->nflog_overruns.load(std::memory_order_relaxed);
    s.conntrack_overruns = i->conntrack_overruns.load(std::memory_order_relaxed);
    s.nflog_packets = i->nflog_packets.load(std::memory_order_relaxed);
    s.conntrack_events = i->conntrack_events.load(std::memory_order_relaxed);
    s.ignored = i->ignored.load(std::memory_order_relaxed);
    s.unattributed = i->unattributed.load(std::memory_order_relaxed);
    s.duplicates = i->duplicates.load(std::memory_order_relaxed);
  }
  return s;
}

absl::Status FlowMonitor::Start() {
  if (reader_.joinable()) return absl::FailedPreconditionError("flow monitor: already started");
  stop_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (stop_fd_ < 0) {
    return absl::InternalError(absl::StrCat("flow monitor: eventfd: ", strerror(errno)));
  }
  impl_ = std::make_unique<Impl>();
  impl_->self = this;
  {
    std::lock_guard<std::mutex> l(q_mu_);
    writer_stop_ = false;
  }
  std::promise<absl::Status> ready;
  std::future<absl::Status> started = ready.get_future();
  reader_ = std::thread(
      [this, &ready] { Reader([&ready](absl::Status s) { ready.set_value(std::move(s)); }); });
  absl::Status s = started.get();
  if (!s.ok()) {
    reader_.join();
    close(stop_fd_);
    stop_fd_ = -1;
    impl_.reset();
    return s;
  }
  writer_ = std::thread([this] { Writer(); });
  return absl::OkStatus();
}

void FlowMonitor::Stop() {
  if (reader_.joinable()) {
    uint64_t one = 1;
    (void)!write(stop_fd_, &one, sizeof(one));
    reader_.join();
  }
  if (writer_.joinable()) {
    {
      std::lock_guard<std::mutex> l(q_mu_);
      writer_stop_ = true;
    }
    q_cv_.notify_all();
    writer_.join();
  }
  if (stop_fd_ >= 0) {
    close(stop_fd_);
    stop_fd_ = -1;
  }
  if (impl_) {
    // Keep the counters readable: close the sockets only.
    Impl* i = impl_.get();
    if (i->group) nflog_unbind_group(i->group);
    if (i->nflog) nflog_close(i->nflog);
    if (i->ct) mnl_socket_close(i->ct);
    i->group = nullptr;
    i->nflog = nullptr;
    i->ct = nullptr;
  }
}

void FlowMonitor::Emit(std::string line) {
  {
    std::lock_guard<std::mutex> l(q_mu_);
    if (queue_.size() >= options_.queue_capacity) {
      queue_drops_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    queue_.push_back(std::move(line));
  }
  q_cv_.notify_one();
}

void FlowMonitor::Writer() {
  std::deque<std::string> batch;
  for (;;) {
    {
      std::unique_lock<std::mutex> l(q_mu_);
      q_cv_.wait(l, [&] { return writer_stop_ || !queue_.empty(); });
      if (queue_.empty() && writer_stop_) return;
      batch.swap(queue_);
    }
    for (const std::string& line : batch) {
      sink_(line);
      records_.fetch_add(1, std::memory_order_relaxed);
    }
    batch.clear();
  }
}

void FlowMonitor::Reader(std::function<void(absl::Status)> ready) {
  Impl& im = *impl_;
  if (options_.netns_fd >= 0 && setns(options_.netns_fd, CLONE_NEWNET) != 0) {
    ready(absl::InternalError(
        absl::StrCat("flow monitor: entering the network namespace: ", strerror(errno))));
    return;
  }
  im.nflog = nflog_open();
  if (!im.nflog) {
    ready(absl::UnavailableError(
        absl::StrCat("flow monitor: opening an NFLOG socket: ", strerror(errno))));
    return;
  }
  im.group = nflog_bind_group(im.nflog, options_.nflog_group);
  if (!im.group) {
    ready(absl::UnavailableError(absl::StrCat("flow monitor: binding NFLOG group ",
                                              options_.nflog_group,
                                              " (another listener?): ", strerror(errno))));
    return;
  }
  if (nflog_set_mode(im.group, NFULNL_COPY_PACKET, options_.copy_range) < 0 ||
      nflog_set_qthresh(im.group, 1) < 0 || nflog_set_timeout(im.group, 1) < 0) {
    ready(absl::UnavailableError(absl::StrCat("flow monitor: configuring NFLOG group ",
                                              options_.nflog_group, ": ", strerror(errno))));
    return;
  }
  nflog_callback_register(im.group, NflogCb, &im);
  int log_fd = ::nflog_fd(im.nflog);
  SetRcvbuf(log_fd, options_.rcvbuf_bytes);

  int ct_fd = -1;
  if (options_.conntrack_events) {
    im.ct = mnl_socket_open(NETLINK_NETFILTER);
    unsigned groups = NF_NETLINK_CONNTRACK_DESTROY;
    if (options_.allowed_from_conntrack) groups |= NF_NETLINK_CONNTRACK_NEW;
    if (!im.ct || mnl_socket_bind(im.ct, groups, MNL_SOCKET_AUTOPID) < 0) {
      ready(absl::UnavailableError(
          absl::StrCat("flow monitor: joining the conntrack event groups: ", strerror(errno))));
      return;
    }
    ct_fd = mnl_socket_get_fd(im.ct);
    SetRcvbuf(ct_fd, options_.rcvbuf_bytes);
  }
  ready(absl::OkStatus());

  std::vector<char> buf(1 << 16);
  pollfd fds[3] = {{stop_fd_, POLLIN, 0}, {log_fd, POLLIN, 0}, {ct_fd, POLLIN, 0}};
  nfds_t nfds = ct_fd >= 0 ? 3 : 2;
  for (;;) {
    if (poll(fds, nfds, -1) < 0) {
      if (errno == EINTR) continue;
      spdlog::error("flow monitor: poll: {}", strerror(errno));
      return;
    }
    if (fds[0].revents) return;
    if (fds[1].revents) {
      ssize_t n = recv(log_fd, buf.data(), buf.size(), MSG_DONTWAIT);
      if (n > 0) {
        nflog_handle_packet(im.nflog, buf.data(), static_cast<int>(n));
      } else if (n < 0 && errno == ENOBUFS) {
        im.nflog_overruns.fetch_add(1, std::memory_order_relaxed);
      } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
        spdlog::error("flow monitor: NFLOG receive: {}", strerror(errno));
        return;
      }
    }
    if (nfds == 3 && fds[2].revents) {
      ssize_t n = recv(ct_fd, buf.data(), buf.size(), MSG_DONTWAIT);
      if (n > 0) {
        mnl_cb_run(
            buf.data(), static_cast<size_t>(n), 0, 0,
            [](const nlmsghdr* nlh, void* data) {
              return static_cast<Impl*>(data)->OnConntrack(nlh);
            },
            &im);
      } else if (n < 0 && errno == ENOBUFS) {
        im.conntrack_overruns.fetch_add(1, std::memory_order_relaxed);
      } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
        spdlog::error("flow monitor: conntrack receive: {}", strerror(errno));
        return;
      }
    }
  }
}

}  // namespace dfw::vmagent
