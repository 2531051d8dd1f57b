// A real TLS handshake, in process over a socketpair, between a server that
// requires a client certificate verified against the CA bundle (as the
// controller's gRPC and REST servers do) and a client that verifies the
// server: proves that what the CA issues interoperates with OpenSSL's TLS,
// and that the handshake alone refuses what it should.
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <thread>

#include "dfw/trust/ca.h"
#include "dfw/trust/peer.h"
#include "dfw/trust/server_tls.h"
#include "dfw/trust/svid.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "test_util.h"

namespace dfw::trust {
namespace {

using namespace std::chrono_literals;
using testing::Cert;
using testing::Key;
using testing::TempDir;
using SslCtxPtr = std::unique_ptr<SSL_CTX, testing::Deleter<SSL_CTX_free>>;
using SslPtr = std::unique_ptr<SSL, testing::Deleter<SSL_free>>;

constexpr char kTd[] = "dfw.test";

struct Credentials {
  std::string key_pem, cert_pem;  // empty: none
};

struct Outcome {
  bool server_ok = false;  // handshake done and "ping" read, "pong" sent
  bool client_ok = false;  // handshake done and "pong" read
  long server_verify = X509_V_OK;
  long client_verify = X509_V_OK;
  std::string server_error, client_error;
  std::string peer_cert_pem;  // the client certificate, as the server saw it
};

std::string SslError() {
  unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof(buf));
  return buf;
}

SslCtxPtr MakeCtx(bool server, const Credentials& c, const std::string& bundle_pem) {
  SslCtxPtr ctx(SSL_CTX_new(server ? TLS_server_method() : TLS_client_method()));
  EXPECT_NE(ctx, nullptr);
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
  if (!c.cert_pem.empty()) {
    auto x = Cert(c.cert_pem);
    auto k = Key(c.key_pem);
    EXPECT_EQ(SSL_CTX_use_certificate(ctx.get(), x.get()), 1);
    EXPECT_EQ(SSL_CTX_use_PrivateKey(ctx.get(), k.get()), 1);
    EXPECT_EQ(SSL_CTX_check_private_key(ctx.get()), 1);
  }
  X509_STORE* store = SSL_CTX_get_cert_store(ctx.get());
  auto root = Cert(bundle_pem);
  EXPECT_EQ(X509_STORE_add_cert(store, root.get()), 1);
  SSL_CTX_set_verify(ctx.get(),
                     server ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT : SSL_VERIFY_PEER,
                     nullptr);
  return ctx;
}

// A connected pair of sockets whose reads and writes give up after 10 s
// (never hang the test).
void SocketPair(int fds[2]) {
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  timeval tv{10, 0};
  for (int i = 0; i < 2; ++i) {
    ::setsockopt(fds[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    ::setsockopt(fds[i], SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  }
}

Outcome Handshake(const Credentials& server, const Credentials& client,
                  const std::string& bundle_pem, int max_version = 0) {
  // A refused client may still write into the closed socket (TLS 1.3: the
  // client finishes before the server has checked its certificate).
  ::signal(SIGPIPE, SIG_IGN);
  Outcome out;
  SslCtxPtr sctx = MakeCtx(true, server, bundle_pem);
  SslCtxPtr cctx = MakeCtx(false, client, bundle_pem);
  if (max_version) {
    SSL_CTX_set_max_proto_version(sctx.get(), max_version);
    SSL_CTX_set_max_proto_version(cctx.get(), max_version);
  }
  int fds[2];
  SocketPair(fds);

  std::thread server_thread([&] {
    SslPtr ssl(SSL_new(sctx.get()));
    SSL_set_fd(ssl.get(), fds[0]);
    if (SSL_accept(ssl.get()) == 1) {
      if (X509* peer = SSL_get0_peer_certificate(ssl.get())) {
        out.peer_cert_pem = testing::ToPem(peer);
      }
      char buf[4];
      if (SSL_read(ssl.get(), buf, 4) == 4 && std::string(buf, 4) == "ping" &&
          SSL_write(ssl.get(), "pong", 4) == 4) {
        out.server_ok = true;
      }
    }
    out.server_verify = SSL_get_verify_result(ssl.get());
    out.server_error = SslError();
    ssl.reset();
    ::close(fds[0]);  // the client's pending read ends
  });

  {
    SslPtr ssl(SSL_new(cctx.get()));
    SSL_set_fd(ssl.get(), fds[1]);
    SSL_set1_host(ssl.get(), "localhost");
    if (SSL_connect(ssl.get()) == 1 && SSL_write(ssl.get(), "ping", 4) == 4) {
      char buf[4];
      out.client_ok = SSL_read(ssl.get(), buf, 4) == 4 && std::string(buf, 4) == "pong";
    }
    out.client_verify = SSL_get_verify_result(ssl.get());
    out.client_error = SslError();
  }
  server_thread.join();
  ::close(fds[1]);
  return out;
}

class TlsHandshakeTest : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override {
    auto ca = CertificateAuthority::Init(dir_.path() + "/ca", kTd);
    ASSERT_TRUE(ca.ok()) << ca.status();
    ca_ = std::move(*ca);
    IssueOptions s;
    s.id = {kTd, IdKind::kController, "ctl"};
    s.server_auth = true;
    s.dns_sans = {"localhost"};
    s.ip_sans = {"127.0.0.1"};
    auto kc = ca_->IssueWithNewKey(s);
    ASSERT_TRUE(kc.ok()) << kc.status();
    server_ = {kc->key_pem, kc->cert.cert_pem};
  }

  // A client credential from a CSR, the way a host agent or dfwctl gets one.
  Credentials Client(IssueOptions o, CertificateAuthority* ca = nullptr) {
    auto kc = GenerateKeyAndCsr("client");
    EXPECT_TRUE(kc.ok());
    auto issued = (ca ? ca : ca_.get())->IssueFromCsr(kc->csr_pem, o);
    EXPECT_TRUE(issued.ok()) << issued.status();
    return {kc->key_pem, issued.ok() ? issued->cert_pem : ""};
  }
  IssueOptions Alice() {
    IssueOptions o;
    o.id = {kTd, IdKind::kUser, "alice"};
    o.role = Role::kAdmin;
    return o;
  }
  Outcome Run(const Credentials& client) {
    return Handshake(server_, client, ca_->bundle_pem(), GetParam());
  }

  TempDir dir_;
  std::unique_ptr<CertificateAuthority> ca_;
  Credentials server_;
};

TEST_P(TlsHandshakeTest, IssuedClientAndServerCertificatesInteroperate) {
  Outcome o = Run(Client(Alice()));
  EXPECT_TRUE(o.server_ok) << o.server_error;
  EXPECT_TRUE(o.client_ok) << o.client_error;
  EXPECT_EQ(o.server_verify, X509_V_OK);
  EXPECT_EQ(o.client_verify, X509_V_OK);  // chain and host name "localhost"
  // What the server then does with the peer certificate.
  auto peer = InspectLeaf(o.peer_cert_pem, kTd);
  ASSERT_TRUE(peer.ok()) << peer.status();
  EXPECT_EQ(peer->id.ToString(), "spiffe://dfw.test/user/alice");
  EXPECT_EQ(peer->role, Role::kAdmin);
}

TEST_P(TlsHandshakeTest, ExpiredClientCertificateFailsTheHandshake) {
  IssueOptions o = Alice();
  o.not_before = Clock::now() - 2h;
  o.validity = 1h;
  Outcome r = Run(Client(o));
  EXPECT_FALSE(r.server_ok);
  EXPECT_FALSE(r.client_ok);
  EXPECT_EQ(r.server_verify, X509_V_ERR_CERT_HAS_EXPIRED)
      << X509_verify_cert_error_string(r.server_verify);
}

TEST_P(TlsHandshakeTest, NotYetValidClientCertificateFailsTheHandshake) {
  IssueOptions o = Alice();
  o.not_before = Clock::now() + 1h;
  Outcome r = Run(Client(o));
  EXPECT_FALSE(r.server_ok);
  EXPECT_EQ(r.server_verify, X509_V_ERR_CERT_NOT_YET_VALID);
}

TEST_P(TlsHandshakeTest, ClientCertificateFromAnotherCaFailsTheHandshake) {
  TempDir other_dir;
  auto other = CertificateAuthority::Init(other_dir.path(), kTd);
  ASSERT_TRUE(other.ok());
  Outcome r = Run(Client(Alice(), other->get()));
  EXPECT_FALSE(r.server_ok);
  EXPECT_FALSE(r.client_ok);
  EXPECT_NE(r.server_verify, X509_V_OK);
}

TEST_P(TlsHandshakeTest, ClientCertificateWithoutClientAuthFailsTheHandshake) {
  IssueOptions o = Alice();
  o.client_auth = false;
  o.server_auth = true;
  Outcome r = Run(Client(o));
  EXPECT_FALSE(r.server_ok);
  EXPECT_EQ(r.server_verify, X509_V_ERR_INVALID_PURPOSE)
      << X509_verify_cert_error_string(r.server_verify);
}

TEST_P(TlsHandshakeTest, NoClientCertificateFailsTheHandshake) {
  Outcome r = Run(Credentials{});
  EXPECT_FALSE(r.server_ok);
  EXPECT_FALSE(r.client_ok);
}

// The identity defects pass the handshake (the chain is good); the server's
// InspectLeaf is what refuses them.
TEST_P(TlsHandshakeTest, IdentityDefectsPassTheHandshakeAndInspectLeafRefuses) {
  struct Case {
    std::string what;
    std::function<void(IssueOptions&)> set;
  } cases[] = {
      {"CA:TRUE leaf", [](IssueOptions& o) { o.ca_true = true; }},
      {"two URI SANs", [](IssueOptions& o) { o.extra_uri_sans = {"spiffe://dfw.test/user/bob"}; }},
      {"no URI SAN", [](IssueOptions& o) { o.omit_uri_san = true; }},
  };
  for (const Case& c : cases) {
    IssueOptions o = Alice();
    c.set(o);
    Outcome r = Run(Client(o));
    EXPECT_TRUE(r.server_ok) << c.what << ": " << r.server_error << " / "
                             << X509_verify_cert_error_string(r.server_verify);
    auto peer = InspectLeaf(r.peer_cert_pem, kTd);
    EXPECT_EQ(peer.status().code(), absl::StatusCode::kUnauthenticated) << c.what;
  }
}

TEST_P(TlsHandshakeTest, ServerCertificateWithoutServerAuthFailsAtTheClient) {
  IssueOptions s;
  s.id = {kTd, IdKind::kController, "ctl"};
  s.dns_sans = {"localhost"};  // no server_auth
  auto kc = ca_->IssueWithNewKey(s);
  ASSERT_TRUE(kc.ok());
  Outcome r =
      Handshake({kc->key_pem, kc->cert.cert_pem}, Client(Alice()), ca_->bundle_pem(), GetParam());
  EXPECT_FALSE(r.client_ok);
  EXPECT_EQ(r.client_verify, X509_V_ERR_INVALID_PURPOSE);
}

// A standard TLS client (plain OpenSSL: a CA file and a host name, no SPIFFE
// check) against the product's HTTPS server TLS (ServerTls, as the host
// agent's GET /metrics listener) serving the SVID enrollment issues for
// `id` (EnrolledLeafOptions, from a CSR). Returns the client's verify
// result, X509_V_OK when it verified the server and exchanged data.
long PlainClientVerifies(CertificateAuthority& ca, const SpiffeId& id, const std::string& host_name,
                         const std::string& dir) {
  ::signal(SIGPIPE, SIG_IGN);
  auto kc = GenerateKeyAndCsr("from-the-csr.example.org");
  EXPECT_TRUE(kc.ok());
  auto issued = ca.IssueFromCsr(kc->csr_pem, EnrolledLeafOptions(id));
  EXPECT_TRUE(issued.ok()) << issued.status();
  if (!issued.ok()) return -1;
  const std::string svid_dir = dir + "/agent", bundle_file = dir + "/ca.pem";
  EXPECT_TRUE(WriteSvid(svid_dir, {kc->key_pem, issued->cert_pem, ca.bundle_pem()}).ok());
  {
    FILE* f = ::fopen(bundle_file.c_str(), "w");
    EXPECT_NE(f, nullptr);
    ::fwrite(ca.bundle_pem().data(), 1, ca.bundle_pem().size(), f);
    ::fclose(f);
  }
  ServerTls tls(svid_dir, std::chrono::seconds(60));
  auto loaded = tls.Load();
  EXPECT_TRUE(loaded.ok()) << loaded;
  SslCtxPtr sctx(SSL_CTX_new(TLS_server_method()));
  EXPECT_TRUE(tls.Setup(*sctx));
  SslCtxPtr cctx(SSL_CTX_new(TLS_client_method()));
  EXPECT_EQ(SSL_CTX_load_verify_locations(cctx.get(), bundle_file.c_str(), nullptr), 1);
  SSL_CTX_set_verify(cctx.get(), SSL_VERIFY_PEER, nullptr);

  int fds[2];
  SocketPair(fds);
  std::thread server_thread([&] {
    SslPtr ssl(SSL_new(sctx.get()));
    SSL_set_fd(ssl.get(), fds[0]);
    char buf[4];
    if (SSL_accept(ssl.get()) == 1 && SSL_read(ssl.get(), buf, 4) == 4) {
      SSL_write(ssl.get(), "pong", 4);
    }
    ERR_clear_error();
    ssl.reset();
    ::close(fds[0]);
  });
  bool exchanged = false;
  long verify = -1;
  {
    SslPtr ssl(SSL_new(cctx.get()));
    SSL_set_fd(ssl.get(), fds[1]);
    SSL_set_tlsext_host_name(ssl.get(), host_name.c_str());
    SSL_set1_host(ssl.get(), host_name.c_str());
    // As Go's crypto/tls (Prometheus) does: the DNS SANs only, never the CN.
    SSL_set_hostflags(ssl.get(), X509_CHECK_FLAG_NEVER_CHECK_SUBJECT);
    if (SSL_connect(ssl.get()) == 1 && SSL_write(ssl.get(), "ping", 4) == 4) {
      char buf[4];
      exchanged = SSL_read(ssl.get(), buf, 4) == 4 && std::string(buf, 4) == "pong";
    }
    verify = SSL_get_verify_result(ssl.get());
    ERR_clear_error();
  }
  server_thread.join();
  ::close(fds[1]);
  if (verify == X509_V_OK && !exchanged) return -1;
  return verify;
}

TEST(EnrolledHostCertificateTest, PlainTlsClientVerifiesTheAgentByBundleAndHostId) {
  TempDir dir;
  auto ca = CertificateAuthority::Init(dir.path() + "/ca", kTd);
  ASSERT_TRUE(ca.ok()) << ca.status();
  const SpiffeId host{kTd, IdKind::kHost, "host-a.example.org"};
  EXPECT_EQ(PlainClientVerifies(**ca, host, "host-a.example.org", dir.path() + "/1"), X509_V_OK);
  // The name is checked: another host's name, or the CSR's, does not verify.
  EXPECT_EQ(PlainClientVerifies(**ca, host, "host-b.example.org", dir.path() + "/2"),
            X509_V_ERR_HOSTNAME_MISMATCH);
  EXPECT_EQ(PlainClientVerifies(**ca, host, "from-the-csr.example.org", dir.path() + "/3"),
            X509_V_ERR_HOSTNAME_MISMATCH);
  // VM and user certificates are clients only: a TLS client refuses them as servers.
  EXPECT_EQ(PlainClientVerifies(**ca, {kTd, IdKind::kVm, "host-a.example.org"},
                                "host-a.example.org", dir.path() + "/4"),
            X509_V_ERR_INVALID_PURPOSE);
  EXPECT_EQ(PlainClientVerifies(**ca, {kTd, IdKind::kUser, "host-a.example.org"},
                                "host-a.example.org", dir.path() + "/5"),
            X509_V_ERR_INVALID_PURPOSE);
}

INSTANTIATE_TEST_SUITE_P(Versions, TlsHandshakeTest,
                         ::testing::Values(TLS1_2_VERSION, TLS1_3_VERSION),
                         [](const ::testing::TestParamInfo<int>& i) {
                           return i.param == TLS1_2_VERSION ? "Tls12" : "Tls13";
                         });

}  // namespace
}  // namespace dfw::trust
