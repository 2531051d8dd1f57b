#include "dfw/vmagent/nft_monitor.h"

#include <arpa/inet.h>
#include <errno.h>
#include <libmnl/libmnl.h>
#include <libnftnl/chain.h>
#include <libnftnl/common.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <poll.h>
#include <sched.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <future>
#include <map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "spdlog/spdlog.h"

namespace dfw::vmagent {

namespace {

constexpr int kMaxAttr = 32;

// A string attribute, bounded by its payload (the kernel NUL-terminates
// them, but a short read must not run off the buffer).
std::string Str(const nlattr* a) {
  if (!a) return {};
  const char* p = static_cast<const char*>(mnl_attr_get_payload(a));
  return std::string(p, strnlen(p, mnl_attr_get_payload_len(a)));
}

int AttrCb(const nlattr* a, void* data) {
  auto** tb = static_cast<const nlattr**>(data);
  int type = mnl_attr_get_type(a);
  if (type > 0 && type < kMaxAttr) tb[type] = a;
  return MNL_CB_OK;
}

std::string Plural(int n, const char* one, const char* many) {
  return absl::StrCat(n, " ", n == 1 ? one : many);
}

const char* FamilyName(uint32_t f) {
  switch (f) {
    case NFPROTO_INET:
      return "inet";
    case NFPROTO_IPV4:
      return "ip";
    case NFPROTO_IPV6:
      return "ip6";
    case NFPROTO_ARP:
      return "arp";
    case NFPROTO_BRIDGE:
      return "bridge";
    case NFPROTO_NETDEV:
      return "netdev";
  }
  return "unknown";
}

std::string HookName(uint32_t family, uint32_t hook) {
  if (family == NFPROTO_NETDEV) {
    if (hook == 0) return "ingress";
    if (hook == 1) return "egress";
  } else if (family == NFPROTO_ARP) {
    static const char* kArp[] = {"input", "output", "forward"};
    if (hook < 3) return kArp[hook];
  } else {
    static const char* kInet[] = {"prerouting", "input",       "forward",
                                  "output",     "postrouting", "ingress"};
    if (hook < 6) return kInet[hook];
  }
  return absl::StrCat("hook", hook);
}

}  // namespace

struct NftMonitor::Pending {
  bool table_added = false, table_deleted = false;
  std::map<std::string, int> chains_added, chains_deleted;  // chain -> 1
  std::map<std::string, int> rules_added, rules_deleted;    // chain -> count
  std::map<std::string, int> sets_added, sets_deleted;      // set -> 1
  std::map<std::string, int> elems_added, elems_deleted;    // set -> count
  int others = 0;                                           // objects, flowtables
  bool any = false;

  static int Sum(const std::map<std::string, int>& m) {
    int n = 0;
    for (const auto& [k, v] : m) n += v;
    return n;
  }

  std::string Describe(const std::string& table) const {
    std::vector<std::string> parts;
    std::string t = absl::StrCat("table inet ", table);
    if (table_deleted) {
      std::vector<std::string> with;
      if (!chains_deleted.empty()) with.push_back(Plural(Sum(chains_deleted), "chain", "chains"));
      if (!rules_deleted.empty()) with.push_back(Plural(Sum(rules_deleted), "rule", "rules"));
      if (!sets_deleted.empty()) with.push_back(Plural(Sum(sets_deleted), "set", "sets"));
      parts.push_back(absl::StrCat(
          "deleted ", t,
          with.empty() ? "" : absl::StrCat(" (with ", absl::StrJoin(with, ", "), ")")));
    } else {
      for (const auto& [c, n] : chains_deleted) parts.push_back(absl::StrCat("deleted chain ", c));
      for (const auto& [c, n] : rules_deleted) {
        parts.push_back(absl::StrCat("deleted ", Plural(n, "rule", "rules"), " in chain ", c));
      }
      for (const auto& [s, n] : sets_deleted) parts.push_back(absl::StrCat("deleted set ", s));
      for (const auto& [s, n] : elems_deleted) {
        parts.push_back(
            absl::StrCat("deleted ", Plural(n, "element", "elements"), " from set ", s));
      }
    }
    if (table_added) {
      parts.push_back(absl::StrCat(table_deleted ? "created " : "added or changed ", t));
    }
    for (const auto& [c, n] : chains_added) {
      parts.push_back(absl::StrCat("added or changed chain ", c));
    }
    for (const auto& [c, n] : rules_added) {
      parts.push_back(absl::StrCat("added ", Plural(n, "rule", "rules"), " in chain ", c));
    }
    for (const auto& [s, n] : sets_added) parts.push_back(absl::StrCat("added set ", s));
    for (const auto& [s, n] : elems_added) {
      parts.push_back(absl::StrCat("added ", Plural(n, "element", "elements"), " to set ", s));
    }
    if (others)
      parts.push_back(absl::StrCat("changed ", Plural(others, "other object", "other objects")));
    return absl::StrJoin(parts, ", ");
  }
};

NftMonitor::NftMonitor(NftMonitorOptions options, Callback on_foreign_change)
    : options_(std::move(options)),
      callback_(std::move(on_foreign_change)),
      self_pid_(options_.self_pid ? options_.self_pid : getpid()),
      pending_(std::make_unique<Pending>()) {}

NftMonitor::~NftMonitor() { Stop(); }

absl::Status NftMonitor::Start() {
  if (thread_.joinable()) return absl::FailedPreconditionError("nft monitor: already started");
  stop_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (stop_fd_ < 0) {
    return absl::InternalError(absl::StrCat("nft monitor: eventfd: ", strerror(errno)));
  }
  std::promise<absl::Status> ready;
  std::future<absl::Status> started = ready.get_future();
  thread_ = std::thread([this, &ready] {
    Run(options_.netns_fd, [&ready](absl::Status s) { ready.set_value(std::move(s)); });
  });
  absl::Status s = started.get();
  if (!s.ok()) Stop();
  return s;
}

void NftMonitor::Stop() {
  if (thread_.joinable()) {
    uint64_t one = 1;
    (void)!write(stop_fd_, &one, sizeof(one));
    thread_.join();
  }
  if (stop_fd_ >= 0) {
    close(stop_fd_);
    stop_fd_ = -1;
  }
}

bool NftMonitor::IsOurs(uint32_t pid) const {
  if (pid == static_cast<uint32_t>(self_pid_)) return true;
  if (self_pid_ != getpid()) return false;
  // Another thread of this process committed it.
  std::string task = absl::StrCat("/proc/self/task/", pid);
  return access(task.c_str(), F_OK) == 0;
}

void NftMonitor::Run(int netns_fd, std::function<void(absl::Status)> ready) {
  if (netns_fd >= 0 && setns(netns_fd, CLONE_NEWNET) != 0) {
    ready(absl::InternalError(
        absl::StrCat("nft monitor: entering the network namespace: ", strerror(errno))));
    return;
  }
  mnl_socket* nl = mnl_socket_open(NETLINK_NETFILTER);
  if (!nl) {
    ready(absl::UnavailableError(
        absl::StrCat("nft monitor: opening a netfilter netlink socket: ", strerror(errno))));
    return;
  }
  int group = NFNLGRP_NFTABLES;
  if (mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0 ||
      mnl_socket_setsockopt(nl, NETLINK_ADD_MEMBERSHIP, &group, sizeof(group)) < 0) {
    int err = errno;
    mnl_socket_close(nl);
    ready(absl::UnavailableError(
        absl::StrCat("nft monitor: joining the nf_tables notification group: ", strerror(err))));
    return;
  }
  int fd = mnl_socket_get_fd(nl);
  int rcvbuf = options_.rcvbuf_bytes;
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) != 0) {
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
  }
  ready(absl::OkStatus());

  std::vector<char> buf(1 << 17);
  pollfd fds[2] = {{fd, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
  for (;;) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      std::string err = absl::StrCat("nf_tables monitor stopped: poll: ", strerror(errno));
      spdlog::error("{}", err);
      callback_(std::move(err));
      break;
    }
    if (fds[1].revents) break;
    if (!(fds[0].revents & (POLLIN | POLLERR))) continue;
    ssize_t n = recv(fd, buf.data(), buf.size(), MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      if (errno == ENOBUFS) {
        overruns_.fetch_add(1, std::memory_order_relaxed);
        foreign_.fetch_add(1, std::memory_order_relaxed);
        *pending_ = Pending{};
        callback_(
            "nf_tables notifications were lost (socket overrun): changes of unknown origin, the "
            "table must be verified");
        continue;
      }
      std::string err =
          absl::StrCat("nf_tables monitor stopped: receiving notifications: ", strerror(errno));
      spdlog::error("{}", err);
      callback_(std::move(err));
      break;
    }
    mnl_cb_run(
        buf.data(), static_cast<size_t>(n), 0, 0,
        [](const nlmsghdr* nlh, void* data) {
          return static_cast<NftMonitor*>(data)->HandleMessage(nlh);
        },
        this);
  }
  mnl_socket_close(nl);
}

int NftMonitor::HandleMessage(const nlmsghdr* nlh) {
  if (NFNL_SUBSYS_ID(nlh->nlmsg_type) != NFNL_SUBSYS_NFTABLES) return MNL_CB_OK;
  if (nlh->nlmsg_len < NLMSG_LENGTH(sizeof(nfgenmsg))) return MNL_CB_OK;
  const auto* nfg = static_cast<const nfgenmsg*>(mnl_nlmsg_get_payload(nlh));
  const nlattr* tb[kMaxAttr] = {};
  if (mnl_attr_parse(nlh, sizeof(nfgenmsg), AttrCb, tb) < 0) return MNL_CB_OK;
  int type = NFNL_MSG_TYPE(nlh->nlmsg_type);
  Pending& p = *pending_;

  if (type == NFT_MSG_NEWGEN) {
    transactions_.fetch_add(1, std::memory_order_relaxed);
    if (!p.any) return MNL_CB_OK;
    uint32_t pid = tb[NFTA_GEN_PROC_PID] ? ntohl(mnl_attr_get_u32(tb[NFTA_GEN_PROC_PID])) : 0;
    std::string name = Str(tb[NFTA_GEN_PROC_NAME]);
    if (!IsOurs(pid)) {
      std::string what = absl::StrCat(name.empty() ? "an unknown process" : name, " (pid ", pid,
                                      ") ", p.Describe(options_.table));
      foreign_.fetch_add(1, std::memory_order_relaxed);
      callback_(std::move(what));
    }
    p = Pending{};
    return MNL_CB_OK;
  }

  // Every object message names its table in attribute 1 (NFTA_TABLE_NAME,
  // NFTA_CHAIN_TABLE, NFTA_RULE_TABLE, NFTA_SET_TABLE,
  // NFTA_SET_ELEM_LIST_TABLE, NFTA_OBJ_TABLE, NFTA_FLOWTABLE_TABLE).
  if (nfg->nfgen_family != NFPROTO_INET || Str(tb[1]) != options_.table) return MNL_CB_OK;
  switch (type) {
    case NFT_MSG_NEWTABLE:
      p.table_added = true;
      break;
    case NFT_MSG_DELTABLE:
      p.table_deleted = true;
      break;
    case NFT_MSG_NEWCHAIN:
      p.chains_added[Str(tb[NFTA_CHAIN_NAME])] = 1;
      break;
    case NFT_MSG_DELCHAIN:
      p.chains_deleted[Str(tb[NFTA_CHAIN_NAME])] = 1;
      break;
    case NFT_MSG_NEWRULE:
      ++p.rules_added[Str(tb[NFTA_RULE_CHAIN])];
      break;
    case NFT_MSG_DELRULE:
      ++p.rules_deleted[Str(tb[NFTA_RULE_CHAIN])];
      break;
    case NFT_MSG_NEWSET:
      p.sets_added[Str(tb[NFTA_SET_NAME])] = 1;
      break;
    case NFT_MSG_DELSET:
      p.sets_deleted[Str(tb[NFTA_SET_NAME])] = 1;
      break;
    case NFT_MSG_NEWSETELEM:
    case NFT_MSG_DELSETELEM: {
      int n = 0;
      if (const nlattr* list = tb[NFTA_SET_ELEM_LIST_ELEMENTS]) {
        mnl_attr_parse_nested(
            list,
            [](const nlattr*, void* data) {
              ++*static_cast<int*>(data);
              return MNL_CB_OK;
            },
            &n);
      }
      auto& m = type == NFT_MSG_NEWSETELEM ? p.elems_added : p.elems_deleted;
      m[Str(tb[NFTA_SET_ELEM_LIST_SET])] += n;
      break;
    }
    case NFT_MSG_NEWOBJ:
    case NFT_MSG_DELOBJ:
    case NFT_MSG_NEWFLOWTABLE:
    case NFT_MSG_DELFLOWTABLE:
      ++p.others;
      break;
    default:
      return MNL_CB_OK;  // gets, resets, traces: not changes
  }
  p.any = true;
  return MNL_CB_OK;
}

namespace {

int ChainCb(const nlmsghdr* nlh, void* data) {
  auto* out = static_cast<std::vector<ForeignBaseChain>*>(data);
  nftnl_chain* c = nftnl_chain_alloc();
  if (!c) return MNL_CB_ERROR;
  if (nftnl_chain_nlmsg_parse(nlh, c) == 0 && nftnl_chain_is_set(c, NFTNL_CHAIN_HOOKNUM)) {
    ForeignBaseChain b;
    uint32_t family = nftnl_chain_get_u32(c, NFTNL_CHAIN_FAMILY);
    uint32_t hook = nftnl_chain_get_u32(c, NFTNL_CHAIN_HOOKNUM);
    b.family = FamilyName(family);
    auto str = [&](uint16_t attr) {
      const char* s = nftnl_chain_is_set(c, attr) ? nftnl_chain_get_str(c, attr) : nullptr;
      return std::string(s ? s : "");
    };
    b.table = str(NFTNL_CHAIN_TABLE);
    b.chain = str(NFTNL_CHAIN_NAME);
    b.type = str(NFTNL_CHAIN_TYPE);
    b.device = str(NFTNL_CHAIN_DEV);
    b.hook = HookName(family, hook);
    b.priority = nftnl_chain_is_set(c, NFTNL_CHAIN_PRIO)
                     ? static_cast<int32_t>(nftnl_chain_get_u32(c, NFTNL_CHAIN_PRIO))
                     : 0;
    uint32_t policy = nftnl_chain_is_set(c, NFTNL_CHAIN_POLICY)
                          ? nftnl_chain_get_u32(c, NFTNL_CHAIN_POLICY)
                          : NF_ACCEPT;
    b.policy = policy == NF_DROP ? "drop" : "accept";
    b.on_input_or_output =
        (family == NFPROTO_INET || family == NFPROTO_IPV4 || family == NFPROTO_IPV6) &&
        (hook == NF_INET_LOCAL_IN || hook == NF_INET_LOCAL_OUT);
    out->push_back(std::move(b));
  }
  nftnl_chain_free(c);
  return MNL_CB_OK;
}

}  // namespace

absl::StatusOr<std::vector<ForeignBaseChain>> NftMonitor::ListForeignBaseChains(
    std::string_view our_table) {
  // A dump interrupted by a concurrent change (NLM_F_DUMP_INTR: EINTR) is
  // retried.
  for (int attempt = 0;; ++attempt) {
    mnl_socket* nl = mnl_socket_open(NETLINK_NETFILTER);
    if (!nl) {
      return absl::UnavailableError(absl::StrCat(
          "listing base chains: opening a netfilter netlink socket: ", strerror(errno)));
    }
    if (mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0) {
      int err = errno;
      mnl_socket_close(nl);
      return absl::UnavailableError(
          absl::StrCat("listing base chains: binding the socket: ", strerror(err)));
    }
    uint32_t portid = mnl_socket_get_portid(nl);
    std::vector<char> buf(32768);  // MNL_SOCKET_DUMP_SIZE (newer libmnl)
    uint32_t seq = static_cast<uint32_t>(time(nullptr)) + attempt;
    nlmsghdr* nlh =
        nftnl_nlmsg_build_hdr(buf.data(), NFT_MSG_GETCHAIN, NFPROTO_UNSPEC, NLM_F_DUMP, seq);
    std::vector<ForeignBaseChain> all;
    int ret = -1;
    if (mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) >= 0) {
      while ((ret = static_cast<int>(mnl_socket_recvfrom(nl, buf.data(), buf.size()))) > 0) {
        ret = mnl_cb_run(buf.data(), static_cast<size_t>(ret), seq, portid, ChainCb, &all);
        if (ret <= MNL_CB_STOP) break;
      }
    }
    int err = errno;
    mnl_socket_close(nl);
    if (ret < 0) {
      if (err == EINTR && attempt < 5) continue;
      return absl::UnavailableError(
          absl::StrCat("listing base chains: nf_tables chain dump: ", strerror(err)));
    }
    std::vector<ForeignBaseChain> out;
    for (auto& b : all) {
      if (b.family == "inet" && b.table == our_table) continue;
      out.push_back(std::move(b));
    }
    return out;
  }
}

}  // namespace dfw::vmagent
