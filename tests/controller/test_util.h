// Helpers shared by the controller tests: a temporary directory, an
// in-process controller on 127.0.0.1 port 0, JSON over a real HTTP socket.
#pragma once

#include <httplib.h>
#include <unistd.h>

#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "dfw/controller/controller_server.h"
#include "gtest/gtest.h"

namespace dfw::controller::testing {

struct Cmd {
  int rc;           // exit status (-1: killed by a signal)
  std::string out;  // stdout and stderr
};

// dfwctl (the binary at `bin`) with `args`, against a plaintext controller
// on loopback whose REST port is `port`.
inline Cmd RunDfwctl(const std::string& bin, int port, const std::string& args) {
  std::string cmd =
      bin + " --insecure --server http://127.0.0.1:" + std::to_string(port) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int st = pclose(p);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}

// Polls `pred` every 10 ms until it holds or `ms` passed; its last value.
inline bool WaitFor(const std::function<bool()>& pred, int ms = 5000) {
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return pred();
}

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "dfw-ctl-XXXXXX").string();
    path_ = mkdtemp(tmpl.data());
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

struct HttpResult {
  int status = 0;
  nlohmann::json body;
  std::string etag;
};

class Rest {
 public:
  explicit Rest(int port) : cli_("127.0.0.1", port) { cli_.set_read_timeout(10, 0); }
  HttpResult Call(const std::string& method, const std::string& path, const std::string& body = "",
                  const httplib::Headers& headers = {}) {
    auto call = [&]() -> httplib::Result {
      if (method == "GET") return cli_.Get(path.c_str(), headers);
      if (method == "POST") return cli_.Post(path.c_str(), headers, body, "application/json");
      if (method == "PUT") return cli_.Put(path.c_str(), headers, body, "application/json");
      return cli_.Delete(path.c_str(), headers);
    };
    httplib::Result r = call();
    HttpResult out;
    if (!r) return out;
    out.status = r->status;
    out.body = nlohmann::json::parse(r->body, nullptr, false);
    out.etag = r->get_header_value("ETag");
    return out;
  }
  HttpResult Get(const std::string& p) { return Call("GET", p); }
  HttpResult Post(const std::string& p, const nlohmann::json& b) {
    return Call("POST", p, b.dump());
  }
  HttpResult Put(const std::string& p, const nlohmann::json& b, const httplib::Headers& h = {}) {
    return Call("PUT", p, b.dump(), h);
  }
  HttpResult Delete(const std::string& p, const httplib::Headers& h = {}) {
    return Call("DELETE", p, "", h);
  }

 private:
  httplib::Client cli_;
};

inline nlohmann::json VmJson(const std::string& id, const std::string& host,
                             const std::vector<std::pair<std::string, std::string>>& tags,
                             const std::string& ip) {
  nlohmann::json vm = {{"id", id}, {"name", id}, {"host", host}};
  vm["tags"] = nlohmann::json::array();
  for (const auto& [s, v] : tags) vm["tags"].push_back({{"scope", s}, {"value", v}});
  vm["vnics"] = {
      {{"id", id + "-nic0"}, {"mac", "52:54:00:00:00:01"}, {"addresses", {{{"ip", ip}}}}}};
  return vm;
}

inline nlohmann::json TagGroupJson(const std::string& id, const std::string& scope,
                                   const std::string& value) {
  return {{"id", id},
          {"criteria", {{{"conditions", {{{"tag", {{"scope", scope}, {"value", value}}}}}}}}}};
}

// The model most session tests start from: groups web (app=web) and db
// (app=db), and policy web-to-db (web -> db tcp/5432, applied to db).
inline void PostWebToDb(Rest& rest) {
  ASSERT_EQ(rest.Post("/api/v1/groups", TagGroupJson("web", "app", "web")).status, 201);
  ASSERT_EQ(rest.Post("/api/v1/groups", TagGroupJson("db", "app", "db")).status, 201);
  auto p = nlohmann::json::parse(R"({"id":"web-to-db","category":"CATEGORY_APPLICATION",
    "applied_to_group_ids":["db"],"stateful":true,
    "rules":[{"id":"allow-pg","sources":{"group_ids":["web"]},"destinations":{"group_ids":["db"]},
              "services":[{"protocol":6,"destination_ports":[{"first":5432}]}],"action":"ACTION_ALLOW"}]})");
  ASSERT_EQ(rest.Post("/api/v1/policies", p).status, 201);
}

// An in-process controller on loopback (plaintext: these tests are about
// the model), with the web and db groups and the web-to-db policy.
class WebToDbControllerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    opts_.data_dir = dir_.path() + "/db";
    opts_.insecure = true;
    ASSERT_TRUE(server_.Start(opts_).ok());
    rest_ = std::make_unique<Rest>(server_.http_port());
    PostWebToDb(*rest_);
  }

  TempDir dir_;
  ControllerOptions opts_;
  ControllerServer server_;
  std::unique_ptr<Rest> rest_;
};

// A plaintext controller on loopback with web-1 (app=web, on h1) and db-1
// (app=db, on h2) and the groups web and db; no policy. Post() creates.
class WebAndDbOnTwoHostsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ControllerOptions o;
    o.data_dir = dir_.path() + "/db";
    o.insecure = true;  // plaintext on loopback: these tests are about the model
    ASSERT_TRUE(server_.Start(o).ok());
    rest_ = std::make_unique<Rest>(server_.http_port());
    Post("/api/v1/vms", VmJson("web-1", "h1", {{"app", "web"}}, "198.18.0.1"));
    Post("/api/v1/vms", VmJson("db-1", "h2", {{"app", "db"}}, "198.18.0.2"));
    Post("/api/v1/groups", TagGroupJson("web", "app", "web"));
    Post("/api/v1/groups", TagGroupJson("db", "app", "db"));
  }
  // web -> db: allow-pg (tcp/5432) then reject-http (tcp/80), applied to
  // both groups, priority 10.
  static nlohmann::json WebToDb() {
    return nlohmann::json::parse(R"({"id":"web-to-db","category":"CATEGORY_APPLICATION",
      "priority":10,"applied_to_group_ids":["web","db"],"stateful":true,
      "rules":[{"id":"allow-pg","sources":{"group_ids":["web"]},"destinations":{"group_ids":["db"]},
                "services":[{"protocol":6,"destination_ports":[{"first":5432}]}],
                "action":"ACTION_ALLOW"},
               {"id":"reject-http","sources":{"group_ids":["web"]},
                "destinations":{"group_ids":["db"]},
                "services":[{"protocol":6,"destination_ports":[{"first":80}]}],
                "action":"ACTION_REJECT"}]})");
  }
  void Post(const std::string& path, const nlohmann::json& body) {
    auto r = rest_->Post(path, body);
    ASSERT_EQ(r.status, 201) << path << ": " << r.body;
  }

  TempDir dir_;
  ControllerServer server_;
  std::unique_ptr<Rest> rest_;
};

}  // namespace dfw::controller::testing
