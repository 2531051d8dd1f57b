// ControllerSession against a real controller (ControllerServer in process,
// gRPC and REST on 127.0.0.1, a temporary data directory). The session's
// hooks stand in for the dataplane: FakeDataplane enforces what it is given
// the way the dataplane does (a delta must start at the revision it holds),
// reports that revision in the Hello, records every call, and can be told to
// fail a delta or to hold a full state until released. What the controller
// makes of the session is read through its REST API.
#include "dfw/hostagent/controller_session.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "../controller/test_host.h"
#include "../controller/test_util.h"
#include "gtest/gtest.h"

namespace dfw::hostagent {
namespace {

using controller::ControllerOptions;
using controller::ControllerServer;
using controller::testing::MetadataVm;
using controller::testing::Rest;
using controller::testing::TagGroupJson;
using controller::testing::TempDir;
using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;
using std::chrono::steady_clock;

constexpr char kHost[] = "h1";

// Polls `pred` every 10 ms until it holds or `within` has passed.
template <typename Pred>
bool Eventually(Pred pred, milliseconds within = seconds(10)) {
  const auto deadline = steady_clock::now() + within;
  for (;;) {
    if (pred()) return true;
    if (steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(milliseconds(10));
  }
}

uint64_t Rev(const json& v) { return v.is_string() ? std::stoull(v.get<std::string>()) : 0; }

class FakeDataplane {
 public:
  struct HelloCall {
    uint64_t held = 0;
    steady_clock::time_point at;
  };

  explicit FakeDataplane(std::vector<v1::Vm> vms) : vms_(std::move(vms)) {}
  ~FakeDataplane() { HoldFulls(false); }

  ControllerSession::Hooks Hooks() {
    return {[this] { return Hello(); }, [this](const v1::ControllerToHost& m) { return Apply(m); }};
  }

  // The next delta is refused with FAILED_PRECONDITION and this message.
  void FailNextDelta(std::string message) {
    std::lock_guard<std::mutex> l(mu_);
    fail_next_delta_ = std::move(message);
  }
  // While held, a full state waits in `apply` (the session thread with it).
  void HoldFulls(bool hold) {
    {
      std::lock_guard<std::mutex> l(mu_);
      hold_fulls_ = hold;
    }
    cv_.notify_all();
  }

  uint64_t revision() const {
    std::lock_guard<std::mutex> l(mu_);
    return revision_;
  }
  // Every message given to `apply`, in order (failed ones included).
  std::vector<v1::ControllerToHost> got() const {
    std::lock_guard<std::mutex> l(mu_);
    return got_;
  }
  size_t got_count() const {
    std::lock_guard<std::mutex> l(mu_);
    return got_.size();
  }
  std::vector<HelloCall> hellos() const {
    std::lock_guard<std::mutex> l(mu_);
    return hellos_;
  }
  size_t hello_count() const {
    std::lock_guard<std::mutex> l(mu_);
    return hellos_.size();
  }

 private:
  v1::HostHello Hello() {
    std::lock_guard<std::mutex> l(mu_);
    v1::HostHello h;
    h.mutable_host()->set_id(kHost);
    h.mutable_host()->set_hostname("h1.example");
    for (const auto& vm : vms_) *h.add_vms() = vm;
    h.set_held_revision(revision_);
    hellos_.push_back({revision_, steady_clock::now()});
    return h;
  }

  absl::StatusOr<uint64_t> Apply(const v1::ControllerToHost& m) {
    std::unique_lock<std::mutex> l(mu_);
    got_.push_back(m);
    if (m.has_full()) {
      cv_.wait(l, [this] { return !hold_fulls_; });
      revision_ = m.full().revision();
      return revision_;
    }
    if (!fail_next_delta_.empty()) {
      std::string message = std::move(fail_next_delta_);
      fail_next_delta_.clear();
      return absl::FailedPreconditionError(message);
    }
    if (m.delta().from_revision() != revision_) {
      return absl::FailedPreconditionError(
          "delta: from_revision " + std::to_string(m.delta().from_revision()) +
          " is not the applied revision " + std::to_string(revision_));
    }
    revision_ = m.delta().to_revision();
    return revision_;
  }

  const std::vector<v1::Vm> vms_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  uint64_t revision_ = 0;
  std::string fail_next_delta_;
  bool hold_fulls_ = false;
  std::vector<v1::ControllerToHost> got_;
  std::vector<HelloCall> hellos_;
};

// The host's VMs: db-1 is in the policy's applied-to group (db); web-1 is a
// source (web); app-1 has no tag yet.
std::vector<v1::Vm> HostVms() {
  return {MetadataVm("db-1", {{"app", "db"}}, "198.18.0.10"),
          MetadataVm("web-1", {{"app", "web"}}, "198.18.0.20"),
          MetadataVm("app-1", {}, "198.18.0.21")};
}

class ControllerSessionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    StartController(0);
    ASSERT_EQ(rest_->Post("/api/v1/groups", TagGroupJson("web", "app", "web")).status, 201);
    ASSERT_EQ(rest_->Post("/api/v1/groups", TagGroupJson("db", "app", "db")).status, 201);
    auto p = json::parse(R"({"id":"web-to-db","category":"CATEGORY_APPLICATION",
      "applied_to_group_ids":["db"],"stateful":true,
      "rules":[{"id":"allow-pg","sources":{"group_ids":["web"]},"destinations":{"group_ids":["db"]},
                "services":[{"protocol":6,"destination_ports":[{"first":5432}]}],
                "action":"ACTION_ALLOW"}]})");
    ASSERT_EQ(rest_->Post("/api/v1/policies", p).status, 201);
  }

  void TearDown() override {
    dp_.HoldFulls(false);  // a held apply would keep Stop() waiting
    session_.reset();
    StopController();
  }

  // port 0: any free port; else the port of a previous run.
  void StartController(int grpc_port) {
    server_ = std::make_unique<ControllerServer>();
    ControllerOptions o;
    o.data_dir = dir_.path() + "/db";
    o.insecure = true;  // plaintext on loopback: these tests are about the model
    o.grpc_listen = "127.0.0.1:" + std::to_string(grpc_port);
    auto s = server_->Start(o);
    ASSERT_TRUE(s.ok()) << s;
    grpc_port_ = server_->grpc_port();
    rest_ = std::make_unique<Rest>(server_->http_port());
  }
  void StopController() {
    rest_.reset();
    if (server_) server_->Stop();
    server_.reset();
  }

  void StartSession(const std::string& target) {
    session_ = std::make_unique<ControllerSession>(target, grpc::InsecureChannelCredentials(),
                                                   dp_.Hooks());
    session_->Start();
  }

  // Starts the session and waits until its first full state is acked;
  // returns that revision.
  uint64_t Connect() {
    StartSession("127.0.0.1:" + std::to_string(grpc_port_));
    EXPECT_TRUE(Eventually([&] { return dp_.got_count() >= 1; })) << "no full state";
    uint64_t rev = dp_.got_count() >= 1 ? dp_.got()[0].full().revision() : 0;
    EXPECT_TRUE(WaitRealized(rev));
    return rev;
  }

  json HostRealization() {
    auto r = rest_->Get("/api/v1/realization");
    for (const auto& h : r.body.value("hosts", json::array())) {
      if (h["host_id"] == kHost) return h;
    }
    return json::object();
  }
  // The controller shows the host REALIZED at `rev` (and no error).
  bool WaitRealized(uint64_t rev) {
    bool ok = Eventually([&] {
      json h = HostRealization();
      return h.value("state", "") == "REALIZATION_STATE_REALIZED" &&
             Rev(h.value("realized_revision", json())) == rev;
    });
    if (!ok) ADD_FAILURE() << "not realized at " << rev << ": " << HostRealization();
    return ok;
  }
  json Host() {
    auto hosts = rest_->Get("/api/v1/hosts").body.value("hosts", json::array());
    return hosts.size() == 1 ? hosts[0] : json::object();
  }
  uint64_t Tag(const std::string& vm, const std::string& scope, const std::string& value) {
    auto r = rest_->Post("/api/v1/vms/" + vm + "/tags",
                         {{"set", {{{"scope", scope}, {"value", value}}}}});
    EXPECT_EQ(r.status, 200) << r.body;
    return Rev(r.body.value("revision", json()));
  }

  TempDir dir_;
  std::unique_ptr<ControllerServer> server_;
  int grpc_port_ = 0;
  std::unique_ptr<Rest> rest_;
  FakeDataplane dp_{HostVms()};
  std::unique_ptr<ControllerSession> session_;
};

json TagsJson(std::vector<std::pair<std::string, std::string>> tags) {
  json out = json::array();
  for (const auto& [s, v] : tags) out.push_back({{"scope", s}, {"value", v}});
  return out;
}

TEST_F(ControllerSessionTest, HelloRegistersTheHostAndItsFullStateIsAcked) {
  StartSession("127.0.0.1:" + std::to_string(grpc_port_));
  ASSERT_TRUE(Eventually([&] { return session_->connected(); }));
  ASSERT_GE(dp_.hello_count(), 1u);
  EXPECT_EQ(dp_.hellos()[0].held, 0u);  // a fresh dataplane holds nothing

  // The controller lists the host, connected, and the VMs of its Hello.
  json host = Host();
  EXPECT_EQ(host.value("id", ""), "h1");
  EXPECT_EQ(host.value("hostname", ""), "h1.example");
  EXPECT_EQ(host.value("connected", false), true);
  auto vms = rest_->Get("/api/v1/vms").body.value("vms", json::array());
  ASSERT_EQ(vms.size(), 3u) << vms;
  for (const auto& vm : vms) EXPECT_EQ(vm.value("host", ""), "h1") << vm;
  auto db = rest_->Get("/api/v1/vms/db-1").body;
  EXPECT_EQ(db["tags"], TagsJson({{"app", "db"}}));
  EXPECT_EQ(db["vnics"][0]["addresses"][0]["ip"], "198.18.0.10");

  // The full state: db-1's vNIC gets the policy's rule, g:web holds web-1.
  ASSERT_TRUE(Eventually([&] { return dp_.got_count() >= 1; }));
  auto first = dp_.got()[0];
  ASSERT_TRUE(first.has_full()) << first.DebugString();
  const auto& st = first.full();
  uint64_t current = Rev(rest_->Get("/api/v1/realization").body["current_revision"]);
  EXPECT_EQ(st.revision(), current);
  ASSERT_EQ(st.rulesets_size(), 3);  // one per vNIC of the host
  bool found = false;
  for (const auto& rs : st.rulesets()) {
    if (rs.vnic_id() != "db-1-nic0") continue;
    found = true;
    ASSERT_EQ(rs.rules_size(), 1);
    EXPECT_EQ(rs.rules(0).rule_id(), "allow-pg");
  }
  EXPECT_TRUE(found);
  bool web_set = false;
  for (const auto& as : st.address_sets()) {
    if (as.id() != "g:web") continue;
    web_set = true;
    ASSERT_EQ(as.prefixes_size(), 1);
    EXPECT_EQ(as.prefixes(0), "198.18.0.20/32");
  }
  EXPECT_TRUE(web_set);

  // Acked: the controller shows the host realized at that revision.
  ASSERT_TRUE(WaitRealized(st.revision()));
  EXPECT_EQ(dp_.revision(), st.revision());
  EXPECT_EQ(session_->last_acked_revision(), st.revision());
  EXPECT_EQ(Rev(Host().value("realized_revision", json())), st.revision());
  EXPECT_EQ(session_->sessions_opened(), 1u);
  EXPECT_EQ(dp_.got_count(), 1u);
}

TEST_F(ControllerSessionTest, ApiChangeArrivesAsADeltaAndIsAcked) {
  uint64_t rev = Connect();
  ASSERT_GT(rev, 0u);

  // app-1 tagged web through the API: db-1's rule sources (g:web) grow.
  uint64_t rev2 = Tag("app-1", "app", "web");
  ASSERT_GT(rev2, rev);
  ASSERT_TRUE(Eventually([&] { return dp_.got_count() >= 2; }));
  auto m = dp_.got()[1];
  ASSERT_TRUE(m.has_delta()) << m.DebugString();
  EXPECT_EQ(m.delta().from_revision(), rev);
  EXPECT_EQ(m.delta().to_revision(), rev2);
  ASSERT_EQ(m.delta().address_set_deltas_size(), 1);
  EXPECT_EQ(m.delta().address_set_deltas(0).id(), "g:web");
  ASSERT_EQ(m.delta().address_set_deltas(0).added_size(), 1);
  EXPECT_EQ(m.delta().address_set_deltas(0).added(0), "198.18.0.21/32");
  EXPECT_EQ(m.delta().rulesets_set_size(), 0);

  ASSERT_TRUE(WaitRealized(rev2));
  EXPECT_EQ(dp_.revision(), rev2);
  EXPECT_EQ(session_->last_acked_revision(), rev2);

  // A new policy applied to web: web-1 and app-1 get rulesets in one delta.
  auto p = json::parse(R"({"id":"to-web","category":"CATEGORY_APPLICATION",
    "applied_to_group_ids":["web"],
    "rules":[{"id":"http","sources":{"any":true},"destinations":{"group_ids":["web"]},
              "services":[{"protocol":6,"destination_ports":[{"first":80}]}],
              "action":"ACTION_ALLOW"}]})");
  auto r = rest_->Post("/api/v1/policies", p);
  ASSERT_EQ(r.status, 201) << r.body;
  uint64_t rev3 = Rev(r.body["revision"]);
  ASSERT_TRUE(Eventually([&] { return dp_.got_count() >= 3; }));
  m = dp_.got()[2];
  ASSERT_TRUE(m.has_delta()) << m.DebugString();
  EXPECT_EQ(m.delta().from_revision(), rev2);
  EXPECT_EQ(m.delta().to_revision(), rev3);
  ASSERT_EQ(m.delta().rulesets_set_size(), 2);
  EXPECT_EQ(m.delta().rulesets_set(0).vnic_id(), "app-1-nic0");
  EXPECT_EQ(m.delta().rulesets_set(1).vnic_id(), "web-1-nic0");
  ASSERT_TRUE(WaitRealized(rev3));
  auto pr = rest_->Get("/api/v1/realization?policy_id=to-web").body["policies"][0];
  EXPECT_EQ(pr["state"], "REALIZATION_STATE_REALIZED") << pr;
  EXPECT_EQ(session_->sessions_opened(), 1u);  // all on the one session
  EXPECT_EQ(dp_.got_count(), 3u);
}

TEST_F(ControllerSessionTest, InventoryChangesGoUpAsUpdates) {
  uint64_t rev = Connect();

  // app-1's libvirt metadata gains app=web.
  auto vms = HostVms();
  vms[2] = MetadataVm("app-1", {{"app", "web"}}, "198.18.0.21");
  session_->SetInventory(vms);
  json app;
  ASSERT_TRUE(Eventually([&] {
    app = rest_->Get("/api/v1/vms/app-1").body;
    return app["tags"] == TagsJson({{"app", "web"}});
  })) << app;
  // Reported tags are the VM's host_tags; the API set none.
  EXPECT_EQ(app["host_tags"], TagsJson({{"app", "web"}}));
  EXPECT_FALSE(app.contains("api_tags")) << app;
  EXPECT_EQ(app.value("host", ""), "h1");
  uint64_t rev2 = Rev(app["revision"]);
  ASSERT_GT(rev2, rev);
  // Only the changed VM went up: the others keep the Hello's revision.
  EXPECT_LE(Rev(rest_->Get("/api/v1/vms/db-1").body["revision"]), rev);
  EXPECT_LE(Rev(rest_->Get("/api/v1/vms/web-1").body["revision"]), rev);

  // The host's own report comes back as a delta (g:web grows) and is acked.
  ASSERT_TRUE(Eventually([&] { return dp_.got_count() >= 2; }));
  auto m = dp_.got()[1];
  ASSERT_TRUE(m.has_delta()) << m.DebugString();
  EXPECT_EQ(m.delta().to_revision(), rev2);
  ASSERT_EQ(m.delta().address_set_deltas_size(), 1);
  EXPECT_EQ(m.delta().address_set_deltas(0).added(0), "198.18.0.21/32");
  ASSERT_TRUE(WaitRealized(rev2));

  // web-1 leaves the host: removed from the controller, g:web shrinks.
  vms.erase(vms.begin() + 1);
  session_->SetInventory(vms);
  ASSERT_TRUE(Eventually([&] { return rest_->Get("/api/v1/vms/web-1").status == 404; }));
  ASSERT_TRUE(Eventually([&] { return dp_.got_count() >= 3; }));
  m = dp_.got()[2];
  ASSERT_TRUE(m.has_delta()) << m.DebugString();
  EXPECT_EQ(m.delta().rulesets_removed_size(), 1);
  ASSERT_EQ(m.delta().address_set_deltas_size(), 1);
  ASSERT_EQ(m.delta().address_set_deltas(0).removed_size(), 1);
  EXPECT_EQ(m.delta().address_set_deltas(0).removed(0), "198.18.0.20/32");
  ASSERT_TRUE(WaitRealized(m.delta().to_revision()));
  EXPECT_EQ(rest_->Get("/api/v1/vms").body["vms"].size(), 2u);
  EXPECT_EQ(session_->sessions_opened(), 1u);
}

TEST_F(ControllerSessionTest, ReconnectsToARestartedControllerWithTheHeldRevision) {
  uint64_t rev = Connect();
  const size_t hellos = dp_.hello_count();
  ASSERT_EQ(hellos, 1u);

  StopController();
  ASSERT_TRUE(Eventually([&] { return !session_->connected(); }));
  // It retries (a Hello is built per attempt), further and further apart.
  ASSERT_TRUE(Eventually([&] { return dp_.hello_count() >= hellos + 3; }));
  EXPECT_EQ(session_->sessions_opened(), 1u);  // no session while it is away
  auto calls = dp_.hellos();
  for (size_t i = hellos + 2; i < calls.size(); ++i) {
    EXPECT_GT(calls[i].at - calls[i - 1].at, calls[i - 1].at - calls[i - 2].at) << i;
  }

  // Same port, same data directory: the session finds it by itself.
  const size_t got = dp_.got_count();
  const auto restarted = steady_clock::now();
  StartController(grpc_port_);
  ASSERT_TRUE(Eventually([&] { return session_->connected(); }, seconds(12)));
  EXPECT_LE(steady_clock::now() - restarted, seconds(10) + milliseconds(500));
  EXPECT_EQ(session_->sessions_opened(), 2u);
  // The Hello carried the revision the dataplane holds.
  EXPECT_EQ(dp_.hellos().back().held, rev);
  // A restarted controller does not know what it sent before: it answers
  // with a full state, at the same revision (nothing changed), acked.
  ASSERT_TRUE(Eventually([&] { return dp_.got_count() >= got + 1; }));
  auto m = dp_.got()[got];
  ASSERT_TRUE(m.has_full()) << m.DebugString();
  EXPECT_EQ(m.full().revision(), rev);
  ASSERT_TRUE(WaitRealized(rev));
  EXPECT_EQ(Host().value("connected", false), true);
  EXPECT_EQ(rest_->Get("/api/v1/vms").body["vms"].size(), 3u);

  // And the session goes on: an API change arrives as a delta.
  uint64_t rev2 = Tag("app-1", "app", "web");
  ASSERT_TRUE(Eventually([&] { return dp_.got_count() >= got + 2; }));
  m = dp_.got()[got + 1];
  ASSERT_TRUE(m.has_delta()) << m.DebugString();
  EXPECT_EQ(m.delta().from_revision(), rev);
  ASSERT_TRUE(WaitRealized(rev2));
}

TEST_F(ControllerSessionTest, ReconnectToTheSameControllerGetsNoFullState) {
  uint64_t rev = Connect();
  ASSERT_TRUE(Eventually([&] { return session_->connected(); }));

  session_->Restart();
  ASSERT_TRUE(Eventually([&] { return session_->sessions_opened() == 2; }));
  EXPECT_EQ(dp_.hellos().back().held, rev);
  // The controller sent `rev` and the Hello holds it: nothing to send.
  // The session is open all the same.
  ASSERT_TRUE(Eventually([&] { return session_->connected(); }))
      << "a session the controller has nothing to send yet is not connected()";
  ASSERT_TRUE(WaitRealized(rev));
  EXPECT_EQ(Host().value("connected", false), true);

  // The next message is a delta from `rev`: no full state came in between.
  uint64_t rev2 = Tag("app-1", "app", "web");
  ASSERT_TRUE(Eventually([&] { return dp_.got_count() >= 2; }));
  auto got = dp_.got();
  ASSERT_TRUE(got[1].has_delta()) << got[1].DebugString();
  EXPECT_EQ(got[1].delta().from_revision(), rev);
  EXPECT_EQ(got[1].delta().to_revision(), rev2);
  ASSERT_TRUE(WaitRealized(rev2));
  EXPECT_EQ(dp_.got_count(), 2u);
}

TEST_F(ControllerSessionTest, RefusedDeltaIsNackedThenAFullStateRepairs) {
  uint64_t rev = Connect();
  const std::string error = "address set g:web: table full";
  dp_.FailNextDelta(error);
  dp_.HoldFulls(true);  // so the controller's view can be read before the repair

  uint64_t rev2 = Tag("app-1", "app", "web");
  ASSERT_TRUE(Eventually([&] { return dp_.got_count() >= 2; }));
  ASSERT_TRUE(dp_.got()[1].has_delta());
  EXPECT_EQ(dp_.revision(), rev);  // nothing applied

  // The nack shows: the host is in ERROR with the dataplane's message.
  json h;
  EXPECT_TRUE(Eventually([&] {
    h = HostRealization();
    return h.value("state", "") == "REALIZATION_STATE_ERROR";
  })) << h;
  EXPECT_EQ(h.value("error", ""), error) << h;
  EXPECT_EQ(Rev(h.value("realized_revision", json())), rev) << h;

  // The session restarted; its Hello holds `rev`, so a full state comes.
  ASSERT_TRUE(Eventually([&] { return dp_.got_count() >= 3; }));
  EXPECT_EQ(session_->sessions_opened(), 2u);
  EXPECT_EQ(dp_.hellos().back().held, rev);
  auto full = dp_.got()[2];
  ASSERT_TRUE(full.has_full()) << full.DebugString();
  EXPECT_EQ(full.full().revision(), rev2);
  dp_.HoldFulls(false);
  ASSERT_TRUE(WaitRealized(rev2));
  EXPECT_FALSE(HostRealization().contains("error"));
  EXPECT_EQ(dp_.revision(), rev2);
  EXPECT_EQ(session_->last_acked_revision(), rev2);
}

TEST_F(ControllerSessionTest, BacksOffToTenSecondsAndStopIsPromptMeanwhile) {
  Connect();
  const size_t hellos = dp_.hello_count();
  StopController();
  // Attempts after 0.5, 1, 2, 4, 8 s, then every 10 s: wait for the first
  // wait of 10 s to be under way.
  ASSERT_TRUE(Eventually([&] { return dp_.hello_count() >= hellos + 6; }, seconds(30)));
  auto calls = dp_.hellos();
  auto gap = [&](size_t i) { return calls[i].at - calls[i - 1].at; };
  EXPECT_GE(gap(hellos + 4), milliseconds(7500));  // 8 s
  EXPECT_LT(gap(hellos + 4), milliseconds(9500));
  EXPECT_GE(gap(hellos + 5), milliseconds(9500));  // 10 s, not 16
  EXPECT_LT(gap(hellos + 5), seconds(12));
  auto t0 = steady_clock::now();
  session_->Stop();
  EXPECT_LT(steady_clock::now() - t0, seconds(1));
  EXPECT_FALSE(session_->connected());
  EXPECT_EQ(dp_.hello_count(), hellos + 6);  // no attempt after Stop
}

TEST_F(ControllerSessionTest, StopIsPromptWhileConnectingToASilentPeer) {
  // Accepts TCP connections and never says a word (a hung controller).
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(listen(fd, 8), 0);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  StartSession("127.0.0.1:" + std::to_string(ntohs(addr.sin_port)));
  int conn = -1;
  ASSERT_TRUE(Eventually([&] { return (conn = accept(fd, nullptr, nullptr)) >= 0; }));
  auto t0 = steady_clock::now();
  session_->Stop();
  EXPECT_LT(steady_clock::now() - t0, seconds(1));
  EXPECT_EQ(session_->sessions_opened(), 0u);
  close(conn);
  close(fd);
}

}  // namespace
}  // namespace dfw::hostagent
