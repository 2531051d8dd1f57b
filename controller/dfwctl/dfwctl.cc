// dfwctl: the operator's shell interface to dfw-controller (REST/JSON).
//
//   dfwctl [--server URL[,URL...]] [-o table|json] RESOURCE VERB [ARGS]
//
// Server: --server, else $DFW_SERVER, else the "server" of config.json in
// the config dir, else https://127.0.0.1:8080. Several URLs (controllers in
// high availability): the next is tried when one is unreachable, and a
// standby's answer naming the leader is followed to it.
// Identity: the SVID in the config dir ($DFW_CONFIG_DIR, else
// $XDG_CONFIG_HOME/dfw, else ~/.config/dfw; $DFW_CERT_DIR overrides where
// the svid.pem / svid_key.pem / svid_bundle.pem are): the client
// certificate dfwctl presents and the bundle it verifies the controller by.
// Plain http only with --insecure, and only to a loopback address.
// Output: human tables by default, -o json prints the API's JSON.
// Exit codes: 0 ok, 1 other error, 2 usage, 3 invalid input (HTTP 400),
// 4 not found (404), 5 conflict (409), 6 controller unreachable.
// Files for `apply -f` are JSON (one object, or an array of objects), in
// the API's format (proto JSON, field names as in model.proto); `-f -`
// reads stdin. (No YAML: Debian's libyaml-cpp is not part of the image.)
#include <arpa/inet.h>
#include <httplib.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "dfw/controller/recommend.h"
#include "dfw/trust/ca.h"
#include "dfw/trust/loopback.h"
#include "dfw/trust/peer.h"
#include "dfw/trust/svid.h"

using nlohmann::json;

namespace {

constexpr int kOk = 0, kError = 1, kUsage = 2, kInvalid = 3, kNotFound = 4, kConflict = 5,
              kUnreachable = 6, kDenied = 7;

const char kUsageText[] =
    R"(usage: dfwctl [--server URL[,URL...]] [-o table|json] RESOURCE VERB [ARGS]

  vm list | get VM | put -f FILE | delete VM
  vm tag VM... SCOPE=VALUE... [--remove SCOPE[=VALUE]]... [--dry-run]
  vm untag VM... SCOPE[=VALUE]... [--dry-run]  (SCOPE alone removes every value)
                                            --dry-run: the groups whose members change,
                                            the vNICs whose rules change, nothing changed
  vm groups VM                              which groups, and why
  vm rules VM | vnic rules VNIC             effective rules
  group list | get G | members G | delete G | apply -f FILE [--dry-run]
                                            --dry-run: the VMs it would gain and lose,
                                            the vNICs whose rules change, the address
                                            sets and hosts sent a change; nothing changed
  group create G [--tag S=V]... [--all-tags] [--name-starts-with X]
                 [--vm VM]... [--prefix P]... [--include G]... [--display-name N]
  policy list | get P | delete P | apply -f FILE
  policy apply -f FILE --dry-run [--budget N] | delete P --dry-run [--budget N]
                                            the change's impact, nothing changed: the
                                            vNICs and hosts it reaches, rules per vNIC
                                            before/after against the budget (default
                                            4000; exit 1 above it), the revalidating
                                            rules whose connections get re-checked
  policy recommend [--window S | --from-file F] [--last N] [--vm VM] [--group G] [--host H]
                   [--id P] [--priority N] [--enforce] [--scope S] [--write-dir D] [--apply]
                                            a draft policy (audit mode unless --enforce)
                                            allowing the connections that allowed and audit
                                            flow records show over S seconds (default 60) or
                                            in F (lines of -o json observe): each VM stands
                                            for its smallest group within its application
                                            (--scope, default app), a VM in none for a new
                                            group of its app tags; --apply creates both
  exclusion list                            the exclusion list: VMs and vNICs never filtered
  exclusion add (--vm VM | --vnic VNIC) --reason TEXT
                                            (admin) the firewall stops filtering it: its
                                            frames bypass the dataplane (OVS port security
                                            on its addresses stays), others' rules about
                                            it stay in force
  exclusion remove (vm:VM | vnic:VNIC)      (admin) filtered again
  host list
  realization [POLICY]
  host delete H                             forget a disconnected host and its VMs (admin)
  changes [--from REV]                      the change log, with who made each change
  observe [--follow] [--last N] [--max N] [--timeout S] [--vm VM] [--host H] [--group G]
          [--verdict allowed,denied,audit,ended] [--policy P] [--rule R]
          [--protocol tcp|udp|icmp|icmp6|sctp|N] [--port P] [--ip IP]
                                            flow records from the hosts' dataplanes with
                                            VM, groups, policy and rule; records lost on
                                            the way are shown as lost (-o json: a line each)
  trace FROM TO (--tcp P | --udp P | --sctp P | --icmp [T[/C]] | --icmp6 [T[/C]] |
                 --protocol N [--port P]) [--sport P] [--from-ip IP] [--to-ip IP]
                 [--live [--timeout S] | --inject]
                                            which rule decides a new connection, at
                                            each end, and whether its host realized it;
                                            --live: also what the VMs' next packet of
                                            the flow meets in the dataplanes (waits up
                                            to S s, default 30); --inject: the sender's
                                            host sends that packet itself (a probe)
  probe --from G[,G] --to G[,G] (--tcp P | --udp P | --icmp)... [--timeout S]
                                            the connectivity matrix: a probe packet from
                                            each VM of the --from groups to each of the
                                            --to groups, per service, expected (policy)
                                            against actual (dataplanes); exit 1 on any
                                            difference
  status

  ca init --pki-dir DIR --trust-domain TD [--node NAME] [--san HOST|IP]...
          [--admin NAME]                    on the controller's machine: the CA
                                            (DIR/ca), the controller's certificate
                                            (DIR/controller) and an admin's (config dir)
  enroll create (--host H | --vm UUID | --user NAME --role viewer|editor|admin)
                [--ttl SECONDS] [--cert-ttl SECONDS]   a one-time join token (admin)
  enroll join --token T --ca-bundle FILE    a user: key + CSR, certificate into the config dir
  cert list [--all] | revoke SERIAL | renew  certificates issued; renew your own

Tags come from the API (vm tag/untag/put) and from the domain's libvirt
metadata (reported by the host). A VM has both; for a scope the API holds a
tag of, the API's values replace the metadata's (the API wins per scope;
plain tags just add up). Untagging the API's value brings the metadata's
back; a tag only the metadata carries cannot be untagged here (exit 5):
change the domain's libvirt metadata on its host. Tables show each tag's
source, e.g. app=web (libvirt); -o json shows tags, api_tags, host_tags.

VM arguments are ids or names. Server: --server, $DFW_SERVER, the config
dir's config.json, or https://127.0.0.1:8080; several, comma-separated, for
controllers in high availability (the leader is found and followed). Identity: the SVID in the
config dir ($DFW_CONFIG_DIR, $XDG_CONFIG_HOME/dfw or ~/.config/dfw;
$DFW_CERT_DIR for the certificate files). --insecure: plain http, loopback
only. Exit codes: 0 ok, 2 usage, 3 invalid (400), 4 not found (404),
5 conflict (409), 6 unreachable, 7 not authenticated or not allowed
(401/403), 1 other.
)";

struct Reply {
  int status = 0;
  json body;
  std::string raw;
  std::string leader;  // a standby's X-Dfw-Leader: host:port of the leader's REST
};

// Where dfwctl finds its identity and its controller.
struct Config {
  std::string dir;       // config dir (config.json)
  std::string cert_dir;  // svid.pem, svid_key.pem, svid_bundle.pem
  std::string server;
  bool insecure = false;
};

std::string DefaultConfigDir() {
  if (const char* d = std::getenv("DFW_CONFIG_DIR"); d && *d) return d;
  if (const char* x = std::getenv("XDG_CONFIG_HOME"); x && *x) return std::string(x) + "/dfw";
  if (const char* h = std::getenv("HOME"); h && *h) return std::string(h) + "/.config/dfw";
  return ".dfw";
}

// "http://127.0.0.1:8080" -> "127.0.0.1".
std::string UrlHost(const std::string& url) {
  size_t b = url.find("://");
  b = b == std::string::npos ? 0 : b + 3;
  size_t e = url[b] == '[' ? url.find(']', b) + 1 : url.find_first_of(":/", b);
  return url.substr(b, e == std::string::npos ? std::string::npos : e - b);
}

class Api {
 public:
  // `ca_bundle`: verify the controller with this file instead of the SVID's
  // bundle (enrollment, before there is an SVID). `anonymous`: present no
  // client certificate.
  // cfg.server may list several controllers ("https://a:8080,https://b:8080",
  // controllers in high availability): a call goes to the one that answered
  // last; one unreachable, the next is tried; a standby's 503 naming the
  // leader (X-Dfw-Leader) is followed when the leader is in the list.
  static std::unique_ptr<Api> Open(const Config& cfg, const std::string& ca_bundle = "",
                                   bool anonymous = false) {
    std::vector<Server> servers;
    std::stringstream list(cfg.server);
    std::string url;
    while (std::getline(list, url, ',')) {
      auto cli = Client(cfg, url, ca_bundle, anonymous);
      if (!cli) return nullptr;
      servers.push_back({url, std::move(cli)});
    }
    if (servers.empty()) {
      std::fprintf(stderr, "dfwctl: no server given\n");
      return nullptr;
    }
    return std::unique_ptr<Api>(new Api(std::move(servers)));
  }

  Reply Call(const std::string& method, const std::string& path, const std::string& body = "") {
    Reply out;
    // Each server at most once, plus one hop to a leader a standby named.
    for (size_t tries = 0; tries <= servers_.size(); ++tries) {
      out = CallOne(*servers_[current_].cli, method, path, body);
      if (out.status == -1 && tries + 1 < servers_.size()) {
        current_ = (current_ + 1) % servers_.size();
        continue;
      }
      if (out.status != 503 || out.leader.empty()) break;
      size_t next = servers_.size();
      for (size_t i = 0; i < servers_.size(); ++i) {
        if (HostPort(servers_[i].url) == HostPort(out.leader)) next = i;
      }
      if (next == servers_.size() || next == current_) break;  // not ours to follow
      current_ = next;
    }
    return out;
  }

 private:
  struct Server {
    std::string url;
    std::unique_ptr<httplib::Client> cli;
  };
  // "https://10.0.0.1:8080/" -> "10.0.0.1:8080".
  static std::string HostPort(std::string url) {
    size_t b = url.find("://");
    if (b != std::string::npos) url = url.substr(b + 3);
    while (!url.empty() && url.back() == '/') url.pop_back();
    return url;
  }

  static std::unique_ptr<httplib::Client> Client(const Config& cfg, const std::string& url,
                                                 const std::string& ca_bundle, bool anonymous) {
    bool https = url.rfind("https://", 0) == 0;
    if (!https) {
      if (url.rfind("http://", 0) != 0) {
        std::fprintf(stderr, "dfwctl: server '%s' must be https://HOST:PORT\n", url.c_str());
        return nullptr;
      }
      if (!cfg.insecure) {
        std::fprintf(stderr,
                     "dfwctl: %s is plain http: pass --insecure to talk to a controller started "
                     "with --insecure (loopback only)\n",
                     url.c_str());
        return nullptr;
      }
      if (!dfw::trust::IsLoopbackHost(UrlHost(url))) {
        std::fprintf(stderr, "dfwctl: --insecure is for loopback addresses only, not %s\n",
                     url.c_str());
        return nullptr;
      }
      return Configure(std::make_unique<httplib::Client>(url));
    }
    std::string cert = cfg.cert_dir + "/" + dfw::trust::kSvidFile;
    std::string key = cfg.cert_dir + "/" + dfw::trust::kSvidKeyFile;
    std::string bundle =
        ca_bundle.empty() ? cfg.cert_dir + "/" + dfw::trust::kSvidBundleFile : ca_bundle;
    if (!std::filesystem::exists(bundle)) {
      std::fprintf(stderr,
                   "dfwctl: no trust bundle at %s: enroll first (dfwctl enroll join --token T "
                   "--ca-bundle FILE) or set $DFW_CONFIG_DIR / $DFW_CERT_DIR\n",
                   bundle.c_str());
      return nullptr;
    }
    std::unique_ptr<httplib::Client> cli;
    if (anonymous) {
      cli = std::make_unique<httplib::Client>(url);
    } else {
      if (!std::filesystem::exists(cert) || !std::filesystem::exists(key)) {
        std::fprintf(stderr, "dfwctl: no certificate in %s: enroll first (dfwctl enroll join)\n",
                     cfg.cert_dir.c_str());
        return nullptr;
      }
      cli = std::make_unique<httplib::Client>(url, cert, key);
    }
    cli->set_ca_cert_path(bundle.c_str());
    cli->enable_server_certificate_verification(true);
    return Configure(std::move(cli));
  }

  static Reply CallOne(httplib::Client& cli, const std::string& method, const std::string& path,
                       const std::string& body) {
    auto call = [&]() -> httplib::Result {
      if (method == "GET") return cli.Get(path.c_str());
      if (method == "POST") return cli.Post(path.c_str(), body, "application/json");
      if (method == "PUT") return cli.Put(path.c_str(), body, "application/json");
      return cli.Delete(path.c_str());
    };
    httplib::Result r = call();
    Reply out;
    if (!r) {
      out.status = -1;
      out.raw = httplib::to_string(r.error());
      return out;
    }
    out.status = r->status;
    out.raw = r->body;
    out.body = json::parse(r->body, nullptr, false);
    out.leader = r->get_header_value("X-Dfw-Leader");
    return out;
  }

  static std::unique_ptr<httplib::Client> Configure(std::unique_ptr<httplib::Client> cli) {
    cli->set_connection_timeout(3, 0);
    cli->set_read_timeout(60, 0);
    cli->set_keep_alive(true);   // one TLS handshake for the several calls a command makes
    cli->set_tcp_nodelay(true);  // requests in several TLS records: no Nagle wait
    return cli;
  }

  explicit Api(std::vector<Server> servers) : servers_(std::move(servers)) {}
  std::vector<Server> servers_;
  size_t current_ = 0;
};

int Fail(const Reply& r) {
  if (r.status == -1) {
    std::fprintf(stderr, "dfwctl: cannot reach the controller: %s\n", r.raw.c_str());
    return kUnreachable;
  }
  std::string msg = r.raw;
  if (r.body.is_object() && r.body.contains("error")) msg = r.body["error"].value("message", r.raw);
  std::fprintf(stderr, "dfwctl: %s (HTTP %d)\n", msg.c_str(), r.status);
  if (r.status == 400) return kInvalid;
  if (r.status == 404) return kNotFound;
  if (r.status == 409) return kConflict;
  if (r.status == 401 || r.status == 403) return kDenied;
  return kError;
}

std::string Str(const json& j) {
  if (j.is_null()) return "";
  if (j.is_string()) return j.get<std::string>();
  return j.dump();
}

void PrintTable(const std::vector<std::string>& head,
                const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> w(head.size());
  for (size_t i = 0; i < head.size(); ++i) w[i] = head[i].size();
  for (const auto& r : rows)
    for (size_t i = 0; i < r.size() && i < w.size(); ++i) w[i] = std::max(w[i], r[i].size());
  auto line = [&](const std::vector<std::string>& r) {
    std::string s;
    for (size_t i = 0; i < head.size(); ++i) {
      std::string c = i < r.size() ? r[i] : "";
      s += c;
      if (i + 1 < head.size()) s += std::string(w[i] - c.size() + 2, ' ');
    }
    while (!s.empty() && s.back() == ' ') s.pop_back();
    std::printf("%s\n", s.c_str());
  };
  line(head);
  for (const auto& r : rows) line(r);
}

// A VM's effective tags, each with where it comes from: "app=web (libvirt)",
// "env=prod (api)"; metadata values the API overrides follow, marked so.
std::string Tags(const json& vm) {
  auto text = [](const json& t) {
    return Str(t.value("scope", json(""))) + "=" + Str(t.value("value", json("")));
  };
  auto has = [&](const char* list, const std::string& tag) {
    for (const auto& t : vm.value(list, json::array()))
      if (text(t) == tag) return true;
    return false;
  };
  std::string s;
  auto add = [&](const std::string& item) { s += (s.empty() ? "" : ",") + item; };
  for (const auto& t : vm.value("tags", json::array())) {
    std::string tag = text(t);
    bool api = has("api_tags", tag), host = has("host_tags", tag);
    add(tag + (api && host ? " (api,libvirt)" : api ? " (api)" : host ? " (libvirt)" : ""));
  }
  for (const auto& t : vm.value("host_tags", json::array()))
    if (!has("tags", text(t))) add(text(t) + " (libvirt, overridden by api)");
  return s;
}

std::string Ips(const json& vm) {
  std::string s;
  for (const auto& n : vm.value("vnics", json::array()))
    for (const auto& a : n.value("addresses", json::array())) {
      if (!s.empty()) s += ",";
      s += Str(a["ip"]);
      if (a.value("quarantined", false)) s += " (quarantined)";
    }
  return s;
}

// Who enforces a VM: "hypervisor", "guest", or "-" (not reported).
std::string Enforcement(const json& vm) {
  std::string e = vm.value("enforcement", std::string());
  if (e == "ENFORCEMENT_HYPERVISOR") return "hypervisor";
  if (e == "ENFORCEMENT_GUEST") return "guest";
  return "-";
}

json ParseTag(const std::string& text) {
  size_t eq = text.find('=');
  if (eq == std::string::npos) return {{"scope", text}};
  return {{"scope", text.substr(0, eq)}, {"value", text.substr(eq + 1)}};
}

bool ReadJsonFile(const std::string& path, json* out) {
  std::stringstream ss;
  if (path == "-") {
    ss << std::cin.rdbuf();
  } else {
    std::ifstream f(path);
    if (!f) {
      std::fprintf(stderr, "dfwctl: cannot read %s\n", path.c_str());
      return false;
    }
    ss << f.rdbuf();
  }
  *out = json::parse(ss.str(), nullptr, false);
  if (out->is_discarded()) {
    std::fprintf(stderr, "dfwctl: %s is not valid JSON\n", path.c_str());
    return false;
  }
  return true;
}

struct Ctx {
  Api* api;
  bool json_out = false;
};

// VM id from an id or a name.
bool ResolveVm(Ctx& c, const std::string& ref, std::string* id, int* rc) {
  Reply r = c.api->Call("GET", "/api/v1/vms/" + ref);
  if (r.status == 200) {
    *id = ref;
    return true;
  }
  if (r.status != 404) {
    *rc = Fail(r);
    return false;
  }
  std::string token;
  for (;;) {
    Reply l = c.api->Call("GET", "/api/v1/vms?page_size=10000&page_token=" + token);
    if (l.status != 200) {
      *rc = Fail(l);
      return false;
    }
    for (const auto& vm : l.body.value("vms", json::array())) {
      if (vm.value("name", "") == ref) {
        *id = vm["id"];
        return true;
      }
    }
    token = l.body.value("next_page_token", "");
    if (token.empty()) break;
  }
  std::fprintf(stderr, "dfwctl: no VM with id or name '%s'\n", ref.c_str());
  *rc = kNotFound;
  return false;
}

int Show(Ctx& c, const Reply& r, const std::function<void(const json&)>& table) {
  if (r.status < 200 || r.status >= 300) return Fail(r);
  if (c.json_out) {
    std::printf("%s\n", r.body.dump(2).c_str());
  } else {
    table(r.body);
  }
  return kOk;
}

void VmTable(const json& vms) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& v : vms)
    rows.push_back({Str(v["id"]), Str(v.value("name", json(""))), Str(v.value("host", json(""))),
                    Enforcement(v), Tags(v), Ips(v), Str(v.value("revision", json("")))});
  PrintTable({"ID", "NAME", "HOST", "ENFORCED BY", "TAGS", "IPS", "REV"}, rows);
}

std::string Criteria(const json& g) {
  std::vector<std::string> ors;
  for (const auto& conj : g.value("criteria", json::array())) {
    std::string a;
    for (const auto& cnd : conj.value("conditions", json::array())) {
      if (!a.empty()) a += " & ";
      if (cnd.contains("tag"))
        a += "tag " + Str(cnd["tag"].value("scope", json(""))) + "=" +
             Str(cnd["tag"].value("value", json("*")));
      else if (cnd.contains("vm_name"))
        a += "name " + Str(cnd["vm_name"]["op"]) + " " + Str(cnd["vm_name"]["value"]);
      else if (cnd.contains("guest_os"))
        a += "os " + Str(cnd["guest_os"]["op"]) + " " + Str(cnd["guest_os"]["value"]);
      else if (cnd.contains("member_of_group"))
        a += "in " + Str(cnd["member_of_group"]);
    }
    ors.push_back(a);
  }
  std::string s;
  for (const auto& o : ors) s += (s.empty() ? "" : " | ") + o;
  if (g.contains("static_members")) s += (s.empty() ? "" : " | ") + std::string("static");
  return s;
}

void RulesTable(const json& body) {
  std::vector<std::vector<std::string>> rows;
  auto ep = [](const json& e) {
    if (e.value("any", false)) return std::string("any");
    std::string s = e.value("negate", false) ? "!" : "";
    for (const auto& id : e.value("address_set_ids", json::array()))
      s += (s.size() > 1 ? "," : "") + Str(id);
    return s;
  };
  for (const auto& rs : body.value("rulesets", json::array())) {
    for (const auto& r : rs.value("rules", json::array())) {
      std::string svc;
      for (const auto& s : r.value("services", json::array())) {
        if (!svc.empty()) svc += ",";
        svc += std::to_string(s.value("protocol", 0));
        for (const auto& p : s.value("destination_ports", json::array())) {
          svc += ":" + std::to_string(p.value("first", 0));
          if (p.value("last", 0) > p.value("first", 0))
            svc += "-" + std::to_string(p.value("last", 0));
        }
      }
      rows.push_back({Str(rs["vnic_id"]), std::to_string(r.value("rule_num", 0)),
                      Str(r["policy_id"]) + "/" + Str(r["rule_id"]),
                      ep(r.value("sources", json::object())),
                      ep(r.value("destinations", json::object())), svc.empty() ? "any" : svc,
                      Str(r.value("direction", json(""))).substr(10),
                      Str(r.value("action", json(""))).substr(7)});
    }
    rows.push_back(
        {Str(rs["vnic_id"]), "-", "default", "any", "any", "any", "BOTH",
         Str(rs.value("default_rule", json::object()).value("action", json("ACTION_DROP")))
             .substr(7)});
  }
  PrintTable({"VNIC", "NUM", "RULE", "SOURCES", "DESTINATIONS", "SERVICES", "DIR", "ACTION"}, rows);
  for (const auto& s : body.value("address_sets", json::array())) {
    std::string p;
    for (const auto& x : s.value("prefixes", json::array())) p += (p.empty() ? "" : " ") + Str(x);
    std::printf("  %s = {%s}\n", Str(s["id"]).c_str(), p.c_str());
  }
}

// "a,b,c" of a JSON array ("-" when empty).
std::string CommaList(const json& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ",") + Str(x);
  return s.empty() ? std::string("-") : s;
}

// A previewed vNIC's VM: its name, else its id.
std::string VmOf(const json& v) {
  std::string vm = Str(v.value("vm_name", json("")));
  return vm.empty() ? Str(v.value("vm_id", json(""))) : vm;
}

// A group change's impact preview (GroupImpact): the VMs it gains and loses,
// the vNICs whose rules change, the address sets and hosts sent a change.
void PrintGroupImpact(Ctx& c, const json& b) {
  if (c.json_out) {
    std::printf("%s\n", b.dump(2).c_str());
    return;
  }
  const json vnics = b.value("vnics", json::array()), hosts = b.value("hosts", json::array());
  const std::string what =
      !b.contains("group_id")
          ? std::string("tag change")
          : "group " + Str(b["group_id"]) + (b.value("creates", false) ? " created" : " replaced");
  std::printf(
      "dry run: %s at revision %s: +%zu / -%zu VM(s); %zu vNIC(s) change rules, "
      "%zu address set(s) change, on %zu host(s)\n",
      what.c_str(), Str(b.value("revision", json("0"))).c_str(),
      b.value("vms_added", json::array()).size(), b.value("vms_removed", json::array()).size(),
      vnics.size(), b.value("address_sets", json::array()).size(), hosts.size());
  if (b.contains("vms_added"))
    std::printf("  VMs joining: %s\n", CommaList(b["vms_added"]).c_str());
  if (b.contains("vms_removed"))
    std::printf("  VMs leaving: %s\n", CommaList(b["vms_removed"]).c_str());
  if (b.contains("groups_changed")) {
    std::printf("  %s: %s\n",
                b.contains("group_id") ? "including groups changing too" : "groups changing",
                CommaList(b["groups_changed"]).c_str());
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& v : vnics) {
    rows.push_back({Str(v["vnic_id"]), VmOf(v), Str(v["host_id"]),
                    std::to_string(v.value("rules_before", 0u)) + " -> " +
                        std::to_string(v.value("rules_after", 0u)),
                    CommaList(v.value("rules_added", json::array())),
                    CommaList(v.value("rules_removed", json::array()))});
  }
  if (!rows.empty()) PrintTable({"VNIC", "VM", "HOST", "RULES", "ADDED", "REMOVED"}, rows);
  rows.clear();
  for (const auto& s : b.value("address_sets", json::array())) {
    rows.push_back({"g:" + Str(s["group_id"]), "+" + std::to_string(s.value("addresses_added", 0u)),
                    "-" + std::to_string(s.value("addresses_removed", 0u)),
                    CommaList(s.value("host_ids", json::array()))});
  }
  if (!rows.empty()) PrintTable({"ADDRESS SET", "ADDED", "REMOVED", "HOSTS"}, rows);
  if (b.contains("excluded_vnic_ids")) {
    std::printf("  on the exclusion list (no rules either way): %s\n",
                CommaList(b["excluded_vnic_ids"]).c_str());
  }
  std::printf("nothing was changed\n");
}

// A policy change's impact preview (PolicyImpact): a summary line, the vNICs
// whose ruleset changes and the hosts that would be sent it. Returns kError
// when a vNIC would hold more rules than the budget.
int PrintImpact(Ctx& c, const json& b) {
  const json vnics = b.value("vnics", json::array()), hosts = b.value("hosts", json::array());
  const unsigned over = b.value("vnics_over_budget", 0u),
                 budget = b.value("rules_per_vnic_budget", 0u);
  if (c.json_out) {
    std::printf("%s\n", b.dump(2).c_str());
  } else {
    const char* what = b.value("deletes", false)   ? "deleted"
                       : b.value("creates", false) ? "created"
                                                   : "replaced";
    std::printf(
        "dry run: policy %s %s at revision %s would change %zu vNIC(s) on %zu host(s); "
        "budget %u rules per vNIC, largest after %u\n",
        Str(b["policy_id"]).c_str(), what, Str(b.value("revision", json("0"))).c_str(),
        vnics.size(), hosts.size(), budget, b.value("max_rules_after", 0u));
    std::vector<std::vector<std::string>> rows;
    for (const auto& v : vnics) {
      rows.push_back({Str(v["vnic_id"]), VmOf(v), Str(v["host_id"]),
                      std::to_string(v.value("rules_before", 0u)) + " -> " +
                          std::to_string(v.value("rules_after", 0u)) +
                          (v.value("over_budget", false) ? " OVER BUDGET" : ""),
                      CommaList(v.value("rules_added", json::array())),
                      CommaList(v.value("rules_removed", json::array())),
                      CommaList(v.value("rules_changed", json::array())) +
                          (v.value("reordered", false) ? " (reordered)" : ""),
                      CommaList(v.value("revalidating_rules", json::array()))});
    }
    if (!rows.empty()) {
      PrintTable({"VNIC", "VM", "HOST", "RULES", "ADDED", "REMOVED", "CHANGED", "RE-CHECKS"}, rows);
    }
    rows.clear();
    for (const auto& h : hosts) {
      rows.push_back({Str(h["host_id"]), Str(h.value("state", json(""))).substr(18),
                      Str(h.value("realized_revision", json("0")))});
    }
    if (!rows.empty()) PrintTable({"HOST", "STATE", "REALIZED"}, rows);
    if (b.value("vnics_revalidating", 0u) > 0) {
      std::printf(
          "RE-CHECKS: connections these revalidating rules admitted are re-checked at "
          "their next packet and cut if the new rules deny them\n");
    }
    std::printf("nothing was changed\n");
  }
  if (over > 0) {
    std::fprintf(stderr, "dfwctl: %u vNIC(s) would hold more than %u rules\n", over, budget);
    return kError;
  }
  return kOk;
}

// `dry`: the query of a policy dry run ("?dry_run=true..."): each item's
// impact preview is shown and nothing is applied.
int ApplyItems(Ctx& c, const std::string& kind, const std::vector<json>& items,
               const std::string& file, const std::string& dry = "", bool print = true);

int Apply(Ctx& c, const std::string& kind, const std::string& file, const std::string& dry = "") {
  json doc;
  if (!ReadJsonFile(file, &doc)) return kUsage;
  std::vector<json> items;
  if (doc.is_array())
    items.assign(doc.begin(), doc.end());
  else
    items.push_back(doc);
  return ApplyItems(c, kind, items, file, dry);
}

// PUT each item (a group, a policy, a VM) in order; the first refused stops.
int ApplyItems(Ctx& c, const std::string& kind, const std::vector<json>& items,
               const std::string& file, const std::string& dry, bool print) {
  int over_budget = kOk;  // a dry run previews every item, then says so
  for (const auto& it : items) {
    if (!it.is_object() || !it.contains("id")) {
      std::fprintf(stderr, "dfwctl: every %s in %s needs an \"id\"\n", kind.c_str(), file.c_str());
      return kInvalid;
    }
    Reply r = c.api->Call("PUT", "/api/v1/" + kind + "/" + Str(it["id"]) + dry, it.dump());
    if (!dry.empty() && r.status == 200) {
      if (kind == "groups") {
        PrintGroupImpact(c, r.body);
      } else if (int rc = PrintImpact(c, r.body); rc != kOk) {
        over_budget = rc;
      }
      continue;
    }
    if (r.status != 200) {
      std::fprintf(stderr, "dfwctl: %s '%s' not applied\n", kind.c_str(), Str(it["id"]).c_str());
      return Fail(r);
    }
    if (!print) continue;
    if (c.json_out)
      std::printf("%s\n", r.body.dump(2).c_str());
    else {
      std::string noun = kind == "policies" ? "policy" : kind.substr(0, kind.size() - 1);
      std::printf("%s %s applied at revision %s\n", noun.c_str(), Str(it["id"]).c_str(),
                  Str(r.body["revision"]).c_str());
    }
  }
  return over_budget;
}

// `trace FROM TO (--tcp P | --udp P | --sctp P | --icmp [T[/C]] | --icmp6 [T[/C]]
// | --protocol N [--port P]) [--sport P] [--from-ip IP] [--to-ip IP]`: which
// rule of which policy decides a new connection, at the sender's egress and
// the receiver's ingress, and whether each enforcing host has realized it.
void PrintTrace(const json& b);
void PrintObserved(const json& b);

int Trace(Ctx& c, const std::vector<std::string>& a) {
  std::vector<std::string> vms;
  std::string query;
  json flow = json::object();  // the same, as a TraceRequest (--live, --inject)
  auto add = [&](const std::string& k, const std::string& v) {
    query += (query.empty() ? "" : "&") + k + "=" + v;
    flow[k] = v;
    if (k == "icmp_type") flow["has_icmp_type"] = true;
  };
  bool proto_given = false, live = false, inject = false;
  std::string timeout;
  for (size_t i = 1; i < a.size(); ++i) {
    const std::string& o = a[i];
    const bool has_value = i + 1 < a.size() && a[i + 1].rfind("--", 0) != 0;
    auto value = [&]() -> std::string { return has_value ? a[++i] : ""; };
    if (o == "--live" || o == "--inject") {
      (o == "--live" ? live : inject) = true;
    } else if (o == "--timeout") {
      timeout = value();
      if (timeout.empty() || timeout.find_first_not_of("0123456789") != std::string::npos ||
          timeout.size() > 3) {
        std::fprintf(stderr, "dfwctl: --timeout wants seconds (at most 120)\n");
        return kUsage;
      }
    } else if (o == "--tcp" || o == "--udp" || o == "--sctp") {
      std::string port = value();
      if (port.empty()) {
        std::fprintf(stderr, "dfwctl: %s needs a destination port\n", o.c_str());
        return kUsage;
      }
      add("protocol", o == "--tcp" ? "6" : o == "--udp" ? "17" : "132");
      add("destination_port", port);
      proto_given = true;
    } else if (o == "--icmp" || o == "--icmp6") {
      add("protocol", o == "--icmp" ? "1" : "58");
      std::string tc = value();  // TYPE or TYPE/CODE; none: an echo request
      if (!tc.empty()) {
        size_t slash = tc.find('/');
        add("icmp_type", tc.substr(0, slash));
        if (slash != std::string::npos) add("icmp_code", tc.substr(slash + 1));
      }
      proto_given = true;
    } else if (o == "--protocol" || o == "--port" || o == "--sport" || o == "--from-ip" ||
               o == "--to-ip") {
      std::string v = value();
      if (v.empty()) {
        std::fprintf(stderr, "dfwctl: %s needs a value\n", o.c_str());
        return kUsage;
      }
      add(o == "--protocol"  ? "protocol"
          : o == "--port"    ? "destination_port"
          : o == "--sport"   ? "source_port"
          : o == "--from-ip" ? "from_ip"
                             : "to_ip",
          v);
      proto_given |= o == "--protocol";
    } else if (o.rfind("--", 0) == 0) {
      std::fprintf(stderr, "dfwctl: unknown option %s\n", o.c_str());
      return kUsage;
    } else {
      vms.push_back(o);
    }
  }
  if (vms.size() != 2 || !proto_given) {
    std::fprintf(stderr, "dfwctl: trace needs two VMs and a protocol: trace FROM TO --tcp PORT\n%s",
                 kUsageText);
    return kUsage;
  }
  int rc = kOk;
  std::string from, to;
  if (!ResolveVm(c, vms[0], &from, &rc) || !ResolveVm(c, vms[1], &to, &rc)) return rc;
  add("from_vm_id", from);
  add("to_vm_id", to);
  if (live || inject) {
    json body = {{"flow", flow}, {"inject", inject}};
    if (!timeout.empty()) body["timeout_ms"] = std::stoul(timeout) * 1000;
    if (!inject && timeout.empty()) {
      std::fprintf(stderr, "dfwctl: waiting up to 30 s for the flow's next packet...\n");
    }
    return Show(c, c.api->Call("POST", "/api/v1/probes", body.dump()), [](const json& b) {
      PrintTrace(b.value("expected", json::object()));
      PrintObserved(b);
    });
  }
  return Show(c, c.api->Call("GET", "/api/v1/trace?" + query), PrintTrace);
}

// What a trace's packets met (a ProbeFlowResponse): each end's capture.
void PrintObserved(const json& b) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& o : b.value("observed", json::array())) {
    const json cap = o.value("capture", json::object());
    const bool met = Str(cap.value("state", json(""))) == "STATE_MET";
    std::string rule = "-";
    if (met && cap.value("rule_num", 0) != 0) {
      rule = Str(cap.value("policy_id", json(""))) + "/" + Str(cap.value("rule_id", json(""))) +
             " (#" + Str(cap.value("rule_num", json(0))) + ")";
    }
    rows.push_back(
        {Str(o.value("kind", json("KIND_UNSPECIFIED"))).substr(5),
         Str(o.value("host_id", json(""))), Str(o.value("vnic_id", json(""))),
         !o.value("captured", false) ? "not captured"
         : met                       ? (cap.value("forwarded", false) ? "forwarded" : "dropped")
                                     : Str(cap.value("state", json("STATE_UNSPECIFIED"))).substr(6),
         met ? Str(cap.value("stage", json("CAPTURE_STAGE_UNSPECIFIED"))).substr(14) : "-", rule,
         met ? Str(cap.value("src", json(""))) + " > " + Str(cap.value("dst", json(""))) : "-",
         Str(o.value("note", json("")))});
  }
  std::printf("\n");
  PrintTable({"OBSERVED", "HOST", "VNIC", "PACKET", "STAGE", "RULE", "FLOW", "NOTE"}, rows);
  std::printf("\nactual: %s (%s the policy)\n", Str(b.value("actual", json(""))).c_str(),
              b.value("agrees", false) ? "agrees with" : "DIFFERS from");
}

void PrintTrace(const json& b) {
  {
    std::vector<std::vector<std::string>> rows;
    for (const auto& st : b.value("stages", json::array())) {
      const bool enforced = st.value("enforced", false);
      std::string rule = !enforced                     ? "-"
                         : st.value("excluded", false) ? "excluded"
                         : st.value("default_rule", false)
                             ? "default"
                             : Str(st.value("policy_id", json(""))) + "/" +
                                   Str(st.value("rule_id", json(""))) + " (#" +
                                   Str(st.value("rule_num", json(0))) + ")";
      const json host = st.value("host", json::object());
      std::string realized =
          !enforced
              ? "-"
              : Str(host.value("realized_revision", json("0"))) + " (" +
                    Str(host.value("state", json("REALIZATION_STATE_UNSPECIFIED"))).substr(18) +
                    ")";
      std::string action = Str(st.value("action", json("ACTION_DROP"))).substr(7);
      if (st.value("audit", false)) action += " (audit)";
      rows.push_back({Str(st.value("kind", json("KIND_UNSPECIFIED"))).substr(5),
                      Str(st.value("vm_name", st.value("vm_id", json("")))),
                      Str(st.value("address", json(""))), Str(st.value("vnic_id", json(""))),
                      enforced ? Str(st.value("host_id", json(""))) : "not enforced", realized,
                      rule, action, st.value("passes", false) ? "passes" : "stops"});
    }
    PrintTable({"STAGE", "VM", "ADDRESS", "VNIC", "HOST", "REALIZED", "RULE", "ACTION", "RESULT"},
               rows);
    std::printf("\n");
    for (const auto& st : b.value("stages", json::array()))
      std::printf("  %s\n", Str(st.value("explanation", json(""))).c_str());
    std::printf("\n");
    if (b.value("allowed", false)) {
      std::printf("verdict: ALLOWED (controller revision %s)\n",
                  Str(b.value("revision", json("0"))).c_str());
    } else {
      std::printf("verdict: %s at %s (controller revision %s)\n",
                  Str(b.value("action", json("ACTION_DROP"))).substr(7).c_str(),
                  Str(b.value("decided_by", json("KIND_UNSPECIFIED"))).substr(5).c_str(),
                  Str(b.value("revision", json("0"))).c_str());
    }
  }
}

// `probe --from G[,G] --to G[,G] (--tcp P | --udp P | --icmp)... [--timeout S]`:
// a probe packet (ProbeFlow with inject) from each VM of the --from groups
// to each VM of the --to groups (not to itself), per service; the expected
// verdict (the policy) against the actual one (the dataplanes). Exit 1 on
// any difference, so a CI job can hold a policy to its intent.
int Probe(Ctx& c, const std::vector<std::string>& a) {
  std::vector<std::string> from_groups, to_groups;
  std::vector<std::pair<std::string, std::string>> services;  // (protocol, port)
  std::string timeout_ms;
  auto split = [](const std::string& s, std::vector<std::string>* out) {
    size_t start = 0;
    while (start <= s.size()) {
      size_t comma = s.find(',', start);
      std::string item = s.substr(start, comma == std::string::npos ? comma : comma - start);
      if (!item.empty()) out->push_back(item);
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
  };
  for (size_t i = 1; i < a.size(); ++i) {
    const std::string& o = a[i];
    const bool has_value = i + 1 < a.size() && a[i + 1].rfind("--", 0) != 0;
    std::string v = has_value ? a[i + 1] : "";
    if (o == "--icmp") {
      services.emplace_back("1", "");
      continue;
    }
    if (v.empty()) {
      std::fprintf(stderr, "dfwctl: probe: %s needs a value\n%s", o.c_str(), kUsageText);
      return kUsage;
    }
    ++i;
    if (o == "--from") {
      split(v, &from_groups);
    } else if (o == "--to") {
      split(v, &to_groups);
    } else if (o == "--tcp" || o == "--udp") {
      services.emplace_back(o == "--tcp" ? "6" : "17", v);
    } else if (o == "--timeout") {
      if (v.find_first_not_of("0123456789") != std::string::npos || v.size() > 3) {
        std::fprintf(stderr, "dfwctl: probe: --timeout wants seconds\n");
        return kUsage;
      }
      timeout_ms = std::to_string(std::stoul(v) * 1000);
    } else {
      std::fprintf(stderr, "dfwctl: probe: unknown option %s\n%s", o.c_str(), kUsageText);
      return kUsage;
    }
  }
  if (from_groups.empty() || to_groups.empty() || services.empty()) {
    std::fprintf(stderr, "dfwctl: probe needs --from GROUP, --to GROUP and a service\n%s",
                 kUsageText);
    return kUsage;
  }
  // Each group's members, and the VMs' names for the table.
  auto members = [&](const std::vector<std::string>& groups, std::vector<std::string>* vms,
                     int* rc) {
    for (const auto& g : groups) {
      Reply r = c.api->Call("GET", "/api/v1/groups/" + g + "/members");
      if (r.status != 200) {
        *rc = Fail(r);
        return false;
      }
      for (const auto& id : r.body.value("vm_ids", json::array())) {
        if (std::find(vms->begin(), vms->end(), Str(id)) == vms->end()) vms->push_back(Str(id));
      }
    }
    return true;
  };
  int rc = kOk;
  std::vector<std::string> from_vms, to_vms;
  if (!members(from_groups, &from_vms, &rc) || !members(to_groups, &to_vms, &rc)) return rc;
  std::map<std::string, std::string> names;
  for (const auto* list : {&from_vms, &to_vms}) {
    for (const auto& id : *list) {
      Reply r = c.api->Call("GET", "/api/v1/vms/" + id);
      names[id] = r.status == 200 ? Str(r.body.value("name", json(id))) : id;
    }
  }
  std::vector<std::vector<std::string>> rows;
  json out = json::array();
  int differences = 0, errors = 0;
  for (const auto& from : from_vms) {
    for (const auto& to : to_vms) {
      if (from == to) continue;
      for (const auto& [proto, port] : services) {
        json flow = {{"from_vm_id", from}, {"to_vm_id", to}, {"protocol", proto}};
        if (!port.empty()) flow["destination_port"] = port;
        json body = {{"flow", flow}, {"inject", true}};
        if (!timeout_ms.empty()) body["timeout_ms"] = timeout_ms;
        Reply r = c.api->Call("POST", "/api/v1/probes", body.dump());
        const std::string service = (proto == "6"    ? "tcp/"
                                     : proto == "17" ? "udp/"
                                                     : "icmp") +
                                    port;
        if (r.status != 200) {
          ++errors;
          std::string why = Str(r.body.value("message", json(r.raw)));
          rows.push_back({names[from], names[to], service, "-", "-", "ERROR: " + why});
          out.push_back(
              {{"from_vm_id", from}, {"to_vm_id", to}, {"service", service}, {"error", why}});
          continue;
        }
        const json& b = r.body;
        const bool expected = b.value("expected", json::object()).value("allowed", false);
        const bool agrees = b.value("agrees", false);
        differences += agrees ? 0 : 1;
        std::string where;
        for (const auto& o : b.value("observed", json::array())) {
          const json cap = o.value("capture", json::object());
          if (Str(cap.value("state", json(""))) == "STATE_MET" && !cap.value("forwarded", true)) {
            where = " at " + Str(o.value("kind", json("KIND_"))).substr(5);
          }
        }
        rows.push_back({names[from], names[to], service, expected ? "allowed" : "denied",
                        Str(b.value("actual", json(""))) + where, agrees ? "ok" : "DIFFERS"});
        out.push_back({{"from_vm_id", from}, {"to_vm_id", to}, {"service", service}, {"probe", b}});
      }
    }
  }
  if (c.json_out) {
    std::printf("%s\n", out.dump(2).c_str());
  } else {
    PrintTable({"FROM", "TO", "SERVICE", "EXPECTED", "ACTUAL", "RESULT"}, rows);
    std::printf("\n%zu probes: %d differ from the policy, %d failed\n", rows.size(), differences,
                errors);
  }
  return differences || errors ? kError : kOk;
}

// dfwctl exclusion list | add (--vm VM | --vnic VNIC) --reason TEXT | remove ID
int Exclusion(Ctx& c, const std::vector<std::string>& a) {
  const std::string verb = a.size() > 1 ? a[1] : "list";
  if (verb == "list") {
    return Show(c, c.api->Call("GET", "/api/v1/exclusions"), [](const json& b) {
      std::vector<std::vector<std::string>> rows;
      for (const auto& e : b.value("exclusions", json::array())) {
        const bool vm = !Str(e.value("vm_id", json(""))).empty();
        std::string vnics, hosts;
        for (const auto& v : e.value("covered_vnic_ids", json::array()))
          vnics += (vnics.empty() ? "" : ",") + Str(v);
        for (const auto& h : e.value("host_ids", json::array()))
          hosts += (hosts.empty() ? "" : ",") + Str(h);
        rows.push_back({vm ? "vm:" + Str(e["vm_id"]) : "vnic:" + Str(e["vnic_id"]),
                        vnics.empty() ? "(none known)" : vnics, hosts.empty() ? "-" : hosts,
                        Str(e.value("reason", json(""))), Str(e.value("created_by", json(""))),
                        Str(e.value("revision", json("0")))});
      }
      PrintTable({"ID", "VNICS NOT FILTERED", "HOSTS", "REASON", "BY", "REV"}, rows);
    });
  }
  if (verb == "add") {
    std::string vm, vnic, reason;
    for (size_t i = 2; i < a.size(); ++i) {
      const bool has_value = i + 1 < a.size();
      if ((a[i] == "--vm" || a[i] == "--vnic" || a[i] == "--reason") && has_value) {
        (a[i] == "--vm" ? vm : a[i] == "--vnic" ? vnic : reason) = a[i + 1];
        ++i;
      } else {
        std::fprintf(stderr, "dfwctl: exclusion add: unexpected '%s'\n%s", a[i].c_str(),
                     kUsageText);
        return kUsage;
      }
    }
    if (vm.empty() == vnic.empty() || reason.empty()) {
      std::fprintf(stderr,
                   "dfwctl: exclusion add needs --vm VM or --vnic VNIC (one), and --reason TEXT\n");
      return kUsage;
    }
    json body = {{"reason", reason}};
    if (!vm.empty()) {
      int rc = kOk;
      std::string id;
      if (!ResolveVm(c, vm, &id, &rc)) return rc;
      body["vm_id"] = id;
    } else {
      body["vnic_id"] = vnic;
    }
    return Show(c, c.api->Call("POST", "/api/v1/exclusions", body.dump()), [](const json& e) {
      std::string vnics;
      for (const auto& v : e.value("covered_vnic_ids", json::array()))
        vnics += (vnics.empty() ? "" : ", ") + Str(v);
      std::printf(
          "excluded at revision %s: %s (not filtered by the firewall; OVS still checks "
          "its addresses)\n",
          Str(e.value("revision", json("0"))).c_str(),
          vnics.empty() ? "no vNIC known yet" : vnics.c_str());
    });
  }
  if ((verb == "remove" || verb == "delete") && a.size() == 3) {
    std::string id = a[2];
    if (id.rfind("vm:", 0) == 0) {  // a VM may be named
      int rc = kOk;
      std::string vm_id;
      if (!ResolveVm(c, id.substr(3), &vm_id, &rc)) return rc;
      id = "vm:" + vm_id;
    }
    return Show(c, c.api->Call("DELETE", "/api/v1/exclusions/" + id), [&](const json& b) {
      std::printf("%s filtered again at revision %s\n", id.c_str(),
                  Str(b.value("revision", json("0"))).c_str());
    });
  }
  std::fprintf(stderr,
               "dfwctl: exclusion list | add (--vm VM | --vnic VNIC) --reason TEXT | "
               "remove (vm:VM | vnic:VNIC)\n");
  return kUsage;
}

// A query value, percent-encoded (RFC 3986 unreserved characters kept).
std::string QueryValue(const std::string& v) {
  static const char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char ch : v) {
    if (std::isalnum(ch) || ch == '-' || ch == '.' || ch == '_' || ch == '~') {
      out += static_cast<char>(ch);
    } else {
      out += '%';
      out += kHex[ch >> 4];
      out += kHex[ch & 15];
    }
  }
  return out;
}

// One observed flow record as a line: time (UTC), host, verdict, VM, direction,
// protocol, source -> destination, policy/rule, reason. A loss marker says
// how many records were lost where.
void PrintFlow(const json& f) {
  if (f.contains("lost")) {
    std::printf("!! %s records lost on %s %s (not seen by this stream)\n", Str(f["lost"]).c_str(),
                f.value("lost_where", "").c_str(), f.value("host_id", "").c_str());
    return;
  }
  const json r = f.value("record", json::object());
  std::string when = "-";
  if (r.contains("time_ns")) {
    const uint64_t ms = std::stoull(Str(r["time_ns"])) / 1000000;
    std::time_t secs = static_cast<std::time_t>(ms / 1000);
    std::tm tm{};
    gmtime_r(&secs, &tm);
    char buf[32];
    std::snprintf(buf, sizeof buf, "%02d:%02d:%02d.%03uZ", tm.tm_hour, tm.tm_min, tm.tm_sec,
                  static_cast<unsigned>(ms % 1000));
    when = buf;
  }
  std::string kind = Str(r.value("kind", json("KIND_UNSPECIFIED")));
  kind = kind.rfind("KIND_", 0) == 0 ? kind.substr(5) : kind;
  std::string vm = f.value("vm_name", "");
  if (vm.empty()) vm = r.value("vnic_id", "?");
  const std::string dir = r.value("direction", "") == "DIRECTION_IN" ? "in" : "out";
  const int proto = r.value("protocol", 0);
  const std::string proto_name = proto == 6     ? "tcp"
                                 : proto == 17  ? "udp"
                                 : proto == 1   ? "icmp"
                                 : proto == 58  ? "icmp6"
                                 : proto == 132 ? "sctp"
                                                : std::to_string(proto);
  std::string by = f.value("policy_name", "");
  if (by.empty()) by = r.value("policy_id", "");
  if (!by.empty()) by += "/" + r.value("rule_id", "");
  if (by.empty()) by = "default";
  std::string reason = r.value("reason", "");
  // The peer VM's name beside its address: "198.18.0.2:5432 (db-1)".
  std::string src = r.value("src", ""), dst = r.value("dst", "");
  if (const std::string peer = f.value("peer_vm_name", ""); !peer.empty()) {
    (dir == "in" ? src : dst) += " (" + peer + ")";
  }
  std::printf("%s %-12s %-8s %-16s %-3s %-5s %s -> %s %s%s%s\n", when.c_str(),
              f.value("host_id", "").c_str(), kind.c_str(), vm.c_str(), dir.c_str(),
              proto_name.c_str(), src.c_str(), dst.c_str(), by.c_str(),
              reason.empty() || reason == "none" ? "" : " reason=",
              reason.empty() || reason == "none" ? "" : reason.c_str());
}

// GET /api/v1/flows with `query` (filters): the newest `last` records held
// (0: none, only the cursor), then, with `follow`, every record from then on until `timeout_s` (0:
// no end). Each record, loss marker and {"missed": N} goes to `each` in order; it returns false to
// stop.
int ReadFlows(Ctx& c, const std::string& query, uint64_t last, bool follow, uint64_t timeout_s,
              const std::function<bool(const json&)>& each) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  uint64_t cursor = 0;
  for (bool first = true;; first = false) {
    uint64_t wait_ms = first ? 0 : 10000;
    if (timeout_s) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                            deadline - std::chrono::steady_clock::now())
                            .count();
      if (!first && left <= 0) break;
      wait_ms = std::min<uint64_t>(wait_ms, static_cast<uint64_t>(std::max<int64_t>(left, 0)));
    }
    const uint64_t limit = first ? std::max<uint64_t>(last, 1) : 1000;
    Reply r = c.api->Call("GET", "/api/v1/flows?cursor=" + std::to_string(cursor) +
                                     "&limit=" + std::to_string(limit) +
                                     "&wait_ms=" + std::to_string(wait_ms) + query);
    if (r.status != 200) return Fail(r);
    cursor = std::stoull(Str(r.body.value("cursor", json("0"))));
    if (const uint64_t missed = std::stoull(Str(r.body.value("missed", json("0")))); missed) {
      if (!each(json{{"missed", std::to_string(missed)}})) return kOk;
    }
    if (first && !r.body.value("watching", false)) {
      std::fprintf(stderr,
                   "dfwctl: the hosts were not sending flow records; they are asked "
                   "to now%s\n",
                   follow ? "" : " (run again, or use --follow)");
    }
    for (const auto& f : r.body.value("flows", json::array())) {
      if (first && last == 0) break;  // held before: only the cursor was wanted
      if (!each(f)) {
        std::fflush(stdout);
        return kOk;
      }
    }
    std::fflush(stdout);
    if (!follow) break;
  }
  return kOk;
}

// dfwctl observe: the flow records hosts relay through the controller
// (GET /api/v1/flows). Without --follow, the newest records the controller
// holds; with it, every record from then on until --timeout or --max.
int Observe(Ctx& c, const std::vector<std::string>& a) {
  std::string query;
  bool follow = false;
  uint64_t last = 20, max = 0, timeout_s = 0;
  static const std::pair<const char*, const char*> kFilters[] = {{"--vm", "vm"},
                                                                 {"--host", "host"},
                                                                 {"--group", "group"},
                                                                 {"--verdict", "verdict"},
                                                                 {"--policy", "policy"},
                                                                 {"--rule", "rule"},
                                                                 {"--protocol", "protocol"},
                                                                 {"--port", "port"},
                                                                 {"--ip", "ip"}};
  for (size_t i = 1; i < a.size(); ++i) {
    const std::string& o = a[i];
    if (o == "--follow" || o == "-f") {
      follow = true;
      continue;
    }
    if (o.rfind("--", 0) != 0) {
      std::fprintf(stderr,
                   "dfwctl: observe: unexpected argument '%s' (filters are options: --vm %s)\n",
                   o.c_str(), o.c_str());
      return kUsage;
    }
    if (i + 1 >= a.size()) {
      std::fprintf(stderr, "dfwctl: observe: %s needs a value\n", o.c_str());
      return kUsage;
    }
    const std::string& v = a[++i];
    bool known = false;
    for (const auto& [flag, param] : kFilters) {
      if (o == flag) {
        query += std::string("&") + param + "=" + QueryValue(v);
        known = true;
      }
    }
    if (known) continue;
    uint64_t* num = o == "--last"      ? &last
                    : o == "--max"     ? &max
                    : o == "--timeout" ? &timeout_s
                                       : nullptr;
    if (!num) {
      std::fprintf(stderr, "dfwctl: observe: unknown option %s\n%s", o.c_str(), kUsageText);
      return kUsage;
    }
    if (v.empty() || v.find_first_not_of("0123456789") != std::string::npos || v.size() > 9) {
      std::fprintf(stderr, "dfwctl: observe: %s: '%s' is not a number\n", o.c_str(), v.c_str());
      return kUsage;
    }
    *num = std::stoull(v);
  }
  if (last == 0 || last > 10000) {
    std::fprintf(stderr, "dfwctl: observe: --last: 1..10000\n");
    return kUsage;
  }
  uint64_t shown = 0;
  return ReadFlows(c, query, last, follow, timeout_s, [&](const json& f) {
    if (f.contains("missed")) {
      if (c.json_out) {
        std::printf("%s\n", f.dump().c_str());
      } else {
        std::printf(
            "!! %s records missed: they left the controller's buffer before this "
            "stream read them\n",
            Str(f["missed"]).c_str());
      }
      return true;
    }
    if (c.json_out) {
      std::printf("%s\n", f.dump().c_str());
    } else {
      PrintFlow(f);
    }
    return f.contains("lost") || !max || ++shown < max;
  });
}

// Every item of a paged list (GET path?page_size=...&page_token=...).
int ListAll(Ctx& c, const std::string& path, const char* field,
            const std::function<void(const json&)>& each) {
  std::string token;
  do {
    Reply r = c.api->Call("GET", path + "?page_size=10000&page_token=" + QueryValue(token));
    if (r.status != 200) return Fail(r);
    for (const auto& item : r.body.value(field, json::array())) each(item);
    token = r.body.value("next_page_token", "");
  } while (!token.empty());
  return kOk;
}

// dfwctl policy recommend: a draft policy from the connections flow records
// show (allowed and audit), over a window followed now or from a file that
// `dfwctl -o json observe` wrote (recommend.h says how it is drawn).
int Recommend(Ctx& c, const std::vector<std::string>& a) {
  std::string query = "&verdict=allowed,audit", from_file, write_dir;
  uint64_t window_s = 60, last = 0, priority = 100;
  bool apply = false;
  dfw::recommend::Options opt;
  for (size_t i = 2; i < a.size(); ++i) {
    const std::string& o = a[i];
    if (o == "--apply" || o == "--enforce") {
      (o == "--apply" ? apply : opt.enforce) = true;
      continue;
    }
    if (i + 1 >= a.size() || o.rfind("--", 0) != 0) {
      std::fprintf(stderr, "dfwctl: policy recommend: %s\n%s",
                   o.rfind("--", 0) == 0 ? (o + " needs a value").c_str()
                                         : ("unexpected argument '" + o + "'").c_str(),
                   kUsageText);
      return kUsage;
    }
    const std::string& v = a[++i];
    if (o == "--vm" || o == "--group" || o == "--host") {
      query += "&" + o.substr(2) + "=" + QueryValue(v);
    } else if (o == "--from-file") {
      from_file = v;
    } else if (o == "--write-dir") {
      write_dir = v;
    } else if (o == "--id") {
      opt.policy_id = v;
    } else if (o == "--scope") {
      opt.scope = v;
    } else if (o == "--window" || o == "--last" || o == "--priority") {
      if (v.empty() || v.size() > 9 || v.find_first_not_of("0123456789") != std::string::npos) {
        std::fprintf(stderr, "dfwctl: policy recommend: %s: '%s' is not a number\n", o.c_str(),
                     v.c_str());
        return kUsage;
      }
      (o == "--window" ? window_s : o == "--last" ? last : priority) = std::stoull(v);
    } else {
      std::fprintf(stderr, "dfwctl: policy recommend: unknown option %s\n%s", o.c_str(),
                   kUsageText);
      return kUsage;
    }
  }
  if (last > 10000 || priority > 1000000 || window_s == 0) {
    std::fprintf(stderr,
                 "dfwctl: policy recommend: --window 1.., --last 0..10000, --priority "
                 "0..1000000\n");
    return kUsage;
  }
  opt.priority = static_cast<int>(priority);

  // The connections, and what was lost on the way.
  std::vector<dfw::recommend::Connection> conns;
  uint64_t records = 0, lost = 0;
  bool bad_count = false;  // a loss marker whose count is no number (a file's)
  auto take = [&](const json& f) {
    if (f.contains("lost") || f.contains("missed")) {
      const std::string n = Str(f.contains("lost") ? f["lost"] : f["missed"]);
      if (n.empty() || n.size() > 19 || n.find_first_not_of("0123456789") != std::string::npos) {
        bad_count = true;
        return false;
      }
      lost += std::stoull(n);
    } else if (auto conn = dfw::recommend::ConnectionOf(f)) {
      ++records;
      conns.push_back(*conn);
    }
    return true;
  };
  if (!from_file.empty()) {
    std::ifstream in(from_file);
    if (!in) {
      std::fprintf(stderr, "dfwctl: cannot read %s\n", from_file.c_str());
      return kUsage;
    }
    size_t n = 0;
    for (std::string line; std::getline(in, line);) {
      ++n;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      json f = json::parse(line, nullptr, false);
      if (f.is_discarded() || !f.is_object()) {
        std::fprintf(stderr,
                     "dfwctl: %s:%zu: not a JSON object (a line of `dfwctl -o json observe`)\n",
                     from_file.c_str(), n);
        return kInvalid;
      }
      if (!take(f)) {
        std::fprintf(stderr, "dfwctl: %s:%zu: \"lost\"/\"missed\": not a count\n",
                     from_file.c_str(), n);
        return kInvalid;
      }
    }
  } else {
    std::fprintf(stderr, "dfwctl: observing allowed and audit flow records for %llu s...\n",
                 static_cast<unsigned long long>(window_s));
    // The first read (the newest `last` held) also asks the hosts to send.
    if (int rc = ReadFlows(c, query, last, true, window_s, take); rc != kOk) return rc;
    if (bad_count) {
      std::fprintf(stderr,
                   "dfwctl: policy recommend: the controller sent a loss count that is "
                   "no number\n");
      return kError;
    }
  }

  // What the ends are: every VM's tags, the ends' groups and their members.
  dfw::recommend::Facts facts;
  if (int rc = ListAll(c, "/api/v1/vms", "vms",
                       [&](const json& vm) {
                         dfw::recommend::VmFacts& f = facts.vms[vm.value("id", "")];
                         f.name = vm.value("name", "");
                         for (const auto& t : vm.value("tags", json::array()))
                           f.tags.emplace_back(t.value("scope", ""), t.value("value", ""));
                       });
      rc != kOk)
    return rc;
  std::set<std::string> ends;
  for (const auto& conn : conns) {
    for (const std::string* vm : {&conn.client_vm, &conn.server_vm})
      if (facts.vms.count(*vm)) ends.insert(*vm);  // a VM gone since: its address stands
  }
  for (const std::string& id : ends) {
    Reply groups = c.api->Call("GET", "/api/v1/vms/" + id + "/groups");
    if (groups.status == 404) {
      facts.vms.erase(id);
      continue;
    }
    if (groups.status != 200) return Fail(groups);
    for (const auto& g : groups.body.value("groups", json::array())) {
      const std::string gid = g.value("group_id", "");
      facts.vms[id].groups.push_back(gid);
      if (facts.group_members.count(gid)) continue;
      Reply m = c.api->Call("GET", "/api/v1/groups/" + gid + "/members");
      if (m.status != 200) return Fail(m);
      auto& members = facts.group_members[gid];
      for (const auto& v : m.body.value("vm_ids", json::array())) members.push_back(Str(v));
    }
  }
  if (int rc = ListAll(c, "/api/v1/groups", "groups",
                       [&](const json& g) { facts.existing_group_ids.insert(g.value("id", "")); });
      rc != kOk)
    return rc;

  const auto rec = dfw::recommend::Recommend(conns, facts, opt);
  const size_t connections = rec.observed.size();
  if (c.json_out) {
    std::printf("%s\n", json{{"policy", rec.policy},
                             {"groups", rec.groups},
                             {"observed", rec.observed},
                             {"records", records},
                             {"lost", lost},
                             {"error", rec.error}}
                            .dump(2)
                            .c_str());
  } else {
    std::printf("%zu connection(s) from %llu flow record(s)", connections,
                static_cast<unsigned long long>(records));
    if (lost) {
      std::printf("; %llu record(s) lost or missed on the way: the draft may miss connections",
                  static_cast<unsigned long long>(lost));
    }
    std::printf("\n");
    if (!rec.groups.empty()) {
      std::printf("\ngroups to create:\n");
      std::vector<std::vector<std::string>> rows;
      for (const auto& g : rec.groups) {
        std::string members;
        for (const auto& cj : g.value("criteria", json::array()))
          for (const auto& cond : cj.value("conditions", json::array()))
            members += (members.empty() ? "tags " : " & ") + Str(cond["tag"]["scope"]) + "=" +
                       Str(cond["tag"]["value"]);
        for (const auto& v :
             g.value("static_members", json::object()).value("vm_ids", json::array()))
          members += (members.empty() ? "VM " : ", ") + Str(v);
        rows.push_back({Str(g["id"]), members, Str(g["description"])});
      }
      PrintTable({"GROUP", "MEMBERS", "WHY"}, rows);
    }
    std::printf("\npolicy %s (%s, priority %d):\n", opt.policy_id.c_str(),
                opt.enforce ? "enforce" : "audit", opt.priority);
    std::vector<std::vector<std::string>> rows;
    for (const auto& r : rec.policy["rules"]) {
      const std::string d = Str(r["display_name"]);
      const size_t colon = d.rfind(" : ");
      rows.push_back({Str(r["id"]), d.substr(0, colon),
                      colon == std::string::npos ? "" : d.substr(colon + 3)});
    }
    PrintTable({"RULE", "SOURCES -> DESTINATIONS", "SERVICES"}, rows);
  }
  if (!rec.error.empty()) {
    std::fprintf(stderr, "dfwctl: policy recommend: %s\n", rec.error.c_str());
    return kError;
  }
  if (!write_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(write_dir, ec);
    for (const auto& [name, doc] : {std::pair<const char*, const json*>{"groups.json", &rec.groups},
                                    {"policy.json", &rec.policy}}) {
      std::ofstream out(write_dir + "/" + name);
      out << doc->dump(2) << "\n";
      if (!out) {
        std::fprintf(stderr, "dfwctl: cannot write %s/%s\n", write_dir.c_str(), name);
        return kError;
      }
    }
    if (!c.json_out) {
      std::printf(
          "\nwritten to %s: review, then `dfwctl group apply -f %s/groups.json` (when it "
          "lists any) and `dfwctl policy apply -f %s/policy.json [--dry-run]`\n",
          write_dir.c_str(), write_dir.c_str(), write_dir.c_str());
    }
  }
  if (!apply) {
    if (!c.json_out && write_dir.empty())
      std::printf("\nnothing was changed (--apply creates the groups and the policy)\n");
    return kOk;
  }
  if (connections == 0) {
    std::fprintf(stderr, "dfwctl: policy recommend: no connection seen: nothing applied\n");
    return kError;
  }
  // -o json: the recommendation is the output; text: a line per object.
  if (int rc = ApplyItems(c, "groups", {rec.groups.begin(), rec.groups.end()}, "the draft", "",
                          !c.json_out);
      rc != kOk)
    return rc;
  return ApplyItems(c, "policies", {rec.policy}, "the draft", "", !c.json_out);
}

int Run(Ctx& c, std::vector<std::string> a) {
  if (a.empty()) {
    std::fputs(kUsageText, stderr);
    return kUsage;
  }
  const std::string res = a[0], verb = a.size() > 1 ? a[1] : "";
  auto arg = [&](size_t i) -> std::string { return i < a.size() ? a[i] : ""; };
  auto need = [&](size_t n) {
    if (a.size() < n) {
      std::fprintf(stderr, "dfwctl: '%s %s' needs more arguments\n%s", res.c_str(), verb.c_str(),
                   kUsageText);
      return false;
    }
    return true;
  };
  auto file_arg = [&]() -> std::string {
    for (size_t i = 2; i + 1 < a.size(); ++i)
      if (a[i] == "-f" || a[i] == "--file") return a[i + 1];
    return "";
  };
  int rc = kOk;

  if (res == "vm" || res == "vms") {
    if (verb == "list") {
      return Show(c, c.api->Call("GET", "/api/v1/vms?page_size=10000"),
                  [](const json& b) { VmTable(b.value("vms", json::array())); });
    }
    if (verb == "get") {
      if (!need(3)) return kUsage;
      std::string id;
      if (!ResolveVm(c, a[2], &id, &rc)) return rc;
      return Show(c, c.api->Call("GET", "/api/v1/vms/" + id),
                  [](const json& b) { VmTable(json::array({b})); });
    }
    if (verb == "put") {
      std::string f = file_arg();
      if (f.empty()) return need(99) ? kOk : kUsage;
      return Apply(c, "vms", f);
    }
    if (verb == "delete") {
      if (!need(3)) return kUsage;
      std::string id;
      if (!ResolveVm(c, a[2], &id, &rc)) return rc;
      return Show(c, c.api->Call("DELETE", "/api/v1/vms/" + id), [&](const json& b) {
        std::printf("vm %s deleted at revision %s\n", id.c_str(), Str(b["revision"]).c_str());
      });
    }
    if (verb == "tag" || verb == "untag") {
      json req = {{"vm_ids", json::array()}, {"set", json::array()}, {"remove", json::array()}};
      bool dry = false;  // --dry-run: the impact preview, nothing changed
      for (size_t i = 2; i < a.size(); ++i) {
        if (a[i] == "--dry-run") {
          dry = true;
        } else if (a[i] == "--remove" && i + 1 < a.size()) {
          req["remove"].push_back(ParseTag(a[++i]));
        } else if (a[i].find('=') != std::string::npos ||
                   (verb == "untag" && !req["vm_ids"].empty())) {
          req[verb == "tag" ? "set" : "remove"].push_back(ParseTag(a[i]));
        } else {
          std::string id;
          if (!ResolveVm(c, a[i], &id, &rc)) return rc;
          req["vm_ids"].push_back(id);
        }
      }
      if (req["vm_ids"].empty() || (req["set"].empty() && req["remove"].empty()))
        return need(99) ? kOk : kUsage;
      if (dry) {
        return Show(c, c.api->Call("POST", "/api/v1/tags?dry_run=true", req.dump()),
                    [&](const json& b) { PrintGroupImpact(c, b); });
      }
      return Show(c, c.api->Call("POST", "/api/v1/tags", req.dump()), [](const json& b) {
        std::printf("revision %s\n", Str(b["revision"]).c_str());
        VmTable(b.value("vms", json::array()));
      });
    }
    if (verb == "groups") {
      if (!need(3)) return kUsage;
      std::string id;
      if (!ResolveVm(c, a[2], &id, &rc)) return rc;
      return Show(c, c.api->Call("GET", "/api/v1/vms/" + id + "/groups"), [](const json& b) {
        std::vector<std::vector<std::string>> rows;
        for (const auto& g : b.value("groups", json::array())) {
          std::string via = Str(g.value("via", json("")));
          std::string why =
              via == "VIA_CRITERIA" ? "criteria[" + std::to_string(g.value("conjunction", 0)) + "]"
              : via == "VIA_STATIC_VM" ? "static member"
                                       : "through group " + Str(g.value("through_group", json("")));
          rows.push_back({Str(g["group_id"]), why});
        }
        PrintTable({"GROUP", "WHY"}, rows);
      });
    }
    if (verb == "rules") {
      if (!need(3)) return kUsage;
      std::string id;
      if (!ResolveVm(c, a[2], &id, &rc)) return rc;
      return Show(c, c.api->Call("GET", "/api/v1/vms/" + id + "/effective-rules"), RulesTable);
    }
  } else if (res == "vnic" && verb == "rules") {
    if (!need(3)) return kUsage;
    return Show(c, c.api->Call("GET", "/api/v1/vnics/" + a[2] + "/effective-rules"), RulesTable);
  } else if (res == "group" || res == "groups") {
    auto table = [](const json& gs) {
      std::vector<std::vector<std::string>> rows;
      for (const auto& g : gs)
        rows.push_back({Str(g["id"]), Str(g.value("display_name", json(""))), Criteria(g),
                        Str(g.value("revision", json("")))});
      PrintTable({"ID", "NAME", "CRITERIA", "REV"}, rows);
    };
    if (verb == "list")
      return Show(c, c.api->Call("GET", "/api/v1/groups?page_size=10000"),
                  [&](const json& b) { table(b.value("groups", json::array())); });
    if (verb == "get") {
      if (!need(3)) return kUsage;
      return Show(c, c.api->Call("GET", "/api/v1/groups/" + a[2]),
                  [&](const json& b) { table(json::array({b})); });
    }
    if (verb == "members") {
      if (!need(3)) return kUsage;
      return Show(c, c.api->Call("GET", "/api/v1/groups/" + a[2] + "/members"), [](const json& b) {
        std::vector<std::vector<std::string>> rows;
        for (const auto& v : b.value("vm_ids", json::array())) rows.push_back({"vm", Str(v)});
        for (const auto& v : b.value("vnic_ids", json::array())) rows.push_back({"vnic", Str(v)});
        for (const auto& v : b.value("addresses", json::array()))
          rows.push_back({"address", Str(v)});
        PrintTable({"KIND", "MEMBER"}, rows);
      });
    }
    if (verb == "delete") {
      if (!need(3)) return kUsage;
      return Show(c, c.api->Call("DELETE", "/api/v1/groups/" + a[2]), [&](const json& b) {
        std::printf("group %s deleted at revision %s\n", a[2].c_str(), Str(b["revision"]).c_str());
      });
    }
    if (verb == "apply") {
      // --dry-run: the impact preview (GroupImpact), nothing changed.
      std::string dry;
      for (size_t i = 2; i < a.size(); ++i) {
        if (a[i] == "--dry-run") {
          dry = "?dry_run=true";
          a.erase(a.begin() + static_cast<std::ptrdiff_t>(i--));
        }
      }
      std::string f = file_arg();
      if (f.empty()) return need(99) ? kOk : kUsage;
      return Apply(c, "groups", f, dry);
    }
    if (verb == "create") {
      if (!need(3)) return kUsage;
      json g = {{"id", a[2]}};
      json conj = json::array();
      json sm = json::object();
      bool any_tag = false;
      for (size_t i = 3; i < a.size(); ++i) {
        const std::string& o = a[i];
        std::string v = arg(i + 1);
        if (o == "--all-tags") {
          any_tag = true;
          continue;
        }
        if (v.empty()) {
          std::fprintf(stderr, "dfwctl: %s needs a value\n", o.c_str());
          return kUsage;
        }
        ++i;
        if (o == "--tag")
          conj.push_back({{"tag", ParseTag(v)}});
        else if (o == "--name-starts-with")
          conj.push_back({{"vm_name", {{"op", "STRING_OP_STARTS_WITH"}, {"value", v}}}});
        else if (o == "--vm")
          sm["vm_ids"].push_back(v);
        else if (o == "--prefix")
          sm["ip_prefixes"].push_back(v);
        else if (o == "--include")
          sm["group_ids"].push_back(v);
        else if (o == "--display-name")
          g["display_name"] = v;
        else {
          std::fprintf(stderr, "dfwctl: unknown option %s\n", o.c_str());
          return kUsage;
        }
      }
      // --tag a --tag b: one conjunction (AND); --all-tags is the default.
      (void)any_tag;
      if (!conj.empty()) g["criteria"] = json::array({{{"conditions", conj}}});
      if (!sm.empty()) g["static_members"] = sm;
      return Show(c, c.api->Call("POST", "/api/v1/groups", g.dump()), [&](const json& b) {
        std::printf("group %s created at revision %s\n", a[2].c_str(), Str(b["revision"]).c_str());
      });
    }
  } else if (res == "policy" || res == "policies") {
    auto table = [](const json& ps) {
      std::vector<std::vector<std::string>> rows;
      for (const auto& p : ps)
        rows.push_back({Str(p["id"]), Str(p.value("category", json(""))).substr(9),
                        std::to_string(p.value("priority", 0)),
                        std::to_string(p.value("rules", json::array()).size()),
                        Str(p.value("revision", json("")))});
      PrintTable({"ID", "CATEGORY", "PRIORITY", "RULES", "REV"}, rows);
    };
    if (verb == "recommend") return Recommend(c, a);
    if (verb == "list")
      return Show(c, c.api->Call("GET", "/api/v1/policies?page_size=10000"),
                  [&](const json& b) { table(b.value("policies", json::array())); });
    if (verb == "get") {
      if (!need(3)) return kUsage;
      return Show(c, c.api->Call("GET", "/api/v1/policies/" + a[2]),
                  [&](const json& b) { table(json::array({b})); });
    }
    // --dry-run [--budget N]: the impact preview (PolicyImpact), nothing changed.
    std::string dry;
    for (size_t i = 2; i < a.size(); ++i) {
      if (a[i] == "--dry-run") {
        dry = "?dry_run=true";
        a.erase(a.begin() + static_cast<std::ptrdiff_t>(i--));
      }
    }
    for (size_t i = 2; i < a.size(); ++i) {
      if (a[i] != "--budget") continue;
      if (i + 1 >= a.size() || dry.empty() || a[i + 1].empty() ||
          a[i + 1].find_first_not_of("0123456789") != std::string::npos) {
        std::fprintf(stderr, "dfwctl: --budget needs a number and --dry-run\n");
        return kUsage;
      }
      dry += "&rules_per_vnic_budget=" + a[i + 1];
      a.erase(a.begin() + static_cast<std::ptrdiff_t>(i),
              a.begin() + static_cast<std::ptrdiff_t>(i) + 2);
      break;
    }
    if (verb == "delete" && !dry.empty()) {
      if (!need(3)) return kUsage;
      Reply r = c.api->Call("DELETE", "/api/v1/policies/" + a[2] + dry);
      return r.status == 200 ? PrintImpact(c, r.body) : Fail(r);
    }
    if (verb == "delete") {
      if (!need(3)) return kUsage;
      return Show(c, c.api->Call("DELETE", "/api/v1/policies/" + a[2]), [&](const json& b) {
        std::printf("policy %s deleted at revision %s\n", a[2].c_str(), Str(b["revision"]).c_str());
      });
    }
    if (verb == "apply") {
      std::string f = file_arg();
      if (f.empty()) return need(99) ? kOk : kUsage;
      return Apply(c, "policies", f, dry);
    }
  } else if (res == "exclusion" || res == "exclusions") {
    return Exclusion(c, a);
  } else if ((res == "host" || res == "hosts") && verb == "list") {
    return Show(c, c.api->Call("GET", "/api/v1/hosts"), [](const json& b) {
      std::vector<std::vector<std::string>> rows;
      for (const auto& h : b.value("hosts", json::array()))
        rows.push_back(
            {Str(h["id"]), Str(h.value("hostname", json(""))),
             h.value("kind", std::string()) == "HOST_KIND_GUEST" ? "guest agent" : "hypervisor",
             h.value("connected", false) ? "yes" : "no",
             Str(h.value("realized_revision", json("0"))),
             Str(h.value("refused_vm_claims", json("0")))});
      PrintTable({"ID", "HOSTNAME", "KIND", "CONNECTED", "REALIZED", "REFUSED VMS"}, rows);
    });
  } else if ((res == "host" || res == "hosts") && verb == "delete") {
    if (!need(3)) return kUsage;
    return Show(c, c.api->Call("DELETE", "/api/v1/hosts/" + a[2]), [&](const json& b) {
      std::printf("host %s and its VMs deleted at revision %s\n", a[2].c_str(),
                  Str(b["revision"]).c_str());
    });
  } else if (res == "realization") {
    std::string path = "/api/v1/realization";
    if (!verb.empty()) path += "?policy_id=" + verb;
    return Show(c, c.api->Call("GET", path), [](const json& b) {
      std::printf("current revision %s\n\n", Str(b["current_revision"]).c_str());
      std::vector<std::vector<std::string>> rows;
      for (const auto& p : b.value("policies", json::array())) {
        size_t n = p.value("hosts", json::array()).size(), ok = 0;
        for (const auto& h : p.value("hosts", json::array()))
          ok += h.value("state", "") == "REALIZATION_STATE_REALIZED";
        std::string ms =
            p.contains("realization_micros")
                ? std::to_string(std::stoull(Str(p["realization_micros"])) / 1000.0).substr(0, 6) +
                      " ms"
                : "";
        rows.push_back({Str(p["policy_id"]), Str(p["revision"]),
                        Str(p.value("state", json(""))).substr(18),
                        std::to_string(ok) + "/" + std::to_string(n), ms});
      }
      PrintTable({"POLICY", "REV", "STATE", "HOSTS", "REALIZED IN"}, rows);
      std::printf("\n");
      rows.clear();
      for (const auto& h : b.value("hosts", json::array()))
        rows.push_back({Str(h["host_id"]), Str(h.value("state", json(""))).substr(18),
                        Str(h.value("realized_revision", json("0"))),
                        Str(h.value("error", json("")))});
      PrintTable({"HOST", "STATE", "REALIZED", "ERROR"}, rows);
    });
  } else if (res == "trace") {
    return Trace(c, a);
  } else if (res == "probe") {
    return Probe(c, a);
  } else if (res == "observe") {
    return Observe(c, a);
  } else if (res == "changes") {
    std::string from = "0";
    for (size_t i = 1; i + 1 < a.size(); ++i)
      if (a[i] == "--from") from = a[i + 1];
    return Show(c, c.api->Call("GET", "/api/v1/changes?from_revision=" + from), [](const json& b) {
      std::vector<std::vector<std::string>> rows;
      for (const auto& e : b.value("events", json::array()))
        rows.push_back({Str(e["revision"]), Str(e["kind"]).substr(5), Str(e["id"]),
                        e.value("deleted", false) ? "deleted" : "set",
                        Str(e.value("time", json(""))), Str(e.value("actor", json("")))});
      PrintTable({"REV", "KIND", "ID", "CHANGE", "TIME", "ACTOR"}, rows);
    });
  } else if (res == "status") {
    return Show(c, c.api->Call("GET", "/api/v1/status"), [](const json& b) {
      for (const auto& [k, v] : b.items()) std::printf("%-20s %s\n", k.c_str(), Str(v).c_str());
    });
  }
  std::fprintf(stderr, "dfwctl: unknown command '%s %s'\n%s", res.c_str(), verb.c_str(),
               kUsageText);
  return kUsage;
}

// ---- trust: the CA, enrollment, certificates

// Value of `--flag V` in a (after position `from`), or "".
std::string Flag(const std::vector<std::string>& a, const std::string& flag, size_t from = 2) {
  for (size_t i = from; i + 1 < a.size(); ++i)
    if (a[i] == flag) return a[i + 1];
  return "";
}
std::vector<std::string> Flags(const std::vector<std::string>& a, const std::string& flag) {
  std::vector<std::string> out;
  for (size_t i = 2; i + 1 < a.size(); ++i)
    if (a[i] == flag) out.push_back(a[i + 1]);
  return out;
}

bool WriteConfigServer(const Config& cfg, const std::string& server) {
  std::error_code ec;
  std::filesystem::create_directories(cfg.dir, ec);
  std::ofstream f(cfg.dir + "/config.json");
  f << json{{"server", server}}.dump(2) << "\n";
  return static_cast<bool>(f);
}

// The SVID just received: written in spiffe-helper's layout.
int SaveSvid(const std::string& dir, const std::string& key_pem, const json& resp) {
  dfw::trust::Svid svid{key_pem, resp.value("cert_pem", ""), resp.value("bundle_pem", "")};
  if (auto s = dfw::trust::WriteSvid(dir, svid); !s.ok()) {
    std::fprintf(stderr, "dfwctl: %s\n", std::string(s.message()).c_str());
    return kError;
  }
  std::printf("%s: certificate %s valid until %s, in %s\n", resp.value("spiffe_id", "").c_str(),
              resp.value("serial", "").c_str(), resp.value("not_after", "").c_str(), dir.c_str());
  return kOk;
}

int CaInit(const Config& cfg, const std::vector<std::string>& a) {
  std::string pki = Flag(a, "--pki-dir"), td = Flag(a, "--trust-domain");
  if (pki.empty() || td.empty()) {
    std::fprintf(stderr, "dfwctl: ca init needs --pki-dir DIR and --trust-domain TD\n");
    return kUsage;
  }
  char host[256] = "controller";
  gethostname(host, sizeof host);
  std::string node = Flag(a, "--node");
  if (node.empty()) node = host;
  std::string admin = Flag(a, "--admin");
  if (admin.empty()) admin = "admin";
  auto ca = dfw::trust::CertificateAuthority::Init(pki + "/ca", td);
  if (!ca.ok()) {
    std::fprintf(stderr, "dfwctl: ca init: %s\n", std::string(ca.status().message()).c_str());
    return ca.status().code() == absl::StatusCode::kInvalidArgument ? kInvalid : kError;
  }
  dfw::trust::IssueOptions o;
  o.id = {td, dfw::trust::IdKind::kController, node};
  o.server_auth = true;
  o.validity = std::chrono::hours(24 * 365);
  o.dns_sans = {"localhost", host};
  o.ip_sans = {"127.0.0.1", "::1"};
  for (const auto& san : Flags(a, "--san")) {
    in6_addr buf{};
    bool ip =
        inet_pton(AF_INET, san.c_str(), &buf) == 1 || inet_pton(AF_INET6, san.c_str(), &buf) == 1;
    (ip ? o.ip_sans : o.dns_sans).push_back(san);
  }
  auto ctl = (*ca)->IssueWithNewKey(o);
  if (!ctl.ok()) {
    std::fprintf(stderr, "dfwctl: controller certificate: %s\n",
                 std::string(ctl.status().message()).c_str());
    return kError;
  }
  if (auto s = dfw::trust::WriteSvid(pki + "/controller",
                                     {ctl->key_pem, ctl->cert.cert_pem, (*ca)->bundle_pem()});
      !s.ok()) {
    std::fprintf(stderr, "dfwctl: %s\n", std::string(s.message()).c_str());
    return kError;
  }
  dfw::trust::IssueOptions u;
  u.id = {td, dfw::trust::IdKind::kUser, admin};
  u.role = dfw::trust::Role::kAdmin;
  u.validity = std::chrono::hours(24 * 7);
  auto adm = (*ca)->IssueWithNewKey(u);
  if (!adm.ok()) {
    std::fprintf(stderr, "dfwctl: admin certificate: %s\n",
                 std::string(adm.status().message()).c_str());
    return kError;
  }
  if (auto s = dfw::trust::WriteSvid(cfg.cert_dir,
                                     {adm->key_pem, adm->cert.cert_pem, (*ca)->bundle_pem()});
      !s.ok()) {
    std::fprintf(stderr, "dfwctl: %s\n", std::string(s.message()).c_str());
    return kError;
  }
  if (!std::filesystem::exists(cfg.dir + "/config.json")) WriteConfigServer(cfg, cfg.server);
  std::printf("trust domain %s\n", td.c_str());
  std::printf("CA                %s/ca (ca.pem; ca_key.pem stays on this machine)\n", pki.c_str());
  std::printf("controller        %s/controller  %s\n", pki.c_str(), o.id.ToString().c_str());
  std::printf("admin             %s  %s (serial %s, 7 days: renew with `dfwctl cert renew`)\n",
              cfg.cert_dir.c_str(), u.id.ToString().c_str(), adm->cert.serial_hex.c_str());
  std::printf("start the controller with --pki-dir %s\n", pki.c_str());
  return kOk;
}

int EnrollJoin(const Config& cfg, const std::vector<std::string>& a) {
  std::string token = Flag(a, "--token"), bundle = Flag(a, "--ca-bundle");
  if (token.empty() || bundle.empty()) {
    std::fprintf(
        stderr, "dfwctl: enroll join needs --token T and --ca-bundle FILE (the controller's CA)\n");
    return kUsage;
  }
  auto api = Api::Open(cfg, bundle, /*anonymous=*/true);
  if (!api) return kUsage;
  auto kc = dfw::trust::GenerateKeyAndCsr("dfwctl");
  if (!kc.ok()) {
    std::fprintf(stderr, "dfwctl: %s\n", std::string(kc.status().message()).c_str());
    return kError;
  }
  Reply r =
      api->Call("POST", "/api/v1/enroll", json{{"token", token}, {"csr_pem", kc->csr_pem}}.dump());
  if (r.status != 201) return Fail(r);
  if (int rc = SaveSvid(cfg.cert_dir, kc->key_pem, r.body); rc != kOk) return rc;
  WriteConfigServer(cfg, cfg.server);
  return kOk;
}

// A certificate past half its lifetime is renewed on the way (the command
// itself still runs on the current one); a failure only warns.
void RenewIfPastHalfLife(const Config& cfg, Api& api) {
  if (cfg.server.rfind("https://", 0) != 0) return;
  auto svid = dfw::trust::ReadSvid(cfg.cert_dir);
  if (!svid.ok()) return;
  auto nb = dfw::trust::NotBefore(svid->cert_pem);
  auto na = dfw::trust::NotAfter(svid->cert_pem);
  if (!nb.ok() || !na.ok() || dfw::trust::Clock::now() < *nb + (*na - *nb) / 2) return;
  auto kc = dfw::trust::GenerateKeyAndCsr("dfwctl");
  if (!kc.ok()) return;
  Reply r = api.Call("POST", "/api/v1/renew", json{{"csr_pem", kc->csr_pem}}.dump());
  if (r.status != 201) {
    std::fprintf(stderr, "dfwctl: warning: renewing the certificate in %s failed (HTTP %d)\n",
                 cfg.cert_dir.c_str(), r.status);
    return;
  }
  dfw::trust::Svid next{kc->key_pem, r.body.value("cert_pem", ""), r.body.value("bundle_pem", "")};
  if (auto w = dfw::trust::WriteSvid(cfg.cert_dir, next); !w.ok()) {
    std::fprintf(stderr, "dfwctl: warning: %s\n", std::string(w.message()).c_str());
  }
}

// Trust commands; -1 when `a` is not one.
int RunTrust(const Config& cfg, const std::vector<std::string>& a, bool json_out) {
  const std::string res = a.empty() ? "" : a[0], verb = a.size() > 1 ? a[1] : "";
  if (res == "ca" && verb == "init") return CaInit(cfg, a);
  if (res == "enroll" && verb == "join") return EnrollJoin(cfg, a);
  if (res == "enroll" && verb == "create") {
    json req;
    std::string host = Flag(a, "--host"), vm = Flag(a, "--vm"), user = Flag(a, "--user");
    if (!host.empty() + !vm.empty() + !user.empty() != 1) {
      std::fprintf(stderr, "dfwctl: enroll create needs one of --host H, --vm UUID, --user NAME\n");
      return kUsage;
    }
    req["kind"] = !host.empty() ? "IDENTITY_KIND_HOST"
                  : !vm.empty() ? "IDENTITY_KIND_VM"
                                : "IDENTITY_KIND_USER";
    req["name"] = !host.empty() ? host : !vm.empty() ? vm : user;
    if (std::string role = Flag(a, "--role"); !role.empty()) req["role"] = role;
    for (const char* f : {"--ttl", "--cert-ttl"}) {
      std::string v = Flag(a, f);
      if (v.empty()) continue;
      if (v.find_first_not_of("0123456789") != std::string::npos || v.size() > 9) {
        std::fprintf(stderr, "dfwctl: %s takes a number of seconds\n", f);
        return kInvalid;
      }
      req[std::string(f) == "--ttl" ? "ttl_seconds" : "cert_ttl_seconds"] = std::stoul(v);
    }
    auto api = Api::Open(cfg);
    if (!api) return kUsage;
    Reply r = api->Call("POST", "/api/v1/join-tokens",
                        req.dump(-1, ' ', false, json::error_handler_t::replace));
    if (r.status != 201) return Fail(r);
    if (json_out) {
      std::printf("%s\n", r.body.dump(2).c_str());
    } else {
      std::printf("token      %s\nidentity   %s\nexpires    %s\n",
                  r.body.value("token", "").c_str(), r.body.value("spiffe_id", "").c_str(),
                  r.body.value("expires_at", "").c_str());
    }
    return kOk;
  }
  if (res == "cert" || res == "certs") {
    auto api = Api::Open(cfg);
    if (!api) return kUsage;
    if (verb == "list") {
      bool all = std::find(a.begin(), a.end(), "--all") != a.end();
      Reply r = api->Call(
          "GET", std::string("/api/v1/certificates") + (all ? "?include_expired=true" : ""));
      if (r.status != 200) return Fail(r);
      if (json_out) {
        std::printf("%s\n", r.body.dump(2).c_str());
        return kOk;
      }
      std::vector<std::vector<std::string>> rows;
      for (const auto& c : r.body.value("certificates", json::array()))
        rows.push_back({Str(c["serial"]), Str(c.value("spiffe_id", json(""))),
                        Str(c.value("role", json(""))), Str(c.value("not_after", json(""))),
                        c.value("revoked", false) ? "revoked" : "valid"});
      PrintTable({"SERIAL", "IDENTITY", "ROLE", "NOT AFTER", "STATE"}, rows);
      return kOk;
    }
    if (verb == "revoke" && a.size() >= 3) {
      Reply r = api->Call("POST", "/api/v1/certificates/" + a[2] + "/revoke", "{}");
      if (r.status != 200) return Fail(r);
      std::printf("revoked %s (%s)\n", a[2].c_str(), r.body.value("spiffe_id", "").c_str());
      return kOk;
    }
    if (verb == "renew") {
      auto kc = dfw::trust::GenerateKeyAndCsr("dfwctl");
      if (!kc.ok()) {
        std::fprintf(stderr, "dfwctl: %s\n", std::string(kc.status().message()).c_str());
        return kError;
      }
      Reply r = api->Call("POST", "/api/v1/renew", json{{"csr_pem", kc->csr_pem}}.dump());
      if (r.status != 201) return Fail(r);
      return SaveSvid(cfg.cert_dir, kc->key_pem, r.body);
    }
    std::fprintf(stderr, "dfwctl: cert list [--all] | revoke SERIAL | renew\n");
    return kUsage;
  }
  return -1;
}

// Arguments end up in JSON request bodies, and JSON strings are UTF-8:
// nlohmann::json throws (and dfwctl would abort) when asked to dump anything
// else. Every argument is checked here, before anything is sent, with the
// same test the dump applies. Files (apply -f) are parsed by the same
// library, which refuses invalid UTF-8 as invalid JSON.
int CheckArgsAreUtf8(const std::vector<std::string>& args) {
  for (size_t i = 0; i < args.size(); ++i) {
    try {
      (void)json(args[i]).dump();
    } catch (const json::exception&) {
      std::string shown = json(args[i]).dump(-1, ' ', true, json::error_handler_t::replace);
      std::fprintf(stderr, "dfwctl: argument %zu (%s) is not valid UTF-8\n", i + 1, shown.c_str());
      return kInvalid;
    }
  }
  return kOk;
}

}  // namespace

int main(int argc, char** argv) {
  Config cfg;
  cfg.dir = DefaultConfigDir();
  const char* cert_dir = std::getenv("DFW_CERT_DIR");
  cfg.cert_dir = cert_dir && *cert_dir ? cert_dir : cfg.dir;
  std::string server;
  if (const char* e = std::getenv("DFW_SERVER"); e && *e) server = e;
  bool json_out = false;
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if ((a == "--server" || a == "-s") && i + 1 < argc) {
      server = argv[++i];
    } else if (a == "--insecure") {
      cfg.insecure = true;
    } else if ((a == "-o" || a == "--output") && i + 1 < argc) {
      std::string o = argv[++i];
      if (o != "json" && o != "table") {
        std::fprintf(stderr, "dfwctl: -o takes table or json\n");
        return kUsage;
      }
      json_out = o == "json";
    } else if (a == "-h" || a == "--help") {
      std::fputs(kUsageText, stdout);
      return kOk;
    } else {
      args.push_back(a);
    }
  }
  if (server.empty()) {
    std::ifstream f(cfg.dir + "/config.json");
    json j = f ? json::parse(f, nullptr, false) : json();
    if (j.is_object()) server = j.value("server", "");
  }
  if (server.empty()) server = "https://127.0.0.1:8080";
  cfg.server = server;
  if (int rc = CheckArgsAreUtf8(args); rc != kOk) return rc;
  if (int rc = RunTrust(cfg, args, json_out); rc >= 0) return rc;
  auto api = Api::Open(cfg);
  if (!api) return kUsage;
  RenewIfPastHalfLife(cfg, *api);
  Ctx c{api.get(), json_out};
  return Run(c, args);
}
