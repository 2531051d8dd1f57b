// Certificates for the controller tests that run with mutual TLS: a CA and
// the controller's own SVID, written where ControllerOptions reads them.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "dfw/controller/controller_server.h"
#include "dfw/trust/ca.h"
#include "dfw/trust/svid.h"
#include "gtest/gtest.h"
#include "test_util.h"

namespace dfw::controller::testing {

// A CA in dir/pki/ca for `trust_domain`, and the controller's SVID
// (server auth, 127.0.0.1 and localhost) in dir/pki/controller with the
// CA's bundle (dir/pki/controller/<kSvidBundleFile>).
inline absl::StatusOr<std::unique_ptr<trust::CertificateAuthority>> MakeTestPki(
    const std::string& dir, const std::string& trust_domain) {
  auto ca = trust::CertificateAuthority::Init(dir + "/pki/ca", trust_domain);
  if (!ca.ok()) return ca.status();
  trust::IssueOptions c;
  c.id = {trust_domain, trust::IdKind::kController, "test"};
  c.server_auth = true;
  c.dns_sans = {"localhost"};
  c.ip_sans = {"127.0.0.1"};
  auto ctl = (*ca)->IssueWithNewKey(c);
  if (!ctl.ok()) return ctl.status();
  auto w = trust::WriteSvid(dir + "/pki/controller",
                            {ctl->key_pem, ctl->cert.cert_pem, (*ca)->bundle_pem()});
  if (!w.ok()) return w;
  return std::move(*ca);
}

// ControllerOptions using the PKI above (data in dir/db).
inline ControllerOptions TlsControllerOptions(const std::string& dir) {
  ControllerOptions o;
  o.data_dir = dir + "/db";
  o.svid_dir = dir + "/pki/controller";
  o.ca_dir = dir + "/pki/ca";
  return o;
}

// An in-process controller with mutual TLS on loopback (trust domain
// "dfw.test"); ca_ issues the clients' certificates.
class TlsControllerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto ca = MakeTestPki(dir_.path(), "dfw.test");
    ASSERT_TRUE(ca.ok()) << ca.status();
    ca_ = std::move(*ca);
    ASSERT_TRUE(server_.Start(TlsControllerOptions(dir_.path())).ok());
  }

  TempDir dir_;
  ControllerServer server_;
  std::unique_ptr<trust::CertificateAuthority> ca_;
};

}  // namespace dfw::controller::testing
