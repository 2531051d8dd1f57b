#include "dfw/trust/spiffe_id.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dfw::trust {
namespace {

using ::testing::HasSubstr;

TEST(SpiffeIdTest, ParseAndFormatRoundTrip) {
  const SpiffeId ids[] = {
      {"dfw.test", IdKind::kController, "ctl-1"},
      {"dfw.test", IdKind::kHost, "hv01.example.org"},
      {"example_td-1.org", IdKind::kVm, "d1f00000-0000-4000-8000-000000000001"},
      {"dfw.test", IdKind::kUser, "Alice_B.c-D"},
      {std::string(255, 'a'), IdKind::kUser, std::string(128, 'Z')},
  };
  for (const SpiffeId& id : ids) {
    std::string uri = id.ToString();
    auto parsed = ParseSpiffeId(uri);
    ASSERT_TRUE(parsed.ok()) << uri << ": " << parsed.status();
    EXPECT_EQ(*parsed, id);
    EXPECT_EQ(parsed->ToString(), uri);
  }
  EXPECT_EQ((SpiffeId{"dfw.test", IdKind::kHost, "h1"}.ToString()), "spiffe://dfw.test/host/h1");
}

TEST(SpiffeIdTest, KindNames) {
  EXPECT_STREQ(IdKindName(IdKind::kController), "controller");
  EXPECT_STREQ(IdKindName(IdKind::kHost), "host");
  EXPECT_STREQ(IdKindName(IdKind::kVm), "vm");
  EXPECT_STREQ(IdKindName(IdKind::kUser), "user");
  for (IdKind k : {IdKind::kController, IdKind::kHost, IdKind::kVm, IdKind::kUser}) {
    auto p = ParseIdKind(IdKindName(k));
    ASSERT_TRUE(p.ok());
    EXPECT_EQ(*p, k);
  }
  EXPECT_FALSE(ParseIdKind("Host").ok());
}

struct Refusal {
  std::string uri;
  std::string part;  // what the message must name
};

TEST(SpiffeIdTest, RefusesWithTheWrongPartNamed) {
  const std::string td255(255, 'a');
  const Refusal cases[] = {
      {"", "empty"},
      {"http://dfw.test/host/h1", "scheme"},
      {"SPIFFE://dfw.test/host/h1", "scheme"},
      {"spiffe:/dfw.test/host/h1", "scheme"},
      {"dfw.test/host/h1", "scheme"},
      {"spiffe://dfw.test/host/h1?x=1", "query"},
      {"spiffe://dfw.test/host/h1#frag", "fragment"},
      {"spiffe://dfw.test/host/h%31", "percent-encoding"},
      {"spiffe://dfw%2etest/host/h1", "percent-encoding"},
      {"spiffe://admin@dfw.test/host/h1", "userinfo"},
      {"spiffe://dfw.test:8443/host/h1", "port"},
      {"spiffe:///host/h1", "trust domain is empty"},
      {"spiffe://DFW.test/host/h1", "trust domain 'DFW.test': upper-case"},
      {"spiffe://dfw test/host/h1", "trust domain 'dfw test': character ' '"},
      {"spiffe://dfw*.test/host/h1", "trust domain"},
      {"spiffe://" + td255 + "a/host/h1", "trust domain"},
      {"spiffe://dfw.test", "path is missing"},
      {"spiffe://dfw.test/", "path segment 1 is empty"},
      {"spiffe://dfw.test//h1", "path segment 1 is empty"},
      {"spiffe://dfw.test/host", "path has 1 segments"},
      {"spiffe://dfw.test/host/", "path segment 2 is empty"},
      {"spiffe://dfw.test/host//h1", "path segment 2 is empty"},
      {"spiffe://dfw.test/host/h1/", "path segment 3 is empty"},
      {"spiffe://dfw.test/host/h1/x", "path has 3 segments"},
      {"spiffe://dfw.test/Host/h1", "kind 'Host'"},
      {"spiffe://dfw.test/admin/h1", "kind 'admin'"},
      {"spiffe://dfw.test/../h1", "kind '..'"},
      {"spiffe://dfw.test/host/.", "name '.'"},
      {"spiffe://dfw.test/host/..", "name '..'"},
      {"spiffe://dfw.test/host/h 1", "name 'h 1': character ' '"},
      {"spiffe://dfw.test/user/al!ce", "name 'al!ce'"},
      {"spiffe://dfw.test/user/" + std::string(129, 'x'), "name"},
      {std::string("spiffe://dfw.test/host/h\0", 25), "name"},
  };
  for (const Refusal& c : cases) {
    auto id = ParseSpiffeId(c.uri);
    ASSERT_FALSE(id.ok()) << c.uri << " parsed as " << id->ToString();
    EXPECT_EQ(id.status().code(), absl::StatusCode::kInvalidArgument) << c.uri;
    EXPECT_THAT(std::string(id.status().message()), HasSubstr(c.part)) << c.uri;
  }
}

TEST(SpiffeIdTest, ValidateTrustDomainAndName) {
  EXPECT_TRUE(ValidateTrustDomain("dfw.test").ok());
  EXPECT_TRUE(ValidateTrustDomain("a-b_c.0").ok());
  EXPECT_TRUE(ValidateTrustDomain(std::string(255, 'x')).ok());
  EXPECT_THAT(std::string(ValidateTrustDomain(std::string(256, 'x')).message()),
              HasSubstr("at most 255"));
  EXPECT_THAT(std::string(ValidateTrustDomain("").message()), HasSubstr("trust domain is empty"));
  EXPECT_THAT(std::string(ValidateTrustDomain("Dfw").message()), HasSubstr("lower case"));

  EXPECT_TRUE(ValidateIdName("h1").ok());
  EXPECT_TRUE(ValidateIdName("...").ok());  // only "." and ".." are special
  EXPECT_TRUE(ValidateIdName(std::string(128, 'n')).ok());
  EXPECT_THAT(std::string(ValidateIdName(std::string(129, 'n')).message()),
              HasSubstr("at most 128"));
  EXPECT_THAT(std::string(ValidateIdName("").message()), HasSubstr("name is empty"));
  EXPECT_THAT(std::string(ValidateIdName("a/b").message()), HasSubstr("character '/'"));
  EXPECT_FALSE(ValidateIdName(".").ok());
  EXPECT_FALSE(ValidateIdName("..").ok());
}

TEST(SpiffeIdTest, Roles) {
  for (Role r : {Role::kViewer, Role::kEditor, Role::kAdmin}) {
    auto p = ParseRole(RoleName(r));
    ASSERT_TRUE(p.ok()) << RoleName(r);
    EXPECT_EQ(*p, r);
  }
  EXPECT_STREQ(RoleName(Role::kNone), "none");
  EXPECT_LT(Role::kNone, Role::kViewer);
  EXPECT_LT(Role::kViewer, Role::kEditor);
  EXPECT_LT(Role::kEditor, Role::kAdmin);
  for (const char* bad : {"", "none", "Admin", "root", "admin "}) {
    auto p = ParseRole(bad);
    ASSERT_FALSE(p.ok()) << bad;
    EXPECT_THAT(std::string(p.status().message()), HasSubstr("role"));
  }
}

}  // namespace
}  // namespace dfw::trust
