"""BUGGY: a thread-per-connection echo server that drops the CR of every CR LF.

    python crlf_drop.py [--port] PORT

Shape: thread_echo.py (blocking sockets, one thread per connection), written
by someone who thought of the stream as text lines and "normalised" line
endings on the way through.

Bug: each chunk is echoed as ``data.replace(b"\\r\\n", b"\\n")``: every CR LF
that arrives within one recv() comes back as a bare LF (a pair split across
two recv() calls slips through). Bytes without CR LF are echoed exactly and
nothing is held back, so only byte-dependent scripts see it. Property that
must catch it: echo-exact. EOF, resets and backpressure are handled correctly. SIGTERM: exit 0.
"""

import socket

from threaded import serve_forever


def serve(conn: socket.socket) -> None:
    with conn:
        try:
            while data := conn.recv(65536):
                conn.sendall(data.replace(b"\r\n", b"\n"))  # BUG: the CR is dropped
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass


if __name__ == "__main__":
    serve_forever(serve)
