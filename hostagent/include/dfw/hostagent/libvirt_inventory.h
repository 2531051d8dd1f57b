// LibvirtInventory: the VMs of this host as libvirt knows them.
//
// What. The host agent learns each VM (domain UUID, name), its vNICs (MAC,
// host-side target, the OVS iface-id) and the operator's tags from libvirt.
// Tags and the addresses the firewall binds to a vNIC live in the domain's
// <metadata>, in the project's XML namespace (kMetadataNs):
//
//   <metadata>
//     <dfw:firewall xmlns:dfw="https://dfw.dev/xmlns/firewall/1">
//       <dfw:tag scope="app" value="web"/>
//       <dfw:tag value="pci"/>                        (a plain tag: no scope)
//       <dfw:os>Debian GNU/Linux 12</dfw:os>           (optional)
//       <dfw:interface mac="52:54:00:00:00:11" id="vnic-web1">
//         <dfw:address ip="198.18.0.11"/>
//       </dfw:interface>
//     </dfw:firewall>
//   </metadata>
//
// set on a running domain with
//   virsh metadata <dom> https://dfw.dev/xmlns/firewall/1 --key dfw --live
//     --set '<firewall><tag scope="app" value="web"/></firewall>'
// (one command line)
//
// A vNIC's id (the OVS Interface external_ids:iface-id) is the interface's
// <virtualport><parameters interfaceid=.../>, else the metadata
// <dfw:interface id=...> for its MAC, else empty (the agent then joins the
// OVS row by vm-uuid + attached-mac).
//
// How. One libvirt connection per URI (qemu:///system by default; a
// test:///<file>.xml connection describes namespace "VMs" in tests). Domain
// lifecycle events (defined, started, stopped, undefined) and metadata-change
// events re-read that domain; a closed connection is reopened with backoff
// (0.5 s doubling to 10 s; keepalive 5 s x 3 on remote connections), and its
// domains stay in the snapshot until it is back, then are replaced by what it
// lists. (Not marked stale: Domain has no such field; a caller that needs to
// know can compare synced() and the log.) Only active (running or paused)
// domains are in the snapshot: a stopped VM has no ports on the bridge. A
// domain whose XML does not parse (e.g. a metadata tag without value) is left
// out and the error logged: fail closed, its vNICs get no rules.
//
// libvirt process state: the first Start() calls virInitialize(),
// virEventRegisterDefaultImpl() and virSetErrorFunc() (libvirt's errors go to
// spdlog at debug level; failures that matter are logged by us with context).
// Open no other libvirt connection in the process before that, or it will not
// see events.
//
// Thread safety. Start() runs one thread of ours (libvirt's default event
// loop); the callback runs on it, never concurrently with itself, and may
// call Snapshot() (never Stop(): it joins that thread). Snapshot(), synced()
// and Stop() may be called from any thread. The callback also fires once on
// that thread right after Start(), for the first read.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace dfw::hostagent {

inline constexpr char kMetadataNs[] = "https://dfw.dev/xmlns/firewall/1";

struct DomainTag {
  std::string scope;  // may be empty
  std::string value;
  bool operator==(const DomainTag&) const = default;
};

struct DomainInterface {
  std::string mac;                     // lower case, "52:54:00:00:00:11"
  std::string type;                    // libvirt interface type: "bridge", "vhostuser", ...
  std::string target;                  // <target dev=...> ("" if none)
  std::string interface_id;            // see the header comment ("" if none)
  std::vector<std::string> addresses;  // metadata <dfw:address ip=...>, canonical text
  bool operator==(const DomainInterface&) const = default;
};

struct Domain {
  std::string uri;   // the connection it came from
  std::string uuid;  // lower case, canonical
  std::string name;
  std::string os;  // metadata <dfw:os> ("" if none)
  std::vector<DomainTag> tags;
  std::vector<DomainInterface> interfaces;
  bool operator==(const Domain&) const = default;
};

// Parses a domain's XML (virDomainGetXMLDesc). Errors (InvalidArgument) name
// what was wrong: not XML, no <uuid>, a metadata tag without value, a bad
// MAC or IP address in the metadata, e.g. "domain XML: metadata tag[2]: value
// is empty" (indexes count from 1, as in XPath, among elements of that name).
// Unknown elements are ignored. Inside our metadata element, children may be
// in kMetadataNs (<dfw:tag>) or unprefixed (<tag>); the metadata element
// itself is the first child of <metadata> in kMetadataNs, whatever its name.
// A <dfw:interface> whose MAC matches no <interface> is ignored. Pure: any
// thread.
absl::StatusOr<Domain> ParseDomainXml(std::string_view xml, std::string_view uri);

// What the inventory read and what failed, since Start (GET /metrics).
struct LibvirtStats {
  uint64_t full_reads = 0;        // every active domain of a URI read (connect, reconnect)
  uint64_t domain_reads = 0;      // one domain read again after an event
  uint64_t connect_errors = 0;    // a URI could not be opened or registered for events
  uint64_t read_errors = 0;       // listing failed, or a domain could not be read or parsed
  uint64_t connections_lost = 0;  // a connection died (reconnected with backoff)
};

class LibvirtInventory {
 public:
  // Called after the snapshot changed (any domain of any URI).
  using Callback = std::function<void()>;

  explicit LibvirtInventory(std::vector<std::string> uris);
  ~LibvirtInventory();  // Stop()s
  LibvirtInventory(const LibvirtInventory&) = delete;
  LibvirtInventory& operator=(const LibvirtInventory&) = delete;

  void SetCallback(Callback cb);  // before Start()

  // Opens every URI (a URI that fails to open is retried in the background;
  // the error is logged and synced() stays false until it is read), reads the
  // active domains, registers for events and starts the event thread. Returns
  // OK when some or all URIs failed to open (there is no Status() accessor);
  // an error only when called twice or libvirt's event loop cannot be set up.
  // Opening is synchronous: a URI that hangs (e.g. an unreachable remote host)
  // delays Start().
  absl::Status Start();
  void Stop();

  // Active domains of every URI, sorted by uuid.
  std::vector<Domain> Snapshot() const;
  // True once every URI has been read at least once.
  bool synced() const;
  // Counters since Start (any thread).
  LibvirtStats stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dfw::hostagent
