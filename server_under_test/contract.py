"""The command-line contract shared by the reference server and every mutant.

The harness, the benchmarks and the mutation self-test all start servers the
same way, so the contract lives in one place:

    python -m server_under_test [--host 127.0.0.1] [--port 0] [--mode lt|et]
                                [--max-connections N]

* ``--port 0`` takes an ephemeral port;
* once the listener accepts connections the server prints exactly one line,
  ``LISTENING <host>:<port>`` (IPv6 hosts in brackets), and flushes stdout;
* SIGTERM or SIGINT closes everything and exits 0;
* a bad argument prints one line on stderr and exits 2;
* a port that cannot be bound prints one line on stderr and exits 1.
"""

from __future__ import annotations

import argparse
import errno
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn, Protocol

EXIT_OK = 0
EXIT_CANNOT_LISTEN = 1
EXIT_USAGE = 2

# A listen backlog as deep as the kernel allows: bursts of connects must queue
# rather than be dropped (a dropped SYN costs the client a one-second retry).
LISTEN_BACKLOG = socket.SOMAXCONN


@dataclass(frozen=True)
class ServerOptions:
    host: str
    port: int
    mode: str  # "lt" (level-triggered) or "et" (edge-triggered)
    max_connections: int | None


class EchoServer(Protocol):
    """What :func:`run` needs of a server: a loop and a way to stop it."""

    def serve_forever(self) -> None: ...

    def request_stop(self) -> None: ...


class _OneLineArgumentParser(argparse.ArgumentParser):
    """argparse prints the whole usage before the error; the contract wants one line."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port must be an integer, not {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be in 0..65535, not {value}")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {value}")
    return value


def parse_options(prog: str, description: str, argv: list[str] | None = None) -> ServerOptions:
    parser = _OneLineArgumentParser(prog=prog, description=description)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=_port, default=0, help="port to bind; 0 picks a free one (default 0)")
    parser.add_argument(
        "--mode",
        choices=("lt", "et"),
        default="lt",
        help="level-triggered (lt, default) or edge-triggered (et) epoll",
    )
    parser.add_argument(
        "--max-connections",
        type=_positive,
        default=None,
        metavar="N",
        help="stop accepting while N connections are open (default: no limit but RLIMIT_NOFILE)",
    )
    ns = parser.parse_args(argv)
    return ServerOptions(host=ns.host, port=ns.port, mode=ns.mode, max_connections=ns.max_connections)


def bind_listener(host: str, port: int) -> socket.socket:
    """A non-blocking listening socket; raises OSError with the kernel's reason."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        # SO_REUSEADDR lets a restarted server bind while old connections sit in
        # TIME_WAIT; on Linux it does not let two listeners share a port.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(LISTEN_BACKLOG)
        listener.setblocking(False)
    except BaseException:
        listener.close()
        raise
    return listener


def format_address(sockname: tuple[str, int] | tuple[str, int, int, int]) -> str:
    host, port = sockname[0], sockname[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def announce(listener: socket.socket) -> None:
    print(f"LISTENING {format_address(listener.getsockname())}", flush=True)


def run(
    prog: str,
    description: str,
    make_server: Callable[[socket.socket, ServerOptions], EchoServer],
    argv: list[str] | None = None,
) -> int:
    """Parse the contract's arguments, listen, announce, serve until a signal."""
    options = parse_options(prog, description, argv)
    try:
        listener = bind_listener(options.host, options.port)
    except OSError as exc:
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        print(f"{prog}: error: cannot listen on {options.host}:{options.port}: {reason}", file=sys.stderr)
        return EXIT_CANNOT_LISTEN
    server = make_server(listener, options)

    def stop(signum: int, frame: object) -> None:
        server.request_stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    announce(listener)
    server.serve_forever()
    return EXIT_OK
