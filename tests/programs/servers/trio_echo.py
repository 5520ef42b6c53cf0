"""A CORRECT trio echo server: the echo server of trio's tutorial.

    python trio_echo.py [--port] PORT

As in the tutorial (docs "Tutorial: an echo server"): ``trio.serve_tcp`` runs
``echo_server`` per connection, which echoes with ``async for data in
server_stream: await server_stream.send_all(data)``; when the handler returns
(EOF), ``serve_listeners`` closes the stream (our FIN). Changes from the docs:
bind 127.0.0.1 and the port from the command line, no print per chunk, and
SIGTERM cancels the server so the process exits 0. Trio itself pauses
accepting for 100 ms on EMFILE.
"""

import signal
import sys
from functools import partial
from itertools import count

import trio

CONNECTION_COUNTER = count()


async def echo_server(server_stream: trio.SocketStream) -> None:
    ident = next(CONNECTION_COUNTER)
    try:
        async for data in server_stream:
            await server_stream.send_all(data)
    except Exception as exc:
        # As in the tutorial: a crashed handler is printed, the server goes on.
        print(f"echo_server {ident}: crashed: {exc!r}", flush=True)


async def main(port: int) -> None:
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            nursery.start_soon(partial(trio.serve_tcp, echo_server, port, host="127.0.0.1"))
            print(f"LISTENING 127.0.0.1:{port}", flush=True)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


if __name__ == "__main__":
    trio.run(main, int(next(a for a in sys.argv[1:] if a != "--port")))
