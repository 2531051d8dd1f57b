// SvidClient: an agent's identity toward the controller.
//
// What. The agent's X.509 SVID (spiffe://<td>/host/<id>) lives in a cert
// dir in spiffe-helper's layout (svid.pem, svid_key.pem, svid_bundle.pem).
// When the dir holds none, Enroll() generates a key (it never leaves the
// dir), sends a CSR with the one-time join token to the controller's
// TrustService.Enroll over TLS verified against the CA bundle the operator
// gave (--ca-bundle), and writes what it gets. A renewal thread renews the
// certificate at half its lifetime (TrustService.Renew with the current
// certificate) and rewrites the files; the channel credentials watch those
// files (gRPC's FileWatcherCertificateProvider), so sessions pick up the new
// certificate without a restart.
//
// Thread safety: Credentials() is safe from any thread; Enroll, Start and
// Stop from one thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/status.h"

namespace grpc {
class ChannelCredentials;
}

namespace dfw::hostagent {

struct SvidClientOptions {
  std::string controller_target;  // host:port, or several comma-separated (HA)
  std::string cert_dir;
  std::string join_token;            // used only when cert_dir has no SVID
  std::string ca_bundle;             // PEM file: the controller's CA, for enrollment
  std::chrono::seconds refresh{30};  // how often the files and the renewal time are looked at
};

class SvidClient {
 public:
  explicit SvidClient(SvidClientOptions o);
  ~SvidClient();  // Stop()s

  bool has_svid() const;
  // Enrolls with the join token unless the cert dir already has an SVID.
  // Retries with backoff (0.5 s -> 10 s) while the controller is
  // unreachable, until `stop` returns true; a refused token is final.
  absl::Status Enroll(const std::function<bool()>& stop);
  // TLS channel credentials from the cert dir, following its files.
  std::shared_ptr<grpc::ChannelCredentials> Credentials() const;

  void Start();  // the renewal thread
  void Stop();
  uint64_t renewals() const { return renewals_.load(); }
  // Renews now (tests, and the renewal thread at half-life).
  absl::Status RenewNow();

 private:
  void RenewLoop();
  const SvidClientOptions o_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
  std::atomic<uint64_t> renewals_{0};
  // The controller of o_.controller_target's list that answered last.
  std::atomic<size_t> current_{0};
};

}  // namespace dfw::hostagent
