#include "dfw/vmagent/conntrack.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libnetfilter_conntrack/libnetfilter_conntrack.h>
#include <netinet/in.h>
#include <string.h>
#include <unistd.h>

#include <memory>
#include <string>

#include "absl/strings/str_cat.h"

namespace dfw::vmagent {

namespace {

std::string Addr4(uint32_t net_order) {
  char buf[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &net_order, buf, sizeof(buf));
  return buf;
}

std::string Addr6(const void* p) {
  char buf[INET6_ADDRSTRLEN];
  inet_ntop(AF_INET6, p, buf, sizeof(buf));
  return buf;
}

bool IsIcmp(uint8_t proto) { return proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6; }

struct HandleCloser {
  void operator()(nfct_handle* h) const { nfct_close(h); }
};
using Handle = std::unique_ptr<nfct_handle, HandleCloser>;

absl::StatusOr<Handle> Open() {
  nfct_handle* h = nfct_open(CONNTRACK, 0);
  if (!h) {
    return absl::UnavailableError(
        absl::StrCat("conntrack: opening a ctnetlink socket: ", strerror(errno)));
  }
  return Handle(h);
}

struct DumpState {
  const std::function<bool(const CtEntry&)>* pred = nullptr;  // DeleteIf
  std::vector<CtEntry>* out = nullptr;                        // List
  std::vector<nf_conntrack*> victims;
};

int DumpCb(enum nf_conntrack_msg_type, struct nf_conntrack* ct, void* data) {
  auto* st = static_cast<DumpState*>(data);
  CtEntry e = CtEntryFrom(ct);
  if (st->pred && (*st->pred)(e)) {
    if (nf_conntrack* c = nfct_clone(ct)) st->victims.push_back(c);
  }
  if (st->out) st->out->push_back(std::move(e));
  return NFCT_CB_CONTINUE;
}

absl::Status Dump(int family, DumpState* st) {
  auto h = Open();
  if (!h.ok()) return h.status();
  nfct_callback_register(h->get(), NFCT_T_ALL, DumpCb, st);
  uint32_t fam = static_cast<uint32_t>(family);
  if (nfct_query(h->get(), NFCT_Q_DUMP, &fam) < 0) {
    return absl::UnavailableError(absl::StrCat("conntrack: dumping the table: ", strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace

CtEntry CtEntryFrom(const struct nf_conntrack* ct) {
  CtEntry e;
  e.family = nfct_get_attr_u8(ct, ATTR_L3PROTO);
  e.proto = nfct_get_attr_u8(ct, ATTR_L4PROTO);
  if (e.family == AF_INET) {
    e.src = Addr4(nfct_get_attr_u32(ct, ATTR_IPV4_SRC));
    e.dst = Addr4(nfct_get_attr_u32(ct, ATTR_IPV4_DST));
    e.reply_src = Addr4(nfct_get_attr_u32(ct, ATTR_REPL_IPV4_SRC));
    e.reply_dst = Addr4(nfct_get_attr_u32(ct, ATTR_REPL_IPV4_DST));
  } else if (e.family == AF_INET6) {
    e.src = Addr6(nfct_get_attr(ct, ATTR_IPV6_SRC));
    e.dst = Addr6(nfct_get_attr(ct, ATTR_IPV6_DST));
    e.reply_src = Addr6(nfct_get_attr(ct, ATTR_REPL_IPV6_SRC));
    e.reply_dst = Addr6(nfct_get_attr(ct, ATTR_REPL_IPV6_DST));
  }
  if (IsIcmp(e.proto)) {
    e.sport = nfct_get_attr_u8(ct, ATTR_ICMP_TYPE);
    e.dport = nfct_get_attr_u8(ct, ATTR_ICMP_CODE);
    e.icmp_id = ntohs(nfct_get_attr_u16(ct, ATTR_ICMP_ID));
  } else if (nfct_attr_is_set(ct, ATTR_PORT_SRC) > 0) {
    e.sport = ntohs(nfct_get_attr_u16(ct, ATTR_PORT_SRC));
    e.dport = ntohs(nfct_get_attr_u16(ct, ATTR_PORT_DST));
    e.reply_sport = ntohs(nfct_get_attr_u16(ct, ATTR_REPL_PORT_SRC));
    e.reply_dport = ntohs(nfct_get_attr_u16(ct, ATTR_REPL_PORT_DST));
  }
  auto u32 = [&](enum nf_conntrack_attr a) {
    return nfct_attr_is_set(ct, a) > 0 ? nfct_get_attr_u32(ct, a) : 0;
  };
  auto u64 = [&](enum nf_conntrack_attr a) {
    return nfct_attr_is_set(ct, a) > 0 ? nfct_get_attr_u64(ct, a) : uint64_t{0};
  };
  e.mark = u32(ATTR_MARK);
  e.status = u32(ATTR_STATUS);
  e.timeout = u32(ATTR_TIMEOUT);
  e.id = u32(ATTR_ID);
  e.orig_packets = u64(ATTR_ORIG_COUNTER_PACKETS);
  e.orig_bytes = u64(ATTR_ORIG_COUNTER_BYTES);
  e.reply_packets = u64(ATTR_REPL_COUNTER_PACKETS);
  e.reply_bytes = u64(ATTR_REPL_COUNTER_BYTES);
  if (e.proto == IPPROTO_TCP && nfct_attr_is_set(ct, ATTR_TCP_STATE) > 0) {
    e.tcp_state = nfct_get_attr_u8(ct, ATTR_TCP_STATE);
  }
  if (nfct_attr_is_set(ct, ATTR_ZONE) > 0) e.zone = nfct_get_attr_u16(ct, ATTR_ZONE);
  return e;
}

absl::StatusOr<std::vector<CtEntry>> Conntrack::List(int family) {
  std::vector<CtEntry> out;
  DumpState st;
  st.out = &out;
  if (absl::Status s = Dump(family, &st); !s.ok()) return s;
  return out;
}

absl::StatusOr<size_t> Conntrack::DeleteIf(const std::function<bool(const CtEntry&)>& pred,
                                           int family) {
  DumpState st;
  st.pred = &pred;
  absl::Status s = Dump(family, &st);
  size_t deleted = 0;
  int first_errno = 0;
  if (s.ok() && !st.victims.empty()) {
    auto h = Open();
    if (!h.ok()) {
      s = h.status();
    } else {
      for (nf_conntrack* ct : st.victims) {
        if (nfct_query(h->get(), NFCT_Q_DESTROY, ct) == 0) {
          ++deleted;
        } else if (errno != ENOENT && first_errno == 0) {
          first_errno = errno;
        }
      }
    }
  }
  for (nf_conntrack* ct : st.victims) nfct_destroy(ct);
  if (!s.ok()) return s;
  if (first_errno != 0) {
    return absl::UnavailableError(absl::StrCat("conntrack: deleting entries (", deleted,
                                               " deleted): ", strerror(first_errno)));
  }
  return deleted;
}

absl::Status Conntrack::EnableAccounting() {
  constexpr const char* kPath = "/proc/sys/net/netfilter/nf_conntrack_acct";
  int fd = open(kPath, O_WRONLY | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT) {
    // nf_conntrack is not loaded in this kernel yet: a ctnetlink request
    // loads it (and with it the sysctl).
    (void)List(AF_INET);
    fd = open(kPath, O_WRONLY | O_CLOEXEC);
  }
  if (fd < 0) {
    return absl::UnavailableError(
        absl::StrCat("conntrack: opening ", kPath, ": ", strerror(errno)));
  }
  ssize_t n = write(fd, "1\n", 2);
  int err = errno;
  close(fd);
  if (n != 2) {
    return absl::UnavailableError(absl::StrCat("conntrack: writing 1 to ", kPath, ": ",
                                               n < 0 ? strerror(err) : "short write"));
  }
  return absl::OkStatus();
}

}  // namespace dfw::vmagent
