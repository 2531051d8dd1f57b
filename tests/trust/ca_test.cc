#include "dfw/trust/ca.h"

#include <openssl/bn.h>
#include <openssl/rsa.h>

#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "dfw/trust/peer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "test_util.h"

namespace dfw::trust {
namespace {

using namespace std::chrono_literals;
using testing::Cert;
using ::testing::HasSubstr;
using testing::Key;
using testing::Mode;
using testing::TempDir;

constexpr char kTd[] = "dfw.test";

std::string Msg(const absl::Status& s) { return std::string(s.message()); }

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Seconds between two time points, as a double (for EXPECT_NEAR).
double Secs(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// The SANs of `type` (GEN_URI, GEN_DNS, GEN_IPADD: raw bytes), in order.
std::vector<std::string> Sans(X509* x, int type) {
  std::vector<std::string> out;
  auto* names =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(x, NID_subject_alt_name, nullptr, nullptr));
  for (int i = 0; names && i < sk_GENERAL_NAME_num(names); ++i) {
    int t = -1;
    auto* v =
        static_cast<ASN1_STRING*>(GENERAL_NAME_get0_value(sk_GENERAL_NAME_value(names, i), &t));
    if (t == type) {
      out.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(v)),
                       ASN1_STRING_length(v));
    }
  }
  GENERAL_NAMES_free(names);
  return out;
}
std::vector<std::string> UriSans(X509* x) { return Sans(x, GEN_URI); }

std::string SubjectEntry(X509* x, int nid) {
  char buf[256] = {};
  int n = X509_NAME_get_text_by_NID(X509_get_subject_name(x), nid, buf, sizeof(buf));
  return n < 0 ? "" : std::string(buf, n);
}

class CaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto ca = CertificateAuthority::Init(CaDir(), kTd);
    ASSERT_TRUE(ca.ok()) << ca.status();
    ca_ = std::move(*ca);
  }
  std::string CaDir() const { return dir_.path() + "/pki/ca"; }

  IssueOptions User(const std::string& name, Role role) {
    IssueOptions o;
    o.id = {kTd, IdKind::kUser, name};
    o.role = role;
    return o;
  }

  TempDir dir_;
  std::unique_ptr<CertificateAuthority> ca_;
};

TEST_F(CaTest, InitWritesTheCaWithPrivateModes) {
  EXPECT_EQ(ca_->trust_domain(), kTd);
  EXPECT_EQ(Mode(CaDir()), 0700);
  EXPECT_EQ(Mode(CaDir() + "/ca_key.pem"), 0600);
  EXPECT_EQ(Slurp(CaDir() + "/ca.pem"), ca_->bundle_pem());

  auto x = Cert(ca_->bundle_pem());
  ASSERT_NE(x, nullptr);
  EXPECT_EQ(X509_check_ca(x.get()), 1);
  EXPECT_TRUE(X509_get_key_usage(x.get()) & KU_KEY_CERT_SIGN);
  EXPECT_TRUE(X509_get_key_usage(x.get()) & KU_CRL_SIGN);
  EXPECT_FALSE(X509_get_key_usage(x.get()) & KU_DIGITAL_SIGNATURE);
  EXPECT_EQ(SubjectEntry(x.get(), NID_commonName), "dfw CA dfw.test");
  EXPECT_THAT(UriSans(x.get()), ::testing::ElementsAre("spiffe://dfw.test"));
  EXPECT_EQ(X509_self_signed(x.get(), 1), 1);
  EXPECT_EQ(EVP_PKEY_get_base_id(X509_get0_pubkey(x.get())), EVP_PKEY_EC);
  auto nb = NotBefore(ca_->bundle_pem());
  auto na = NotAfter(ca_->bundle_pem());
  ASSERT_TRUE(nb.ok() && na.ok());
  EXPECT_NEAR(Secs(*na - *nb) / (86400 * 365.25), 10.0, 0.01);
  EXPECT_TRUE(VerifyChain(ca_->bundle_pem(), ca_->bundle_pem()).ok());
}

TEST_F(CaTest, LoadRoundTrip) {
  auto loaded = CertificateAuthority::Load(CaDir());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ((*loaded)->trust_domain(), kTd);
  EXPECT_EQ((*loaded)->bundle_pem(), ca_->bundle_pem());
  // A leaf from the loaded CA chains to the original bundle.
  auto kc = (*loaded)->IssueWithNewKey(User("alice", Role::kViewer));
  ASSERT_TRUE(kc.ok()) << kc.status();
  EXPECT_TRUE(VerifyChain(kc->cert.cert_pem, ca_->bundle_pem()).ok());
}

TEST_F(CaTest, InitRefusesAnExistingCa) {
  auto again = CertificateAuthority::Init(CaDir(), kTd);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(Msg(again.status()), HasSubstr("ca.pem already exists"));
  EXPECT_EQ(Slurp(CaDir() + "/ca.pem"), ca_->bundle_pem());  // untouched

  // Only the key left behind is enough to refuse.
  TempDir other;
  ASSERT_TRUE(std::ofstream(other.path() + "/ca_key.pem").good());
  auto partial = CertificateAuthority::Init(other.path(), kTd);
  ASSERT_FALSE(partial.ok());
  EXPECT_EQ(partial.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(Msg(partial.status()), HasSubstr("ca_key.pem already exists"));
}

TEST_F(CaTest, InitRefusesABadTrustDomain) {
  auto ca = CertificateAuthority::Init(dir_.path() + "/bad", "Bad.Domain");
  ASSERT_FALSE(ca.ok());
  EXPECT_EQ(ca.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(ca.status()), HasSubstr("trust domain"));
}

TEST_F(CaTest, LoadNamesWhatIsMissingOrWrong) {
  TempDir empty;
  auto none = CertificateAuthority::Load(empty.path());
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Msg(none.status()), HasSubstr("ca.pem"));

  // Another CA's key next to this certificate.
  TempDir other;
  ASSERT_TRUE(CertificateAuthority::Init(other.path() + "/ca", "other.test").ok());
  TempDir mixed;
  std::ofstream(mixed.path() + "/ca.pem") << ca_->bundle_pem();
  std::ofstream(mixed.path() + "/ca_key.pem") << Slurp(other.path() + "/ca/ca_key.pem");
  auto bad = CertificateAuthority::Load(mixed.path());
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(Msg(bad.status()), HasSubstr("is not the key of"));
}

TEST_F(CaTest, IssueFromCsrThenInspect) {
  auto kc = GenerateKeyAndCsr("ignored-subject");
  ASSERT_TRUE(kc.ok()) << kc.status();
  IssueOptions o = User("alice", Role::kEditor);
  o.validity = 2h;
  const auto before = Clock::now();
  auto issued = ca_->IssueFromCsr(kc->csr_pem, o);
  ASSERT_TRUE(issued.ok()) << issued.status();
  EXPECT_NEAR(Secs(issued->not_before - before), -60, 2);
  EXPECT_NEAR(Secs(issued->not_after - before), 7200, 2);

  auto peer = InspectLeaf(issued->cert_pem, kTd);
  ASSERT_TRUE(peer.ok()) << peer.status();
  EXPECT_EQ(peer->id, (SpiffeId{kTd, IdKind::kUser, "alice"}));
  EXPECT_EQ(peer->role, Role::kEditor);
  EXPECT_EQ(peer->serial_hex, issued->serial_hex);
  EXPECT_EQ(peer->not_before, issued->not_before);
  EXPECT_EQ(peer->not_after, issued->not_after);
  EXPECT_EQ(*NotBefore(issued->cert_pem), issued->not_before);
  EXPECT_EQ(*NotAfter(issued->cert_pem), issued->not_after);

  // The certificate's shape.
  auto x = Cert(issued->cert_pem);
  ASSERT_NE(x, nullptr);
  auto key = Key(kc->key_pem);
  ASSERT_NE(key, nullptr);
  EXPECT_EQ(X509_check_private_key(x.get(), key.get()), 1) << "not the CSR's key";
  EXPECT_THAT(UriSans(x.get()), ::testing::ElementsAre("spiffe://dfw.test/user/alice"));
  EXPECT_EQ(SubjectEntry(x.get(), NID_commonName), "alice");
  EXPECT_EQ(SubjectEntry(x.get(), NID_organizationalUnitName), "editor");
  EXPECT_EQ(X509_check_ca(x.get()), 0);
  EXPECT_EQ(X509_get_key_usage(x.get()), static_cast<uint32_t>(KU_DIGITAL_SIGNATURE));
  EXPECT_EQ(X509_get_extended_key_usage(x.get()), static_cast<uint32_t>(XKU_SSL_CLIENT));
  BIGNUM* serial = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x.get()), nullptr);
  EXPECT_LE(BN_num_bits(serial), 128);
  EXPECT_GT(BN_num_bits(serial), 64);  // random, not a counter
  BN_free(serial);
  EXPECT_EQ(issued->serial_hex.find_first_not_of("0123456789abcdef"), std::string::npos);

  EXPECT_TRUE(VerifyChain(issued->cert_pem, ca_->bundle_pem()).ok());
}

TEST_F(CaTest, UserWithoutRoleHasNoOu) {
  auto kc = ca_->IssueWithNewKey(User("nobody", Role::kNone));
  ASSERT_TRUE(kc.ok()) << kc.status();
  auto x = Cert(kc->cert.cert_pem);
  EXPECT_EQ(SubjectEntry(x.get(), NID_organizationalUnitName), "");
  auto peer = InspectLeaf(kc->cert.cert_pem, kTd);
  ASSERT_TRUE(peer.ok()) << peer.status();
  EXPECT_EQ(peer->role, Role::kNone);
}

TEST_F(CaTest, ServerCertificateHasItsSansAndServerAuth) {
  IssueOptions o;
  o.id = {kTd, IdKind::kController, "ctl"};
  o.server_auth = true;
  o.dns_sans = {"localhost", "ctl.example.org"};
  o.ip_sans = {"127.0.0.1", "::1"};
  auto kc = ca_->IssueWithNewKey(o);
  ASSERT_TRUE(kc.ok()) << kc.status();
  auto x = Cert(kc->cert.cert_pem);
  ASSERT_NE(x, nullptr);
  EXPECT_EQ(X509_get_extended_key_usage(x.get()),
            static_cast<uint32_t>(XKU_SSL_CLIENT | XKU_SSL_SERVER));
  EXPECT_EQ(X509_check_host(x.get(), "localhost", 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_host(x.get(), "ctl.example.org", 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_ip_asc(x.get(), "127.0.0.1", 0), 1);
  EXPECT_EQ(X509_check_ip_asc(x.get(), "::1", 0), 1);
  EXPECT_THAT(UriSans(x.get()), ::testing::ElementsAre("spiffe://dfw.test/controller/ctl"));
  auto peer = InspectLeaf(kc->cert.cert_pem, kTd);
  ASSERT_TRUE(peer.ok()) << peer.status();
  EXPECT_EQ(peer->id.kind, IdKind::kController);
}

// The DNS SANs of an enrolled leaf, which never has an IP SAN.
std::vector<std::string> DnsSans(X509* x) {
  EXPECT_THAT(Sans(x, GEN_IPADD), ::testing::IsEmpty());
  return Sans(x, GEN_DNS);
}

TEST(IsDnsHostNameTest, Rfc1123Labels) {
  for (const char* ok :
       {"h1", "host-a", "host-a.example.org", "H1.Example", "1host", "a", "x.1a", "a-b.c-d"}) {
    EXPECT_TRUE(IsDnsHostName(ok)) << ok;
  }
  for (const char* bad :
       {"", "h_1", "-h", "h-", "a..b", ".a", "a.", "10.0.0.1", "h.123", "a.-b", "a b"}) {
    EXPECT_FALSE(IsDnsHostName(bad)) << bad;
  }
  EXPECT_TRUE(IsDnsHostName(std::string(63, 'a')));
  EXPECT_FALSE(IsDnsHostName(std::string(64, 'a')));
  std::string long_name = std::string(63, 'a') + "." + std::string(63, 'b') + "." +
                          std::string(63, 'c') + "." + std::string(61, 'd');  // 253
  EXPECT_TRUE(IsDnsHostName(long_name));
  EXPECT_FALSE(IsDnsHostName(long_name + "d"));
}

// What enrollment and renewal issue, by kind: a host is a server too (its
// agent's GET /metrics) and is named by its host id when that is a DNS name;
// VMs and users are clients only.
TEST_F(CaTest, EnrolledLeavesCarryTheirKindsUsagesAndNames) {
  auto issue = [&](IdKind kind, const std::string& name) {
    IssueOptions o = EnrolledLeafOptions({kTd, kind, name});
    auto kc = GenerateKeyAndCsr("ignored.example.org");
    EXPECT_TRUE(kc.ok()) << kc.status();
    auto issued = ca_->IssueFromCsr(kc->csr_pem, o);
    EXPECT_TRUE(issued.ok()) << issued.status();
    return Cert(issued.ok() ? issued->cert_pem : "");
  };
  auto host = issue(IdKind::kHost, "host-a.example.org");
  ASSERT_NE(host, nullptr);
  EXPECT_EQ(X509_get_extended_key_usage(host.get()),
            static_cast<uint32_t>(XKU_SSL_CLIENT | XKU_SSL_SERVER));
  EXPECT_THAT(DnsSans(host.get()), ::testing::ElementsAre("host-a.example.org"));
  EXPECT_THAT(UriSans(host.get()),
              ::testing::ElementsAre("spiffe://dfw.test/host/host-a.example.org"));
  EXPECT_EQ(X509_check_host(host.get(), "host-a.example.org", 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_host(host.get(), "ignored.example.org", 0, 0, nullptr), 0)
      << "no name from the CSR";
  EXPECT_EQ(X509_check_purpose(host.get(), X509_PURPOSE_SSL_SERVER, 0), 1);
  auto peer = InspectLeaf(testing::ToPem(host.get()), kTd);
  ASSERT_TRUE(peer.ok()) << peer.status();
  EXPECT_EQ(peer->id.kind, IdKind::kHost);

  // Not a DNS name: a server still, but no DNS SAN.
  auto odd = issue(IdKind::kHost, "host_b");
  ASSERT_NE(odd, nullptr);
  EXPECT_EQ(X509_get_extended_key_usage(odd.get()),
            static_cast<uint32_t>(XKU_SSL_CLIENT | XKU_SSL_SERVER));
  EXPECT_THAT(DnsSans(odd.get()), ::testing::IsEmpty());
  EXPECT_THAT(DnsSans(issue(IdKind::kHost, "10.0.0.1").get()), ::testing::IsEmpty());

  for (IdKind kind : {IdKind::kVm, IdKind::kUser, IdKind::kController}) {
    auto x = issue(kind, "host-c");
    ASSERT_NE(x, nullptr) << IdKindName(kind);
    EXPECT_EQ(X509_get_extended_key_usage(x.get()), static_cast<uint32_t>(XKU_SSL_CLIENT))
        << IdKindName(kind);
    EXPECT_EQ(X509_check_purpose(x.get(), X509_PURPOSE_SSL_SERVER, 0), 0) << IdKindName(kind);
    EXPECT_THAT(DnsSans(x.get()), ::testing::IsEmpty()) << IdKindName(kind);
  }
}

TEST_F(CaTest, VerifyChainChecksIssuerAndDates) {
  auto kc = ca_->IssueWithNewKey(User("bob", Role::kViewer));
  ASSERT_TRUE(kc.ok()) << kc.status();
  const Issued& c = kc->cert;
  EXPECT_TRUE(VerifyChain(c.cert_pem, ca_->bundle_pem()).ok());
  EXPECT_TRUE(VerifyChain(c.cert_pem, ca_->bundle_pem(), c.not_before + 1s).ok());
  EXPECT_TRUE(VerifyChain(c.cert_pem, ca_->bundle_pem(), c.not_after - 1s).ok());

  auto early = VerifyChain(c.cert_pem, ca_->bundle_pem(), c.not_before - 1h);
  EXPECT_EQ(early.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(Msg(early), HasSubstr("not yet valid"));
  auto late = VerifyChain(c.cert_pem, ca_->bundle_pem(), c.not_after + 1h);
  EXPECT_EQ(late.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(Msg(late), HasSubstr("expired"));

  // A certificate from another CA, even of the same trust domain.
  TempDir other_dir;
  auto other = CertificateAuthority::Init(other_dir.path(), kTd);
  ASSERT_TRUE(other.ok());
  auto foreign = (*other)->IssueWithNewKey(User("bob", Role::kViewer));
  ASSERT_TRUE(foreign.ok());
  auto s = VerifyChain(foreign->cert.cert_pem, ca_->bundle_pem());
  EXPECT_EQ(s.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(Msg(s), HasSubstr("issuer"));
  // A bundle with both CAs accepts both.
  EXPECT_TRUE(VerifyChain(foreign->cert.cert_pem, ca_->bundle_pem() + (*other)->bundle_pem()).ok());

  EXPECT_EQ(VerifyChain("garbage", ca_->bundle_pem()).code(), absl::StatusCode::kInvalidArgument);
}

struct Knob {
  std::string name;
  std::function<void(IssueOptions&)> set;
  std::string reason;
};

// Every test knob makes a certificate InspectLeaf refuses, for the right reason.
TEST_F(CaTest, TestKnobsMakeLeavesInspectLeafRefuses) {
  const Knob knobs[] = {
      {"two URI SANs", [](IssueOptions& o) { o.extra_uri_sans = {"spiffe://dfw.test/user/alice"}; },
       "2 URI SANs"},
      {"no URI SAN", [](IssueOptions& o) { o.omit_uri_san = true; }, "no URI SAN"},
      {"not a SPIFFE URI",
       [](IssueOptions& o) {
         o.omit_uri_san = true;
         o.extra_uri_sans = {"https://dfw.test/user/alice"};
       },
       "not a SPIFFE ID"},
      {"CA:TRUE", [](IssueOptions& o) { o.ca_true = true; }, "CA:TRUE"},
      {"serverAuth only",
       [](IssueOptions& o) {
         o.client_auth = false;
         o.server_auth = true;
       },
       "no clientAuth"},
      {"no EKU at all", [](IssueOptions& o) { o.client_auth = false; }, "no clientAuth"},
  };
  for (const Knob& k : knobs) {
    IssueOptions o = User("mallory", Role::kAdmin);
    k.set(o);
    auto kc = ca_->IssueWithNewKey(o);
    ASSERT_TRUE(kc.ok()) << k.name << ": " << kc.status();
    // The chain itself is fine: these are refused by the identity checks.
    EXPECT_TRUE(VerifyChain(kc->cert.cert_pem, ca_->bundle_pem()).ok()) << k.name;
    auto peer = InspectLeaf(kc->cert.cert_pem, kTd);
    ASSERT_FALSE(peer.ok()) << k.name << " was accepted as " << peer->id.ToString();
    EXPECT_EQ(peer.status().code(), absl::StatusCode::kUnauthenticated) << k.name;
    EXPECT_THAT(Msg(peer.status()), HasSubstr(k.reason)) << k.name;
  }

  // Without the clientAuth requirement, a server-only certificate is accepted.
  IssueOptions srv = User("svc", Role::kNone);
  srv.client_auth = false;
  srv.server_auth = true;
  auto kc = ca_->IssueWithNewKey(srv);
  ASSERT_TRUE(kc.ok());
  EXPECT_TRUE(InspectLeaf(kc->cert.cert_pem, kTd, /*require_client_auth=*/false).ok());
}

TEST_F(CaTest, InspectLeafRefusesAnotherTrustDomain) {
  TempDir other_dir;
  auto other = CertificateAuthority::Init(other_dir.path(), "other.test");
  ASSERT_TRUE(other.ok());
  IssueOptions o;
  o.id = {"other.test", IdKind::kUser, "mallory"};
  o.role = Role::kAdmin;
  auto kc = (*other)->IssueWithNewKey(o);
  ASSERT_TRUE(kc.ok()) << kc.status();
  auto peer = InspectLeaf(kc->cert.cert_pem, kTd);
  ASSERT_FALSE(peer.ok());
  EXPECT_EQ(peer.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(Msg(peer.status()), HasSubstr("trust domain 'other.test', not 'dfw.test'"));
}

TEST_F(CaTest, SpiffeIdOfReadsAnyTrustDomainAndNeedsExactlyOneId) {
  TempDir other_dir;
  auto other = CertificateAuthority::Init(other_dir.path(), "other.test");
  ASSERT_TRUE(other.ok());
  IssueOptions o;
  o.id = {"other.test", IdKind::kHost, "h1"};
  auto kc = (*other)->IssueWithNewKey(o);
  ASSERT_TRUE(kc.ok()) << kc.status();
  auto id = SpiffeIdOf(kc->cert.cert_pem);
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(*id, o.id);
  o.extra_uri_sans = {"spiffe://other.test/user/alice"};
  kc = (*other)->IssueWithNewKey(o);
  ASSERT_TRUE(kc.ok());
  EXPECT_FALSE(SpiffeIdOf(kc->cert.cert_pem).ok());
  EXPECT_FALSE(SpiffeIdOf("not a certificate").ok());
}

// Re-signs `cert_pem` with the CA's key after `edit` changed it: certificates
// this CA would never issue.
std::string Resign(const std::string& cert_pem, const std::string& ca_key_pem,
                   const std::function<void(X509*)>& edit) {
  auto x = Cert(cert_pem);
  auto key = Key(ca_key_pem);
  edit(x.get());
  EXPECT_GT(X509_sign(x.get(), key.get(), EVP_sha256()), 0);
  return testing::ToPem(x.get());
}

TEST_F(CaTest, InspectLeafRefusesBadRoles) {
  const std::string ca_key = Slurp(CaDir() + "/ca_key.pem");
  auto set_ou = [](std::vector<std::string> ous) {
    return [ous](X509* x) {
      X509_NAME* n = X509_NAME_new();
      X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("x"),
                                 -1, -1, 0);
      for (const auto& ou : ous) {
        X509_NAME_add_entry_by_txt(n, "OU", MBSTRING_ASC,
                                   reinterpret_cast<const unsigned char*>(ou.c_str()), -1, -1, 0);
      }
      X509_set_subject_name(x, n);
      X509_NAME_free(n);
    };
  };
  auto user = ca_->IssueWithNewKey(User("eve", Role::kViewer));
  ASSERT_TRUE(user.ok());
  IssueOptions h;
  h.id = {kTd, IdKind::kHost, "h1"};
  auto host = ca_->IssueWithNewKey(h);
  ASSERT_TRUE(host.ok());

  struct Case {
    std::string cert, reason;
  } cases[] = {
      {Resign(user->cert.cert_pem, ca_key, set_ou({"root"})), "unknown role"},
      {Resign(user->cert.cert_pem, ca_key, set_ou({"viewer", "admin"})), "more than one OU"},
      {Resign(host->cert.cert_pem, ca_key, set_ou({"admin"})), "only users have a role"},
  };
  for (const Case& c : cases) {
    ASSERT_TRUE(VerifyChain(c.cert, ca_->bundle_pem()).ok());
    auto peer = InspectLeaf(c.cert, kTd);
    ASSERT_FALSE(peer.ok()) << c.reason;
    EXPECT_EQ(peer.status().code(), absl::StatusCode::kUnauthenticated);
    EXPECT_THAT(Msg(peer.status()), HasSubstr(c.reason));
  }
  // The control: re-signed with the right OU it is accepted.
  auto ok = InspectLeaf(Resign(user->cert.cert_pem, ca_key, set_ou({"admin"})), kTd);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->role, Role::kAdmin);
}

TEST_F(CaTest, CsrWithABadSignatureIsRefused) {
  auto kc = GenerateKeyAndCsr("h1");
  ASSERT_TRUE(kc.ok());
  IssueOptions o;
  o.id = {kTd, IdKind::kHost, "h1"};
  ASSERT_TRUE(ca_->IssueFromCsr(kc->csr_pem, o).ok());

  auto parse = [](const std::string& pem) {
    testing::BioPtr b(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
    return testing::ReqPtr(PEM_read_bio_X509_REQ(b.get(), nullptr, nullptr, nullptr));
  };
  auto to_pem = [](X509_REQ* r) {
    testing::BioPtr b(BIO_new(BIO_s_mem()));
    PEM_write_bio_X509_REQ(b.get(), r);
    char* p = nullptr;
    long n = BIO_get_mem_data(b.get(), &p);
    return std::string(p, static_cast<size_t>(n));
  };

  // 1. A flipped bit in the signature.
  {
    auto req = parse(kc->csr_pem);
    ASSERT_NE(req, nullptr);
    const ASN1_BIT_STRING* sig = nullptr;
    const X509_ALGOR* alg = nullptr;
    X509_REQ_get0_signature(req.get(), &sig, &alg);
    auto* bits = const_cast<ASN1_BIT_STRING*>(sig);
    bits->data[bits->length - 2] ^= 0x01;
    auto r = ca_->IssueFromCsr(to_pem(req.get()), o);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(Msg(r.status()), HasSubstr("signature does not verify"));
  }
  // 2. Someone else's public key under this CSR's signature (no proof of possession).
  {
    auto req = parse(kc->csr_pem);
    auto other = GenerateKeyAndCsr("x");
    auto other_key = Key(other->key_pem);
    ASSERT_EQ(X509_REQ_set_pubkey(req.get(), other_key.get()), 1);
    auto r = ca_->IssueFromCsr(to_pem(req.get()), o);
    ASSERT_FALSE(r.ok());
    EXPECT_THAT(Msg(r.status()), HasSubstr("signature does not verify"));
  }
  // 3. Not a CSR at all.
  {
    auto r = ca_->IssueFromCsr("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n", o);
    ASSERT_FALSE(r.ok());
    EXPECT_THAT(Msg(r.status()), HasSubstr("CSR"));
    r = ca_->IssueFromCsr(ca_->bundle_pem(), o);
    ASSERT_FALSE(r.ok());
    EXPECT_THAT(Msg(r.status()), HasSubstr("no PEM certificate request"));
  }
}

std::string CsrFor(EVP_PKEY* key, const EVP_MD* md) {
  testing::ReqPtr req(X509_REQ_new());
  X509_REQ_set_pubkey(req.get(), key);
  EXPECT_GT(X509_REQ_sign(req.get(), key, md), 0);
  testing::BioPtr b(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509_REQ(b.get(), req.get());
  char* p = nullptr;
  long n = BIO_get_mem_data(b.get(), &p);
  return std::string(p, static_cast<size_t>(n));
}

TEST_F(CaTest, CsrKeyTypes) {
  IssueOptions o;
  o.id = {kTd, IdKind::kVm, "vm-1"};
  testing::PkeyPtr p384(EVP_EC_gen("P-384"));
  EXPECT_TRUE(ca_->IssueFromCsr(CsrFor(p384.get(), EVP_sha384()), o).ok());
  testing::PkeyPtr rsa2048(EVP_RSA_gen(2048));
  EXPECT_TRUE(ca_->IssueFromCsr(CsrFor(rsa2048.get(), EVP_sha256()), o).ok());

  testing::PkeyPtr rsa1024(EVP_RSA_gen(1024));
  auto r = ca_->IssueFromCsr(CsrFor(rsa1024.get(), EVP_sha256()), o);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(Msg(r.status()), HasSubstr("RSA key of 1024 bits is too small"));
  testing::PkeyPtr k1(EVP_EC_gen("secp256k1"));
  r = ca_->IssueFromCsr(CsrFor(k1.get(), EVP_sha256()), o);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(Msg(r.status()), HasSubstr("EC curve 'secp256k1' is not allowed"));
  testing::PkeyPtr ed(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
  r = ca_->IssueFromCsr(CsrFor(ed.get(), nullptr), o);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(Msg(r.status()), HasSubstr("key type 'ED25519' is not allowed"));
}

TEST_F(CaTest, IssueRefusesBadOptions) {
  auto kc = GenerateKeyAndCsr("h1");
  ASSERT_TRUE(kc.ok());
  struct Case {
    std::string what;
    std::function<void(IssueOptions&)> set;
    std::string reason;
  } cases[] = {
      {"foreign trust domain", [](IssueOptions& o) { o.id.trust_domain = "other.test"; },
       "trust domain 'other.test' of spiffe://other.test/host/h1 is not this CA's ('dfw.test')"},
      {"bad name", [](IssueOptions& o) { o.id.name = "h/1"; }, "name 'h/1'"},
      {"role on a host", [](IssueOptions& o) { o.role = Role::kAdmin; }, "only users have a role"},
      {"zero validity", [](IssueOptions& o) { o.validity = 0s; }, "validity must be positive"},
      {"bad IP SAN", [](IssueOptions& o) { o.ip_sans = {"300.1.1.1"}; }, "IP SAN '300.1.1.1'"},
      {"bad DNS SAN", [](IssueOptions& o) { o.dns_sans = {"a,b"}; }, "DNS SAN 'a,b'"},
  };
  for (const Case& c : cases) {
    IssueOptions o;
    o.id = {kTd, IdKind::kHost, "h1"};
    c.set(o);
    auto r = ca_->IssueFromCsr(kc->csr_pem, o);
    ASSERT_FALSE(r.ok()) << c.what;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << c.what;
    EXPECT_THAT(Msg(r.status()), HasSubstr(c.reason)) << c.what;
    EXPECT_FALSE(ca_->IssueWithNewKey(o).ok()) << c.what;
  }
}

TEST_F(CaTest, ExplicitNotBeforeAndValidity) {
  IssueOptions o = User("late", Role::kAdmin);
  const auto t0 = Clock::now() - 48h;
  o.not_before = t0;
  o.validity = 1h;
  auto kc = ca_->IssueWithNewKey(o);
  ASSERT_TRUE(kc.ok());
  EXPECT_EQ(kc->cert.not_before, Clock::from_time_t(Clock::to_time_t(t0)));
  EXPECT_EQ(kc->cert.not_after - kc->cert.not_before, 1h);
  EXPECT_THAT(Msg(VerifyChain(kc->cert.cert_pem, ca_->bundle_pem())), HasSubstr("expired"));
  // Dates are not InspectLeaf's business: the handshake checked them.
  EXPECT_TRUE(InspectLeaf(kc->cert.cert_pem, kTd).ok());
}

TEST_F(CaTest, ConcurrentIssuanceGivesDistinctSerials) {
  constexpr int kThreads = 4, kEach = 8;
  std::vector<std::vector<std::string>> serials(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        auto kc = ca_->IssueWithNewKey(User("u" + std::to_string(t), Role::kViewer));
        if (kc.ok()) serials[t].push_back(kc->cert.serial_hex);
      }
    });
  }
  for (auto& th : threads) th.join();
  std::set<std::string> all;
  for (const auto& v : serials) all.insert(v.begin(), v.end());
  EXPECT_EQ(all.size(), static_cast<size_t>(kThreads * kEach));
}

TEST(GenerateKeyAndCsrTest, MakesAnEcP256KeyAndASignedCsr) {
  auto kc = GenerateKeyAndCsr("dfw-hostagent");
  ASSERT_TRUE(kc.ok()) << kc.status();
  auto key = Key(kc->key_pem);
  ASSERT_NE(key, nullptr);
  char group[64] = {};
  size_t len = 0;
  ASSERT_EQ(EVP_PKEY_get_group_name(key.get(), group, sizeof(group), &len), 1);
  EXPECT_EQ(std::string(group, len), "prime256v1");
  EXPECT_THAT(kc->csr_pem, HasSubstr("BEGIN CERTIFICATE REQUEST"));
  EXPECT_FALSE(GenerateKeyAndCsr(std::string(65, 'x')).ok());
}

}  // namespace
}  // namespace dfw::trust
