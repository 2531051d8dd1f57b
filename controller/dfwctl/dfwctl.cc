// dfwctl: the operator's shell interface to dfw-controller (REST/JSON).
//
//   dfwctl [--server URL] [-o table|json] RESOURCE VERB [ARGS]
//
// Server: --server, else $DFW_SERVER, else http://127.0.0.1:8080.
// Output: human tables by default, -o json prints the API's JSON.
// Exit codes: 0 ok, 1 other error, 2 usage, 3 invalid input (HTTP 400),
// 4 not found (404), 5 conflict (409), 6 controller unreachable.
// Files for `apply -f` are JSON (one object, or an array of objects), in
// the API's format (proto JSON, field names as in model.proto); `-f -`
// reads stdin. (No YAML: Debian's libyaml-cpp is not part of the image.)
#include <httplib.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

using nlohmann::json;

namespace {

constexpr int kOk = 0, kError = 1, kUsage = 2, kInvalid = 3, kNotFound = 4, kConflict = 5,
              kUnreachable = 6;

const char kUsageText[] = R"(usage: dfwctl [--server URL] [-o table|json] RESOURCE VERB [ARGS]

  vm list | get VM | put -f FILE | delete VM
  vm tag VM... SCOPE=VALUE... [--remove SCOPE[=VALUE]]...
  vm untag VM... SCOPE[=VALUE]...          (SCOPE alone removes every value)
  vm groups VM                              which groups, and why
  vm rules VM | vnic rules VNIC             effective rules
  group list | get G | members G | delete G | apply -f FILE
  group create G [--tag S=V]... [--all-tags] [--name-starts-with X]
                 [--vm VM]... [--prefix P]... [--include G]... [--display-name N]
  policy list | get P | delete P | apply -f FILE
  host list
  realization [POLICY]
  changes [--from REV]
  status

Tags come from the API (vm tag/untag/put) and from the domain's libvirt
metadata (reported by the host). A VM has both; for a scope the API holds a
tag of, the API's values replace the metadata's (the API wins per scope;
plain tags just add up). Untagging the API's value brings the metadata's
back; a tag only the metadata carries cannot be untagged here (exit 5):
change the domain's libvirt metadata on its host. Tables show each tag's
source, e.g. app=web (libvirt); -o json shows tags, api_tags, host_tags.

VM arguments are ids or names. Server: --server, $DFW_SERVER, or
http://127.0.0.1:8080. Exit codes: 0 ok, 2 usage, 3 invalid (400),
4 not found (404), 5 conflict (409), 6 unreachable, 1 other.
)";

struct Reply {
  int status = 0;
  json body;
  std::string raw;
};

class Api {
 public:
  explicit Api(const std::string& url) : cli_(url) {
    cli_.set_connection_timeout(3, 0);
    cli_.set_read_timeout(60, 0);
  }
  Reply Call(const std::string& method, const std::string& path, const std::string& body = "") {
    auto call = [&]() -> httplib::Result {
      if (method == "GET") return cli_.Get(path.c_str());
      if (method == "POST") return cli_.Post(path.c_str(), body, "application/json");
      if (method == "PUT") return cli_.Put(path.c_str(), body, "application/json");
      return cli_.Delete(path.c_str());
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
    return out;
  }

 private:
  httplib::Client cli_;
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
  return kError;
}

std::string Str(const json& j) {
  if (j.is_null()) return "";
  if (j.is_string()) return j.get<std::string>();
  return j.dump();
}

void PrintTable(const std::vector<std::string>& head, const std::vector<std::vector<std::string>>& rows) {
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
    }
  return s;
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
                    Tags(v), Ips(v), Str(v.value("revision", json("")))});
  PrintTable({"ID", "NAME", "HOST", "TAGS", "IPS", "REV"}, rows);
}

std::string Criteria(const json& g) {
  std::vector<std::string> ors;
  for (const auto& conj : g.value("criteria", json::array())) {
    std::string a;
    for (const auto& cnd : conj.value("conditions", json::array())) {
      if (!a.empty()) a += " & ";
      if (cnd.contains("tag")) a += "tag " + Str(cnd["tag"].value("scope", json(""))) + "=" + Str(cnd["tag"].value("value", json("*")));
      else if (cnd.contains("vm_name")) a += "name " + Str(cnd["vm_name"]["op"]) + " " + Str(cnd["vm_name"]["value"]);
      else if (cnd.contains("guest_os")) a += "os " + Str(cnd["guest_os"]["op"]) + " " + Str(cnd["guest_os"]["value"]);
      else if (cnd.contains("member_of_group")) a += "in " + Str(cnd["member_of_group"]);
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
    for (const auto& id : e.value("address_set_ids", json::array())) s += (s.size() > 1 ? "," : "") + Str(id);
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
          if (p.value("last", 0) > p.value("first", 0)) svc += "-" + std::to_string(p.value("last", 0));
        }
      }
      rows.push_back({Str(rs["vnic_id"]), std::to_string(r.value("rule_num", 0)), Str(r["policy_id"]) + "/" + Str(r["rule_id"]),
                      ep(r.value("sources", json::object())), ep(r.value("destinations", json::object())),
                      svc.empty() ? "any" : svc, Str(r.value("direction", json(""))).substr(10), Str(r.value("action", json(""))).substr(7)});
    }
    rows.push_back({Str(rs["vnic_id"]), "-", "default", "any", "any", "any", "BOTH",
                    Str(rs.value("default_rule", json::object()).value("action", json("ACTION_DROP"))).substr(7)});
  }
  PrintTable({"VNIC", "NUM", "RULE", "SOURCES", "DESTINATIONS", "SERVICES", "DIR", "ACTION"}, rows);
  for (const auto& s : body.value("address_sets", json::array())) {
    std::string p;
    for (const auto& x : s.value("prefixes", json::array())) p += (p.empty() ? "" : " ") + Str(x);
    std::printf("  %s = {%s}\n", Str(s["id"]).c_str(), p.c_str());
  }
}

int Apply(Ctx& c, const std::string& kind, const std::string& file) {
  json doc;
  if (!ReadJsonFile(file, &doc)) return kUsage;
  std::vector<json> items;
  if (doc.is_array()) items.assign(doc.begin(), doc.end());
  else items.push_back(doc);
  for (const auto& it : items) {
    if (!it.is_object() || !it.contains("id")) {
      std::fprintf(stderr, "dfwctl: every %s in %s needs an \"id\"\n", kind.c_str(), file.c_str());
      return kInvalid;
    }
    Reply r = c.api->Call("PUT", "/api/v1/" + kind + "/" + Str(it["id"]), it.dump());
    if (r.status != 200) {
      std::fprintf(stderr, "dfwctl: %s '%s' not applied\n", kind.c_str(), Str(it["id"]).c_str());
      return Fail(r);
    }
    if (c.json_out) std::printf("%s\n", r.body.dump(2).c_str());
    else {
      std::string noun = kind == "policies" ? "policy" : kind.substr(0, kind.size() - 1);
      std::printf("%s %s applied at revision %s\n", noun.c_str(), Str(it["id"]).c_str(), Str(r.body["revision"]).c_str());
    }
  }
  return kOk;
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
      std::fprintf(stderr, "dfwctl: '%s %s' needs more arguments\n%s", res.c_str(), verb.c_str(), kUsageText);
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
      return Show(c, c.api->Call("GET", "/api/v1/vms/" + id), [](const json& b) { VmTable(json::array({b})); });
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
      return Show(c, c.api->Call("DELETE", "/api/v1/vms/" + id),
                  [&](const json& b) { std::printf("vm %s deleted at revision %s\n", id.c_str(), Str(b["revision"]).c_str()); });
    }
    if (verb == "tag" || verb == "untag") {
      json req = {{"vm_ids", json::array()}, {"set", json::array()}, {"remove", json::array()}};
      for (size_t i = 2; i < a.size(); ++i) {
        if (a[i] == "--remove" && i + 1 < a.size()) {
          req["remove"].push_back(ParseTag(a[++i]));
        } else if (a[i].find('=') != std::string::npos || (verb == "untag" && !req["vm_ids"].empty())) {
          req[verb == "tag" ? "set" : "remove"].push_back(ParseTag(a[i]));
        } else {
          std::string id;
          if (!ResolveVm(c, a[i], &id, &rc)) return rc;
          req["vm_ids"].push_back(id);
        }
      }
      if (req["vm_ids"].empty() || (req["set"].empty() && req["remove"].empty())) return need(99) ? kOk : kUsage;
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
          std::string why = via == "VIA_CRITERIA" ? "criteria[" + std::to_string(g.value("conjunction", 0)) + "]"
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
      for (const auto& g : gs) rows.push_back({Str(g["id"]), Str(g.value("display_name", json(""))), Criteria(g), Str(g.value("revision", json("")))});
      PrintTable({"ID", "NAME", "CRITERIA", "REV"}, rows);
    };
    if (verb == "list") return Show(c, c.api->Call("GET", "/api/v1/groups?page_size=10000"), [&](const json& b) { table(b.value("groups", json::array())); });
    if (verb == "get") {
      if (!need(3)) return kUsage;
      return Show(c, c.api->Call("GET", "/api/v1/groups/" + a[2]), [&](const json& b) { table(json::array({b})); });
    }
    if (verb == "members") {
      if (!need(3)) return kUsage;
      return Show(c, c.api->Call("GET", "/api/v1/groups/" + a[2] + "/members"), [](const json& b) {
        std::vector<std::vector<std::string>> rows;
        for (const auto& v : b.value("vm_ids", json::array())) rows.push_back({"vm", Str(v)});
        for (const auto& v : b.value("vnic_ids", json::array())) rows.push_back({"vnic", Str(v)});
        for (const auto& v : b.value("addresses", json::array())) rows.push_back({"address", Str(v)});
        PrintTable({"KIND", "MEMBER"}, rows);
      });
    }
    if (verb == "delete") {
      if (!need(3)) return kUsage;
      return Show(c, c.api->Call("DELETE", "/api/v1/groups/" + a[2]),
                  [&](const json& b) { std::printf("group %s deleted at revision %s\n", a[2].c_str(), Str(b["revision"]).c_str()); });
    }
    if (verb == "apply") {
      std::string f = file_arg();
      if (f.empty()) return need(99) ? kOk : kUsage;
      return Apply(c, "groups", f);
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
        if (o == "--all-tags") { any_tag = true; continue; }
        if (v.empty()) { std::fprintf(stderr, "dfwctl: %s needs a value\n", o.c_str()); return kUsage; }
        ++i;
        if (o == "--tag") conj.push_back({{"tag", ParseTag(v)}});
        else if (o == "--name-starts-with") conj.push_back({{"vm_name", {{"op", "STRING_OP_STARTS_WITH"}, {"value", v}}}});
        else if (o == "--vm") sm["vm_ids"].push_back(v);
        else if (o == "--prefix") sm["ip_prefixes"].push_back(v);
        else if (o == "--include") sm["group_ids"].push_back(v);
        else if (o == "--display-name") g["display_name"] = v;
        else { std::fprintf(stderr, "dfwctl: unknown option %s\n", o.c_str()); return kUsage; }
      }
      // --tag a --tag b: one conjunction (AND); --all-tags is the default.
      (void)any_tag;
      if (!conj.empty()) g["criteria"] = json::array({{{"conditions", conj}}});
      if (!sm.empty()) g["static_members"] = sm;
      return Show(c, c.api->Call("POST", "/api/v1/groups", g.dump()),
                  [&](const json& b) { std::printf("group %s created at revision %s\n", a[2].c_str(), Str(b["revision"]).c_str()); });
    }
  } else if (res == "policy" || res == "policies") {
    auto table = [](const json& ps) {
      std::vector<std::vector<std::string>> rows;
      for (const auto& p : ps)
        rows.push_back({Str(p["id"]), Str(p.value("category", json(""))).substr(9), std::to_string(p.value("priority", 0)),
                        std::to_string(p.value("rules", json::array()).size()), Str(p.value("revision", json("")))});
      PrintTable({"ID", "CATEGORY", "PRIORITY", "RULES", "REV"}, rows);
    };
    if (verb == "list") return Show(c, c.api->Call("GET", "/api/v1/policies?page_size=10000"), [&](const json& b) { table(b.value("policies", json::array())); });
    if (verb == "get") {
      if (!need(3)) return kUsage;
      return Show(c, c.api->Call("GET", "/api/v1/policies/" + a[2]), [&](const json& b) { table(json::array({b})); });
    }
    if (verb == "delete") {
      if (!need(3)) return kUsage;
      return Show(c, c.api->Call("DELETE", "/api/v1/policies/" + a[2]),
                  [&](const json& b) { std::printf("policy %s deleted at revision %s\n", a[2].c_str(), Str(b["revision"]).c_str()); });
    }
    if (verb == "apply") {
      std::string f = file_arg();
      if (f.empty()) return need(99) ? kOk : kUsage;
      return Apply(c, "policies", f);
    }
  } else if ((res == "host" || res == "hosts") && verb == "list") {
    return Show(c, c.api->Call("GET", "/api/v1/hosts"), [](const json& b) {
      std::vector<std::vector<std::string>> rows;
      for (const auto& h : b.value("hosts", json::array()))
        rows.push_back({Str(h["id"]), Str(h.value("hostname", json(""))), h.value("connected", false) ? "yes" : "no",
                        Str(h.value("realized_revision", json("0")))});
      PrintTable({"ID", "HOSTNAME", "CONNECTED", "REALIZED"}, rows);
    });
  } else if (res == "realization") {
    std::string path = "/api/v1/realization";
    if (!verb.empty()) path += "?policy_id=" + verb;
    return Show(c, c.api->Call("GET", path), [](const json& b) {
      std::printf("current revision %s\n\n", Str(b["current_revision"]).c_str());
      std::vector<std::vector<std::string>> rows;
      for (const auto& p : b.value("policies", json::array())) {
        size_t n = p.value("hosts", json::array()).size(), ok = 0;
        for (const auto& h : p.value("hosts", json::array())) ok += h.value("state", "") == "REALIZATION_STATE_REALIZED";
        std::string ms = p.contains("realization_micros")
                             ? std::to_string(std::stoull(Str(p["realization_micros"])) / 1000.0).substr(0, 6) + " ms" : "";
        rows.push_back({Str(p["policy_id"]), Str(p["revision"]), Str(p.value("state", json(""))).substr(18),
                        std::to_string(ok) + "/" + std::to_string(n), ms});
      }
      PrintTable({"POLICY", "REV", "STATE", "HOSTS", "REALIZED IN"}, rows);
      std::printf("\n");
      rows.clear();
      for (const auto& h : b.value("hosts", json::array()))
        rows.push_back({Str(h["host_id"]), Str(h.value("state", json(""))).substr(18), Str(h.value("realized_revision", json("0"))),
                        Str(h.value("error", json("")))});
      PrintTable({"HOST", "STATE", "REALIZED", "ERROR"}, rows);
    });
  } else if (res == "changes") {
    std::string from = "0";
    for (size_t i = 1; i + 1 < a.size(); ++i)
      if (a[i] == "--from") from = a[i + 1];
    return Show(c, c.api->Call("GET", "/api/v1/changes?from_revision=" + from), [](const json& b) {
      std::vector<std::vector<std::string>> rows;
      for (const auto& e : b.value("events", json::array()))
        rows.push_back({Str(e["revision"]), Str(e["kind"]).substr(5), Str(e["id"]), e.value("deleted", false) ? "deleted" : "set", Str(e.value("time", json("")))});
      PrintTable({"REV", "KIND", "ID", "CHANGE", "TIME"}, rows);
    });
  } else if (res == "status") {
    return Show(c, c.api->Call("GET", "/api/v1/status"), [](const json& b) {
      for (const auto& [k, v] : b.items()) std::printf("%-20s %s\n", k.c_str(), Str(v).c_str());
    });
  }
  std::fprintf(stderr, "dfwctl: unknown command '%s %s'\n%s", res.c_str(), verb.c_str(), kUsageText);
  return kUsage;
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
  std::string server = std::getenv("DFW_SERVER") ? std::getenv("DFW_SERVER") : "http://127.0.0.1:8080";
  bool json_out = false;
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if ((a == "--server" || a == "-s") && i + 1 < argc) {
      server = argv[++i];
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
  if (int rc = CheckArgsAreUtf8(args); rc != kOk) return rc;
  Api api(server);
  Ctx c{&api, json_out};
  return Run(c, args);
}
