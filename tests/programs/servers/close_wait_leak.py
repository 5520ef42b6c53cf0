"""BUGGY: a thread-per-connection echo server that never closes a socket after the peer's FIN.

    python close_wait_leak.py [--port] PORT

Shape: thread_echo.py (blocking sockets, one thread per connection), with the
connection kept in a registry of open sessions.

Bug: when recv() returns b"" (the peer's FIN), the thread just returns; it
neither shuts down nor closes the socket, and the session registry keeps a
reference, so CPython never closes it either. Every connection the client ends
stays in CLOSE_WAIT and holds an fd forever (and the client never gets our
FIN). Property that must catch it: cleanup (half-close too, for a client that
waits for EOF). A reset connection is closed properly. SIGTERM: exit 0.
"""

import socket

from threaded import serve_forever

sessions: list[socket.socket] = []  # BUG: entries are never removed or closed


def serve(conn: socket.socket) -> None:
    sessions.append(conn)
    try:
        while data := conn.recv(65536):
            conn.sendall(data)
        # BUG: missing conn.close() (and the shutdown before it) after EOF
    except OSError:
        conn.close()


if __name__ == "__main__":
    serve_forever(serve)
