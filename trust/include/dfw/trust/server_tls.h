// ServerTls: the TLS of the product's HTTPS listeners (the controller's
// REST API, the host agent's GET /metrics): an OpenSSL context for
// httplib::SSLServer that asks every client for a certificate and verifies
// any it gets against the trust bundle (a client without one gets through
// the handshake; the server's authorization refuses it where it must: the
// controller's authz.h, the agent's metrics_server.h), TLS 1.2 at least,
// and serves the process's own SVID, re-read from its files when they
// change (checked at most every refresh interval, at a handshake), so a
// renewed certificate is served without a restart.
//
// Thread safety: the certificate callback runs on httplib's worker threads;
// the current key pair is swapped under a mutex.
#pragma once

#include <openssl/ssl.h>

#include <chrono>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/status.h"

namespace dfw::trust {

class ServerTls {
 public:
  ServerTls(std::string svid_dir, std::chrono::seconds refresh);
  ~ServerTls();
  // Reads the SVID and bundle; call once before Setup.
  absl::Status Load();
  // httplib::SSLServer's setup callback.
  bool Setup(SSL_CTX& ctx);

 private:
  static int CertCallback(SSL* ssl, void* self);
  absl::Status ReloadIfChanged();
  std::string dir_;
  std::chrono::seconds refresh_;
  std::mutex mu_;
  std::chrono::steady_clock::time_point next_check_{};
  std::string stamp_;  // mtimes and sizes of the files last read
  struct KeyPair;
  std::shared_ptr<KeyPair> current_;
  std::string bundle_pem_;
};

// The client's leaf certificate as PEM ("" when it sent none).
std::string PeerLeafPem(const SSL* ssl);

}  // namespace dfw::trust
