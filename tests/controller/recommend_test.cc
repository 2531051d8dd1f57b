// dfwctl policy recommend (issue 16): the draft policy against a reference
// model on random fleets and connections (it allows exactly the observed
// connections at the grain of groups, and the controller's validator accepts
// it, also past the per-rule limits); then a controller on loopback with
// hosts relaying flow records over real sessions: the dfwctl binary follows
// them for a window, drafts the policy, applies it, and the controller's
// trace allows what was observed and nothing else.
#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "dfw/controller/policy_validator.h"
#include "dfw/controller/recommend.h"
#include "test_host.h"
#include "test_util.h"

namespace dfw::controller::testing {
namespace {

using nlohmann::json;
using recommend::Connection;
using recommend::Facts;

static_assert(recommend::kMaxRulesPerPolicy == kMaxRulesPerPolicy);
static_assert(recommend::kMaxServicesPerRule == kMaxServicesPerRule);
static_assert(recommend::kMaxPortRangesPerService == kMaxPortRangesPerService);
static_assert(recommend::kMaxGroupsPerEndpoint == kMaxGroupsPerEndpoint);
static_assert(recommend::kMaxPrefixesPerEndpoint == kMaxPrefixesPerEndpoint);

// ---- records

json Observed(const std::string& kind, const std::string& dir, uint32_t proto,
              const std::string& src, const std::string& dst, const std::string& vm,
              const std::string& peer) {
  json f = {
      {"record",
       {{"kind", kind}, {"direction", dir}, {"protocol", proto}, {"src", src}, {"dst", dst}}}};
  if (!vm.empty()) f["vm_id"] = vm;
  if (!peer.empty()) f["peer_vm_id"] = peer;
  return f;
}

TEST(RecommendTest, ConnectionsAreReadFromEitherEndsRecords) {
  // The sender's egress record and the receiver's ingress record of one
  // connection are the same connection.
  auto out = recommend::ConnectionOf(Observed("KIND_AUDIT", "DIRECTION_OUT", 6, "198.18.0.1:40000",
                                              "198.18.0.2:5432", "web", "db"));
  auto in = recommend::ConnectionOf(Observed("KIND_ALLOWED", "DIRECTION_IN", 6, "198.18.0.1:40000",
                                             "198.18.0.2:5432", "db", "web"));
  ASSERT_TRUE(out && in);
  EXPECT_EQ(*out, *in);
  EXPECT_EQ(out->client_vm, "web");
  EXPECT_EQ(out->server_vm, "db");
  EXPECT_EQ(out->client_ip, "198.18.0.1");
  EXPECT_EQ(out->port, 5432u);
  // IPv6 (canonical text), ICMP (no port: the echo identifier is not one).
  auto v6 = recommend::ConnectionOf(Observed("KIND_ALLOWED", "DIRECTION_OUT", 17,
                                             "[2001:DB8:0::1]:5353", "[2001:db8::2]:53", "", ""));
  ASSERT_TRUE(v6);
  EXPECT_EQ(v6->client_ip, "2001:db8::1");
  EXPECT_EQ(v6->port, 53u);
  auto icmp = recommend::ConnectionOf(
      Observed("KIND_AUDIT", "DIRECTION_OUT", 1, "198.18.0.1:77", "198.18.0.2:77", "a", ""));
  ASSERT_TRUE(icmp);
  EXPECT_EQ(icmp->port, 0u);
  EXPECT_EQ(icmp->server_vm, "");
  // Not connections: denied or ended records, markers, garbage, "any".
  for (const json& f :
       {Observed("KIND_DENIED", "DIRECTION_OUT", 6, "198.18.0.1:1", "198.18.0.2:2", "", ""),
        Observed("KIND_ENDED", "DIRECTION_OUT", 6, "198.18.0.1:1", "198.18.0.2:2", "", ""),
        Observed("KIND_ALLOWED", "DIRECTION_OUT", 6, "198.18.0.1", "198.18.0.2:2", "", ""),
        Observed("KIND_ALLOWED", "DIRECTION_OUT", 6, "198.18.0.1:1", "198.18.0.300:2", "", ""),
        Observed("KIND_ALLOWED", "DIRECTION_OUT", 6, "198.18.0.1:1", "198.18.0.2:65536", "", ""),
        Observed("KIND_ALLOWED", "DIRECTION_OUT", 0, "198.18.0.1:1", "198.18.0.2:2", "", ""),
        json{{"lost", "3"}, {"host_id", "h1"}}, json{{"missed", "2"}}, json::array()}) {
    EXPECT_FALSE(recommend::ConnectionOf(f)) << f;
  }
}

TEST(RecommendTest, IdsFollowTheIdRule) {
  EXPECT_EQ(recommend::IdOf("rec-app-web"), "rec-app-web");
  EXPECT_EQ(recommend::IdOf("allow-198.18.0.1/32-to-db"), "allow-198.18.0.1-32-to-db");
  EXPECT_EQ(recommend::IdOf(".."), "id..");
  const std::string a = recommend::IdOf(std::string(200, 'x') + "a");
  const std::string b = recommend::IdOf(std::string(200, 'x') + "b");
  EXPECT_EQ(a.size(), 128u);
  EXPECT_NE(a, b);  // cut, and told apart by the hash of the whole
  for (const std::string& id : {a, recommend::IdOf("é ü/x")})
    EXPECT_TRUE(ValidateObjectId(id, "id").ok()) << id;
}

// ---- the draft against a reference

using TagSet = std::set<std::pair<std::string, std::string>>;

struct Fleet {
  std::map<std::string, TagSet> vm_tags;
  std::map<std::string, std::vector<TagSet>> group_criteria;  // OR of ANDs
  std::map<std::string, std::set<std::string>> group_static;
  std::map<std::string, std::set<std::string>> members;  // group -> VMs
  Facts facts;

  bool Matches(const TagSet& vm, const std::vector<TagSet>& any_of) const {
    for (const TagSet& all : any_of)
      if (std::includes(vm.begin(), vm.end(), all.begin(), all.end())) return true;
    return false;
  }
  // The reference's choice: the smallest group (ties: lowest id) whose
  // members all carry the VM's tags of `scope`; in none, the VM's tags of
  // that scope, else all its tags; untagged, the VM itself; no VM, the
  // address.
  std::string Identity(const std::string& vm, const std::string& ip,
                       const std::string& scope) const {
    if (vm.empty() || !facts.vms.count(vm)) return "prefix:" + ip + "/32";
    auto app_of = [&](const std::string& v) {
      TagSet out;
      if (scope.empty()) return out;
      for (const auto& t : vm_tags.at(v))
        if (t.first == scope) out.insert(t);
      return out;
    };
    const TagSet app = app_of(vm);
    std::pair<size_t, std::string> best{SIZE_MAX, ""};
    for (const auto& [g, m] : members) {
      if (!m.count(vm)) continue;
      bool within = true;
      for (const std::string& other : m) within = within && (app.empty() || app_of(other) == app);
      if (within) best = std::min(best, {m.size(), g});
    }
    if (!best.second.empty()) return "group:" + best.second;
    return Key(app.empty() ? vm_tags.at(vm) : app, vm);
  }
  static std::string Key(const TagSet& tags, const std::string& vm) {
    if (tags.empty()) return "vm:" + vm;
    std::string k = "tags:";
    for (const auto& [s, v] : tags) k += s + "=" + v + ";";
    return k;
  }
};

Fleet RandomFleet(std::mt19937& rng, int vms, int groups) {
  static const char* kScopes[] = {"app", "env", "tier"};
  static const char* kValues[] = {"a", "b", "c"};
  auto tag = [&] {
    return std::make_pair(std::string(kScopes[rng() % 3]), std::string(kValues[rng() % 3]));
  };
  Fleet f;
  for (int i = 0; i < vms; ++i) {
    TagSet t;
    for (int n = rng() % 4; n > 0; --n) t.insert(tag());
    f.vm_tags["vm" + std::to_string(i)] = t;
  }
  for (int i = 0; i < groups; ++i) {
    const std::string g = "g" + std::to_string(i);
    if (rng() % 4 == 0) {
      for (int n = 1 + rng() % 3; n > 0; --n)
        f.group_static[g].insert("vm" + std::to_string(rng() % vms));
    } else {
      for (int c = 1 + rng() % 2; c > 0; --c) {
        TagSet all;
        for (int n = 1 + rng() % 2; n > 0; --n) all.insert(tag());
        f.group_criteria[g].push_back(all);
      }
    }
    f.facts.existing_group_ids.insert(g);
  }
  for (const auto& [vm, tags] : f.vm_tags) {
    if (rng() % 10 == 0) continue;  // a VM gone since: its address stands for it
    auto& v = f.facts.vms[vm];
    v.name = vm;
    v.tags.assign(tags.begin(), tags.end());
  }
  // Members: the VMs that are (a gone VM is in no group).
  for (const std::string& g : f.facts.existing_group_ids) {
    auto& m = f.members[g];
    for (auto& [vm, v] : f.facts.vms) {
      if (!f.group_static[g].count(vm) && !f.Matches(f.vm_tags[vm], f.group_criteria[g])) continue;
      m.insert(vm);
      v.groups.push_back(g);
      f.facts.group_members[g].push_back(vm);
    }
  }
  // A group nobody's draft may take the name of.
  f.facts.existing_group_ids.insert("rec-app-a");
  return f;
}

using Tuple = std::tuple<std::string, std::string, uint32_t, uint32_t>;

// What the draft allows, as (source, destination, protocol, port or ICMP
// type) tuples in the reference's names; proposed groups by their content.
std::set<Tuple> Allowed(const recommend::Recommendation& r, const Fleet& f) {
  std::map<std::string, std::string> proposed;
  for (const json& g : r.groups) {
    TagSet tags;
    for (const json& c : g.value("criteria", json::array())) {
      for (const json& cond : c["conditions"])
        tags.emplace(cond["tag"]["scope"], cond["tag"]["value"]);
    }
    const json vms = g.value("static_members", json::object()).value("vm_ids", json::array());
    proposed[g["id"]] = Fleet::Key(tags, vms.empty() ? "" : vms[0].get<std::string>());
  }
  auto ends = [&](const json& e) {
    std::vector<std::string> out;
    for (const json& g : e.value("group_ids", json::array()))
      out.push_back(proposed.count(g) ? proposed.at(g) : "group:" + g.get<std::string>());
    for (const json& p : e.value("ip_prefixes", json::array()))
      out.push_back("prefix:" + p.get<std::string>());
    return out;
  };
  std::set<Tuple> out;
  for (const json& rule : r.policy["rules"]) {
    EXPECT_EQ(rule["action"], "ACTION_ALLOW");
    for (const std::string& s : ends(rule["sources"])) {
      for (const std::string& d : ends(rule["destinations"])) {
        for (const json& svc : rule["services"]) {
          const uint32_t p = svc["protocol"];
          if (svc.contains("icmp_type")) {
            out.emplace(s, d, p, svc["icmp_type"].get<uint32_t>());
          } else if (svc.contains("destination_ports")) {
            for (const json& range : svc["destination_ports"]) {
              const uint32_t first = range["first"], last = range.value("last", first);
              for (uint32_t port = first; port <= last; ++port) out.emplace(s, d, p, port);
            }
          } else {
            out.emplace(s, d, p, 0);
          }
        }
      }
    }
  }
  (void)f;
  return out;
}

std::set<Tuple> Expected(const std::vector<Connection>& conns, const Fleet& f,
                         const std::string& scope = "app") {
  std::set<Tuple> out;
  for (const Connection& c : conns) {
    const uint32_t port = c.protocol == 1 ? 8 : c.protocol == 58 ? 128 : c.port;
    out.emplace(f.Identity(c.client_vm, c.client_ip, scope),
                f.Identity(c.server_vm, c.server_ip, scope), c.protocol, port);
  }
  return out;
}

// The controller's validator on the draft, every group existing.
absl::Status Validate(const recommend::Recommendation& r) {
  dfw::v1::Policy p;
  auto parsed = google::protobuf::util::JsonStringToMessage(r.policy.dump(), &p);
  if (!parsed.ok()) return absl::InvalidArgumentError(std::string(parsed.message()));
  return ValidatePolicy(p, [](std::string_view) { return true; });
}

TEST(RecommendTest, TheDraftAllowsExactlyTheObservedConnectionsOnRandomFleets) {
  static const uint32_t kProtocols[] = {6, 6, 6, 17, 17, 132, 1, 58, 47};
  static const uint32_t kPorts[] = {22, 80, 443, 5432, 5433, 5434, 8080, 8081, 8083, 9000};
  for (uint32_t seed = 1; seed <= 200; ++seed) {
    std::mt19937 rng(seed);
    const int vms = 1 + static_cast<int>(rng() % 40);
    Fleet f = RandomFleet(rng, vms, static_cast<int>(rng() % 12));
    std::vector<Connection> conns;
    for (int n = static_cast<int>(rng() % 120); n > 0; --n) {
      Connection c;
      auto end = [&](std::string* vm, std::string* ip) {
        const int i = static_cast<int>(rng() % vms);
        *ip = "198.18." + std::to_string(i / 250) + "." + std::to_string(i % 250 + 1);
        if (rng() % 5) {
          *vm = "vm" + std::to_string(i);
        } else {
          *ip = "198.19.0." + std::to_string(rng() % 20 + 1);  // no VM's
        }
      };
      end(&c.client_vm, &c.client_ip);
      end(&c.server_vm, &c.server_ip);
      c.protocol = kProtocols[rng() % std::size(kProtocols)];
      c.port = c.protocol == 6 || c.protocol == 17 || c.protocol == 132
                   ? kPorts[rng() % std::size(kPorts)]
                   : 0;
      conns.push_back(c);
      if (rng() % 3 == 0) conns.push_back(c);  // both ends recorded it
    }
    recommend::Options opt;
    opt.policy_id = "rec-" + std::to_string(seed);
    opt.enforce = seed % 2;
    opt.scope = seed % 3 == 0 ? "" : seed % 3 == 1 ? "app" : "env";
    const auto r = recommend::Recommend(conns, f.facts, opt);
    SCOPED_TRACE("seed " + std::to_string(seed));
    ASSERT_EQ(r.error, "");
    EXPECT_EQ(Allowed(r, f), Expected(conns, f, opt.scope));
    EXPECT_TRUE(Validate(r).ok()) << Validate(r) << "\n" << r.policy.dump(1);
    EXPECT_EQ(r.policy["mode"], opt.enforce ? "POLICY_MODE_ENFORCE" : "POLICY_MODE_AUDIT");
    // Proposed groups: valid, new ids, holding the VMs they were drawn for.
    std::set<std::string> ids;
    for (const json& g : r.groups) {
      const std::string id = g["id"];
      EXPECT_TRUE(ValidateObjectId(id, "id").ok()) << id;
      EXPECT_FALSE(f.facts.existing_group_ids.count(id)) << id;
      EXPECT_TRUE(ids.insert(id).second) << id;
      // A few of the VMs it was drawn for, each once.
      const std::string why = g["description"];
      std::string list = why.substr(why.find(" for ") + 5);
      list = list.substr(0, list.find(" and "));
      std::vector<std::string> names;
      for (size_t at = 0, comma; at <= list.size(); at = comma + 2) {
        comma = std::min(list.find(", ", at), list.size());
        names.push_back(list.substr(at, comma - at));
      }
      EXPECT_LE(names.size(), 5u) << why;
      EXPECT_EQ(std::set<std::string>(names.begin(), names.end()).size(), names.size()) << why;
    }
    // Each connection once, named by its rule.
    EXPECT_EQ(r.observed.size(), std::set<Connection>(conns.begin(), conns.end()).size());
    std::set<std::string> rule_ids;
    for (const json& rule : r.policy["rules"]) rule_ids.insert(rule["id"]);
    for (const json& o : r.observed) EXPECT_TRUE(rule_ids.count(o["rule"])) << o;
  }
}

TEST(RecommendTest, PastTheLimitsOfOneRuleTheDraftIsCutAndStaysExact) {
  std::mt19937 rng(7);
  Fleet f = RandomFleet(rng, 0, 0);
  std::vector<Connection> conns;
  // 4,500 ports not adjacent from one client: more port ranges than a
  // service takes and more services than a rule takes.
  for (uint32_t p = 1; p < 9000; p += 2)
    conns.push_back({"", "198.19.0.1", "", "198.19.1.1", 6, p});
  // 5,000 clients of one server on one port: more prefixes than an endpoint takes.
  for (uint32_t i = 0; i < 5000; ++i) {
    conns.push_back({"", "198.18." + std::to_string(i / 250) + "." + std::to_string(i % 250 + 1),
                     "", "198.19.2.1", 17, 53});
  }
  // 300 groups (each a VM of its own) to one server: more groups than an
  // endpoint takes.
  for (int i = 0; i < 300; ++i) {
    const std::string vm = "vm" + std::to_string(i), g = "g" + std::to_string(i);
    f.vm_tags[vm] = {};
    f.members[g] = {vm};
    f.facts.vms[vm] = {vm, {}, {g}};
    f.facts.group_members[g] = {vm};
    f.facts.existing_group_ids.insert(g);
    conns.push_back({vm, "198.18.100.1", "", "198.19.3.1", 6, 443});
  }
  const auto r = recommend::Recommend(conns, f.facts, {});
  ASSERT_EQ(r.error, "");
  EXPECT_EQ(Allowed(r, f), Expected(conns, f));
  EXPECT_TRUE(Validate(r).ok()) << Validate(r);
  EXPECT_EQ(r.policy["rules"].size(), 6u);  // 2 for the ports, 2 for the prefixes, 2 for the groups

  // More rules than a policy holds: said, not sent to be refused.
  conns.clear();
  for (uint32_t i = 0; i < 1001; ++i) {
    conns.push_back({"", "198.18." + std::to_string(i / 250) + "." + std::to_string(i % 250 + 1),
                     "", "198.19.2.1", 6, 1000 + 2 * i});
  }
  const auto big = recommend::Recommend(conns, f.facts, {});
  EXPECT_NE(big.error.find("1001 rules; a policy holds at most 1000"), std::string::npos)
      << big.error;
}

// ---- dfwctl policy recommend against a controller with hosts relaying

class RecommendFromRelayedFlowsTest : public WebAndDbOnTwoHostsTest {
 protected:
  static dfw::v1::FlowRecord Record(dfw::v1::FlowRecord::Kind kind, const std::string& vnic,
                                    dfw::v1::Direction dir, uint32_t proto, const std::string& src,
                                    const std::string& dst, uint64_t seq) {
    dfw::v1::FlowRecord r;
    r.set_kind(kind);
    r.set_vnic_id(vnic);
    r.set_direction(dir);
    r.set_protocol(proto);
    r.set_src(src);
    r.set_dst(dst);
    r.set_seq(seq);
    r.set_time_ns(1700000000123000000ull);
    return r;
  }
  // The controller's trace of a new connection: allowed or not.
  bool Traced(const std::string& from, const std::string& to, uint32_t proto, uint32_t port) {
    std::string q = "/api/v1/trace?from_vm_id=" + from + "&to_vm_id=" + to +
                    "&protocol=" + std::to_string(proto);
    q += proto == 1 ? "&icmp_type=8" : "&destination_port=" + std::to_string(port);
    auto r = rest_->Get(q);
    EXPECT_EQ(r.status, 200) << q << ": " << r.body;
    return r.body.value("allowed", false);
  }
};

TEST_F(RecommendFromRelayedFlowsTest, AFollowedWindowBecomesAPolicyThatAllowsWhatWasSeenOnly) {
  // web-1 and db-1 are in web and db, other-1 (app=other, env=test) only
  // in everyone (every VM with an app tag), a group that spans applications.
  Post("/api/v1/vms", VmJson("other-1", "h1", {{"app", "other"}, {"env", "test"}}, "198.18.0.3"));
  Post("/api/v1/groups", TagGroupJson("everyone", "app", ""));
  TestHost h1(server_.grpc_port(), "h1"), h2(server_.grpc_port(), "h2");
  h1.Hello({MetadataVm("web-1", {{"app", "web"}}, "198.18.0.1"),
            MetadataVm("other-1", {{"app", "other"}, {"env", "test"}}, "198.18.0.3")});
  h2.Hello({MetadataVm("db-1", {{"app", "db"}}, "198.18.0.2")});
  // Held before the window: not part of it.
  SendFlows(h1,
            {Record(dfw::v1::FlowRecord::KIND_AUDIT, "web-1-nic0", dfw::v1::DIRECTION_OUT, 6,
                    "198.18.0.1:39999", "198.18.0.2:22", 1)},
            0);

  const std::string dir = dir_.path();
  Cmd drafted;
  std::thread dfwctl([&] {
    drafted =
        RunDfwctl(DFWCTL_BIN, server_.http_port(),
                  "-o json policy recommend --window 4 --id rec --write-dir " + dir + "/draft");
  });
  ASSERT_EQ(NextWatch(h1), std::optional<bool>(true));
  ASSERT_EQ(NextWatch(h2), std::optional<bool>(true));
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  using K = dfw::v1::FlowRecord;
  // Seen at both ends: web-1 -> db-1 tcp/5432 (audit at web-1, allowed at db-1).
  SendFlows(h1,
            {Record(K::KIND_AUDIT, "web-1-nic0", dfw::v1::DIRECTION_OUT, 6, "198.18.0.1:40000",
                    "198.18.0.2:5432", 2),
             Record(K::KIND_AUDIT, "other-1-nic0", dfw::v1::DIRECTION_OUT, 6, "198.18.0.3:40001",
                    "198.18.0.2:3306", 3),
             Record(K::KIND_AUDIT, "web-1-nic0", dfw::v1::DIRECTION_OUT, 1, "198.18.0.1:7",
                    "198.18.0.2:7", 4),
             Record(K::KIND_AUDIT, "web-1-nic0", dfw::v1::DIRECTION_OUT, 6, "198.18.0.1:40002",
                    "198.19.0.9:443", 5),
             // Denied: never part of a draft.
             Record(K::KIND_DENIED, "web-1-nic0", dfw::v1::DIRECTION_OUT, 6, "198.18.0.1:40003",
                    "198.18.0.2:80", 6)},
            2);
  SendFlows(h2,
            {Record(K::KIND_ALLOWED, "db-1-nic0", dfw::v1::DIRECTION_IN, 6, "198.18.0.1:40000",
                    "198.18.0.2:5432", 1),
             Record(K::KIND_ALLOWED, "db-1-nic0", dfw::v1::DIRECTION_IN, 6, "198.18.0.1:40004",
                    "198.18.0.2:5433", 2)},
            0);
  dfwctl.join();
  ASSERT_EQ(drafted.rc, 0) << drafted.out;
  const json out = json::parse(drafted.out.substr(drafted.out.find('{')));
  EXPECT_EQ(out["lost"], 2);     // h1's loss, shown
  EXPECT_EQ(out["records"], 6);  // 5 audit/allowed + db's second
  EXPECT_EQ(out["observed"].size(), 5u);
  for (const json& o : out["observed"]) EXPECT_NE(o["port"], 22) << "held before the window";
  // other-1 stands for a new group of its application's VMs; the others for
  // their smallest groups (web, db: not everyone).
  ASSERT_EQ(out["groups"].size(), 1u) << out.dump(1);
  EXPECT_EQ(out["groups"][0]["id"], "rec-app-other");
  const json policy = out["policy"];
  EXPECT_EQ(policy["mode"], "POLICY_MODE_AUDIT");
  std::map<std::string, json> rules;
  for (const json& r : policy["rules"]) rules[r["display_name"]] = r;
  EXPECT_TRUE(rules.count("web -> db : icmp echo, tcp/5432-5433")) << policy.dump(1);
  EXPECT_TRUE(rules.count("rec-app-other -> db : tcp/3306")) << policy.dump(1);
  EXPECT_TRUE(rules.count("web -> 198.19.0.9/32 : tcp/443")) << policy.dump(1);
  EXPECT_EQ(rules.size(), 3u) << policy.dump(1);
  // The files written for review are what was printed.
  json written;
  std::ifstream(dir + "/draft/policy.json") >> written;
  EXPECT_EQ(written, policy);

  // The records held (the window's and the one before it) from a file,
  // enforced and applied: the trace allows what was seen and nothing else.
  {
    std::ofstream lines(dir + "/flows.jsonl");
    auto held = rest_->Get("/api/v1/flows?limit=1000");
    ASSERT_EQ(held.status, 200) << held.body;
    for (const json& f : held.body["flows"]) lines << f.dump() << "\n";
    ASSERT_GE(held.body["flows"].size(), 8u) << held.body;
  }
  Cmd applied =
      RunDfwctl(DFWCTL_BIN, server_.http_port(),
                "policy recommend --from-file " + dir + "/flows.jsonl --id rec --enforce --apply");
  ASSERT_EQ(applied.rc, 0) << applied.out;
  EXPECT_NE(applied.out.find("group rec-app-other applied at revision"), std::string::npos)
      << applied.out;
  EXPECT_NE(applied.out.find("policy rec applied at revision"), std::string::npos) << applied.out;
  auto stored = rest_->Get("/api/v1/policies/rec");
  ASSERT_EQ(stored.status, 200);
  EXPECT_EQ(stored.body["mode"], "POLICY_MODE_ENFORCE");
  auto members = rest_->Get("/api/v1/groups/rec-app-other/members");
  ASSERT_EQ(members.status, 200);
  EXPECT_EQ(members.body["vm_ids"], json::array({"other-1"}));

  EXPECT_TRUE(Traced("web-1", "db-1", 6, 5432));
  EXPECT_TRUE(Traced("web-1", "db-1", 6, 5433));
  EXPECT_TRUE(Traced("web-1", "db-1", 1, 0));
  EXPECT_TRUE(Traced("other-1", "db-1", 6, 3306));
  EXPECT_TRUE(Traced("web-1", "db-1", 6, 22));     // held before the window, but in the file
  EXPECT_FALSE(Traced("web-1", "db-1", 6, 80));    // denied
  EXPECT_FALSE(Traced("web-1", "db-1", 6, 3306));  // other's service, not web's
  EXPECT_FALSE(Traced("other-1", "db-1", 6, 5432));
  EXPECT_FALSE(Traced("db-1", "web-1", 6, 5432));  // the reverse was never opened
  EXPECT_FALSE(Traced("db-1", "other-1", 6, 3306));

  // Bad input is named.
  Cmd bad = RunDfwctl(DFWCTL_BIN, server_.http_port(), "policy recommend --window soon");
  EXPECT_EQ(bad.rc, 2);
  EXPECT_NE(bad.out.find("--window: 'soon' is not a number"), std::string::npos) << bad.out;
  { std::ofstream(dir + "/bad.jsonl") << "{\"record\":{}}\nnot json\n"; }
  bad = RunDfwctl(DFWCTL_BIN, server_.http_port(),
                  "policy recommend --from-file " + dir + "/bad.jsonl");
  EXPECT_EQ(bad.rc, 3);
  EXPECT_NE(bad.out.find("bad.jsonl:2: not a JSON object"), std::string::npos) << bad.out;
  { std::ofstream(dir + "/bad.jsonl") << "{\"lost\":\"3\"}\n{\"lost\":\"many\"}\n"; }
  bad = RunDfwctl(DFWCTL_BIN, server_.http_port(),
                  "policy recommend --from-file " + dir + "/bad.jsonl");
  EXPECT_EQ(bad.rc, 3);
  EXPECT_NE(bad.out.find("bad.jsonl:2: \"lost\"/\"missed\": not a count"), std::string::npos)
      << bad.out;
  bad = RunDfwctl(DFWCTL_BIN, server_.http_port(), "policy recommend --window 0");
  EXPECT_EQ(bad.rc, 2) << bad.out;  // 0 would follow for ever
}

}  // namespace
}  // namespace dfw::controller::testing
