#!/usr/bin/env python3
"""The frames of an OVS-side pcap (bench/dataplane/ovs_anchor/mkpcap.py), as dfw-dataplane sees them on its
firewall port, plus a dfw-dataplane persisted state that allows them.

usage: mkdfwpcap.py IN.pcap OUT.pcap STATE.txtpb [N_VNICS]

Each frame keeps its bytes (same IPv4/UDP packet) and gets the steering 802.1Q tag of the vNIC
that sent it (egress: toward the network); the vNIC is chosen by source IP (local id =
src % N_VNICS + 1, default 64 vNICs) and the frame's source MAC becomes that vNIC's MAC, so
spoofguard passes. STATE.txtpb is a dfw.v1.DataplanePersistedState in text format (encode with
protoc --encode=dfw.v1.DataplanePersistedState): the vNICs with their MACs and bound source IPs,
and for each the rule "out, UDP to 198.19.0.0/16 on 53, 80, 443, 5432: allow (stateful)"; default
drop."""
import struct, sys

src_pcap, out_pcap, out_state = sys.argv[1], sys.argv[2], sys.argv[3]
n_vnics = int(sys.argv[4]) if len(sys.argv) > 4 else 64

def vnic_mac(v):
    return bytes([0x52, 0x54, 0x00, 0x00, v >> 8, v & 0xff])

bound = {}
with open(src_pcap, 'rb') as f, open(out_pcap, 'wb') as o:
    hdr = f.read(24)
    o.write(hdr)
    n = 0
    while True:
        rec = f.read(16)
        if len(rec) < 16:
            break
        ts, tu, incl, orig = struct.unpack('<IIII', rec)
        fr = f.read(incl)
        if fr[12:14] != b'\x08\x00':
            sys.exit('frame %d is not IPv4' % n)
        src = struct.unpack('!I', fr[26:30])[0]
        v = src % n_vnics + 1
        bound.setdefault(v, set()).add(src)
        tagged = fr[0:6] + vnic_mac(v) + struct.pack('!HH', 0x8100, v) + fr[12:]
        o.write(struct.pack('<IIII', ts, tu, len(tagged), len(tagged)) + tagged)
        n += 1

def ip(a):
    return '%d.%d.%d.%d' % (a >> 24, (a >> 16) & 255, (a >> 8) & 255, a & 255)

with open(out_state, 'w') as s:
    for v in sorted(bound):
        mac = ':'.join('%02x' % b for b in vnic_mac(v))
        ips = ' '.join('bound_ips: "%s"' % ip(a) for a in sorted(bound[v]))
        s.write('vnics { id: "vm-%d-eth0" local_id: %d mac: "%s" %s }\n' % (v, v, mac, ips))
    s.write('state {\n  revision: 1\n  address_sets { id: "g:svc" prefixes: "198.19.0.0/16" }\n')
    for v in sorted(bound):
        s.write('  rulesets { vnic_id: "vm-%d-eth0" rules { rule_num: 1 policy_id: "bench" '
                'rule_id: "udp-svc" sources { any: true } destinations { address_set_ids: "g:svc" } '
                'services { protocol: 17 destination_ports { first: 53 } destination_ports { first: 80 } '
                'destination_ports { first: 443 } destination_ports { first: 5432 } } '
                'direction: DIRECTION_OUT action: ACTION_ALLOW stateful: true } '
                'default_rule { action: ACTION_DROP } }\n' % v)
    s.write('}\n')
print('mkdfwpcap: %d frames, %d vNICs, %d source IPs' % (n, len(bound), sum(len(b) for b in bound.values())))
