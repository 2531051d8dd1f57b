// EtcdClient: the calls EtcdStore and EtcdLeaderElection make to etcd's v3
// gRPC API, over one channel per endpoint. A call that finds its endpoint
// unreachable, or etcd without a leader for the moment (UNAVAILABLE), moves
// to the next endpoint and tries again until the call's deadline.
//
// Thread safety: every method may be called from any thread.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "dfw/controller/etcd_store.h"
#include "etcd/etcdserver/etcdserverpb/rpc.grpc.pb.h"

namespace dfw::controller {

class EtcdClient {
 public:
  static absl::StatusOr<std::unique_ptr<EtcdClient>> Create(const EtcdOptions& options);

  // Idempotent calls, retried on another endpoint while the deadline allows.
  absl::Status Range(const etcdserverpb::RangeRequest& req, etcdserverpb::RangeResponse* resp);
  absl::Status LeaseGrant(const etcdserverpb::LeaseGrantRequest& req,
                          etcdserverpb::LeaseGrantResponse* resp);
  absl::Status LeaseRevoke(int64_t lease);
  // One attempt: the caller decides whether a failed transaction applied.
  absl::Status Txn(const etcdserverpb::TxnRequest& req, etcdserverpb::TxnResponse* resp);
  // One lease keep-alive round trip on the current endpoint; the lease's
  // remaining TTL (0 when etcd no longer knows it).
  absl::StatusOr<int64_t> KeepAliveOnce(int64_t lease, std::chrono::milliseconds deadline);

  // A watch stream on the current endpoint; `rotate` first moves to the
  // next endpoint (after a stream broke).
  std::unique_ptr<grpc::ClientReaderWriter<etcdserverpb::WatchRequest, etcdserverpb::WatchResponse>>
  Watch(grpc::ClientContext* ctx, bool rotate, std::string* address);

  const std::string& endpoint() const;
  std::chrono::milliseconds timeout() const { return options_.timeout; }

 private:
  struct Endpoint {
    std::string address;
    std::shared_ptr<grpc::Channel> channel;
    std::unique_ptr<etcdserverpb::KV::Stub> kv;
    std::unique_ptr<etcdserverpb::Lease::Stub> lease;
    std::unique_ptr<etcdserverpb::Watch::Stub> watch;
  };
  explicit EtcdClient(const EtcdOptions& options) : options_(options) {}
  absl::Status Retry(const char* what,
                     const std::function<grpc::Status(Endpoint&, grpc::ClientContext*)>& call);

  const EtcdOptions options_;
  std::vector<Endpoint> endpoints_;
  std::atomic<size_t> current_{0};
};

// A gRPC status from etcd as an absl one, prefixed with what was called.
absl::Status FromGrpc(const grpc::Status& s, const std::string& what);

}  // namespace dfw::controller
