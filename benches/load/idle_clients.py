#!/usr/bin/env python3
"""Opens N keep-alive connections to HOST:PORT, sends one GET on each and
reads its answer, then holds every connection open until stdin closes or
HOLD seconds pass. Prints "ready OK/N" once all are open and answered.

usage: idle_clients.py HOST PORT N [HOLD_SECONDS]
"""
import asyncio
import sys


async def one(host, port, path, sem, conns):
    async with sem:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            return False
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Basic Zm9vOmJhcg==\r\n\r\n".encode()
        )
        await writer.drain()
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, OSError):
            writer.close()
            return False
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        if length:
            await reader.readexactly(length)
        ok = head.startswith(b"HTTP/1.1 200")
        conns.append(writer)
        return ok


async def main():
    host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    hold = float(sys.argv[4]) if len(sys.argv) > 4 else 60.0
    sem = asyncio.Semaphore(64)
    conns = []
    results = await asyncio.gather(
        *(one(host, port, "/1/user/-/activities/date/today.json", sem, conns) for _ in range(n))
    )
    print(f"ready {sum(results)}/{n}", flush=True)
    loop = asyncio.get_running_loop()
    stdin_closed = loop.run_in_executor(None, sys.stdin.read)
    try:
        await asyncio.wait_for(stdin_closed, hold)
    except asyncio.TimeoutError:
        pass
    for w in conns:
        w.close()


if __name__ == "__main__":
    asyncio.run(main())
