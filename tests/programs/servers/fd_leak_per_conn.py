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
import signal
import socket
import sys
import threading
import time


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
