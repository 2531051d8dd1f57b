/* The only file of ovs-integration that includes OVS's OpenFlow headers. */
#include <config.h>

#include "openflow_shim.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "byte-order.h"
#include "flow.h" /* ofp_to_u16, u16_to_ofp */
#include "openflow/openflow.h"
#include "openvswitch/dynamic-string.h"
#include "openvswitch/list.h"
#include "openvswitch/match.h"
#include "openvswitch/ofp-actions.h"
#include "openvswitch/ofp-bundle.h"
#include "openvswitch/ofp-flow.h"
#include "openvswitch/ofp-msgs.h"
#include "openvswitch/ofp-packet.h"
#include "openvswitch/ofp-port.h"
#include "openvswitch/ofp-print.h"
#include "openvswitch/ofp-protocol.h"
#include "openvswitch/ofpbuf.h"
#include "openvswitch/vconn.h"
#include "openvswitch/vlog.h"
#include "ovs-thread.h"
#include "packets.h" /* ETH_HEADER_LEN */
#include "socket-util.h"
#include "util.h"

#define DFW_OF_PROTOCOL OFPUTIL_P_OF13_OXM

struct dfw_of {
  struct vconn* vconn;
};

static void dfw_of_quiet_logs(void) {
  static struct ovsthread_once once = OVSTHREAD_ONCE_INITIALIZER;
  if (ovsthread_once_start(&once)) {
    vlog_set_levels(NULL, VLF_CONSOLE, VLL_WARN);
    ovsthread_once_done(&once);
  }
}

int dfw_of_open(const char* target, int timeout_ms, struct dfw_of** ofp, char** error) {
  struct vconn* vconn;
  int err;

  dfw_of_quiet_logs();
  *ofp = NULL;
  *error = NULL;
  err = vconn_open_block(target, 1u << OFP13_VERSION, DSCP_DEFAULT, timeout_ms, &vconn);
  if (err) {
    *error =
        xasprintf("%s: cannot connect with OpenFlow 1.3: %s", target, ovs_retval_to_string(err));
    return -1;
  }
  *ofp = xzalloc(sizeof **ofp);
  (*ofp)->vconn = vconn;
  return 0;
}

void dfw_of_close(struct dfw_of* of) {
  if (of) {
    vconn_close(of->vconn);
    free(of);
  }
}

static void format_flow(struct ds* key, struct ds* actions, uint8_t table_id, uint16_t priority,
                        const struct match* match, const struct ofpact* ofpacts,
                        size_t ofpacts_len) {
  struct ofpact_format_params fp = {.s = actions};

  ds_put_format(key, "table=%u,priority=%u", table_id, priority);
  size_t len = key->length;
  ds_put_char(key, ',');
  match_format(match, NULL, key, OFP_DEFAULT_PRIORITY);
  if (key->length == len + 1) {
    ds_chomp(key, ',');
  }
  ofpacts_format(ofpacts, ofpacts_len, &fp);
}

int dfw_of_canonical(const char* flow, uint64_t* cookie, char** key, char** actions, char** error) {
  struct ofputil_flow_mod fm, fm2;
  enum ofputil_protocol usable = 0;
  struct ofpbuf *msg, ofpacts;
  struct match match;
  enum ofperr oerr;
  char* err;

  *key = *actions = *error = NULL;
  err = parse_ofp_flow_mod_str(&fm, flow, NULL, NULL, OFPFC_ADD, &usable);
  if (err) {
    *error = xasprintf("%s: %s", flow, err);
    free(err);
    return -1;
  }
  if (!(usable & DFW_OF_PROTOCOL)) {
    char* u = ofputil_protocols_to_string(usable);
    *error = xasprintf("%s: not expressible in OpenFlow 1.3 (usable: %s)", flow, u);
    free(u);
    free(CONST_CAST(struct ofpact*, fm.ofpacts));
    minimatch_destroy(&fm.match);
    return -1;
  }
  msg = ofputil_encode_flow_mod(&fm, DFW_OF_PROTOCOL);
  free(CONST_CAST(struct ofpact*, fm.ofpacts));
  minimatch_destroy(&fm.match);

  ofpbuf_init(&ofpacts, 64);
  oerr = ofputil_decode_flow_mod(&fm2, msg->data, DFW_OF_PROTOCOL, NULL, NULL, &ofpacts, OFPP_MAX,
                                 255);
  ofpbuf_delete(msg);
  if (oerr) {
    *error = xasprintf("%s: OF1.3 round trip failed: %s", flow, ofperr_to_string(oerr));
    ofpbuf_uninit(&ofpacts);
    return -1;
  }
  minimatch_expand(&fm2.match, &match);

  struct ds k = DS_EMPTY_INITIALIZER, a = DS_EMPTY_INITIALIZER;
  format_flow(&k, &a, fm2.table_id, fm2.priority, &match, fm2.ofpacts, fm2.ofpacts_len);
  *cookie = ntohll(fm2.new_cookie);
  *key = ds_steal_cstr(&k);
  *actions = ds_steal_cstr(&a);
  minimatch_destroy(&fm2.match);
  ofpbuf_uninit(&ofpacts);
  return 0;
}

int dfw_of_dump(struct dfw_of* of, uint64_t cookie, uint64_t mask, dfw_of_flow_cb cb, void* ctx,
                char** error) {
  struct ofputil_flow_stats_request fsr;
  struct ofputil_flow_stats* fses = NULL;
  size_t n_fses = 0, i;
  int err;

  *error = NULL;
  memset(&fsr, 0, sizeof fsr);
  match_init_catchall(&fsr.match);
  fsr.aggregate = false;
  fsr.cookie = htonll(cookie);
  fsr.cookie_mask = htonll(mask);
  fsr.out_port = OFPP_ANY;
  fsr.out_group = OFPG_ANY;
  fsr.table_id = 0xff;
  err = vconn_dump_flows(of->vconn, &fsr, DFW_OF_PROTOCOL, &fses, &n_fses);
  if (err) {
    *error = xasprintf("%s: dumping flows failed: %s", vconn_get_name(of->vconn),
                       ovs_retval_to_string(err));
    return -1;
  }
  for (i = 0; i < n_fses; i++) {
    struct ds k = DS_EMPTY_INITIALIZER, a = DS_EMPTY_INITIALIZER;
    format_flow(&k, &a, fses[i].table_id, fses[i].priority, &fses[i].match, fses[i].ofpacts,
                fses[i].ofpacts_len);
    cb(ctx, ntohll(fses[i].cookie), ds_cstr(&k), ds_cstr(&a));
    ds_destroy(&k);
    ds_destroy(&a);
    free(CONST_CAST(struct ofpact*, fses[i].ofpacts));
  }
  free(fses);
  return 0;
}

int dfw_of_bundle(struct dfw_of* of, const struct dfw_of_mod* mods, size_t n, char** error) {
  struct ovs_list requests, errors;
  struct ofpbuf* reply;
  size_t i;
  int err;

  *error = NULL;
  ovs_list_init(&requests);
  for (i = 0; i < n; i++) {
    struct ofputil_flow_mod fm;
    enum ofputil_protocol usable = 0;
    int command = mods[i].command == DFW_OF_ADD ? OFPFC_ADD : OFPFC_DELETE_STRICT;
    char* perr = parse_ofp_flow_mod_str(&fm, mods[i].flow, NULL, NULL, command, &usable);
    if (perr) {
      *error = xasprintf("%s: %s", mods[i].flow, perr);
      free(perr);
      ofpbuf_list_delete(&requests);
      return -1;
    }
    struct ofpbuf* msg = ofputil_encode_flow_mod(&fm, DFW_OF_PROTOCOL);
    free(CONST_CAST(struct ofpact*, fm.ofpacts));
    minimatch_destroy(&fm.match);
    ovs_list_push_back(&requests, &msg->list_node);
  }

  err = vconn_bundle_transact(of->vconn, &requests, OFPBF_ATOMIC | OFPBF_ORDERED, &errors);
  ofpbuf_list_delete(&requests);
  if (err || !ovs_list_is_empty(&errors)) {
    struct ds s = DS_EMPTY_INITIALIZER;
    ds_put_format(&s, "%s: bundle not committed: %s", vconn_get_name(of->vconn),
                  err ? ovs_retval_to_string(err) : "error reply");
    LIST_FOR_EACH(reply, list_node, &errors) {
      char* text = ofp_to_string(reply->data, reply->size, NULL, NULL, 1);
      ds_put_format(&s, "; %s", text);
      free(text);
    }
    ofpbuf_list_delete(&errors);
    ds_chomp(&s, '\n');
    *error = ds_steal_cstr(&s);
    return -1;
  }
  return 0;
}

/* Whether the switch behind `vconn` describes port `port` (OpenFlow 1.3
 * OFPMP_PORT_DESC). Returns 0 (*found set) or a positive errno value. */
static int dfw_of_has_port(struct vconn* vconn, ofp_port_t port, bool* found) {
  struct ovs_list requests, replies;
  struct ofputil_phy_port pp;
  struct ofpbuf* reply;
  int err;

  *found = false;
  ovs_list_init(&requests);
  struct ofpbuf* rq = ofputil_encode_port_desc_stats_request(OFP13_VERSION, OFPP_ANY);
  ovs_list_push_back(&requests, &rq->list_node);
  err = vconn_transact_multipart(vconn, &requests, &replies);
  if (err) {
    return err;
  }
  LIST_FOR_EACH(reply, list_node, &replies) {
    enum ofptype type;
    struct ofpbuf b = *reply;
    if (ofptype_pull(&type, &b) || type != OFPTYPE_PORT_DESC_STATS_REPLY) {
      continue;
    }
    while (!*found && !ofputil_pull_phy_port(OFP13_VERSION, &b, &pp)) {
      *found = pp.port_no == port;
    }
  }
  ofpbuf_list_delete(&replies);
  return 0;
}

/* An OpenFlow message's length is 16 bits: the frame shares them with the
 * packet-out header (24 bytes) and its one output action (16). */
#define DFW_OF_MAX_PACKET_OUT_FRAME (UINT16_MAX - 64)

int dfw_of_packet_out(struct dfw_of* of, uint32_t in_port, const void* frame, size_t len,
                      char** error) {
  const char* name = vconn_get_name(of->vconn);
  struct ofpbuf* error_reply = NULL;
  ofp_port_t port;
  bool found;
  int err;

  *error = NULL;
  if (len < ETH_HEADER_LEN) {
    *error = xasprintf("%s: packet-out: a frame of %" PRIuSIZE
                       " bytes is shorter than an Ethernet header (%d)",
                       name, len, ETH_HEADER_LEN);
    return DFW_OF_PO_INVALID;
  }
  if (len > DFW_OF_MAX_PACKET_OUT_FRAME) {
    *error = xasprintf("%s: packet-out: a frame of %" PRIuSIZE
                       " bytes does not fit an OpenFlow message (at most %d)",
                       name, len, DFW_OF_MAX_PACKET_OUT_FRAME);
    return DFW_OF_PO_INVALID;
  }
  /* OpenFlow 1.3 port numbers: physical below 0xff00, reserved from
   * 0xffffff00 (OFPP11_MAX); OVS's own numbering maps the latter to
   * 0xff00..0xffff. */
  if (in_port != 0 && in_port < ofp_to_u16(OFPP_MAX)) {
    port = u16_to_ofp(in_port);
  } else if (in_port == ofp_to_u16(OFPP_LOCAL) + OFPP11_OFFSET) {
    port = OFPP_LOCAL;
  } else {
    *error = xasprintf("%s: packet-out: in_port %" PRIu32 " (0x%" PRIx32
                       ") is not a port a frame can come in on (1..0xfeff or LOCAL 0xfffffffe)",
                       name, in_port, in_port);
    return DFW_OF_PO_INVALID;
  }
  err = dfw_of_has_port(of->vconn, port, &found);
  if (err) {
    *error = xasprintf("%s: packet-out: port description request failed: %s", name,
                       ovs_retval_to_string(err));
    return DFW_OF_PO_FAILED;
  }
  if (!found) {
    *error = xasprintf("%s: packet-out: no port %" PRIu32 " on the bridge", name, in_port);
    return DFW_OF_PO_NO_PORT;
  }

  struct ofpbuf ofpacts;
  ofpbuf_init(&ofpacts, 64);
  ofpact_put_OUTPUT(&ofpacts)->port = OFPP_TABLE;
  struct ofputil_packet_out po;
  memset(&po, 0, sizeof po);
  po.packet = frame;
  po.packet_len = len;
  po.buffer_id = UINT32_MAX;
  match_init_catchall(&po.flow_metadata);
  match_set_in_port(&po.flow_metadata, port);
  po.ofpacts = ofpacts.data;
  po.ofpacts_len = ofpacts.size;
  struct ofpbuf* msg = ofputil_encode_packet_out(&po, DFW_OF_PROTOCOL);
  ofpbuf_uninit(&ofpacts);

  /* Sends msg (and frees it), then a barrier; any error reply to msg comes
   * back before the barrier's reply. */
  err = vconn_transact_noreply(of->vconn, msg, &error_reply);
  if (err) {
    *error = xasprintf("%s: packet-out from port %" PRIu32 " failed: %s", name, in_port,
                       ovs_retval_to_string(err));
    return DFW_OF_PO_FAILED;
  }
  if (error_reply) {
    char* text = ofp_to_string(error_reply->data, error_reply->size, NULL, NULL, 1);
    size_t n = strlen(text);
    while (n && text[n - 1] == '\n') {
      text[--n] = '\0';
    }
    *error = xasprintf("%s: packet-out from port %" PRIu32 " refused: %s", name, in_port, text);
    free(text);
    ofpbuf_delete(error_reply);
    return DFW_OF_PO_REFUSED;
  }
  return 0;
}

int dfw_of_set_no_flood(const char* target, uint32_t port_no, int no_flood, int timeout_ms,
                        char** error) {
  struct vconn* vconn;
  struct ovs_list requests, replies;
  struct ofputil_phy_port pp;
  struct ofpbuf* reply;
  bool found = false;
  int err;

  dfw_of_quiet_logs();
  *error = NULL;
  err = vconn_open_block(target, 1u << OFP10_VERSION, DSCP_DEFAULT, timeout_ms, &vconn);
  if (err) {
    *error = xasprintf(
        "%s: cannot connect with OpenFlow 1.0 (needed for "
        "no-flood; the bridge's protocols must include "
        "OpenFlow10): %s",
        target, ovs_retval_to_string(err));
    return -1;
  }

  /* The port mod must name the port's current hardware address. */
  ovs_list_init(&requests);
  struct ofpbuf* rq = ofputil_encode_port_desc_stats_request(OFP10_VERSION, u16_to_ofp(port_no));
  ovs_list_push_back(&requests, &rq->list_node);
  err = vconn_transact_multipart(vconn, &requests, &replies);
  if (err) {
    *error =
        xasprintf("%s: port description request failed: %s", target, ovs_retval_to_string(err));
    vconn_close(vconn);
    return -1;
  }
  LIST_FOR_EACH(reply, list_node, &replies) {
    enum ofptype type;
    struct ofpbuf b = *reply;
    if (ofptype_pull(&type, &b) || type != OFPTYPE_PORT_DESC_STATS_REPLY) {
      continue;
    }
    while (!found && !ofputil_pull_phy_port(OFP10_VERSION, &b, &pp)) {
      found = ofp_to_u16(pp.port_no) == port_no;
    }
  }
  ofpbuf_list_delete(&replies);
  if (!found) {
    *error = xasprintf("%s: no port %u on the bridge", target, port_no);
    vconn_close(vconn);
    return -1;
  }

  struct ofputil_port_mod pm;
  memset(&pm, 0, sizeof pm);
  pm.port_no = pp.port_no;
  pm.hw_addr = pp.hw_addr;
  pm.mask = OFPUTIL_PC_NO_FLOOD;
  pm.config = no_flood ? OFPUTIL_PC_NO_FLOOD : 0;
  pm.advertise = 0;
  struct ofpbuf* msg = ofputil_encode_port_mod(&pm, OFPUTIL_P_OF10_STD);
  struct ofpbuf* error_reply = NULL;
  err = vconn_transact_noreply(vconn, msg, &error_reply);
  if (err || error_reply) {
    char* text = error_reply ? ofp_to_string(error_reply->data, error_reply->size, NULL, NULL, 1)
                             : xstrdup(ovs_retval_to_string(err));
    *error = xasprintf("%s: port mod of port %u refused: %s", target, port_no, text);
    free(text);
    ofpbuf_delete(error_reply);
    vconn_close(vconn);
    return -1;
  }
  vconn_close(vconn);
  return 0;
}
