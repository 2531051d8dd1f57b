#!/usr/bin/env python3
"""Splits a dfw pcap (frames with the steering tag) by the worker that owns
each frame's vNIC: local id % N (OwnerWorker in vnic_table.h).

usage: splitpcap.py IN.pcap N OUT_PREFIX   -> OUT_PREFIX0.pcap .. OUT_PREFIX<N-1>.pcap

What a steering that picks the queue by vNIC would give each worker: no frame
needs to be handed to another worker (the scaling benchmark's upper bound).
"""
import struct
import sys


def main():
    src, n, prefix = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    data = open(src, "rb").read()
    outs = [bytearray(data[:24]) for _ in range(n)]
    counts = [0] * n
    off = 24
    while off + 16 <= len(data):
        incl = struct.unpack("<I", data[off + 8:off + 12])[0]
        frame = data[off + 16:off + 16 + incl]
        vid = (frame[14] << 8 | frame[15]) & 0x7FF
        outs[vid % n] += data[off:off + 16 + incl]
        counts[vid % n] += 1
        off += 16 + incl
    for w in range(n):
        with open(f"{prefix}{w}.pcap", "wb") as f:
            f.write(outs[w])
    print("splitpcap: frames per worker", counts)


if __name__ == "__main__":
    main()
