"""The accept loop of the thread-per-connection servers here (thread_echo.py and its buggy kin).

``serve_forever(serve)``: listen on 127.0.0.1 at the port given as ``[--port] PORT``
(0: any), print ``LISTENING host:port``, and run ``serve(conn)`` in a daemon
thread per accepted connection. accept() failing (EMFILE) is retried after
50 ms, not at once: the backlog stays full, and retrying at once would spin.
SIGTERM: exit 0.
"""

import signal
import socket
import sys
import threading
import time
from collections.abc import Callable


def port_from(argv: list[str]) -> int:
    args = [a for a in argv if a != "--port"]
    return int(args[0])


def serve_forever(serve: Callable[[socket.socket], None]) -> None:
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
            time.sleep(0.05)
            continue
        threading.Thread(target=serve, args=(conn,), daemon=True).start()
