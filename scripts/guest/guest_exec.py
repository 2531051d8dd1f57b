#!/usr/bin/env python3
"""Runs a command in the test guest's serial-console shell.

  guest_exec.py SOCK CMD [--timeout S] [--connect-timeout S]

SOCK is the unix socket of the guest's ttyS0 (libvirt <serial type='unix'>
<source mode='bind' path='SOCK'/>: QEMU listens, we connect). Prints CMD's
output (stdout and stderr merged, as on a tty; CR removed) and exits with
CMD's exit code; 124 when CMD did not finish within --timeout (it is then
interrupted with ^C), 125 when the console or shell could not be reached.

Only one client at a time: QEMU serves one connection, a second waits in the
listen backlog until the first closes. Keep CMD short (the tty's line
discipline limits a line to 4095 bytes); CMD's stdin is /dev/null.
Python 3 stdlib only.
"""
import argparse
import os
import re
import socket
import sys
import time

# A shell prompt at the end of what was read (ash may append a terminal query).
PROMPT = re.compile(rb"(dfw-guest# |[#$] )(\x1b\[[0-9;?]*[A-Za-z])*$")


class Console:
    def __init__(self, path, connect_timeout):
        deadline = time.monotonic() + connect_timeout
        while True:
            try:
                self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.s.connect(path)
                break
            except OSError as e:
                self.s.close()
                if time.monotonic() >= deadline:
                    raise ConnectionError(f"cannot connect to {path}: {e}") from e
                time.sleep(0.2)
        self.buf = b""

    def send(self, data):
        self.s.sendall(data)

    def read_until(self, pred, deadline):
        """Reads until pred(buf) is truthy; returns its value, None on timeout."""
        while True:
            r = pred(self.buf)
            if r:
                return r
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.s.settimeout(min(left, 0.5))
            try:
                chunk = self.s.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                raise ConnectionError("console closed")
            self.buf += chunk


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sock")
    ap.add_argument("cmd")
    ap.add_argument("--timeout", type=float, default=30.0,
                    help="seconds for CMD to finish (default 30)")
    ap.add_argument("--connect-timeout", type=float, default=30.0,
                    help="seconds to reach the socket and the shell prompt (default 30)")
    a = ap.parse_args()

    try:
        con = Console(a.sock, a.connect_timeout)
    except ConnectionError as e:
        print(f"guest_exec: {e}", file=sys.stderr)
        return 125

    # First contact: interrupt/clear what a previous client left, then poke with newlines
    # until a prompt shows up (the shell may still be starting).
    deadline = time.monotonic() + a.connect_timeout
    got = None
    try:
        con.send(b"\x03\x15\n")  # ^C: a command left running by a killed client; ^U: a half-typed line
        while got is None and time.monotonic() < deadline:
            got = con.read_until(lambda b: PROMPT.search(b) is not None or None,
                                 min(deadline, time.monotonic() + 1.0))
            if got is None:
                con.send(b"\n")
    except ConnectionError as e:
        print(f"guest_exec: {e}", file=sys.stderr)
        return 125
    if got is None:
        print("guest_exec: no shell prompt on the console", file=sys.stderr)
        return 125
    # Let the newline pokes settle, then drop what we saw so far.
    con.read_until(lambda b: None, time.monotonic() + 0.2)
    con.buf = b""

    tag = f"{os.getpid()}x{time.time_ns() % 10**9}"
    # The typed line never contains the markers as printed: BEGIN is split by
    # quotes, END carries $? instead of digits.
    line = (f"echo \"__DFW_B_\"'{tag}'\"__\"; ( {a.cmd} ) </dev/null 2>&1; "
            f"echo \"__DFW_E_{tag}_$?__\"\n")
    begin = f"__DFW_B_{tag}__\n".encode()
    end = re.compile(rf"__DFW_E_{tag}_(\d+)__".encode())

    def done(b):
        b = b.replace(b"\r", b"")
        i = b.find(begin)
        if i < 0:
            return None
        m = end.search(b, i + len(begin))
        if not m:
            return None
        return (b[i + len(begin):m.start()], int(m.group(1)))

    try:
        con.send(line.encode())
        r = con.read_until(done, time.monotonic() + a.timeout)
    except ConnectionError as e:
        print(f"guest_exec: {e}", file=sys.stderr)
        return 125
    if r is None:
        try:
            con.send(b"\x03")
        except OSError:
            pass
        b = con.buf.replace(b"\r", b"")
        i = b.find(begin)
        if i >= 0:
            sys.stdout.buffer.write(b[i + len(begin):])
        print(f"guest_exec: timeout after {a.timeout}s: {a.cmd}", file=sys.stderr)
        return 124
    out, rc = r
    sys.stdout.buffer.write(out)
    sys.stdout.flush()
    return rc


if __name__ == "__main__":
    sys.exit(main())
