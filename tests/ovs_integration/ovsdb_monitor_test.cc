// OvsdbMonitor and CreateFirewallPort against a private ovsdb-server +
// ovs-vswitchd (ovs_sandbox.h).
#include "dfw/ovs/ovsdb_monitor.h"

#include <gtest/gtest.h>

#include <map>
#include <mutex>
#include <optional>

#include "ovs_sandbox.h"

namespace dfw::ovs {
namespace {

using testing::OvsSandbox;
using testing::WaitFor;

std::optional<OvsInterface> Find(const std::vector<OvsInterface>& rows, const std::string& name) {
  for (const OvsInterface& r : rows) {
    if (r.name == name) return r;
  }
  return std::nullopt;
}

// Collects the deltas the monitor's thread delivers.
class DeltaLog {
 public:
  void Add(const InterfaceDelta& d) {
    std::lock_guard<std::mutex> lock(mu_);
    deltas_.push_back(d);
  }
  std::vector<InterfaceDelta> Get() {
    std::lock_guard<std::mutex> lock(mu_);
    return deltas_;
  }
  // Some delta has `name` in the list `which` selects, with `pred` true.
  template <typename Which, typename Pred>
  bool Has(Which which, const std::string& name, Pred pred) {
    for (const InterfaceDelta& d : Get()) {
      for (const OvsInterface& r : which(d)) {
        if (r.name == name && pred(r)) return true;
      }
    }
    return false;
  }

 private:
  std::mutex mu_;
  std::vector<InterfaceDelta> deltas_;
};

class OvsdbMonitorTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(ovs_.Start()) << ovs_.error(); }
  OvsSandbox ovs_;
};

TEST_F(OvsdbMonitorTest, ReportsInterfaceAddedChangedRemoved) {
  DeltaLog log;
  OvsdbMonitor mon(ovs_.db_socket());
  mon.SetCallback([&](const InterfaceDelta& d) { log.Add(d); });
  mon.Start();

  // The first delta holds what exists: the bridge's own interface.
  ASSERT_TRUE(WaitFor([&] { return mon.synced(); }));
  ASSERT_TRUE(WaitFor([&] { return Find(mon.Snapshot(), "br0").has_value(); }));
  EXPECT_TRUE(log.Has([](const InterfaceDelta& d) { return d.added; }, "br0",
                      [](const OvsInterface& r) { return r.type == "internal"; }));

  // Added, with external_ids as libvirt sets them, and an ofport.
  ASSERT_EQ(ovs_.Vsctl("add-port br0 vnet0 -- set Interface vnet0 type=internal "
                       "ofport_request=5 external_ids:iface-id=port-a "
                       "external_ids:attached-mac=52:54:00:00:00:05 "
                       "external_ids:vm-uuid=4a9b8f1e-0000-4000-8000-000000000001"),
            0)
      << ovs_.error();
  ASSERT_TRUE(WaitFor([&] {
    auto r = Find(mon.Snapshot(), "vnet0");
    return r && r->ofport == 5;
  })) << "vnet0 with ofport 5 never showed up";
  const OvsInterface added = *Find(mon.Snapshot(), "vnet0");
  EXPECT_EQ(added.type, "internal");
  EXPECT_EQ(added.iface_id, "port-a");
  EXPECT_EQ(added.attached_mac, "52:54:00:00:00:05");
  EXPECT_EQ(added.vm_uuid, "4a9b8f1e-0000-4000-8000-000000000001");
  EXPECT_FALSE(added.uuid.empty());
  // The row may arrive before its ofport: then "added" then "changed".
  EXPECT_TRUE(log.Has([](const InterfaceDelta& d) { return d.added; }, "vnet0",
                      [](const OvsInterface& r) { return r.iface_id == "port-a"; }));
  EXPECT_TRUE(WaitFor([&] {
    return log.Has([](const InterfaceDelta& d) { return d.added; }, "vnet0",
                   [](const OvsInterface& r) { return r.ofport == 5; }) ||
           log.Has([](const InterfaceDelta& d) { return d.changed; }, "vnet0",
                   [](const OvsInterface& r) { return r.ofport == 5; });
  }));

  // Changed.
  ASSERT_EQ(ovs_.Vsctl("set Interface vnet0 external_ids:iface-id=port-b"), 0) << ovs_.error();
  ASSERT_TRUE(WaitFor([&] {
    return log.Has([](const InterfaceDelta& d) { return d.changed; }, "vnet0",
                   [&](const OvsInterface& r) {
                     return r.iface_id == "port-b" && r.uuid == added.uuid && r.ofport == 5;
                   });
  }));
  EXPECT_EQ(Find(mon.Snapshot(), "vnet0")->iface_id, "port-b");

  // Removed.
  ASSERT_EQ(ovs_.Vsctl("del-port br0 vnet0"), 0) << ovs_.error();
  ASSERT_TRUE(WaitFor([&] {
    return log.Has([](const InterfaceDelta& d) { return d.removed; }, "vnet0",
                   [&](const OvsInterface& r) { return r.uuid == added.uuid; });
  }));
  EXPECT_FALSE(Find(mon.Snapshot(), "vnet0").has_value());
  EXPECT_TRUE(Find(mon.Snapshot(), "br0").has_value());
  mon.Stop();
}

TEST_F(OvsdbMonitorTest, PollDrivenByCallerDeliversDeltas) {
  OvsdbMonitor mon(ovs_.db_socket());
  std::vector<InterfaceDelta> deltas;
  mon.SetCallback([&](const InterfaceDelta& d) { deltas.push_back(d); });
  ASSERT_TRUE(WaitFor([&] {
    mon.Poll(std::chrono::milliseconds(50));
    return mon.synced();
  }));
  ASSERT_EQ(ovs_.Vsctl("add-port br0 vnet1 -- set Interface vnet1 type=internal"), 0)
      << ovs_.error();
  ASSERT_TRUE(WaitFor([&] {
    mon.Poll(std::chrono::milliseconds(50));
    return Find(mon.Snapshot(), "vnet1").has_value();
  }));
  bool seen = false;
  for (const InterfaceDelta& d : deltas) {
    for (const OvsInterface& r : d.added) seen |= r.name == "vnet1";
  }
  EXPECT_TRUE(seen);
}

TEST_F(OvsdbMonitorTest, CreateFirewallPortAddsPortOnceAndMonitorSeesIt) {
  OvsdbMonitor mon(ovs_.db_socket());
  mon.Start();
  ASSERT_TRUE(CreateFirewallPort(ovs_.db_socket(), "br0", "dfw-fw0", "internal", {}, 1).ok());
  ASSERT_TRUE(WaitFor([&] {
    auto r = Find(mon.Snapshot(), "dfw-fw0");
    return r && r->ofport == 1;
  }));
  EXPECT_EQ(Find(mon.Snapshot(), "dfw-fw0")->type, "internal");
  std::string out;
  ASSERT_EQ(ovs_.Vsctl("list-ports br0", &out), 0);
  EXPECT_NE(out.find("dfw-fw0"), std::string::npos) << out;

  // Idempotent.
  EXPECT_TRUE(CreateFirewallPort(ovs_.db_socket(), "br0", "dfw-fw0", "internal", {}, 1).ok());
  // Same name, other type: an error that says so.
  absl::Status st = CreateFirewallPort(ovs_.db_socket(), "br0", "dfw-fw0", "dpdkvhostuserclient");
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("another interface type"), std::string::npos) << st;
  // No such bridge.
  st = CreateFirewallPort(ovs_.db_socket(), "nobr", "dfw-fw1", "internal");
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("no bridge named 'nobr'"), std::string::npos) << st;
  mon.Stop();
}

// The production kind: OVS as the vhost-user client of the dataplane's socket.
// (ovs-vswitchd runs with --enable-dummy=override: the port gets an ofport
// without DPDK, and the options land in the database as given.)
TEST_F(OvsdbMonitorTest, CreateFirewallPortSetsInterfaceOptions) {
  const std::map<std::string, std::string> opts = {{"vhost-server-path", "/run/dfw/fw0.sock"}};
  ASSERT_TRUE(CreateFirewallPort(ovs_.db_socket(), "br0", "fw0", "dpdkvhostuserclient", opts).ok());
  std::string out;
  ASSERT_EQ(ovs_.Vsctl("get Interface fw0 type options:vhost-server-path", &out), 0);
  EXPECT_EQ(out, "dpdkvhostuserclient\n\"/run/dfw/fw0.sock\"\n");
  // Idempotent: same type and option; also without options (none asked for).
  EXPECT_TRUE(CreateFirewallPort(ovs_.db_socket(), "br0", "fw0", "dpdkvhostuserclient", opts).ok());
  EXPECT_TRUE(CreateFirewallPort(ovs_.db_socket(), "br0", "fw0", "dpdkvhostuserclient").ok());
  // Another socket path: an error naming both; the port is not touched.
  absl::Status st = CreateFirewallPort(ovs_.db_socket(), "br0", "fw0", "dpdkvhostuserclient",
                                       {{"vhost-server-path", "/elsewhere.sock"}});
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("options:vhost-server-path=/run/dfw/fw0.sock, not /elsewhere.sock"),
            std::string::npos)
      << st;
  ASSERT_EQ(ovs_.Vsctl("get Interface fw0 options:vhost-server-path", &out), 0);
  EXPECT_EQ(out, "\"/run/dfw/fw0.sock\"\n");
  // Other type (the deprecated server kind): the type error.
  st = CreateFirewallPort(ovs_.db_socket(), "br0", "fw0", "dpdkvhostuser");
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("another interface type than 'dpdkvhostuser'"), std::string::npos)
      << st;
}

TEST(OvsdbMonitorNoServer, CreateFirewallPortTimesOut) {
  const absl::Status st = CreateFirewallPort("/nonexistent/db.sock", "br0", "fw", "internal", {}, 0,
                                             std::chrono::milliseconds(300));
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable) << st;
}

}  // namespace
}  // namespace dfw::ovs
