// Loopback: the one check behind "plaintext is an explicit, loopback-only
// choice" (controller --insecure, the REST Host check, dfwctl --insecure,
// the host agent's --insecure).
//
// Thread safety: pure functions.
#pragma once

#include <string_view>

namespace dfw::trust {

// "localhost", 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104; IPv6 may come in
// brackets ("[::1]"). Anything else, names included, is not loopback.
bool IsLoopbackHost(std::string_view host);
// The host part of "host:port" (or "[v6]:port") is loopback.
bool IsLoopbackHostPort(std::string_view host_port);
// A TCP port on 127.0.0.1 that was free at the time of the call (0 if none
// could be bound): for tests and benchmarks that start servers needing a
// port known in advance (etcd members, controllers on fixed ports).
int FreeLoopbackPort();

}  // namespace dfw::trust
