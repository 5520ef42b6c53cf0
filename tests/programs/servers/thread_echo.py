"""A CORRECT thread-per-connection echo server with blocking sockets.

    python thread_echo.py [--port] PORT

One (daemon) thread per connection: recv, sendall, until EOF; then shutdown
our sending side (FIN after the last byte) and close. A thread blocked in
sendall() on a client that does not read holds up only that client.
accept() failing (EMFILE) is retried after 50 ms, not at once.
SIGTERM: exit 0.
"""

import socket

from threaded import serve_forever


def serve(conn: socket.socket) -> None:
    with conn:
        try:
            while data := conn.recv(65536):
                conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # reset by the peer


if __name__ == "__main__":
    serve_forever(serve)
