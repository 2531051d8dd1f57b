// SvidClient against a real controller with mutual TLS (ControllerServer
// in process, its own CA): the agent enrolls once with a one-time token,
// its session runs on the certificate it got, a renewal is picked up by the
// open channel's credentials without a restart (the old certificate is then
// revoked and the session still reconnects), and a used token is final.
#include "dfw/hostagent/svid_client.h"

#include <grpcpp/grpcpp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <memory>
#include <string>
#include <thread>

#include "../controller/test_util.h"
#include "dfw/controller/enrollment.h"
#include "dfw/hostagent/controller_session.h"
#include "dfw/trust/ca.h"
#include "dfw/trust/peer.h"
#include "dfw/trust/svid.h"
#include "dfw/v1/host.grpc.pb.h"
#include "gtest/gtest.h"

namespace dfw::hostagent {
namespace {

using controller::ControllerOptions;
using controller::ControllerServer;
using controller::testing::TempDir;
using namespace std::chrono_literals;

template <typename F>
bool Eventually(F f, std::chrono::milliseconds limit = 10s) {
  auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (f()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return f();
}

class SvidClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto ca = trust::CertificateAuthority::Init(dir_.path() + "/pki/ca", "dfw.test");
    ASSERT_TRUE(ca.ok()) << ca.status();
    trust::IssueOptions c;
    c.id = {"dfw.test", trust::IdKind::kController, "test"};
    c.server_auth = true;
    c.ip_sans = {"127.0.0.1"};
    auto ctl = (*ca)->IssueWithNewKey(c);
    ASSERT_TRUE(ctl.ok());
    ASSERT_TRUE(trust::WriteSvid(dir_.path() + "/pki/controller",
                                 {ctl->key_pem, ctl->cert.cert_pem, (*ca)->bundle_pem()})
                    .ok());
    bundle_ = dir_.path() + "/ca.pem";
    std::ofstream(bundle_) << (*ca)->bundle_pem();
    ControllerOptions o;
    o.data_dir = dir_.path() + "/db";
    o.svid_dir = dir_.path() + "/pki/controller";
    o.ca_dir = dir_.path() + "/pki/ca";
    o.http_listen = "";
    auto s = server_.Start(o);
    ASSERT_TRUE(s.ok()) << s;
    target_ = "127.0.0.1:" + std::to_string(server_.grpc_port());
  }

  std::string Token(const std::string& host) {
    v1::CreateJoinTokenRequest r;
    r.set_kind(v1::IDENTITY_KIND_HOST);
    r.set_name(host);
    auto t = server_.enrollment()->CreateJoinToken(r);
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? t->token() : "";
  }

  SvidClientOptions Options(const std::string& dir, const std::string& token) {
    SvidClientOptions o;
    o.controller_target = target_;
    o.cert_dir = dir;
    o.join_token = token;
    o.ca_bundle = bundle_;
    o.refresh = 1s;
    return o;
  }

  std::string Serial(const std::string& dir) {
    auto svid = trust::ReadSvid(dir);
    if (!svid.ok()) return "";
    auto id = trust::InspectLeaf(svid->cert_pem, "dfw.test");
    return id.ok() ? id->serial_hex : "";
  }

  // Whether the SVID in `dir` is a TLS server certificate for `host_name` as
  // a standard client checks it (serverAuth, a DNS SAN; never the CN), so
  // that the agent's GET /metrics listener can be verified by name.
  bool ServesAs(const std::string& dir, const std::string& host_name) {
    auto svid = trust::ReadSvid(dir);
    if (!svid.ok()) return false;
    BIO* b = BIO_new_mem_buf(svid->cert_pem.data(), static_cast<int>(svid->cert_pem.size()));
    X509* x = PEM_read_bio_X509(b, nullptr, nullptr, nullptr);
    BIO_free(b);
    bool ok = x && X509_check_purpose(x, X509_PURPOSE_SSL_SERVER, 0) == 1 &&
              X509_check_host(x, host_name.data(), host_name.size(),
                              X509_CHECK_FLAG_NEVER_CHECK_SUBJECT, nullptr) == 1;
    X509_free(x);
    return ok;
  }

  TempDir dir_;
  ControllerServer server_;
  std::string target_, bundle_;
};

TEST_F(SvidClientTest, EnrollsOnceThenRenewsWithoutRestart) {
  std::string certs = dir_.path() + "/agent";
  SvidClient svid(Options(certs, Token("h1")));
  EXPECT_FALSE(svid.has_svid());
  auto s = svid.Enroll([] { return false; });
  ASSERT_TRUE(s.ok()) << s;
  ASSERT_TRUE(svid.has_svid());
  auto files = trust::ReadSvid(certs);
  ASSERT_TRUE(files.ok()) << files.status();
  auto id = trust::InspectLeaf(files->cert_pem, "dfw.test");
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(id->id.ToString(), "spiffe://dfw.test/host/h1");
  EXPECT_TRUE(ServesAs(certs, "h1")) << "enrolled without serverAuth or the DNS SAN h1";
  EXPECT_FALSE(ServesAs(certs, "h2"));

  // A session on that certificate.
  std::atomic<uint64_t> applied{0};
  ControllerSession session(
      target_, svid.Credentials(),
      ControllerSession::Hooks{[] {
                                 v1::HostHello h;
                                 h.mutable_host()->set_id("h1");
                                 return h;
                               },
                               [&](const v1::ControllerToHost& m) -> absl::StatusOr<uint64_t> {
                                 uint64_t rev =
                                     m.has_full() ? m.full().revision() : m.delta().to_revision();
                                 applied = rev;
                                 return rev;
                               }});
  session.Start();
  ASSERT_TRUE(Eventually([&] { return session.connected() && session.sessions_opened() == 1; }));

  // Renewal: a new certificate for the same identity, written in place.
  std::string before = Serial(certs);
  ASSERT_TRUE(svid.RenewNow().ok());
  EXPECT_EQ(svid.renewals(), 1u);
  std::string after = Serial(certs);
  EXPECT_NE(after, before);
  EXPECT_FALSE(after.empty());
  EXPECT_TRUE(ServesAs(certs, "h1")) << "renewed without serverAuth or the DNS SAN h1";

  // The old certificate revoked: the channel's credentials follow the files
  // (refreshed every second), so the next session runs on the new one.
  std::this_thread::sleep_for(2500ms);
  v1::RevokeCertificateRequest rv;
  rv.set_serial(before);
  ASSERT_TRUE(server_.enrollment()->Revoke(rv, controller::Caller{"test", {}, false}).ok());
  session.Restart();
  auto host_connected = [&] {
    auto hosts = server_.model()->ListHosts();
    return hosts.ok() && hosts->hosts_size() == 1 && hosts->hosts(0).connected();
  };
  ASSERT_TRUE(Eventually([&] { return session.sessions_opened() >= 2; }));
  std::this_thread::sleep_for(1s);
  EXPECT_TRUE(session.connected() && host_connected())
      << "the restarted session did not run on the renewed certificate";
  EXPECT_EQ(session.sessions_opened(), 2u) << "the session was refused and retried";
  session.Stop();

  // The old certificate itself is refused now.
  auto old_creds = grpc::SslCredentials({files->bundle_pem, files->key_pem, files->cert_pem});
  auto stub = v1::HostSessionService::NewStub(grpc::CreateChannel(target_, old_creds));
  grpc::ClientContext ctx;
  auto stream = stub->Session(&ctx);
  v1::ControllerToHost in;
  while (stream->Read(&in)) {
  }
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
}

TEST_F(SvidClientTest, AUsedTokenIsFinalAndAnSvidNeedsNoToken) {
  std::string token = Token("h2");
  SvidClient first(Options(dir_.path() + "/a", token));
  ASSERT_TRUE(first.Enroll([] { return false; }).ok());
  SvidClient second(Options(dir_.path() + "/b", token));
  auto s = second.Enroll([] { return false; });
  EXPECT_EQ(s.code(), absl::StatusCode::kUnauthenticated) << s;
  EXPECT_FALSE(second.has_svid());

  // With an SVID in place nothing is asked of the controller.
  SvidClientOptions o = Options(dir_.path() + "/a", "");
  o.controller_target = "127.0.0.1:1";
  SvidClient again(o);
  EXPECT_TRUE(again.Enroll([] { return false; }).ok());

  // Without an SVID and without a token: a clear refusal, nothing written.
  SvidClient none(Options(dir_.path() + "/c", ""));
  auto n = none.Enroll([] { return false; });
  EXPECT_EQ(n.code(), absl::StatusCode::kFailedPrecondition) << n;
  EXPECT_NE(std::string(n.message()).find("join-token"), std::string::npos) << n;
}

}  // namespace
}  // namespace dfw::hostagent
