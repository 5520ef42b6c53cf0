"""A CORRECT asyncio Protocol echo server, in the shape of the asyncio docs' "TCP Echo
Server" protocol example (``class EchoServerProtocol(asyncio.Protocol)`` with
``loop.create_server``).

    python asyncio_protocol_echo.py [--port] PORT

The docs' example decodes the data as text (fails on non-UTF-8 bytes) and closes
the transport after the first ``data_received``: a one-shot demo. This keeps its
shape (``data_received`` -> ``transport.write(data)``) and adds what a real
Protocol echo server needs: flow control (``pause_writing`` -> stop reading,
``resume_writing`` -> read again; the transport's default high-water mark is
64 KiB) and ``eof_received`` returning False, so the transport closes itself
once the pending echo is flushed (our FIN after the last byte). SIGTERM: exit 0.
"""

import asyncio
import sys

from aio import serve_until_signalled


class EchoServerProtocol(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def eof_received(self) -> bool:
        return False  # close once the write buffer is flushed

    def pause_writing(self) -> None:
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        if not self.transport.is_closing():
            self.transport.resume_reading()


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(EchoServerProtocol, "127.0.0.1", port)
    await serve_until_signalled(server)


if __name__ == "__main__":
    asyncio.run(main(int(next(a for a in sys.argv[1:] if a != "--port"))))
