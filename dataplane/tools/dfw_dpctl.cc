// dfw-dpctl: a small operator CLI over dfw-dataplane's local gRPC API
// (proto dfw.v1.DataplaneService on a unix socket).
//
//   dfw-dpctl [--api unix:PATH] [-o table|json] [--timeout SEC] <command> ...
//     counters                          revision, refused API connections, per-vNIC,
//                                       per-rule (hits; session totals of the ended
//                                       connections it admitted), per-drop-reason
//                                       counters
//     connections [--vnic ID] [--max N] the conntrack table (all vNICs or one)
//     connections export VNIC [--max N] a vNIC's connections as they move with
//                                       their VM: one dfw.v1.ConnectionEntry per line
//                                       (protobuf JSON); the total on stderr
//     connections import VNIC FILE      the same lines into a vNIC (imported,
//                                       rejected and the first errors)
//     state                             what the dataplane enforces (GetState): revision,
//                                       instance id, restored from --state-dir, vNICs
//     flows [--max N] [--after SEQ]     the most recent flow records (default 100);
//                                       with --after, the oldest ones after SEQ
//     vnics [--state-dir DIR]           the vNICs the dataplane knows (from Counters; with the
//                                       dataplane's --state-dir also local id, MAC, IPs)
//     set-vnic --id ID --local-id N --mac M [--ip A]...
//     remove-vnic ID
//     set-state FILE                    a dfw.v1.HostDesiredState in protobuf text format,
//                                       applied as a full state
//
// Input files (set-state, connections import, the state file of vnics) must
// be regular files of at most 256 MiB, the API's message limit.
//     flush [--vnic ID]                 drop tracked connections (all or one vNIC's)
//
// Output: aligned tables (default) or the protobuf JSON mapping of the
// response (-o json). Exit codes: 0 ok; 1 the dataplane refused or failed
// the call (its error text on stderr); 2 usage or unreadable input; 3 the
// dataplane is unreachable.
#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>
#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "dfw/v1/dataplane.grpc.pb.h"

namespace {

namespace v1 = dfw::v1;

constexpr int kExitOk = 0;
constexpr int kExitRefused = 1;
constexpr int kExitUsage = 2;
constexpr int kExitUnreachable = 3;
constexpr int kMaxMessage = 256 << 20;  // the dataplane's own limit (main.cc)

int Usage(const std::string& why = "", FILE* out = stderr) {
  if (!why.empty()) std::fprintf(stderr, "dfw-dpctl: %s\n", why.c_str());
  std::fprintf(out,
               "usage: dfw-dpctl [--api unix:PATH] [-o table|json] [--timeout SEC] <command>\n"
               "  counters\n"
               "  connections [--vnic ID] [--max N]\n"
               "  connections export VNIC [--max N]   (JSON lines, dfw.v1.ConnectionEntry)\n"
               "  connections import VNIC FILE\n"
               "  state\n"
               "  flows [--max N] [--after SEQ]\n"
               "  vnics [--state-dir DIR]\n"
               "  set-vnic --id ID --local-id N --mac M [--ip A]...\n"
               "  remove-vnic ID\n"
               "  set-state FILE        (dfw.v1.HostDesiredState, protobuf text format)\n"
               "  flush [--vnic ID]\n"
               "  capture VNIC in|out [--proto N] [--src IP] [--dst IP] [--sport N] [--dport N]\n"
               "          [--wait SEC]   the next frame of that flow and what the pipeline did\n");
  return kExitUsage;
}

// Column-aligned text table; every column left-aligned, two spaces apart.
class Table {
 public:
  explicit Table(std::vector<std::string> header) { rows_.push_back(std::move(header)); }
  void Add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  void Print() const {
    std::vector<size_t> width;
    for (const auto& r : rows_) {
      if (width.size() < r.size()) width.resize(r.size(), 0);
      for (size_t c = 0; c < r.size(); ++c) width[c] = std::max(width[c], r[c].size());
    }
    for (const auto& r : rows_) {
      std::string line;
      for (size_t c = 0; c < r.size(); ++c) {
        line += r[c];
        if (c + 1 < r.size()) line += std::string(width[c] - r[c].size() + 2, ' ');
      }
      std::printf("%s\n", line.c_str());
    }
  }

 private:
  std::vector<std::vector<std::string>> rows_;
};

std::string Num(uint64_t v) { return std::to_string(v); }

std::string ProtoName(uint32_t p) {
  switch (p) {
    case 1:
      return "icmp";
    case 6:
      return "tcp";
    case 17:
      return "udp";
    case 58:
      return "icmpv6";
    default:
      return std::to_string(p);
  }
}

// "DIRECTION_IN" -> "in", "KIND_ALLOWED" -> "allowed".
std::string EnumWord(const std::string& name) {
  std::string s = name.substr(name.find('_') + 1);
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool PrintJson(const google::protobuf::Message& m) {
  google::protobuf::util::JsonPrintOptions o;
  o.add_whitespace = true;
  o.always_print_primitive_fields = true;
  std::string out;
  if (!google::protobuf::util::MessageToJsonString(m, &out, o).ok()) return false;
  std::printf("%s", out.c_str());
  if (out.empty() || out.back() != '\n') std::printf("\n");
  return true;
}

struct Cli {
  std::string api = "unix:/run/dfw/dataplane.sock";
  bool json = false;
  int timeout_s = 10;
  std::unique_ptr<v1::DataplaneService::Stub> stub;

  void Connect() {
    // A vNIC's exported connections may exceed gRPC's default 4 MB message.
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(kMaxMessage);
    args.SetMaxSendMessageSize(kMaxMessage);
    stub = v1::DataplaneService::NewStub(
        grpc::CreateCustomChannel(api, grpc::InsecureChannelCredentials(), args));
  }
  void Prepare(grpc::ClientContext* ctx) const {
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(timeout_s));
  }
  // Maps a failed call to a message and an exit code.
  int Fail(const char* what, const grpc::Status& st) const {
    if (st.error_code() == grpc::StatusCode::UNAVAILABLE &&
        st.error_message().find("worker") == std::string::npos) {
      std::fprintf(stderr, "dfw-dpctl: cannot reach the dataplane at %s: %s\n", api.c_str(),
                   st.error_message().c_str());
      return kExitUnreachable;
    }
    if (st.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
      std::fprintf(stderr, "dfw-dpctl: %s: no answer from %s within %d s\n", what, api.c_str(),
                   timeout_s);
      return kExitUnreachable;
    }
    std::fprintf(stderr, "dfw-dpctl: %s refused: %s\n", what, st.error_message().c_str());
    return kExitRefused;
  }
};

// Options after the command: "--name value" pairs, plus positionals.
struct Args {
  std::vector<std::pair<std::string, std::string>> opts;
  std::vector<std::string> pos;

  std::string Get(const std::string& name) const {
    for (const auto& [k, v] : opts)
      if (k == name) return v;
    return "";
  }
  bool Has(const std::string& name) const {
    for (const auto& [k, v] : opts)
      if (k == name) return true;
    return false;
  }
  // Names not in `allowed`, or positionals beyond `max_pos`: a usage error text.
  std::string Check(std::initializer_list<const char*> allowed, size_t max_pos) const {
    for (const auto& [k, v] : opts) {
      bool ok = false;
      for (const char* a : allowed) ok = ok || k == a;
      if (!ok) return "unknown option " + k;
    }
    if (pos.size() > max_pos) return "unexpected argument '" + pos[max_pos] + "'";
    return "";
  }
};

// All of `s` a decimal number (no sign, no space); false if not, or above 2^64-1.
bool ParseUint(const std::string& s, uint64_t* out) {
  uint64_t v = 0;
  const char* end = s.data() + s.size();
  auto [ptr, ec] = std::from_chars(s.data(), end, v);
  if (s.empty() || ec != std::errc() || ptr != end) return false;
  *out = v;
  return true;
}

// An input file: a regular file (not a directory, FIFO or device: `/dev/zero`
// would never end) of at most kMaxMessage bytes, read whole. Missing:
// false with `*missing` set (when given). The error is on stderr.
bool ReadInput(const std::string& path, std::string* out, bool* missing = nullptr) {
  if (missing) *missing = false;
  // O_NONBLOCK: opening a FIFO must not wait for a writer.
  const int fd = open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    if (missing && errno == ENOENT) {
      *missing = true;
      return false;
    }
    std::fprintf(stderr, "dfw-dpctl: cannot read %s: %s\n", path.c_str(), std::strerror(errno));
    return false;
  }
  struct stat sb;
  std::string why;
  if (fstat(fd, &sb) != 0) {
    why = std::strerror(errno);
  } else if (!S_ISREG(sb.st_mode)) {
    why = S_ISDIR(sb.st_mode) ? "a directory, not a file" : "not a regular file";
  } else if (sb.st_size > kMaxMessage) {
    why = std::to_string(sb.st_size) + " bytes, above the limit of " + std::to_string(kMaxMessage);
  }
  out->clear();
  // Bounded even if the file grows while it is read.
  char buf[65536];
  while (why.empty()) {
    const ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) why = std::strerror(errno);
    if (n <= 0) break;
    if (out->size() + static_cast<size_t>(n) > static_cast<size_t>(kMaxMessage)) {
      why = "above the limit of " + std::to_string(kMaxMessage) + " bytes";
      break;
    }
    out->append(buf, static_cast<size_t>(n));
  }
  close(fd);
  if (!why.empty()) {
    std::fprintf(stderr, "dfw-dpctl: cannot read %s: %s\n", path.c_str(), why.c_str());
    return false;
  }
  return true;
}

// --max N (absent: 0, the server's default); false if N is not 1..2^32-1.
bool MaxOption(const Args& a, uint32_t* out) {
  if (!a.Has("--max")) return true;
  uint64_t n;
  if (!ParseUint(a.Get("--max"), &n) || n == 0 || n > UINT32_MAX) return false;
  *out = static_cast<uint32_t>(n);
  return true;
}

// The dataplane lists vNICs in its table's order; show them by id.
void SortById(google::protobuf::RepeatedPtrField<v1::VNicStats>* vnics) {
  std::sort(vnics->begin(), vnics->end(), [](const v1::VNicStats& a, const v1::VNicStats& b) {
    return a.vnic_id() < b.vnic_id();
  });
}

int Counters(Cli& cli) {
  grpc::ClientContext ctx;
  cli.Prepare(&ctx);
  v1::CountersResponse r;
  if (auto st = cli.stub->Counters(&ctx, v1::CountersRequest(), &r); !st.ok())
    return cli.Fail("counters", st);
  SortById(r.mutable_vnics());
  if (cli.json) return PrintJson(r) ? kExitOk : kExitRefused;
  std::printf("applied revision: %llu\n", static_cast<unsigned long long>(r.applied_revision()));
  std::printf("api connections refused: %llu\n\n",
              static_cast<unsigned long long>(r.api_refused_connections()));
  Table v({"VNIC", "RX_PKTS", "RX_BYTES", "TX_PKTS", "TX_BYTES", "DROPS", "CONNS"});
  for (const auto& s : r.vnics())
    v.Add({s.vnic_id(), Num(s.rx_packets()), Num(s.rx_bytes()), Num(s.tx_packets()),
           Num(s.tx_bytes()), Num(s.drops()), Num(s.connections())});
  v.Print();
  std::printf("\n");
  // Hits (new connections it decided), then the session totals of the
  // connections it admitted that ended.
  Table rules({"RULE", "POLICY", "RULE_ID", "PACKETS", "BYTES", "SESSION_PKTS", "SESSION_BYTES"});
  for (const auto& c : r.rules())
    rules.Add({Num(c.rule_num()), c.policy_id(), c.rule_id(), Num(c.packets()), Num(c.bytes()),
               Num(c.session_packets()), Num(c.session_bytes())});
  rules.Print();
  std::printf("\n");
  Table drops({"DROP_REASON", "PACKETS"});
  for (const auto& d : r.drops()) drops.Add({d.reason(), Num(d.packets())});
  drops.Print();
  return kExitOk;
}

// One ConnectionEntry per line, compact JSON (what `connections import` reads).
int ExportConnections(Cli& cli, const Args& a) {
  if (auto e = a.Check({"--max"}, 2); !e.empty()) return Usage(e);
  if (a.pos.size() < 2) return Usage("connections export needs a vNIC id");
  v1::ExportConnectionsRequest req;
  req.set_vnic_id(a.pos[1]);
  uint32_t max = 0;
  if (!MaxOption(a, &max)) return Usage("--max wants a positive number");
  req.set_max_entries(max);
  grpc::ClientContext ctx;
  cli.Prepare(&ctx);
  v1::ExportConnectionsResponse r;
  if (auto st = cli.stub->ExportConnections(&ctx, req, &r); !st.ok())
    return cli.Fail("connections export", st);
  google::protobuf::util::JsonPrintOptions o;
  o.always_print_primitive_fields = true;
  for (const auto& c : r.entries()) {
    std::string line;
    if (!google::protobuf::util::MessageToJsonString(c, &line, o).ok()) return kExitRefused;
    std::printf("%s\n", line.c_str());
  }
  std::fprintf(stderr, "exported %d of %u connections of %s\n", r.entries_size(), r.total(),
               a.pos[1].c_str());
  return kExitOk;
}

int ImportConnections(Cli& cli, const Args& a) {
  if (auto e = a.Check({}, 3); !e.empty()) return Usage(e);
  if (a.pos.size() < 3) return Usage("connections import needs a vNIC id and a file");
  std::string data;
  if (!ReadInput(a.pos[2], &data)) return kExitUsage;
  std::istringstream in(data);
  v1::ImportConnectionsRequest req;
  req.set_vnic_id(a.pos[1]);
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    if (auto st = google::protobuf::util::JsonStringToMessage(line, req.add_entries()); !st.ok()) {
      std::fprintf(stderr, "dfw-dpctl: %s line %d is not a dfw.v1.ConnectionEntry: %s\n",
                   a.pos[2].c_str(), n, std::string(st.message()).c_str());
      return kExitUsage;
    }
  }
  grpc::ClientContext ctx;
  cli.Prepare(&ctx);
  v1::ImportConnectionsResponse r;
  if (auto st = cli.stub->ImportConnections(&ctx, req, &r); !st.ok())
    return cli.Fail("connections import", st);
  if (cli.json) return PrintJson(r) ? kExitOk : kExitRefused;
  std::printf("imported %u connections into %s, rejected %u\n", r.imported(), a.pos[1].c_str(),
              r.rejected_count());
  for (const auto& e : r.rejected()) std::printf("  %s\n", e.c_str());
  return kExitOk;
}

int State(Cli& cli) {
  grpc::ClientContext ctx;
  cli.Prepare(&ctx);
  v1::GetStateResponse r;
  if (auto st = cli.stub->GetState(&ctx, v1::GetStateRequest(), &r); !st.ok())
    return cli.Fail("state", st);
  std::sort(r.mutable_vnics()->begin(), r.mutable_vnics()->end(),
            [](const v1::DataplaneVNic& x, const v1::DataplaneVNic& y) { return x.id() < y.id(); });
  if (cli.json) return PrintJson(r) ? kExitOk : kExitRefused;
  std::printf("applied revision: %llu\n", static_cast<unsigned long long>(r.applied_revision()));
  std::printf("instance id: %016llx\n", static_cast<unsigned long long>(r.instance_id()));
  std::printf("restored from state dir: %s\n\n", r.restored() ? "yes" : "no");
  const std::set<std::string> excluded(r.excluded_vnics().begin(), r.excluded_vnics().end());
  Table t({"VNIC", "LOCAL_ID", "MAC", "IPS", "FILTERED"});
  for (const auto& v : r.vnics()) {
    std::string ips;
    for (const auto& ip : v.bound_ips()) ips += (ips.empty() ? "" : ",") + ip;
    t.Add({v.id(), Num(v.local_id()), v.mac(), ips.empty() ? "-" : ips,
           excluded.count(v.id()) ? "no (excluded)" : "yes"});
  }
  t.Print();
  return kExitOk;
}

int Connections(Cli& cli, const Args& a) {
  if (!a.pos.empty() && a.pos[0] == "export") return ExportConnections(cli, a);
  if (!a.pos.empty() && a.pos[0] == "import") return ImportConnections(cli, a);
  if (auto e = a.Check({"--vnic", "--max"}, 0); !e.empty()) return Usage(e);
  v1::ConnectionsRequest req;
  req.set_vnic_id(a.Get("--vnic"));
  uint32_t max = 0;
  if (!MaxOption(a, &max)) return Usage("--max wants a positive number");
  req.set_limit(max);
  grpc::ClientContext ctx;
  cli.Prepare(&ctx);
  v1::ConnectionsResponse r;
  if (auto st = cli.stub->Connections(&ctx, req, &r); !st.ok()) return cli.Fail("connections", st);
  if (cli.json) return PrintJson(r) ? kExitOk : kExitRefused;
  Table t({"VNIC", "PROTO", "SRC", "DST", "STATE", "RULE", "GEN", "PACKETS", "BYTES"});
  for (const auto& c : r.connections())
    t.Add({c.vnic_id(), ProtoName(c.protocol()), c.src(), c.dst(), c.state(), Num(c.rule_num()),
           Num(c.generation()), Num(c.packets()), Num(c.bytes())});
  t.Print();
  return kExitOk;
}

int Flows(Cli& cli, const Args& a) {
  if (auto e = a.Check({"--max", "--after"}, 0); !e.empty()) return Usage(e);
  v1::FlowRecordsRequest req;
  uint32_t max = 0;
  if (!MaxOption(a, &max)) return Usage("--max wants a positive number");
  req.set_max(max);
  if (a.Has("--after")) {  // the oldest records after SEQ (a reader that follows)
    uint64_t after = 0;
    if (!ParseUint(a.Get("--after"), &after)) return Usage("--after wants a record's SEQ");
    req.set_after_seq(after);
  }
  grpc::ClientContext ctx;
  cli.Prepare(&ctx);
  v1::FlowRecordsResponse r;
  if (auto st = cli.stub->FlowRecords(&ctx, req, &r); !st.ok()) return cli.Fail("flows", st);
  if (cli.json) return PrintJson(r) ? kExitOk : kExitRefused;
  Table t({"SEQ", "TIME_MS", "KIND", "VNIC", "DIR", "PROTO", "SRC", "DST", "RULE", "ACTION",
           "REASON", "PACKETS", "BYTES"});
  for (const auto& f : r.records())
    t.Add({Num(f.seq()), Num(f.time_ns() / 1000000), EnumWord(v1::FlowRecord::Kind_Name(f.kind())),
           f.vnic_id(), EnumWord(v1::Direction_Name(f.direction())), ProtoName(f.protocol()),
           f.src(), f.dst(), Num(f.rule_num()), EnumWord(v1::Action_Name(f.action())), f.reason(),
           Num(f.packets()), Num(f.bytes())});
  t.Print();
  return kExitOk;
}

int Vnics(Cli& cli, const Args& a) {
  if (auto e = a.Check({"--state-dir"}, 0); !e.empty()) return Usage(e);
  v1::DataplanePersistedState persisted;
  if (a.Has("--state-dir")) {
    std::string path = a.Get("--state-dir") + "/state.pb", data;
    bool missing = false;
    if (!ReadInput(path, &data, &missing) && !missing) return kExitUsage;
    if (!missing && !persisted.ParseFromString(data)) {
      std::fprintf(stderr, "dfw-dpctl: %s is not a DataplanePersistedState\n", path.c_str());
      return kExitUsage;
    }
  }
  grpc::ClientContext ctx;
  cli.Prepare(&ctx);
  v1::CountersResponse r;
  if (auto st = cli.stub->Counters(&ctx, v1::CountersRequest(), &r); !st.ok())
    return cli.Fail("vnics", st);
  SortById(r.mutable_vnics());
  // What the running dataplane knows (Counters lists every vNIC), joined
  // with the persisted details where the ids agree.
  v1::DataplanePersistedState out;
  std::vector<uint64_t> conns;
  for (const auto& s : r.vnics()) {
    v1::DataplaneVNic* v = out.add_vnics();
    v->set_id(s.vnic_id());
    for (const auto& p : persisted.vnics())
      if (p.id() == s.vnic_id()) *v = p;
    conns.push_back(s.connections());
  }
  if (cli.json) return PrintJson(out) ? kExitOk : kExitRefused;
  Table t({"VNIC", "LOCAL_ID", "MAC", "IPS", "CONNS"});
  for (int i = 0; i < out.vnics_size(); ++i) {
    const auto& v = out.vnics(i);
    std::string ips;
    for (const auto& ip : v.bound_ips()) ips += (ips.empty() ? "" : ",") + ip;
    t.Add({v.id(), v.local_id() ? Num(v.local_id()) : "-", v.mac().empty() ? "-" : v.mac(),
           ips.empty() ? "-" : ips, Num(conns[static_cast<size_t>(i)])});
  }
  t.Print();
  return kExitOk;
}

int SetVnic(Cli& cli, const Args& a) {
  if (auto e = a.Check({"--id", "--local-id", "--mac", "--ip"}, 0); !e.empty()) return Usage(e);
  if (a.Get("--id").empty() || a.Get("--mac").empty() || !a.Has("--local-id"))
    return Usage("set-vnic needs --id, --local-id and --mac");
  uint64_t local_id;
  if (!ParseUint(a.Get("--local-id"), &local_id) || local_id > UINT32_MAX)
    return Usage("--local-id wants a number");
  v1::SetVNicRequest req;
  v1::DataplaneVNic* v = req.mutable_vnic();
  v->set_id(a.Get("--id"));
  v->set_local_id(static_cast<uint32_t>(local_id));
  v->set_mac(a.Get("--mac"));
  for (const auto& [k, val] : a.opts)
    if (k == "--ip") v->add_bound_ips(val);
  grpc::ClientContext ctx;
  cli.Prepare(&ctx);
  v1::DataplaneVNic r;
  if (auto st = cli.stub->SetVNic(&ctx, req, &r); !st.ok()) return cli.Fail("set-vnic", st);
  if (cli.json) return PrintJson(r) ? kExitOk : kExitRefused;
  std::string ips;
  for (const auto& ip : r.bound_ips()) ips += " " + ip;
  std::printf("vnic %s set: local id %u, mac %s, ips%s\n", r.id().c_str(), r.local_id(),
              r.mac().c_str(), ips.empty() ? " (none)" : ips.c_str());
  return kExitOk;
}

int RemoveVnic(Cli& cli, const Args& a) {
  if (auto e = a.Check({}, 1); !e.empty()) return Usage(e);
  if (a.pos.empty()) return Usage("remove-vnic needs a vNIC id");
  v1::RemoveVNicRequest req;
  req.set_id(a.pos[0]);
  grpc::ClientContext ctx;
  cli.Prepare(&ctx);
  v1::SetStateResponse r;
  if (auto st = cli.stub->RemoveVNic(&ctx, req, &r); !st.ok()) return cli.Fail("remove-vnic", st);
  if (cli.json) return PrintJson(r) ? kExitOk : kExitRefused;
  std::printf("vnic %s removed; applied revision %llu\n", a.pos[0].c_str(),
              static_cast<unsigned long long>(r.applied_revision()));
  return kExitOk;
}

// Collects text-format parse errors with their line and column.
class ParseErrors : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, int column, const std::string& message) override {
    text += "  line " + std::to_string(line + 1) + ":" + std::to_string(column + 1) + ": " +
            message + "\n";
  }
  std::string text;
};

int SetState(Cli& cli, const Args& a) {
  if (auto e = a.Check({}, 1); !e.empty()) return Usage(e);
  if (a.pos.empty()) return Usage("set-state needs a file (HostDesiredState, text format)");
  std::string text;
  if (!ReadInput(a.pos[0], &text)) return kExitUsage;
  v1::SetStateRequest req;
  google::protobuf::TextFormat::Parser parser;
  ParseErrors errors;
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(text, req.mutable_full())) {
    std::fprintf(stderr, "dfw-dpctl: %s is not a dfw.v1.HostDesiredState in text format:\n%s",
                 a.pos[0].c_str(), errors.text.c_str());
    return kExitUsage;
  }
  grpc::ClientContext ctx;
  cli.Prepare(&ctx);
  v1::SetStateResponse r;
  if (auto st = cli.stub->SetState(&ctx, req, &r); !st.ok()) return cli.Fail("set-state", st);
  if (cli.json) return PrintJson(r) ? kExitOk : kExitRefused;
  std::printf("state applied: revision %llu\n",
              static_cast<unsigned long long>(r.applied_revision()));
  return kExitOk;
}

int Flush(Cli& cli, const Args& a) {
  if (auto e = a.Check({"--vnic"}, 0); !e.empty()) return Usage(e);
  v1::FlushRequest req;
  req.set_vnic_id(a.Get("--vnic"));
  grpc::ClientContext ctx;
  cli.Prepare(&ctx);
  v1::FlushResponse r;
  if (auto st = cli.stub->Flush(&ctx, req, &r); !st.ok()) return cli.Fail("flush", st);
  if (cli.json) return PrintJson(r) ? kExitOk : kExitRefused;
  std::printf("flushed %llu connections\n", static_cast<unsigned long long>(r.flushed()));
  return kExitOk;
}

}  // namespace

// One-shot capture: arms it, waits for the frame (or the deadline), prints
// what the pipeline did. Exit 0 when a frame met it, 1 when none did.
int Capture(Cli& cli, const Args& a) {
  if (auto e = a.Check({"--proto", "--src", "--dst", "--sport", "--dport", "--wait"}, 2);
      !e.empty()) {
    return Usage(e);
  }
  if (a.pos.size() < 2 || (a.pos[1] != "in" && a.pos[1] != "out")) {
    return Usage("capture needs a vNIC id and a direction (in: to the VM, out: from it)");
  }
  v1::ArmCaptureRequest req;
  v1::CaptureFilter* f = req.mutable_filter();
  f->set_vnic_id(a.pos[0]);
  f->set_direction(a.pos[1] == "in" ? v1::DIRECTION_IN : v1::DIRECTION_OUT);
  uint64_t n = 0;
  for (const auto& [opt, max] : {std::pair<const char*, uint64_t>{"--proto", 255},
                                 {"--sport", 65535},
                                 {"--dport", 65535},
                                 {"--wait", 120}}) {
    if (!a.Has(opt)) continue;
    if (!ParseUint(a.Get(opt), &n) || n > max) {
      return Usage(std::string(opt) + " wants a number up to " + std::to_string(max));
    }
    std::string o = opt;
    if (o == "--proto") f->set_protocol(static_cast<uint32_t>(n));
    if (o == "--sport") f->set_src_port(static_cast<uint32_t>(n));
    if (o == "--dport") f->set_dst_port(static_cast<uint32_t>(n));
    if (o == "--wait") req.set_timeout_ms(static_cast<uint32_t>(n * 1000));
  }
  for (const char* opt : {"--src", "--dst"}) {
    if (!a.Has(opt)) continue;
    unsigned char b[16];
    std::string ip = a.Get(opt), bytes;
    if (inet_pton(AF_INET, ip.c_str(), b) == 1) {
      bytes.assign(reinterpret_cast<char*>(b), 4);
    } else if (inet_pton(AF_INET6, ip.c_str(), b) == 1) {
      bytes.assign(reinterpret_cast<char*>(b), 16);
    } else {
      return Usage(std::string(opt) + " wants an IPv4 or IPv6 address, not '" + ip + "'");
    }
    if (std::string(opt) == "--src") f->set_src_ip(bytes);
    if (std::string(opt) == "--dst") f->set_dst_ip(bytes);
  }
  v1::ArmCaptureResponse armed;
  {
    grpc::ClientContext ctx;
    cli.Prepare(&ctx);
    if (auto st = cli.stub->ArmCapture(&ctx, req, &armed); !st.ok()) return cli.Fail("capture", st);
  }
  const uint32_t wait_ms = req.timeout_ms() ? req.timeout_ms() : 10000;
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(wait_ms + 1000);
  v1::CaptureResult result;
  for (;;) {
    v1::CaptureResultsRequest q;
    q.add_capture_ids(armed.capture_id());
    bool last = std::chrono::steady_clock::now() > until;
    q.set_cancel(last);  // past its deadline and still armed: give the slot back
    v1::CaptureResultsResponse r;
    grpc::ClientContext ctx;
    cli.Prepare(&ctx);
    if (auto st = cli.stub->CaptureResults(&ctx, q, &r); !st.ok()) return cli.Fail("capture", st);
    if (r.results_size() == 1) result = r.results(0);
    if (last || result.state() != v1::CaptureResult::STATE_ARMED) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (cli.json) {
    if (!PrintJson(result)) return kExitRefused;
  } else if (result.state() == v1::CaptureResult::STATE_MET) {
    Table t({"CAPTURE", "PROTO", "SRC", "DST", "VERDICT", "STAGE", "REASON", "RULE", "POLICY",
             "AFTER_MS"});
    // "CAPTURE_STAGE_DEFAULT_RULE" -> "default_rule"
    std::string stage = EnumWord(v1::CaptureStage_Name(result.stage()).substr(8));
    t.Add({Num(result.capture_id()), ProtoName(result.protocol()), result.src(), result.dst(),
           std::string(result.forwarded() ? "forwarded" : "dropped") +
               (result.audit() ? " (audit)" : ""),
           stage, result.reason().empty() ? "-" : result.reason(), Num(result.rule_num()),
           result.policy_id().empty() ? "-" : result.policy_id() + "/" + result.rule_id(),
           Num(result.met_after_ms())});
    t.Print();
  } else {
    std::fprintf(stderr, "dfw-dpctl: no frame met capture %llu within %u ms (%s)\n",
                 static_cast<unsigned long long>(result.capture_id()), wait_ms,
                 EnumWord(v1::CaptureResult::State_Name(result.state())).c_str());
  }
  return result.state() == v1::CaptureResult::STATE_MET ? kExitOk : kExitRefused;
}

int main(int argc, char** argv) {
  Cli cli;
  std::string command;
  Args args;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    bool has_value = i + 1 < argc;
    if (a == "-h" || a == "--help") {
      Usage("", stdout);
      return kExitOk;
    }
    if (command.empty()) {
      if (a == "--api" || a == "-o" || a == "--timeout") {
        if (!has_value) return Usage(a + " wants a value");
        std::string v = argv[++i];
        if (a == "--api") {
          cli.api = v;
        } else if (a == "-o") {
          if (v != "json" && v != "table") return Usage("-o wants table or json");
          cli.json = v == "json";
        } else {
          uint64_t s;
          if (!ParseUint(v, &s) || s == 0 || s > 3600) return Usage("--timeout wants seconds");
          cli.timeout_s = static_cast<int>(s);
        }
      } else if (a.rfind("-", 0) == 0) {
        return Usage("unknown option " + a);
      } else {
        command = a;
      }
    } else if (a.rfind("--", 0) == 0) {
      if (!has_value) return Usage(a + " wants a value");
      args.opts.emplace_back(a, argv[++i]);
    } else if (a == "-o" && has_value) {
      std::string v = argv[++i];
      if (v != "json" && v != "table") return Usage("-o wants table or json");
      cli.json = v == "json";
    } else {
      args.pos.push_back(a);
    }
  }
  if (command.empty()) return Usage("no command");
  if (cli.api.rfind("unix:", 0) != 0) return Usage("--api wants unix:PATH");
  cli.Connect();
  if (command == "counters") {
    if (auto e = args.Check({}, 0); !e.empty()) return Usage(e);
    return Counters(cli);
  }
  if (command == "connections") return Connections(cli, args);
  if (command == "state") {
    if (auto e = args.Check({}, 0); !e.empty()) return Usage(e);
    return State(cli);
  }
  if (command == "flows") return Flows(cli, args);
  if (command == "vnics") return Vnics(cli, args);
  if (command == "set-vnic") return SetVnic(cli, args);
  if (command == "remove-vnic") return RemoveVnic(cli, args);
  if (command == "set-state") return SetState(cli, args);
  if (command == "flush") return Flush(cli, args);
  if (command == "capture") return Capture(cli, args);
  return Usage("unknown command '" + command + "'");
}
