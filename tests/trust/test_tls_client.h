// An HTTPS client for tests of the product's mutual-TLS listeners (the
// controller's REST API, the host agent's GET /metrics): httplib with a new
// client certificate, or none, verifying the server against a bundle.
#pragma once

#include <httplib.h>

#include <memory>
#include <optional>
#include <string>

#include "dfw/trust/ca.h"
#include "dfw/trust/svid.h"
#include "gtest/gtest.h"

namespace dfw::trust::testing {

// A client of `url` (https://host:port) as the holder of a new certificate
// for `id` with `role` issued by `ca`, its SVID written to `creds_dir`
// (no id: no client certificate), trusting only `bundle_file` for the
// server's certificate (host name checked too). Timeouts: 3 s to connect,
// 5 s to read.
inline std::unique_ptr<httplib::Client> TlsTestClient(const std::string& url,
                                                      const std::string& bundle_file,
                                                      CertificateAuthority& ca,
                                                      const std::optional<SpiffeId>& id, Role role,
                                                      const std::string& creds_dir) {
  std::unique_ptr<httplib::Client> cli;
  if (!id) {
    cli = std::make_unique<httplib::Client>(url);
  } else {
    IssueOptions io;
    io.id = *id;
    io.role = role;
    auto kc = ca.IssueWithNewKey(io);
    EXPECT_TRUE(kc.ok()) << kc.status();
    EXPECT_TRUE(WriteSvid(creds_dir, {kc->key_pem, kc->cert.cert_pem, ca.bundle_pem()}).ok());
    cli = std::make_unique<httplib::Client>(url, creds_dir + "/" + kSvidFile,
                                            creds_dir + "/" + kSvidKeyFile);
  }
  cli->set_ca_cert_path(bundle_file.c_str());
  cli->enable_server_certificate_verification(true);
  cli->set_connection_timeout(3, 0);
  cli->set_read_timeout(5, 0);
  return cli;
}

}  // namespace dfw::trust::testing
