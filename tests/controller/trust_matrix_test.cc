// Trust, attacked: a controller with mutual TLS (its own CA, as `dfwctl ca
// init` makes it) and a table of credentials — good ones of every kind and
// role, and bad ones (another trust domain, expired, not yet valid, two URI
// SANs, none, a CA:TRUE leaf, no clientAuth usage, revoked, none at all,
// plaintext) — run against every gRPC method and every REST route. Each
// (credential, call) has one expected outcome, written here independently
// of the controller's own table: refused at the handshake, UNAUTHENTICATED
// (401), PERMISSION_DENIED (403), or let through (any other answer: the
// empty requests the matrix sends are then refused as invalid or not found
// by the model, which is past authorization).
//
// Then the flows a user relies on: enrollment with a one-time token (and
// its reuse refused), a host speaking only for itself, renewal, revocation
// ending an open session, the actor in the change log, and the insecure mode
// refusing anything but loopback.
#include <grpcpp/grpcpp.h>
#include <httplib.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <cctype>
#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "dfw/controller/controller_server.h"
#include "dfw/trust/ca.h"
#include "dfw/trust/loopback.h"
#include "dfw/trust/peer.h"
#include "dfw/trust/svid.h"
#include "dfw/v1/controller.grpc.pb.h"
#include "dfw/v1/host.grpc.pb.h"
#include "dfw/v1/trust.grpc.pb.h"
#include "google/protobuf/descriptor.h"
#include "gtest/gtest.h"
#include "test_pki.h"
#include "test_util.h"

namespace dfw::controller::testing {
namespace {

using trust::IdKind;
using trust::IssueOptions;
using trust::Role;
using namespace std::chrono_literals;

constexpr char kTd[] = "dfw.test";

// What a certificate may be used for and the names a TLS client checks:
// its extended key usages (XKU_SSL_CLIENT, XKU_SSL_SERVER) and its DNS SANs
// (an IP SAN shows as "<ip>").
struct Usage {
  uint32_t eku = 0;
  std::vector<std::string> dns;
};
Usage UsageOf(const std::string& cert_pem) {
  Usage u;
  BIO* b = BIO_new_mem_buf(cert_pem.data(), static_cast<int>(cert_pem.size()));
  X509* x = PEM_read_bio_X509(b, nullptr, nullptr, nullptr);
  BIO_free(b);
  if (!x) return u;
  u.eku = X509_get_extended_key_usage(x);
  auto* names =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(x, NID_subject_alt_name, nullptr, nullptr));
  for (int i = 0; names && i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* gn = sk_GENERAL_NAME_value(names, i);
    if (gn->type == GEN_DNS || gn->type == GEN_IPADD) {
      u.dns.emplace_back(
          gn->type == GEN_IPADD
              ? "<ip>"
              : std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(gn->d.dNSName)),
                            ASN1_STRING_length(gn->d.dNSName)));
    }
  }
  GENERAL_NAMES_free(names);
  X509_free(x);
  return u;
}
constexpr uint32_t kClientOnly = XKU_SSL_CLIENT;
constexpr uint32_t kClientAndServer = XKU_SSL_CLIENT | XKU_SSL_SERVER;

enum class Outcome { kHandshake, kUnauthenticated, kDenied, kAllowed };
const char* Name(Outcome o) {
  switch (o) {
    case Outcome::kHandshake:
      return "refused at the TLS handshake";
    case Outcome::kUnauthenticated:
      return "UNAUTHENTICATED";
    case Outcome::kDenied:
      return "PERMISSION_DENIED";
    case Outcome::kAllowed:
      return "allowed";
  }
  return "?";
}

// What a call needs, as the product documents it (docs/architecture.md).
enum class Need { kEnroll, kSelf, kRead, kWrite, kAdmin, kHost };

// Who the credential is, for the expectation.
// kNone: a valid identity with no rights (a user without a role, another
// controller's id).
enum class Who {
  kAdmin,
  kEditor,
  kViewer,
  kHost,
  kVm,
  kNone,
  kAnonymous,
  kBadLeaf,
  kBadChain,
  kPlain
};

struct Credential {
  std::string name;
  Who who;
  std::string key_pem, cert_pem;  // empty: no client certificate
  std::string dir;                // the same, as files (REST client)
};

Outcome Expected(Who who, Need need) {
  switch (who) {
    case Who::kBadChain:
    case Who::kPlain:
      return Outcome::kHandshake;
    case Who::kBadLeaf:
      return Outcome::kUnauthenticated;
    case Who::kAnonymous:
      return need == Need::kEnroll ? Outcome::kAllowed : Outcome::kUnauthenticated;
    default:
      break;
  }
  if (need == Need::kEnroll || need == Need::kSelf) return Outcome::kAllowed;
  switch (who) {
    case Who::kAdmin:
      return need == Need::kHost ? Outcome::kDenied : Outcome::kAllowed;
    case Who::kEditor:
      return need == Need::kRead || need == Need::kWrite ? Outcome::kAllowed : Outcome::kDenied;
    case Who::kViewer:
      return need == Need::kRead ? Outcome::kAllowed : Outcome::kDenied;
    case Who::kHost:
      return need == Need::kHost ? Outcome::kAllowed : Outcome::kDenied;
    case Who::kVm:  // a guest agent's session (its Hello is checked after)
      return need == Need::kHost ? Outcome::kAllowed : Outcome::kDenied;
    default:
      return Outcome::kDenied;
  }
}

Outcome FromGrpc(const grpc::Status& s) {
  switch (s.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
      return Outcome::kHandshake;
    case grpc::StatusCode::UNAUTHENTICATED:
      return Outcome::kUnauthenticated;
    case grpc::StatusCode::PERMISSION_DENIED:
      return Outcome::kDenied;
    default:
      return Outcome::kAllowed;
  }
}

using Channel = std::shared_ptr<grpc::Channel>;

template <typename F>
bool Eventually(F f, std::chrono::milliseconds limit) {
  auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (f()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return f();
}
std::chrono::system_clock::time_point Soon() { return std::chrono::system_clock::now() + 3s; }

#define DFW_UNARY(Svc, M, Req, Resp, need)                \
  GrpcCall {                                              \
    "/dfw.v1." #Svc "/" #M, need, [](const Channel& ch) { \
      auto stub = dfw::v1::Svc::NewStub(ch);              \
      grpc::ClientContext c;                              \
      c.set_deadline(Soon());                             \
      dfw::v1::Req q;                                     \
      dfw::v1::Resp r;                                    \
      return stub->M(&c, q, &r);                          \
    }                                                     \
  }

struct GrpcCall {
  std::string method;
  Need need;
  std::function<grpc::Status(const Channel&)> call;
};

std::vector<GrpcCall> AllGrpcCalls() {
  return {
      DFW_UNARY(ControllerService, GetVm, GetRequest, Vm, Need::kRead),
      DFW_UNARY(ControllerService, ListVms, ListRequest, ListVmsResponse, Need::kRead),
      DFW_UNARY(ControllerService, VmGroups, GetRequest, VmGroupsResponse, Need::kRead),
      DFW_UNARY(ControllerService, EffectiveRules, EffectiveRulesRequest, EffectiveRulesResponse,
                Need::kRead),
      DFW_UNARY(ControllerService, Trace, TraceRequest, TraceResponse, Need::kRead),
      DFW_UNARY(ControllerService, GetGroup, GetRequest, SecurityGroup, Need::kRead),
      DFW_UNARY(ControllerService, ListGroups, ListRequest, ListGroupsResponse, Need::kRead),
      DFW_UNARY(ControllerService, GroupMembers, GetRequest, GroupMembership, Need::kRead),
      DFW_UNARY(ControllerService, GetPolicy, GetRequest, Policy, Need::kRead),
      DFW_UNARY(ControllerService, ListPolicies, ListRequest, ListPoliciesResponse, Need::kRead),
      DFW_UNARY(ControllerService, ListHosts, ListRequest, ListHostsResponse, Need::kRead),
      DFW_UNARY(ControllerService, Realization, RealizationRequest, RealizationResponse,
                Need::kRead),
      DFW_UNARY(ControllerService, PutVm, PutVmRequest, Vm, Need::kWrite),
      DFW_UNARY(ControllerService, DeleteVm, DeleteRequest, DeleteResponse, Need::kWrite),
      DFW_UNARY(ControllerService, Tag, TagRequest, TagResponse, Need::kWrite),
      DFW_UNARY(ControllerService, PutGroup, PutGroupRequest, SecurityGroup, Need::kWrite),
      DFW_UNARY(ControllerService, DeleteGroup, DeleteRequest, DeleteResponse, Need::kWrite),
      DFW_UNARY(ControllerService, PutPolicy, PutPolicyRequest, Policy, Need::kWrite),
      DFW_UNARY(ControllerService, PreviewPolicy, PreviewPolicyRequest, PolicyImpact, Need::kWrite),
      DFW_UNARY(ControllerService, ProbeFlow, ProbeFlowRequest, ProbeFlowResponse, Need::kWrite),
      DFW_UNARY(ControllerService, PreviewGroup, PreviewGroupRequest, GroupImpact, Need::kWrite),
      DFW_UNARY(ControllerService, PreviewTag, TagRequest, GroupImpact, Need::kWrite),
      DFW_UNARY(ControllerService, DeletePolicy, DeleteRequest, DeleteResponse, Need::kWrite),
      DFW_UNARY(ControllerService, DeleteHost, DeleteRequest, DeleteResponse, Need::kAdmin),
      DFW_UNARY(ControllerService, ListExclusions, ListRequest, ListExclusionsResponse,
                Need::kRead),
      DFW_UNARY(ControllerService, AddExclusion, Exclusion, Exclusion, Need::kAdmin),
      DFW_UNARY(ControllerService, DeleteExclusion, DeleteExclusionRequest, DeleteResponse,
                Need::kAdmin),
      GrpcCall{"/dfw.v1.ControllerService/Watch", Need::kRead,
               [](const Channel& ch) {
                 auto stub = dfw::v1::ControllerService::NewStub(ch);
                 grpc::ClientContext c;
                 c.set_deadline(std::chrono::system_clock::now() + 1500ms);
                 dfw::v1::WatchRequest q;
                 auto r = stub->Watch(&c, q);
                 dfw::v1::ChangeEvent e;
                 while (r->Read(&e)) {
                 }
                 return r->Finish();  // allowed: DEADLINE_EXCEEDED
               }},
      GrpcCall{"/dfw.v1.HostSessionService/Session", Need::kHost,
               [](const Channel& ch) {
                 auto stub = dfw::v1::HostSessionService::NewStub(ch);
                 grpc::ClientContext c;
                 c.set_deadline(Soon());
                 auto s = stub->Session(&c);
                 s->WritesDone();  // no Hello: an admitted session just ends (OK)
                 dfw::v1::ControllerToHost m;
                 while (s->Read(&m)) {
                 }
                 return s->Finish();
               }},
      DFW_UNARY(TrustService, Enroll, EnrollRequest, CertificateResponse, Need::kEnroll),
      DFW_UNARY(TrustService, Renew, RenewRequest, CertificateResponse, Need::kSelf),
      DFW_UNARY(TrustService, CreateJoinToken, CreateJoinTokenRequest, CreateJoinTokenResponse,
                Need::kAdmin),
      DFW_UNARY(TrustService, ListCertificates, ListCertificatesRequest, ListCertificatesResponse,
                Need::kAdmin),
      DFW_UNARY(TrustService, RevokeCertificate, RevokeCertificateRequest, IssuedCertificate,
                Need::kAdmin),
  };
}

struct RestCall {
  std::string method, path;
  Need need;
};

// Every route of rest_api.h, with ids that do not exist (nothing changes).
std::vector<RestCall> AllRestCalls() {
  std::vector<RestCall> out = {
      {"GET", "/api/v1/vms", Need::kRead},
      {"POST", "/api/v1/vms", Need::kWrite},
      {"GET", "/api/v1/vms/nx", Need::kRead},
      {"PUT", "/api/v1/vms/nx", Need::kWrite},
      {"DELETE", "/api/v1/vms/nx", Need::kWrite},
      {"POST", "/api/v1/vms/nx/tags", Need::kWrite},
      {"POST", "/api/v1/tags", Need::kWrite},
      {"GET", "/api/v1/vms/nx/groups", Need::kRead},
      {"GET", "/api/v1/vms/nx/effective-rules", Need::kRead},
      {"GET", "/api/v1/vnics/nx/effective-rules", Need::kRead},
      {"GET", "/api/v1/trace?from_vm_id=nx&to_vm_id=ny&protocol=6&destination_port=1", Need::kRead},
      {"POST", "/api/v1/probes", Need::kWrite},
      {"GET", "/api/v1/groups", Need::kRead},
      {"POST", "/api/v1/groups", Need::kWrite},
      {"GET", "/api/v1/groups/nx", Need::kRead},
      {"PUT", "/api/v1/groups/nx", Need::kWrite},
      {"DELETE", "/api/v1/groups/nx", Need::kWrite},
      {"PUT", "/api/v1/groups/nx?dry_run=true", Need::kWrite},
      {"POST", "/api/v1/tags?dry_run=true", Need::kWrite},
      {"GET", "/api/v1/groups/nx/members", Need::kRead},
      {"GET", "/api/v1/policies", Need::kRead},
      {"POST", "/api/v1/policies", Need::kWrite},
      {"GET", "/api/v1/policies/nx", Need::kRead},
      {"PUT", "/api/v1/policies/nx", Need::kWrite},
      {"DELETE", "/api/v1/policies/nx", Need::kWrite},
      {"DELETE", "/api/v1/policies/nx?dry_run=true", Need::kWrite},
      {"GET", "/api/v1/hosts", Need::kRead},
      {"DELETE", "/api/v1/hosts/nx", Need::kAdmin},
      {"GET", "/api/v1/exclusions", Need::kRead},
      {"POST", "/api/v1/exclusions", Need::kAdmin},
      {"DELETE", "/api/v1/exclusions/vm:nx", Need::kAdmin},
      {"GET", "/api/v1/realization", Need::kRead},
      {"GET", "/api/v1/changes", Need::kRead},
      {"GET", "/api/v1/flows", Need::kRead},
      {"GET", "/api/v1/status", Need::kRead},
      {"GET", "/metrics", Need::kRead},
      {"POST", "/api/v1/enroll", Need::kEnroll},
      {"POST", "/api/v1/renew", Need::kSelf},
      {"POST", "/api/v1/join-tokens", Need::kAdmin},
      {"GET", "/api/v1/certificates", Need::kAdmin},
      {"POST", "/api/v1/certificates/00/revoke", Need::kAdmin},
  };
  return out;
}

class TrustMatrixTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto ca = MakeTestPki(dir_.path(), kTd);
    ASSERT_TRUE(ca.ok()) << ca.status();
    ca_ = std::move(*ca);
    bundle_file_ = dir_.path() + "/pki/controller/" + trust::kSvidBundleFile;
    ControllerOptions o = TlsControllerOptions(dir_.path());
    o.cert_refresh = 1s;
    auto s = server_.Start(o);
    ASSERT_TRUE(s.ok()) << s;
    grpc_target_ = "127.0.0.1:" + std::to_string(server_.grpc_port());

    admin_ = Make("admin", Who::kAdmin, User("alice", Role::kAdmin));
  }

  IssueOptions User(const std::string& name, Role role) {
    IssueOptions o;
    o.id = {kTd, IdKind::kUser, name};
    o.role = role;
    return o;
  }
  IssueOptions Id(IdKind kind, const std::string& name) {
    IssueOptions o;
    o.id = {kTd, kind, name};
    return o;
  }

  Credential Make(const std::string& name, Who who, const IssueOptions& o,
                  trust::CertificateAuthority* ca = nullptr) {
    auto kc = (ca ? ca : ca_.get())->IssueWithNewKey(o);
    EXPECT_TRUE(kc.ok()) << name << ": " << kc.status();
    Credential c{name, who, kc.ok() ? kc->key_pem : "", kc.ok() ? kc->cert.cert_pem : "", ""};
    serials_[name] = kc.ok() ? kc->cert.serial_hex : "";
    c.dir = dir_.path() + "/creds/" + name;
    EXPECT_TRUE(trust::WriteSvid(c.dir, {c.key_pem, c.cert_pem, ca_->bundle_pem()}).ok());
    return c;
  }

  Channel GrpcChannel(const Credential& c) {
    if (c.who == Who::kPlain) {
      return grpc::CreateChannel(grpc_target_, grpc::InsecureChannelCredentials());
    }
    grpc::SslCredentialsOptions o;
    o.pem_root_certs = ca_->bundle_pem();
    o.pem_private_key = c.key_pem;
    o.pem_cert_chain = c.cert_pem;
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    return grpc::CreateCustomChannel(grpc_target_, grpc::SslCredentials(o), args);
  }

  std::unique_ptr<httplib::Client> RestClient(const Credential& c) {
    std::string host = "127.0.0.1:" + std::to_string(server_.http_port());
    std::unique_ptr<httplib::Client> cli;
    if (c.who == Who::kPlain) {
      cli = std::make_unique<httplib::Client>("http://" + host);
    } else if (c.cert_pem.empty()) {
      cli = std::make_unique<httplib::Client>("https://" + host);
    } else {
      cli = std::make_unique<httplib::Client>("https://" + host, c.dir + "/" + trust::kSvidFile,
                                              c.dir + "/" + trust::kSvidKeyFile);
    }
    cli->set_ca_cert_path(bundle_file_.c_str());
    cli->enable_server_certificate_verification(true);
    cli->set_connection_timeout(3, 0);
    cli->set_read_timeout(5, 0);
    return cli;
  }

  Outcome RestOutcome(httplib::Client& cli, const RestCall& call) {
    httplib::Headers h;
    httplib::Result r = call.method == "GET"      ? cli.Get(call.path.c_str(), h)
                        : call.method == "DELETE" ? cli.Delete(call.path.c_str(), h)
                        : call.method == "PUT"
                            ? cli.Put(call.path.c_str(), h, "{}", "application/json")
                            : cli.Post(call.path.c_str(), h, "{}", "application/json");
    if (!r) return Outcome::kHandshake;
    if (r->status == 401) return Outcome::kUnauthenticated;
    if (r->status == 403) return Outcome::kDenied;
    if (r->status == 400 &&
        r->body.find("plain HTTP request was sent to HTTPS") != std::string::npos) {
      return Outcome::kHandshake;
    }
    return Outcome::kAllowed;
  }

  // Revokes `serial` as the admin, over REST.
  void Revoke(const std::string& serial) {
    auto cli = RestClient(admin_);
    auto r =
        cli->Post(("/api/v1/certificates/" + serial + "/revoke").c_str(), "{}", "application/json");
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
  }

  TempDir dir_;
  ControllerServer server_;
  std::unique_ptr<trust::CertificateAuthority> ca_;
  std::string grpc_target_, bundle_file_;
  Credential admin_;
  std::map<std::string, std::string> serials_;
};

TEST_F(TrustMatrixTest, EveryCredentialAgainstEveryMethodAndRoute) {
  std::vector<Credential> creds;
  creds.push_back(admin_);
  creds.push_back(Make("editor", Who::kEditor, User("ed", Role::kEditor)));
  creds.push_back(Make("viewer", Who::kViewer, User("vi", Role::kViewer)));
  creds.push_back(Make("user-without-role", Who::kNone, User("nobody", Role::kNone)));
  creds.push_back(Make("host-h1", Who::kHost, Id(IdKind::kHost, "h1")));
  creds.push_back(Make("vm", Who::kVm, Id(IdKind::kVm, "d1f00000-0000-4000-8000-000000000001")));
  creds.push_back(Make("controller-id", Who::kNone, Id(IdKind::kController, "other")));
  creds.push_back(Credential{"no-certificate", Who::kAnonymous, "", "", ""});
  creds.push_back(Credential{"plaintext", Who::kPlain, "", "", ""});
  {
    auto other = trust::CertificateAuthority::Init(dir_.path() + "/other-ca", "other.test");
    ASSERT_TRUE(other.ok());
    IssueOptions o = User("mallory", Role::kAdmin);
    o.id.trust_domain = "other.test";
    creds.push_back(Make("other-trust-domain", Who::kBadChain, o, other->get()));
  }
  {
    IssueOptions o = User("late", Role::kAdmin);
    o.not_before = std::chrono::system_clock::now() - 48h;
    o.validity = 1h;
    creds.push_back(Make("expired", Who::kBadChain, o));
  }
  {
    IssueOptions o = User("early", Role::kAdmin);
    o.not_before = std::chrono::system_clock::now() + 24h;
    creds.push_back(Make("not-yet-valid", Who::kBadChain, o));
  }
  {
    IssueOptions o = User("twins", Role::kAdmin);
    o.extra_uri_sans = {"spiffe://dfw.test/user/alice"};
    creds.push_back(Make("two-uri-sans", Who::kBadLeaf, o));
  }
  {
    IssueOptions o = User("anon", Role::kAdmin);
    o.omit_uri_san = true;
    creds.push_back(Make("no-uri-san", Who::kBadLeaf, o));
  }
  {
    IssueOptions o = User("ca", Role::kAdmin);
    o.ca_true = true;
    creds.push_back(Make("ca-true-leaf", Who::kBadLeaf, o));
  }
  {
    IssueOptions o = User("server", Role::kAdmin);
    o.client_auth = false;
    o.server_auth = true;
    creds.push_back(Make("no-client-auth", Who::kBadChain, o));
  }
  creds.push_back(Make("revoked-admin", Who::kBadLeaf, User("gone", Role::kAdmin)));
  Revoke(serials_["revoked-admin"]);

  // The matrix must cover every method the services have.
  std::set<std::string> covered;
  for (const auto& c : AllGrpcCalls()) covered.insert(c.method);
  for (const char* svc :
       {"dfw.v1.ControllerService", "dfw.v1.HostSessionService", "dfw.v1.TrustService"}) {
    const auto* d = google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(svc);
    ASSERT_NE(d, nullptr) << svc;
    for (int i = 0; i < d->method_count(); ++i) {
      std::string m = "/" + std::string(svc) + "/" + d->method(i)->name();
      EXPECT_TRUE(covered.count(m)) << m << " is not in the matrix";
    }
  }

  int cases = 0;
  for (const auto& cred : creds) {
    Channel ch = GrpcChannel(cred);
    for (const auto& call : AllGrpcCalls()) {
      grpc::Status st = call.call(ch);
      Outcome want = Expected(cred.who, call.need), got = FromGrpc(st);
      EXPECT_EQ(Name(got), Name(want)) << cred.name << " -> " << call.method << ": "
                                       << st.error_code() << " " << st.error_message();
      ++cases;
    }
    auto cli = RestClient(cred);
    for (const auto& call : AllRestCalls()) {
      Outcome want = Expected(cred.who, call.need), got = RestOutcome(*cli, call);
      EXPECT_EQ(Name(got), Name(want)) << cred.name << " -> " << call.method << " " << call.path;
      ++cases;
    }
  }
  EXPECT_GT(cases, 800);
}

// Enrollment: a one-time token gives a host its certificate; the token
// cannot be used twice; the certificate opens that host's session only.
TEST_F(TrustMatrixTest, EnrollWithOneTimeTokenThenSessionAsItself) {
  auto admin = dfw::v1::TrustService::NewStub(GrpcChannel(admin_));
  dfw::v1::CreateJoinTokenRequest tq;
  tq.set_kind(dfw::v1::IDENTITY_KIND_HOST);
  tq.set_name("h7");
  dfw::v1::CreateJoinTokenResponse tok;
  {
    grpc::ClientContext c;
    ASSERT_TRUE(admin->CreateJoinToken(&c, tq, &tok).ok());
  }
  EXPECT_EQ(tok.spiffe_id(), "spiffe://dfw.test/host/h7");

  Credential anon{"anon", Who::kAnonymous, "", "", ""};
  auto enroll = dfw::v1::TrustService::NewStub(GrpcChannel(anon));
  auto kc = trust::GenerateKeyAndCsr("h7");
  ASSERT_TRUE(kc.ok());
  dfw::v1::EnrollRequest eq;
  eq.set_token(tok.token());
  eq.set_csr_pem(kc->csr_pem);
  dfw::v1::CertificateResponse cert;
  {
    grpc::ClientContext c;
    auto s = enroll->Enroll(&c, eq, &cert);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  EXPECT_EQ(cert.spiffe_id(), "spiffe://dfw.test/host/h7");
  // A host is a server too (its agent's GET /metrics), named by its host id.
  Usage usage = UsageOf(cert.cert_pem());
  EXPECT_EQ(usage.eku, kClientAndServer);
  EXPECT_EQ(usage.dns, std::vector<std::string>{"h7"});
  {
    grpc::ClientContext c;
    dfw::v1::CertificateResponse again;
    auto s = enroll->Enroll(&c, eq, &again);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << "a token enrolls once";
  }

  Credential h7{"h7", Who::kHost, kc->key_pem, cert.cert_pem(), ""};
  auto session = [&](const std::string& hello_id) {
    auto stub = dfw::v1::HostSessionService::NewStub(GrpcChannel(h7));
    grpc::ClientContext c;
    c.set_deadline(Soon());
    auto s = stub->Session(&c);
    dfw::v1::HostToController m;
    m.mutable_hello()->mutable_host()->set_id(hello_id);
    s->Write(m);
    dfw::v1::ControllerToHost in;
    bool got = s->Read(&in);  // a full state when admitted
    s->WritesDone();
    while (s->Read(&in)) {
    }
    return std::make_pair(got, s->Finish());
  };
  auto [got_full, ok] = session("h7");
  EXPECT_TRUE(got_full) << ok.error_message();
  auto [got_other, denied] = session("h8");
  EXPECT_FALSE(got_other);
  EXPECT_EQ(denied.error_code(), grpc::StatusCode::PERMISSION_DENIED) << denied.error_message();
  EXPECT_NE(denied.error_message().find("h8"), std::string::npos);

  // The change log says who did what.
  auto events = server_.model()->Changes(0, 1000);
  ASSERT_TRUE(events.ok());
  std::set<std::string> actors;
  for (const auto& e : *events) actors.insert(e.actor());
  EXPECT_TRUE(actors.count("spiffe://dfw.test/user/alice")) << "the admin created the token";
  EXPECT_TRUE(actors.count("spiffe://dfw.test/host/h7")) << "the host enrolled and registered";
}

TEST_F(TrustMatrixTest, ExpiredTokenIsRefused) {
  auto admin = dfw::v1::TrustService::NewStub(GrpcChannel(admin_));
  dfw::v1::CreateJoinTokenRequest tq;
  tq.set_kind(dfw::v1::IDENTITY_KIND_USER);
  tq.set_name("bob");
  tq.set_role("viewer");
  tq.set_ttl_seconds(1);
  dfw::v1::CreateJoinTokenResponse tok;
  grpc::ClientContext c;
  ASSERT_TRUE(admin->CreateJoinToken(&c, tq, &tok).ok());
  std::this_thread::sleep_for(2100ms);
  auto kc = trust::GenerateKeyAndCsr("bob");
  ASSERT_TRUE(kc.ok());
  auto enroll = dfw::v1::TrustService::NewStub(GrpcChannel({"anon", Who::kAnonymous, "", "", ""}));
  dfw::v1::EnrollRequest eq;
  eq.set_token(tok.token());
  eq.set_csr_pem(kc->csr_pem);
  dfw::v1::CertificateResponse cert;
  grpc::ClientContext c2;
  auto s = enroll->Enroll(&c2, eq, &cert);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_NE(s.error_message().find("expired"), std::string::npos) << s.error_message();
}

// Renewal gives the same identity a new certificate; revoking a
// certificate ends the host session that holds it.
TEST_F(TrustMatrixTest, RenewThenRevokeEndsTheOpenSession) {
  Credential h1 = Make("h1", Who::kHost, Id(IdKind::kHost, "h1"));
  auto kc = trust::GenerateKeyAndCsr("h1");
  ASSERT_TRUE(kc.ok());
  dfw::v1::RenewRequest rq;
  rq.set_csr_pem(kc->csr_pem);
  dfw::v1::CertificateResponse renewed;
  {
    auto stub = dfw::v1::TrustService::NewStub(GrpcChannel(h1));
    grpc::ClientContext c;
    auto s = stub->Renew(&c, rq, &renewed);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  EXPECT_EQ(renewed.spiffe_id(), "spiffe://dfw.test/host/h1");
  EXPECT_NE(renewed.serial(), serials_["h1"]);
  // Held as client-only (the test CA's), renewed with a host's extensions.
  EXPECT_EQ(UsageOf(h1.cert_pem).eku, kClientOnly);
  Usage usage = UsageOf(renewed.cert_pem());
  EXPECT_EQ(usage.eku, kClientAndServer);
  EXPECT_EQ(usage.dns, std::vector<std::string>{"h1"});

  Credential h1b{"h1b", Who::kHost, kc->key_pem, renewed.cert_pem(), ""};
  auto stub = dfw::v1::HostSessionService::NewStub(GrpcChannel(h1b));
  grpc::ClientContext c;
  auto s = stub->Session(&c);
  dfw::v1::HostToController m;
  m.mutable_hello()->mutable_host()->set_id("h1");
  ASSERT_TRUE(s->Write(m));
  dfw::v1::ControllerToHost in;
  ASSERT_TRUE(s->Read(&in));
  ASSERT_TRUE(in.has_full());

  Revoke(renewed.serial());
  // The next message the host sends meets the revocation.
  dfw::v1::HostToController ack;
  ack.mutable_ack()->set_revision(in.full().revision());
  ack.mutable_ack()->set_ok(true);
  s->Write(ack);
  while (s->Read(&in)) {
  }
  auto st = s->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED) << st.error_message();
  EXPECT_NE(st.error_message().find("revoked"), std::string::npos) << st.error_message();
}

// A serial revoked as an operator may type it (upper case) is the issued
// one; revoking it again changes nothing (no revision).
TEST_F(TrustMatrixTest, RevokeTakesTheSerialInAnyCaseOnce) {
  Credential h9 = Make("h9", Who::kHost, Id(IdKind::kHost, "h9"));
  std::string upper = serials_["h9"];
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  Revoke(upper);
  uint64_t rev = server_.model()->revision();
  Revoke(upper);
  EXPECT_EQ(server_.model()->revision(), rev) << "a second revocation wrote a revision";
  auto stub = dfw::v1::HostSessionService::NewStub(GrpcChannel(h9));
  grpc::ClientContext c;
  c.set_deadline(Soon());
  auto s = stub->Session(&c);
  dfw::v1::ControllerToHost in;
  while (s->Read(&in)) {
  }
  EXPECT_EQ(s->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
}

// The serial of the certificate a TLS server presents on a new connection.
std::string ServerSerialGrpc(const Channel& ch) {
  auto stub = dfw::v1::TrustService::NewStub(ch);
  grpc::ClientContext c;
  c.set_deadline(Soon());
  dfw::v1::EnrollRequest q;
  dfw::v1::CertificateResponse r;
  (void)stub->Enroll(&c, q, &r);
  auto auth = c.auth_context();
  if (!auth) return "";
  auto v = auth->FindPropertyValues(GRPC_X509_PEM_CERT_PROPERTY_NAME);
  if (v.empty()) return "";
  auto id = trust::InspectLeaf(std::string(v[0].data(), v[0].size()), kTd, false);
  return id.ok() ? id->serial_hex : "";
}

std::string ServerSerialRest(int port, const std::string& bundle_pem) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  X509_STORE* store = SSL_CTX_get_cert_store(ctx);
  BIO* b = BIO_new_mem_buf(bundle_pem.data(), static_cast<int>(bundle_pem.size()));
  X509* ca = PEM_read_bio_X509(b, nullptr, nullptr, nullptr);
  X509_STORE_add_cert(store, ca);
  X509_free(ca);
  BIO_free(b);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  BIO* conn = BIO_new_ssl_connect(ctx);
  BIO_set_conn_hostname(conn, ("127.0.0.1:" + std::to_string(port)).c_str());
  std::string serial;
  if (BIO_do_connect(conn) == 1 && BIO_do_handshake(conn) == 1) {
    SSL* ssl = nullptr;
    BIO_get_ssl(conn, &ssl);
    if (X509* cert = SSL_get1_peer_certificate(ssl)) {
      BIO* out = BIO_new(BIO_s_mem());
      PEM_write_bio_X509(out, cert);
      char* data = nullptr;
      long len = BIO_get_mem_data(out, &data);
      auto id = trust::InspectLeaf(std::string(data, static_cast<size_t>(len)), kTd, false);
      if (id.ok()) serial = id->serial_hex;
      BIO_free(out);
      X509_free(cert);
    }
  }
  BIO_free_all(conn);
  SSL_CTX_free(ctx);
  return serial;
}

// The controller's own certificate replaced on disk (a renewal) is served
// on new connections, gRPC and REST, without a restart.
TEST_F(TrustMatrixTest, ControllerCertificateRenewedOnDiskIsServedWithoutRestart) {
  Credential anon{"anon", Who::kAnonymous, "", "", ""};
  std::string grpc_before = ServerSerialGrpc(GrpcChannel(anon));
  std::string rest_before = ServerSerialRest(server_.http_port(), ca_->bundle_pem());
  ASSERT_FALSE(grpc_before.empty());
  EXPECT_EQ(grpc_before, rest_before);
  IssueOptions c;
  c.id = {kTd, IdKind::kController, "test"};
  c.server_auth = true;
  c.dns_sans = {"localhost"};
  c.ip_sans = {"127.0.0.1"};
  auto renewed = ca_->IssueWithNewKey(c);
  ASSERT_TRUE(renewed.ok());
  ASSERT_TRUE(trust::WriteSvid(dir_.path() + "/pki/controller",
                               {renewed->key_pem, renewed->cert.cert_pem, ca_->bundle_pem()})
                  .ok());
  EXPECT_TRUE(Eventually(
      [&] { return ServerSerialGrpc(GrpcChannel(anon)) == renewed->cert.serial_hex; }, 10s))
      << "gRPC still serves " << grpc_before;
  EXPECT_TRUE(Eventually(
      [&] {
        return ServerSerialRest(server_.http_port(), ca_->bundle_pem()) == renewed->cert.serial_hex;
      },
      10s))
      << "REST still serves " << rest_before;
}

// dfwctl renews a user's certificate past half its lifetime on the way.
TEST_F(TrustMatrixTest, DfwctlRenewsAUserCertificatePastHalfLife) {
  IssueOptions o = User("carol", Role::kViewer);
  o.not_before = std::chrono::system_clock::now() - 50min;
  o.validity = 1h;  // half-life 30 min ago, 10 min left
  Credential carol = Make("carol", Who::kViewer, o);
  std::string cmd = std::string("DFW_CONFIG_DIR=") + carol.dir + " " + DFWCTL_BIN +
                    " --server https://127.0.0.1:" + std::to_string(server_.http_port()) +
                    " group list >/dev/null 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  auto svid = trust::ReadSvid(carol.dir);
  ASSERT_TRUE(svid.ok()) << svid.status();
  auto id = trust::InspectLeaf(svid->cert_pem, kTd);
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_NE(id->serial_hex, serials_["carol"]) << "not renewed";
  EXPECT_EQ(id->id.ToString(), "spiffe://dfw.test/user/carol");
  EXPECT_EQ(id->role, Role::kViewer);
  EXPECT_GT(id->not_after, std::chrono::system_clock::now() + 50min) << "the same 1 h lifetime";
  Usage usage = UsageOf(svid->cert_pem);
  EXPECT_EQ(usage.eku, kClientOnly) << "a user renews as a client only";
  EXPECT_TRUE(usage.dns.empty());
}

// Enrollment by kind: VMs and users are clients only, with no DNS or IP
// name; a host id that is not a DNS name gets serverAuth but no DNS SAN;
// nothing is taken from the CSR.
TEST_F(TrustMatrixTest, EnrolledCertificatesCarryTheirKindsUsagesOnly) {
  auto admin = dfw::v1::TrustService::NewStub(GrpcChannel(admin_));
  auto enroll = dfw::v1::TrustService::NewStub(GrpcChannel({"anon", Who::kAnonymous, "", "", ""}));
  auto enrolled = [&](dfw::v1::IdentityKind kind, const std::string& name,
                      const std::string& role) {
    dfw::v1::CreateJoinTokenRequest tq;
    tq.set_kind(kind);
    tq.set_name(name);
    tq.set_role(role);
    dfw::v1::CreateJoinTokenResponse tok;
    grpc::ClientContext c;
    auto s = admin->CreateJoinToken(&c, tq, &tok);
    EXPECT_TRUE(s.ok()) << s.error_message();
    auto kc = trust::GenerateKeyAndCsr("csr-name.example.org");
    EXPECT_TRUE(kc.ok());
    dfw::v1::EnrollRequest eq;
    eq.set_token(tok.token());
    eq.set_csr_pem(kc.ok() ? kc->csr_pem : "");
    dfw::v1::CertificateResponse cert;
    grpc::ClientContext c2;
    s = enroll->Enroll(&c2, eq, &cert);
    EXPECT_TRUE(s.ok()) << name << ": " << s.error_message();
    return UsageOf(cert.cert_pem());
  };
  Usage vm = enrolled(dfw::v1::IDENTITY_KIND_VM, "6f1c2a3e-0000-4000-8000-000000000001", "");
  EXPECT_EQ(vm.eku, kClientOnly);
  EXPECT_TRUE(vm.dns.empty());
  Usage user = enrolled(dfw::v1::IDENTITY_KIND_USER, "dave", "admin");
  EXPECT_EQ(user.eku, kClientOnly);
  EXPECT_TRUE(user.dns.empty());
  Usage odd = enrolled(dfw::v1::IDENTITY_KIND_HOST, "rack_1", "");
  EXPECT_EQ(odd.eku, kClientAndServer);
  EXPECT_TRUE(odd.dns.empty()) << "'rack_1' is not a DNS name";
  Usage fqdn = enrolled(dfw::v1::IDENTITY_KIND_HOST, "hv-2.dc1.example.org", "");
  EXPECT_EQ(fqdn.eku, kClientAndServer);
  EXPECT_EQ(fqdn.dns, std::vector<std::string>{"hv-2.dc1.example.org"});
}

TEST(TrustModeTest, SecureByDefaultAndInsecureOnlyOnLoopback) {
  TempDir dir;
  {
    ControllerServer s;
    ControllerOptions o;
    o.data_dir = dir.path() + "/a";
    auto st = s.Start(o);
    EXPECT_FALSE(st.ok()) << "no certificate and not --insecure must not start";
    EXPECT_NE(std::string(st.message()).find("insecure"), std::string::npos) << st;
  }
  {
    ControllerServer s;
    ControllerOptions o;
    o.data_dir = dir.path() + "/b";
    o.insecure = true;
    o.grpc_listen = "0.0.0.0:0";
    auto st = s.Start(o);
    EXPECT_FALSE(st.ok());
    EXPECT_NE(std::string(st.message()).find("loopback"), std::string::npos) << st;
  }
  {
    ControllerServer s;
    ControllerOptions o;
    o.data_dir = dir.path() + "/c";
    o.insecure = true;
    o.http_listen = "198.18.0.1:0";
    EXPECT_FALSE(s.Start(o).ok());
  }
  EXPECT_TRUE(CheckLoopback("127.0.0.1:1").ok());
  EXPECT_TRUE(CheckLoopback("[::1]:1").ok());
  EXPECT_TRUE(CheckLoopback("localhost:1").ok());
  EXPECT_FALSE(CheckLoopback("[::]:1").ok());
  EXPECT_FALSE(CheckLoopback("example.org:1").ok());
  EXPECT_TRUE(trust::IsLoopbackHost("127.1.2.3"));
  EXPECT_TRUE(trust::IsLoopbackHost("::ffff:127.0.0.1"));
  EXPECT_TRUE(trust::IsLoopbackHost("[::1]"));
  EXPECT_FALSE(trust::IsLoopbackHost("0.0.0.0"));
  EXPECT_FALSE(trust::IsLoopbackHost("::"));
  EXPECT_FALSE(trust::IsLoopbackHost("localhost.example.org"));
  EXPECT_FALSE(trust::IsLoopbackHost("128.0.0.1"));
  EXPECT_FALSE(trust::IsLoopbackHostPort("::1"));  // a bare IPv6 address has no port
}

}  // namespace
}  // namespace dfw::controller::testing
