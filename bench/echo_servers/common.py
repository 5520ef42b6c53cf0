"""An asyncio Protocol echo server, shared by the asyncio and uvloop baselines.

Both baselines differ only in the event loop they run on, so everything else
lives here: the command line is the reference server's own contract
(``server_under_test.contract``: ``--port 0``, ``LISTENING host:port`` on
stdout, exit 0 on SIGTERM/SIGINT), and the echo behaves like the reference's:
the same backpressure water marks, TCP_NODELAY, and on the peer's FIN the
pending echo is flushed before our FIN.

``--mode`` is accepted (the contract requires it) and ignored: asyncio's
selector loop and libuv both drive epoll their own way.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from collections.abc import Callable
from typing import cast

from server_under_test.contract import LISTEN_BACKLOG, announce, bind_listener, parse_options
from server_under_test.reference import HIGH_WATER, LOW_WATER

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


class EchoProtocol(asyncio.Protocol):
    """Writes back whatever arrives; stops reading while the write buffer is full."""

    def __init__(self, connections: set[asyncio.Transport]) -> None:
        self.connections = connections
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        self.connections.add(transport)
        # Same water marks as the reference, so the comparison is like for like:
        # above HIGH_WATER pending bytes pause_writing() fires and we stop reading.
        transport.set_write_buffer_limits(high=HIGH_WATER, low=LOW_WATER)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # asyncio already sets it; uvloop's default has varied between
            # versions. Either way, Nagle would delay echoes split by a
            # partial send by the client's delayed ACK.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def eof_received(self) -> bool:
        # Returning False makes the transport close itself once its write
        # buffer is flushed: the client gets every byte, then our FIN.
        return False

    def pause_writing(self) -> None:
        assert self.transport is not None
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        assert self.transport is not None
        if not self.transport.is_closing():
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.connections.discard(self.transport)


async def serve(listener: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        # add_signal_handler (not signal.signal) works on both loops: uvloop
        # runs inside libuv, where a plain Python handler could be delayed.
        loop.add_signal_handler(signum, stop.set)
    connections: set[asyncio.Transport] = set()
    # create_server() calls listen() again, with backlog=100 unless told: that
    # would drop SYNs in the 10,000-connection row (a one-second retransmit
    # each), so keep the contract's backlog.
    server = await loop.create_server(
        lambda: EchoProtocol(connections), sock=listener, backlog=LISTEN_BACKLOG
    )
    announce(listener)
    try:
        await stop.wait()
    finally:
        server.close()
        for transport in list(connections):
            transport.abort()
        await server.wait_closed()


def main(prog: str, description: str, loop_factory: LoopFactory, argv: list[str] | None = None) -> int:
    options = parse_options(prog, description, argv)
    try:
        listener = bind_listener(options.host, options.port)
    except OSError as exc:
        where = f"{options.host}:{options.port}"
        print(f"{prog}: error: cannot listen on {where}: {exc.strerror}", file=sys.stderr)
        return 1
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(listener))
    return 0
