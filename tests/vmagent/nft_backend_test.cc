// NftBackend in network namespaces the test creates: full apply, many random
// element deltas through the libnftnl path compared with the in-memory model
// AND with what nft itself puts in the kernel for the same ranges, rule
// changes, refused deltas, Verify() catching foreign changes, Counters(), and
// real traffic (two namespaces joined by a veth, 198.18.0.0/15, 2001:db8::/32).
#include "dfw/vmagent/nft_backend.h"

#include <gtest/gtest.h>
#include <libmnl/libmnl.h>
#include <libnftnl/set.h>
#include <libnftnl/udata.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>

#include <cstdio>
#include <iostream>
#include <random>

#include "dfw/vmagent/ruleset_eval.h"
#include "nft_test_netns.h"

namespace dfw::vmagent {
namespace {

using testing::EnterNetns;
using testing::Netns;
using testing::NftRun;

// The kernel's elements of a set (libnftnl dump, current namespace).
std::vector<SetElement> KernelElements(const std::string& table, const std::string& set, Family f) {
  std::vector<SetElement> out;
  mnl_socket* nl = mnl_socket_open(NETLINK_NETFILTER);
  EXPECT_NE(nl, nullptr);
  mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID);
  std::vector<char> buf(1 << 20);
  nftnl_set* s = nftnl_set_alloc();
  nftnl_set_set_str(s, NFTNL_SET_TABLE, table.c_str());
  nftnl_set_set_str(s, NFTNL_SET_NAME, set.c_str());
  nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf.data(), NFT_MSG_GETSETELEM, NFPROTO_INET,
                                        NLM_F_DUMP | NLM_F_ACK, 1);
  nftnl_set_elems_nlmsg_build_payload(nlh, s);
  nftnl_set_free(s);
  mnl_socket_sendto(nl, nlh, nlh->nlmsg_len);
  struct Ctx {
    std::vector<SetElement>* out;
    Family f;
  } ctx{&out, f};
  auto cb = [](const nlmsghdr* h, void* data) -> int {
    auto* c = static_cast<Ctx*>(data);
    nftnl_set* s = nftnl_set_alloc();
    nftnl_set_elems_nlmsg_parse(h, s);
    nftnl_set_elems_iter* it = nftnl_set_elems_iter_create(s);
    for (nftnl_set_elem* e = nftnl_set_elems_iter_next(it); e; e = nftnl_set_elems_iter_next(it)) {
      uint32_t len = 0;
      const auto* k = static_cast<const uint8_t*>(nftnl_set_elem_get(e, NFTNL_SET_ELEM_KEY, &len));
      SetElement el;
      for (uint32_t i = 0; i < len; ++i) {
        if (len == 4) {
          el.key.lo = (el.key.lo << 8) | k[i];
        } else if (i < 8) {
          el.key.hi = (el.key.hi << 8) | k[i];
        } else {
          el.key.lo = (el.key.lo << 8) | k[i];
        }
      }
      el.end = nftnl_set_elem_is_set(e, NFTNL_SET_ELEM_FLAGS) &&
               (nftnl_set_elem_get_u32(e, NFTNL_SET_ELEM_FLAGS) & NFT_SET_ELEM_INTERVAL_END);
      el.open = nftnl_set_elem_is_set(e, NFTNL_SET_ELEM_USERDATA);
      c->out->push_back(el);
    }
    nftnl_set_elems_iter_destroy(it);
    nftnl_set_free(s);
    return MNL_CB_OK;
  };
  while (true) {
    const ssize_t n = mnl_socket_recvfrom(nl, buf.data(), buf.size());
    if (n <= 0) break;
    const int rc =
        mnl_cb_run(buf.data(), static_cast<size_t>(n), 1, mnl_socket_get_portid(nl), cb, &ctx);
    if (rc <= 0) break;
  }
  mnl_socket_close(nl);
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<SetElement> Sorted(std::vector<SetElement> v) {
  std::sort(v.begin(), v.end());
  return v;
}

RenderOptions Opts() {
  RenderOptions o;
  o.table = "dfwb";
  return o;
}

v1::CompiledRule* AddRule(v1::VNicRuleset* rs, uint32_t num, const std::string& src_set,
                          uint32_t proto, uint32_t dport, v1::Action a, bool stateful) {
  auto* r = rs->add_rules();
  r->set_rule_num(num);
  if (src_set.empty()) {
    r->mutable_sources()->set_any(true);
  } else {
    r->mutable_sources()->add_address_set_ids(src_set);
  }
  r->mutable_destinations()->set_any(true);
  if (proto) {
    auto* s = r->add_services();
    s->set_protocol(proto);
    if (dport) s->add_destination_ports()->set_first(dport);
  }
  r->set_direction(v1::DIRECTION_IN);
  r->set_action(a);
  r->set_stateful(stateful);
  return r;
}

v1::HostDesiredState BaseState() {
  v1::HostDesiredState st;
  st.set_revision(1);
  auto* a = st.add_address_sets();
  a->set_id("g:peers");
  a->add_prefixes("198.18.0.1");
  a->add_prefixes("2001:db8::1");
  auto* b = st.add_address_sets();
  b->set_id("g:big");
  for (int i = 0; i < 2000; ++i) {
    b->add_prefixes("198.19." + std::to_string(i / 128) + "." + std::to_string((i % 128) * 2) +
                    "/31");
  }
  b->add_prefixes("255.255.255.0/24");
  b->add_prefixes("ffff::/16");
  auto* rs = st.add_rulesets();
  rs->set_vnic_id("vm");
  AddRule(rs, 10, "g:peers", 6, 8080, v1::ACTION_ALLOW, true);
  AddRule(rs, 11, "g:peers", 6, 8081, v1::ACTION_REJECT, false);
  AddRule(rs, 12, "g:big", 17, 53, v1::ACTION_DROP, false);
  rs->mutable_default_rule()->set_action(v1::ACTION_DROP);
  return st;
}

std::string Str(const absl::Status& s) { return std::string(s.message()); }

TEST(NftBackend, RandomElementDeltasMatchModelAndNft) {
  Netns ns("be");
  ASSERT_TRUE(ns.ok());
  EnterNetns in(ns.name());
  ASSERT_TRUE(in.ok());
  NftBackend b;
  ASSERT_TRUE(b.ApplyFull(BaseState(), {{"vm", "eth0"}}, Opts()).ok());
  ASSERT_TRUE(b.Verify().ok()) << b.Verify();
  const std::string big = *b.set_names().Find("g:big");
  // After nft's own full apply, the kernel holds exactly ElementsOf(ranges).
  for (Family f : {Family::kV4, Family::kV6}) {
    ASSERT_EQ(KernelElements("dfwb", SetName(big, f), f),
              Sorted(ElementsOf(f, b.Set("g:big")->Ranges(f))));
  }
  std::mt19937 rng(42);
  std::vector<std::string> held;
  const v1::HostDesiredState base = BaseState();
  for (const auto& p : base.address_sets(1).prefixes()) held.push_back(p);
  uint64_t rev = 1;
  for (int step = 0; step < 300; ++step) {
    v1::HostDelta d;
    d.set_from_revision(rev);
    d.set_to_revision(rev + 1);
    auto* sd = d.add_address_set_deltas();
    sd->set_id("g:big");
    const int n = 1 + static_cast<int>(rng() % 3);
    for (int k = 0; k < n; ++k) {
      const int kind = static_cast<int>(rng() % 10);
      if (kind < 4 && !held.empty()) {
        const size_t i = rng() % held.size();
        sd->add_removed(held[i]);
        held.erase(held.begin() + static_cast<long>(i));
        continue;
      }
      std::string p;
      if (kind < 7) {
        const int len = 24 + static_cast<int>(rng() % 9);
        const uint32_t a = (0xc6130000u | (rng() & 0x1fff)) & ~((1u << (32 - len)) - 1u);
        p = FormatAddr(Family::kV4, Addr{0, a}) + "/" + std::to_string(len);
      } else if (kind < 8) {
        p = "0.0.0.0/" + std::to_string(8 + rng() % 24);  // starts at 0: nft's zero end element
      } else if (kind < 9) {
        p = "255.255.255." + std::to_string((rng() % 64) * 4) + "/30";  // the top
      } else {
        p = "2001:db8:" + std::to_string(rng() % 16) + "::/" + std::to_string(48 + rng() % 17);
        p = FormatAddr(Family::kV6, ParsePrefix(p.substr(0, p.find('/')))->range.first) +
            p.substr(p.find('/'));
        if (!ParsePrefix(p).ok()) continue;
      }
      sd->add_added(p);
      held.push_back(p);
    }
    const auto before4 = b.Set("g:big")->Ranges(Family::kV4);
    auto st = b.ApplyDelta(d, {{"vm", "eth0"}});
    if (!st.ok()) {
      for (const auto& r : before4) std::cerr << FormatRange(Family::kV4, r) << " ";
      std::cerr << "\n" << d.DebugString();
    }
    ASSERT_TRUE(st.ok()) << st;
    ++rev;
    for (Family f : {Family::kV4, Family::kV6}) {
      ASSERT_EQ(KernelElements("dfwb", SetName(big, f), f),
                Sorted(ElementsOf(f, b.Set("g:big")->Ranges(f))))
          << "step " << step;
    }
  }
  EXPECT_EQ(b.revision(), rev);
  // The same ranges applied by nft itself give the same kernel elements.
  for (Family f : {Family::kV4, Family::kV6}) {
    const auto ranges = b.Set("g:big")->Ranges(f);
    ASSERT_EQ(NftRun("table inet ref {\n" + RenderSetDecl("s", f, "ref", ranges) + "\n}\n"), "");
    EXPECT_EQ(KernelElements("ref", "s", f), KernelElements("dfwb", SetName(big, f), f));
    ASSERT_EQ(NftRun("delete table inet ref"), "");
  }
  // A delta removing what is not there is refused and changes nothing.
  v1::HostDelta bad;
  bad.set_from_revision(rev);
  bad.set_to_revision(rev + 1);
  auto* sd = bad.add_address_set_deltas();
  sd->set_id("g:big");
  sd->add_added("198.18.77.0/24");
  sd->add_removed("198.18.99.0/24");
  auto st = b.ApplyDelta(bad, {{"vm", "eth0"}});
  EXPECT_EQ(st.code(), absl::StatusCode::kNotFound) << st;
  EXPECT_FALSE(b.Set("g:big")->Contains(Family::kV4, ParsePrefix("198.18.77.1")->range.first));
  EXPECT_EQ(b.revision(), rev);
  EXPECT_TRUE(b.Verify().ok());
  // One delta of 3000 disjoint IPv6 hosts: 6000 kernel elements of up to 36
  // bytes each, more than one netlink attribute (16-bit length) can carry,
  // so the batch must split them.
  v1::HostDelta v6;
  v6.set_from_revision(rev);
  v6.set_to_revision(rev + 1);
  auto* add = v6.add_address_set_deltas();
  add->set_id("g:big");
  for (int i = 0; i < 3000; ++i) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "2001:db8:ff::%x:%x", i / 256 + 1, (i % 256) * 2 + 1);
    add->add_added(buf);
  }
  st = b.ApplyDelta(v6, {{"vm", "eth0"}});
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_EQ(KernelElements("dfwb", SetName(big, Family::kV6), Family::kV6),
            Sorted(ElementsOf(Family::kV6, b.Set("g:big")->Ranges(Family::kV6))));
}

TEST(NftBackend, RuleChangesAndVerify) {
  Netns ns("bv");
  ASSERT_TRUE(ns.ok());
  NftBackend b;
  {
    EnterNetns in(ns.name());
    ASSERT_TRUE(b.ApplyFull(BaseState(), {{"vm", "eth0"}, {"vm2", "eth1"}}, Opts()).ok());
    // A new vNIC, a new set used by it, a changed ruleset.
    v1::HostDelta d;
    d.set_from_revision(1);
    d.set_to_revision(2);
    auto* as = d.add_address_sets_set();
    as->set_id("g:new");
    as->add_prefixes("198.18.5.0/24");
    auto* sd = d.add_address_set_deltas();
    sd->set_id("g:new");
    sd->add_added("198.18.6.0/24");
    auto* rs2 = d.add_rulesets_set();
    rs2->set_vnic_id("vm2");
    AddRule(rs2, 20, "g:new", 17, 0, v1::ACTION_ALLOW, true);
    auto* rs = d.add_rulesets_set();
    *rs = BaseState().rulesets(0);
    AddRule(rs, 13, "", 132, 0, v1::ACTION_DROP, false);
    auto st = b.ApplyDelta(d, {{"vm", "eth0"}, {"vm2", "eth1"}});
    ASSERT_TRUE(st.ok()) << st;
    EXPECT_GT(b.last_delta().nft_ms, 0);
    ASSERT_TRUE(b.Verify().ok()) << b.Verify();
    EXPECT_TRUE(b.Set("g:new")->Contains(Family::kV4, ParsePrefix("198.18.6.9")->range.first));
    // Removing a set still in use is refused; nothing changes.
    v1::HostDelta bad;
    bad.set_from_revision(2);
    bad.set_to_revision(3);
    bad.add_address_sets_removed("g:new");
    st = b.ApplyDelta(bad, {{"vm", "eth0"}, {"vm2", "eth1"}});
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
    EXPECT_TRUE(b.Verify().ok());
    // Remove the vNIC and the set together.
    v1::HostDelta rm;
    rm.set_from_revision(2);
    rm.set_to_revision(3);
    rm.add_address_sets_removed("g:new");
    rm.add_rulesets_removed("vm2");
    st = b.ApplyDelta(rm, {{"vm", "eth0"}, {"vm2", "eth1"}});
    ASSERT_TRUE(st.ok()) << st;
    ASSERT_TRUE(b.Verify().ok()) << b.Verify();
    EXPECT_EQ(b.Set("g:new"), nullptr);
    // The kernel refuses a delta (a foreign jump to the chain it deletes)
    // -> nothing changes, and the error says what is in force.
    ASSERT_EQ(NftRun("add chain inet dfwb x\nadd rule inet dfwb x jump in_1"), "");
    v1::HostDelta again;
    again.set_from_revision(3);
    again.set_to_revision(4);
    again.add_rulesets_removed("vm");
    st = b.ApplyDelta(again, {{"vm", "eth0"}});
    EXPECT_FALSE(st.ok());
    EXPECT_NE(Str(st).find("revision 3 still in force"), std::string::npos) << st;
    EXPECT_EQ(b.revision(), 3u);
    auto v = b.Verify();
    EXPECT_NE(Str(v).find("chain x of table inet dfwb was not applied by us"), std::string::npos)
        << v;
    ASSERT_EQ(NftRun("delete chain inet dfwb x"), "");
    ASSERT_TRUE(b.Verify().ok());
  }
  // Foreign changes: a deleted rule, a deleted chain, a flushed ruleset.
  std::string out;
  ASSERT_EQ(ns.Exec("nft -a list chain inet dfwb in_1 | grep 'comment \"r12\"' | head -1 | sed "
                    "'s/.*handle //'",
                    &out),
            0);
  ASSERT_EQ(ns.Exec("nft delete rule inet dfwb in_1 handle " + out), 0);
  {
    EnterNetns in(ns.name());
    auto v = b.Verify();
    EXPECT_NE(Str(v).find("chain in_1 of table inet dfwb has"), std::string::npos) << v;
  }
  ASSERT_EQ(ns.Exec("nft flush chain inet dfwb input && nft delete chain inet dfwb in_1 && nft "
                    "flush chain inet dfwb out_1"),
            0);
  {
    EnterNetns in(ns.name());
    auto v = b.Verify();
    EXPECT_NE(Str(v).find("chain in_1 of table inet dfwb is missing"), std::string::npos) << v;
  }
  ASSERT_EQ(ns.Exec("nft flush ruleset"), 0);
  {
    EnterNetns in(ns.name());
    auto v = b.Verify();
    EXPECT_EQ(v.code(), absl::StatusCode::kNotFound);
    EXPECT_NE(Str(v).find("table inet dfwb is missing"), std::string::npos) << v;
    // A full apply repairs it.
    v1::HostDesiredState st = BaseState();
    st.set_revision(9);
    ASSERT_TRUE(b.ApplyFull(st, {{"vm", "eth0"}}, Opts()).ok());
    EXPECT_TRUE(b.Verify().ok());
  }
}

// Real traffic: peer (198.18.0.1, 2001:db8::1) -> vm (198.18.0.2, 2001:db8::2).
TEST(NftBackend, TrafficCountersAndEvaluator) {
  Netns vm("tv"), peer("tp");
  ASSERT_TRUE(vm.ok() && peer.ok());
  const std::string vmif = "dfwv" + std::to_string(getpid() % 100000);
  ASSERT_EQ(testing::Sh("ip link add " + vmif + " netns " + vm.name() + " type veth peer name p" +
                        vmif + " netns " + peer.name()),
            0);
  ASSERT_EQ(vm.Exec("ip link set " + vmif +
                    " name veth-vm && ip addr add 198.18.0.2/24 dev veth-vm && "
                    "ip addr add 2001:db8::2/64 dev veth-vm nodad && ip link set veth-vm up"),
            0);
  ASSERT_EQ(peer.Exec("ip link set p" + vmif +
                      " name veth-p && ip addr add 198.18.0.1/24 dev veth-p && "
                      "ip addr add 2001:db8::1/64 dev veth-p nodad && ip link set veth-p up"),
            0);
  NftBackend b;
  {
    EnterNetns in(vm.name());
    ASSERT_TRUE(b.ApplyFull(BaseState(), {{"vm", "veth-vm"}}, Opts()).ok());
  }
  // Servers in the vm on 8080 and 8081.
  vm.Exec(
      "for p in 8080 8081; do python3 -c \"import socket,sys\ns=socket.socket(socket.AF_INET6)\n"
      "s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('::',$p))\ns.listen(8)\n"
      "while True:\n c,_=s.accept(); c.sendall(b'hi'); c.close()\" >/dev/null 2>&1 & echo $! >> "
      "/tmp/dfwt-" +
      vm.name() + ".pids; done; sleep 0.5");
  auto connect = [&](const std::string& host, int port) {
    std::string out;
    peer.Exec("python3 -c \"import socket\ntry:\n s=socket.create_connection(('" + host + "'," +
                  std::to_string(port) +
                  "),timeout=2); print('OK', s.recv(2))\n"
                  "except ConnectionRefusedError: print('REFUSED')\nexcept Exception as e: "
                  "print('TIMEOUT')\"",
              &out);
    return out;
  };
  EXPECT_NE(connect("198.18.0.2", 8080).find("OK"), std::string::npos);
  EXPECT_NE(connect("2001:db8::2", 8080).find("OK"), std::string::npos);
  EXPECT_NE(connect("198.18.0.2", 8081).find("REFUSED"), std::string::npos);  // reject: RST
  EXPECT_NE(connect("198.18.0.2", 8082).find("TIMEOUT"), std::string::npos);  // default drop
  EXPECT_NE(peer.Exec("ping -c1 -W1 198.18.0.2"), 0);                         // default drop
  {
    EnterNetns in(vm.name());
    auto c = b.Counters();
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ(c->rules[10].packets, 2u);  // two SYNs; the rest passes as established
    EXPECT_EQ(c->rules[11].packets, 1u);
    EXPECT_GE(c->rules[0].packets, 2u);
    EXPECT_EQ(c->drops["policy-reject"].packets, 1u);
    EXPECT_GE(c->drops["default-rule"].packets, 2u);
    // A membership change through the element path opens 8082? No: it
    // removes the peer from g:peers, so 8080 is now denied.
    v1::HostDelta d;
    d.set_from_revision(1);
    d.set_to_revision(2);
    auto* sd = d.add_address_set_deltas();
    sd->set_id("g:peers");
    sd->add_removed("198.18.0.1");
    ASSERT_TRUE(b.ApplyDelta(d, {{"vm", "veth-vm"}}).ok());
    EXPECT_EQ(b.last_delta().nft_ms, 0);
    EXPECT_EQ(b.last_delta().elements_sent, 3u);  // start, end, and nft's zero end element
  }
  EXPECT_NE(connect("198.18.0.2", 8080).find("TIMEOUT"), std::string::npos);
  EXPECT_NE(connect("2001:db8::2", 8080).find("OK"), std::string::npos);
  // The evaluator agrees with what the kernel did.
  auto sets = [&](const std::string& id) { return b.Set(id); };
  auto v4 = [](const char* a) { return ParseAddr(a)->second; };
  FiveTuple t{Family::kV4, v4("198.18.0.1"), v4("198.18.0.2"), 6, 40000, 8080, true};
  EXPECT_EQ(Evaluate(b.rulesets().at("vm"), sets, t).rule_num, 0u);
  t.dport = 8081;
  EXPECT_EQ(Evaluate(b.rulesets().at("vm"), sets, t).rule_num, 0u);
  FiveTuple t6{Family::kV6,
               ParseAddr("2001:db8::1")->second,
               ParseAddr("2001:db8::2")->second,
               6,
               40000,
               8081,
               true};
  EXPECT_EQ(Evaluate(b.rulesets().at("vm"), sets, t6).rule_num, 11u);
  EXPECT_EQ(Evaluate(b.rulesets().at("vm"), sets, t6).action, v1::ACTION_REJECT);
  t6.dport = 8080;
  EXPECT_TRUE(Evaluate(b.rulesets().at("vm"), sets, t6).passes());
  t6.in = false;
  EXPECT_EQ(Evaluate(b.rulesets().at("vm"), sets, t6).rule_num, 0u);
  testing::Sh("kill $(cat /tmp/dfwt-" + vm.name() + ".pids); rm -f /tmp/dfwt-" + vm.name() +
              ".pids");
}

}  // namespace
}  // namespace dfw::vmagent
