// Guest agents' sessions (dfw-vmagent) against the in-process controller:
// a VM identity speaks only for its own VM, what a guest reports is a claim
// (no tags, addresses quarantined when another VM holds them, its name only
// when new), and the guest VM is a full member of groups and policies.
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <functional>
#include <string>
#include <thread>

#include "dfw/trust/ca.h"
#include "dfw/trust/svid.h"
#include "test_host.h"
#include "test_pki.h"
#include "test_util.h"

namespace dfw::controller::testing {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

constexpr const char* kUuid = "0b5e0000-0000-4000-8000-0000000000aa";
constexpr const char* kGuestHost = "guest:0b5e0000-0000-4000-8000-0000000000aa";

// The guest's VM as dfw-vmagent reports it (guest_facts.h): vNIC
// "<uuid>.eth0", the guest's own hostname, and tags it has no right to.
dfw::v1::Vm GuestVm(const std::string& ip, const std::string& hostname = "gst") {
  dfw::v1::Vm vm;
  vm.set_id(kUuid);
  vm.set_name(hostname);
  vm.mutable_guest()->set_hostname(hostname);
  vm.mutable_guest()->set_os("Debian GNU/Linux 12 (bookworm)");
  auto* t = vm.add_tags();  // a guest tagging itself: ignored
  t->set_scope("app");
  t->set_value("db");
  auto* n = vm.add_vnics();
  n->set_id(std::string(kUuid) + ".eth0");
  n->set_mac("52:54:00:00:0a:aa");
  auto* a = n->add_addresses();
  a->set_ip(ip);
  a->set_source(dfw::v1::ADDRESS_SOURCE_STATIC);  // the controller decides the source
  return vm;
}

class GuestSessionModelTest : public WebToDbControllerTest {
 protected:
  json Vm(const std::string& id) { return rest_->Get("/api/v1/vms/" + id).body; }
  json Members(const std::string& group) {
    return rest_->Get("/api/v1/groups/" + group + "/members").body;
  }
  static bool Has(const json& list, const std::string& v) {
    for (const auto& x : list) {
      if (x == v) return true;
    }
    return false;
  }
};

TEST_F(GuestSessionModelTest, AGuestIsAMemberByApiTagsOnlyAndGetsItsRules) {
  TestHost db(server_.grpc_port(), "h1");
  db.Hello({MetadataVm("db-1", {{"app", "db"}}, "198.18.0.12")});
  ASSERT_TRUE(db.Next().has_value());

  TestHost guest(server_.grpc_port(), kGuestHost);
  guest.Hello({GuestVm("198.18.0.31")});
  auto full = guest.Next();
  ASSERT_TRUE(full && full->has_full());
  guest.Ack(full->full().revision());

  json vm = Vm(kUuid);
  EXPECT_EQ(vm.value("enforcement", ""), "ENFORCEMENT_GUEST") << vm;
  EXPECT_EQ(vm.value("host", ""), kGuestHost);
  EXPECT_FALSE(vm.contains("tags")) << "a guest's own tags are not taken: " << vm;
  EXPECT_EQ(vm["vnics"][0]["addresses"][0].value("source", ""), "ADDRESS_SOURCE_GUEST_AGENT");
  EXPECT_FALSE(vm["vnics"][0]["addresses"][0].value("quarantined", false));
  EXPECT_EQ(Vm("db-1").value("enforcement", ""), "ENFORCEMENT_HYPERVISOR");
  EXPECT_FALSE(Has(Members("db")["vm_ids"], kUuid)) << Members("db");

  // Tagged through the API, it joins web; db-1's rules then admit it.
  auto r = rest_->Post(std::string("/api/v1/vms/") + kUuid + "/tags",
                       json::parse(R"({"set":[{"scope":"app","value":"web"}]})"));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_TRUE(Has(Members("web")["addresses"], "198.18.0.31/32")) << Members("web");
  bool found = false;
  ASSERT_TRUE(WaitFor([&] {
    while (auto m = db.Next(50)) {
      for (const auto& d : m->delta().address_set_deltas()) {
        for (const auto& a : d.added()) found |= a == "198.18.0.31/32";
      }
    }
    return found;
  })) << "db's host never got the guest's address";

  // The guest's name is the operator's once known: a new hostname is a
  // guest fact, not a rename.
  guest.Inventory({GuestVm("198.18.0.31", "renamed")});
  ASSERT_TRUE(WaitFor([&] { return Vm(kUuid)["guest"].value("hostname", "") == "renamed"; }));
  EXPECT_EQ(Vm(kUuid).value("name", ""), "gst");

  json hosts = rest_->Get("/api/v1/hosts").body["hosts"];
  bool kind = false;
  for (const auto& h : hosts) kind |= h["id"] == kGuestHost && h["kind"] == "HOST_KIND_GUEST";
  EXPECT_TRUE(kind) << hosts;
}

TEST_F(GuestSessionModelTest, AnAddressAnotherVmHoldsIsQuarantined) {
  TestHost db(server_.grpc_port(), "h1");
  db.Hello({MetadataVm("db-1", {{"app", "db"}}, "198.18.0.12")});
  ASSERT_TRUE(db.Next().has_value());
  ASSERT_EQ(rest_
                ->Post(std::string("/api/v1/vms/") + kUuid + "/tags",
                       json::parse(R"({"set":[{"scope":"app","value":"web"}]})"))
                .status,
            404)
      << "not known yet";

  // The guest claims db-1's address: kept, marked, in no group.
  TestHost guest(server_.grpc_port(), kGuestHost);
  dfw::v1::Vm claim = GuestVm("198.18.0.12");
  claim.mutable_vnics(0)->add_addresses()->set_ip("198.18.0.32");
  guest.Hello({claim});
  ASSERT_TRUE(guest.Next().has_value());
  ASSERT_EQ(rest_
                ->Post(std::string("/api/v1/vms/") + kUuid + "/tags",
                       json::parse(R"({"set":[{"scope":"app","value":"web"}]})"))
                .status,
            200);
  json addrs = Vm(kUuid)["vnics"][0]["addresses"];
  ASSERT_EQ(addrs.size(), 2u) << addrs;
  for (const auto& a : addrs) {
    if (a["ip"] == "198.18.0.12") {
      EXPECT_TRUE(a.value("quarantined", false)) << a;
      EXPECT_EQ(a.value("quarantine_reason", ""), "vm 'db-1' also holds 198.18.0.12");
    } else {
      EXPECT_FALSE(a.value("quarantined", false)) << a;
    }
  }
  json web = Members("web");
  EXPECT_TRUE(Has(web["addresses"], "198.18.0.32/32")) << web;
  EXPECT_FALSE(Has(web["addresses"], "198.18.0.12/32"))
      << "the claim made db-1 a web member: " << web;

  // Another spelling of an address is the same address: a guest cannot
  // slip a claim past the check by writing db-6's IPv6 address differently.
  db.Inventory({MetadataVm("db-1", {{"app", "db"}}, "198.18.0.12"),
                MetadataVm("db-6", {{"app", "db"}}, "2001:db8::5")});
  dfw::v1::Vm v6 = GuestVm("198.18.0.32");
  v6.mutable_vnics(0)->add_addresses()->set_ip("2001:DB8:0::5");
  guest.Inventory({v6});
  ASSERT_TRUE(WaitFor([&] {
    json addrs = Vm(kUuid)["vnics"][0]["addresses"];  // (a copy: Vm() is a temporary)
    for (const auto& a : addrs) {
      if (a["ip"] == "2001:db8::5") return a.value("quarantined", false);
    }
    return false;
  })) << Vm(kUuid);
  EXPECT_FALSE(Has(Members("web")["addresses"], "2001:db8::5/128")) << Members("web");

  // A hypervisor later reports the guest's other address: the hypervisor's
  // inventory wins, the guest's becomes quarantined in the same change.
  db.Inventory({MetadataVm("db-2", {{"app", "db"}}, "198.18.0.32")});
  ASSERT_TRUE(WaitFor([&] { return !Has(Members("web")["addresses"], "198.18.0.32/32"); }))
      << Members("web");
  json after = Vm(kUuid)["vnics"][0]["addresses"];
  ASSERT_EQ(after.size(), 2u) << after;
  for (const auto& a : after) {
    EXPECT_TRUE(a.value("quarantined", false)) << a;
  }
}

// The identity checks need real certificates: mutual TLS, a VM and a host.
class GuestSessionTrustTest : public TlsControllerTest {
 protected:
  std::shared_ptr<grpc::ChannelCredentials> As(trust::IdKind kind, const std::string& name) {
    trust::IssueOptions io;
    io.id = {"dfw.test", kind, name};
    auto kc = ca_->IssueWithNewKey(io);
    EXPECT_TRUE(kc.ok());
    grpc::SslCredentialsOptions so;
    so.pem_root_certs = ca_->bundle_pem();
    so.pem_private_key = kc->key_pem;
    so.pem_cert_chain = kc->cert.cert_pem;
    return grpc::SslCredentials(so);
  }
};

TEST_F(GuestSessionTrustTest, AVmIdentitySpeaksOnlyForItsOwnVm) {
  auto vm = As(trust::IdKind::kVm, kUuid);
  {
    // Its own guest session: admitted, the VM registered as guest-enforced.
    TestHost g(server_.grpc_port(), kGuestHost, vm);
    g.Hello({GuestVm("198.18.0.31")});
    auto m = g.Next();
    ASSERT_TRUE(m && m->has_full());
    // An inventory update naming another VM ends the session.
    g.Inventory({MetadataVm("db-1", {{"app", "db"}}, "198.18.0.12")});
    grpc::Status st = g.WaitClosed();
    EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED);
    EXPECT_EQ(st.error_message(), std::string("inventory: vms_set: a guest agent reports only its "
                                              "own VM '") +
                                      kUuid + "', not 'db-1'");
  }
  auto vms = server_.model()->ListVms({});
  ASSERT_TRUE(vms.ok());
  ASSERT_EQ(vms->vms_size(), 1);
  EXPECT_EQ(vms->vms(0).enforcement(), dfw::v1::ENFORCEMENT_GUEST);

  struct Case {
    std::string host_id;
    std::vector<dfw::v1::Vm> vms;
    std::string error;
  };
  std::vector<Case> cases = {
      {"h1",
       {GuestVm("198.18.0.31")},
       std::string("hello: host.id 'h1' is not '") + kGuestHost +
           "', the guest session of spiffe://dfw.test/vm/" + kUuid},
      {"guest:0b5e0000-0000-4000-8000-0000000000bb",
       {GuestVm("198.18.0.31")},
       std::string("hello: host.id 'guest:0b5e0000-0000-4000-8000-0000000000bb' is not '") +
           kGuestHost + "', the guest session of spiffe://dfw.test/vm/" + kUuid},
      {kGuestHost,
       {MetadataVm("db-1", {}, "198.18.0.12")},
       std::string("hello: vms: a guest agent reports exactly its own VM '") + kUuid +
           "' (1 VMs reported)"},
      {kGuestHost,
       {GuestVm("198.18.0.31"), MetadataVm("db-1", {}, "198.18.0.12")},
       std::string("hello: vms: a guest agent reports exactly its own VM '") + kUuid +
           "' (2 VMs reported)"},
  };
  for (const auto& c : cases) {
    TestHost g(server_.grpc_port(), c.host_id, vm);
    g.Hello(c.vms);
    grpc::Status st = g.WaitClosed();
    EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED) << c.host_id;
    EXPECT_EQ(st.error_message(), c.error);
  }

  // A host identity cannot open a guest's session either.
  TestHost h(server_.grpc_port(), kGuestHost, As(trust::IdKind::kHost, "h1"));
  h.Hello({GuestVm("198.18.0.31")});
  grpc::Status st = h.WaitClosed();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  vms = server_.model()->ListVms({});
  ASSERT_TRUE(vms.ok());
  EXPECT_EQ(vms->vms_size(), 1) << "nothing a refused session said was applied";
}

}  // namespace
}  // namespace dfw::controller::testing
