/* The only file of this test that includes OVS headers (C, not C++). */
#include <config.h>

#include "ovs_flow_shim.h"

#include <stdlib.h>
#include <string.h>

#include "openvswitch/match.h"
#include "openvswitch/ofp-flow.h"
#include "openvswitch/ofp-print.h"
#include "openvswitch/ofp-protocol.h"
#include "openvswitch/ofpbuf.h"
#include "util.h" /* OVS's lib/util.h: xasprintf, CONST_CAST */

int dfw_ovs_check_flow_add(const char* flow, struct dfw_ovs_flow_check* out) {
  struct ofputil_flow_mod fm;
  enum ofputil_protocol usable = 0;
  struct ofpbuf* msg;
  char* error;

  memset(out, 0, sizeof *out);
  error = parse_ofp_flow_mod_str(&fm, flow, NULL, NULL, OFPFC_ADD, &usable);
  if (error) {
    out->error = error;
    return -1;
  }
  out->usable_protocols = ofputil_protocols_to_string(usable);
  out->of13_usable = (usable & OFPUTIL_P_OF13_OXM) != 0;
  if (out->of13_usable) {
    msg = ofputil_encode_flow_mod(&fm, OFPUTIL_P_OF13_OXM);
    out->of13_wire_len = msg->size;
    out->of13_decoded = ofp_to_string(msg->data, msg->size, NULL, NULL, 1);
    ofpbuf_delete(msg);
  } else {
    out->error = xasprintf(
        "flow cannot be expressed in OpenFlow 1.3 "
        "(usable: %s)",
        out->usable_protocols);
  }
  free(CONST_CAST(struct ofpact*, fm.ofpacts));
  minimatch_destroy(&fm.match);
  return out->error ? -1 : 0;
}

void dfw_ovs_flow_check_clear(struct dfw_ovs_flow_check* c) {
  free(c->error);
  free(c->usable_protocols);
  free(c->of13_decoded);
  memset(c, 0, sizeof *c);
}
