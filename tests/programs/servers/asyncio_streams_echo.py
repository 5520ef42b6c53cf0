"""A CORRECT asyncio Streams echo server, in the shape of the asyncio docs' "TCP echo
server using streams" (``asyncio.start_server`` + ``handle_echo(reader, writer)``).

    python asyncio_streams_echo.py [--port] PORT

The docs' example reads once (``reader.read(100)``), echoes and closes: a one-shot
demo, not an echo server. This keeps its shape but loops until EOF:
``writer.write(data); await writer.drain()`` (drain() waits while the
transport's write buffer is above its high-water mark, 64 KiB, so a client that
does not read stops us reading it), then ``writer.close(); await
writer.wait_closed()`` after EOF (the buffered echo is flushed, then our FIN).
Errors (a reset) end only that connection. SIGTERM: exit 0.
"""

import asyncio
import sys

from aio import serve_until_signalled


async def handle_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()
        await writer.wait_closed()
    except OSError:
        writer.transport.abort()  # reset by the peer


async def main(port: int) -> None:
    server = await asyncio.start_server(handle_echo, "127.0.0.1", port)
    await serve_until_signalled(server)


if __name__ == "__main__":
    asyncio.run(main(int(next(a for a in sys.argv[1:] if a != "--port"))))
