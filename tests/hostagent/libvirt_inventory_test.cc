// LibvirtInventory and ParseDomainXml against libvirt's real test driver.
//
// test:///<file>.xml connections each hold a private copy of the file, so the
// tests that drive events use test:///default: one driver shared by every
// connection of the process, whose events reach the inventory's connection.
// Each test closes all its connections, which resets test:///default.

#include <fcntl.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "dfw/hostagent/libvirt_inventory.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dfw::hostagent {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

const std::string kDataDir = DFW_HOSTAGENT_TEST_DATA;
const std::string kNamespaceVms = "test://" + kDataDir + "/namespace_vms.xml";
const std::string kSecondHost = "test://" + kDataDir + "/second_host.xml";
constexpr char kDefault[] = "test:///default";

// ---------------------------------------------------------------- ParseDomainXml

// A vNIC on an OVS bridge, as libvirt writes it.
std::string OvsInterfaceXml(const std::string& mac, const std::string& interface_id,
                            const std::string& target) {
  return "<interface type='bridge'><mac address='" + mac +
         "'/><source bridge='br-dfw'/><virtualport type='openvswitch'><parameters interfaceid='" +
         interface_id + "'/></virtualport><target dev='" + target + "'/></interface>";
}

const std::string kGoodXml = R"(<domain type='kvm'>
  <name>web1</name>
  <uuid>6B3A0E4C-1D2F-4A5B-8C7D-9E0F1A2B3C4D</uuid>
  <metadata>
    <other:stuff xmlns:other="https://example.com/other"><tag value="ignored"/></other:stuff>
    <dfw:firewall xmlns:dfw="https://dfw.dev/xmlns/firewall/1">
      <dfw:tag scope="app" value="web"/>
      <dfw:tag value="pci"/>
      <dfw:os>Debian GNU/Linux 12</dfw:os>
      <dfw:future-element x="1"/>
      <dfw:interface mac="52:54:00:AA:00:01" id="ignored-virtualport-wins">
        <dfw:address ip="198.18.0.11"/>
        <dfw:address ip="2001:DB8:0:0::11"/>
      </dfw:interface>
      <dfw:interface mac="52:54:00:aa:00:02" id="vnic-2">
        <dfw:address ip="198.18.0.12"/>
      </dfw:interface>
      <dfw:interface mac="52:54:00:aa:00:99" id="no-such-nic"/>
    </dfw:firewall>
  </metadata>
  <devices>
    <disk type='file'><target dev='vda'/></disk>
)" + OvsInterfaceXml("52:54:00:aa:00:01", "0e9b6a4c-1d2f-4a5b-8c7d-9e0f1a2b3c4d", "vnet3") +
                             R"(
    <interface type='vhostuser'>
      <mac address='52:54:00:AA:00:02'/>
      <source type='unix' path='/run/vhu.sock' mode='server'/>
    </interface>
    <interface type='network'>
      <mac address='52:54:00:aa:00:03'/>
    </interface>
  </devices>
</domain>)";

TEST(ParseDomainXmlTest, ReadsIdentityTagsInterfacesAndAddresses) {
  absl::StatusOr<Domain> d = ParseDomainXml(kGoodXml, "qemu:///system");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->uri, "qemu:///system");
  EXPECT_EQ(d->uuid, "6b3a0e4c-1d2f-4a5b-8c7d-9e0f1a2b3c4d");
  EXPECT_EQ(d->name, "web1");
  EXPECT_EQ(d->os, "Debian GNU/Linux 12");
  EXPECT_THAT(d->tags, ElementsAre(DomainTag{"app", "web"}, DomainTag{"", "pci"}));
  EXPECT_THAT(
      d->interfaces,
      ElementsAre(DomainInterface{"52:54:00:aa:00:01",
                                  "bridge",
                                  "vnet3",
                                  "0e9b6a4c-1d2f-4a5b-8c7d-9e0f1a2b3c4d",
                                  {"198.18.0.11", "2001:db8::11"}},
                  DomainInterface{"52:54:00:aa:00:02", "vhostuser", "", "vnic-2", {"198.18.0.12"}},
                  DomainInterface{"52:54:00:aa:00:03", "network", "", "", {}}));
}

TEST(ParseDomainXmlTest, AcceptsUnprefixedChildrenAndNoMetadata) {
  // An operator may write the children without the prefix; they belong to us.
  absl::StatusOr<Domain> d =
      ParseDomainXml(R"(<domain><uuid>6b3a0e4c-1d2f-4a5b-8c7d-9e0f1a2b3c4d</uuid>
      <metadata><f:firewall xmlns:f="https://dfw.dev/xmlns/firewall/1">
        <tag scope="env" value="prod"/></f:firewall></metadata></domain>)",
                     "u");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_THAT(d->tags, ElementsAre(DomainTag{"env", "prod"}));

  d = ParseDomainXml(
      "<domain><name>x</name><uuid>6b3a0e4c-1d2f-4a5b-8c7d-9e0f1a2b3c4d</uuid>"
      "<metadata><other:firewall xmlns:other='urn:other'><other:tag value='no'/>"
      "</other:firewall></metadata></domain>",
      "u");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_THAT(d->tags, IsEmpty());
  EXPECT_THAT(d->interfaces, IsEmpty());
}

struct BadXml {
  const char* name;
  std::string xml;
  const char* error;
};

std::string WithMetadata(const std::string& inner) {
  return "<domain><uuid>6b3a0e4c-1d2f-4a5b-8c7d-9e0f1a2b3c4d</uuid><metadata>"
         "<dfw:firewall xmlns:dfw='https://dfw.dev/xmlns/firewall/1'>" +
         inner + "</dfw:firewall></metadata></domain>";
}

class ParseDomainXmlBadTest : public ::testing::TestWithParam<BadXml> {};

TEST_P(ParseDomainXmlBadTest, NamesTheField) {
  absl::StatusOr<Domain> d = ParseDomainXml(GetParam().xml, "u");
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(d.status().message()), HasSubstr(GetParam().error));
}

INSTANTIATE_TEST_SUITE_P(
    Errors, ParseDomainXmlBadTest,
    ::testing::Values(
        BadXml{"NotXml", "<domain><uuid>", "not well-formed XML"},
        BadXml{"Empty", "", "not well-formed XML"},
        BadXml{"NotADomain", "<network/>", "root element is not <domain>"},
        BadXml{"NoUuid", "<domain><name>x</name></domain>", "no <uuid>"},
        BadXml{"BadUuid", "<domain><uuid>1234</uuid></domain>", "<uuid> '1234' is not a UUID"},
        BadXml{"TagWithoutValue",
               WithMetadata("<dfw:tag scope='a' value='b'/><dfw:tag scope='app'/>"),
               "metadata tag[2]: value is empty"},
        BadXml{"TagEmptyValue", WithMetadata("<dfw:tag value=''/>"),
               "metadata tag[1]: value is empty"},
        BadXml{"MetadataMacMissing", WithMetadata("<dfw:interface id='x'/>"),
               "metadata interface[1]: mac is missing"},
        BadXml{"MetadataMacBad",
               WithMetadata("<dfw:interface mac='52:54:00:00:00:01'/>"
                            "<dfw:interface mac='52:54:00:00:00:0g'/>"),
               "metadata interface[2]: mac '52:54:00:00:00:0g' is not a MAC address"},
        BadXml{"AddressBad",
               WithMetadata("<dfw:interface mac='52:54:00:00:00:11'>"
                            "<dfw:address ip='198.18.0.300'/></dfw:interface>"),
               "metadata interface[1] (52:54:00:00:00:11): address '198.18.0.300' is not an IP "
               "address"},
        BadXml{"AddressPrefix",
               WithMetadata("<dfw:interface mac='52:54:00:00:00:11'>"
                            "<dfw:address ip='198.18.0.0/15'/></dfw:interface>"),
               "address '198.18.0.0/15' is not an IP address"},
        BadXml{"AddressMissing",
               WithMetadata("<dfw:interface mac='52:54:00:00:00:11'><dfw:address/>"
                            "</dfw:interface>"),
               "address '' is not an IP address"},
        BadXml{"DeviceMacBad",
               "<domain><uuid>6b3a0e4c-1d2f-4a5b-8c7d-9e0f1a2b3c4d</uuid><devices>"
               "<interface type='bridge'><mac address='52:54:00'/></interface></devices></domain>",
               "devices interface[1]: mac '52:54:00' is not a MAC address"}),
    [](const ::testing::TestParamInfo<BadXml>& info) { return info.param.name; });

// ---------------------------------------------------------------- LibvirtInventory

// Counts callbacks and lets the test wait for a condition on the snapshot.
class Watcher {
 public:
  explicit Watcher(LibvirtInventory& inventory) : inventory_(inventory) {
    inventory.SetCallback([this] {
      std::lock_guard<std::mutex> lock(mu_);
      ++calls_;
      callback_thread_ = std::this_thread::get_id();
      cv_.notify_all();
    });
  }

  int calls() {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_;
  }
  std::thread::id callback_thread() {
    std::lock_guard<std::mutex> lock(mu_);
    return callback_thread_;
  }

  // Waits (up to `timeout`) for a callback after which `pred(Snapshot())` holds.
  bool WaitFor(const std::function<bool(const std::vector<Domain>&)>& pred,
               milliseconds timeout = milliseconds(5000)) {
    const auto deadline = steady_clock::now() + timeout;
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      lock.unlock();
      const bool ok = pred(inventory_.Snapshot());
      lock.lock();
      if (ok) return true;
      if (cv_.wait_until(lock, deadline) == std::cv_status::timeout) {
        lock.unlock();
        return pred(inventory_.Snapshot());
      }
    }
  }

 private:
  LibvirtInventory& inventory_;
  std::mutex mu_;
  std::condition_variable cv_;
  int calls_ = 0;
  std::thread::id callback_thread_;
};

const Domain* Find(const std::vector<Domain>& domains, const std::string& name) {
  for (const Domain& d : domains) {
    if (d.name == name) return &d;
  }
  return nullptr;
}

// A copy of the named domain in the inventory's current snapshot.
std::optional<Domain> Get(const LibvirtInventory& inventory, const std::string& name) {
  const std::vector<Domain> snap = inventory.Snapshot();
  const Domain* d = Find(snap, name);
  return d != nullptr ? std::optional<Domain>(*d) : std::nullopt;
}

std::vector<std::string> Names(const std::vector<Domain>& domains) {
  std::vector<std::string> names;
  for (const Domain& d : domains) names.push_back(d.name);
  return names;
}

// Our own connection to test:///default (shares the inventory's driver).
class Conn {
 public:
  Conn() : conn_(virConnectOpen(kDefault)) {}
  ~Conn() {
    if (conn_ != nullptr) virConnectClose(conn_);
  }
  virConnectPtr get() const { return conn_; }

 private:
  virConnectPtr conn_;
};

class DomainRef {
 public:
  explicit DomainRef(virDomainPtr dom) : dom_(dom) {}
  ~DomainRef() {
    if (dom_ != nullptr) virDomainFree(dom_);
  }
  virDomainPtr get() const { return dom_; }

 private:
  virDomainPtr dom_;
};

const std::string kNewDomain = R"(<domain type='test'>
  <name>ns-new</name>
  <uuid>33333333-0000-4000-8000-000000000001</uuid>
  <memory>8192</memory>
  <os><type>hvm</type></os>
  <metadata>
    <dfw:firewall xmlns:dfw="https://dfw.dev/xmlns/firewall/1">
      <dfw:tag scope="app" value="web"/>
      <dfw:interface mac="52:54:00:00:03:01"><dfw:address ip="198.18.3.1"/></dfw:interface>
    </dfw:firewall>
  </metadata>
  <devices>
)" + OvsInterfaceXml("52:54:00:00:03:01", "cccccccc-0000-4000-8000-000000000301", "veth-new") +
                               R"(
  </devices>
</domain>)";

TEST(LibvirtInventoryTest, SnapshotListsActiveDomainsWithTagsInterfacesAndAddresses) {
  LibvirtInventory inventory({kNamespaceVms});
  Watcher watcher(inventory);
  ASSERT_TRUE(inventory.Start().ok());
  EXPECT_TRUE(inventory.synced());

  // ns-off is shut off: not on the bridge, not in the inventory. ns-db1 is paused.
  const std::vector<Domain> snap = inventory.Snapshot();
  ASSERT_THAT(Names(snap), ElementsAre("ns-web1", "ns-db1"));  // sorted by uuid
  EXPECT_EQ(snap[0], (Domain{kNamespaceVms,
                             "11111111-0000-4000-8000-000000000001",
                             "ns-web1",
                             "Debian GNU/Linux 12",
                             {{"app", "web"}, {"env", "prod"}, {"", "pci"}},
                             {{"52:54:00:00:00:11",
                               "bridge",
                               "veth-web1",
                               "aaaaaaaa-0000-4000-8000-000000000011",
                               {"198.18.0.11"}}}}));
  ASSERT_EQ(snap[1].interfaces.size(), 1u);
  EXPECT_EQ(snap[1].tags, (std::vector<DomainTag>{{"app", "db"}}));
  EXPECT_EQ(snap[1].interfaces[0].type, "vhostuser");
  EXPECT_EQ(snap[1].interfaces[0].mac, "52:54:00:00:00:21");
  EXPECT_EQ(snap[1].interfaces[0].interface_id, "vnic-db1");
  EXPECT_THAT(snap[1].interfaces[0].addresses, ElementsAre("198.18.0.21", "2001:db8::21"));

  // The first read is announced on the event thread too.
  EXPECT_TRUE(watcher.WaitFor([&](const auto&) { return watcher.calls() > 0; }));
  EXPECT_NE(watcher.callback_thread(), std::this_thread::get_id());
}

TEST(LibvirtInventoryTest, FollowsLifecycleAndMetadataEvents) {
  LibvirtInventory inventory({kDefault});
  Watcher watcher(inventory);
  ASSERT_TRUE(inventory.Start().ok());
  Conn conn;
  ASSERT_NE(conn.get(), nullptr);
  // test:///default starts with one running domain, "test", without metadata.
  EXPECT_THAT(Names(inventory.Snapshot()), ElementsAre("test"));

  // Defined only: not active, not in the snapshot.
  DomainRef dom(virDomainDefineXML(conn.get(), kNewDomain.c_str()));
  ASSERT_NE(dom.get(), nullptr);
  EXPECT_FALSE(watcher.WaitFor([](const auto& s) { return Find(s, "ns-new"); }, milliseconds(300)));

  // Started: appears, with a callback.
  const int calls_before_start = watcher.calls();
  ASSERT_EQ(virDomainCreate(dom.get()), 0);
  ASSERT_TRUE(watcher.WaitFor([](const auto& s) { return Find(s, "ns-new"); }));
  EXPECT_GT(watcher.calls(), calls_before_start);
  {
    const std::optional<Domain> d = Get(inventory, "ns-new");
    ASSERT_TRUE(d.has_value());
    EXPECT_EQ(d->uri, kDefault);
    EXPECT_EQ(d->uuid, "33333333-0000-4000-8000-000000000001");
    EXPECT_THAT(d->tags, ElementsAre(DomainTag{"app", "web"}));
    EXPECT_THAT(d->interfaces, ElementsAre(DomainInterface{"52:54:00:00:03:01",
                                                           "bridge",
                                                           "veth-new",
                                                           "cccccccc-0000-4000-8000-000000000301",
                                                           {"198.18.3.1"}}));
  }

  // The operator retags the running VM.
  ASSERT_EQ(virDomainSetMetadata(dom.get(), VIR_DOMAIN_METADATA_ELEMENT,
                                 "<firewall><tag scope='app' value='db'/><tag value='pci'/>"
                                 "<interface mac='52:54:00:00:03:01'>"
                                 "<address ip='198.18.3.2'/></interface></firewall>",
                                 "dfw", kMetadataNs, VIR_DOMAIN_AFFECT_LIVE),
            0);
  ASSERT_TRUE(watcher.WaitFor([](const auto& s) {
    const Domain* d = Find(s, "ns-new");
    return d != nullptr && d->tags == std::vector<DomainTag>{{"app", "db"}, {"", "pci"}};
  }));
  EXPECT_THAT(Get(inventory, "ns-new").value().interfaces[0].addresses, ElementsAre("198.18.3.2"));

  // Paused is still active.
  ASSERT_EQ(virDomainSuspend(dom.get()), 0);
  EXPECT_FALSE(
      watcher.WaitFor([](const auto& s) { return !Find(s, "ns-new"); }, milliseconds(300)));

  // Destroyed: gone.
  ASSERT_EQ(virDomainDestroy(dom.get()), 0);
  ASSERT_TRUE(watcher.WaitFor([](const auto& s) { return !Find(s, "ns-new"); }));
  EXPECT_THAT(Names(inventory.Snapshot()), ElementsAre("test"));

  // Undefining a running domain leaves it running (transient): it stays until
  // it stops.
  ASSERT_EQ(virDomainCreate(dom.get()), 0);
  ASSERT_TRUE(watcher.WaitFor([](const auto& s) { return Find(s, "ns-new"); }));
  ASSERT_EQ(virDomainUndefine(dom.get()), 0);
  EXPECT_FALSE(
      watcher.WaitFor([](const auto& s) { return !Find(s, "ns-new"); }, milliseconds(300)));
  ASSERT_EQ(virDomainDestroy(dom.get()), 0);
  ASSERT_TRUE(watcher.WaitFor([](const auto& s) { return !Find(s, "ns-new"); }));
}

TEST(LibvirtInventoryTest, MetadataOfAnotherNamespaceOrBadMetadata) {
  LibvirtInventory inventory({kDefault});
  Watcher watcher(inventory);
  ASSERT_TRUE(inventory.Start().ok());
  Conn conn;
  DomainRef dom(virDomainCreateXML(conn.get(), kNewDomain.c_str(), 0));  // transient, running
  ASSERT_NE(dom.get(), nullptr);
  ASSERT_TRUE(watcher.WaitFor([](const auto& s) { return Find(s, "ns-new"); }));

  // Someone else's metadata does not change ours.
  ASSERT_EQ(virDomainSetMetadata(dom.get(), VIR_DOMAIN_METADATA_ELEMENT, "<x><tag value='no'/></x>",
                                 "other", "urn:other", VIR_DOMAIN_AFFECT_LIVE),
            0);
  EXPECT_THAT(Get(inventory, "ns-new").value().tags, ElementsAre(DomainTag{"app", "web"}));

  // Metadata that does not parse takes the domain out (fail closed), a fix
  // brings it back.
  ASSERT_EQ(virDomainSetMetadata(dom.get(), VIR_DOMAIN_METADATA_ELEMENT,
                                 "<firewall><tag scope='app'/></firewall>", "dfw", kMetadataNs,
                                 VIR_DOMAIN_AFFECT_LIVE),
            0);
  ASSERT_TRUE(watcher.WaitFor([](const auto& s) { return !Find(s, "ns-new"); }));
  ASSERT_EQ(virDomainSetMetadata(dom.get(), VIR_DOMAIN_METADATA_ELEMENT,
                                 "<firewall><tag scope='app' value='fixed'/></firewall>", "dfw",
                                 kMetadataNs, VIR_DOMAIN_AFFECT_LIVE),
            0);
  ASSERT_TRUE(watcher.WaitFor([](const auto& s) {
    const Domain* d = Find(s, "ns-new");
    return d != nullptr && d->tags == std::vector<DomainTag>{{"app", "fixed"}};
  }));
  ASSERT_EQ(virDomainDestroy(dom.get()), 0);
  ASSERT_TRUE(watcher.WaitFor([](const auto& s) { return !Find(s, "ns-new"); }));
}

TEST(LibvirtInventoryTest, TwoUrisAtOnce) {
  LibvirtInventory inventory({kNamespaceVms, kSecondHost});
  ASSERT_TRUE(inventory.Start().ok());
  EXPECT_TRUE(inventory.synced());
  const std::vector<Domain> snap = inventory.Snapshot();
  ASSERT_THAT(Names(snap), ElementsAre("ns-web1", "ns-db1", "ns-app2"));
  EXPECT_EQ(snap[0].uri, kNamespaceVms);
  EXPECT_EQ(snap[2].uri, kSecondHost);
  EXPECT_EQ(snap[2].interfaces[0].interface_id, "vnic-app2");
}

// A temporary directory, removed at the end.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "dfw-inventory-XXXXXX").string();
    path_ = mkdtemp(tmpl.data()) != nullptr ? tmpl : "";
  }
  ~TempDir() {
    if (!path_.empty()) std::filesystem::remove_all(path_);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(LibvirtInventoryTest, UnopenableUriIsRetriedAndDoesNotBlockTheOthers) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string late_file = dir.path() + "/late.xml";
  const std::string late = "test://" + late_file;
  LibvirtInventory inventory({late, kNamespaceVms});
  Watcher watcher(inventory);

  const auto t0 = steady_clock::now();
  ASSERT_TRUE(inventory.Start().ok());
  EXPECT_LT(steady_clock::now() - t0, milliseconds(2000));
  EXPECT_FALSE(inventory.synced());
  EXPECT_THAT(Names(inventory.Snapshot()), ElementsAre("ns-web1", "ns-db1"));

  // Let a retry or two fail, then the "host" comes up.
  std::this_thread::sleep_for(milliseconds(700));
  std::filesystem::copy_file(kDataDir + "/second_host.xml", late_file);
  ASSERT_TRUE(
      watcher.WaitFor([](const auto& s) { return Find(s, "ns-app2"); }, milliseconds(6000)));
  EXPECT_TRUE(inventory.synced());
  EXPECT_EQ(Get(inventory, "ns-app2").value().uri, late);
}

// A libvirtd of our own: unprivileged (user nobody, session mode), all its
// files in `dir`, so that a test can cut and restore a remote connection
// without touching the host's libvirtd. Its test:///default starts empty
// (only the domain "test") each time it starts.
class PrivateLibvirtd {
 public:
  static constexpr char kBinary[] = "/usr/sbin/libvirtd";
  static constexpr char kSetpriv[] = "/usr/bin/setpriv";
  static constexpr uid_t kNobody = 65534;

  explicit PrivateLibvirtd(std::string dir) : dir_(std::move(dir)) {}
  ~PrivateLibvirtd() { Stop(); }

  static bool Available() {
    return geteuid() == 0 && access(kBinary, X_OK) == 0 && access(kSetpriv, X_OK) == 0;
  }
  std::string uri() const {
    return "test+unix:///default?socket=" + dir_ + "/run/libvirt/libvirt-sock";
  }

  // Starts it and waits until it answers.
  bool Start() {
    for (const char* sub : {"", "/run", "/config", "/cache"}) {
      const std::string path = dir_ + sub;
      std::filesystem::create_directories(path);
      if (chown(path.c_str(), kNobody, kNobody) != 0) return false;
    }
    const std::string home = "HOME=" + dir_, run = "XDG_RUNTIME_DIR=" + dir_ + "/run",
                      config = "XDG_CONFIG_HOME=" + dir_ + "/config",
                      cache = "XDG_CACHE_HOME=" + dir_ + "/cache", log = dir_ + "/libvirtd.log";
    const char* argv[] = {kSetpriv,         "--reuid=65534", "--regid=65534",
                          "--clear-groups", kBinary,         nullptr};
    const char* envp[] = {home.c_str(),
                          run.c_str(),
                          config.c_str(),
                          cache.c_str(),
                          "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                          nullptr};
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    const int rc = posix_spawn(&pid_, kSetpriv, &actions, nullptr, const_cast<char**>(argv),
                               const_cast<char**>(envp));
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) {
      pid_ = -1;
      return false;
    }
    for (auto deadline = steady_clock::now() + std::chrono::seconds(15);
         steady_clock::now() < deadline; std::this_thread::sleep_for(milliseconds(100))) {
      if (virConnectPtr conn = virConnectOpen(uri().c_str())) {
        virConnectClose(conn);
        return true;
      }
      if (waitpid(pid_, nullptr, WNOHANG) == pid_) {
        pid_ = -1;
        return false;
      }
    }
    return false;
  }

  void Stop() {
    if (pid_ <= 0) return;
    kill(pid_, SIGTERM);
    for (int i = 0; i < 100 && waitpid(pid_, nullptr, WNOHANG) == 0; ++i) {
      std::this_thread::sleep_for(milliseconds(50));
    }
    if (kill(pid_, 0) == 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    pid_ = -1;
  }

 private:
  std::string dir_;
  pid_t pid_ = -1;
};

TEST(LibvirtInventoryTest, LostConnectionKeepsItsDomainsUntilItIsBack) {
  if (!PrivateLibvirtd::Available()) GTEST_SKIP() << "needs root, libvirtd and setpriv";
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  PrivateLibvirtd daemon(dir.path());
  // The inventory registers libvirt's event loop: start it before our own
  // connections so that they see events too.
  LibvirtInventory inventory({daemon.uri()});
  Watcher watcher(inventory);
  ASSERT_TRUE(inventory.Start().ok());  // not there yet: retried
  ASSERT_TRUE(daemon.Start());
  ASSERT_TRUE(watcher.WaitFor([](const auto& s) { return Find(s, "test"); }, milliseconds(15000)));
  EXPECT_TRUE(inventory.synced());

  virConnectPtr conn = virConnectOpen(daemon.uri().c_str());
  ASSERT_NE(conn, nullptr);
  DomainRef dom(virDomainCreateXML(conn, kNewDomain.c_str(), 0));
  ASSERT_NE(dom.get(), nullptr);
  ASSERT_TRUE(watcher.WaitFor([](const auto& s) { return Find(s, "ns-new"); }));
  virConnectClose(conn);

  // The daemon goes away: what it had stays in the snapshot.
  daemon.Stop();
  std::this_thread::sleep_for(milliseconds(1500));
  EXPECT_THAT(Names(inventory.Snapshot()), ElementsAre("ns-new", "test"));

  // It is back, with a fresh test driver: its list replaces the old one.
  ASSERT_TRUE(daemon.Start());
  EXPECT_TRUE(
      watcher.WaitFor([](const auto& s) { return Names(s) == std::vector<std::string>{"test"}; },
                      milliseconds(15000)));
}

TEST(LibvirtInventoryTest, StopReturnsPromptly) {
  TempDir dir;
  LibvirtInventory inventory({kDefault, "test://" + dir.path() + "/missing.xml"});
  Watcher watcher(inventory);
  ASSERT_TRUE(inventory.Start().ok());
  std::this_thread::sleep_for(milliseconds(200));  // the event thread is in poll()
  const auto t0 = steady_clock::now();
  inventory.Stop();
  EXPECT_LT(steady_clock::now() - t0, milliseconds(500));
  const int calls = watcher.calls();

  // After Stop(): no callbacks, even when the shared driver changes.
  Conn conn;
  DomainRef dom(virDomainCreateXML(conn.get(), kNewDomain.c_str(), 0));
  ASSERT_NE(dom.get(), nullptr);
  std::this_thread::sleep_for(milliseconds(200));
  EXPECT_EQ(watcher.calls(), calls);
  virDomainDestroy(dom.get());
  inventory.Stop();  // twice is fine
}

TEST(LibvirtInventoryTest, StartTwiceFailsAndNeverStartedIsFine) {
  { LibvirtInventory never_started({kDefault}); }
  LibvirtInventory inventory({kNamespaceVms});
  ASSERT_TRUE(inventory.Start().ok());
  EXPECT_EQ(inventory.Start().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace dfw::hostagent
