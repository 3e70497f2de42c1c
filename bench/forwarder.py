"""Minimal L4 TCP forwarder: the floor cost of any Python hop.

Theory of operation: every accepted client gets one outbound connection to the target; bytes are
copied both ways with ``transport.write(data)`` straight from ``data_received`` -- no parsing, no
buffering of our own, no streams layer. It exists only as a yardstick for the benchmark: whatever
rwproxy costs above this forwarder is the price of the proxy's own work, not of "being Python".

Invariants: a side whose peer's write buffer is over the high-water mark stops reading (the kernel
then pushes back on the sender); when either side closes, both are closed (pending data is still
flushed by ``transport.close()``). TCP_NODELAY is set on both sockets.

    python bench/forwarder.py --listen 127.0.0.1:6100 --target 127.0.0.1:3306
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket


class Pipe(asyncio.Protocol):
    """One direction's reader; writes whatever it reads into ``peer``'s transport."""

    def __init__(self, peer: Pipe | None = None) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer = peer

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.peer is not None:  # outbound side: link back before the server's first byte arrives
            self.peer.peer = self

    def data_received(self, data: bytes) -> None:
        self.peer.transport.write(data)

    # Our transport's write buffer is full: stop reading from the side that fills it.
    def pause_writing(self) -> None:
        self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


class ClientSide(Pipe):
    """Accepted connection: holds reads until the outbound connection to the target is up."""

    def __init__(self, target: tuple[str, int]) -> None:
        super().__init__()
        self.target = target

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)
        transport.pause_reading()
        self.dialing = asyncio.get_running_loop().create_task(self._dial())  # keep a reference

    async def _dial(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            server, _ = await loop.create_connection(lambda: Pipe(peer=self), *self.target)
        except OSError:
            self.transport.close()
            return
        if self.transport.is_closing():  # client gave up while we were dialling
            server.close()
            return
        self.transport.resume_reading()


def host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


async def serve(listen: tuple[str, int], target: tuple[str, int]) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: ClientSide(target), *listen, backlog=1024)
    stop = loop.create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set_result, None)
    print(f"forwarding {listen[0]}:{listen[1]} -> {target[0]}:{target[1]}", flush=True)
    async with server:
        await stop


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", type=host_port, required=True, metavar="HOST:PORT")
    ap.add_argument("--target", type=host_port, required=True, metavar="HOST:PORT")
    args = ap.parse_args()
    try:
        import uvloop
    except ImportError:  # still honest, just slower; say so
        print("uvloop not installed: using the default asyncio loop", flush=True)
        asyncio.run(serve(args.listen, args.target))
    else:
        uvloop.run(serve(args.listen, args.target))


if __name__ == "__main__":
    main()
