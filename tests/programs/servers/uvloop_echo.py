"""A CORRECT uvloop echo server: an asyncio Protocol echo with flow control, on uvloop.

    python uvloop_echo.py [--port] PORT [--streams]

The shape of uvloop's own benchmark echo server (examples/bench/echoserver.py,
``--proto``): ``data_received`` -> ``transport.write``, on ``uvloop``'s libuv
event loop. Added, as a real server needs: flow control (``pause_writing`` ->
``pause_reading``, ``resume_writing`` -> ``resume_reading``) and
``eof_received`` returning False (flush, then our FIN). ``--streams`` runs the
Streams variant instead (read / write / drain until EOF). libuv keeps a spare fd
to shed connections on EMFILE. SIGTERM: exit 0.
"""

import asyncio
import sys

import uvloop
from aio import serve_until_signalled


class EchoProtocol(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def eof_received(self) -> bool:
        return False

    def pause_writing(self) -> None:
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        if not self.transport.is_closing():
            self.transport.resume_reading()


async def echo_streams(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()
        await writer.wait_closed()
    except OSError:
        writer.transport.abort()


async def main(port: int, streams: bool) -> None:
    loop = asyncio.get_running_loop()
    if streams:
        server = await asyncio.start_server(echo_streams, "127.0.0.1", port)
    else:
        server = await loop.create_server(EchoProtocol, "127.0.0.1", port)
    await serve_until_signalled(server)


if __name__ == "__main__":
    args = sys.argv[1:]
    uvloop.run(main(int(next(a for a in args if not a.startswith("--"))), "--streams" in args))
