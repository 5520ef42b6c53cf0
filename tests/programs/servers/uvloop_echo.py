"""A CORRECT uvloop echo server: an asyncio Protocol echo with flow control, on uvloop.

    python uvloop_echo.py [--port] PORT [--streams]

The shape of uvloop's own benchmark echo server (examples/bench/echoserver.py,
``--proto``): ``data_received`` -> ``transport.write``, on ``uvloop``'s libuv
event loop. Added, as a real server needs: flow control (``pause_writing`` ->
``pause_reading``, ``resume_writing`` -> ``resume_reading``) and
``eof_received`` returning False (flush, then our FIN). ``--streams`` runs the
Streams variant instead (read / write / drain until EOF). The protocol and the
streams handler are those of asyncio_protocol_echo.py and asyncio_streams_echo.py:
only the event loop differs. libuv keeps a spare fd to shed connections on
EMFILE. SIGTERM: exit 0.
"""

import asyncio
import sys

import uvloop
from aio import serve_until_signalled
from asyncio_protocol_echo import EchoServerProtocol
from asyncio_streams_echo import handle_echo


async def main(port: int, streams: bool) -> None:
    loop = asyncio.get_running_loop()
    if streams:
        server = await asyncio.start_server(handle_echo, "127.0.0.1", port)
    else:
        server = await loop.create_server(EchoServerProtocol, "127.0.0.1", port)
    await serve_until_signalled(server)


if __name__ == "__main__":
    args = sys.argv[1:]
    uvloop.run(main(int(next(a for a in args if not a.startswith("--"))), "--streams" in args))
