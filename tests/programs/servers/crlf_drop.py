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

import signal
import socket
import sys
import threading
import time


def serve(conn: socket.socket) -> None:
    with conn:
        try:
            while data := conn.recv(65536):
                conn.sendall(data.replace(b"\r\n", b"\n"))  # BUG: the CR is dropped
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def main() -> None:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", int(next(a for a in sys.argv[1:] if a != "--port"))))
    listener.listen(128)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"LISTENING 127.0.0.1:{listener.getsockname()[1]}", flush=True)
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            time.sleep(0.05)
            continue
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
