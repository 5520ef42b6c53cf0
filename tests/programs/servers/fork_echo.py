"""A CORRECT fork-per-connection echo server (the inetd / `socat ... fork` shape).

    python fork_echo.py [--port] PORT

The parent only accepts: for every connection it forks a child and closes its
copy of the socket. The child echoes with plain blocking I/O until EOF, then
shuts down its sending side (our FIN after the last byte), closes and exits.
The parent reaps children from a SIGCHLD handler. accept() failing (EMFILE)
is retried after 50 ms, not at once. SIGTERM: exit 0 (the parent and any child).
"""

import os
import signal
import socket
import sys
import time


def port_from(argv: list[str]) -> int:
    args = [a for a in argv if a != "--port"]
    return int(args[0])


def child(conn: socket.socket) -> None:
    try:
        while data := conn.recv(65536):
            conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # reset by the peer: nothing more to do
    finally:
        conn.close()
        os._exit(0)


def reap(signum: int, frame: object) -> None:
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def main() -> None:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port_from(sys.argv[1:])))
    listener.listen(128)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    signal.signal(signal.SIGCHLD, reap)
    print(f"LISTENING 127.0.0.1:{listener.getsockname()[1]}", flush=True)
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            time.sleep(0.05)  # EMFILE: the backlog stays full; retrying at once would spin
            continue  # EMFILE, ECONNABORTED: try again on the next connection
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            listener.close()
            child(conn)
        conn.close()


if __name__ == "__main__":
    main()
