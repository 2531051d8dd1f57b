#include "dfw/hostagent/host_view.h"

#include <algorithm>
#include <map>

#include "dfw/tagging/str_cat.h"

namespace dfw::hostagent {
namespace {

std::string Lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

struct IfaceRef {
  const Domain* domain = nullptr;
  const DomainInterface* iface = nullptr;
};

// A row without an iface-id: an uplink to the provider network, the bridge's
// LOCAL port or another non-VM port; it passes to table 1 (steering.
// uplink_ofports). A row that says it belongs to a VM (vm-uuid or
// attached-mac) but has no iface-id is a VM port we cannot steer: isolated,
// never passed unfirewalled.
void AddNonVmPort(const ovs::OvsInterface& row, HostView* view) {
  const auto port = static_cast<uint32_t>(row.ofport);
  if (!row.vm_uuid.empty() || !row.attached_mac.empty()) {
    view->errors.push_back(Cat("port '", row.name, "': vm-uuid '", row.vm_uuid,
                               "' / attached-mac '", row.attached_mac,
                               "' but no iface-id: a VM port that cannot be steered: isolated"));
    if (row.ofport < ovs::kMaxOfport) view->steering.isolated_ofports.push_back(port);
    return;
  }
  if (row.ofport >= ovs::kMaxOfport && port != ovs::kLocalOfport) {
    view->errors.push_back(
        Cat("port '", row.name, "': ofport ", row.ofport,
            " is a reserved port number: not passed (unknown ports are dropped)"));
    return;
  }
  view->steering.uplink_ofports.push_back(port);
}

}  // namespace

HostView ComputeHostView(const std::vector<Domain>& domains,
                         const std::vector<ovs::OvsInterface>& ovs_rows,
                         const std::vector<std::string>& firewall_ports,
                         const std::string& host_id) {
  HostView view;
  view.firewall_ofports.assign(firewall_ports.size(), -1);
  // Index libvirt's interfaces by interface id and by (vm uuid, mac).
  std::map<std::string, IfaceRef> by_id;
  std::map<std::pair<std::string, std::string>, IfaceRef> by_vm_mac;
  for (const auto& d : domains) {
    for (const auto& i : d.interfaces) {
      if (!i.interface_id.empty()) by_id[i.interface_id] = {&d, &i};
      by_vm_mac[{Lower(d.uuid), Lower(i.mac)}] = {&d, &i};
    }
  }

  // OVS side: the firewall port and the vNICs.
  std::map<const DomainInterface*, const ovs::OvsInterface*> on_bridge;
  std::map<std::string, v1::DataplaneVNic> vnics;
  for (const auto& row : ovs_rows) {
    if (auto fw = std::find(firewall_ports.begin(), firewall_ports.end(), row.name);
        fw != firewall_ports.end()) {
      view.firewall_ofports[static_cast<size_t>(fw - firewall_ports.begin())] = row.ofport;
      continue;
    }
    if (row.ofport <= 0) continue;  // not plugged yet (or failed)
    if (row.iface_id.empty()) {
      AddNonVmPort(row, &view);
      continue;
    }
    IfaceRef ref;
    if (auto it = by_id.find(row.iface_id); it != by_id.end()) {
      ref = it->second;
    } else if (auto it2 = by_vm_mac.find({Lower(row.vm_uuid), Lower(row.attached_mac)});
               it2 != by_vm_mac.end()) {
      ref = it2->second;
    }
    if (row.ofport > ovs::kMaxLocalId) {
      view.errors.push_back(Cat("port '", row.name, "' (iface-id ", row.iface_id, "): ofport ",
                                row.ofport, " is above ", ovs::kMaxLocalId,
                                "; it cannot be steered through the firewall: isolated"));
      view.steering.isolated_ofports.push_back(static_cast<uint32_t>(row.ofport));
      continue;
    }
    std::string mac = Lower(!row.attached_mac.empty() ? row.attached_mac
                            : ref.iface != nullptr    ? ref.iface->mac
                                                      : std::string());
    if (mac.empty()) {
      view.errors.push_back(Cat("port '", row.name, "' (iface-id ", row.iface_id,
                                "): no MAC (no attached-mac, not known to libvirt): isolated"));
      view.steering.isolated_ofports.push_back(static_cast<uint32_t>(row.ofport));
      continue;
    }
    if (vnics.count(row.iface_id)) {
      view.errors.push_back(Cat("port '", row.name, "': iface-id ", row.iface_id,
                                " is used by another port too: this one is isolated"));
      view.steering.isolated_ofports.push_back(static_cast<uint32_t>(row.ofport));
      continue;
    }
    v1::DataplaneVNic v;
    v.set_id(row.iface_id);
    v.set_local_id(static_cast<uint32_t>(row.ofport));
    v.set_mac(mac);
    if (ref.iface != nullptr) {
      for (const auto& a : ref.iface->addresses) v.add_bound_ips(a);
      on_bridge[ref.iface] = &row;
    }
    vnics[row.iface_id] = v;
  }
  for (auto& [id, v] : vnics) {
    view.steering.vnics.push_back({v.local_id(), static_cast<uint16_t>(v.local_id()), v.mac()});
    view.vnics.push_back(std::move(v));
  }
  if (!view.firewall_ofports.empty() &&
      std::all_of(view.firewall_ofports.begin(), view.firewall_ofports.end(),
                  [](int64_t p) { return p > 0; })) {
    for (int64_t p : view.firewall_ofports)
      view.steering.firewall_ofports.push_back(static_cast<uint32_t>(p));
  }
  std::sort(view.steering.uplink_ofports.begin(), view.steering.uplink_ofports.end());

  // libvirt side: the VMs, with each vNIC's id from libvirt or, failing
  // that, from the OVS row it was joined to.
  for (const auto& d : domains) {
    v1::Vm vm;
    vm.set_id(Lower(d.uuid));
    vm.set_name(d.name);
    vm.set_host(host_id);
    if (!d.os.empty()) vm.mutable_guest()->set_os(d.os);
    for (const auto& t : d.tags) {
      auto* pt = vm.add_tags();
      pt->set_scope(t.scope);
      pt->set_value(t.value);
    }
    for (const auto& i : d.interfaces) {
      auto ob = on_bridge.find(&i);
      std::string id = i.interface_id;
      if (id.empty() && ob != on_bridge.end()) id = ob->second->iface_id;
      if (id.empty()) continue;  // not on this bridge: nothing to enforce
      auto* n = vm.add_vnics();
      n->set_id(id);
      n->set_mac(Lower(i.mac));
      if (ob != on_bridge.end()) n->set_ovs_port(ob->second->name);
      for (const auto& a : i.addresses) {
        auto* ba = n->add_addresses();
        ba->set_ip(a);
        ba->set_source(v1::ADDRESS_SOURCE_LIBVIRT);
      }
    }
    view.vms.push_back(std::move(vm));
  }
  std::sort(view.vms.begin(), view.vms.end(),
            [](const v1::Vm& a, const v1::Vm& b) { return a.id() < b.id(); });
  return view;
}

}  // namespace dfw::hostagent
