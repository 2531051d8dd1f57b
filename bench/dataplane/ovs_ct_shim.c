/* The only file of bench_dataplane_vs_ovs_ct that includes OVS headers. */
#include <config.h>

#include "ovs_ct_shim.h"

#include <stdlib.h>
#include <string.h>

#include "conntrack.h"
#include "dp-packet.h"
#include "flow.h"
#include "packets.h"
#include "util.h"

struct dfw_ovs_ct {
  struct conntrack* ct;
};

struct dfw_ovs_pkts {
  size_t n;
  struct dp_packet* p; /* n packets */
  const uint8_t* const* frames;
  uint16_t len;
  struct dp_packet rx[NETDEV_MAX_BURST];
  uint8_t rx_buf[NETDEV_MAX_BURST][128] __attribute__((aligned(64)));
};

struct dfw_ovs_ct* dfw_ovs_ct_create(uint32_t max_conns) {
  struct dfw_ovs_ct* c = xzalloc(sizeof *c);
  c->ct = conntrack_init();
  conntrack_set_maxconns(c->ct, max_conns);
  return c;
}

void dfw_ovs_ct_destroy(struct dfw_ovs_ct* c) {
  if (c) {
    conntrack_destroy(c->ct);
    free(c);
  }
}

void dfw_ovs_ct_flush(struct dfw_ovs_ct* c) { conntrack_flush(c->ct, NULL); }

uint32_t dfw_ovs_ct_nconns(struct dfw_ovs_ct* c) {
  uint32_t n = 0;
  conntrack_get_nconns(c->ct, &n);
  return n;
}

size_t dfw_ovs_dp_packet_size(void) { return sizeof(struct dp_packet); }

struct dfw_ovs_pkts* dfw_ovs_pkts_create(const uint8_t* const* frames, const uint16_t* lens,
                                         size_t n) {
  struct dfw_ovs_pkts* s = xzalloc(sizeof *s);
  s->n = n;
  s->p = xcalloc(n ? n : 1, sizeof *s->p);
  for (size_t i = 0; i < n; i++) {
    struct dp_packet* pkt = &s->p[i];
    struct flow flow;

    dp_packet_use_const(pkt, frames[i], lens[i]);
    pkt_metadata_init(&pkt->md, 1);
    flow_extract(pkt, &flow);
    if (flow.dl_type != htons(ETH_TYPE_IP) || lens[i] != lens[0] || lens[i] > 128 ||
        pkt->l3_ofs != s->p[0].l3_ofs || pkt->l4_ofs != s->p[0].l4_ofs) {
      dfw_ovs_pkts_destroy(s);
      return NULL;
    }
  }
  s->frames = frames;
  s->len = n ? lens[0] : 0;
  for (size_t i = 0; i < NETDEV_MAX_BURST && n; i++) {
    struct dp_packet* pkt = &s->rx[i];
    struct flow flow;

    memcpy(s->rx_buf[i], frames[0], s->len);
    dp_packet_use_const(pkt, s->rx_buf[i], s->len);
    pkt_metadata_init(&pkt->md, 1);
    flow_extract(pkt, &flow);
  }
  return s;
}

void dfw_ovs_pkts_destroy(struct dfw_ovs_pkts* s) {
  if (s) {
    free(s->p);
    free(s);
  }
}

void dfw_ovs_rx(struct dfw_ovs_pkts* s, const uint32_t* idx, uint32_t n) {
  for (uint32_t i = 0; i < n; i++) {
    memcpy(s->rx_buf[i], s->frames[idx[i]], s->len);
  }
}

static uint32_t firewall(struct dfw_ovs_ct* c, struct dp_packet** pkts, uint32_t n, uint16_t zone,
                         long long now_ms, int extract, uint32_t* n_new) {
  struct dp_packet_batch batch, fresh;
  struct {
    struct miniflow mf;
    uint64_t buf[FLOW_MAX_PACKET_U64S];
  } key;
  uint32_t out = 0, new = 0;

  dp_packet_batch_init(&batch);
  for (uint32_t i = 0; i < n; i++) {
    struct dp_packet* pkt = pkts[i];

    conntrack_clear(pkt);
    if (extract) {
      miniflow_extract(pkt, &key.mf);
    }
    dp_packet_batch_add(&batch, pkt);
  }
  conntrack_execute(c->ct, &batch, htons(ETH_TYPE_IP), false, false, zone, NULL, NULL, 0, 0, NULL,
                    NULL, now_ms, 0);

  dp_packet_batch_init(&fresh);
  struct dp_packet* pkt;
  DP_PACKET_BATCH_FOR_EACH(i, pkt, &batch) {
    uint8_t st = pkt->md.ct_state;
    if (!(st & CS_TRACKED) || (st & CS_INVALID)) {
      continue;
    }
    if (st & CS_NEW) {
      dp_packet_batch_add(&fresh, pkt);
    } else if (st & CS_ESTABLISHED) {
      out++;
    }
  }
  if (!dp_packet_batch_is_empty(&fresh)) {
    /* Recirculated: the +new packets keep their metadata, as in dpif-netdev. */
    conntrack_execute(c->ct, &fresh, htons(ETH_TYPE_IP), false, true, zone, NULL, NULL, 0, 0, NULL,
                      NULL, now_ms, 0);
    DP_PACKET_BATCH_FOR_EACH(i, pkt, &fresh) {
      uint8_t st = pkt->md.ct_state;
      if ((st & CS_TRACKED) && !(st & CS_INVALID)) {
        out++;
        new ++;
      }
    }
  }
  *n_new = new;
  return out;
}

uint32_t dfw_ovs_ct_firewall(struct dfw_ovs_ct* c, struct dfw_ovs_pkts* s, const uint32_t* idx,
                             uint32_t n, uint16_t zone, long long now_ms, int extract,
                             uint32_t* n_new) {
  struct dp_packet* pkts[NETDEV_MAX_BURST];

  for (uint32_t i = 0; i < n; i++) {
    pkts[i] = &s->p[idx[i]];
  }
  return firewall(c, pkts, n, zone, now_ms, extract, n_new);
}

uint32_t dfw_ovs_ct_firewall_rx(struct dfw_ovs_ct* c, struct dfw_ovs_pkts* s, uint32_t n,
                                uint16_t zone, long long now_ms, int extract, uint32_t* n_new) {
  struct dp_packet* pkts[NETDEV_MAX_BURST];

  for (uint32_t i = 0; i < n; i++) {
    pkts[i] = &s->rx[i];
  }
  return firewall(c, pkts, n, zone, now_ms, extract, n_new);
}
