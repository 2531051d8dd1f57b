#include "dfw/controller/etcd_store.h"

#include <spdlog/spdlog.h>

#include <fstream>
#include <sstream>
#include <string_view>
#include <thread>

#include "absl/container/flat_hash_map.h"

#include "dfw/trust/loopback.h"
#include "etcd_client.h"
#include "store_keys.h"
#include "str_util.h"

namespace dfw::controller {

using store_keys::AppendBe;
using store_keys::Key;
using store_keys::kNextRuleNumKey;
using store_keys::kRevisionKey;
using store_keys::LogKey;
using store_keys::ReadBe;

namespace {

constexpr size_t kPage = 1000;  // keys per Range page

// The end of the range of keys starting with `prefix` (etcd's range_end).
std::string PrefixEnd(std::string prefix) {
  while (!prefix.empty()) {
    auto& c = reinterpret_cast<unsigned char&>(prefix.back());
    if (c < 0xff) {
      ++c;
      return prefix;
    }
    prefix.pop_back();
  }
  return std::string(1, '\0');  // every key
}

absl::StatusOr<std::string> ReadFile(const std::string& path, const char* what) {
  std::ifstream f(path);
  if (!f) return absl::InvalidArgumentError(Cat("etcd: ", what, ": cannot read ", path));
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

bool Transient(const grpc::Status& s) {
  return s.error_code() == grpc::StatusCode::UNAVAILABLE ||
         s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
}

}  // namespace

absl::Status FromGrpc(const grpc::Status& s, const std::string& what) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      Cat("etcd: ", what, ": ", s.error_message()));
}

// ---- EtcdClient ----

absl::StatusOr<std::unique_ptr<EtcdClient>> EtcdClient::Create(const EtcdOptions& o) {
  if (o.endpoints.empty()) return absl::InvalidArgumentError("etcd endpoints: none given");
  std::unique_ptr<EtcdClient> c(new EtcdClient(o));
  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (o.ca_file.empty()) {
    for (const auto& ep : o.endpoints) {
      if (!trust::IsLoopbackHostPort(ep)) {
        return absl::InvalidArgumentError(
            Cat("etcd: endpoint '", ep,
                "' is not a loopback address: plaintext to etcd is for loopback only; give "
                "etcd's CA (--etcd-ca) and a client certificate (--etcd-cert, --etcd-key)"));
      }
    }
    spdlog::warn("etcd: plaintext to {} (loopback only)", Join(o.endpoints, ","));
    creds = grpc::InsecureChannelCredentials();
  } else {
    grpc::SslCredentialsOptions ssl;
    auto ca = ReadFile(o.ca_file, "--etcd-ca");
    if (!ca.ok()) return ca.status();
    ssl.pem_root_certs = *ca;
    if (!o.cert_file.empty() || !o.key_file.empty()) {
      auto cert = ReadFile(o.cert_file, "--etcd-cert");
      if (!cert.ok()) return cert.status();
      auto key = ReadFile(o.key_file, "--etcd-key");
      if (!key.ok()) return key.status();
      ssl.pem_cert_chain = *cert;
      ssl.pem_private_key = *key;
    }
    creds = grpc::SslCredentials(ssl);
  }
  for (const auto& ep : o.endpoints) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(-1);
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
    Endpoint e;
    e.address = ep;
    e.channel = grpc::CreateCustomChannel(ep, creds, args);
    e.kv = etcdserverpb::KV::NewStub(e.channel);
    e.lease = etcdserverpb::Lease::NewStub(e.channel);
    e.watch = etcdserverpb::Watch::NewStub(e.channel);
    c->endpoints_.push_back(std::move(e));
  }
  return c;
}

const std::string& EtcdClient::endpoint() const {
  return endpoints_[current_.load() % endpoints_.size()].address;
}

absl::Status EtcdClient::Retry(
    const char* what, const std::function<grpc::Status(Endpoint&, grpc::ClientContext*)>& call) {
  auto deadline = std::chrono::system_clock::now() + options_.timeout;
  grpc::Status last;
  for (int attempt = 0;; ++attempt) {
    size_t seen = current_.load();
    size_t i = seen % endpoints_.size();
    grpc::ClientContext ctx;
    // One endpoint may take at most a third of the call's time, so a hung
    // member leaves time for the others.
    ctx.set_deadline(std::min(deadline, std::chrono::system_clock::now() + options_.timeout / 3));
    last = call(endpoints_[i], &ctx);
    if (last.ok() || !Transient(last)) break;
    if (std::chrono::system_clock::now() + std::chrono::milliseconds(50) >= deadline) break;
    current_.compare_exchange_strong(seen, seen + 1);  // next endpoint
    std::this_thread::sleep_for(std::chrono::milliseconds(attempt < 4 ? 20 : 100));
  }
  return FromGrpc(last, Cat(what, " (", endpoint(), ")"));
}

absl::Status EtcdClient::Range(const etcdserverpb::RangeRequest& req,
                               etcdserverpb::RangeResponse* resp) {
  return Retry("range",
               [&](Endpoint& e, grpc::ClientContext* ctx) { return e.kv->Range(ctx, req, resp); });
}

absl::Status EtcdClient::LeaseGrant(const etcdserverpb::LeaseGrantRequest& req,
                                    etcdserverpb::LeaseGrantResponse* resp) {
  return Retry("lease grant", [&](Endpoint& e, grpc::ClientContext* ctx) {
    return e.lease->LeaseGrant(ctx, req, resp);
  });
}

absl::Status EtcdClient::LeaseRevoke(int64_t lease) {
  etcdserverpb::LeaseRevokeRequest req;
  req.set_id(lease);
  etcdserverpb::LeaseRevokeResponse resp;
  return Retry("lease revoke", [&](Endpoint& e, grpc::ClientContext* ctx) {
    return e.lease->LeaseRevoke(ctx, req, &resp);
  });
}

absl::Status EtcdClient::Txn(const etcdserverpb::TxnRequest& req, etcdserverpb::TxnResponse* resp) {
  size_t seen = current_.load();
  size_t i = seen % endpoints_.size();
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + options_.timeout / 3);
  grpc::Status s = endpoints_[i].kv->Txn(&ctx, req, resp);
  if (Transient(s)) current_.compare_exchange_strong(seen, seen + 1);
  return FromGrpc(s, Cat("txn (", endpoints_[i].address, ")"));
}

std::unique_ptr<grpc::ClientReaderWriter<etcdserverpb::WatchRequest, etcdserverpb::WatchResponse>>
EtcdClient::Watch(grpc::ClientContext* ctx, bool rotate, std::string* address) {
  size_t seen = current_.load();
  if (rotate) {
    current_.compare_exchange_strong(seen, seen + 1);
    seen = current_.load();
  }
  Endpoint& e = endpoints_[seen % endpoints_.size()];
  *address = e.address;
  return e.watch->Watch(ctx);
}

absl::StatusOr<int64_t> EtcdClient::KeepAliveOnce(int64_t lease,
                                                  std::chrono::milliseconds deadline) {
  size_t seen = current_.load();
  size_t i = seen % endpoints_.size();
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + deadline);
  auto stream = endpoints_[i].lease->LeaseKeepAlive(&ctx);
  etcdserverpb::LeaseKeepAliveRequest req;
  req.set_id(lease);
  etcdserverpb::LeaseKeepAliveResponse resp;
  bool ok = stream->Write(req) && stream->Read(&resp);
  stream->WritesDone();
  grpc::Status s = stream->Finish();
  if (!ok) {
    if (s.ok()) s = grpc::Status(grpc::StatusCode::UNAVAILABLE, "keep-alive stream closed");
    current_.compare_exchange_strong(seen, seen + 1);
    return FromGrpc(s, Cat("lease keep-alive (", endpoints_[i].address, ")"));
  }
  return resp.ttl();
}

// ---- EtcdStore ----

EtcdStore::EtcdStore(const EtcdOptions& options) : options_(options) {}
EtcdStore::~EtcdStore() = default;

absl::StatusOr<std::unique_ptr<EtcdStore>> EtcdStore::Open(const EtcdOptions& options) {
  if (options.prefix.empty() || options.prefix.back() != '/') {
    return absl::InvalidArgumentError(Cat("etcd prefix: '", options.prefix, "' must end with '/'"));
  }
  std::unique_ptr<EtcdStore> st(new EtcdStore(options));
  auto client = EtcdClient::Create(options);
  if (!client.ok()) return client.status();
  st->client_ = std::move(*client);
  // Reachable, and the prefix readable, before the controller goes on.
  etcdserverpb::RangeRequest req;
  req.set_key(options.prefix + kRevisionKey);
  etcdserverpb::RangeResponse resp;
  if (auto s = st->client_->Range(req, &resp); !s.ok()) return s;
  return st;
}

std::string EtcdStore::Describe() const {
  return Cat("etcd ", Join(options_.endpoints, ","), " prefix ", options_.prefix);
}

void EtcdStore::SetLeaderGuard(const std::string& key, int64_t create_revision) {
  guard_key_ = key;
  guard_create_revision_ = create_revision;
}

absl::StatusOr<std::vector<std::pair<std::string, std::string>>> EtcdStore::RangePrefix(
    const std::string& prefix, const std::string& from, size_t limit, int64_t* revision) const {
  std::vector<std::pair<std::string, std::string>> out;
  const std::string full = options_.prefix + prefix;
  std::string key = options_.prefix + (from.empty() ? prefix : from);
  const std::string end = PrefixEnd(full);
  while (out.size() < limit) {
    etcdserverpb::RangeRequest req;
    req.set_key(key);
    req.set_range_end(end);
    req.set_limit(static_cast<int64_t>(std::min(kPage, limit - out.size())));
    if (revision && *revision != 0) req.set_revision(*revision);
    etcdserverpb::RangeResponse resp;
    if (auto s = client_->Range(req, &resp); !s.ok()) return s;
    if (revision && *revision == 0) *revision = resp.header().revision();
    for (const auto& kv : resp.kvs()) {
      out.emplace_back(kv.key().substr(options_.prefix.size()), kv.value());
    }
    if (!resp.more() || resp.kvs().empty()) break;
    key = resp.kvs(resp.kvs_size() - 1).key();
    key.push_back('\0');
  }
  return out;
}

absl::StatusOr<StoredState> EtcdStore::Load() const {
  StoredState st;
  int64_t at = 0;  // every page at the etcd revision of the first
  auto meta = RangePrefix("m/", "", SIZE_MAX, &at);
  if (!meta.ok()) return meta.status();
  for (const auto& [k, v] : *meta) {
    if (k == kRevisionKey && v.size() == 8) st.revision = ReadBe(v.data(), 8);
    if (k == kNextRuleNumKey && v.size() == 4) {
      st.next_rule_num = static_cast<uint32_t>(ReadBe(v.data(), 4));
    }
  }
  auto parse_all = [&](char prefix, auto* out) -> absl::Status {
    auto kvs = RangePrefix(std::string(1, prefix) + "/", "", SIZE_MAX, &at);
    if (!kvs.ok()) return kvs.status();
    for (const auto& [k, v] : *kvs) {
      typename std::remove_reference_t<decltype(*out)>::value_type m;
      if (!m.ParseFromString(v)) {
        return absl::DataLossError(Cat("store: cannot parse ", options_.prefix, k));
      }
      out->push_back(std::move(m));
    }
    return absl::OkStatus();
  };
  if (auto e = parse_all('v', &st.vms); !e.ok()) return e;
  if (auto e = parse_all('g', &st.groups); !e.ok()) return e;
  if (auto e = parse_all('p', &st.policies); !e.ok()) return e;
  if (auto e = parse_all('h', &st.hosts); !e.ok()) return e;
  if (auto e = parse_all('x', &st.exclusions); !e.ok()) return e;
  auto nums = RangePrefix("n/", "", SIZE_MAX, &at);
  if (!nums.ok()) return nums.status();
  st.backend_revision = at;
  for (const auto& [key, v] : *nums) {
    std::string k = key.substr(2);
    size_t z = k.find('\0');
    if (z == std::string::npos || v.size() != 4) continue;
    st.rule_nums.push_back(
        {k.substr(0, z), k.substr(z + 1), static_cast<uint32_t>(ReadBe(v.data(), 4))});
  }
  return st;
}

absl::Status EtcdStore::Commit(const ChangeSet& change) {
  const uint64_t rev = change.revision();
  etcdserverpb::TxnRequest txn;
  const std::string rev_key = options_.prefix + kRevisionKey;
  {
    auto* c = txn.add_compare();
    c->set_key(rev_key);
    if (rev <= 1) {  // the first change: no revision stored yet
      c->set_target(etcdserverpb::Compare::CREATE);
      c->set_result(etcdserverpb::Compare::EQUAL);
      c->set_create_revision(0);
    } else {
      std::string prev;
      AppendBe(&prev, rev - 1, 8);
      c->set_target(etcdserverpb::Compare::VALUE);
      c->set_result(etcdserverpb::Compare::EQUAL);
      c->set_value(prev);
    }
  }
  if (!guard_key_.empty()) {
    auto* c = txn.add_compare();
    c->set_key(guard_key_);
    c->set_target(etcdserverpb::Compare::CREATE);
    c->set_result(etcdserverpb::Compare::EQUAL);
    c->set_create_revision(guard_create_revision_);
  }
  auto put = [&](std::string key, std::string value) {
    auto* p = txn.add_success()->mutable_request_put();
    p->set_key(options_.prefix + key);
    p->set_value(std::move(value));
  };
  // etcd refuses a key twice in one transaction; the change's last write
  // of a key is its outcome, as in a RocksDB batch.
  absl::flat_hash_map<std::string_view, size_t> last_write;
  for (size_t i = 0; i < change.ops().size(); ++i) last_write[change.ops()[i].key] = i;
  for (size_t i = 0; i < change.ops().size(); ++i) {
    const auto& op = change.ops()[i];
    if (last_write[op.key] != i) continue;
    if (op.del) {
      txn.add_success()->mutable_request_delete_range()->set_key(options_.prefix + op.key);
    } else {
      put(op.key, op.value);
    }
  }
  uint32_t seq = 0;
  std::string first_event;
  for (const auto& e : change.events()) {
    std::string v = e.SerializeAsString();
    if (seq == 0) first_event = v;
    put(LogKey(rev, seq++), std::move(v));
  }
  std::string rv;
  AppendBe(&rv, rev, 8);
  put(kRevisionKey, rv);
  if (change.next_rule_num() != 0) {
    std::string n;
    AppendBe(&n, change.next_rule_num(), 4);
    put(kNextRuleNumKey, n);
  }
  if (rev > kLogKeep && rev % 1024 == 0) {
    auto* d = txn.add_success()->mutable_request_delete_range();
    d->set_key(options_.prefix + LogKey(0, 0));
    d->set_range_end(options_.prefix + LogKey(rev - kLogKeep, 0));
  }
  if (static_cast<size_t>(txn.success_size()) > options_.max_txn_ops) {
    return absl::ResourceExhaustedError(
        Cat("store: this change is ", txn.success_size(), " etcd operations, above etcd's ",
            options_.max_txn_ops,
            " per transaction (etcd --max-txn-ops, the controller's --etcd-max-txn-ops); "
            "nothing of it is applied. Raise both, or make the change smaller"));
  }
  if (txn.ByteSizeLong() > options_.max_request_bytes) {
    return absl::ResourceExhaustedError(
        Cat("store: this change is ", txn.ByteSizeLong(), " bytes, above etcd's request limit of ",
            options_.max_request_bytes,
            " (etcd --max-request-bytes, the controller's --etcd-max-request-bytes); nothing of "
            "it is applied. Raise both, or make the change smaller"));
  }
  auto deadline = std::chrono::steady_clock::now() + options_.timeout;
  absl::Status last;
  for (int attempt = 0;; ++attempt) {
    etcdserverpb::TxnResponse resp;
    last = client_->Txn(txn, &resp);
    if (last.ok() && resp.succeeded()) return absl::OkStatus();
    if (!last.ok() && !absl::IsUnavailable(last) && !absl::IsDeadlineExceeded(last)) {
      return last;  // refused by etcd (too large, no space, ...): not applied
    }
    // Refused by a compare, or the outcome is unknown: read back.
    etcdserverpb::RangeRequest rr;
    rr.set_key(rev_key);
    etcdserverpb::RangeResponse now;
    absl::Status rs = client_->Range(rr, &now);
    if (rs.ok()) {
      uint64_t stored = now.kvs_size() == 1 && now.kvs(0).value().size() == 8
                            ? ReadBe(now.kvs(0).value().data(), 8)
                            : 0;
      if (stored == rev) {
        // Ours if its first log entry is ours (an earlier attempt applied).
        etcdserverpb::RangeRequest lr;
        lr.set_key(options_.prefix + LogKey(rev, 0));
        etcdserverpb::RangeResponse log;
        if (auto ls = client_->Range(lr, &log); !ls.ok()) return ls;
        bool ours = change.events().empty()
                        ? !last.ok()
                        : log.kvs_size() == 1 && log.kvs(0).value() == first_event;
        if (ours) return absl::OkStatus();
      }
      if (!guard_key_.empty()) {
        etcdserverpb::RangeRequest gr;
        gr.set_key(guard_key_);
        etcdserverpb::RangeResponse g;
        if (auto gs = client_->Range(gr, &g); !gs.ok()) return gs;
        if (g.kvs_size() != 1 || g.kvs(0).create_revision() != guard_create_revision_) {
          return absl::FailedPreconditionError(
              "store: this controller is no longer the leader (its etcd lease expired or "
              "another controller was elected); the change is not applied");
        }
      }
      if (last.ok()) {
        return absl::AbortedError(Cat("store: revision ", rev, " expected the store at ", rev - 1,
                                      ", it is at ", stored,
                                      ": another controller writes this prefix; the change is "
                                      "not applied"));
      }
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      return absl::UnavailableError(Cat("store: etcd did not confirm revision ", rev, " in ",
                                        options_.timeout.count(), " ms (", last.message(),
                                        "); it is not acknowledged"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(attempt < 4 ? 20 : 100));
  }
}

absl::Status EtcdStore::Get(Kind kind, const std::string& id,
                            google::protobuf::Message* out) const {
  etcdserverpb::RangeRequest req;
  req.set_key(options_.prefix + Key(kind, id));
  etcdserverpb::RangeResponse resp;
  if (auto s = client_->Range(req, &resp); !s.ok()) return s;
  if (resp.kvs_size() == 0) return absl::NotFoundError(Cat("store: no ", Key(kind, id)));
  if (!out->ParseFromString(resp.kvs(0).value())) {
    return absl::DataLossError(Cat("store: cannot parse ", Key(kind, id)));
  }
  return absl::OkStatus();
}

absl::Status EtcdStore::ForEach(
    Kind kind, const std::function<absl::Status(const std::string& value)>& fn) const {
  std::string p(1, static_cast<char>(kind));
  p.push_back('/');
  int64_t at = 0;
  auto kvs = RangePrefix(p, "", SIZE_MAX, &at);
  if (!kvs.ok()) return kvs.status();
  for (const auto& [k, v] : *kvs) {
    if (auto s = fn(v); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<dfw::v1::ChangeEvent>> EtcdStore::ChangesSince(uint64_t from_revision,
                                                                          size_t limit) const {
  int64_t at = 0;
  auto oldest = RangePrefix("l/", "", 1, &at);
  if (!oldest.ok()) return oldest.status();
  if (!oldest->empty() && (*oldest)[0].first.size() == 14) {
    uint64_t first = ReadBe((*oldest)[0].first.data() + 2, 8);
    if (from_revision + 1 < first && from_revision != 0) {
      return absl::FailedPreconditionError(Cat("from_revision: ", from_revision,
                                               " is older than the retained change log (oldest ",
                                               first, "); list the objects again"));
    }
  }
  auto kvs = RangePrefix("l/", LogKey(from_revision + 1, 0), limit, &at);
  if (!kvs.ok()) return kvs.status();
  std::vector<dfw::v1::ChangeEvent> out;
  for (const auto& [k, v] : *kvs) {
    dfw::v1::ChangeEvent e;
    if (!e.ParseFromString(v)) return absl::DataLossError("store: cannot parse a change log entry");
    out.push_back(std::move(e));
  }
  return out;
}

absl::StatusOr<uint64_t> EtcdStore::Revision() const {
  etcdserverpb::RangeRequest req;
  req.set_key(options_.prefix + kRevisionKey);
  etcdserverpb::RangeResponse resp;
  if (auto s = client_->Range(req, &resp); !s.ok()) return s;
  if (resp.kvs_size() == 0) return 0;
  const std::string& v = resp.kvs(0).value();
  if (v.size() != 8) return absl::DataLossError(Cat("store: ", options_.prefix, kRevisionKey));
  return ReadBe(v.data(), 8);
}

void EtcdStore::StopFollowing() {
  std::lock_guard l(follow_mu_);
  follow_stopped_ = true;
  if (follow_ctx_ != nullptr) follow_ctx_->TryCancel();
}

absl::Status EtcdStore::Follow(int64_t after, const std::function<bool(StoredChange)>& fn) {
  const std::string end = PrefixEnd(options_.prefix);
  bool rotate = false;
  for (int failures = 0;; rotate = true) {
    grpc::ClientContext ctx;
    // etcd's WithRequireLeader: a member cut off from its cluster's leader
    // ends the watch (instead of staying silent), so it moves on.
    ctx.AddMetadata("hasleader", "true");
    {
      std::lock_guard l(follow_mu_);
      if (follow_stopped_) return absl::OkStatus();
      follow_ctx_ = &ctx;
    }
    std::string address;
    auto stream = client_->Watch(&ctx, rotate, &address);
    etcdserverpb::WatchRequest req;
    auto* create = req.mutable_create_request();
    create->set_key(options_.prefix);
    create->set_range_end(end);
    create->set_start_revision(after + 1);
    absl::Status result = absl::OkStatus();
    bool done = false;
    etcdserverpb::WatchResponse resp;
    if (stream->Write(req)) {
      while (!done && stream->Read(&resp)) {
        if (resp.compact_revision() > 0) {
          result = absl::FailedPreconditionError(Cat("etcd: watch: history compacted to revision ",
                                                     resp.compact_revision(), " past ", after, " (",
                                                     address, "); load the store again"));
          done = true;
          break;
        }
        if (resp.canceled()) break;  // another endpoint, from `after`
        failures = 0;
        const auto& evs = resp.events();
        for (int i = 0; i < evs.size() && !done;) {
          StoredChange c;
          c.backend_revision = evs[i].kv().mod_revision();
          for (; i < evs.size() && evs[i].kv().mod_revision() == c.backend_revision; ++i) {
            const auto& kv = evs[i].kv();
            std::string key = kv.key().substr(options_.prefix.size());
            if (key.starts_with("l/")) continue;
            bool del = evs[i].type() == mvccpb::Event::DELETE;
            if (key == kRevisionKey && !del && kv.value().size() == 8) {
              c.revision = ReadBe(kv.value().data(), 8);
            }
            c.ops.push_back({std::move(key), del, del ? std::string() : kv.value()});
          }
          after = c.backend_revision;
          if (c.revision != 0 && !fn(std::move(c))) done = true;
        }
      }
    }
    {
      std::lock_guard l(follow_mu_);
      follow_ctx_ = nullptr;
      if (follow_stopped_) done = true;
    }
    if (done) {
      ctx.TryCancel();
      (void)stream->Finish();
      return result;
    }
    grpc::Status st = stream->Finish();
    spdlog::warn("etcd: watch on {} ended ({}); following again from revision {}", address,
                 st.ok() ? std::string("closed") : st.error_message(), after + 1);
    std::this_thread::sleep_for(
        std::chrono::milliseconds(std::min(1000, 50 << std::min(failures++, 4))));
  }
}

}  // namespace dfw::controller
