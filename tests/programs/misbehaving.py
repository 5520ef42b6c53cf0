"""Small servers that misbehave in the ways the harness's process control must survive.

    python tests/programs/misbehaving.py KIND [--port P]

KIND: never-ready (runs, never listens), exits-at-once (one line on stderr,
exit 3), ignores-sigterm (an echo server that ignores SIGTERM), floods-stdout
(an echo server that prints without pause), forking (an echo server that
forks a child per connection, like socat's fork option), timer-echo (a correct
epoll echo server that acts on each event only TIMER_DELAY later, woken by its
epoll_wait timeout: slow, never stuck), swallows (echoes its first connection, then
accepts and reads everything, echoes nothing, and sleeps in epoll_wait with no timeout).
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import socket
import sys
import threading
import time


def echo_forever(conn: socket.socket) -> None:
    with conn:
        while data := conn.recv(65536):
            conn.sendall(data)


def listen(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    print(f"LISTENING 127.0.0.1:{sock.getsockname()[1]}", flush=True)
    return sock


TIMER_DELAY = 0.3


def timer_echo(sock: socket.socket) -> None:
    """Echo each chunk, and close after EOF, TIMER_DELAY after it came; sleep in epoll_wait with a timeout."""
    ep = select.epoll()
    ep.register(sock.fileno(), select.EPOLLIN)
    conns: dict[int, socket.socket] = {}
    due: list[tuple[float, int, bytes | None]] = []  # (when, fd, bytes to echo or None: close)
    while True:
        timeout = max(0.0, min(when for when, _, _ in due) - time.monotonic()) if due else -1
        for fd, _ in ep.poll(timeout):
            if fd == sock.fileno():
                conn, _ = sock.accept()
                conns[conn.fileno()] = conn
                ep.register(conn.fileno(), select.EPOLLIN)
                continue
            data = conns[fd].recv(65536)
            if not data:
                ep.unregister(fd)
            due.append((time.monotonic() + TIMER_DELAY, fd, data or None))
        now = time.monotonic()
        for item in [item for item in due if item[0] <= now]:
            due.remove(item)
            _, fd, data = item
            if data is None:
                conns.pop(fd).close()
            else:
                conns[fd].sendall(data)  # small test payloads: a blocking send is fine


def threaded_echo(sock: socket.socket) -> None:
    while True:
        conn, _ = sock.accept()
        threading.Thread(target=echo_forever, args=(conn,), daemon=True).start()


def swallow(sock: socket.socket) -> None:
    """Echo the first connection (a harness's warm-up), then read everything and echo nothing."""
    first, _ = sock.accept()
    echo_forever(first)
    ep = select.epoll()
    ep.register(sock.fileno(), select.EPOLLIN)
    conns: dict[int, socket.socket] = {}
    while True:
        for fd, _ in ep.poll():
            if fd == sock.fileno():
                conn, _ = sock.accept()
                conn.setblocking(False)
                conns[conn.fileno()] = conn
                ep.register(conn.fileno(), select.EPOLLIN)
            elif not conns[fd].recv(65536):
                ep.unregister(fd)
                conns.pop(fd).close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    if args.kind == "never-ready":
        time.sleep(3600)
    elif args.kind == "exits-at-once":
        print("fatal: cannot open /etc/echo.conf", file=sys.stderr)
        sys.exit(3)
    elif args.kind == "ignores-sigterm":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        threaded_echo(listen(args.port))
    elif args.kind == "floods-stdout":
        sock = listen(args.port)
        threading.Thread(target=threaded_echo, args=(sock,), daemon=True).start()
        line = "x" * 1000 + "\n"
        while True:
            sys.stdout.write(line)
    elif args.kind == "slow-start":
        time.sleep(2.5)  # a JVM warming up, a build step: listening comes late, then all is well
        reference = [sys.executable, "-m", "server_under_test", "--port", str(args.port)]
        os.execv(sys.executable, reference)
    elif args.kind == "timer-echo":
        timer_echo(listen(args.port))
    elif args.kind == "swallows":
        swallow(listen(args.port))
    elif args.kind == "forking":
        sock = listen(args.port)
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)
        while True:
            conn, _ = sock.accept()
            if os.fork() == 0:
                sock.close()
                signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a child that outlives its parent's TERM
                echo_forever(conn)
                os._exit(0)
            conn.close()
    else:
        sys.exit(f"unknown kind {args.kind!r}")


if __name__ == "__main__":
    main()
