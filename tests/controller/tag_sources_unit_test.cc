// tag_sources.h against a reference written from the rule's words, on
// random API and metadata tag sets (a few scopes and values, plain tags
// too): the effective set, a GET -> PUT round trip, Tag requests that set
// and remove, and the refusals of removing what only the metadata carries.
// The same rule over real sockets: controller_tag_sources.
#include "dfw/controller/tag_sources.h"

#include <algorithm>
#include <random>
#include <set>

#include "gtest/gtest.h"

namespace dfw::controller::tag_sources {
namespace {

using Set = std::set<tagging::Tag>;

TagList List(const Set& s) { return {s.begin(), s.end()}; }

// The rule, said plainly: a tag is effective when the API holds it, or the
// metadata holds it and the API holds no tag of its scope (a plain tag has
// no scope to hold).
Set Reference(const Set& api, const Set& host) {
  Set out = api;
  for (const auto& t : host) {
    bool claimed = !t.scope.empty() && std::any_of(api.begin(), api.end(), [&](const auto& a) {
      return a.scope == t.scope;
    });
    if (!claimed) out.insert(t);
  }
  return out;
}

class Random {
 public:
  explicit Random(unsigned seed) : rng_(seed) {}
  tagging::Tag Tag() {
    static const char* kScopes[] = {"", "app", "env", "tier"};
    return {kScopes[rng_() % 4], std::string(1, static_cast<char>('a' + rng_() % 3))};
  }
  Set Tags() {
    Set s;
    for (int n = static_cast<int>(rng_() % 5); n > 0; --n) s.insert(Tag());
    return s;
  }
  unsigned operator()() { return rng_(); }

 private:
  std::mt19937 rng_;
};

dfw::v1::Vm VmWith(const Set& api, const Set& host) {
  dfw::v1::Vm vm;
  vm.set_id("vm1");
  vm.set_host("h1");
  SetTagSources(List(api), List(host), &vm);
  return vm;
}

TEST(TagSourcesTest, EffectiveTagsFollowTheRule) {
  Random r(1);
  for (int i = 0; i < 5000; ++i) {
    Set api = r.Tags(), host = r.Tags();
    dfw::v1::Vm vm = VmWith(api, host);
    EXPECT_EQ(TagsOf(vm.tags()), List(Reference(api, host)));
    EXPECT_EQ(TagsOf(vm.api_tags()), List(api));
    EXPECT_EQ(TagsOf(vm.host_tags()), List(host));
  }
}

TEST(TagSourcesTest, AGetPutRoundTripChangesNothing) {
  Random r(2);
  for (int i = 0; i < 5000; ++i) {
    Set api = r.Tags(), host = r.Tags();
    dfw::v1::Vm vm = VmWith(api, host);
    auto put = ApiTagsForPut(TagsOf(vm.tags()), vm);
    ASSERT_TRUE(put.ok()) << put.status();
    EXPECT_EQ(*put, List(api));
  }
}

// A PUT asking for an effective set: granted exactly when every tag only the
// metadata carries is still asked for, or its scope is taken over by the
// API; then what was asked for is effective, plus only metadata values.
TEST(TagSourcesTest, APutGivesTheEffectiveSetAskedForOrIsRefused) {
  Random r(3);
  int refused = 0;
  for (int i = 0; i < 5000; ++i) {
    Set api = r.Tags(), host = r.Tags(), want = r.Tags();
    dfw::v1::Vm vm = VmWith(api, host);
    Set eff = Reference(api, host);
    std::set<std::string> asked_scopes;
    for (const auto& t : want) asked_scopes.insert(t.scope);
    bool must_refuse = false;
    for (const auto& t : eff) {
      bool host_only = !api.count(t);
      bool kept = want.count(t) || (!t.scope.empty() && [&] {
                    // the scope goes to the API when a requested value of it is not host-only
                    for (const auto& w : want) {
                      if (w.scope == t.scope && !(host.count(w) && !api.count(w) && eff.count(w))) {
                        return true;
                      }
                    }
                    return false;
                  }());
      if (host_only && !kept) must_refuse = true;
    }
    auto put = ApiTagsForPut(List(want), vm);
    EXPECT_EQ(!put.ok(), must_refuse) << "case " << i;
    if (!put.ok()) {
      EXPECT_EQ(put.status().code(), absl::StatusCode::kFailedPrecondition);
      ++refused;
      continue;
    }
    // What was asked for is effective; anything else effective now is a
    // metadata value the API's tags had hidden (its scope let go by the
    // API) or had held too (the API's copy goes, the metadata's stays).
    Set now = Reference({put->begin(), put->end()}, host);
    for (const auto& t : want) EXPECT_TRUE(now.count(t)) << "case " << i;
    for (const auto& t : now) {
      if (!want.count(t)) {
        EXPECT_TRUE(host.count(t) && (!eff.count(t) || api.count(t))) << "case " << i;
      }
    }
  }
  EXPECT_GT(refused, 100);
}

// A Tag request: every tag set is effective after it; every API tag removed
// is gone from the API's; a removal of something only the metadata keeps
// effective is refused.
TEST(TagSourcesTest, TagSetsAndRemovesOrRefusesWhatOnlyTheMetadataCarries) {
  Random r(4);
  int refused = 0;
  for (int i = 0; i < 5000; ++i) {
    Set api = r.Tags(), host = r.Tags(), set = r.Tags();
    Set unset;
    for (int n = static_cast<int>(r() % 3); n > 0; --n) {
      tagging::Tag u = r.Tag();
      if (r() % 3 == 0) u.value.clear();  // a whole scope
      unset.insert(u);
    }
    dfw::v1::Vm vm = VmWith(api, host);
    auto matches = [](const tagging::Tag& u, const tagging::Tag& t) {
      return t.scope == u.scope && (u.value.empty() || t.value == u.value);
    };
    Set after = api;
    std::erase_if(after, [&](const auto& t) {
      return std::any_of(unset.begin(), unset.end(), [&](const auto& u) { return matches(u, t); });
    });
    after.insert(set.begin(), set.end());
    Set eff = Reference(after, host);
    bool must_refuse = false;
    for (const auto& u : unset) {
      bool removed =
          std::any_of(api.begin(), api.end(), [&](const auto& t) { return matches(u, t); });
      bool kept = std::any_of(host.begin(), host.end(),
                              [&](const auto& t) { return matches(u, t) && eff.count(t); });
      if (!removed && kept) must_refuse = true;
    }
    auto got = ApiTagsAfterTag(vm, List(set), List(unset));
    EXPECT_EQ(!got.ok(), must_refuse) << "case " << i;
    if (!got.ok()) {
      EXPECT_EQ(got.status().code(), absl::StatusCode::kFailedPrecondition);
      ++refused;
      continue;
    }
    EXPECT_EQ(*got, List(after)) << "case " << i;
  }
  EXPECT_GT(refused, 100);
}

TEST(TagSourcesTest, AStoreWithOnlyEffectiveTagsGivesThemToTheApi) {
  dfw::v1::Vm vm;
  auto* t = vm.add_tags();
  t->set_scope("app");
  t->set_value("web");
  MigrateTagSources(&vm);
  ASSERT_EQ(vm.api_tags_size(), 1);
  EXPECT_EQ(vm.api_tags(0).value(), "web");
  vm.clear_api_tags();
  vm.add_host_tags()->set_value("pci");  // sources already split: left alone
  MigrateTagSources(&vm);
  EXPECT_EQ(vm.api_tags_size(), 0);
}

}  // namespace
}  // namespace dfw::controller::tag_sources
