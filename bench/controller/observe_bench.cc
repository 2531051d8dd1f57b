// Observe benchmark (dfwctl observe, issue 16): flow records produced across
// hosts at a target rate, relayed through the controller, read by observers.
//
//   bench_observe [--hosts 10] [--vms-per-host 100] [--seconds 5]
//                 [--rates 100000,300000,1000000] [--batch 2048] [--no-unfiltered]
//
// A controller in this process (plaintext on loopback, RocksDB in a temp
// dir) serves --hosts host sessions over real gRPC streams, each with its
// VMs (one vNIC each) registered by Hello. Two observers read over real HTTP
// with the cursor long-poll dfwctl observe uses (GET /api/v1/flows, limit
// 10000, wait_ms 1000): one unfiltered (not with --no-unfiltered), one with
// --verdict denied (1 record in 100 is a denial). Once the hosts were asked to send (FlowWatch),
// each host thread sends FlowBatch messages of --batch records, paced so that all hosts together
// produce the target rate, for --seconds.
//
// Reported per rate: records produced; records the controller took
// (dfw_controller_flow_records_total); per observer, records delivered,
// records missed (they left the controller's ring of 32k before the observer
// read them) and records it never saw; the rate the hosts really achieved
// (when the controller cannot take the rate, gRPC flow control slows the
// senders: "achieved" falls below "target"). What the host agent's relay
// and the dataplane's buffer add is not in this figure (flow_relay.h).
#include <grpcpp/grpcpp.h>
#include <httplib.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "dfw/controller/controller_server.h"
#include "dfw/v1/host.grpc.pb.h"

namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

struct Options {
  int hosts = 10;
  int vms_per_host = 100;
  int seconds = 5;
  std::vector<uint64_t> rates = {100000, 300000, 1000000};
  int batch = 2048;
  bool unfiltered = true;  // --no-unfiltered: only the denied observer reads
};

class Host {
 public:
  Host(int port, int index, int vms) : id_("h" + std::to_string(index)) {
    auto ch = grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                                  grpc::InsecureChannelCredentials());
    stub_ = dfw::v1::HostSessionService::NewStub(ch);
    stream_ = stub_->Session(&ctx_);
    dfw::v1::HostToController hello;
    hello.mutable_hello()->mutable_host()->set_id(id_);
    for (int v = 0; v < vms; ++v) {
      auto* vm = hello.mutable_hello()->add_vms();
      vm->set_id(id_ + "-vm" + std::to_string(v));
      vm->set_name(vm->id());
      auto* t = vm->add_tags();
      t->set_scope("app");
      t->set_value(v % 2 ? "web" : "db");
      auto* n = vm->add_vnics();
      n->set_id(vm->id() + "-nic0");
      n->set_mac("52:54:00:00:00:01");
      n->add_addresses()->set_ip("198.18." + std::to_string(index) + "." + std::to_string(v % 250));
      vnics_.push_back(n->id());
    }
    stream_->Write(hello);
    reader_ = std::thread([this] {
      dfw::v1::ControllerToHost m;
      while (stream_->Read(&m)) {
        dfw::v1::HostToController ack;
        if (m.has_full()) ack.mutable_ack()->set_revision(m.full().revision());
        if (m.has_delta()) ack.mutable_ack()->set_revision(m.delta().to_revision());
        if (ack.has_ack()) {
          ack.mutable_ack()->set_ok(true);
          std::lock_guard<std::mutex> l(write_mu_);
          stream_->Write(ack);
        }
        if (m.has_flow_watch()) watching_ = m.flow_watch().enabled();
      }
    });
  }
  ~Host() {
    {
      std::lock_guard<std::mutex> l(write_mu_);
      stream_->WritesDone();
    }
    ctx_.TryCancel();
    reader_.join();
  }
  bool watching() const { return watching_; }
  // Sends `n` records in batches of `batch`; records 1 in 100 denied.
  void Send(uint64_t n, int batch, uint64_t* seq) {
    dfw::v1::HostToController m;
    auto* b = m.mutable_flows();
    for (uint64_t i = 0; i < n; ++i) {
      auto* r = b->add_records();
      const uint64_t s = ++*seq;
      r->set_seq(s);
      r->set_kind(s % 100 == 0 ? dfw::v1::FlowRecord::KIND_DENIED
                               : dfw::v1::FlowRecord::KIND_ALLOWED);
      r->set_vnic_id(vnics_[s % vnics_.size()]);
      r->set_direction(dfw::v1::DIRECTION_OUT);
      r->set_protocol(6);
      r->set_src("198.18.0.1:" + std::to_string(1024 + s % 60000));
      r->set_dst("198.18.1.1:5432");
      r->set_policy_id("web-to-db");
      r->set_rule_id("allow-pg");
      r->set_time_ns(s);
      if (b->records_size() == batch || i + 1 == n) {
        std::lock_guard<std::mutex> l(write_mu_);
        stream_->Write(m);
        b->Clear();
      }
    }
  }

 private:
  std::string id_;
  grpc::ClientContext ctx_;
  std::unique_ptr<dfw::v1::HostSessionService::Stub> stub_;
  std::unique_ptr<grpc::ClientReaderWriter<dfw::v1::HostToController, dfw::v1::ControllerToHost>>
      stream_;
  std::mutex write_mu_;
  std::thread reader_;
  std::atomic<bool> watching_{false};
  std::vector<std::string> vnics_;
};

struct ObserverResult {
  uint64_t delivered = 0, missed = 0;
};

// Long-polls until `stop`, then drains what is left.
void Observe(int port, const std::string& filter, std::atomic<bool>* stop, uint64_t* cursor,
             ObserverResult* out) {
  httplib::Client cli("127.0.0.1", port);
  cli.set_read_timeout(30, 0);
  for (int idle = 0; idle < 2;) {
    auto r = cli.Get(
        ("/api/v1/flows?limit=10000&wait_ms=1000&cursor=" + std::to_string(*cursor) + filter)
            .c_str());
    if (!r || r->status != 200) {
      std::fprintf(stderr, "observe: %s\n", r ? r->body.c_str() : "no answer");
      return;
    }
    json b = json::parse(r->body);
    *cursor = std::stoull(b.value("cursor", std::string("0")));
    out->missed += std::stoull(b.value("missed", std::string("0")));
    const size_t n = b.value("flows", json::array()).size();
    out->delivered += n;
    if (stop->load()) idle += n == 0;  // drained: twice nothing
  }
}

uint64_t Metric(int port, const std::string& name) {
  httplib::Client cli("127.0.0.1", port);
  auto r = cli.Get("/metrics");
  if (!r) return 0;
  size_t at = r->body.find("\n" + name + " ");
  if (at == std::string::npos) return 0;
  return static_cast<uint64_t>(std::stod(r->body.substr(at + name.size() + 2)));
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; i += 2) {
    std::string a = argv[i], v = i + 1 < argc ? argv[i + 1] : "";
    if (a == "--no-unfiltered") {
      o.unfiltered = false;
      --i;
    } else if (a == "--hosts") {
      o.hosts = std::stoi(v);
    } else if (a == "--vms-per-host") {
      o.vms_per_host = std::stoi(v);
    } else if (a == "--seconds") {
      o.seconds = std::stoi(v);
    } else if (a == "--batch") {
      o.batch = std::stoi(v);
    } else if (a == "--rates") {
      o.rates.clear();
      for (size_t p = 0; p < v.size();) {
        size_t c = v.find(',', p);
        o.rates.push_back(std::stoull(v.substr(p, c - p)));
        p = c == std::string::npos ? v.size() : c + 1;
      }
    } else {
      std::fprintf(stderr, "bench_observe: unknown option %s\n", a.c_str());
      return 2;
    }
  }
  const std::string dir =
      std::filesystem::temp_directory_path() / ("dfw-observe-bench-" + std::to_string(getpid()));
  dfw::controller::ControllerOptions co;
  co.data_dir = dir + "/db";
  co.insecure = true;
  dfw::controller::ControllerServer server;
  if (auto s = server.Start(co); !s.ok()) {
    std::fprintf(stderr, "bench_observe: controller: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  std::vector<std::unique_ptr<Host>> hosts;
  for (int h = 0; h < o.hosts; ++h) {
    hosts.push_back(std::make_unique<Host>(server.grpc_port(), h, o.vms_per_host));
  }
  std::printf("observe bench: %d hosts x %d VMs, %d s per rate, batches of %d records\n", o.hosts,
              o.vms_per_host, o.seconds, o.batch);
  std::printf("%10s %10s %11s %11s | %11s %9s %9s | %9s %9s\n", "target/s", "achieved/s",
              "produced", "controller", "all: deliv", "missed", "unseen", "denied", "missed");
  uint64_t all_cursor = 0, denied_cursor = 0;
  std::vector<uint64_t> seqs(hosts.size(), 0);
  for (uint64_t rate : o.rates) {
    std::atomic<bool> stop{false};
    ObserverResult all, denied;
    const uint64_t taken0 = Metric(server.http_port(), "dfw_controller_flow_records_total");
    std::thread reader_all;
    if (o.unfiltered) {
      reader_all = std::thread(Observe, server.http_port(), "", &stop, &all_cursor, &all);
    }
    std::thread reader_denied(Observe, server.http_port(), "&verdict=denied", &stop, &denied_cursor,
                              &denied);
    for (int i = 0; i < 500; ++i) {  // the hosts were asked to send
      bool every = true;
      for (auto& h : hosts) every = every && h->watching();
      if (every) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    const auto t0 = Clock::now();
    std::vector<std::thread> senders;
    const uint64_t per_host = rate * static_cast<uint64_t>(o.seconds) / hosts.size();
    for (size_t h = 0; h < hosts.size(); ++h) {
      senders.emplace_back([&, h] {
        // Paced in slices of 10 ms.
        const uint64_t slices = static_cast<uint64_t>(o.seconds) * 100;
        uint64_t sent = 0;
        for (uint64_t s = 1; s <= slices; ++s) {
          const uint64_t due = per_host * s / slices;
          if (due > sent) hosts[h]->Send(due - sent, o.batch, &seqs[h]);
          sent = due;
          std::this_thread::sleep_until(t0 + std::chrono::milliseconds(10 * s));
        }
      });
    }
    for (auto& t : senders) t.join();
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    const uint64_t produced = per_host * hosts.size();
    // What the controller took once the streams are drained.
    uint64_t taken = 0;
    for (int i = 0; i < 300; ++i) {
      taken = Metric(server.http_port(), "dfw_controller_flow_records_total") - taken0;
      if (taken >= produced) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    stop = true;
    if (reader_all.joinable()) reader_all.join();
    reader_denied.join();
    const uint64_t denied_produced = produced / 100;
    std::printf("%10llu %10.0f %11llu %11llu | %11llu %9llu %9lld | %9llu %9llu\n",
                static_cast<unsigned long long>(rate), static_cast<double>(produced) / secs,
                static_cast<unsigned long long>(produced), static_cast<unsigned long long>(taken),
                static_cast<unsigned long long>(all.delivered),
                static_cast<unsigned long long>(all.missed),
                static_cast<long long>(taken) - static_cast<long long>(all.delivered + all.missed),
                static_cast<unsigned long long>(denied.delivered),
                static_cast<unsigned long long>(denied.missed));
    std::printf("%10s denied records produced: ~%llu\n", "",
                static_cast<unsigned long long>(denied_produced));
    std::fflush(stdout);
  }
  hosts.clear();
  server.Stop();
  std::filesystem::remove_all(dir);
  return 0;
}
