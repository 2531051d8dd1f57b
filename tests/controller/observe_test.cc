// dfwctl observe (issue 16): the FlowHub against a reference model on
// random records, filters and cursors; then a controller on loopback with
// hosts over real sessions: a read asks the hypervisors' sessions for flow
// records (again after a reconnect), the records a host relays come back
// over REST and through the dfwctl binary with VM, groups and policy
// resolved, filtered, followed, and a host's losses shown.
#include <algorithm>
#include <atomic>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "dfw/controller/flow_hub.h"
#include "test_host.h"
#include "test_util.h"

namespace dfw::controller::testing {
namespace {

using nlohmann::json;
using Kind = dfw::v1::FlowRecord::Kind;

// ---- FlowHub against a reference

struct Reference {
  std::vector<dfw::v1::ObservedFlow> all;  // every record and marker, seq = index + 1

  void Add(const std::string& host, std::vector<dfw::v1::ObservedFlow> flows, uint64_t lost) {
    if (lost) {
      dfw::v1::ObservedFlow m;
      m.set_host_id(host);
      m.set_lost(lost);
      m.set_lost_where("host");
      flows.insert(flows.begin(), m);
    }
    for (auto& f : flows) {
      f.set_seq(all.size() + 1);
      f.set_host_id(host);
      all.push_back(f);
    }
  }
  // The simple reading of the contract: the held window is the last
  // kCapacity records; filters compare fields one by one.
  static bool Match(const FlowFilter& q, const dfw::v1::ObservedFlow& f) {
    if (!q.host.empty() && q.host != f.host_id()) return false;
    if (f.lost()) return true;
    const auto& r = f.record();
    auto port_of = [](const std::string& a) { return a.substr(a.rfind(':') + 1); };
    auto ip_of = [](const std::string& a) { return a.substr(0, a.rfind(':')); };
    bool in_groups = false;
    for (const auto& g : f.groups()) in_groups |= g == q.group;
    for (const auto& g : f.peer_groups()) in_groups |= g == q.group;
    bool verdict = q.verdicts.empty();
    for (auto k : q.verdicts) verdict |= k == r.kind();
    return (q.vm.empty() || q.vm == f.vm_id() || q.vm == f.vm_name() || q.vm == f.peer_vm_id() ||
            q.vm == f.peer_vm_name()) &&
           (q.group.empty() || in_groups) && verdict &&
           (q.policy.empty() || q.policy == r.policy_id() || q.policy == f.policy_name()) &&
           (q.rule.empty() || q.rule == r.rule_id()) &&
           (!q.protocol || *q.protocol == r.protocol()) &&
           (!q.port || std::to_string(*q.port) == port_of(r.src()) ||
            std::to_string(*q.port) == port_of(r.dst())) &&
           (q.ip.empty() || q.ip == ip_of(r.src()) || q.ip == ip_of(r.dst()));
  }
  dfw::v1::ObserveResponse Read(uint64_t cursor, const FlowFilter& q, size_t limit) const {
    dfw::v1::ObserveResponse out;
    const uint64_t total = all.size();
    const uint64_t first = total > FlowHub::kCapacity ? total - FlowHub::kCapacity + 1 : 1;
    if (cursor == 0) {
      std::vector<uint64_t> picked;
      for (uint64_t s = total; s >= first && s >= 1 && picked.size() < limit; --s) {
        if (Match(q, all[s - 1])) picked.push_back(s);
      }
      std::reverse(picked.begin(), picked.end());
      for (uint64_t s : picked) *out.add_flows() = all[s - 1];
      out.set_cursor(total);
      return out;
    }
    if (cursor + 1 < first) out.set_missed(first - cursor - 1);
    out.set_cursor(std::max(cursor, first - 1));
    for (uint64_t s = std::max(cursor + 1, first); s <= total; ++s) {
      out.set_cursor(s);
      if (!Match(q, all[s - 1])) continue;
      *out.add_flows() = all[s - 1];
      if (static_cast<size_t>(out.flows_size()) >= limit) break;
    }
    return out;
  }
};

std::vector<uint64_t> Seqs(const dfw::v1::ObserveResponse& r) {
  std::vector<uint64_t> s;
  for (const auto& f : r.flows()) s.push_back(f.seq());
  return s;
}

TEST(FlowHubTest, ReadsMatchAReferenceOnRandomRecordsFiltersAndCursors) {
  std::mt19937_64 rng(7);
  auto pick = [&](std::initializer_list<const char*> v) {
    return std::string(*(v.begin() + rng() % v.size()));
  };
  FlowHub hub([](bool) {});
  Reference ref;
  const Kind kinds[] = {dfw::v1::FlowRecord::KIND_ALLOWED, dfw::v1::FlowRecord::KIND_DENIED,
                        dfw::v1::FlowRecord::KIND_AUDIT, dfw::v1::FlowRecord::KIND_ENDED};
  int reads = 0, nonempty = 0, missed = 0;
  // 45k records: the ring (32k) overflows and old cursors miss records.
  while (ref.all.size() < 45000) {
    const std::string host = pick({"h1", "h2", "h3"});
    std::vector<dfw::v1::ObservedFlow> batch(rng() % 300);
    for (auto& f : batch) {
      auto* r = f.mutable_record();
      r->set_kind(kinds[rng() % 4]);
      r->set_protocol(rng() % 3 ? 6 : 17);
      r->set_src("198.18.0." + std::to_string(rng() % 4) + ":" + std::to_string(40000 + rng() % 3));
      r->set_dst("198.18.1." + std::to_string(rng() % 4) + ":" + pick({"22", "80", "5432"}));
      if (rng() % 4) {
        r->set_policy_id(pick({"p1", "p2"}));
        r->set_rule_id(pick({"r1", "r2", "r3"}));
        f.set_policy_name(r->policy_id() == "p1" ? "Web" : "Db");
      }
      if (rng() % 3 == 0) {
        f.set_peer_vm_id(pick({"vm-a", "vm-b", "vm-d"}));
        f.set_peer_vm_name(f.peer_vm_id() + "-name");
        if (rng() % 2) f.add_peer_groups(pick({"g1", "g3"}));
      }
      if (rng() % 5) {
        f.set_vm_id(pick({"vm-a", "vm-b", "vm-c"}));
        f.set_vm_name(f.vm_id() + "-name");
        if (rng() % 2) f.add_groups("g1");
        if (rng() % 2) f.add_groups("g2");
      }
    }
    const uint64_t lost = rng() % 10 == 0 ? 1 + rng() % 50 : 0;
    ref.Add(host, batch, lost);
    hub.Add(host, std::move(batch), lost);
    for (int i = 0; i < 3; ++i) {
      FlowFilter q;
      if (rng() % 3 == 0) q.host = pick({"h1", "h2", "h3"});
      if (rng() % 3 == 0) q.vm = pick({"vm-a", "vm-b-name", "nobody"});
      if (rng() % 4 == 0) q.group = pick({"g1", "g2", "g3"});
      if (rng() % 3 == 0) q.verdicts = {kinds[rng() % 4]};
      if (rng() % 5 == 0) q.verdicts.push_back(kinds[rng() % 4]);
      if (rng() % 4 == 0) q.policy = pick({"p1", "Db"});
      if (rng() % 5 == 0) q.rule = pick({"r1", "r3"});
      if (rng() % 5 == 0) q.protocol = rng() % 2 ? 6 : 17;
      if (rng() % 4 == 0) q.port = rng() % 2 ? 5432 : 40001;
      if (rng() % 5 == 0) q.ip = pick({"198.18.0.1", "198.18.1.3"});
      const uint64_t total = ref.all.size();
      // 0 (the newest), or the cursor of a sequence number (1..total+1).
      const uint64_t cursor = rng() % 4 == 0 ? 0 : 1 + rng() % (total + 1);
      const size_t limit = 1 + rng() % (rng() % 2 ? 5 : 500);
      auto got =
          hub.Read(cursor ? hub.CursorOf(cursor) : 0, q, limit, std::chrono::milliseconds(0));
      auto want = ref.Read(cursor, q, limit);
      ASSERT_EQ(Seqs(got), Seqs(want)) << "cursor " << cursor << " limit " << limit;
      ASSERT_EQ(got.cursor(), hub.CursorOf(want.cursor()))
          << "cursor " << cursor << " limit " << limit;
      ASSERT_EQ(got.missed(), want.missed()) << "cursor " << cursor;
      for (int k = 0; k < got.flows_size(); ++k) {
        ASSERT_EQ(got.flows(k).SerializeAsString(), want.flows(k).SerializeAsString());
      }
      ++reads;
      nonempty += got.flows_size() > 0;
      missed += got.missed() > 0;
    }
  }
  // The random reads covered what they were meant to.
  EXPECT_GT(nonempty, reads / 4);
  EXPECT_GT(missed, 10);
}

TEST(FlowHubTest, AReadStartsTheWatchWhichEndsALeaseAfterTheLastRead) {
  std::vector<bool> calls;
  std::mutex mu;
  FlowHub hub(
      [&](bool on) {
        std::lock_guard<std::mutex> l(mu);
        calls.push_back(on);
      },
      std::chrono::milliseconds(200));
  auto seen = [&] {
    std::lock_guard<std::mutex> l(mu);
    return calls;
  };
  hub.Add("h1", {dfw::v1::ObservedFlow()}, 0);  // nobody reads: nothing asked
  EXPECT_TRUE(seen().empty());
  auto r = hub.Read(0, {}, 10, std::chrono::milliseconds(0));
  EXPECT_FALSE(r.watching());  // the hosts were not sending before this read
  EXPECT_EQ(seen(), std::vector<bool>{true});
  EXPECT_TRUE(hub.Read(0, {}, 10, std::chrono::milliseconds(0)).watching());
  hub.Add("h1", {dfw::v1::ObservedFlow()}, 0);  // within the lease
  EXPECT_EQ(seen(), std::vector<bool>{true});
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  hub.Add("h1", {dfw::v1::ObservedFlow()}, 0);  // the lease ran out
  EXPECT_EQ(seen(), (std::vector<bool>{true, false}));
  EXPECT_FALSE(hub.stats().watching);
  hub.Read(0, {}, 10, std::chrono::milliseconds(0));
  EXPECT_EQ(seen(), (std::vector<bool>{true, false, true}));
}

// A cursor of another hub (a restarted controller, another one after a
// failover) reads from the oldest record held; a follower that started on
// an empty hub misses nothing of a batch larger than its limit.
TEST(FlowHubTest, ForeignCursorsAndEmptyStartsSkipNothing) {
  FlowHub hub([](bool) {});
  auto start = hub.Read(0, {}, 10, std::chrono::milliseconds(0));  // nothing held yet
  EXPECT_NE(start.cursor(), 0u);
  hub.Add("h1", std::vector<dfw::v1::ObservedFlow>(25), 0);
  auto r = hub.Read(start.cursor(), {}, 10, std::chrono::milliseconds(0));
  EXPECT_EQ(Seqs(r), (std::vector<uint64_t>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}));
  FlowHub other([](bool) {});
  for (int i = 0; i < 3; ++i) other.Add("h1", std::vector<dfw::v1::ObservedFlow>(40), 0);
  const uint64_t foreign = other.Read(0, {}, 1, std::chrono::milliseconds(0)).cursor();  // seq 120
  ASSERT_NE(foreign & ~FlowHub::kSeqMask, hub.CursorOf(0) & ~FlowHub::kSeqMask);
  r = hub.Read(foreign, {}, 100, std::chrono::milliseconds(0));
  ASSERT_EQ(r.flows_size(), 25);  // not "after 120": from the oldest held
  EXPECT_EQ(r.flows(0).seq(), 1u);
  EXPECT_EQ(r.cursor(), hub.CursorOf(25));
}

TEST(FlowHubTest, AWaitingReadReturnsWhatArrives) {
  FlowHub hub([](bool) {});
  const uint64_t cursor = hub.Read(0, {}, 10, std::chrono::milliseconds(0)).cursor();
  std::thread adder([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    dfw::v1::ObservedFlow other, wanted;
    other.set_vm_id("a");
    wanted.set_vm_id("b");
    hub.Add("h1", {other}, 0);
    hub.Add("h1", {wanted}, 0);
  });
  FlowFilter q;
  q.vm = "b";
  const auto t0 = std::chrono::steady_clock::now();
  auto r = hub.Read(cursor, q, 10, std::chrono::milliseconds(20000));
  adder.join();
  ASSERT_EQ(r.flows_size(), 1);
  EXPECT_EQ(r.flows(0).vm_id(), "b");
  EXPECT_EQ(r.cursor(), hub.CursorOf(2));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10));
}

TEST(FlowFilterTest, ParseNamesTheParameterThatIsWrong) {
  auto parse = [](std::map<std::string, std::string> q) {
    return FlowFilter::Parse([q](const std::string& n) -> std::optional<std::string> {
      auto it = q.find(n);
      if (it == q.end()) return std::nullopt;
      return it->second;
    });
  };
  auto ok = parse({{"verdict", "allowed,ended"}, {"protocol", "udp"}, {"port", "53"}});
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->verdicts.size(), 2u);
  EXPECT_EQ(*ok->protocol, 17u);
  EXPECT_EQ(*ok->port, 53u);
  EXPECT_EQ(*parse({{"protocol", "47"}})->protocol, 47u);
  for (auto [k, v] : std::vector<std::pair<std::string, std::string>>{{"verdict", "allowed,bogus"},
                                                                      {"protocol", "tcpx"},
                                                                      {"protocol", "256"},
                                                                      {"port", "65536"},
                                                                      {"port", "-1"},
                                                                      {"port", ""}}) {
    auto r = parse({{k, v}});
    ASSERT_FALSE(r.ok()) << k << "=" << v;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(r.status().message().rfind(k + ":", 0), 0u) << r.status();
  }
}

// ---- Over the real controller, hosts and dfwctl

class ObserveTest : public WebAndDbOnTwoHostsTest {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(WebAndDbOnTwoHostsTest::SetUp());
    json p = WebToDb();
    p["display_name"] = "Web to DB";
    Post("/api/v1/policies", p);
  }
  static dfw::v1::FlowRecord Record(Kind kind, const std::string& vnic, const std::string& src,
                                    const std::string& dst, const std::string& policy,
                                    const std::string& rule, uint64_t seq) {
    dfw::v1::FlowRecord r;
    r.set_kind(kind);
    r.set_vnic_id(vnic);
    r.set_direction(dfw::v1::DIRECTION_OUT);
    r.set_protocol(6);
    r.set_src(src);
    r.set_dst(dst);
    r.set_policy_id(policy);
    r.set_rule_id(rule);
    r.set_seq(seq);
    r.set_time_ns(1700000000123000000ull);
    return r;
  }
  json Flows(const std::string& query) {
    auto r = rest_->Get("/api/v1/flows?" + query);
    EXPECT_EQ(r.status, 200) << query << ": " << r.body;
    return r.body;
  }
  static std::vector<std::string> Rules(const json& b) {
    std::vector<std::string> out;
    for (const auto& f : b.value("flows", json::array())) {
      out.push_back(f.contains("lost") ? "lost:" + f["lost"].get<std::string>()
                                       : f["record"].value("rule_id", "default"));
    }
    return out;
  }
};

TEST_F(ObserveTest, RecordsRelayedByHostsComeBackResolvedAndFiltered) {
  TestHost h1(server_.grpc_port(), "h1");
  h1.Hello({MetadataVm("web-1", {{"app", "web"}}, "198.18.0.1")});
  // Nobody observes: the session is not asked for records.
  EXPECT_EQ(NextWatch(h1, 500), std::nullopt);

  // The first read asks every hypervisor session; nothing is held yet.
  json b = Flows("");
  EXPECT_EQ(b.value("watching", false), false);
  EXPECT_EQ(b.value("flows", json::array()).size(), 0u);
  ASSERT_EQ(NextWatch(h1), std::optional<bool>(true));

  SendFlows(h1,
            {Record(dfw::v1::FlowRecord::KIND_ALLOWED, "web-1-nic0", "198.18.0.1:40000",
                    "198.18.0.2:5432", "web-to-db", "allow-pg", 1),
             Record(dfw::v1::FlowRecord::KIND_DENIED, "web-1-nic0", "198.18.0.1:40001",
                    "198.18.0.2:80", "web-to-db", "reject-http", 2),
             Record(dfw::v1::FlowRecord::KIND_DENIED, "gone-nic", "198.18.0.7:1", "198.18.0.2:22",
                    "", "", 3)},
            3);
  ASSERT_TRUE(WaitFor([&] { return Flows("").value("flows", json::array()).size() == 4; }));
  b = Flows("");
  EXPECT_EQ(b.value("watching", false), true);
  ASSERT_EQ(Rules(b), (std::vector<std::string>{"lost:3", "allow-pg", "reject-http", "default"}));
  const json& lost = b["flows"][0];
  EXPECT_EQ(lost["host_id"], "h1");
  EXPECT_EQ(lost["lost_where"], "host");
  const json& allowed = b["flows"][1];
  EXPECT_EQ(allowed["host_id"], "h1");
  EXPECT_EQ(allowed["vm_id"], "web-1");
  EXPECT_EQ(allowed["vm_name"], "web-1");
  EXPECT_EQ(allowed["groups"], json::array({"web"}));
  EXPECT_EQ(allowed["policy_name"], "Web to DB");
  EXPECT_EQ(allowed["record"]["dst"], "198.18.0.2:5432");
  EXPECT_EQ(allowed["peer_vm_id"], "db-1");  // the other end's address, resolved
  EXPECT_EQ(allowed["peer_vm_name"], "db-1");
  EXPECT_EQ(allowed["peer_groups"], json::array({"db"}));  // and its groups
  EXPECT_FALSE(b["flows"][3].contains("vm_id"));           // a vNIC h1 does not hold: no names
  const uint64_t cursor = std::stoull(b["cursor"].get<std::string>());
  EXPECT_EQ(cursor & FlowHub::kSeqMask, 4u);
  const uint64_t epoch = cursor & ~FlowHub::kSeqMask;

  // Filters (a loss marker shows to every reader of its host).
  EXPECT_EQ(Rules(Flows("verdict=denied")),
            (std::vector<std::string>{"lost:3", "reject-http", "default"}));
  EXPECT_EQ(Rules(Flows("vm=web-1&port=5432")), (std::vector<std::string>{"lost:3", "allow-pg"}));
  // Either end: db-1 is the peer of h1's records to it.
  EXPECT_EQ(Rules(Flows("vm=db-1")),
            (std::vector<std::string>{"lost:3", "allow-pg", "reject-http", "default"}));
  EXPECT_EQ(Rules(Flows("group=web&protocol=tcp&verdict=denied")),
            (std::vector<std::string>{"lost:3", "reject-http"}));
  // Either end: db is the group of every record's peer (db-1).
  EXPECT_EQ(Rules(Flows("group=db")),
            (std::vector<std::string>{"lost:3", "allow-pg", "reject-http", "default"}));
  EXPECT_EQ(Rules(Flows("group=web&vm=db-1&port=80")),
            (std::vector<std::string>{"lost:3", "reject-http"}));
  EXPECT_EQ(Rules(Flows("policy=Web%20to%20DB&rule=reject-http")),
            (std::vector<std::string>{"lost:3", "reject-http"}));
  EXPECT_EQ(Rules(Flows("ip=198.18.0.7")), (std::vector<std::string>{"lost:3", "default"}));
  EXPECT_EQ(Rules(Flows("host=h2")), std::vector<std::string>{});
  EXPECT_EQ(Rules(Flows("cursor=" + std::to_string(epoch | 2))),
            (std::vector<std::string>{"reject-http", "default"}));
  EXPECT_EQ(Rules(Flows("limit=1")), (std::vector<std::string>{"default"}));
  // Bad parameters: 400 naming the parameter.
  for (const char* q :
       {"verdict=maybe", "port=99999", "protocol=tcpx", "limit=0", "cursor=x", "wait_ms=30001"}) {
    auto r = rest_->Get(std::string("/api/v1/flows?") + q);
    EXPECT_EQ(r.status, 400) << q;
    EXPECT_EQ(r.body["error"]["message"].get<std::string>().rfind(
                  std::string(q).substr(0, std::string(q).find('=')) + ":", 0),
              0u)
        << q << ": " << r.body;
  }

  // dfwctl observe: a line per record, names resolved; -o json a line each.
  Cmd c = RunDfwctl(DFWCTL_BIN, server_.http_port(), "observe --vm web-1 --verdict denied");
  EXPECT_EQ(c.rc, 0) << c.out;
  EXPECT_NE(c.out.find("22:13:20.123Z h1 "), std::string::npos) << c.out;  // time_ns in UTC
  EXPECT_NE(c.out.find("!! 3 records lost on host h1"), std::string::npos) << c.out;
  EXPECT_NE(c.out.find("h1           DENIED   web-1            out tcp   198.18.0.1:40001 -> "
                       "198.18.0.2:80 (db-1) Web to DB/reject-http"),
            std::string::npos)
      << c.out;
  EXPECT_EQ(c.out.find("allow-pg"), std::string::npos) << c.out;
  c = RunDfwctl(DFWCTL_BIN, server_.http_port(), "-o json observe --port 5432");
  EXPECT_EQ(c.rc, 0) << c.out;
  std::vector<json> lines;
  for (size_t at = 0, nl; (nl = c.out.find('\n', at)) != std::string::npos; at = nl + 1) {
    lines.push_back(json::parse(c.out.substr(at, nl - at)));
  }
  ASSERT_EQ(lines.size(), 2u) << c.out;
  EXPECT_EQ(lines[0]["lost"], "3");
  EXPECT_EQ(lines[1]["record"]["rule_id"], "allow-pg");
  EXPECT_EQ(RunDfwctl(DFWCTL_BIN, server_.http_port(), "observe --verdict maybe").rc, 3);
  EXPECT_EQ(RunDfwctl(DFWCTL_BIN, server_.http_port(), "observe --last x").rc, 2);
  c = RunDfwctl(DFWCTL_BIN, server_.http_port(), "observe web-1");
  EXPECT_EQ(c.rc, 2);
  EXPECT_NE(c.out.find("unexpected argument 'web-1' (filters are options: --vm web-1)"),
            std::string::npos)
      << c.out;

  // --follow: what arrives after it started, until --max records.
  std::atomic<bool> done{false};
  Cmd followed;
  std::thread follower([&] {
    followed = RunDfwctl(DFWCTL_BIN, server_.http_port(),
                         "observe --follow --last 1 --verdict allowed --max 2 --timeout 20");
    done = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  SendFlows(h1,
            {Record(dfw::v1::FlowRecord::KIND_DENIED, "web-1-nic0", "198.18.0.1:40002",
                    "198.18.0.2:80", "web-to-db", "reject-http", 4),
             Record(dfw::v1::FlowRecord::KIND_ALLOWED, "web-1-nic0", "198.18.0.1:40003",
                    "198.18.0.2:5432", "web-to-db", "allow-pg", 5)},
            0);
  follower.join();
  EXPECT_TRUE(done);
  EXPECT_EQ(followed.rc, 0) << followed.out;
  // The newest allowed record held when it started, then the new one.
  EXPECT_NE(followed.out.find("198.18.0.1:40000 -> 198.18.0.2:5432"), std::string::npos)
      << followed.out;
  EXPECT_NE(followed.out.find("198.18.0.1:40003 -> 198.18.0.2:5432"), std::string::npos)
      << followed.out;
  EXPECT_EQ(followed.out.find("40002"), std::string::npos) << followed.out;
}

TEST_F(ObserveTest, ASessionThatReconnectsIsAskedAgainAndGuestsAreNotAsked) {
  {
    TestHost h1(server_.grpc_port(), "h1");
    h1.Hello({MetadataVm("web-1", {{"app", "web"}}, "198.18.0.1")});
    Flows("");
    ASSERT_EQ(NextWatch(h1), std::optional<bool>(true));
  }
  // The agent's new session starts without records: the controller asks again.
  TestHost h1(server_.grpc_port(), "h1");
  h1.Hello({MetadataVm("web-1", {{"app", "web"}}, "198.18.0.1")});
  Flows("");
  ASSERT_EQ(NextWatch(h1), std::optional<bool>(true));
  // A guest agent's session (insecure mode trusts its id) has no dataplane
  // records: never asked.
  dfw::v1::Vm guest = MetadataVm("vm-g", {}, "198.18.0.50");
  TestHost g(server_.grpc_port(), "guest:vm-g");
  g.Hello({guest});
  Flows("");
  EXPECT_EQ(NextWatch(g, 1000), std::nullopt);
}

}  // namespace
}  // namespace dfw::controller::testing
