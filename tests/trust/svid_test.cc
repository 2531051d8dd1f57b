#include "dfw/trust/svid.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <set>

#include "dfw/trust/ca.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "test_util.h"

namespace dfw::trust {
namespace {

using ::testing::HasSubstr;
using testing::Mode;
using testing::TempDir;

std::string Msg(const absl::Status& s) { return std::string(s.message()); }

class SvidTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto ca = CertificateAuthority::Init(dir_.path() + "/ca", "dfw.test");
    ASSERT_TRUE(ca.ok()) << ca.status();
    ca_ = std::move(*ca);
  }
  Svid NewSvid(const std::string& name) {
    IssueOptions o;
    o.id = {"dfw.test", IdKind::kHost, name};
    auto kc = ca_->IssueWithNewKey(o);
    EXPECT_TRUE(kc.ok()) << kc.status();
    return {kc->key_pem, kc->cert.cert_pem, ca_->bundle_pem()};
  }

  TempDir dir_;
  std::unique_ptr<CertificateAuthority> ca_;
};

TEST_F(SvidTest, WriteReadRoundTripAndModes) {
  const std::string d = dir_.path() + "/a/b/svid";  // parents missing too
  const mode_t old = ::umask(0);                    // modes must not depend on the umask
  Svid s = NewSvid("h1");
  absl::Status w = WriteSvid(d, s);
  ::umask(old);
  ASSERT_TRUE(w.ok()) << w;
  EXPECT_EQ(Mode(d), 0700);
  EXPECT_EQ(Mode(d + "/svid_key.pem"), 0600);
  EXPECT_EQ(Mode(d + "/svid.pem"), 0644);
  EXPECT_EQ(Mode(d + "/svid_bundle.pem"), 0644);

  auto r = ReadSvid(d);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->key_pem, s.key_pem);
  EXPECT_EQ(r->cert_pem, s.cert_pem);
  EXPECT_EQ(r->bundle_pem, s.bundle_pem);

  // Replacing: new content, the key's mode is set again, no temporary files left.
  ASSERT_EQ(::chmod((d + "/svid_key.pem").c_str(), 0644), 0);
  Svid s2 = NewSvid("h1");
  ASSERT_TRUE(WriteSvid(d, s2).ok());
  EXPECT_EQ(Mode(d + "/svid_key.pem"), 0600);
  r = ReadSvid(d);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->cert_pem, s2.cert_pem);
  EXPECT_EQ(r->key_pem, s2.key_pem);
  std::set<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(d)) {
    names.insert(e.path().filename());
  }
  EXPECT_THAT(names, ::testing::ElementsAre("svid.pem", "svid_bundle.pem", "svid_key.pem"));
}

TEST_F(SvidTest, ReadNamesTheMissingFile) {
  for (const char* missing : {kSvidFile, kSvidKeyFile, kSvidBundleFile}) {
    const std::string d = dir_.path() + "/m-" + missing;
    ASSERT_TRUE(WriteSvid(d, NewSvid("h1")).ok());
    ASSERT_EQ(::unlink((d + "/" + missing).c_str()), 0);
    auto r = ReadSvid(d);
    ASSERT_FALSE(r.ok()) << missing;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound) << missing;
    EXPECT_THAT(Msg(r.status()), HasSubstr(d + "/" + missing));
  }
  auto none = ReadSvid(dir_.path() + "/nowhere");
  ASSERT_FALSE(none.ok());
  EXPECT_THAT(Msg(none.status()), HasSubstr("nowhere/svid_key.pem"));
}

TEST_F(SvidTest, ReadRefusesAKeyThatIsNotTheCertificates) {
  const std::string d = dir_.path() + "/mixed";
  Svid a = NewSvid("h1"), b = NewSvid("h1");
  a.key_pem = b.key_pem;  // as seen mid-rotation: the new key, the old certificate
  ASSERT_TRUE(WriteSvid(d, a).ok());
  auto r = ReadSvid(d);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(Msg(r.status()), HasSubstr("is not the key of"));

  ASSERT_TRUE(WriteSvid(d, b).ok());
  std::ofstream(d + "/svid_bundle.pem") << "not a certificate\n";
  r = ReadSvid(d);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(Msg(r.status()), HasSubstr("svid_bundle.pem"));
}

TEST_F(SvidTest, WriteRefusesEmptyParts) {
  Svid s = NewSvid("h1");
  s.bundle_pem.clear();
  auto w = WriteSvid(dir_.path() + "/empty", s);
  ASSERT_FALSE(w.ok());
  EXPECT_THAT(Msg(w), HasSubstr("svid_bundle.pem would be empty"));
  EXPECT_FALSE(std::filesystem::exists(dir_.path() + "/empty/svid_key.pem"));
}

TEST(JoinTokenTest, FormatAndUniqueness) {
  const std::regex re("^dfwjt-[A-Za-z0-9_-]{43}$");
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    std::string t = NewJoinToken();
    ASSERT_TRUE(std::regex_match(t, re)) << t;
    seen.insert(t);
  }
  EXPECT_EQ(seen.size(), 1000u);
}

TEST(JoinTokenTest, HashIsStableHexSha256) {
  EXPECT_EQ(TokenHash("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(TokenHash(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  std::string t = NewJoinToken();
  EXPECT_EQ(TokenHash(t), TokenHash(t));
  EXPECT_EQ(TokenHash(t).size(), 64u);
  EXPECT_NE(TokenHash(t), TokenHash(NewJoinToken()));
}

}  // namespace
}  // namespace dfw::trust
