/* C interface to libopenvswitch's OVSDB IDL (vswitch schema), for C++.
 * OVS's headers are C that does not compile as C++ (DESIGN.md §6), so only
 * ovsdb_shim.c includes them; this header includes none.
 *
 * Thread safety: a dfw_ovsdb is used by one thread at a time, except
 * dfw_ovsdb_wake(), which any thread may call. */
#ifndef DFW_OVS_INTEGRATION_OVSDB_SHIM_H
#define DFW_OVS_INTEGRATION_OVSDB_SHIM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct dfw_ovsdb;

/* One Interface row. Strings are never NULL ("" when absent); they live until
 * the next dfw_ovsdb_poll(). */
struct dfw_ovsdb_iface {
  const char* uuid; /* the row's UUID */
  const char* name;
  const char* type;         /* "" = system */
  const char* iface_id;     /* external_ids:iface-id */
  const char* attached_mac; /* external_ids:attached-mac */
  const char* vm_uuid;      /* external_ids:vm-uuid */
  int64_t ofport;           /* -1 if not (yet) assigned or failed */
};

/* Creates an IDL client of `remote` (e.g. "unix:/run/db.sock"); it connects
 * and reconnects on its own as dfw_ovsdb_poll() runs. Never NULL. */
struct dfw_ovsdb* dfw_ovsdb_create(const char* remote);
void dfw_ovsdb_destroy(struct dfw_ovsdb*);

/* Processes what the server sent. If nothing changed, blocks until something
 * arrives, `timeout_ms` passes or dfw_ovsdb_wake() is called, then processes
 * again. Returns 1 if the replicated contents changed since the last call. */
int dfw_ovsdb_poll(struct dfw_ovsdb*, int timeout_ms);

/* Makes a blocked (or the next) dfw_ovsdb_poll() return. Any thread. */
void dfw_ovsdb_wake(struct dfw_ovsdb*);

/* 1 once the first full copy of the database has arrived and the session is
 * up. */
int dfw_ovsdb_is_synced(const struct dfw_ovsdb*);

typedef void (*dfw_ovsdb_iface_cb)(void* ctx, const struct dfw_ovsdb_iface*);
void dfw_ovsdb_for_each_interface(struct dfw_ovsdb*, dfw_ovsdb_iface_cb, void* ctx);

/* Adds Port+Interface `port` (Interface type `type`, options
 * opt_keys[i]=opt_values[i] for i < n_opts, ofport_request if > 0) to bridge
 * `bridge` in one transaction; blocks until the server answers. Needs
 * dfw_ovsdb_is_synced(). Returns 0, 1 if the port already exists with that
 * type and those option values (nothing done), or -1 with *error (free())
 * set. */
int dfw_ovsdb_add_port(struct dfw_ovsdb*, const char* bridge, const char* port, const char* type,
                       const char* const* opt_keys, const char* const* opt_values, size_t n_opts,
                       int64_t ofport_request, char** error);

#ifdef __cplusplus
}
#endif

#endif
