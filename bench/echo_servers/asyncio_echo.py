"""Baseline: the asyncio Protocol echo server on the standard (epoll selector) loop.

python -m bench.echo_servers.asyncio_echo --port 0
"""

from __future__ import annotations

import asyncio
import sys

from bench.echo_servers.common import main

if __name__ == "__main__":
    sys.exit(
        main(
            "python -m bench.echo_servers.asyncio_echo",
            "asyncio Protocol echo server (benchmark baseline).",
            asyncio.new_event_loop,
        )
    )
