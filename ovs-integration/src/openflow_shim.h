/* C interface to libopenvswitch's OpenFlow client (vconn, flow mods, flow
 * stats, bundles, packet-out), for C++. Only openflow_shim.c includes OVS headers.
 *
 * Flows are written in ovs-ofctl syntax. Every call speaks OpenFlow 1.3 with
 * Nicira extensions. Thread safety: a dfw_of is used by one thread at a time;
 * distinct dfw_of's may be used by distinct threads. */
#ifndef DFW_OVS_INTEGRATION_OPENFLOW_SHIM_H
#define DFW_OVS_INTEGRATION_OPENFLOW_SHIM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct dfw_of;

/* Connects to `target` (e.g. "unix:/run/openvswitch/br0.mgmt"), negotiating
 * OpenFlow 1.3, waiting at most timeout_ms. Returns 0 or -1 (*error set,
 * free()). */
int dfw_of_open(const char* target, int timeout_ms, struct dfw_of**, char** error);
void dfw_of_close(struct dfw_of*);

/* The canonical form of a flow as the switch would report it: `flow` is
 * parsed as an add, encoded as an OF1.3 flow mod and decoded back, then
 * printed as key "table=T,priority=P[,match]" and actions. Returns 0 or -1
 * (*error set). Outputs are malloc()ed. */
int dfw_of_canonical(const char* flow, uint64_t* cookie, char** key, char** actions, char** error);

/* Calls cb for each flow of any table whose cookie & mask == cookie & mask,
 * with the flow in the canonical form above. Returns 0 or -1 (*error set). */
typedef void (*dfw_of_flow_cb)(void* ctx, uint64_t cookie, const char* key, const char* actions);
int dfw_of_dump(struct dfw_of*, uint64_t cookie, uint64_t mask, dfw_of_flow_cb, void* ctx,
                char** error);

enum dfw_of_command { DFW_OF_ADD = 0, DFW_OF_DELETE_STRICT = 1 };
struct dfw_of_mod {
  enum dfw_of_command command;
  const char* flow; /* ovs-ofctl syntax; for deletes, match + cookie=C/M */
};

/* Sends all `mods` in one OpenFlow bundle (OFPBCT_OPEN, one OFPT_BUNDLE_ADD
 * each, barrier, OFPBCT_COMMIT) with OFPBF_ATOMIC | OFPBF_ORDERED: the switch
 * applies all or none, and packets see the flow table either before or after
 * the whole bundle. Nothing is sent if a flow does not parse. Returns 0 or -1
 * (*error set: the parse error or the switch's error replies). */
int dfw_of_bundle(struct dfw_of*, const struct dfw_of_mod* mods, size_t n, char** error);

/* Injects `frame` (a whole Ethernet frame, at least 14 bytes) into the
 * bridge as if it had been received on port `in_port` (an OpenFlow 1.3 port
 * number: 1..0xfeff, or OFPP_LOCAL 0xfffffffe): one OFPT_PACKET_OUT with no
 * buffer (buffer_id UINT32_MAX), in_port, and the single action
 * output:OFPP_TABLE, so the frame goes through the flow table from table 0.
 * Followed by a barrier; the switch's reply to the barrier is awaited, so
 * an OFPT_ERROR about the packet-out is reported. Checked here first,
 * because OVS (3.1) accepts them without an error reply: a frame shorter than
 * 14 bytes (run through the table as an all-zero flow; only its datapath's
 * log says "execute ... failed"), and any in_port below 0xff00, port 0 and
 * ports it does not have included (run as from that port). So the port is
 * looked up in the switch's port descriptions (OFPMP_PORT_DESC) before the
 * packet-out is sent. OVS answers OFPBAC_BAD_OUT_PORT only for numbers
 * outside OpenFlow 1.3's port space, which never get this far.
 * Returns 0, or one of the negative values below with *error set. */
enum {
  DFW_OF_PO_INVALID = -1, /* no frame, a frame too long, no port number */
  DFW_OF_PO_NO_PORT = -2, /* the bridge has no such port */
  DFW_OF_PO_REFUSED = -3, /* the switch's error reply */
  DFW_OF_PO_FAILED = -4   /* the connection failed */
};
int dfw_of_packet_out(struct dfw_of*, uint32_t in_port, const void* frame, size_t len,
                      char** error);

/* Sets (no_flood=1) or clears the OFPPC_NO_FLOOD config bit of port
 * `port_no` through its own OpenFlow 1.0 connection to `target` (OpenFlow
 * 1.3 has no such bit); NORMAL then never floods to that port. Returns 0 or
 * -1 (*error set). The bit is not stored in OVSDB: it is lost if
 * ovs-vswitchd restarts or the port is re-created, so apply it again then. */
int dfw_of_set_no_flood(const char* target, uint32_t port_no, int no_flood, int timeout_ms,
                        char** error);

#ifdef __cplusplus
}
#endif

#endif
