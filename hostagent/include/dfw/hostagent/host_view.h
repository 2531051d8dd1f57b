// HostView: what this host has, joined from libvirt and OVS.
//
// What. The agent's two inventories describe the same vNICs from two sides:
// libvirt knows the VM (uuid, name, tags, MACs, bound addresses, the
// interface id) and OVS knows the port (Interface row: iface-id,
// attached-mac, vm-uuid, ofport). ComputeHostView joins them into
//  - the vNICs to steer through the dataplane (steering local id, MAC, bound
//    addresses), and
//  - the VMs to report to the controller (with their vNICs).
//
// Join. An OVS row is a vNIC when it has an iface-id and an ofport and is
// not a firewall port. Its libvirt interface is the one whose interface id
// equals the iface-id, else the one with the row's attached-mac on the
// domain whose uuid is the row's vm-uuid. A vNIC on OVS that libvirt does not
// know is still steered (the dataplane drops its traffic: it has no rules),
// never left to NORMAL. A libvirt interface not (yet) on the bridge is
// reported without being steered.
//
// Non-VM ports. A row with an ofport, no iface-id and no vm-uuid /
// attached-mac (an uplink to the provider network, the bridge's LOCAL port)
// goes to steering.uplink_ofports: what it sends passes to table 1 (unicast
// to a vNIC and broadcasts still cross the receivers' ingress rules). Every
// other port the steering does not list is dropped by OVS (default deny). A
// row with vm-uuid or attached-mac but no iface-id is a VM port that cannot
// be steered: isolated and named in `errors`.
//
// Local id. A vNIC's steering id is its OVS ofport (1..2047): stable across
// agent and OVS restarts (OVS keeps ofports in its database), so a restarted
// agent computes the same flows and reconciles without a gap. A VM port that
// cannot be steered (ofport above 2047, or no MAC anywhere) is listed in
// `errors` and isolated (steering.isolated_ofports: OVS drops what it sends),
// never left to NORMAL unfirewalled.
//
// Thread safety: a pure function.
#pragma once

#include <string>
#include <vector>

#include "dfw/hostagent/libvirt_inventory.h"
#include "dfw/ovs/ovsdb_monitor.h"
#include "dfw/ovs/steering_flows.h"
#include "dfw/v1/dataplane.pb.h"
#include "dfw/v1/model.pb.h"

namespace dfw::hostagent {

struct HostView {
  // The firewall ports' ofports, in the order of their names (port k serves
  // the dataplane's worker k); -1: that port has no ofport yet. Steering
  // waits for all of them: steering.firewall_ofports stays empty until then.
  std::vector<int64_t> firewall_ofports;
  std::vector<v1::DataplaneVNic> vnics;  // sorted by id
  ovs::SteeringConfig steering;          // firewall port, vnics, isolated, uplinks
  std::vector<v1::Vm> vms;               // sorted by id
  std::vector<std::string> errors;       // what could not be joined or steered, and why
};

HostView ComputeHostView(const std::vector<Domain>& domains,
                         const std::vector<ovs::OvsInterface>& ovs_rows,
                         const std::vector<std::string>& firewall_ports,
                         const std::string& host_id);

}  // namespace dfw::hostagent
