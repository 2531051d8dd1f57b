// What a guest says about itself: the facts of the guest agent's Hello.
//
// What. The VM's id is its SMBIOS UUID (/sys/class/dmi/id/product_uuid, the
// libvirt domain UUID of a KVM guest), lower-cased. Each interface but
// loopback, up or down, becomes a vNIC "<uuid>.<ifname>" with its MAC and
// addresses (IPv6 link-local left out: it is not an identity a rule can
// use); the OS is /etc/os-release's PRETTY_NAME; the hostname is the
// kernel's. Tests and VMs without SMBIOS give the UUID and the interfaces
// explicitly.
//
// Thread safety: pure functions over the files and the kernel's interface
// list.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "dfw/v1/model.pb.h"

namespace dfw::vmagent {

struct FactsOptions {
  std::string vm_uuid;  // empty: read uuid_file
  std::string uuid_file = "/sys/class/dmi/id/product_uuid";
  std::string os_release = "/etc/os-release";
  std::vector<std::string> interfaces;  // empty: every non-loopback interface up
  std::string hostname;                 // empty: gethostname()
};

struct GuestInterface {
  std::string name;
  int ifindex = 0;
  std::string mac;  // "52:54:00:12:34:56"
  std::vector<std::string> addresses;
};

// The VM's UUID, lower case; INVALID_ARGUMENT when it is not a UUID.
absl::StatusOr<std::string> ReadVmUuid(const FactsOptions& o);

// The interfaces the options select, sorted by name.
absl::StatusOr<std::vector<GuestInterface>> ListInterfaces(const FactsOptions& o);

// "<uuid>.<ifname>", every character outside the model's id alphabet
// ([A-Za-z0-9._:-]) replaced by '_'.
std::string VnicIdFor(const std::string& uuid, const std::string& ifname);

// The guest's VM as its Hello reports it (id, name = hostname, guest facts,
// vNICs with ADDRESS_SOURCE_GUEST_AGENT addresses).
dfw::v1::Vm FactsToVm(const std::string& uuid, const std::string& hostname, const std::string& os,
                      const std::vector<GuestInterface>& ifaces);

// PRETTY_NAME from an os-release file ("" when absent).
std::string ReadOsPrettyName(const std::string& path);
std::string Hostname(const FactsOptions& o);

}  // namespace dfw::vmagent
