"""Servers that listen and then fail a first connection, for the CLI's exit-status contract.

    python tests/programs/exit_status_servers.py KIND --port P

KIND: dies-on-connect (prints a line, then exits with code 7 on its first
connection), aborts-on-connect (prints a line, then kills itself with
SIGABRT), mute (accepts and reads, never echoes), fails-once (an echo server
that closes its FAIL_AT-th connection unanswered, once in the life of the
file named by --marker, whatever the restarts: a violation that never
replays).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading

FAIL_AT = 3  # the warm-up probe is the first connection


def echo(conn: socket.socket) -> None:
    with conn:
        while data := conn.recv(65536):
            conn.sendall(data)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["dies-on-connect", "aborts-on-connect", "mute", "fails-once"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--marker", help="fails-once: a file that records the failure")
    args = parser.parse_args()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(16)
    held = []
    accepted = 0
    while True:
        conn, peer = sock.accept()
        accepted += 1
        if args.kind == "fails-once":
            if accepted == FAIL_AT and not os.path.exists(args.marker):
                open(args.marker, "w").close()
                conn.close()
            else:
                threading.Thread(target=echo, args=(conn,), daemon=True).start()
            continue
        if args.kind == "mute":
            held.append(conn)  # never answered, never closed
            continue
        print(f"fatal: cannot handle client {peer[0]}: no session table", file=sys.stderr, flush=True)
        if args.kind == "aborts-on-connect":
            os.kill(os.getpid(), signal.SIGABRT)
        os._exit(7)


if __name__ == "__main__":
    main()
