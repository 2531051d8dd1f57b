// EtcdLeaderElection (etcd_store.h).
#include <spdlog/spdlog.h>

#include "dfw/controller/etcd_store.h"
#include "etcd_client.h"
#include "str_util.h"

namespace dfw::controller {

namespace {
constexpr auto kPoll = std::chrono::milliseconds(200);  // standby's look at the leader key
}  // namespace

EtcdLeaderElection::EtcdLeaderElection(const EtcdOptions& options, LeaderInfo self,
                                       std::chrono::seconds ttl)
    : options_(options), self_(std::move(self)), ttl_(ttl), key_(options.prefix + "leader") {}

EtcdLeaderElection::~EtcdLeaderElection() { Stop(); }

std::string EtcdLeaderElection::Encode(const LeaderInfo& info) {
  return Cat("name=", info.name, "\ngrpc=", info.grpc, "\nhttp=", info.http, "\n");
}

EtcdLeaderElection::LeaderInfo EtcdLeaderElection::Decode(const std::string& value) {
  LeaderInfo info;
  size_t pos = 0;
  while (pos < value.size()) {
    size_t nl = value.find('\n', pos);
    if (nl == std::string::npos) nl = value.size();
    std::string line = value.substr(pos, nl - pos);
    pos = nl + 1;
    size_t eq = line.find('=');
    if (eq == std::string::npos) continue;
    std::string k = line.substr(0, eq), v = line.substr(eq + 1);
    if (k == "name") info.name = v;
    if (k == "grpc") info.grpc = v;
    if (k == "http") info.http = v;
  }
  return info;
}

absl::Status EtcdLeaderElection::Campaign(
    const std::function<void(const LeaderInfo&)>& on_leader_seen,
    std::function<void(const std::string& why)> on_lost) {
  auto client = EtcdClient::Create(options_);
  if (!client.ok()) return client.status();
  client_ = std::move(*client);
  on_lost_ = std::move(on_lost);
  std::string seen;  // the leader key's value last reported
  auto renewed = std::chrono::steady_clock::now();
  for (;;) {
    {
      std::unique_lock l(mu_);
      if (stop_) return absl::CancelledError("election: stopped");
    }
    if (lease_ == 0) {
      etcdserverpb::LeaseGrantRequest g;
      g.set_ttl(ttl_.count());
      etcdserverpb::LeaseGrantResponse gr;
      if (auto s = client_->LeaseGrant(g, &gr); !s.ok() || !gr.error().empty()) {
        spdlog::warn("election: cannot get an etcd lease: {}",
                     s.ok() ? gr.error() : std::string(s.message()));
        std::unique_lock l(mu_);
        cv_.wait_for(l, kPoll * 5, [&] { return stop_; });
        continue;
      }
      lease_ = gr.id();
      renewed = std::chrono::steady_clock::now();
    } else if (std::chrono::steady_clock::now() - renewed > ttl_ / 3) {
      auto left = client_->KeepAliveOnce(lease_, RoundTrip());
      if (left.ok() && *left > 0) renewed = std::chrono::steady_clock::now();
      if (left.ok() && *left <= 0) lease_ = 0;  // expired while standing by: a new one
      if (lease_ == 0) continue;
    }
    etcdserverpb::TxnRequest txn;
    auto* c = txn.add_compare();
    c->set_key(key_);
    c->set_target(etcdserverpb::Compare::CREATE);
    c->set_result(etcdserverpb::Compare::EQUAL);
    c->set_create_revision(0);
    auto* put = txn.add_success()->mutable_request_put();
    put->set_key(key_);
    put->set_value(Encode(self_));
    put->set_lease(lease_);
    txn.add_failure()->mutable_request_range()->set_key(key_);
    etcdserverpb::TxnResponse resp;
    absl::Status s = client_->Txn(txn, &resp);
    if (s.ok() && resp.succeeded()) {
      create_revision_ = resp.header().revision();
      spdlog::info("election: {} leads (etcd lease {:x}, ttl {} s, key {} at revision {})",
                   self_.name, lease_, ttl_.count(), key_, create_revision_);
      keepalive_ = std::thread([this] { KeepAlive(); });
      return absl::OkStatus();
    }
    if (s.ok() && resp.responses_size() == 1 && resp.responses(0).has_response_range() &&
        resp.responses(0).response_range().kvs_size() == 1) {
      const std::string& v = resp.responses(0).response_range().kvs(0).value();
      if (v != seen) {
        seen = v;
        LeaderInfo leader = Decode(v);
        spdlog::info("election: standing by; {} leads (grpc {}, http {})", leader.name, leader.grpc,
                     leader.http);
        if (on_leader_seen) on_leader_seen(leader);
      }
    } else if (!s.ok()) {
      spdlog::warn("election: {}", std::string(s.message()));
    }
    std::unique_lock l(mu_);
    cv_.wait_for(l, kPoll, [&] { return stop_; });
  }
}

std::chrono::milliseconds EtcdLeaderElection::RoundTrip() const {
  // A keep-alive waits at most a sixth of the TTL, so several endpoints get
  // a try before the lease runs out.
  return std::min(std::chrono::duration_cast<std::chrono::milliseconds>(ttl_) / 6,
                  options_.timeout / 3);
}

void EtcdLeaderElection::KeepAlive() {
  auto renewed = std::chrono::steady_clock::now();
  std::string why;
  bool failed = false;
  for (;;) {
    {
      // Every third of the TTL; after a failure, again soon (another
      // endpoint: the client moved on).
      std::unique_lock l(mu_);
      auto pause = failed ? std::chrono::milliseconds(100)
                          : std::chrono::duration_cast<std::chrono::milliseconds>(ttl_) / 3;
      if (cv_.wait_for(l, pause, [&] { return stop_; })) return;
    }
    auto left = client_->KeepAliveOnce(lease_, RoundTrip());
    failed = !left.ok();
    if (left.ok() && *left > 0) {
      renewed = std::chrono::steady_clock::now();
      continue;
    }
    if (left.ok()) {
      why = "etcd says the lease expired";
      break;
    }
    if (std::chrono::steady_clock::now() - renewed >= ttl_) {
      why = Cat("no keep-alive reached etcd for the lease's ", ttl_.count(),
                " s (last error: ", left.status().message(), ")");
      break;
    }
  }
  spdlog::error("election: {} lost the leadership: {}", self_.name, why);
  if (on_lost_) on_lost_(why);
}

void EtcdLeaderElection::Stop() {
  {
    std::unique_lock l(mu_);
    if (stop_) return;
    stop_ = true;
  }
  cv_.notify_all();
  if (keepalive_.joinable()) keepalive_.join();
  if (client_ && lease_ != 0) {
    if (auto s = client_->LeaseRevoke(lease_); !s.ok()) {
      spdlog::warn("election: cannot revoke lease {:x}: {}", lease_, std::string(s.message()));
    }
  }
}

}  // namespace dfw::controller
