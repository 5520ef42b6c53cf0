"""BUGGY: a thread-per-connection echo server that leaks one file descriptor per connection.

    python fd_leak_per_conn.py [--port] PORT

Shape: thread_echo.py (blocking sockets, one thread per connection), which
also opens a per-connection file (here /dev/null, standing for an audit log or
a per-session temp file) with os.open().

Bug: that fd is never closed (os.open returns a bare int: no object owns it,
so nothing ever closes it). The socket itself is handled correctly. The fd
count grows by one with every connection and never comes back. Property that
must catch it: cleanup. SIGTERM: exit 0.
"""

import os
import socket

from threaded import serve_forever


def serve(conn: socket.socket) -> None:
    audit = os.open("/dev/null", os.O_WRONLY)  # BUG: never os.close(audit)
    with conn:
        try:
            while data := conn.recv(65536):
                os.write(audit, b"%d bytes\n" % len(data))
                conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass


if __name__ == "__main__":
    serve_forever(serve)
