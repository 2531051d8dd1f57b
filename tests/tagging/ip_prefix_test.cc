#include "dfw/tagging/ip_prefix.h"

#include <gtest/gtest.h>

namespace dfw::tagging {
namespace {

TEST(IpPrefix, ParsesV4AndV6WithCanonicalText) {
  auto a = IpPrefix::Parse("198.18.0.0/15");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_TRUE(a->is_v4());
  EXPECT_EQ(a->length(), 15);
  EXPECT_EQ(a->ToString(), "198.18.0.0/15");

  auto h = IpPrefix::Parse("198.18.0.7");
  ASSERT_TRUE(h.ok());
  EXPECT_TRUE(h->is_host());
  EXPECT_EQ(h->ToString(), "198.18.0.7/32");

  auto v6 = IpPrefix::Parse("2001:DB8::/32");
  ASSERT_TRUE(v6.ok()) << v6.status();
  EXPECT_FALSE(v6->is_v4());
  EXPECT_EQ(v6->ToString(), "2001:db8::/32");
  EXPECT_EQ(IpPrefix::ParseAddress("2001:db8::1")->ToString(), "2001:db8::1/128");
}

TEST(IpPrefix, RejectsHostBitsAndSaysWhatWasMeant) {
  auto p = IpPrefix::Parse("198.18.0.5/24");
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("host bits"), std::string::npos);
  EXPECT_NE(p.status().message().find("198.18.0.0/24"), std::string::npos);
}

TEST(IpPrefix, RejectsGarbage) {
  for (const char* bad : {"", "1.2.3", "1.2.3.4/33", "1.2.3.4/", "1.2.3.4/x", "::1/129",
                          "256.1.1.1", "hello", "1.2.3.4/24/1", "fe80::1%eth0"}) {
    EXPECT_FALSE(IpPrefix::Parse(bad).ok()) << bad;
  }
  EXPECT_FALSE(IpPrefix::ParseAddress("1.2.3.4/32").ok());
}

TEST(IpPrefix, ContainsFollowsFamilyAndLength) {
  auto net = *IpPrefix::Parse("198.18.0.0/16");
  EXPECT_TRUE(net.Contains(*IpPrefix::Parse("198.18.3.4")));
  EXPECT_TRUE(net.Contains(*IpPrefix::Parse("198.18.128.0/17")));
  EXPECT_FALSE(net.Contains(*IpPrefix::Parse("198.19.0.1")));
  EXPECT_FALSE(net.Contains(*IpPrefix::Parse("198.0.0.0/8")));
  EXPECT_FALSE(net.Contains(*IpPrefix::Parse("::ffff:198.18.0.1")));
  EXPECT_EQ(IpPrefix::V4(0xC6120001, 32), *IpPrefix::Parse("198.18.0.1"));
  EXPECT_EQ(IpPrefix::V4(0xC6120001, 16), *IpPrefix::Parse("198.18.0.0/16"));
}

}  // namespace
}  // namespace dfw::tagging
