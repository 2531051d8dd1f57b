// The host agent's GET /metrics listener (metrics_server.h) over a real
// loopback socket: with mutual TLS on the agent's SVID, users of role viewer
// and above read the agent's text (parsed by the strict parser of
// tests/base/exposition_parser.h); no certificate is 401; a host, a VM and a
// user without a role are 403; a certificate of another CA does not get
// through the handshake, and a client trusting another CA does not accept
// the agent. --metrics-insecure: plain HTTP on loopback only.
#include "dfw/hostagent/metrics_server.h"

#include <gtest/gtest.h>
#include <httplib.h>

#include <atomic>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>

#include "dfw/hostagent/agent_metrics.h"
#include "dfw/trust/ca.h"
#include "dfw/trust/svid.h"
#include "exposition_parser.h"
#include "test_tls_client.h"

namespace dfw::hostagent {
namespace {

using metrics::testing::Parse;
using metrics::testing::Scrape;

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/dfw-metrics-server-XXXXXX";
    if (mkdtemp(tmpl) != nullptr) path_ = tmpl;
  }
  ~TempDir() {
    if (!path_.empty()) (void)std::system(("rm -rf '" + path_ + "'").c_str());
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// What the listener serves: the agent's rendering of a snapshot.
std::string AgentText(const DataplaneCallMetrics* calls, std::atomic<int>* renders) {
  ++*renders;
  AgentScrape s;
  s.agent.controller = true;
  s.agent.controller_connected = true;
  s.agent.realized_revision = 12;
  s.agent.vnics_steered = 3;
  s.agent.dataplane_calls = calls;
  v1::CountersResponse c;
  c.set_applied_revision(12);
  s.dataplane = c;
  return RenderAgentMetrics(s, false);
}

struct Answer {
  int status = 0;  // 0: no response (the connection or handshake failed)
  std::string content_type, body;
};

Answer Get(httplib::Client& cli, const std::string& path = "/metrics") {
  Answer a;
  auto r = cli.Get(path);
  if (!r) return a;
  a.status = r->status;
  a.content_type = r->get_header_value("Content-Type");
  a.body = r->body;
  return a;
}

// A CA for "dfw.test" and the agent's SVID (as a host; serverAuth and
// 127.0.0.1 so that the client verifies it as a server), served by a
// MetricsServer on a free loopback port.
class MetricsServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    auto ca = trust::CertificateAuthority::Init(dir_.path() + "/ca", "dfw.test");
    ASSERT_TRUE(ca.ok()) << ca.status();
    ca_ = std::move(*ca);
    trust::IssueOptions io;
    io.id = {"dfw.test", trust::IdKind::kHost, "host-a"};
    io.server_auth = true;
    io.ip_sans = {"127.0.0.1"};
    auto kc = ca_->IssueWithNewKey(io);
    ASSERT_TRUE(kc.ok()) << kc.status();
    ASSERT_TRUE(
        trust::WriteSvid(agent_svid(), {kc->key_pem, kc->cert.cert_pem, ca_->bundle_pem()}).ok());
    MetricsServerOptions o;
    o.svid_dir = agent_svid();
    server_ = std::make_unique<MetricsServer>(o, [this] { return AgentText(&calls_, &renders_); });
    auto port = server_->Start();
    ASSERT_TRUE(port.ok()) << port.status();
    port_ = *port;
  }
  std::string agent_svid() const { return dir_.path() + "/agent"; }

  // A client as `id` with `role` (none: no client certificate), issued by
  // `ca` (default: the agent's CA), trusting `trusted_bundle` (default: the
  // agent's bundle).
  std::unique_ptr<httplib::Client> Client(std::optional<trust::SpiffeId> id,
                                          trust::Role role = trust::Role::kNone,
                                          trust::CertificateAuthority* ca = nullptr,
                                          const std::string& trusted_bundle = "") {
    return trust::testing::TlsTestClient(
        "https://127.0.0.1:" + std::to_string(port_),
        trusted_bundle.empty() ? agent_svid() + "/" + trust::kSvidBundleFile : trusted_bundle,
        ca ? *ca : *ca_, id, role, dir_.path() + "/creds/" + std::to_string(++clients_));
  }

  TempDir dir_;
  std::unique_ptr<trust::CertificateAuthority> ca_;
  DataplaneCallMetrics calls_;
  std::atomic<int> renders_{0};
  std::unique_ptr<MetricsServer> server_;
  int port_ = 0;
  int clients_ = 0;
};

TEST_F(MetricsServerTest, ViewerAndAdminReadTheAgentsMetrics) {
  for (trust::Role role : {trust::Role::kViewer, trust::Role::kEditor, trust::Role::kAdmin}) {
    auto cli = Client(trust::SpiffeId{"dfw.test", trust::IdKind::kUser, "prometheus"}, role);
    Answer a = Get(*cli);
    ASSERT_EQ(a.status, 200) << trust::RoleName(role) << ": " << a.body;
    EXPECT_EQ(a.content_type.rfind("text/plain; version=0.0.4", 0), 0u) << a.content_type;
    Scrape s = Parse(a.body);
    EXPECT_EQ(s.error, "") << a.body;
    EXPECT_EQ(s.Or0("dfw_hostagent_controller_connected"), 1);
    EXPECT_EQ(s.Or0("dfw_hostagent_realized_revision"), 12);
    EXPECT_EQ(s.Or0("dfw_hostagent_vnics", {{"state", "steered"}}), 3);
    EXPECT_EQ(s.Or0("dfw_dataplane_up"), 1);
    EXPECT_TRUE(s.families.count("dfw_hostagent_dataplane_call_duration_seconds"));
  }
  // Only GET.
  auto cli = Client(trust::SpiffeId{"dfw.test", trust::IdKind::kUser, "v"}, trust::Role::kViewer);
  auto r = cli->Post("/metrics", "x", "text/plain");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 405);
  EXPECT_EQ(Get(*cli, "/other").status, 404);
}

TEST_F(MetricsServerTest, OthersAreRefusedAndNeverRendered) {
  const int before = renders_.load();
  auto anonymous = Client(std::nullopt);
  EXPECT_EQ(Get(*anonymous).status, 401);
  auto host = Client(trust::SpiffeId{"dfw.test", trust::IdKind::kHost, "host-b"});
  EXPECT_EQ(Get(*host).status, 403);
  auto vm = Client(
      trust::SpiffeId{"dfw.test", trust::IdKind::kVm, "11111111-0000-0000-0000-00000000000a"});
  EXPECT_EQ(Get(*vm).status, 403);
  auto nobody = Client(trust::SpiffeId{"dfw.test", trust::IdKind::kUser, "nobody"});
  EXPECT_EQ(Get(*nobody).status, 403);
  EXPECT_EQ(renders_.load(), before) << "rendered for a refused caller";

  // A certificate of another CA (even of the same trust domain name) does
  // not get through the handshake.
  TempDir other_dir;
  auto other = trust::CertificateAuthority::Init(other_dir.path() + "/ca", "dfw.test");
  ASSERT_TRUE(other.ok()) << other.status();
  auto stranger = Client(trust::SpiffeId{"dfw.test", trust::IdKind::kUser, "stranger"},
                         trust::Role::kAdmin, other->get());
  EXPECT_EQ(Get(*stranger).status, 0);
  // A client that trusts another CA does not accept the agent.
  const std::string other_bundle = other_dir.path() + "/bundle.pem";
  {
    FILE* f = std::fopen(other_bundle.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs((*other)->bundle_pem().c_str(), f);
    std::fclose(f);
  }
  auto wary = Client(trust::SpiffeId{"dfw.test", trust::IdKind::kUser, "wary"},
                     trust::Role::kViewer, nullptr, other_bundle);
  EXPECT_EQ(Get(*wary).status, 0);
  EXPECT_EQ(renders_.load(), before);
}

TEST(MetricsServerStartTest, PlainHttpOnLoopbackOnlyAndTlsNeedsAnSvid) {
  std::atomic<int> renders{0};
  DataplaneCallMetrics calls;
  MetricsServerOptions o;  // no SVID: --metrics-insecure
  o.host = "0.0.0.0";
  MetricsServer open(o, [&] { return AgentText(&calls, &renders); });
  EXPECT_FALSE(open.Start().ok()) << "plain HTTP on a non-loopback address";

  o.host = "127.0.0.1";
  MetricsServer plain(o, [&] { return AgentText(&calls, &renders); });
  auto port = plain.Start();
  ASSERT_TRUE(port.ok()) << port.status();
  httplib::Client cli("127.0.0.1", *port);
  Answer a = Get(cli);
  EXPECT_EQ(a.status, 200);
  EXPECT_EQ(Parse(a.body).error, "") << a.body;
  plain.Stop();

  TempDir empty;
  o.svid_dir = empty.path();
  MetricsServer no_svid(o, [&] { return std::string(); });
  EXPECT_FALSE(no_svid.Start().ok()) << "TLS without an SVID";
}

TEST(MetricsServerStartTest, ParseListen) {
  auto hp = MetricsServer::ParseListen("127.0.0.1:9464");
  ASSERT_TRUE(hp.ok());
  EXPECT_EQ(hp->first, "127.0.0.1");
  EXPECT_EQ(hp->second, 9464);
  hp = MetricsServer::ParseListen("[::1]:9464");
  ASSERT_TRUE(hp.ok());
  EXPECT_EQ(hp->first, "::1");
  for (const char* bad : {"", "9464", ":9464", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:70000",
                          "127.0.0.1:12x", "::1:9464"}) {
    EXPECT_FALSE(MetricsServer::ParseListen(bad).ok()) << bad;
  }
}

}  // namespace
}  // namespace dfw::hostagent
