// LibvirtInventory: see the header. Threading inside:
//  - State::mu serialises everything that touches libvirt connections (Start,
//    every event/timer handler, teardown); it is held while the user callback
//    runs, so the callback never runs concurrently with itself.
//  - State::snap_mu guards only the domain maps and sync flags, so Snapshot()
//    never waits for a slow libvirt call.
//  - Every event/timer opaque handed to libvirt is a heap Ref holding a
//    shared_ptr<State>, freed by libvirt's free callback: a late event after
//    Stop() finds `alive == false` instead of freed memory. (The close
//    callback's opaque is the exception: see CloseRef.)

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <libxml/xmlerror.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "dfw/hostagent/libvirt_inventory.h"
#include "spdlog/spdlog.h"

namespace dfw::hostagent {
namespace {

using std::chrono::milliseconds;

constexpr milliseconds kBackoffMin{500};
constexpr milliseconds kBackoffMax{10000};
constexpr int kKeepAliveIntervalS = 5;
constexpr int kKeepAliveCount = 3;

std::string LastError() {
  const char* message = virGetLastErrorMessage();
  return message != nullptr ? message : "unknown libvirt error";
}

// libvirt reports every error here (also the expected ones, e.g. a domain that
// is gone or keepalive on a local driver); the code that made the call logs
// what matters at warn/error with context.
void OnLibvirtError(void* /*user*/, virErrorPtr err) {
  if (err == nullptr) return;
  spdlog::debug("libvirt: {} (domain {}, code {})", err->message != nullptr ? err->message : "",
                err->domain, err->code);
}

// libxml2 (which libvirt parses with) prints some errors, e.g. "I/O warning :
// failed to load external entity" when a test:/// file is missing, through its
// per-thread generic error handler: log those instead while we call libvirt.
void OnXmlError(void* /*ctx*/, const char* format, ...) {
  char text[512];
  va_list args;
  va_start(args, format);
  vsnprintf(text, sizeof(text), format, args);
  va_end(args);
  std::string_view line(text);
  while (!line.empty() && line.back() == '\n') line.remove_suffix(1);
  if (!line.empty()) spdlog::debug("libxml2: {}", line);
}

class ScopedXmlErrorsToLog {
 public:
  ScopedXmlErrorsToLog() : handler_(xmlGenericError), context_(xmlGenericErrorContext) {
    xmlSetGenericErrorFunc(nullptr, OnXmlError);
  }
  ~ScopedXmlErrorsToLog() { xmlSetGenericErrorFunc(context_, handler_); }
  ScopedXmlErrorsToLog(const ScopedXmlErrorsToLog&) = delete;
  ScopedXmlErrorsToLog& operator=(const ScopedXmlErrorsToLog&) = delete;

 private:
  xmlGenericErrorFunc handler_;
  void* context_;
};

std::once_flag g_libvirt_once;
bool g_libvirt_ready = false;

void InitLibvirtOnce() {
  std::call_once(g_libvirt_once, [] {
    virSetErrorFunc(nullptr, OnLibvirtError);
    if (virInitialize() < 0) {
      spdlog::error("libvirt: virInitialize failed: {}", LastError());
      return;
    }
    if (virEventRegisterDefaultImpl() < 0) {
      spdlog::error("libvirt: cannot register the default event loop: {}", LastError());
      return;
    }
    g_libvirt_ready = true;
  });
}

void Noop(int /*timer*/, void* /*opaque*/) {}

struct State;

// The close callback's opaque. Owned by its Uri, not by libvirt: local drivers
// accept a close callback but never call it nor its free function. Weak: a
// Uri lives in the State.
struct CloseRef {
  std::weak_ptr<State> state;
  size_t index;
  virConnectPtr conn;
};

struct Uri {
  std::string uri;
  virConnectPtr conn = nullptr;
  int lifecycle_id = -1;
  int metadata_id = -1;
  std::unique_ptr<CloseRef> close_ref;  // set while registered
  int retry_timer = -1;
  milliseconds backoff = kBackoffMin;
  // Under State::snap_mu:
  bool synced = false;
  std::map<std::string, Domain> domains;  // by uuid
};

struct State : std::enable_shared_from_this<State> {
  std::mutex mu;
  bool alive = true;
  LibvirtInventory::Callback callback;
  std::vector<Uri> uris;  // fixed after construction

  mutable std::mutex snap_mu;

  // LibvirtInventory::stats() (any thread).
  std::atomic<uint64_t> full_reads{0}, domain_reads{0}, connect_errors{0}, read_errors{0},
      connections_lost{0};
};

// The opaque pointer of every libvirt registration (freed by libvirt).
struct Ref {
  std::shared_ptr<State> state;
  size_t index;
  virConnectPtr conn;  // the connection it was made for
};
void FreeRef(void* opaque) { delete static_cast<Ref*>(opaque); }

// A libvirt timeout whose opaque is `ref` (freed by libvirt once removed). -1
// if it could not be added.
int AddTimer(int ms, virEventTimeoutCallback cb, Ref* ref) {
  const int timer = virEventAddTimeout(ms, cb, ref, FreeRef);
  if (timer < 0) delete ref;
  return timer;
}

// --- Everything below up to the public class runs with State::mu held. ---

void Notify(State& s) {
  if (s.callback) s.callback();
}

// Replaces one domain's entry (nullopt: removes it). True if that changed.
bool Put(State& s, Uri& u, const std::string& uuid, std::optional<Domain> domain) {
  std::lock_guard<std::mutex> lock(s.snap_mu);
  auto it = u.domains.find(uuid);
  if (!domain) {
    if (it == u.domains.end()) return false;
    u.domains.erase(it);
    return true;
  }
  if (it != u.domains.end() && it->second == *domain) return false;
  u.domains[uuid] = *std::move(domain);
  return true;
}

// Reads a domain's XML; nullopt (logged, counted) if that fails or does not
// parse.
std::optional<Domain> Read(State& s, const Uri& u, virDomainPtr dom) {
  char* xml = virDomainGetXMLDesc(dom, 0);
  if (xml == nullptr) {
    s.read_errors++;
    spdlog::warn("libvirt {}: cannot read domain {}: {}", u.uri, virDomainGetName(dom),
                 LastError());
    return std::nullopt;
  }
  absl::StatusOr<Domain> domain = ParseDomainXml(xml, u.uri);
  free(xml);
  if (!domain.ok()) {
    s.read_errors++;
    spdlog::error("libvirt {}: domain {} left out of the inventory: {}", u.uri,
                  virDomainGetName(dom), domain.status().ToString());
    return std::nullopt;
  }
  return *std::move(domain);
}

// Reads every active domain of a connection and replaces the URI's part of the
// snapshot. False if listing failed.
bool ReadAll(State& s, Uri& u) {
  virDomainPtr* doms = nullptr;
  const int n = virConnectListAllDomains(u.conn, &doms, VIR_CONNECT_LIST_DOMAINS_ACTIVE);
  if (n < 0) {
    s.read_errors++;
    spdlog::warn("libvirt {}: cannot list domains: {}", u.uri, LastError());
    return false;
  }
  std::map<std::string, Domain> domains;
  bool complete = true;
  for (int i = 0; i < n; ++i) {
    // A domain that went away since the list is skipped (its event follows);
    // a connection that died meanwhile leaves the old list in place.
    if (!complete) {
      // Only free the rest.
    } else if (std::optional<Domain> d = Read(s, u, doms[i])) {
      domains[d->uuid] = *std::move(d);
    } else if (virConnectIsAlive(u.conn) != 1) {
      spdlog::warn("libvirt {}: connection died while reading the domains", u.uri);
      complete = false;
    }
    virDomainFree(doms[i]);
  }
  free(doms);
  if (!complete) return false;
  std::lock_guard<std::mutex> lock(s.snap_mu);
  u.domains = std::move(domains);
  u.synced = true;
  s.full_reads++;
  return true;
}

void ScheduleRetry(State& s, size_t index);
int OnLifecycle(virConnectPtr conn, virDomainPtr dom, int event, int detail, void* opaque);
void OnMetadataChange(virConnectPtr conn, virDomainPtr dom, int type, const char* nsuri,
                      void* opaque);
void OnClose(virConnectPtr conn, int reason, void* opaque);

// Forgets a connection (its domains stay in the snapshot).
void Drop(Uri& u) {
  if (u.conn == nullptr) return;
  if (u.lifecycle_id >= 0) virConnectDomainEventDeregisterAny(u.conn, u.lifecycle_id);
  if (u.metadata_id >= 0) virConnectDomainEventDeregisterAny(u.conn, u.metadata_id);
  u.lifecycle_id = u.metadata_id = -1;
  // Waits for a close callback that runs right now; fails (harmlessly) if it
  // has already run, which unregisters it.
  if (u.close_ref) virConnectUnregisterCloseCallback(u.conn, OnClose);
  u.close_ref.reset();
  virConnectClose(u.conn);
  u.conn = nullptr;
}

// Opens, registers and reads one URI; on failure schedules a retry. True if
// the snapshot (or synced()) changed.
bool Open(State& s, size_t index) {
  Uri& u = s.uris[index];
  {
    ScopedXmlErrorsToLog xml_errors;
    u.conn = virConnectOpen(u.uri.c_str());
  }
  if (u.conn == nullptr) {
    s.connect_errors++;
    spdlog::warn("libvirt {}: cannot connect: {}; retrying in {} ms", u.uri, LastError(),
                 u.backoff.count());
    ScheduleRetry(s, index);
    return false;
  }
  // Keepalive exists only on remote connections (qemu:///system goes through
  // the daemon); a local driver (test:///) says it is unsupported.
  if (virConnectSetKeepAlive(u.conn, kKeepAliveIntervalS, kKeepAliveCount) < 0) {
    spdlog::debug("libvirt {}: no keepalive: {}", u.uri, LastError());
  }
  u.close_ref = std::make_unique<CloseRef>(CloseRef{s.weak_from_this(), index, u.conn});
  if (virConnectRegisterCloseCallback(u.conn, OnClose, u.close_ref.get(), nullptr) < 0) {
    u.close_ref.reset();
    spdlog::debug("libvirt {}: no close callback: {}", u.uri, LastError());
  }
  // Events first, then the list: nothing falls between the two.
  u.lifecycle_id = virConnectDomainEventRegisterAny(
      u.conn, nullptr, VIR_DOMAIN_EVENT_ID_LIFECYCLE, VIR_DOMAIN_EVENT_CALLBACK(OnLifecycle),
      new Ref{s.shared_from_this(), index, u.conn}, FreeRef);
  u.metadata_id =
      virConnectDomainEventRegisterAny(u.conn, nullptr, VIR_DOMAIN_EVENT_ID_METADATA_CHANGE,
                                       VIR_DOMAIN_EVENT_CALLBACK(OnMetadataChange),
                                       new Ref{s.shared_from_this(), index, u.conn}, FreeRef);
  if (u.lifecycle_id < 0 || u.metadata_id < 0) {
    s.connect_errors++;
    spdlog::warn("libvirt {}: cannot register for domain events: {}; retrying in {} ms", u.uri,
                 LastError(), u.backoff.count());
  } else if (ReadAll(s, u)) {
    spdlog::info("libvirt {}: connected, {} active domains", u.uri, u.domains.size());
    u.backoff = kBackoffMin;
    return true;
  }
  Drop(u);
  ScheduleRetry(s, index);
  return false;
}

void OnRetry(int timer, void* opaque) {
  auto* ref = static_cast<Ref*>(opaque);
  State& s = *ref->state;
  std::lock_guard<std::mutex> lock(s.mu);
  virEventRemoveTimeout(timer);
  if (!s.alive) return;
  Uri& u = s.uris[ref->index];
  if (u.retry_timer != timer) return;
  u.retry_timer = -1;
  u.backoff = std::min(u.backoff * 2, kBackoffMax);
  if (Open(s, ref->index)) Notify(s);
}

void ScheduleRetry(State& s, size_t index) {
  Uri& u = s.uris[index];
  if (u.retry_timer >= 0) return;
  u.retry_timer = AddTimer(static_cast<int>(u.backoff.count()), OnRetry,
                           new Ref{s.shared_from_this(), index, nullptr});
  if (u.retry_timer < 0) spdlog::error("libvirt {}: cannot schedule a reconnect", u.uri);
}

// The connection died: keep its domains (stale) and reconnect.
void Lost(State& s, size_t index, std::string_view why) {
  Uri& u = s.uris[index];
  s.connections_lost++;
  spdlog::warn("libvirt {}: connection lost ({}); keeping its {} domains until it is back", u.uri,
               why, u.domains.size());
  Drop(u);
  u.backoff = kBackoffMin;
  ScheduleRetry(s, index);
}

// Re-reads one domain after an event. True if the snapshot changed.
bool Refresh(State& s, size_t index, virDomainPtr dom) {
  Uri& u = s.uris[index];
  char uuid[VIR_UUID_STRING_BUFLEN];
  if (virDomainGetUUIDString(dom, uuid) < 0) return false;
  // Whatever the event says, the domain's current state decides: a stopped or
  // undefined-and-gone domain leaves, an undefined one that still runs stays.
  const int active = virDomainIsActive(dom);
  if (active < 0 && virConnectIsAlive(u.conn) != 1) {
    Lost(s, index, "a call failed");
    return false;
  }
  s.domain_reads++;
  if (active != 1) return Put(s, u, uuid, std::nullopt);
  std::optional<Domain> domain = Read(s, u, dom);
  if (!domain && virConnectIsAlive(u.conn) != 1) {
    Lost(s, index, "a call failed");
    return false;
  }
  return Put(s, u, uuid, std::move(domain));
}

void HandleDomainEvent(virConnectPtr conn, virDomainPtr dom, void* opaque) {
  auto* ref = static_cast<Ref*>(opaque);
  State& s = *ref->state;
  std::lock_guard<std::mutex> lock(s.mu);
  if (!s.alive || s.uris[ref->index].conn != conn) return;
  if (Refresh(s, ref->index, dom)) Notify(s);
}

int OnLifecycle(virConnectPtr conn, virDomainPtr dom, int event, int detail, void* opaque) {
  spdlog::debug("libvirt: domain {} lifecycle event {} detail {}", virDomainGetName(dom), event,
                detail);
  HandleDomainEvent(conn, dom, opaque);
  return 0;
}

void OnMetadataChange(virConnectPtr conn, virDomainPtr dom, int type, const char* nsuri,
                      void* opaque) {
  // Only our element carries what we read (not the title, the description or
  // another namespace's element).
  if (type != VIR_DOMAIN_METADATA_ELEMENT || nsuri == nullptr ||
      std::string_view(nsuri) != kMetadataNs) {
    return;
  }
  HandleDomainEvent(conn, dom, opaque);
}

// The close callback may run inside a libvirt call made by a handler (which
// holds State::mu): handle it from the event loop instead.
void OnClosedLater(int timer, void* opaque) {
  auto* ref = static_cast<Ref*>(opaque);
  State& s = *ref->state;
  std::lock_guard<std::mutex> lock(s.mu);
  virEventRemoveTimeout(timer);
  if (!s.alive || s.uris[ref->index].conn != ref->conn) return;
  Lost(s, ref->index, "closed");
}

void OnClose(virConnectPtr conn, int reason, void* opaque) {
  auto* ref = static_cast<CloseRef*>(opaque);
  std::shared_ptr<State> state = ref->state.lock();
  if (!state) return;
  spdlog::debug("libvirt: connection {} closed, reason {}", state->uris[ref->index].uri, reason);
  if (AddTimer(0, OnClosedLater, new Ref{std::move(state), ref->index, conn}) < 0) {
    spdlog::error("libvirt: cannot schedule the handling of a closed connection");
  }
}

void OnInitialNotify(int timer, void* opaque) {
  auto* ref = static_cast<Ref*>(opaque);
  State& s = *ref->state;
  std::lock_guard<std::mutex> lock(s.mu);
  virEventRemoveTimeout(timer);
  if (s.alive) Notify(s);
}

}  // namespace

struct LibvirtInventory::Impl {
  std::shared_ptr<State> state = std::make_shared<State>();
  std::thread thread;
  std::atomic<bool> stop{false};
  bool started = false;
};

LibvirtInventory::LibvirtInventory(std::vector<std::string> uris) : impl_(new Impl) {
  for (std::string& uri : uris) impl_->state->uris.push_back(Uri{.uri = std::move(uri)});
}

LibvirtInventory::~LibvirtInventory() { Stop(); }

void LibvirtInventory::SetCallback(Callback cb) {
  std::lock_guard<std::mutex> lock(impl_->state->mu);
  impl_->state->callback = std::move(cb);
}

absl::Status LibvirtInventory::Start() {
  if (impl_->started) return absl::FailedPreconditionError("LibvirtInventory: already started");
  InitLibvirtOnce();
  if (!g_libvirt_ready) {
    return absl::InternalError("LibvirtInventory: libvirt's event loop could not be set up");
  }
  impl_->started = true;
  State& s = *impl_->state;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    for (size_t i = 0; i < s.uris.size(); ++i) Open(s, i);
    // The callback runs on the event thread only: tell it about the first read there.
    AddTimer(0, OnInitialNotify, new Ref{impl_->state, 0, nullptr});
  }
  impl_->thread = std::thread([impl = impl_.get()] {
    while (!impl->stop.load()) {
      if (virEventRunDefaultImpl() < 0) {
        spdlog::error("libvirt: event loop: {}", LastError());
        std::this_thread::sleep_for(milliseconds(100));
      }
    }
  });
  return absl::OkStatus();
}

void LibvirtInventory::Stop() {
  if (impl_->thread.joinable()) {
    impl_->stop.store(true);
    // A timeout that fires on every loop iteration wakes the thread out of poll().
    const int wake = virEventAddTimeout(0, Noop, nullptr, nullptr);
    impl_->thread.join();
    if (wake >= 0) virEventRemoveTimeout(wake);
  }
  State& s = *impl_->state;
  std::lock_guard<std::mutex> lock(s.mu);
  if (!s.alive) return;
  s.alive = false;
  for (Uri& u : s.uris) {
    if (u.retry_timer >= 0) virEventRemoveTimeout(u.retry_timer);
    u.retry_timer = -1;
    Drop(u);
  }
  s.callback = nullptr;
}

std::vector<Domain> LibvirtInventory::Snapshot() const {
  const State& s = *impl_->state;
  std::vector<Domain> out;
  {
    std::lock_guard<std::mutex> lock(s.snap_mu);
    for (const Uri& u : s.uris) {
      for (const auto& [uuid, domain] : u.domains) out.push_back(domain);
    }
  }
  std::sort(out.begin(), out.end(), [](const Domain& a, const Domain& b) {
    return std::tie(a.uuid, a.uri) < std::tie(b.uuid, b.uri);
  });
  return out;
}

LibvirtStats LibvirtInventory::stats() const {
  const State& s = *impl_->state;
  LibvirtStats out;
  out.full_reads = s.full_reads.load(std::memory_order_relaxed);
  out.domain_reads = s.domain_reads.load(std::memory_order_relaxed);
  out.connect_errors = s.connect_errors.load(std::memory_order_relaxed);
  out.read_errors = s.read_errors.load(std::memory_order_relaxed);
  out.connections_lost = s.connections_lost.load(std::memory_order_relaxed);
  return out;
}

bool LibvirtInventory::synced() const {
  const State& s = *impl_->state;
  std::lock_guard<std::mutex> lock(s.snap_mu);
  return std::all_of(s.uris.begin(), s.uris.end(), [](const Uri& u) { return u.synced; });
}

}  // namespace dfw::hostagent
