#include "dfw/vmagent/nft_backend.h"

#include <errno.h>
#include <libmnl/libmnl.h>
#include <libnftnl/chain.h>
#include <libnftnl/common.h>
#include <libnftnl/expr.h>
#include <libnftnl/rule.h>
#include <libnftnl/set.h>
#include <libnftnl/table.h>
#include <libnftnl/udata.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <nftables/libnftables.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <chrono>
#include <cstring>
#include <functional>
#include <memory>
#include <set>

namespace dfw::vmagent {
namespace {

double MsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// libnftables, one transaction from text. "" on success, else nft's error.
std::string RunNft(const std::string& text) {
  nft_ctx* ctx = nft_ctx_new(NFT_CTX_DEFAULT);
  if (!ctx) return "nft_ctx_new failed";
  nft_ctx_buffer_output(ctx);
  nft_ctx_buffer_error(ctx);
  const int rc = nft_run_cmd_from_buffer(ctx, text.c_str());
  std::string err;
  if (rc != 0) {
    err = nft_ctx_get_error_buffer(ctx);
    if (err.empty()) err = "nft_run_cmd_from_buffer failed";
    if (err.size() > 2000) err = err.substr(0, 2000) + "...";
  }
  nft_ctx_free(ctx);
  return err;
}

// A libmnl netlink socket on NETLINK_NETFILTER in the thread's namespace.
struct Mnl {
  mnl_socket* nl = nullptr;
  uint32_t portid = 0;
  ~Mnl() {
    if (nl) mnl_socket_close(nl);
  }
  absl::Status Open() {
    nl = mnl_socket_open(NETLINK_NETFILTER);
    if (!nl) return absl::InternalError(std::string("netlink socket: ") + strerror(errno));
    if (mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0) {
      return absl::InternalError(std::string("netlink bind: ") + strerror(errno));
    }
    portid = mnl_socket_get_portid(nl);
    timeval tv{10, 0};
    setsockopt(mnl_socket_get_fd(nl), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return absl::OkStatus();
  }
};

// A dump request; cb gets each message. NOT_FOUND when the kernel says ENOENT.
absl::Status Dump(uint16_t type, const std::function<void(nlmsghdr*)>& payload,
                  const std::function<void(const nlmsghdr*)>& cb) {
  Mnl m;
  if (auto st = m.Open(); !st.ok()) return st;
  std::vector<char> buf(MNL_SOCKET_BUFFER_SIZE * 4);
  const uint32_t seq = static_cast<uint32_t>(time(nullptr));
  nlmsghdr* nlh =
      nftnl_nlmsg_build_hdr(buf.data(), type, NFPROTO_INET, NLM_F_DUMP | NLM_F_ACK, seq);
  if (payload) payload(nlh);
  if (mnl_socket_sendto(m.nl, nlh, nlh->nlmsg_len) < 0) {
    return absl::InternalError(std::string("netlink send: ") + strerror(errno));
  }
  struct Ctx {
    const std::function<void(const nlmsghdr*)>* cb;
  } ctx{&cb};
  auto trampoline = [](const nlmsghdr* h, void* data) -> int {
    (*static_cast<Ctx*>(data)->cb)(h);
    return MNL_CB_OK;
  };
  while (true) {
    const ssize_t n = mnl_socket_recvfrom(m.nl, buf.data(), buf.size());
    if (n < 0) return absl::InternalError(std::string("netlink receive: ") + strerror(errno));
    const int rc = mnl_cb_run(buf.data(), static_cast<size_t>(n), seq, m.portid, trampoline, &ctx);
    if (rc == MNL_CB_STOP) return absl::OkStatus();
    if (rc < 0) {
      if (errno == ENOENT) return absl::NotFoundError("not found");
      return absl::InternalError(std::string("netlink dump: ") + strerror(errno));
    }
  }
}

std::string RuleComment(const nftnl_rule* r) {
  if (!nftnl_rule_is_set(r, NFTNL_RULE_USERDATA)) return "";
  uint32_t len = 0;
  const void* data = nftnl_rule_get_data(r, NFTNL_RULE_USERDATA, &len);
  std::string comment;
  auto cb = [](const nftnl_udata* attr, void* out) -> int {
    if (nftnl_udata_type(attr) == NFTNL_UDATA_RULE_COMMENT) {
      const char* v = static_cast<const char*>(nftnl_udata_get(attr));
      const uint32_t l = nftnl_udata_len(attr);
      static_cast<std::string*>(out)->assign(v, l > 0 && v[l - 1] == '\0' ? l - 1 : l);
    }
    return 0;
  };
  nftnl_udata_parse(data, len, cb, &comment);
  return comment;
}

struct DumpedRule {
  std::string chain;
  std::string comment;
  PacketsBytes counter;
  bool has_counter = false;
  int verdict = 0;  // 1 accept, 2 drop, 3 reject, 0 other
};

absl::StatusOr<std::vector<DumpedRule>> DumpRules(const std::string& table) {
  std::vector<DumpedRule> out;
  auto payload = [&](nlmsghdr* nlh) {
    nftnl_rule* r = nftnl_rule_alloc();
    nftnl_rule_set_str(r, NFTNL_RULE_TABLE, table.c_str());
    nftnl_rule_nlmsg_build_payload(nlh, r);
    nftnl_rule_free(r);
  };
  auto cb = [&](const nlmsghdr* nlh) {
    nftnl_rule* r = nftnl_rule_alloc();
    if (nftnl_rule_nlmsg_parse(nlh, r) < 0) {
      nftnl_rule_free(r);
      return;
    }
    const char* t = nftnl_rule_get_str(r, NFTNL_RULE_TABLE);
    if (!t || table != t) {
      nftnl_rule_free(r);
      return;
    }
    DumpedRule d;
    d.chain = nftnl_rule_get_str(r, NFTNL_RULE_CHAIN);
    d.comment = RuleComment(r);
    nftnl_expr_iter* it = nftnl_expr_iter_create(r);
    for (nftnl_expr* e = nftnl_expr_iter_next(it); e; e = nftnl_expr_iter_next(it)) {
      const std::string name = nftnl_expr_get_str(e, NFTNL_EXPR_NAME);
      if (name == "counter") {
        d.has_counter = true;
        d.counter.packets += nftnl_expr_get_u64(e, NFTNL_EXPR_CTR_PACKETS);
        d.counter.bytes += nftnl_expr_get_u64(e, NFTNL_EXPR_CTR_BYTES);
      } else if (name == "reject") {
        d.verdict = 3;
      } else if (name == "immediate" && nftnl_expr_is_set(e, NFTNL_EXPR_IMM_VERDICT)) {
        const int v = static_cast<int>(nftnl_expr_get_u32(e, NFTNL_EXPR_IMM_VERDICT));
        d.verdict = v == NF_ACCEPT ? 1 : v == NF_DROP ? 2 : 0;
      }
    }
    nftnl_expr_iter_destroy(it);
    nftnl_rule_free(r);
    out.push_back(std::move(d));
  };
  if (auto st = Dump(NFT_MSG_GETRULE, payload, cb); !st.ok()) return st;
  return out;
}

// Names of the table's chains or sets (definitions only).
absl::StatusOr<std::set<std::string>> DumpNames(const std::string& table, bool sets) {
  std::set<std::string> out;
  auto cb = [&](const nlmsghdr* nlh) {
    if (sets) {
      nftnl_set* s = nftnl_set_alloc();
      if (nftnl_set_nlmsg_parse(nlh, s) == 0 && table == nftnl_set_get_str(s, NFTNL_SET_TABLE)) {
        out.insert(nftnl_set_get_str(s, NFTNL_SET_NAME));
      }
      nftnl_set_free(s);
    } else {
      nftnl_chain* c = nftnl_chain_alloc();
      if (nftnl_chain_nlmsg_parse(nlh, c) == 0 &&
          table == nftnl_chain_get_str(c, NFTNL_CHAIN_TABLE)) {
        out.insert(nftnl_chain_get_str(c, NFTNL_CHAIN_NAME));
      }
      nftnl_chain_free(c);
    }
  };
  auto payload = [&](nlmsghdr* nlh) {
    if (sets) {
      nftnl_set* s = nftnl_set_alloc();
      nftnl_set_set_str(s, NFTNL_SET_TABLE, table.c_str());
      nftnl_set_nlmsg_build_payload(nlh, s);
      nftnl_set_free(s);
    }
  };
  if (auto st = Dump(sets ? NFT_MSG_GETSET : NFT_MSG_GETCHAIN, payload, cb); !st.ok()) return st;
  return out;
}

absl::StatusOr<bool> TableExists(const std::string& table) {
  bool found = false;
  auto cb = [&](const nlmsghdr* nlh) {
    nftnl_table* t = nftnl_table_alloc();
    if (nftnl_table_nlmsg_parse(nlh, t) == 0 &&
        nftnl_table_get_u32(t, NFTNL_TABLE_FAMILY) == NFPROTO_INET &&
        table == nftnl_table_get_str(t, NFTNL_TABLE_NAME)) {
      found = true;
    }
    nftnl_table_free(t);
  };
  if (auto st = Dump(NFT_MSG_GETTABLE, nullptr, cb); !st.ok()) return st;
  return found;
}

// One set's element changes: deletions then additions.
struct ElementChange {
  std::string set;  // kernel name
  Family family;
  std::vector<SetElement> del, add;
};

absl::Status SendElementBatch(const std::string& table, const std::vector<ElementChange>& changes,
                              size_t* sent) {
  // Elements per NEWSETELEM/DELSETELEM message: the element list is one
  // netlink attribute, whose length is 16 bits. An IPv6 end element takes
  // 36 bytes; 1024 of them stay well below 64 KiB.
  constexpr size_t kPerMsg = 1024;
  size_t elems = 0, msgs = 2;
  for (const auto& c : changes) {
    elems += c.del.size() + c.add.size();
    msgs += (c.del.size() + kPerMsg - 1) / kPerMsg + (c.add.size() + kPerMsg - 1) / kPerMsg;
  }
  *sent = elems;
  if (elems == 0) return absl::OkStatus();
  std::vector<char> buf(4096 + msgs * 512 + elems * 128);
  size_t off = 0;
  uint32_t seq = static_cast<uint32_t>(time(nullptr)) << 8;
  const uint32_t first_seq = seq;
  auto next = [&](nlmsghdr* nlh) { off += NLMSG_ALIGN(nlh->nlmsg_len); };
  next(nftnl_batch_begin(buf.data() + off, seq++));
  uint32_t last_seq = 0;
  // Index of the last element message, to ask for its ack.
  size_t remaining_msgs = msgs - 2;
  for (const auto& c : changes) {
    for (int pass = 0; pass < 2; ++pass) {
      const auto& list = pass == 0 ? c.del : c.add;
      for (size_t i = 0; i < list.size(); i += kPerMsg) {
        nftnl_set* s = nftnl_set_alloc();
        nftnl_set_set_str(s, NFTNL_SET_TABLE, table.c_str());
        nftnl_set_set_str(s, NFTNL_SET_NAME, c.set.c_str());
        for (size_t k = i; k < list.size() && k < i + kPerMsg; ++k) {
          const SetElement& el = list[k];
          nftnl_set_elem* e = nftnl_set_elem_alloc();
          uint8_t key[16];
          const size_t len = AddrBytes(c.family, el.key, key);
          nftnl_set_elem_set(e, NFTNL_SET_ELEM_KEY, key, static_cast<uint32_t>(len));
          if (el.end) nftnl_set_elem_set_u32(e, NFTNL_SET_ELEM_FLAGS, NFT_SET_ELEM_INTERVAL_END);
          if (el.open) {
            nftnl_udata_buf* ud = nftnl_udata_buf_alloc(NFT_USERDATA_MAXLEN);
            nftnl_udata_put_u32(ud, NFTNL_UDATA_SET_ELEM_FLAGS, NFTNL_SET_ELEM_F_INTERVAL_OPEN);
            nftnl_set_elem_set(e, NFTNL_SET_ELEM_USERDATA, nftnl_udata_buf_data(ud),
                               nftnl_udata_buf_len(ud));
            nftnl_udata_buf_free(ud);
          }
          nftnl_set_elem_add(s, e);
        }
        const bool last = --remaining_msgs == 0;
        uint16_t flags = pass == 0 ? 0 : NLM_F_CREATE;
        if (last) flags |= NLM_F_ACK;
        if (last) last_seq = seq;
        nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf.data() + off,
                                              pass == 0 ? NFT_MSG_DELSETELEM : NFT_MSG_NEWSETELEM,
                                              NFPROTO_INET, flags, seq++);
        nftnl_set_elems_nlmsg_build_payload(nlh, s);
        nftnl_set_free(s);
        next(nlh);
      }
    }
  }
  next(nftnl_batch_end(buf.data() + off, seq++));
  Mnl m;
  if (auto st = m.Open(); !st.ok()) return st;
  if (off > 200000) {
    int size = static_cast<int>(off + 65536);
    setsockopt(mnl_socket_get_fd(m.nl), SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof(size));
  }
  if (mnl_socket_sendto(m.nl, buf.data(), off) < 0) {
    return absl::InternalError(std::string("netlink send of the element batch: ") +
                               strerror(errno));
  }
  // nfnetlink answers the whole batch before sendto returns: errors of any
  // message, and the ack of the last one.
  std::string errors;
  bool acked = false;
  std::vector<char> rbuf(MNL_SOCKET_BUFFER_SIZE);
  while (!acked) {
    const ssize_t n = mnl_socket_recvfrom(m.nl, rbuf.data(), rbuf.size());
    if (n < 0) {
      return absl::InternalError(std::string("netlink receive after the element batch: ") +
                                 strerror(errno) + "; whether it applied is unknown");
    }
    int len = static_cast<int>(n);
    for (nlmsghdr* h = reinterpret_cast<nlmsghdr*>(rbuf.data()); mnl_nlmsg_ok(h, len);
         h = mnl_nlmsg_next(h, &len)) {
      if (h->nlmsg_type != NLMSG_ERROR) continue;
      const auto* err = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(h));
      if (err->error != 0) {
        errors += (errors.empty() ? "" : "; ") + std::string("message ") +
                  std::to_string(h->nlmsg_seq - first_seq) + ": " + strerror(-err->error);
      }
      if (h->nlmsg_seq == last_seq) acked = true;
    }
  }
  if (!errors.empty()) return absl::AbortedError("element batch refused: " + errors);
  return absl::OkStatus();
}

// Element-level changes between two range lists of a set: the elements of
// the ranges removed and of the ranges added, plus nft's end element at 0.
// zero_before/after: nft's end element at 0 is (was) there: the set is
// non-empty and does not start at 0.
void ElementDiff(Family f, bool zero_before, bool zero_after, const std::vector<AddrRange>& removed,
                 const std::vector<AddrRange>& added, std::vector<SetElement>* del,
                 std::vector<SetElement>* add) {
  std::set<SetElement> d, a;
  for (const auto& e : ElementsOf(f, removed)) d.insert(e);
  for (const auto& e : ElementsOf(f, added)) a.insert(e);
  const SetElement zero{Addr{}, true, false};
  d.erase(zero);
  a.erase(zero);
  if (zero_before && !zero_after) d.insert(zero);
  if (!zero_before && zero_after) a.insert(zero);
  // No cancelling of an element deleted and added again: the kernel checks
  // every added start/end pair against the set without the deleted ones (an
  // end inside a live interval is refused), as nft sends a split range: the
  // old range deleted whole, its pieces added.
  del->assign(d.begin(), d.end());
  add->assign(a.begin(), a.end());
}

bool ZeroEnd(const AddrRanges& r, Family f) {
  AddrRange first;
  return r.First(f, &first) && first.first != Addr{};
}

std::string Quote(const std::string& table) { return "inet " + table; }

}  // namespace

std::vector<SetElement> ElementsOf(Family f, const std::vector<AddrRange>& ranges) {
  std::vector<SetElement> out;
  if (ranges.empty()) return out;
  if (ranges[0].first != Addr{}) out.push_back(SetElement{Addr{}, true, false});
  for (const auto& r : ranges) {
    const bool open = r.last == MaxAddr(f);
    out.push_back(SetElement{r.first, false, open});
    if (!open) out.push_back(SetElement{Next(r.last), true, false});
  }
  return out;
}

const AddrRanges* NftBackend::Set(const std::string& id) const {
  auto it = sets_.find(id);
  return it == sets_.end() ? nullptr : &it->second.ranges;
}

absl::Status NftBackend::ApplyFull(const v1::HostDesiredState& state, const InterfaceMap& ifaces,
                                   const RenderOptions& o) {
  SetNames names = names_;
  ChainIds ids = chain_ids_;
  std::map<std::string, SetState> sets;
  for (int i = 0; i < state.address_sets_size(); ++i) {
    const auto& as = state.address_sets(i);
    auto d = sets[as.id()].ranges.Apply(as.prefixes(), std::vector<std::string>{});
    if (!d.ok()) {
      return absl::InvalidArgumentError("address_sets[" + std::to_string(i) +
                                        "].prefixes: " + std::string(d.status().message()));
    }
  }
  // Names of sets no longer sent are freed, chains of vNICs no longer sent too.
  for (auto it = names.all().begin(); it != names.all().end();) {
    const std::string id = it->first;
    ++it;
    if (!sets.count(id)) names.Erase(id);
  }
  std::set<std::string> vnics;
  for (const auto& rs : state.rulesets()) vnics.insert(rs.vnic_id());
  for (auto it = ids.all().begin(); it != ids.all().end();) {
    const std::string id = it->first;
    ++it;
    if (!vnics.count(id)) ids.Erase(id);
  }
  std::vector<std::string> skipped;
  auto text = RenderTable(state, ifaces, o, &names, &skipped, &ids);
  if (!text.ok()) return text.status();
  std::map<std::string, VnicChains> chains;
  for (const auto& rs : state.rulesets()) {
    auto it = ifaces.find(rs.vnic_id());
    if (it == ifaces.end()) continue;
    auto v = RenderVnic(rs, it->second, ids.IdFor(rs.vnic_id()), o, names);
    if (!v.ok()) return v.status();
    chains[rs.vnic_id()] = std::move(*v);
  }
  if (std::string err = RunNft(*text); !err.empty()) {
    return absl::AbortedError(
        "full apply of revision " + std::to_string(state.revision()) +
        " refused, nothing changed (" +
        (applied_ ? "revision " + std::to_string(revision_) : std::string("no table of ours")) +
        " still in force): " + err);
  }
  applied_ = true;
  revision_ = state.revision();
  options_ = o;
  ifaces_ = ifaces;
  rulesets_.clear();
  for (const auto& rs : state.rulesets()) rulesets_[rs.vnic_id()] = rs;
  chains_ = std::move(chains);
  sets_ = std::move(sets);
  names_ = std::move(names);
  chain_ids_ = std::move(ids);
  skipped_ = std::move(skipped);
  return absl::OkStatus();
}

absl::Status NftBackend::ApplyDelta(const v1::HostDelta& delta, const InterfaceMap& ifaces) {
  last_delta_ = DeltaStats{};
  if (!applied_) return absl::FailedPreconditionError("ApplyDelta: no full state applied yet");
  if (delta.from_revision() != revision_) {
    return absl::FailedPreconditionError(
        "delta.from_revision: " + std::to_string(delta.from_revision()) +
        " is not the applied revision " + std::to_string(revision_));
  }
  const std::string& T = options_.table;
  const std::string tq = Quote(T);
  // --- The new model, built on copies of the small parts. ---
  SetNames names = names_;
  ChainIds ids = chain_ids_;
  // Rulesets and chains are copied only when the delta touches them (a
  // membership change must not copy 10k rules).
  const bool touches_rules =
      delta.rulesets_set_size() > 0 || delta.rulesets_removed_size() > 0 || ifaces != ifaces_;
  std::map<std::string, v1::VNicRuleset> rulesets;
  if (touches_rules) rulesets = rulesets_;
  const auto& rulesets_view = touches_rules ? rulesets : rulesets_;
  std::string text;  // the libnftables transaction
  // New sets (declared with their elements) and re-sent existing ones.
  std::map<std::string, AddrRanges> new_sets;
  std::map<std::string, AddrRanges> replaced;  // existing set id -> its new ranges
  for (int i = 0; i < delta.address_sets_set_size(); ++i) {
    const auto& as = delta.address_sets_set(i);
    const std::string f = "address_sets_set[" + std::to_string(i) + "]";
    if (auto st = CheckText(as.id(), f + ".id", 1024); !st.ok()) return st;
    AddrRanges r;
    auto d = r.Apply(as.prefixes(), std::vector<std::string>{});
    if (!d.ok()) {
      return absl::InvalidArgumentError(f + ".prefixes: " + std::string(d.status().message()));
    }
    if (sets_.count(as.id())) {
      replaced[as.id()] = std::move(r);
    } else {
      const std::string& base = names.NameFor(as.id());
      for (Family fam : {Family::kV4, Family::kV6}) {
        text += "add " +
                RenderSetDecl(SetName(base, fam), fam, as.id(), r.Ranges(fam)).insert(3, " " + tq) +
                "\n";
      }
      new_sets[as.id()] = std::move(r);
    }
  }
  for (int i = 0; i < delta.address_set_deltas_size(); ++i) {
    const auto& d = delta.address_set_deltas(i);
    if (!sets_.count(d.id()) && !new_sets.count(d.id())) {
      return absl::InvalidArgumentError("address_set_deltas[" + std::to_string(i) + "].id: '" +
                                        d.id() + "' is not a set in force");
    }
  }
  for (const auto& rs : delta.rulesets_set()) rulesets[rs.vnic_id()] = rs;
  for (const auto& id : delta.rulesets_removed()) rulesets.erase(id);
  std::set<std::string> removed_sets(delta.address_sets_removed().begin(),
                                     delta.address_sets_removed().end());
  for (const auto& id : removed_sets) {
    if (!sets_.count(id)) {
      return absl::InvalidArgumentError("address_sets_removed: '" + id + "' is not a set in force");
    }
  }
  // Which vNICs' chains change: sent again, removed, or their interface changed.
  std::map<std::string, VnicChains> chains;
  std::vector<std::string> skipped;
  std::set<std::string> rerender;
  for (const auto& rs : delta.rulesets_set()) rerender.insert(rs.vnic_id());
  for (const auto& [id, rs] : rulesets) {  // empty unless touches_rules
    auto it = ifaces.find(id);
    auto old = ifaces_.find(id);
    if (it == ifaces.end() || !CheckInterfaceName(it->second, "interface").ok()) {
      skipped.push_back(id);  // as RenderTable does: that vNIC alone
      continue;
    }
    if (old == ifaces_.end() || old->second != it->second || !chains_.count(id))
      rerender.insert(id);
    if (!rerender.count(id)) {
      chains[id] = chains_.at(id);
      continue;
    }
    auto v = RenderVnic(rs, it->second, ids.IdFor(id), options_, names);
    if (!v.ok()) return v.status();
    chains[id] = std::move(*v);
  }
  // Removed sets must not be used by what stays.
  for (const auto& id : removed_sets) {
    for (const auto& [vnic, rs] : rulesets_view) {
      for (const auto& r : rs.rules()) {
        for (const auto* e : {&r.sources(), &r.destinations()}) {
          for (const auto& s : e->address_set_ids()) {
            if (s == id) {
              return absl::InvalidArgumentError("address_sets_removed: '" + id +
                                                "' is still used by vNIC '" + vnic + "' rule " +
                                                std::to_string(r.rule_num()));
            }
          }
        }
      }
    }
  }
  bool rules_change = !rerender.empty();
  for (const auto& [id, c] : chains_) {
    if (touches_rules && !chains.count(id)) rules_change = true;
  }
  if (rules_change) {
    // vNIC chains first (the base chains jump to new ones), then the base
    // chains, then the chains no longer jumped to are deleted.
    for (const auto& id : rerender) {
      if (!chains.count(id)) continue;
      const VnicChains& c = chains.at(id);
      const bool exists = chains_.count(id) && chains_.at(id).id == c.id;
      for (bool input : {true, false}) {
        const std::string name = (input ? "in_" : "out_") + std::to_string(c.id);
        // A new chain is flushed too: a leftover of that name holds only ours.
        if (!exists) text += "add chain " + tq + " " + name + "\n";
        text += "flush chain " + tq + " " + name + "\n";
        for (const auto& r : input ? c.in : c.out)
          text += "add rule " + tq + " " + name + " " + r + "\n";
      }
    }
    std::vector<VnicChains> list;
    for (const auto& [id, c] : chains) list.push_back(c);
    for (bool input : {true, false}) {
      auto base = RenderBaseRules(input, list, options_);
      if (!base.ok()) return base.status();
      const std::string name = input ? "input" : "output";
      text += "flush chain " + tq + " " + name + "\n";
      for (const auto& r : *base) text += "add rule " + tq + " " + name + " " + r + "\n";
    }
    for (const auto& [id, c] : chains_) {
      if (chains.count(id) && chains.at(id).id == c.id) continue;
      for (const char* p : {"in_", "out_"}) {
        text += "delete chain " + tq + " " + p + std::to_string(c.id) + "\n";
      }
    }
  }
  for (const auto& id : removed_sets) {
    for (Family fam : {Family::kV4, Family::kV6}) {
      text += "delete set " + tq + " " + SetName(*names.Find(id), fam) + "\n";
    }
  }
  // --- Element changes of sets in force, on the live ranges (reverted on failure). ---
  struct Applied {
    std::string id;
    std::vector<std::string> added, removed;
  };
  std::vector<Applied> undo;
  std::vector<ElementChange> changes;
  auto revert = [&]() {
    for (auto it = undo.rbegin(); it != undo.rend(); ++it) {
      (void)sets_[it->id].ranges.Apply(it->removed, it->added);
    }
  };
  for (int i = 0; i < delta.address_set_deltas_size(); ++i) {
    const auto& d = delta.address_set_deltas(i);
    if (removed_sets.count(d.id())) continue;
    AddrRanges* r = new_sets.count(d.id()) ? &new_sets[d.id()] : &sets_[d.id()].ranges;
    const bool live = !new_sets.count(d.id());
    bool zero_before[2] = {ZeroEnd(*r, Family::kV4), ZeroEnd(*r, Family::kV6)};
    auto diff = r->Apply(d.added(), d.removed());
    if (!diff.ok()) {
      revert();
      return absl::Status(diff.status().code(), "address_set_deltas[" + std::to_string(i) + "] ('" +
                                                    d.id() + "')." +
                                                    std::string(diff.status().message()));
    }
    if (!live) continue;  // a new set: its declaration above predates this; re-render below
    undo.push_back(
        {d.id(), {d.added().begin(), d.added().end()}, {d.removed().begin(), d.removed().end()}});
    for (Family fam : {Family::kV4, Family::kV6}) {
      const int k = static_cast<int>(fam);
      if (diff->removed[k].empty() && diff->added[k].empty()) continue;
      ElementChange c{SetName(*names_.Find(d.id()), fam), fam, {}, {}};
      ElementDiff(fam, zero_before[k], ZeroEnd(*r, fam), diff->removed[k], diff->added[k], &c.del,
                  &c.add);
      changes.push_back(std::move(c));
    }
  }
  for (auto& [id, r] : replaced) {
    for (Family fam : {Family::kV4, Family::kV6}) {
      const auto before = sets_[id].ranges.Ranges(fam);
      const auto after = r.Ranges(fam);
      std::vector<AddrRange> rem, add;
      std::set_difference(before.begin(), before.end(), after.begin(), after.end(),
                          std::back_inserter(rem));
      std::set_difference(after.begin(), after.end(), before.begin(), before.end(),
                          std::back_inserter(add));
      if (rem.empty() && add.empty()) continue;
      ElementChange c{SetName(*names_.Find(id), fam), fam, {}, {}};
      ElementDiff(fam, ZeroEnd(sets_[id].ranges, fam), ZeroEnd(r, fam), rem, add, &c.del, &c.add);
      changes.push_back(std::move(c));
    }
  }
  // Deltas to sets new in this delta changed their ranges after the
  // declaration was rendered: render the declarations again.
  if (!new_sets.empty() && delta.address_set_deltas_size() > 0) {
    std::string redone;
    for (const auto& as : delta.address_sets_set()) {
      if (!new_sets.count(as.id())) continue;
      for (Family fam : {Family::kV4, Family::kV6}) {
        redone += "add " +
                  RenderSetDecl(SetName(*names.Find(as.id()), fam), fam, as.id(),
                                new_sets[as.id()].Ranges(fam))
                      .insert(3, " " + tq) +
                  "\n";
      }
    }
    // The declarations are the first lines of `text`.
    size_t pos = 0;
    for (size_t n = 0; n < 2 * new_sets.size(); ++n) pos = text.find('\n', pos) + 1;
    text = redone + text.substr(pos);
  }
  // --- (1) rules and set definitions: one libnftables transaction. ---
  if (!text.empty()) {
    const auto t0 = std::chrono::steady_clock::now();
    std::string err = RunNft(text);
    last_delta_.nft_ms = MsSince(t0);
    if (!err.empty()) {
      revert();
      return absl::AbortedError("delta " + std::to_string(delta.from_revision()) + "->" +
                                std::to_string(delta.to_revision()) +
                                " refused, nothing changed (revision " + std::to_string(revision_) +
                                " still in force): " + err);
    }
  }
  // The rule part is in force: commit it to the model.
  if (touches_rules) {
    rulesets_ = std::move(rulesets);
    chains_ = std::move(chains);
    skipped_ = std::move(skipped);
    ifaces_ = ifaces;
  }
  for (auto& [id, r] : new_sets) sets_[id].ranges = std::move(r);
  for (const auto& id : removed_sets) {
    sets_.erase(id);
    names.Erase(id);
  }
  names_ = std::move(names);
  for (const auto& [id, c] : chain_ids_.all()) {
    if (!rulesets_.count(id)) ids.Erase(id);
  }
  chain_ids_ = std::move(ids);
  // --- (2) elements of sets in force: one libnftnl batch. ---
  const auto t1 = std::chrono::steady_clock::now();
  absl::Status st = SendElementBatch(T, changes, &last_delta_.elements_sent);
  if (!changes.empty()) last_delta_.elements_ms = MsSince(t1);
  if (!st.ok()) {
    revert();
    return absl::Status(
        st.code(),
        std::string(text.empty() ? "nothing changed" : "the delta's rules are in force") +
            " but its address set element changes were not applied (the elements of "
            "revision " +
            std::to_string(revision_) + " are in force): " + std::string(st.message()));
  }
  for (auto& [id, r] : replaced) sets_[id].ranges = std::move(r);
  revision_ = delta.to_revision();
  return absl::OkStatus();
}

absl::StatusOr<NftCounters> NftBackend::Counters() const {
  auto rules = DumpRules(options_.table);
  if (!rules.ok()) return rules.status();
  NftCounters out;
  for (const DumpedRule& r : *rules) {
    if (!r.has_counter) continue;
    auto add = [&](PacketsBytes* pb) {
      pb->packets += r.counter.packets;
      pb->bytes += r.counter.bytes;
    };
    if (r.comment == "ct-invalid") {
      add(&out.drops["ct-invalid"]);
      continue;
    }
    if (r.comment.size() < 2 || r.comment[0] != 'r') continue;
    uint32_t num = 0;
    bool ok = true;
    for (size_t i = 1; i < r.comment.size(); ++i) {
      if (r.comment[i] < '0' || r.comment[i] > '9') ok = false;
      num = num * 10 + static_cast<uint32_t>(r.comment[i] - '0');
    }
    if (!ok) continue;
    add(&out.rules[num]);
    if (r.verdict == 2 || r.verdict == 3) {
      add(&out.drops[num == 0 ? "default-rule" : r.verdict == 2 ? "policy-drop" : "policy-reject"]);
    }
  }
  return out;
}

absl::Status NftBackend::Verify() const {
  if (!applied_) return absl::FailedPreconditionError("nothing applied");
  const std::string& T = options_.table;
  auto exists = TableExists(T);
  if (!exists.ok()) return exists.status();
  if (!*exists) return absl::NotFoundError("table inet " + T + " is missing");
  std::map<std::string, size_t> want;  // chain -> rule count
  std::vector<VnicChains> list;
  for (const auto& [id, c] : chains_) {
    list.push_back(c);
    want["in_" + std::to_string(c.id)] = c.in.size();
    want["out_" + std::to_string(c.id)] = c.out.size();
  }
  for (bool input : {true, false}) {
    auto base = RenderBaseRules(input, list, options_);
    if (!base.ok()) return base.status();
    want[input ? "input" : "output"] = base->size();
  }
  auto chains = DumpNames(T, false);
  if (!chains.ok()) return chains.status();
  for (const auto& [name, n] : want) {
    if (!chains->count(name))
      return absl::NotFoundError("chain " + name + " of table inet " + T + " is missing");
  }
  auto rules = DumpRules(T);
  if (!rules.ok()) return rules.status();
  std::map<std::string, size_t> have;
  for (const auto& r : *rules) ++have[r.chain];
  for (const auto& [name, n] : want) {
    if (have[name] != n) {
      return absl::FailedPreconditionError("chain " + name + " of table inet " + T + " has " +
                                           std::to_string(have[name]) + " rules, " +
                                           std::to_string(n) + " applied");
    }
  }
  for (const auto& name : *chains) {
    if (!want.count(name))
      return absl::FailedPreconditionError("chain " + name + " of table inet " + T +
                                           " was not applied by us");
  }
  auto sets = DumpNames(T, true);
  if (!sets.ok()) return sets.status();
  for (const auto& [id, base] : names_.all()) {
    for (Family fam : {Family::kV4, Family::kV6}) {
      if (!sets->count(SetName(base, fam))) {
        return absl::NotFoundError("set " + SetName(base, fam) + " ('" + id + "') of table inet " +
                                   T + " is missing");
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace dfw::vmagent
