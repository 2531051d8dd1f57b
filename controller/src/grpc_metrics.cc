#include "grpc_metrics.h"

#include <chrono>

#include "absl/status/status.h"
#include "str_util.h"

namespace dfw::controller {

namespace {

using grpc::experimental::InterceptionHookPoints;

// One call: started when gRPC creates it, counted when its status is sent.
class CallInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit CallInterceptor(GrpcRequestMetrics::Method* m)
      : method_(m), start_(std::chrono::steady_clock::now()) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      auto code = static_cast<size_t>(methods->GetSendStatus().error_code());
      if (code >= method_->by_code.size()) code = grpc::StatusCode::UNKNOWN;
      method_->by_code[code].fetch_add(1, std::memory_order_relaxed);
      if (!method_->streaming) {
        method_->seconds.Observe(
            std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count());
      }
    }
    methods->Proceed();
  }

 private:
  GrpcRequestMetrics::Method* method_;
  std::chrono::steady_clock::time_point start_;
};

class Factory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit Factory(GrpcRequestMetrics* m) : m_(m) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new CallInterceptor(m_->Find(info->method() ? info->method() : ""));
  }

 private:
  GrpcRequestMetrics* m_;
};

}  // namespace

GrpcRequestMetrics::GrpcRequestMetrics(
    const std::vector<const google::protobuf::ServiceDescriptor*>& services) {
  for (const auto* s : services) {
    for (int i = 0; i < s->method_count(); ++i) {
      const auto* m = s->method(i);
      Method& e = methods_.emplace_back(Cat("/", s->full_name(), "/", m->name()),
                                        m->client_streaming() || m->server_streaming());
      by_name_[e.name] = &e;
    }
  }
  unknown_ = &methods_.emplace_back("unknown", false);
}

GrpcRequestMetrics::Method* GrpcRequestMetrics::Find(std::string_view full_name) {
  auto it = by_name_.find(full_name);
  return it == by_name_.end() ? unknown_ : it->second;
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
GrpcRequestMetrics::InterceptorFactory() {
  return std::make_unique<Factory>(this);
}

void GrpcRequestMetrics::Render(metrics::Exposition& e) const {
  e.Family("dfw_controller_grpc_requests_total", "counter",
           "gRPC calls answered, by full method name and status code (a stream counts when "
           "it ends).");
  for (const Method& m : methods_) {
    for (size_t c = 0; c < m.by_code.size(); ++c) {
      uint64_t n = m.by_code[c].load(std::memory_order_relaxed);
      if (n == 0) continue;
      e.Sample("dfw_controller_grpc_requests_total",
               {{"method", m.name},
                {"code", absl::StatusCodeToString(static_cast<absl::StatusCode>(c))}},
               static_cast<double>(n));
    }
  }
  e.Family("dfw_controller_grpc_request_duration_seconds", "histogram",
           "Unary gRPC call latency, from the call's creation to its status ready to send, by "
           "full method name.");
  for (const Method& m : methods_) {
    auto snap = m.seconds.Read();
    if (snap.count == 0) continue;
    e.Histogram("dfw_controller_grpc_request_duration_seconds", {{"method", m.name}}, snap);
  }
}

}  // namespace dfw::controller
