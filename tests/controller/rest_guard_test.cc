// REST robustness over real sockets: ids and numbers that used to crash or
// wrap, unknown objects in computed views, the browser-safety checks (Host,
// Origin, Content-Type), the size limits (REST and gRPC), a burst of 1,000
// concurrent connections and slow-drip clients.
#include <arpa/inet.h>
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "dfw/controller/model_service.h"
#include "dfw/controller/policy_validator.h"
#include "dfw/controller/rest_api.h"
#include "dfw/v1/controller.grpc.pb.h"
#include "test_util.h"

namespace dfw::controller::testing {
namespace {

using nlohmann::json;

// One request on a fresh connection (Connection: close); the whole reply.
int Connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{20, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

bool SendAll(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    ssize_t n = send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

std::string ReadAll(int fd) {
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

struct RawReply {
  int status = 0;
  std::string head;  // status line and headers
  json body;
};

RawReply Raw(int port, const std::string& request) {
  RawReply r;
  int fd = Connect(port);
  if (fd < 0) return r;
  if (SendAll(fd, request)) {
    std::string all = ReadAll(fd);
    size_t end = all.find("\r\n\r\n");
    r.head = all.substr(0, end);
    if (all.rfind("HTTP/1.1 ", 0) == 0) r.status = std::atoi(all.c_str() + 9);
    if (end != std::string::npos) r.body = json::parse(all.substr(end + 4), nullptr, false);
  }
  close(fd);
  return r;
}

std::string Req(const std::string& method, const std::string& path, const std::string& host,
                const std::string& extra = "", const std::string& body = "") {
  std::string r = method + " " + path + " HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n";
  r += extra;
  if (!body.empty()) r += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  return r + "\r\n" + body;
}

class RestGuardTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<ControllerServer>();
    ControllerOptions o;
    o.data_dir = dir_.path() + "/db";
    o.insecure = true;  // plaintext on loopback: these tests are about the REST edge
    ASSERT_TRUE(server_->Start(o).ok());
    port_ = server_->http_port();
    host_ = "127.0.0.1:" + std::to_string(port_);
    rest_ = std::make_unique<Rest>(port_);
    auto ch = grpc::CreateChannel("127.0.0.1:" + std::to_string(server_->grpc_port()),
                                  grpc::InsecureChannelCredentials());
    stub_ = dfw::v1::ControllerService::NewStub(ch);
  }
  // The raw reply to `method path` with a JSON body, checked for no leak.
  RawReply Json(const std::string& method, const std::string& path, const std::string& body) {
    auto r = Raw(port_, Req(method, path, host_, "Content-Type: application/json\r\n", body));
    EXPECT_EQ(r.head.find("EXCEPTION_WHAT"), std::string::npos) << r.head;
    EXPECT_TRUE(r.body.is_object()) << method << " " << path << ": " << r.head;
    return r;
  }
  static json Policy(int rules, int services) {
    json p = {{"id", "p"}, {"category", "CATEGORY_APPLICATION"}, {"rules", json::array()}};
    for (int i = 0; i < rules; ++i) {
      json r = {{"id", "r" + std::to_string(i)},
                {"sources", {{"any", true}}},
                {"destinations", {{"any", true}}},
                {"action", "ACTION_ALLOW"}};
      for (int j = 0; j < services; ++j) {
        r["services"].push_back({{"protocol", 6}, {"destination_ports", {{{"first", 1 + j}}}}});
      }
      p["rules"].push_back(r);
    }
    return p;
  }

  TempDir dir_;
  std::unique_ptr<ControllerServer> server_;
  int port_ = 0;
  std::string host_;
  std::unique_ptr<Rest> rest_;
  std::unique_ptr<dfw::v1::ControllerService::Stub> stub_;
};

// Defect 1: a non-ASCII id answered 500 with the JSON library's exception
// text in an EXCEPTION_WHAT header.
TEST_F(RestGuardTest, NonAsciiAndInvalidUtf8IdsAre400NamingTheField) {
  struct Case {
    const char* path;
    std::string body;
    const char* field;
  };
  const std::vector<Case> cases = {
      {"/api/v1/groups", R"({"id":"☃"})", "group.id"},
      {"/api/v1/vms", R"({"id":"☃"})", "vm.id"},
      {"/api/v1/vms", R"({"id":"v","vnics":[{"id":"nïc"}]})", "vm.vnics[0].id"},
      {"/api/v1/policies", R"({"id":"☃","category":"CATEGORY_APPLICATION"})", "policy.id"},
      {"/api/v1/policies",
       R"({"id":"p","category":"CATEGORY_APPLICATION","rules":[{"id":"☃","sources":{"any":true},)"
       R"("destinations":{"any":true},"action":"ACTION_ALLOW"}]})",
       "policy.rules[0].id"},
      {"/api/v1/groups", R"({"id":"g","static_members":{"vm_ids":["é"]}})",
       "group.static_members.vm_ids[0]"},
  };
  for (const auto& c : cases) {
    auto r = Json("POST", c.path, c.body);
    EXPECT_EQ(r.status, 400) << c.body << " -> " << r.body;
    EXPECT_EQ(r.body["error"]["field"], c.field) << c.body << " -> " << r.body;
  }
  // Bytes that are not UTF-8 at all, in a body and in a path.
  auto r = Json("POST", "/api/v1/groups", "{\"id\":\"\xff\"}");
  EXPECT_EQ(r.status, 400) << r.body;
  r = Raw(port_, Req("GET", "/api/v1/vms/%FF%FE", host_));
  EXPECT_EQ(r.status, 404) << r.head;
  EXPECT_EQ(r.head.find("EXCEPTION_WHAT"), std::string::npos) << r.head;
  EXPECT_EQ(r.body["error"]["field"], "id");
  r = Json("POST", "/api/v1/vms", "{\"id\":\"v\",\"name\":\"\xc3\x28\"}");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(rest_->Get("/api/v1/groups").body["groups"].size(), 0u);
  EXPECT_EQ(rest_->Get("/api/v1/vms").body["vms"].size(), 0u);
}

// Defect 5: "." and ".." were accepted as ids.
TEST_F(RestGuardTest, DotIdsAreRefused) {
  for (const char* id : {".", ".."}) {
    std::string sid = id;
    auto r = rest_->Post("/api/v1/groups", json{{"id", sid}});
    EXPECT_EQ(r.status, 400) << r.body;
    EXPECT_EQ(r.body["error"]["field"], "group.id");
    r = rest_->Post("/api/v1/vms", json{{"id", sid}});
    EXPECT_EQ(r.body["error"]["field"], "vm.id") << r.body;
    r = rest_->Post("/api/v1/vms", json{{"id", "v"}, {"vnics", {{{"id", sid}}}}});
    EXPECT_EQ(r.body["error"]["field"], "vm.vnics[0].id") << r.body;
    r = rest_->Post("/api/v1/policies", json{{"id", sid}, {"category", "CATEGORY_APPLICATION"}});
    EXPECT_EQ(r.body["error"]["field"], "policy.id") << r.body;
    auto p = Policy(1, 0);
    p["rules"][0]["id"] = sid;
    r = rest_->Post("/api/v1/policies", p);
    EXPECT_EQ(r.body["error"]["field"], "policy.rules[0].id") << r.body;
  }
  // Dots inside an id are fine.
  EXPECT_EQ(rest_->Post("/api/v1/groups", json{{"id", "a.b"}}).status, 201);
  EXPECT_EQ(rest_->Post("/api/v1/groups", json{{"id", "..."}}).status, 201);
}

// Defect 3: numbers above 2^64-1 wrapped to small ones.
TEST_F(RestGuardTest, NumbersThatOverflowAre400NamingTheField) {
  ASSERT_EQ(rest_->Post("/api/v1/groups", json{{"id", "g"}}).status, 201);
  auto r = rest_->Put("/api/v1/groups/g", json{{"id", "g"}},
                      {{"If-Match", "\"18446744073709551617\""}});  // 2^64 + 1 wrapped to 1
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(r.body["error"]["field"], "If-Match");
  r = rest_->Delete("/api/v1/groups/g?expected_revision=18446744073709551617");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(r.body["error"]["field"], "expected_revision");
  r = rest_->Get("/api/v1/changes?from_revision=18446744073709551616");  // wrapped to 0
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(r.body["error"]["field"], "from_revision");
  r = rest_->Get("/api/v1/vms?page_size=18446744073709551617");  // wrapped to 1
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(r.body["error"]["field"], "page_size");
  r = rest_->Get("/api/v1/changes?wait_ms=99999999999999999999999");
  EXPECT_EQ(r.body["error"]["field"], "wait_ms") << r.body;
  // The largest values still parse.
  EXPECT_NE(rest_->Get("/api/v1/changes?from_revision=18446744073709551615").status, 400);
  EXPECT_EQ(rest_->Get("/api/v1/groups/g").status, 200);  // nothing was changed
}

// Defect 4: effective rules of an unknown vNIC answered 200.
TEST_F(RestGuardTest, ComputedViewsOfUnknownObjectsAre404) {
  ASSERT_EQ(rest_->Post("/api/v1/vms", VmJson("vm-1", "h1", {}, "198.18.0.1")).status, 201);
  EXPECT_EQ(rest_->Get("/api/v1/vnics/vm-1-nic0/effective-rules").status, 200);
  auto r = rest_->Get("/api/v1/vnics/nope/effective-rules");
  EXPECT_EQ(r.status, 404) << r.body;
  EXPECT_EQ(r.body["error"]["field"], "vnic_id");
  EXPECT_EQ(rest_->Get("/api/v1/vms/nope/effective-rules").status, 404);
  EXPECT_EQ(rest_->Get("/api/v1/vms/nope/groups").status, 404);
  EXPECT_EQ(rest_->Get("/api/v1/groups/nope/members").status, 404);
  grpc::ClientContext ctx;
  dfw::v1::EffectiveRulesRequest req;
  req.set_vnic_id("nope");
  dfw::v1::EffectiveRulesResponse resp;
  EXPECT_EQ(stub_->EffectiveRules(&ctx, req, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
}

// Defect 2: dfwctl aborted (an uncaught nlohmann::json exception) on an
// argument that is not UTF-8. Now: a clear error, exit 3 (invalid input).
TEST_F(RestGuardTest, DfwctlRefusesArgumentsThatAreNotUtf8) {
  auto run = [&](std::vector<std::string> args) {
    std::string server = "http://" + host_;
    args.insert(args.begin(), {DFWCTL_BIN, "--insecure", "--server", server});
    pid_t pid = fork();
    if (pid == 0) {
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      int null = open("/dev/null", O_WRONLY);
      dup2(null, 1);
      dup2(null, 2);
      execv(argv[0], argv.data());
      _exit(127);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    return st;
  };
  for (const auto& args :
       std::vector<std::vector<std::string>>{{"group", "create", "\xff"},
                                             {"group", "create", "g", "--tag", "app=\xc3\x28"},
                                             {"group", "create", "g", "--display-name", "\xfe"},
                                             {"vm", "tag", "\xff", "app=web"},
                                             {"vm", "untag", "vm-1", "\xff"},
                                             {"policy", "get", "\xff"}}) {
    int st = run(args);
    ASSERT_TRUE(WIFEXITED(st)) << args[0] << " " << args[1] << ": killed by signal "
                               << WTERMSIG(st);
    EXPECT_EQ(WEXITSTATUS(st), 3) << args[0] << " " << args[1] << " " << args[2];
  }
  EXPECT_EQ(rest_->Get("/api/v1/groups").body["groups"].size(), 0u);
  // A valid non-ASCII argument reaches the server, which refuses the id (400: exit 3).
  int st = run({"group", "create", "☃"});
  ASSERT_TRUE(WIFEXITED(st));
  EXPECT_EQ(WEXITSTATUS(st), 3);
}

// Host: only names of this controller (DNS rebinding).
TEST_F(RestGuardTest, HostMustNameThisController) {
  std::string port = std::to_string(port_);
  for (const std::string& h :
       std::vector<std::string>{"127.0.0.1:" + port, "localhost:" + port, "LOCALHOST", "127.0.0.1",
                                "127.1.2.3:" + port}) {
    EXPECT_EQ(Raw(port_, Req("GET", "/api/v1/status", h)).status, 200) << h;
  }
  for (const std::string& h :
       std::vector<std::string>{"evil.example:" + port, "evil.example", "127.0.0.1.evil.example",
                                "localhost.evil.example:" + port, "::1", "a:b:c", ""}) {
    auto r = Raw(port_, Req("GET", "/api/v1/status", h));
    EXPECT_TRUE(r.status == 421 || r.status == 400) << h << " -> " << r.status;
    EXPECT_EQ(r.body["error"]["field"], "Host") << h;
  }
  auto r = Raw(port_, Req("GET", "/api/v1/status", "evil.example:" + port));
  EXPECT_EQ(r.status, 421);
  // No Host at all.
  r = Raw(port_, "GET /api/v1/status HTTP/1.1\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(r.status, 400);
  // A write with a foreign Host does nothing.
  r = Raw(port_, Req("POST", "/api/v1/groups", "evil.example", "Content-Type: application/json\r\n",
                     R"({"id":"g"})"));
  EXPECT_EQ(r.status, 421);
  EXPECT_EQ(rest_->Get("/api/v1/groups").body["groups"].size(), 0u);
}

// The allow-list, and IPv6 loopback, on CheckRequest itself.
TEST(CheckRequestTest, AllowedHostsAndIpv6Loopback) {
  httplib::Request req;
  req.method = "GET";
  req.local_addr = "10.0.0.5";
  auto with_host = [&](const std::string& h) {
    req.headers.clear();
    req.headers.emplace("Host", h);
    return HttpStatusOf(CheckRequest(req, {"ctl.example.org", "192.0.2.7"}));
  };
  EXPECT_EQ(with_host("ctl.example.org:8080"), 200);
  EXPECT_EQ(with_host("CTL.example.org"), 200);
  EXPECT_EQ(with_host("192.0.2.7:8080"), 200);
  EXPECT_EQ(with_host("[::1]:8080"), 200);
  EXPECT_EQ(with_host("10.0.0.5:8080"), 200);  // the address the connection came in on
  EXPECT_EQ(with_host("other.example.org:8080"), 421);
  EXPECT_EQ(with_host("10.0.0.6"), 421);
  EXPECT_EQ(with_host("[::2]:8080"), 421);
}

// Origin: same origin or nothing, for every method (no CORS).
TEST_F(RestGuardTest, CrossOriginRequestsAreRefused) {
  ASSERT_EQ(rest_->Post("/api/v1/groups", json{{"id", "g"}}).status, 201);
  std::string port = std::to_string(port_);
  for (const std::string& o :
       std::vector<std::string>{"http://evil.example", "http://evil.example:" + port, "null",
                                "https://127.0.0.1:" + port, "http://127.0.0.1",
                                "http://127.0.0.1:1" + port, "file://"}) {
    std::string h = "Origin: " + o + "\r\n";
    EXPECT_EQ(Raw(port_, Req("GET", "/api/v1/groups", host_, h)).status, 403) << o;
    auto r = Raw(port_, Req("POST", "/api/v1/groups", host_,
                            h + "Content-Type: application/json\r\n", R"({"id":"x"})"));
    EXPECT_EQ(r.status, 403) << o;
    EXPECT_EQ(r.body["error"]["field"], "Origin");
    EXPECT_EQ(Raw(port_, Req("DELETE", "/api/v1/groups/g", host_, h)).status, 403) << o;
    EXPECT_EQ(Raw(port_, Req("OPTIONS", "/api/v1/groups", host_, h)).status, 403) << o;
  }
  EXPECT_EQ(rest_->Get("/api/v1/groups").body["groups"].size(), 1u);  // nothing changed
  auto r = Raw(port_, Req("GET", "/api/v1/groups", host_, "Origin: http://" + host_ + "\r\n"));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.head.find("Access-Control"), std::string::npos);
  r = Raw(port_, Req("GET", "/api/v1/groups", "localhost:" + port,
                     "Origin: HTTP://LocalHost:" + port + "\r\n"));
  EXPECT_EQ(r.status, 200);
}

// Content-Type: a body must be JSON (a cross-site form cannot send that).
TEST_F(RestGuardTest, WritesWithABodyMustBeJson) {
  const std::string body = R"({"id":"g"})";
  for (const char* ct : {"text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                         "application/jsonx", ""}) {
    std::string h = *ct ? std::string("Content-Type: ") + ct + "\r\n" : "";
    for (const char* m : {"POST", "PUT", "DELETE", "PATCH"}) {
      auto r = Raw(port_,
                   Req(m, std::string("/api/v1/groups") + (m[0] == 'P' && m[1] == 'O' ? "" : "/g"),
                       host_, h, body));
      EXPECT_EQ(r.status, 415) << m << " " << ct;
      EXPECT_EQ(r.body["error"]["field"], "Content-Type") << m << " " << ct;
    }
  }
  EXPECT_EQ(rest_->Get("/api/v1/groups").body["groups"].size(), 0u);
  auto r = Raw(port_, Req("POST", "/api/v1/groups", host_,
                          "Content-Type: Application/JSON; charset=utf-8\r\n", body));
  EXPECT_EQ(r.status, 201) << r.body;
  r = Raw(port_, Req("DELETE", "/api/v1/groups/g", host_));  // no body: no type needed
  EXPECT_EQ(r.status, 200) << r.body;
}

// Limits: body size, then per-object sizes (REST and gRPC).
TEST_F(RestGuardTest, LimitsNameTheFieldAndTheLimit) {
  std::string big =
      R"({"id":"g","display_name":")" + std::string(kMaxRequestBodyBytes, 'x') + "\"}";
  // Headers only: the refusal comes before the body is read.
  auto r = Raw(port_, "POST /api/v1/groups HTTP/1.1\r\nHost: " + host_ +
                          "\r\nContent-Type: application/json\r\nContent-Length: " +
                          std::to_string(big.size()) + "\r\n\r\n");
  EXPECT_EQ(r.status, 413);
  EXPECT_EQ(r.body["error"]["field"], "body");
  EXPECT_NE(std::string(r.body["error"]["message"]).find(std::to_string(kMaxRequestBodyBytes)),
            std::string::npos);
  // Chunked: no Content-Length to check up front; httplib's payload limit stops it.
  {
    httplib::Client cli("127.0.0.1", port_);
    cli.set_read_timeout(20, 0);
    auto res = cli.Post(
        "/api/v1/groups",
        [&](size_t offset, httplib::DataSink& sink) {
          if (offset < big.size()) {
            sink.write(big.data() + offset, std::min<size_t>(65536, big.size() - offset));
          } else {
            sink.done();
          }
          return true;
        },
        "application/json");
    if (res) {
      // httplib 0.11.4 answers a chunked body over the limit with 400 (or cuts the connection).
      EXPECT_TRUE(res->status == 413 || res->status == 400) << res->status;
    }
  }

  auto expect = [&](const std::string& path, const json& body, const std::string& field,
                    size_t limit) {
    auto rr = rest_->Post(path, body);
    EXPECT_EQ(rr.status, 400) << field << " -> " << rr.body;
    EXPECT_EQ(rr.body["error"]["field"], field) << rr.body;
    std::string msg = rr.body["error"]["message"];
    EXPECT_NE(msg.find("at most " + std::to_string(limit)), std::string::npos) << msg;
  };
  json p = Policy(kMaxRulesPerPolicy + 1, 0);
  expect("/api/v1/policies", p, "policy.rules", kMaxRulesPerPolicy);
  EXPECT_EQ(rest_->Post("/api/v1/policies", Policy(kMaxRulesPerPolicy, 0)).status, 201);
  expect("/api/v1/policies", Policy(1, kMaxServicesPerRule + 1), "policy.rules[0].services",
         kMaxServicesPerRule);

  json vm = VmJson("v", "h1", {}, "198.18.0.1");
  for (size_t i = 0; i <= ModelService::kMaxTagsPerVm; ++i) {
    vm["tags"].push_back({{"scope", "s" + std::to_string(i)}, {"value", "x"}});
  }
  expect("/api/v1/vms", vm, "vm.tags", ModelService::kMaxTagsPerVm);
  vm = VmJson("v", "h1", {}, "198.18.0.1");
  for (size_t i = 0; i < ModelService::kMaxVnicsPerVm; ++i) {
    vm["vnics"].push_back({{"id", "n" + std::to_string(i)}});
  }
  expect("/api/v1/vms", vm, "vm.vnics", ModelService::kMaxVnicsPerVm);
  vm = VmJson("v", "h1", {}, "198.18.0.1");
  for (size_t i = 0; i < ModelService::kMaxAddressesPerVnic; ++i) {
    vm["vnics"][0]["addresses"].push_back(
        {{"ip", "10.0." + std::to_string(i / 250) + "." + std::to_string(i % 250 + 1)}});
  }
  expect("/api/v1/vms", vm, "vm.vnics[0].addresses", ModelService::kMaxAddressesPerVnic);
  json g = {{"id", "g"}, {"static_members", {{"ip_prefixes", json::array()}}}};
  for (size_t i = 0; i <= ModelService::kMaxStaticPrefixesPerGroup; ++i) {
    g["static_members"]["ip_prefixes"].push_back("10." + std::to_string(i / 256) + "." +
                                                 std::to_string(i % 256) + ".0/24");
  }
  expect("/api/v1/groups", g, "group.static_members.ip_prefixes",
         ModelService::kMaxStaticPrefixesPerGroup);

  // Tags added through the tag workflow count too.
  vm = VmJson("v", "h1", {}, "198.18.0.1");
  ASSERT_EQ(rest_->Post("/api/v1/vms", vm).status, 201);
  json set = json::array();
  for (size_t i = 0; i < ModelService::kMaxTagsPerVm; ++i) {
    set.push_back({{"scope", "s" + std::to_string(i)}, {"value", "x"}});
  }
  ASSERT_EQ(rest_->Post("/api/v1/vms/v/tags", {{"set", set}}).status, 200);
  r = Raw(port_, Req("POST", "/api/v1/vms/v/tags", host_, "Content-Type: application/json\r\n",
                     R"({"set":[{"scope":"one-more","value":"x"}]})"));
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(r.body["error"]["field"], "set");

  // gRPC goes through the same checks.
  dfw::v1::PutPolicyRequest req;
  auto* pol = req.mutable_policy();
  pol->set_id("q");
  pol->set_category(dfw::v1::CATEGORY_APPLICATION);
  for (size_t i = 0; i <= kMaxRulesPerPolicy; ++i) {
    auto* rule = pol->add_rules();
    rule->set_id("r" + std::to_string(i));
    rule->mutable_sources()->set_any(true);
    rule->mutable_destinations()->set_any(true);
    rule->set_action(dfw::v1::ACTION_ALLOW);
  }
  grpc::ClientContext ctx;
  dfw::v1::Policy out;
  auto s = stub_->PutPolicy(&ctx, req, &out);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message().rfind("policy.rules: ", 0), 0u) << s.error_message();
}

// 1,000 clients at once: every one gets its answer (httplib listens with a
// backlog of 5; the guards raise it).
TEST_F(RestGuardTest, AThousandConcurrentConnectionsAllGetAnswers) {
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_cur < 4096) {
    rl.rlim_cur = std::min<rlim_t>(rl.rlim_max, 4096);
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  ASSERT_GE(rl.rlim_cur, 2200u) << "needs ~2,100 descriptors (both ends in one process)";
  constexpr int kClients = 1000;
  std::atomic<int> ready{0}, ok{0};
  std::atomic<bool> go{false};
  std::vector<std::string> errors(kClients);
  std::vector<std::thread> threads;
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&, i] {
      ++ready;
      while (!go.load()) std::this_thread::yield();
      int fd = Connect(port_);
      if (fd < 0) {
        errors[i] = std::string("connect: ") + std::strerror(errno);
        return;
      }
      std::string req = Req("GET", "/api/v1/status", host_);
      std::string reply = SendAll(fd, req) ? ReadAll(fd) : "";
      int err = errno;
      close(fd);
      if (reply.rfind("HTTP/1.1 200", 0) == 0) {
        ++ok;
      } else {
        errors[i] =
            reply.empty() ? std::string("no reply: ") + std::strerror(err) : reply.substr(0, 40);
      }
    });
  }
  while (ready.load() < kClients) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  go = true;
  for (auto& t : threads) t.join();
  std::map<std::string, int> why;
  for (const auto& e : errors) {
    if (!e.empty()) ++why[e];
  }
  std::string summary;
  for (const auto& [e, n] : why) summary += std::to_string(n) + " x " + e + "\n";
  EXPECT_EQ(ok.load(), kClients) << summary;
}

// Slow-drip clients (a byte a second) hold a worker each; 16 of them must
// not stop the API.
TEST_F(RestGuardTest, SlowDripClientsDoNotStopTheApi) {
  constexpr int kSlow = 16;
  std::atomic<bool> stop{false};
  std::vector<std::thread> drips;
  std::atomic<int> connected{0};
  for (int i = 0; i < kSlow; ++i) {
    drips.emplace_back([&] {
      int fd = Connect(port_);
      if (fd < 0) return;
      ++connected;
      std::string req = "GET /api/v1/status HTTP/1.1\r\nHost: " + host_ + "\r\nX-Slow: ";
      for (size_t k = 0; !stop.load(); ++k) {
        if (!SendAll(fd, std::string(1, k < req.size() ? req[k] : 'a'))) break;
        for (int t = 0; t < 10 && !stop.load(); ++t) {
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
      }
      close(fd);
    });
  }
  while (connected.load() < kSlow) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  std::this_thread::sleep_for(std::chrono::seconds(2));  // every drip holds a worker by now
  httplib::Client cli("127.0.0.1", port_);
  cli.set_connection_timeout(3, 0);
  cli.set_read_timeout(3, 0);
  auto t0 = std::chrono::steady_clock::now();
  auto res = cli.Get("/api/v1/status");
  auto took = std::chrono::steady_clock::now() - t0;
  stop = true;
  for (auto& t : drips) t.join();
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 200);
  EXPECT_LT(took, std::chrono::seconds(3));
}

}  // namespace
}  // namespace dfw::controller::testing
