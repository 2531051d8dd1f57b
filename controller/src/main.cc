// dfw-controller: the controller daemon.
//
//   dfw-controller --data-dir DIR [--grpc-listen 127.0.0.1:9090]
//                  [--http-listen 127.0.0.1:8080] [--port-file FILE]
//                  (--pki-dir DIR | --svid-dir DIR [--ca-dir DIR] [--trust-domain TD]
//                   | --insecure) [--cert-refresh-seconds N]
//                  [--http-allowed-host NAME]...   (a DNS name clients use for REST)
//                  [--store-min-free-mb N] [--accept-store-loss] [--metrics-per-host]
//   or, several controllers in high availability on etcd (etcd_store.h):
//   dfw-controller --etcd-endpoints HOST:PORT,... [--etcd-prefix /dfw/]
//                  [--etcd-ca FILE [--etcd-cert FILE --etcd-key FILE]]
//                  [--etcd-max-txn-ops N] [--etcd-max-request-bytes N]
//                  [--name NAME] [--advertise-grpc HOST:PORT] [--advertise-http HOST:PORT]
//                  [--lease-ttl SECONDS] [--cold-standby] ...the listen and TLS flags above
//
// Mutual TLS by default: --pki-dir is what `dfwctl ca init` made (DIR/ca,
// the CA; DIR/controller, the controller's SVID). --insecure (plaintext,
// every caller an admin) is refused unless both addresses are loopback.
//
// Listens on loopback by default (port 0 picks a free port). Prints
//   listening grpc=127.0.0.1:PORT http=127.0.0.1:PORT
// once both are bound (and writes the same line to --port-file), then serves
// until SIGINT or SIGTERM. With etcd the line ends in role=standby: the
// controller answers with where the leader is until it is elected, then
// logs "leads"; it exits (status 3) if it loses the leadership.
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

#include <spdlog/spdlog.h>

#include "dfw/controller/controller_server.h"
#include "dfw/tagging/str_cat.h"

namespace {

void Usage(FILE* out = stderr) {
  std::fprintf(out,
               "usage: dfw-controller --data-dir DIR [--grpc-listen HOST:PORT]\n"
               "                      [--http-listen HOST:PORT] [--port-file FILE]\n"
               "                      (--pki-dir DIR | --svid-dir DIR [--ca-dir DIR]\n"
               "                       [--trust-domain TD] | --insecure)\n"
               "                      [--cert-refresh-seconds N] [--http-allowed-host NAME]...\n"
               "                      [--store-min-free-mb N] [--accept-store-loss]\n"
               "                      [--metrics-per-host]\n"
               "       dfw-controller --etcd-endpoints HOST:PORT,... [--etcd-prefix /dfw/]\n"
               "                      [--etcd-ca FILE [--etcd-cert FILE --etcd-key FILE]]\n"
               "                      [--etcd-max-txn-ops N] [--etcd-max-request-bytes N]\n"
               "                      [--name NAME] [--advertise-grpc HOST:PORT]\n"
               "                      [--advertise-http HOST:PORT] [--lease-ttl SECONDS]\n"
               "                      [--cold-standby] (the listen and TLS flags as above)\n"
               "  --pki-dir DIR   what `dfwctl ca init` made: DIR/ca and DIR/controller\n"
               "  --insecure      plaintext, no authentication: loopback addresses only\n"
               "  --metrics-per-host  GET /metrics adds series per host (one each per host:\n"
               "                  off by default for the cardinality)\n"
               "  --store-min-free-mb N  refuse writes (HTTP 507, gRPC RESOURCE_EXHAUSTED) while\n"
               "                  the data dir's filesystem has less than N MiB available\n"
               "                  (default 64); starting below it opens the store read-only\n"
               "                  until space is freed\n"
               "  --accept-store-loss  start although the store lost acknowledged writes (a\n"
               "                  damaged, cut or deleted write-ahead log), which the controller\n"
               "                  otherwise refuses: runs with what can be read, logs what was\n"
               "                  lost, never reuses a revision. The alternative: restore the\n"
               "                  data dir from a backup (docs/architecture.md, Persistence)\n"
               "  --etcd-endpoints LIST  keep the store in etcd and run as one of several\n"
               "                  controllers: one leads (an etcd lease), the others stand by\n"
               "                  and answer with where the leader is; plaintext to etcd only\n"
               "                  on loopback, else --etcd-ca (and --etcd-cert/--etcd-key)\n"
               "  --etcd-max-txn-ops N  etcd's --max-txn-ops (default 128): a change with more\n"
               "                  writes is refused whole; raise both together\n"
               "  --lease-ttl S   the leader's etcd lease (default 5): how long a dead leader\n"
               "                  holds the leadership before a standby takes over\n"
               "  --cold-standby  a standby loads the store only once elected; by default it\n"
               "                  keeps a warm model (as much memory as the leader's) that\n"
               "                  follows the store, so taking over costs no full load\n");
}

}  // namespace

int main(int argc, char** argv) {
  dfw::controller::ControllerOptions o;
  o.grpc_listen = "127.0.0.1:9090";
  o.http_listen = "127.0.0.1:8080";
  std::string port_file;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "dfw-controller: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--data-dir") {
      o.data_dir = value();
    } else if (a == "--grpc-listen") {
      o.grpc_listen = value();
    } else if (a == "--http-listen") {
      o.http_listen = value();
    } else if (a == "--port-file") {
      port_file = value();
    } else if (a == "--pki-dir") {
      std::string d = value();
      o.ca_dir = d + "/ca";
      o.svid_dir = d + "/controller";
    } else if (a == "--svid-dir") {
      o.svid_dir = value();
    } else if (a == "--ca-dir") {
      o.ca_dir = value();
    } else if (a == "--trust-domain") {
      o.trust_domain = value();
    } else if (a == "--insecure") {
      o.insecure = true;
    } else if (a == "--accept-store-loss") {
      o.store.accept_loss = true;
    } else if (a == "--store-min-free-mb") {
      std::string v = value();
      char* end = nullptr;
      unsigned long long n = std::strtoull(v.c_str(), &end, 10);
      if (v.empty() || *end != '\0' || v[0] == '-' || n > (1ull << 40)) {
        std::fprintf(stderr, "dfw-controller: --store-min-free-mb must be a number of MiB\n");
        return 2;
      }
      o.store.min_free_bytes = n << 20;
    } else if (a == "--etcd-endpoints") {
      auto eps = dfw::controller::ParseEtcdEndpoints(value());
      if (!eps.ok()) {
        std::fprintf(stderr, "dfw-controller: %s\n", std::string(eps.status().message()).c_str());
        return 2;
      }
      o.etcd.endpoints = *eps;
    } else if (a == "--etcd-prefix") {
      o.etcd.prefix = value();
    } else if (a == "--etcd-ca") {
      o.etcd.ca_file = value();
    } else if (a == "--etcd-cert") {
      o.etcd.cert_file = value();
    } else if (a == "--etcd-key") {
      o.etcd.key_file = value();
    } else if (a == "--etcd-max-txn-ops" || a == "--etcd-max-request-bytes" || a == "--lease-ttl") {
      std::string v = value();
      char* end = nullptr;
      unsigned long long n = std::strtoull(v.c_str(), &end, 10);
      if (v.empty() || *end != '\0' || v[0] == '-' || n == 0 || n > (1ull << 32)) {
        std::fprintf(stderr, "dfw-controller: %s must be a positive number\n", a.c_str());
        return 2;
      }
      if (a == "--etcd-max-txn-ops") o.etcd.max_txn_ops = n;
      if (a == "--etcd-max-request-bytes") o.etcd.max_request_bytes = n;
      if (a == "--lease-ttl") o.lease_ttl = std::chrono::seconds(n);
    } else if (a == "--metrics-per-host") {
      o.metrics_per_host = true;
    } else if (a == "--cold-standby") {
      o.warm_standby = false;
    } else if (a == "--name") {
      o.name = value();
    } else if (a == "--advertise-grpc") {
      o.advertise_grpc = value();
    } else if (a == "--advertise-http") {
      o.advertise_http = value();
    } else if (a == "--http-allowed-host") {
      o.http_allowed_hosts.push_back(value());
    } else if (a == "--cert-refresh-seconds") {
      int n = std::atoi(value().c_str());
      if (n <= 0) {
        std::fprintf(stderr, "dfw-controller: --cert-refresh-seconds must be a positive number\n");
        return 2;
      }
      o.cert_refresh = std::chrono::seconds(n);
    } else if (a == "-h" || a == "--help") {
      Usage(stdout);
      return 0;
    } else {
      std::fprintf(stderr, "dfw-controller: unknown argument '%s'\n", a.c_str());
      Usage();
      return 2;
    }
  }
  if (o.data_dir.empty() && o.etcd.endpoints.empty()) {
    std::fprintf(stderr, "dfw-controller: --data-dir (or --etcd-endpoints) is required\n");
    Usage();
    return 2;
  }
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);  // every thread inherits the mask

  o.on_lost_leadership = [](const std::string& why) {
    // A deposed leader must not serve; etcd refuses its writes already.
    spdlog::critical("dfw-controller: lost the leadership ({}); exiting", why);
    spdlog::default_logger()->flush();
    std::_Exit(3);
  };
  dfw::controller::ControllerServer server;
  if (auto s = server.Start(o); !s.ok()) {
    std::fprintf(stderr, "dfw-controller: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  auto host_of = [](const std::string& listen) { return listen.substr(0, listen.rfind(':')); };
  std::string line =
      "listening grpc=" + host_of(o.grpc_listen) + ":" + std::to_string(server.grpc_port());
  if (server.http_port() != 0) {
    line += " http=" + host_of(o.http_listen) + ":" + std::to_string(server.http_port());
  }
  line += o.insecure ? " tls=off" : " tls=mutual";
  if (!o.etcd.endpoints.empty()) line += server.leading() ? " role=leader" : " role=standby";
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
  if (!port_file.empty()) {
    std::string tmp = port_file + ".tmp";
    std::ofstream(tmp) << line << "\n";
    std::rename(tmp.c_str(), port_file.c_str());
  }
  if (o.etcd.endpoints.empty()) {
    spdlog::info("dfw-controller: data dir {}, revision {}{}", o.data_dir,
                 server.model()->revision(),
                 server.model()->store().read_only() ? " (read-only: the disk is full)" : "");
  } else {
    spdlog::info("dfw-controller: store in etcd {} prefix {}; standing by until elected",
                 dfw::Join(o.etcd.endpoints, ","), o.etcd.prefix);
  }
  if (o.store.accept_loss) {
    spdlog::warn(
        "dfw-controller: started with --accept-store-loss; remove it once this start "
        "is done (it is needed only to start past a damaged store)");
  }
  int sig = 0;
  sigwait(&set, &sig);
  spdlog::info("dfw-controller: signal {}, stopping", sig);
  server.Stop();
  return 0;
}
