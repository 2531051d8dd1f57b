// Realization after a host's agent reconnects holding what it was last sent
// (issue 15): revisions made while it was away that concerned no host (a
// group nothing uses, a VM tag no group reads) leave nothing to send and
// nothing to ack, and must not leave the host PENDING; a change that did
// concern it is sent as one delta and the host is PENDING until it acks it.
// ModelService directly (the feeds drained by hand), as the random delta
// test does; the gRPC session path is host_session_test's.
#include "dfw/controller/host_feed.h"
#include "dfw/controller/model_service.h"
#include "test_util.h"

namespace dfw::controller::testing {
namespace {

using dfw::v1::REALIZATION_STATE_PENDING;
using dfw::v1::REALIZATION_STATE_REALIZED;

class RealizationReconnectTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto model = ModelService::Open(dir_.path() + "/db");
    ASSERT_TRUE(model.ok()) << model.status();
    m_ = std::move(*model);
    // web (on h1) may reach db (on h1): h1 holds rules that name both groups.
    for (const char* app : {"web", "db"}) ASSERT_NO_FATAL_FAILURE(PutGroup(app, app));
    dfw::v1::PutPolicyRequest p;
    p.mutable_policy()->set_id("web-db");
    p.mutable_policy()->set_category(dfw::v1::CATEGORY_APPLICATION);
    auto* r = p.mutable_policy()->add_rules();
    r->set_id("r1");
    r->mutable_sources()->add_group_ids("web");
    r->mutable_destinations()->add_group_ids("db");
    r->set_action(dfw::v1::ACTION_ALLOW);
    ASSERT_TRUE(m_->PutPolicy(p).ok());
    ASSERT_NO_FATAL_FAILURE(Attach(0, /*expect_full=*/true));
    ASSERT_NO_FATAL_FAILURE(DrainAndAck(/*expect_message=*/true));
    ASSERT_EQ(State(), REALIZATION_STATE_REALIZED) << "after the first full state's ack";
  }

  // Group `id`: the VMs tagged app=`app`.
  void PutGroup(const std::string& id, const std::string& app) {
    dfw::v1::PutGroupRequest g;
    g.mutable_group()->set_id(id);
    auto* c = g.mutable_group()->add_criteria()->add_conditions()->mutable_tag();
    c->set_scope("app");
    c->set_value(app);
    ASSERT_TRUE(m_->PutGroup(g).ok());
  }

  static dfw::v1::Vm Vm(const std::string& id, const std::string& app) {
    dfw::v1::Vm vm;
    vm.set_id(id);
    vm.set_name(id);
    vm.set_host("h1");
    auto* t = vm.add_tags();
    t->set_scope("app");
    t->set_value(app);
    auto* n = vm.add_vnics();
    n->set_id(id + "-eth0");
    n->add_addresses()->set_ip(app == std::string("web") ? "198.18.0.11" : "198.18.0.12");
    return vm;
  }

  // h1 says hello holding `held` (0: nothing) with web and db, and web's
  // extra tags.
  void Attach(uint64_t held, bool expect_full, const std::vector<std::string>& web_extra = {}) {
    dfw::v1::HostHello hello;
    hello.mutable_host()->set_id("h1");
    *hello.add_vms() = Vm("web", "web");
    for (const auto& scope : web_extra) {
      auto* t = hello.mutable_vms(0)->add_tags();
      t->set_scope(scope);
      t->set_value("x");
    }
    *hello.add_vms() = Vm("db", "db");
    hello.set_held_revision(held);
    auto a = m_->AttachHost(
        hello, [] {}, [](dfw::v1::ControllerToHost) { return true; });
    ASSERT_TRUE(a.ok()) << a.status();
    EXPECT_EQ(a->full, expect_full);
    feed_ = a->feed;
    gen_ = a->generation;
  }
  void Detach() { m_->DetachHost("h1", gen_); }

  // Takes what the feed has for h1 and acks it, as the agent does.
  void DrainAndAck(bool expect_message) {
    int messages = 0;
    while (auto msg = m_->NextMessage(feed_.get())) {
      ++messages;
      held_ = msg->has_full() ? msg->full().revision() : msg->delta().to_revision();
      feed_->WriteDone(gen_);
      dfw::v1::Ack ack;
      ack.set_revision(held_);
      ack.set_ok(true);
      ASSERT_TRUE(m_->Ack("h1", ack).ok());
    }
    EXPECT_EQ(messages > 0, expect_message);
  }

  // h1's realization state as `dfwctl realization` shows it (UNSPECIFIED:
  // h1 is not listed).
  dfw::v1::RealizationState State() const {
    auto r = m_->Realization(dfw::v1::RealizationRequest());
    EXPECT_TRUE(r.ok());
    for (const auto& h : r->hosts())
      if (h.host_id() == "h1") return h.state();
    return dfw::v1::REALIZATION_STATE_UNSPECIFIED;
  }

  TempDir dir_;
  std::unique_ptr<ModelService> m_;
  std::shared_ptr<HostFeed> feed_;
  uint64_t gen_ = 0, held_ = 0;
};

TEST_F(RealizationReconnectTest, AGroupNothingUsesMadeWhileAwayLeavesTheHostRealized) {
  Detach();
  ASSERT_NO_FATAL_FAILURE(PutGroup("unused", "nothing"));
  ASSERT_GT(m_->revision(), held_);
  ASSERT_NO_FATAL_FAILURE(Attach(held_, /*expect_full=*/false));
  ASSERT_NO_FATAL_FAILURE(DrainAndAck(/*expect_message=*/false));
  EXPECT_EQ(State(), REALIZATION_STATE_REALIZED) << "nothing was sent, so nothing can be acked";
}

TEST_F(RealizationReconnectTest, ATagNoGroupReadsAddedWhileAwayLeavesTheHostRealized) {
  Detach();
  const uint64_t before = m_->revision();
  // The agent comes back reporting a metadata tag added meanwhile: the
  // inventory change is a revision that concerns no rule.
  ASSERT_NO_FATAL_FAILURE(Attach(held_, /*expect_full=*/false, {"color"}));
  ASSERT_GT(m_->revision(), before) << "the new tag was not recorded";
  ASSERT_NO_FATAL_FAILURE(DrainAndAck(/*expect_message=*/false));
  EXPECT_EQ(State(), REALIZATION_STATE_REALIZED);
}

TEST_F(RealizationReconnectTest, AChangeThatConcernsTheHostIsPendingUntilItsDeltaIsAcked) {
  Detach();
  // db leaves group db (and a group nothing uses comes after it): h1's
  // address set for db changes.
  dfw::v1::TagRequest t;
  t.add_vm_ids("db");
  auto* s = t.add_set();
  s->set_scope("app");
  s->set_value("other");
  ASSERT_TRUE(m_->Tag(t).ok());
  ASSERT_NO_FATAL_FAILURE(PutGroup("unused", "nothing"));
  ASSERT_NO_FATAL_FAILURE(Attach(held_, /*expect_full=*/false));
  EXPECT_EQ(State(), REALIZATION_STATE_PENDING) << "the change that concerns h1 is not acked yet";
  auto msg = m_->NextMessage(feed_.get());
  ASSERT_TRUE(msg.has_value()) << "no delta for the change that concerns h1";
  ASSERT_TRUE(msg->has_delta());
  EXPECT_EQ(msg->delta().from_revision(), held_);
  EXPECT_EQ(msg->delta().to_revision(), m_->revision());
  feed_->WriteDone(gen_);
  EXPECT_EQ(State(), REALIZATION_STATE_PENDING) << "sent is not acked";
  dfw::v1::Ack ack;
  ack.set_revision(msg->delta().to_revision());
  ack.set_ok(true);
  ASSERT_TRUE(m_->Ack("h1", ack).ok());
  EXPECT_EQ(State(), REALIZATION_STATE_REALIZED);
}

}  // namespace
}  // namespace dfw::controller::testing
