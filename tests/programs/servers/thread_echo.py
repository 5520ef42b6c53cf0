"""A CORRECT thread-per-connection echo server with blocking sockets.

    python thread_echo.py [--port] PORT

One (daemon) thread per connection: recv, sendall, until EOF; then shutdown
our sending side (FIN after the last byte) and close. A thread blocked in
sendall() on a client that does not read holds up only that client.
accept() failing (EMFILE) is retried after 50 ms, not at once.
SIGTERM: exit 0.
"""

import signal
import socket
import sys
import threading
import time


def port_from(argv: list[str]) -> int:
    args = [a for a in argv if a != "--port"]
    return int(args[0])


def serve(conn: socket.socket) -> None:
    with conn:
        try:
            while data := conn.recv(65536):
                conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # reset by the peer


def main() -> None:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port_from(sys.argv[1:])))
    listener.listen(128)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"LISTENING 127.0.0.1:{listener.getsockname()[1]}", flush=True)
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            time.sleep(0.05)  # EMFILE: the backlog stays full; retrying at once would spin
            continue
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
