#!/usr/bin/env python3
"""A byte relay between network namespaces, for the sandboxes.

  relay.py unix-to-tcp SOCKET HOST:PORT   listen on a unix socket, connect TCP
  relay.py tcp-to-unix HOST:PORT SOCKET   listen on TCP, connect the unix socket

A namespace VM reaches the controller (on the host's loopback) through two
of them: tcp-to-unix inside the VM's namespace, unix-to-tcp on the host; a
unix socket is a file, so it crosses namespaces. TLS passes through
untouched.
"""
import asyncio
import os
import sys


async def pipe(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        try:
            writer.close()
        except OSError:
            pass


def split(hp):
    host, _, port = hp.rpartition(":")
    return host, int(port)


async def main():
    mode, src, dst = sys.argv[1], sys.argv[2], sys.argv[3]

    async def handle(r, w):
        try:
            if mode == "unix-to-tcp":
                r2, w2 = await asyncio.open_connection(*split(dst))
            else:
                r2, w2 = await asyncio.open_unix_connection(dst)
        except OSError:
            w.close()
            return
        await asyncio.gather(pipe(r, w2), pipe(r2, w))

    if mode == "unix-to-tcp":
        if os.path.exists(src):
            os.unlink(src)
        server = await asyncio.start_unix_server(handle, src)
    elif mode == "tcp-to-unix":
        server = await asyncio.start_server(handle, *split(src))
    else:
        sys.exit("relay.py: mode is unix-to-tcp or tcp-to-unix")
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
