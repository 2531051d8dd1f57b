// The real dfw-controller binary: kill -9 during a stream of acknowledged
// writes loses none of them; dfwctl drives a running controller.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <mutex>
#include <set>
#include <thread>

#include "controller_process.h"
#include "test_host.h"
#include "test_util.h"

namespace dfw::controller::testing {
namespace {

using nlohmann::json;

TEST(ControllerProcessTest, KillNineLosesNoAcknowledgedWrite) {
  TempDir dir;
  ControllerProcess proc(dir.path());
  std::set<std::string> acked;       // VMs whose create was acknowledged
  std::set<std::string> acked_tags;  // "vm=value" tag sets acknowledged
  for (int round = 0; round < 2; ++round) {
    proc.Start();
    Rest check(proc.http_port());
    // Everything acknowledged before the last crash is here.
    for (const auto& id : acked) {
      auto r = check.Get("/api/v1/vms/" + id);
      ASSERT_EQ(r.status, 200) << "acknowledged VM " << id << " lost after kill -9";
    }
    for (const auto& t : acked_tags) {
      std::string vm = t.substr(0, t.find('=')), v = t.substr(t.find('=') + 1);
      auto r = check.Get("/api/v1/vms/" + vm);
      bool found = false;
      for (const auto& tag : r.body["tags"]) found |= tag["scope"] == "round" && tag["value"] == v;
      ASSERT_TRUE(found) << "acknowledged tag " << t << " lost after kill -9";
    }
    std::mutex mu;
    std::atomic<bool> stop{false};
    std::vector<std::thread> writers;
    for (int w = 0; w < 3; ++w) {
      writers.emplace_back([&, w] {
        Rest rest(proc.http_port());
        for (int i = 0; !stop; ++i) {
          std::string id =
              "r" + std::to_string(round) + "-w" + std::to_string(w) + "-" + std::to_string(i);
          char ip[32];
          std::snprintf(ip, sizeof ip, "198.18.%d.%d", (round * 3 + w) % 250, i % 250 + 1);
          auto r = rest.Post("/api/v1/vms", VmJson(id, "h1", {{"app", "web"}}, ip));
          if (r.status == 201) {
            std::lock_guard<std::mutex> l(mu);
            acked.insert(id);
          } else if (r.status != 0) {
            ADD_FAILURE() << "unexpected status " << r.status << " " << r.body;
            return;
          }
          if (i % 5 == 4) {  // a tag change on a VM created earlier
            std::string vm = "r" + std::to_string(round) + "-w" + std::to_string(w) + "-" +
                             std::to_string(i - 2);
            std::string val = "v" + std::to_string(i);
            auto t = rest.Post("/api/v1/vms/" + vm + "/tags",
                               {{"set", {{{"scope", "round"}, {"value", val}}}}});
            if (t.status == 200) {
              std::lock_guard<std::mutex> l(mu);
              acked_tags.insert(vm + "=" + val);
            }
          }
        }
      });
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    proc.Kill(SIGKILL);  // with writes in flight
    stop = true;
    for (auto& t : writers) t.join();
    ASSERT_GT(acked.size(), 20u * (round + 1));
  }
  proc.Start();
  Rest check(proc.http_port());
  auto list = check.Get("/api/v1/vms?page_size=10000");
  std::set<std::string> have;
  for (const auto& v : list.body["vms"]) have.insert(v["id"]);
  for (const auto& id : acked) EXPECT_TRUE(have.count(id)) << id;
  std::printf(
      "acknowledged writes: %zu VM creates, %zu tag changes; all present after 2 x kill -9\n",
      acked.size(), acked_tags.size());
}

Cmd Dfwctl(int port, const std::string& args) { return RunDfwctl(DFWCTL_BIN, port, args); }

TEST(ControllerProcessTest, DfwctlDrivesARunningController) {
  TempDir dir;
  ControllerProcess proc(dir.path());
  proc.Start();
  int port = proc.http_port();
  Rest rest(port);
  ASSERT_EQ(rest.Post("/api/v1/vms", VmJson("vm-1", "h1", {}, "198.18.0.1")).status, 201);
  auto vm = VmJson("vm-2", "h1", {}, "198.18.0.2");
  vm["name"] = "db-1";
  vm["vnics"][0]["id"] = "vm-2-nic0";
  ASSERT_EQ(rest.Post("/api/v1/vms", vm).status, 201);
  ASSERT_EQ(rest.Put("/api/v1/vms/vm-1",
                     [] {
                       auto v = VmJson("vm-1", "h1", {}, "198.18.0.1");
                       v["name"] = "web-1";
                       return v;
                     }())
                .status,
            200);

  auto c = Dfwctl(port, "group create web --tag app=web");
  EXPECT_EQ(c.rc, 0) << c.out;
  c = Dfwctl(port, "group create db --tag app=db");
  EXPECT_EQ(c.rc, 0) << c.out;
  c = Dfwctl(port, "vm tag web-1 app=web");  // by name
  EXPECT_EQ(c.rc, 0) << c.out;
  EXPECT_NE(c.out.find("app=web"), std::string::npos) << c.out;
  c = Dfwctl(port, "vm tag db-1 app=db env=prod");
  EXPECT_EQ(c.rc, 0) << c.out;
  EXPECT_NE(c.out.find("app=db (api),env=prod (api)"), std::string::npos) << c.out;
  c = Dfwctl(port, "group members web");
  EXPECT_EQ(c.rc, 0);
  EXPECT_NE(c.out.find("vm-1"), std::string::npos) << c.out;
  EXPECT_NE(c.out.find("198.18.0.1/32"), std::string::npos) << c.out;

  std::string pf = dir.path() + "/policy.json";
  std::ofstream(pf)
      << R"({"id":"web-to-db","category":"CATEGORY_APPLICATION","applied_to_group_ids":["db"],
    "rules":[{"id":"pg","sources":{"group_ids":["web"]},"destinations":{"group_ids":["db"]},
      "services":[{"protocol":6,"destination_ports":[{"first":5432}]}],"action":"ACTION_ALLOW"}]})";
  c = Dfwctl(port, "policy apply -f " + pf);
  EXPECT_EQ(c.rc, 0) << c.out;
  c = Dfwctl(port, "vm rules db-1");
  EXPECT_EQ(c.rc, 0);
  EXPECT_NE(c.out.find("web-to-db/pg"), std::string::npos) << c.out;
  EXPECT_NE(c.out.find("6:5432"), std::string::npos) << c.out;
  c = Dfwctl(port, "vm groups db-1");
  EXPECT_NE(c.out.find("criteria[0]"), std::string::npos) << c.out;
  c = Dfwctl(port, "-o json vm get web-1");
  EXPECT_EQ(c.rc, 0);
  auto j = json::parse(c.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << c.out;
  EXPECT_EQ(j["id"], "vm-1");
  c = Dfwctl(port, "realization");
  EXPECT_EQ(c.rc, 0);
  EXPECT_NE(c.out.find("web-to-db"), std::string::npos) << c.out;
  c = Dfwctl(port, "policy list");
  EXPECT_NE(c.out.find("APPLICATION"), std::string::npos) << c.out;

  // Tags from libvirt metadata: shown with their source; the API overrides
  // a scope but cannot remove what only the metadata carries.
  {
    TestHost h9(proc.grpc_port(), "h9");
    h9.Hello({MetadataVm("lv-1", {{"app", "web"}}, "198.18.0.9")});
    ASSERT_TRUE(h9.Next().has_value());
  }
  c = Dfwctl(port, "vm get lv-1");
  EXPECT_NE(c.out.find("app=web (libvirt)"), std::string::npos) << c.out;
  c = Dfwctl(port, "vm tag lv-1 app=db");
  EXPECT_EQ(c.rc, 0) << c.out;
  EXPECT_NE(c.out.find("app=db (api),app=web (libvirt, overridden by api)"), std::string::npos)
      << c.out;
  c = Dfwctl(port, "vm untag lv-1 app=db");
  EXPECT_EQ(c.rc, 0) << c.out;
  EXPECT_NE(c.out.find("app=web (libvirt)"), std::string::npos) << c.out;
  c = Dfwctl(port, "vm untag lv-1 app=web");
  EXPECT_EQ(c.rc, 5) << c.out;
  EXPECT_NE(c.out.find("libvirt metadata on host 'h9'"), std::string::npos) << c.out;
  c = Dfwctl(port, "-o json vm get lv-1");
  j = json::parse(c.out, nullptr, false);
  EXPECT_EQ(j["host_tags"][0]["value"], "web") << c.out;

  // Errors: clear message, distinct exit codes.
  c = Dfwctl(port, "group delete web");
  EXPECT_EQ(c.rc, 5) << c.out;
  EXPECT_NE(c.out.find("referenced by policy 'web-to-db'"), std::string::npos) << c.out;
  std::ofstream(pf)
      << R"({"id":"bad","category":"CATEGORY_APPLICATION","rules":[{"id":"r","sources":{"any":true},
    "destinations":{"any":true},"action":"ACTION_DROP","services":[{"protocol":17,"destination_ports":[{"first":70000}]}]}]})";
  c = Dfwctl(port, "policy apply -f " + pf);
  EXPECT_EQ(c.rc, 3) << c.out;
  EXPECT_NE(c.out.find("rules[0].services[0].destination_ports[0].first: 70000 is above 65535"),
            std::string::npos)
      << c.out;
  c = Dfwctl(port, "vm get nosuch");
  EXPECT_EQ(c.rc, 4) << c.out;
  c = Dfwctl(port, "frobnicate");
  EXPECT_EQ(c.rc, 2) << c.out;
  proc.Kill(SIGTERM);
  c = Dfwctl(port, "vm list");
  EXPECT_EQ(c.rc, 6) << c.out;
}

}  // namespace
}  // namespace dfw::controller::testing
