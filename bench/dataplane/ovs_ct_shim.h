/* C interface to libopenvswitch's userspace conntrack (lib/conntrack.c), for
 * the C++ benchmark bench_dataplane_vs_ovs_ct. OVS's headers are C that does
 * not compile as C++ (DESIGN.md section 6): only ovs_ct_shim.c includes them.
 *
 * The packets are OVS dp_packets over frames the caller owns (no copy), with
 * their L3/L4 offsets set once at creation, as OVS's
 * `ovstest test-conntrack benchmark` does. */
#ifndef DFW_BENCH_DATAPLANE_OVS_CT_SHIM_H
#define DFW_BENCH_DATAPLANE_OVS_CT_SHIM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct dfw_ovs_ct;
struct dfw_ovs_pkts;

/* conntrack_init(), with the connection limit raised to `max_conns`. */
struct dfw_ovs_ct* dfw_ovs_ct_create(uint32_t max_conns);
void dfw_ovs_ct_destroy(struct dfw_ovs_ct*);
void dfw_ovs_ct_flush(struct dfw_ovs_ct*);
uint32_t dfw_ovs_ct_nconns(struct dfw_ovs_ct*);

/* n dp_packets over frames[i] (lens[i] bytes, untagged Ethernet + IPv4),
 * parsed once with flow_extract() to set their offsets. Frames must outlive
 * the set. Returns NULL if a frame is not IPv4. */
struct dfw_ovs_pkts* dfw_ovs_pkts_create(const uint8_t* const* frames, const uint16_t* lens,
                                         size_t n);
void dfw_ovs_pkts_destroy(struct dfw_ovs_pkts*);
/* Copies frames idx[0..n) (n <= 32) into the set's fixed rx area of 32
 * dp_packets, as a NIC's DMA would place a burst: the next
 * dfw_ovs_ct_firewall_rx works on them. All frames of a set must have the
 * same length and layout (checked at creation). */
void dfw_ovs_rx(struct dfw_ovs_pkts*, const uint32_t* idx, uint32_t n);
/* sizeof(struct dp_packet), for reports. */
size_t dfw_ovs_dp_packet_size(void);

/* What an OpenFlow conntrack firewall does with one rx batch (n <= 32
 * packets, by index into `pkts`) from one vNIC port:
 *
 *   table=0 ip actions=ct(table=1,zone=Z)           -> conntrack_execute(commit=false)
 *   table=1 ct_state=+trk+est actions=output
 *   table=1 ct_state=+trk+new actions=ct(commit,zone=Z),output
 *                                                    -> conntrack_execute(commit=true)
 *                                                       on the +new packets
 *
 * Packet metadata is reset first (a packet fresh from rx has no conntrack
 * state). With `extract`, each packet also goes through miniflow_extract()
 * first, as dpif-netdev does for every received packet. Returns the number of
 * packets output (+est, or +new and committed); *n_new counts the +new ones. */
uint32_t dfw_ovs_ct_firewall(struct dfw_ovs_ct*, struct dfw_ovs_pkts*, const uint32_t* idx,
                             uint32_t n, uint16_t zone, long long now_ms, int extract,
                             uint32_t* n_new);
/* The same on the rx area's first n packets (after dfw_ovs_rx). */
uint32_t dfw_ovs_ct_firewall_rx(struct dfw_ovs_ct*, struct dfw_ovs_pkts*, uint32_t n, uint16_t zone,
                                long long now_ms, int extract, uint32_t* n_new);

#ifdef __cplusplus
}
#endif

#endif
