/* C interface to libopenvswitch's OpenFlow flow parser and encoder, for C++.
 * OVS's own headers are C that does not compile as C++ (DESIGN.md §6), so
 * only ovs_flow_shim.c includes them; this header includes none. */
#ifndef DFW_TESTS_THIRD_PARTY_OVS_FLOW_SHIM_H
#define DFW_TESTS_THIRD_PARTY_OVS_FLOW_SHIM_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* What libopenvswitch made of one `ovs-ofctl add-flow` style flow string. */
struct dfw_ovs_flow_check {
  char* error;            /* NULL if the flow parsed; else OVS's message. */
  char* usable_protocols; /* Protocols that can express it, e.g. "OXM..". */
  int of13_usable;        /* 1 if OpenFlow 1.3 (+ Nicira ext) can carry it. */
  size_t of13_wire_len;   /* Bytes of its OF1.3 OFPT_FLOW_MOD message. */
  char* of13_decoded;     /* That message decoded back by OVS's printer. */
};

/* Parses `flow` as an OFPFC_ADD flow mod; if OpenFlow 1.3 can carry it,
 * encodes it as an OF1.3 OFPT_FLOW_MOD and decodes that message back to text.
 * Returns 0 if the flow parsed and round-tripped through OF1.3, -1 otherwise
 * (out->error then says why). Free with dfw_ovs_flow_check_clear(). */
int dfw_ovs_check_flow_add(const char* flow, struct dfw_ovs_flow_check* out);
void dfw_ovs_flow_check_clear(struct dfw_ovs_flow_check*);

#ifdef __cplusplus
}
#endif

#endif
