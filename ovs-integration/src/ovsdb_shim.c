/* The only file of ovs-integration that includes OVS's OVSDB headers. */
#include <config.h>

#include "ovsdb_shim.h"

#include <stdlib.h>
#include <string.h>

#include "latch.h"
#include "openvswitch/poll-loop.h"
#include "openvswitch/vlog.h"
#include "ovsdb-idl.h"
#include "smap.h"
#include "util.h"
#include "uuid.h"
#include "vswitch-idl.h"

struct dfw_ovsdb {
  struct ovsdb_idl* idl;
  struct latch wake;
  unsigned int last_seqno;
  char uuid_buf[UUID_LEN + 1];
};

static void dfw_ovsdb_quiet_logs(void) {
  static int done;
  if (!done) {
    done = 1;
    /* libopenvswitch logs connection chatter at INFO on the console. */
    vlog_set_levels(NULL, VLF_CONSOLE, VLL_WARN);
  }
}

struct dfw_ovsdb* dfw_ovsdb_create(const char* remote) {
  struct dfw_ovsdb* db = xzalloc(sizeof *db);

  dfw_ovsdb_quiet_logs();
  db->idl = ovsdb_idl_create(remote, &ovsrec_idl_class, true, true);
  /* Counters change every few seconds; they are not what we watch. */
  ovsdb_idl_omit_alert(db->idl, &ovsrec_interface_col_statistics);
  ovsdb_idl_omit_alert(db->idl, &ovsrec_interface_col_status);
  ovsdb_idl_omit_alert(db->idl, &ovsrec_interface_col_link_resets);
  ovsdb_idl_omit_alert(db->idl, &ovsrec_interface_col_link_state);
  ovsdb_idl_omit_alert(db->idl, &ovsrec_interface_col_link_speed);
  ovsdb_idl_omit_alert(db->idl, &ovsrec_interface_col_duplex);
  ovsdb_idl_omit_alert(db->idl, &ovsrec_interface_col_mtu);
  ovsdb_idl_omit_alert(db->idl, &ovsrec_port_col_statistics);
  ovsdb_idl_omit_alert(db->idl, &ovsrec_port_col_status);
  ovsdb_idl_omit_alert(db->idl, &ovsrec_bridge_col_status);
  ovsdb_idl_omit_alert(db->idl, &ovsrec_open_vswitch_col_statistics);
  latch_init(&db->wake);
  db->last_seqno = ovsdb_idl_get_seqno(db->idl);
  return db;
}

void dfw_ovsdb_destroy(struct dfw_ovsdb* db) {
  if (db) {
    ovsdb_idl_destroy(db->idl);
    latch_destroy(&db->wake);
    free(db);
  }
}

static int dfw_ovsdb_changed(struct dfw_ovsdb* db) {
  unsigned int seqno;

  ovsdb_idl_run(db->idl);
  seqno = ovsdb_idl_get_seqno(db->idl);
  if (seqno != db->last_seqno) {
    db->last_seqno = seqno;
    return 1;
  }
  return 0;
}

int dfw_ovsdb_poll(struct dfw_ovsdb* db, int timeout_ms) {
  if (dfw_ovsdb_changed(db)) {
    return 1;
  }
  if (latch_poll(&db->wake)) {
    return 0;
  }
  if (timeout_ms > 0) {
    ovsdb_idl_wait(db->idl);
    latch_wait(&db->wake);
    poll_timer_wait(timeout_ms);
    poll_block();
    latch_poll(&db->wake);
    return dfw_ovsdb_changed(db);
  }
  return 0;
}

void dfw_ovsdb_wake(struct dfw_ovsdb* db) { latch_set(&db->wake); }

int dfw_ovsdb_is_synced(const struct dfw_ovsdb* db) {
  return ovsdb_idl_has_ever_connected(db->idl) && ovsdb_idl_is_alive(db->idl);
}

static const char* str_or_empty(const char* s) { return s ? s : ""; }

void dfw_ovsdb_for_each_interface(struct dfw_ovsdb* db, dfw_ovsdb_iface_cb cb, void* ctx) {
  const struct ovsrec_interface* row;

  OVSREC_INTERFACE_FOR_EACH(row, db->idl) {
    struct dfw_ovsdb_iface i;

    snprintf(db->uuid_buf, sizeof db->uuid_buf, UUID_FMT, UUID_ARGS(&row->header_.uuid));
    i.uuid = db->uuid_buf;
    i.name = str_or_empty(row->name);
    i.type = str_or_empty(row->type);
    i.iface_id = str_or_empty(smap_get(&row->external_ids, "iface-id"));
    i.attached_mac = str_or_empty(smap_get(&row->external_ids, "attached-mac"));
    i.vm_uuid = str_or_empty(smap_get(&row->external_ids, "vm-uuid"));
    i.ofport = (row->n_ofport > 0 && row->ofport[0] > 0) ? row->ofport[0] : -1;
    cb(ctx, &i);
  }
}

int dfw_ovsdb_add_port(struct dfw_ovsdb* db, const char* bridge, const char* port, const char* type,
                       const char* const* opt_keys, const char* const* opt_values, size_t n_opts,
                       int64_t ofport_request, char** error) {
  const struct ovsrec_bridge* br;
  const struct ovsrec_port* p;
  const struct ovsrec_interface* iface;
  struct ovsdb_idl_txn* txn;
  enum ovsdb_idl_txn_status status;
  struct ovsrec_interface* new_iface;
  struct ovsrec_port* new_port;
  size_t i;

  *error = NULL;
  if (!dfw_ovsdb_is_synced(db)) {
    *error = xstrdup("not connected to the OVSDB server (yet)");
    return -1;
  }
  OVSREC_BRIDGE_FOR_EACH(br, db->idl) {
    if (!strcmp(br->name, bridge)) {
      break;
    }
  }
  if (!br) {
    *error = xasprintf("no bridge named '%s' in the database", bridge);
    return -1;
  }
  OVSREC_PORT_FOR_EACH(p, db->idl) {
    if (!strcmp(p->name, port)) {
      break;
    }
  }
  if (p) {
    for (i = 0; i < br->n_ports; i++) {
      if (br->ports[i] == p) {
        break;
      }
    }
    if (i == br->n_ports) {
      *error = xasprintf("port '%s' exists on another bridge", port);
      return -1;
    }
    if (p->n_interfaces != 1 || strcmp(str_or_empty(p->interfaces[0]->type), type)) {
      *error = xasprintf(
          "port '%s' exists with another interface "
          "type than '%s'",
          port, type);
      return -1;
    }
    for (i = 0; i < n_opts; i++) {
      const char* have = smap_get(&p->interfaces[0]->options, opt_keys[i]);
      if (!have || strcmp(have, opt_values[i])) {
        *error = xasprintf(
            "port '%s' exists with options:%s=%s, "
            "not %s",
            port, opt_keys[i], have ? have : "(unset)", opt_values[i]);
        return -1;
      }
    }
    return 1;
  }
  OVSREC_INTERFACE_FOR_EACH(iface, db->idl) {
    if (!strcmp(iface->name, port)) {
      *error = xasprintf(
          "interface '%s' exists without a port named "
          "so",
          port);
      return -1;
    }
  }

  txn = ovsdb_idl_txn_create(db->idl);
  ovsdb_idl_txn_add_comment(txn, "dfw: add firewall port %s to %s", port, bridge);
  new_iface = ovsrec_interface_insert(txn);
  ovsrec_interface_set_name(new_iface, port);
  ovsrec_interface_set_type(new_iface, type);
  if (n_opts > 0) {
    struct smap options = SMAP_INITIALIZER(&options);

    for (i = 0; i < n_opts; i++) {
      smap_replace(&options, opt_keys[i], opt_values[i]);
    }
    ovsrec_interface_set_options(new_iface, &options);
    smap_destroy(&options);
  }
  if (ofport_request > 0) {
    ovsrec_interface_set_ofport_request(new_iface, &ofport_request, 1);
  }
  new_port = ovsrec_port_insert(txn);
  ovsrec_port_set_name(new_port, port);
  ovsrec_port_set_interfaces(new_port, &new_iface, 1);
  ovsrec_bridge_update_ports_addvalue(br, new_port);
  status = ovsdb_idl_txn_commit_block(txn);
  if (status != TXN_SUCCESS && status != TXN_UNCHANGED) {
    const char* msg = ovsdb_idl_txn_get_error(txn);
    *error = xasprintf("adding port '%s' to '%s' failed: %s (%s)", port, bridge,
                       ovsdb_idl_txn_status_to_string(status), msg ? msg : "no detail");
    ovsdb_idl_txn_destroy(txn);
    return -1;
  }
  ovsdb_idl_txn_destroy(txn);
  return 0;
}
