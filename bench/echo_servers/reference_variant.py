"""What-if: the reference server with one suggested change, to measure it before proposing it.

    python -m bench.echo_servers.reference_variant --port 0 --mode lt

Level-triggered mode only changes: ``read_ready`` keeps reading while each
``recv`` fills the whole 64 KiB scratch buffer, up to :data:`READ_BUDGET`
reads per event, instead of returning to ``epoll_wait`` after one read. A
short read means the receive queue was empty at that moment, so stopping
there costs nothing; the budget keeps one streaming client from starving
the others. Level-triggered epoll reports whatever is left, so stopping
early can never lose data or an EOF. (This is what libuv does: it reads up
to 32 times per event while reads come back full.)

The reference has since adopted the suggestion (``LT_READS_PER_EVENT``, and
the short-read stop is its own), so the variant only sets the budget, through
the reference's :meth:`~server_under_test.reference.ReferenceServer.read_budget`
hook: change :data:`READ_BUDGET` to weigh another one against the reference.

Edge-triggered mode is the reference's, unchanged. Not a server to ship:
the benchmark uses it only to put a number on the suggestion.
"""

from __future__ import annotations

import socket
import sys

from server_under_test.contract import ServerOptions, run
from server_under_test.reference import ReferenceServer

READ_BUDGET = 4  # 4 x 64 KiB = 256 KiB per event, what asyncio and uvloop read at most


class BatchedReadServer(ReferenceServer):
    def read_budget(self) -> int | None:
        if self.edge_triggered:
            return super().read_budget()  # until EAGAIN
        return READ_BUDGET


def make_server(listener: socket.socket, options: ServerOptions) -> BatchedReadServer:
    return BatchedReadServer(listener, options.mode, options.max_connections)


if __name__ == "__main__":
    sys.exit(
        run(
            "python -m bench.echo_servers.reference_variant",
            "The reference server with batched level-triggered reads (benchmark what-if).",
            make_server,
        )
    )
