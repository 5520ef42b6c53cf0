"""Baseline: the same asyncio Protocol echo server, on uvloop (libuv).

python -m bench.echo_servers.uvloop_echo --port 0
"""

from __future__ import annotations

import sys

import uvloop

from bench.echo_servers.common import main

if __name__ == "__main__":
    sys.exit(
        main(
            "python -m bench.echo_servers.uvloop_echo",
            "uvloop Protocol echo server (benchmark baseline).",
            uvloop.new_event_loop,
        )
    )
