// GrpcRequestMetrics: the controller's gRPC calls as GET /metrics shows them
// (dfw_controller_grpc_requests_total{method,code} and, for unary methods,
// dfw_controller_grpc_request_duration_seconds{method}), counted by a
// server interceptor on every service the server registers.
//
// The methods are those of the services given at construction (the label
// set is fixed, so a client cannot grow it): a call to a method outside
// them counts under method="unknown". A call counts when its status is sent
// (the interceptor's PRE_SEND_STATUS), with that status's code; a streaming
// call (the host session, Watch) counts when it ends and has no latency
// series (its duration is the session's, not a request's).
//
// Thread safety: the interceptors run on gRPC's threads; counting is
// relaxed atomics and a histogram observation (no lock). Render may run at
// any time. Must outlive the server it is installed on.
#pragma once

#include <grpcpp/support/server_interceptor.h>

#include <array>
#include <atomic>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "dfw/base/metrics.h"
#include "google/protobuf/descriptor.h"

namespace dfw::controller {

class GrpcRequestMetrics {
 public:
  explicit GrpcRequestMetrics(
      const std::vector<const google::protobuf::ServiceDescriptor*>& services);

  // For grpc::ServerBuilder::experimental().SetInterceptorCreators.
  std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> InterceptorFactory();

  void Render(metrics::Exposition& e) const;

  struct Method {
    Method(std::string n, bool s) : name(std::move(n)), streaming(s) {}
    const std::string name;
    const bool streaming;
    std::array<std::atomic<uint64_t>, 17> by_code{};  // grpc::StatusCode 0..16
    metrics::Histogram seconds{metrics::LatencyBuckets()};
  };
  // The method's entry (the "unknown" one for a method not registered).
  Method* Find(std::string_view full_name);

 private:
  std::deque<Method> methods_;  // fixed after construction
  absl::flat_hash_map<std::string_view, Method*> by_name_;
  Method* unknown_ = nullptr;
};

}  // namespace dfw::controller
