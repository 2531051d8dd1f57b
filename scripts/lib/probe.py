#!/usr/bin/env python3
"""Traffic probes for the end-to-end test and the demo (run inside a VM's netns).

  probe.py serve --name N [--tcp PORT]... [--udp PORT]...
      TCP: greets "hello from N", then echoes lines. UDP: echoes datagrams.
  probe.py tcp IP PORT [--timeout S]      connect and read a greeting; exit 0/1
  probe.py udp IP PORT [--timeout S]      send a datagram, wait for the echo; exit 0/1
  probe.py until-tcp IP PORT [--timeout S] [--expect open|closed] [--since-ns T]
      polls every 20 ms until a connection succeeds (or, with closed, fails);
      prints the milliseconds it took, counted from wall-clock time T (ns since
      the epoch, e.g. `date +%s%N` taken before the change) or else from its
      own start; with --epoch it prints the wall-clock time (ns) of the
      success instead, for a poller started before the change; --connect-timeout
      (default 0.2 s) bounds each attempt, so "closed" is seen that much late.
      Exit 1 if it never happened.
  probe.py hold IP PORT --seconds S --status FILE [--echo-timeout S]
      one long-lived TCP connection: a line every 0.2 s, each echo awaited
      (--echo-timeout, default 2 s); FILE gets "ok <n> <longest wait ms>" as
      it goes, "done <n> <longest wait ms>" at the end or "broken <n> <why>";
      exit 0 if it lasted, 1 if it broke.
  probe.py listen-udp PORT --seconds S
      counts the datagrams that reach PORT for S seconds; prints the count.
  probe.py send-udp IP PORT [--count N]
      sends N datagrams (IP may be a broadcast address); no answer awaited.
"""
import argparse
import socket
import sys
import threading
import time


def serve(args):
    def tcp_server(port):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port))
        s.listen(64)
        while True:
            c, _ = s.accept()
            threading.Thread(target=tcp_conn, args=(c,), daemon=True).start()

    def tcp_conn(c):
        try:
            c.sendall(("hello from %s\n" % args.name).encode())
            while True:
                d = c.recv(4096)
                if not d:
                    break
                c.sendall(d)
        except OSError:
            pass
        finally:
            c.close()

    def udp_server(port):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", port))
        while True:
            d, a = s.recvfrom(65536)
            s.sendto(d, a)

    threads = [threading.Thread(target=tcp_server, args=(p,), daemon=True) for p in args.tcp]
    threads += [threading.Thread(target=udp_server, args=(p,), daemon=True) for p in args.udp]
    for t in threads:
        t.start()
    print("serving", args.name, "tcp", args.tcp, "udp", args.udp, flush=True)
    while True:
        time.sleep(3600)


def tcp_once(ip, port, timeout):
    try:
        with socket.create_connection((ip, port), timeout=timeout) as c:
            c.settimeout(timeout)
            return len(c.recv(100)) > 0  # any greeting (the guest's is its own)
    except OSError:
        return False


def udp_once(ip, port, timeout):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.sendto(b"probe", (ip, port))
        d, _ = s.recvfrom(100)
        return d == b"probe"
    except OSError:
        return False
    finally:
        s.close()


def until_tcp(args):
    want_open = args.expect == "open"
    t0 = time.monotonic()
    while time.monotonic() - t0 < args.timeout:
        if tcp_once(args.ip, args.port, args.connect_timeout) == want_open:
            if args.epoch:
                print(time.time_ns())
            elif args.since_ns:
                print("%.0f" % ((time.time_ns() - args.since_ns) / 1e6))
            else:
                print("%.0f" % ((time.monotonic() - t0) * 1000))
            return 0
        time.sleep(0.02)
    print("never")
    return 1


def hold(args):
    n, longest = 0, 0.0
    try:
        c = socket.create_connection((args.ip, args.port), timeout=2)
        c.settimeout(args.echo_timeout)
        greeting = c.recv(100)
        if not greeting.startswith(b"hello"):
            raise OSError("no greeting")
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            msg = b"line %d\n" % n
            sent = time.monotonic()
            c.sendall(msg)
            got = b""
            while len(got) < len(msg):
                d = c.recv(len(msg) - len(got))
                if not d:
                    raise OSError("closed by peer")
                got += d
            n += 1
            longest = max(longest, time.monotonic() - sent)
            with open(args.status, "w") as f:
                f.write("ok %d %d\n" % (n, longest * 1000))
            time.sleep(0.2)
        c.close()
    except OSError as e:
        with open(args.status, "w") as f:
            f.write("broken %d %s\n" % (n, e))
        return 1
    with open(args.status, "w") as f:
        f.write("done %d %d\n" % (n, longest * 1000))
    return 0


def listen_udp(args):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", args.port))
    s.settimeout(0.1)
    n, end = 0, time.monotonic() + args.seconds
    while time.monotonic() < end:
        try:
            s.recvfrom(65536)
            n += 1
        except socket.timeout:
            pass
    print(n)
    return 0


def send_udp(args):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    for i in range(args.count):
        s.sendto(b"probe %d" % i, (args.ip, args.port))
        time.sleep(0.05)
    return 0


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--name", required=True)
    s.add_argument("--tcp", type=int, action="append", default=[])
    s.add_argument("--udp", type=int, action="append", default=[])
    for name in ("tcp", "udp", "until-tcp"):
        q = sub.add_parser(name)
        q.add_argument("ip")
        q.add_argument("port", type=int)
        q.add_argument("--timeout", type=float, default=1.0)
        if name == "until-tcp":
            q.add_argument("--expect", choices=["open", "closed"], default="open")
            q.add_argument("--since-ns", type=int, default=0)
            q.add_argument("--epoch", action="store_true")
            q.add_argument("--connect-timeout", type=float, default=0.2)
    h = sub.add_parser("hold")
    h.add_argument("ip")
    h.add_argument("port", type=int)
    h.add_argument("--seconds", type=float, required=True)
    h.add_argument("--status", required=True)
    h.add_argument("--echo-timeout", type=float, default=2.0)
    lu = sub.add_parser("listen-udp")
    lu.add_argument("port", type=int)
    lu.add_argument("--seconds", type=float, required=True)
    su = sub.add_parser("send-udp")
    su.add_argument("ip")
    su.add_argument("port", type=int)
    su.add_argument("--count", type=int, default=5)
    a = p.parse_args()
    if a.cmd == "serve":
        serve(a)
    elif a.cmd == "tcp":
        return 0 if tcp_once(a.ip, a.port, a.timeout) else 1
    elif a.cmd == "udp":
        return 0 if udp_once(a.ip, a.port, a.timeout) else 1
    elif a.cmd == "until-tcp":
        return until_tcp(a)
    elif a.cmd == "hold":
        return hold(a)
    elif a.cmd == "listen-udp":
        return listen_udp(a)
    elif a.cmd == "send-udp":
        return send_udp(a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
