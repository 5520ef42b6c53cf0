"""What the asyncio-shaped servers here share: serving until SIGTERM.

``await serve_until_signalled(server)`` prints ``LISTENING host:port`` (the
port really bound, so ``--port 0`` works), serves until SIGTERM or SIGINT,
then closes the server; the program then exits 0.
"""

import asyncio
import signal


async def serve_until_signalled(server: asyncio.AbstractServer) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    host, port = server.sockets[0].getsockname()[:2]  # type: ignore[attr-defined]
    print(f"LISTENING {host}:{port}", flush=True)
    async with server:
        await stop.wait()
