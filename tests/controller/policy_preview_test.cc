// The impact preview (ModelService::PreviewPolicy, `policy apply --dry-run`)
// against the change itself, then over REST (?dry_run=true), gRPC and the
// real dfwctl binary. The reference: on a random fleet, each previewed policy change
// is then made, and what the preview said must be what the hosts' full
// states show before and after it: which vNICs' rulesets change, on which
// host, their rule counts, the policy's rules added, removed and changed,
// whether the kept rules are reordered, the revalidating rules in force, the
// budget. The preview itself changes nothing (revision, hosts' feeds).
#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include <cstdio>
#include <fstream>

#include "dfw/controller/model_service.h"
#include "dfw/v1/controller.grpc.pb.h"
#include "host_view.h"
#include "random_fleet.h"
#include "test_host.h"
#include "test_util.h"

namespace dfw::controller::testing {
namespace {

using nlohmann::json;

unsigned Seed() { return std::getenv("DFW_SEED") ? std::atoi(std::getenv("DFW_SEED")) : 11; }

// vNIC -> its ruleset, and each address set's prefixes, over every host.
struct FleetView {
  std::map<std::string, dfw::v1::VNicRuleset> rulesets;
  std::map<std::string, std::string> host_of;
  std::map<std::string, std::set<std::string>> sets;  // by host + "|" + set id
};

FleetView ViewOf(const ModelService& m) {
  FleetView out;
  for (int h = 0; h < RandomFleet::kHosts; ++h) {
    const std::string host = "h" + std::to_string(h);
    HostView v = RandomFleet::FullView(m, host);
    for (const auto& [vnic, bytes] : v.rulesets) {
      EXPECT_TRUE(out.rulesets[vnic].ParseFromString(bytes));
      out.host_of[vnic] = host;
    }
    for (const auto& [id, prefixes] : v.sets) out.sets[host + "|" + id] = prefixes;
  }
  return out;
}

// What the preview must say, from the states before and after the change.
struct Expected {
  std::string host;
  uint32_t before = 0, after = 0;
  std::vector<std::string> added, removed, changed, revalidating;
  bool reordered = false;
};

std::map<std::string, Expected> Reference(const FleetView& b, const FleetView& a,
                                          const std::string& policy) {
  std::map<std::string, Expected> out;
  std::set<std::string> vnics;
  for (const auto& [v, r] : b.rulesets) vnics.insert(v);
  for (const auto& [v, r] : a.rulesets) vnics.insert(v);
  using Key = std::pair<std::string, std::string>;
  for (const auto& v : vnics) {
    static const dfw::v1::VNicRuleset kNone;
    auto bi = b.rulesets.find(v), ai = a.rulesets.find(v);
    const auto& rb = bi == b.rulesets.end() ? kNone : bi->second;
    const auto& ra = ai == a.rulesets.end() ? kNone : ai->second;
    const std::string host = ai != a.rulesets.end() ? a.host_of.at(v) : b.host_of.at(v);
    std::map<std::string, const dfw::v1::CompiledRule*> was, will;
    for (const auto& r : rb.rules()) {
      if (r.policy_id() == policy) was[r.rule_id()] = &r;
    }
    for (const auto& r : ra.rules()) {
      if (r.policy_id() == policy) will[r.rule_id()] = &r;
    }
    // Literal prefixes a rule names, as the host holds them.
    auto literals = [&](const FleetView& f, const dfw::v1::CompiledRule& r) {
      std::vector<std::set<std::string>> out;
      for (const auto* ep : {&r.sources(), &r.destinations()}) {
        for (const auto& id : ep->address_set_ids()) {
          if (id.rfind("r:", 0) == 0) out.push_back(f.sets.at(host + "|" + id));
        }
      }
      return out;
    };
    Expected e;
    e.host = host;
    for (const auto& [id, r] : will) {
      auto w = was.find(id);
      if (w == was.end()) {
        e.added.push_back(id);
      } else if (w->second->SerializeAsString() != r->SerializeAsString() ||
                 literals(b, *w->second) != literals(a, *r)) {
        e.changed.push_back(id);
      }
    }
    for (const auto& [id, r] : was) {
      if (!will.count(id)) e.removed.push_back(id);
    }
    std::set<Key> in_b, in_a;
    for (const auto& r : rb.rules()) in_b.insert({r.policy_id(), r.rule_id()});
    for (const auto& r : ra.rules()) in_a.insert({r.policy_id(), r.rule_id()});
    std::vector<Key> ob, oa;
    for (const auto& r : rb.rules()) {
      if (in_a.count({r.policy_id(), r.rule_id()})) ob.push_back({r.policy_id(), r.rule_id()});
    }
    for (const auto& r : ra.rules()) {
      if (in_b.count({r.policy_id(), r.rule_id()})) oa.push_back({r.policy_id(), r.rule_id()});
    }
    e.reordered = ob != oa;
    if (e.added.empty() && e.removed.empty() && e.changed.empty() && !e.reordered) continue;
    e.before = static_cast<uint32_t>(rb.rules_size());
    e.after = static_cast<uint32_t>(ra.rules_size());
    for (const auto& r : rb.rules()) {
      if (r.on_change() == dfw::v1::ON_CHANGE_REVALIDATE) {
        e.revalidating.push_back(r.policy_id() + "/" + r.rule_id());
      }
    }
    out[v] = e;
  }
  return out;
}

std::vector<std::string> Sorted(const google::protobuf::RepeatedPtrField<std::string>& f) {
  std::vector<std::string> v(f.begin(), f.end());
  std::sort(v.begin(), v.end());
  return v;
}
std::vector<std::string> Sorted(std::vector<std::string> v) {
  std::sort(v.begin(), v.end());
  return v;
}

// A policy change of every kind the preview must get right: rules added,
// removed, disabled, edited (action, direction, literal prefixes), moved
// by priority or category, applied-to narrowed or widened, revalidation
// switched; a new policy; or a deletion (nullopt).
std::optional<dfw::v1::Policy> RandomPolicyChange(RandomFleet& f, std::string* id) {
  auto& rng = f.rng;
  const int p = static_cast<int>(rng() % (RandomFleet::kPolicies + 2));
  *id = "p" + std::to_string(p);
  auto cur = f.m->GetPolicy(*id);
  if (cur.ok() && rng() % 6 == 0) return std::nullopt;
  dfw::v1::Policy pol = cur.ok() && rng() % 3 ? *cur : f.PolicyProto(p);
  pol.clear_revision();
  switch (rng() % 8) {
    case 0:
      pol.set_priority(static_cast<int>(rng() % 5));
      break;
    case 1:
      pol.set_category(rng() % 2 ? dfw::v1::CATEGORY_EMERGENCY : dfw::v1::CATEGORY_APPLICATION);
      break;
    case 2:
      pol.clear_applied_to_group_ids();
      if (rng() % 2) pol.add_applied_to_group_ids("g" + std::to_string(rng() % 12));
      break;
    case 3:
      pol.set_on_change(rng() % 2 ? dfw::v1::ON_CHANGE_REVALIDATE : dfw::v1::ON_CHANGE_KEEP);
      break;
    default:
      break;
  }
  for (auto& r : *pol.mutable_rules()) {
    switch (rng() % 8) {
      case 0:
        r.set_disabled(!r.disabled());
        break;
      case 1:
        r.set_action(rng() % 2 ? dfw::v1::ACTION_DROP : dfw::v1::ACTION_ALLOW);
        break;
      case 2:
        r.set_direction(rng() % 2 ? dfw::v1::DIRECTION_IN : dfw::v1::DIRECTION_BOTH);
        break;
      case 3:
        if (r.sources().any()) break;
        r.mutable_sources()->clear_ip_prefixes();
        if (rng() % 2) {
          r.mutable_sources()->add_ip_prefixes("203.0.113." + std::to_string(rng() % 4) + "/32");
        }
        break;
      default:
        break;
    }
  }
  if (rng() % 4 == 0) {
    auto* r = pol.add_rules();
    r->set_id("x" + std::to_string(rng() % 3));
    r->mutable_sources()->set_any(true);
    r->mutable_destinations()->add_group_ids("g" + std::to_string(rng() % 12));
    r->set_action(dfw::v1::ACTION_REJECT);
    // Ids stay unique within the policy.
    for (int i = 0; i + 1 < pol.rules_size(); ++i) {
      if (pol.rules(i).id() == r->id()) {
        pol.mutable_rules()->RemoveLast();
        break;
      }
    }
  }
  if (rng() % 5 == 0 && pol.rules_size() > 1) {
    pol.mutable_rules()->SwapElements(0, pol.rules_size() - 1);
  }
  if (rng() % 5 == 0 && pol.rules_size() > 0) pol.mutable_rules()->RemoveLast();
  return pol;
}

TEST(PolicyPreviewTest, PreviewIsWhatTheChangeThenDoesOnRandomFleets) {
  RandomFleet f(Seed());
  ASSERT_NO_FATAL_FAILURE(f.Open());
  ASSERT_NO_FATAL_FAILURE(f.Populate());
  f.Drain();
  size_t listed = 0, with_changed = 0, with_reorder = 0, with_revalidating = 0, over = 0;
  for (int step = 0; step < 300; ++step) {
    for (int k = static_cast<int>(f.rng() % 3); k > 0; --k) {
      ASSERT_NO_FATAL_FAILURE(f.RandomChange());
    }
    f.Drain();
    std::string id;
    std::optional<dfw::v1::Policy> pol = RandomPolicyChange(f, &id);
    dfw::v1::PreviewPolicyRequest req;
    if (pol) {
      *req.mutable_policy() = *pol;
    } else {
      req.set_delete_policy_id(id);
    }
    const uint32_t budget = 1 + static_cast<uint32_t>(f.rng() % 12);
    req.set_rules_per_vnic_budget(budget);

    const FleetView before = ViewOf(*f.m);
    const uint64_t rev = f.m->revision();
    auto impact = f.m->PreviewPolicy(req);
    ASSERT_TRUE(impact.ok()) << impact.status() << " step " << step;
    // Nothing changed: no revision, nothing for any host.
    ASSERT_EQ(f.m->revision(), rev);
    for (int h = 0; h < RandomFleet::kHosts; ++h) {
      EXPECT_FALSE(f.m->NextMessage(f.feeds[h].get())) << "host " << h << " step " << step;
    }
    EXPECT_EQ(impact->revision(), rev);
    EXPECT_EQ(impact->deletes(), !pol.has_value());
    EXPECT_EQ(impact->creates(), pol && !f.m->GetPolicy(id).ok());

    if (pol) {
      dfw::v1::PutPolicyRequest put;
      *put.mutable_policy() = *pol;
      ASSERT_TRUE(f.m->PutPolicy(put).ok()) << "step " << step;
    } else {
      dfw::v1::DeleteRequest del;
      del.set_id(id);
      ASSERT_TRUE(f.m->DeletePolicy(del).ok()) << "step " << step;
    }
    f.Drain();
    const auto want = Reference(before, ViewOf(*f.m), id);

    std::map<std::string, const dfw::v1::PolicyImpact::VNic*> got;
    for (const auto& v : impact->vnics()) got[v.vnic_id()] = &v;
    std::set<std::string> want_ids, got_ids, want_hosts, got_hosts;
    for (const auto& [v, e] : want) {
      want_ids.insert(v);
      want_hosts.insert(e.host);
    }
    for (const auto& [v, e] : got) got_ids.insert(v);
    for (const auto& h : impact->hosts()) got_hosts.insert(h.host_id());
    ASSERT_EQ(got_ids, want_ids) << "step " << step << " policy " << id;
    EXPECT_EQ(got_hosts, want_hosts) << "step " << step;
    uint32_t over_budget = 0, max_after = 0, revalidating = 0;
    for (const auto& [v, e] : want) {
      const auto& g = *got.at(v);
      const std::string at = "step " + std::to_string(step) + " vnic " + v + " policy " + id;
      EXPECT_EQ(g.host_id(), e.host) << at;
      EXPECT_EQ(g.vm_id(), "vm" + v.substr(1)) << at;  // RandomFleet: vNIC nI of VM vmI
      EXPECT_EQ(g.rules_before(), e.before) << at;
      EXPECT_EQ(g.rules_after(), e.after) << at;
      EXPECT_EQ(Sorted(g.rules_added()), Sorted(e.added)) << at;
      EXPECT_EQ(Sorted(g.rules_removed()), Sorted(e.removed)) << at;
      EXPECT_EQ(Sorted(g.rules_changed()), Sorted(e.changed)) << at;
      EXPECT_EQ(g.reordered(), e.reordered) << at;
      EXPECT_EQ(Sorted(g.revalidating_rules()), Sorted(e.revalidating)) << at;
      EXPECT_EQ(g.over_budget(), e.after > budget) << at;
      over_budget += e.after > budget;
      max_after = std::max(max_after, e.after);
      revalidating += !e.revalidating.empty();
      with_changed += !e.changed.empty();
      with_reorder += e.reordered;
    }
    EXPECT_EQ(impact->rules_per_vnic_budget(), budget);
    EXPECT_EQ(impact->vnics_over_budget(), over_budget) << "step " << step;
    EXPECT_EQ(impact->max_rules_after(), max_after) << "step " << step;
    EXPECT_EQ(impact->vnics_revalidating(), revalidating) << "step " << step;
    listed += want.size();
    over += over_budget;
    with_revalidating += revalidating;
  }
  // The random changes reached every part of the preview.
  EXPECT_GT(listed, 300u);
  EXPECT_GT(with_changed, 10u);
  EXPECT_GT(with_reorder, 10u);
  EXPECT_GT(with_revalidating, 10u);
  EXPECT_GT(over, 10u);
}

// The preview is refused exactly as the change would be, naming the field,
// and the budget defaults to the controller's.
TEST(PolicyPreviewTest, RefusedAsTheChangeWouldBe) {
  RandomFleet f(Seed());
  ASSERT_NO_FATAL_FAILURE(f.Open());
  ASSERT_NO_FATAL_FAILURE(f.Populate());
  dfw::v1::PreviewPolicyRequest req;
  auto none = f.m->PreviewPolicy(req);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(none.status().message(), "policy: required");

  *req.mutable_policy() = f.PolicyProto(0);
  req.mutable_policy()->mutable_rules(0)->mutable_sources()->set_group_ids(0, "nope");
  auto bad = f.m->PreviewPolicy(req);
  dfw::v1::PutPolicyRequest put;
  *put.mutable_policy() = req.policy();
  auto bad_put = f.m->PutPolicy(put);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.status(), bad_put.status());
  EXPECT_NE(bad.status().message().find("policy.rules[0].sources"), std::string::npos)
      << bad.status();

  *req.mutable_policy() = f.PolicyProto(0);
  req.set_expected_revision(f.m->GetPolicy("p0")->revision() + 1);
  EXPECT_EQ(f.m->PreviewPolicy(req).status().code(), absl::StatusCode::kFailedPrecondition);
  req.set_expected_revision(0);
  req.set_create_only(true);
  EXPECT_EQ(f.m->PreviewPolicy(req).status().code(), absl::StatusCode::kAlreadyExists);
  req.set_create_only(false);
  auto ok = f.m->PreviewPolicy(req);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->rules_per_vnic_budget(), ModelService::kDefaultRulesPerVnicBudget);

  req.set_delete_policy_id("nope");
  EXPECT_EQ(f.m->PreviewPolicy(req).status().code(), absl::StatusCode::kNotFound);
}

// Over the API, on a controller on loopback: web-1 (h1) and db-1 (h2) under
// two policies, ssh-audit evaluated first.
class PolicyPreviewApiTest : public WebAndDbOnTwoHostsTest {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(WebAndDbOnTwoHostsTest::SetUp());
    Post("/api/v1/policies", WebToDb());
    Post("/api/v1/policies", json::parse(R"({"id":"ssh-audit","category":"CATEGORY_APPLICATION",
      "priority":5,"applied_to_group_ids":["web","db"],"mode":"POLICY_MODE_AUDIT",
      "on_change":"ON_CHANGE_REVALIDATE",
      "rules":[{"id":"no-ssh","sources":{"any":true},"destinations":{"any":true},
                "services":[{"protocol":6,"destination_ports":[{"first":22}]}],
                "action":"ACTION_DROP"}]})"));
    revision_ = Revision();
  }
  uint64_t Revision() { return rest_->Get("/api/v1/status").body["revision"].get<uint64_t>(); }
  // The vNICs of an impact by id.
  static std::map<std::string, json> Vnics(const json& impact) {
    std::map<std::string, json> out;
    for (const auto& v : impact.value("vnics", json::array())) out[v["vnic_id"]] = v;
    return out;
  }

  uint64_t revision_ = 0;
};

TEST_F(PolicyPreviewApiTest, CreateReplaceAndDeletePreviewedOverRestNothingChanged) {
  // A new policy: both vNICs gain its rule; it is not created.
  json ssh = json::parse(R"({"id":"web-ssh","category":"CATEGORY_APPLICATION","priority":20,
    "applied_to_group_ids":["web","db"],
    "rules":[{"id":"ssh","sources":{"group_ids":["web"]},"destinations":{"group_ids":["db"]},
              "services":[{"protocol":6,"destination_ports":[{"first":22}]}],
              "action":"ACTION_ALLOW"}]})");
  auto r = rest_->Post("/api/v1/policies?dry_run=true", ssh);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body["creates"], true);
  EXPECT_EQ(r.body["revision"], std::to_string(revision_));
  auto v = Vnics(r.body);
  ASSERT_EQ(v.size(), 2u) << r.body;
  EXPECT_EQ(v["web-1-nic0"]["vm_id"], "web-1");
  EXPECT_EQ(v["web-1-nic0"]["host_id"], "h1");
  EXPECT_EQ(v["web-1-nic0"]["rules_before"], 3);
  EXPECT_EQ(v["web-1-nic0"]["rules_after"], 4);
  EXPECT_EQ(v["db-1-nic0"]["rules_added"], json::array({"ssh"}));
  // ssh-audit revalidates: its connections are re-checked on both vNICs.
  EXPECT_EQ(v["db-1-nic0"]["revalidating_rules"], json::array({"ssh-audit/no-ssh"}));
  EXPECT_EQ(r.body["vnics_revalidating"], 2);
  ASSERT_EQ(r.body["hosts"].size(), 2u);
  EXPECT_EQ(r.body["hosts"][0]["state"], "REALIZATION_STATE_DISCONNECTED");  // never connected
  EXPECT_EQ(rest_->Get("/api/v1/policies/web-ssh").status, 404);
  EXPECT_EQ(Revision(), revision_);

  // A replacement that drops allow-pg, with a budget of one rule: over it.
  json w = WebToDb();
  w["rules"].erase(0);
  r = rest_->Put("/api/v1/policies/web-to-db?dry_run=true&rules_per_vnic_budget=1", w);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body.value("creates", false), false);
  v = Vnics(r.body);
  ASSERT_EQ(v.size(), 2u) << r.body;
  EXPECT_EQ(v["db-1-nic0"]["rules_removed"], json::array({"allow-pg"}));
  EXPECT_EQ(v["db-1-nic0"]["rules_after"], 2);
  EXPECT_EQ(v["db-1-nic0"]["over_budget"], true);
  EXPECT_EQ(r.body["vnics_over_budget"], 2);
  EXPECT_EQ(r.body["rules_per_vnic_budget"], 1);
  // The same policy unchanged reaches no vNIC.
  r = rest_->Put("/api/v1/policies/web-to-db?dry_run=true", WebToDb());
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body.value("vnics", json::array()).size(), 0u) << r.body;

  // A deletion.
  r = rest_->Delete("/api/v1/policies/ssh-audit?dry_run=true");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body["deletes"], true);
  EXPECT_EQ(Vnics(r.body)["web-1-nic0"]["rules_removed"], json::array({"no-ssh"}));
  EXPECT_EQ(rest_->Get("/api/v1/policies/ssh-audit").status, 200);
  EXPECT_EQ(rest_->Get("/api/v1/policies/web-to-db").body["rules"].size(), 2u);
  EXPECT_EQ(Revision(), revision_);
}

TEST_F(PolicyPreviewApiTest, ErrorsAreTheChangesOwn) {
  json bad = WebToDb();
  bad["rules"][0]["sources"]["group_ids"][0] = "nope";
  auto dry = rest_->Put("/api/v1/policies/web-to-db?dry_run=true", bad);
  auto real = rest_->Put("/api/v1/policies/web-to-db", bad);
  EXPECT_EQ(dry.status, 400);
  EXPECT_EQ(dry.body["error"], real.body["error"]);
  EXPECT_EQ(dry.body["error"].value("field", "").rfind("policy.rules[0].sources", 0), 0u)
      << dry.body;
  EXPECT_EQ(rest_->Post("/api/v1/policies?dry_run=true", WebToDb()).status, 409);  // exists
  EXPECT_EQ(
      rest_->Put("/api/v1/policies/web-to-db?dry_run=true&expected_revision=1", WebToDb()).status,
      409);
  EXPECT_EQ(rest_->Delete("/api/v1/policies/nope?dry_run=true").status, 404);
  auto r = rest_->Put("/api/v1/policies/web-to-db?dry_run=maybe", WebToDb());
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.body["error"].value("field", ""), "dry_run");
  r = rest_->Put("/api/v1/policies/web-to-db?dry_run=true&rules_per_vnic_budget=x", WebToDb());
  EXPECT_EQ(r.body["error"].value("field", ""), "rules_per_vnic_budget");
  EXPECT_EQ(Revision(), revision_);
}

TEST_F(PolicyPreviewApiTest, OverGrpc) {
  auto ch = grpc::CreateChannel("127.0.0.1:" + std::to_string(server_.grpc_port()),
                                grpc::InsecureChannelCredentials());
  auto stub = dfw::v1::ControllerService::NewStub(ch);
  dfw::v1::PreviewPolicyRequest req;
  req.set_delete_policy_id("web-to-db");
  dfw::v1::PolicyImpact resp;
  grpc::ClientContext c;
  ASSERT_TRUE(stub->PreviewPolicy(&c, req, &resp).ok());
  EXPECT_TRUE(resp.deletes());
  ASSERT_EQ(resp.vnics_size(), 2);
  EXPECT_EQ(resp.vnics(0).rules_removed_size(), 2);
  req.set_delete_policy_id("nope");
  grpc::ClientContext c2;
  EXPECT_EQ(stub->PreviewPolicy(&c2, req, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Revision(), revision_);
}

// dfwctl policy apply --dry-run and policy delete --dry-run, the real binary.
TEST_F(PolicyPreviewApiTest, Dfwctl) {
  json w = WebToDb();
  w["rules"].erase(0);
  const std::string file = dir_.path() + "/web-to-db.json";
  std::ofstream(file) << w.dump();
  auto run = [&](const std::string& args) {
    return RunDfwctl(DFWCTL_BIN, server_.http_port(), args);
  };
  Cmd c = run("policy apply -f " + file + " --dry-run");
  EXPECT_EQ(c.rc, 0) << c.out;
  EXPECT_NE(c.out.find("dry run: policy web-to-db replaced"), std::string::npos) << c.out;
  EXPECT_NE(c.out.find("would change 2 vNIC(s) on 2 host(s)"), std::string::npos) << c.out;
  EXPECT_NE(c.out.find("3 -> 2"), std::string::npos) << c.out;
  EXPECT_NE(c.out.find("allow-pg"), std::string::npos) << c.out;
  EXPECT_NE(c.out.find("nothing was changed"), std::string::npos) << c.out;
  c = run("policy apply -f " + file + " --dry-run --budget 1");
  EXPECT_EQ(c.rc, 1) << c.out;
  EXPECT_NE(c.out.find("OVER BUDGET"), std::string::npos) << c.out;
  EXPECT_NE(c.out.find("2 vNIC(s) would hold more than 1 rules"), std::string::npos) << c.out;
  c = run("-o json policy delete ssh-audit --dry-run");
  EXPECT_EQ(c.rc, 0) << c.out;
  json j = json::parse(c.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << c.out;
  EXPECT_EQ(j["deletes"], true);
  c = run("policy apply -f " + file + " --budget 1");
  EXPECT_EQ(c.rc, 2) << c.out;  // --budget only with --dry-run
  c = run("policy apply -f " + file + " --dry-run --budget 1x");
  EXPECT_EQ(c.rc, 2) << c.out;  // a number
  // Every item of a file is previewed, the exit says one was over budget.
  const std::string two = dir_.path() + "/two.json";
  json ssh = json::parse(R"({"id":"web-ssh","category":"CATEGORY_APPLICATION","priority":20,
    "applied_to_group_ids":["web"],
    "rules":[{"id":"ssh","sources":{"any":true},"destinations":{"group_ids":["web"]},
              "action":"ACTION_ALLOW"}]})");
  std::ofstream(two) << json::array({w, ssh}).dump();
  c = run("policy apply -f " + two + " --dry-run --budget 1");
  EXPECT_EQ(c.rc, 1) << c.out;
  EXPECT_NE(c.out.find("dry run: policy web-ssh created"), std::string::npos) << c.out;
  EXPECT_EQ(rest_->Get("/api/v1/policies/web-to-db").body["rules"].size(), 2u);
  EXPECT_EQ(rest_->Get("/api/v1/policies/ssh-audit").status, 200);
  EXPECT_EQ(Revision(), revision_);
  // Without --dry-run the change is made.
  c = run("policy apply -f " + file);
  EXPECT_EQ(c.rc, 0) << c.out;
  EXPECT_EQ(rest_->Get("/api/v1/policies/web-to-db").body["rules"].size(), 1u);
}

// A group change previewed (GroupImpact) over REST, gRPC and dfwctl group
// apply --dry-run: group web redrawn to select app=db moves web-1 out (it
// loses every rule applied to web) and db-1 in (its rules stay: it is in
// db), and g:web's addresses change on the hosts holding it. Nothing changes.
TEST_F(PolicyPreviewApiTest, GroupChangesPreviewedOverRestGrpcAndDfwctl) {
  json g = TagGroupJson("web", "app", "db");
  auto r = rest_->Put("/api/v1/groups/web?dry_run=true", g);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_FALSE(r.body.contains("creates")) << "web exists (false is left out)";
  EXPECT_EQ(r.body["vms_added"], json::array({"db-1"}));
  EXPECT_EQ(r.body["vms_removed"], json::array({"web-1"}));
  auto v = Vnics(r.body);
  ASSERT_EQ(v.size(), 1u) << r.body;
  EXPECT_EQ(v["web-1-nic0"]["rules_before"], 3);
  EXPECT_EQ(v["web-1-nic0"].value("rules_after", 0), 0);
  EXPECT_EQ(v["web-1-nic0"]["rules_removed"].size(), 3u) << r.body;
  EXPECT_EQ(v["web-1-nic0"]["vm_name"], "web-1");
  ASSERT_EQ(r.body["address_sets"].size(), 1u) << r.body;
  EXPECT_EQ(r.body["address_sets"][0]["group_id"], "web");
  EXPECT_EQ(r.body["address_sets"][0]["addresses_added"], 1);
  EXPECT_EQ(r.body["address_sets"][0]["addresses_removed"], 1);
  EXPECT_EQ(r.body["address_sets"][0]["host_ids"], json::array({"h1", "h2"}));
  EXPECT_EQ(r.body["hosts"].size(), 2u);
  // Errors are the change's own; a POST of an existing group is a conflict.
  json bad = g;
  bad["static_members"]["group_ids"] = json::array({"nope"});
  auto dry = rest_->Put("/api/v1/groups/web?dry_run=true", bad);
  EXPECT_EQ(dry.status, 400);
  EXPECT_EQ(dry.body["error"], rest_->Put("/api/v1/groups/web", bad).body["error"]);
  EXPECT_EQ(rest_->Post("/api/v1/groups?dry_run=true", g).status, 409);
  EXPECT_EQ(Revision(), revision_);

  auto ch = grpc::CreateChannel("127.0.0.1:" + std::to_string(server_.grpc_port()),
                                grpc::InsecureChannelCredentials());
  auto stub = dfw::v1::ControllerService::NewStub(ch);
  dfw::v1::PreviewGroupRequest req;
  req.mutable_group()->set_id("web");
  auto* c = req.mutable_group()->add_criteria()->add_conditions()->mutable_tag();
  c->set_scope("app");
  c->set_value("db");
  dfw::v1::GroupImpact resp;
  grpc::ClientContext ctx;
  ASSERT_TRUE(stub->PreviewGroup(&ctx, req, &resp).ok());
  EXPECT_EQ(resp.vnics_size(), 1);

  const std::string file = dir_.path() + "/web-group.json";
  std::ofstream(file) << g.dump();
  Cmd out = RunDfwctl(DFWCTL_BIN, server_.http_port(), "group apply -f " + file + " --dry-run");
  EXPECT_EQ(out.rc, 0) << out.out;
  EXPECT_NE(out.out.find("dry run: group web replaced"), std::string::npos) << out.out;
  EXPECT_NE(out.out.find("+1 / -1 VM(s); 1 vNIC(s) change rules, 1 address set(s) change"),
            std::string::npos)
      << out.out;
  EXPECT_NE(out.out.find("3 -> 0"), std::string::npos) << out.out;
  EXPECT_NE(out.out.find("nothing was changed"), std::string::npos) << out.out;
  EXPECT_EQ(Revision(), revision_);
  EXPECT_EQ(rest_->Get("/api/v1/groups/web/members").body["vm_ids"], json::array({"web-1"}));
  // A tag change previewed: web-1 gains app=db (a scope may hold several
  // values): it joins db, its rules stay (both groups have the same
  // policies), db's addresses change on both hosts.
  out = RunDfwctl(DFWCTL_BIN, server_.http_port(), "vm tag web-1 app=db --dry-run");
  EXPECT_EQ(out.rc, 0) << out.out;
  EXPECT_NE(out.out.find("dry run: tag change"), std::string::npos) << out.out;
  EXPECT_NE(out.out.find("groups changing: db\n"), std::string::npos) << out.out;
  EXPECT_NE(out.out.find("0 vNIC(s) change rules, 1 address set(s) change, on 2 host(s)"),
            std::string::npos)
      << out.out;
  EXPECT_EQ(rest_->Post("/api/v1/tags?dry_run=maybe", json{{"vm_ids", {"web-1"}}}).status, 400);
  EXPECT_EQ(Revision(), revision_);
  // Without --dry-run the change is made.
  out = RunDfwctl(DFWCTL_BIN, server_.http_port(), "group apply -f " + file);
  EXPECT_EQ(out.rc, 0) << out.out;
  EXPECT_EQ(rest_->Get("/api/v1/groups/web/members").body["vm_ids"], json::array({"db-1"}));
}

}  // namespace
}  // namespace dfw::controller::testing
