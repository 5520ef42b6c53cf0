"""The network lab: private namespaces, small buffers, captures, wire verdicts, forged RSTs.

Each experiment runs in a subprocess (tests/programs/lab.py): entering a
namespace moves the whole process, and a pytest worker must stay where its
other tests' servers are.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.drive.netns import CHILD_EHASH_ENTRIES

LAB = Path(__file__).parent / "programs" / "lab.py"
pytestmark = pytest.mark.netns

# Without CAP_SYS_ADMIN unshare(CLONE_NEWNET) is refused: how the fallback is tested.
DROP_SYS_ADMIN = ["setpriv", "--inh-caps=-sys_admin", "--bounding-set=-sys_admin"]


def lab(*args: str, prefix: list[str] | None = None) -> dict[str, Any]:
    result = subprocess.run(
        [*(prefix or []), sys.executable, str(LAB), *args], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def needs_namespaces() -> None:
    if os.geteuid() != 0:
        pytest.skip("creating network namespaces needs root here")


def test_the_small_buffers_really_apply_in_the_namespace() -> None:
    needs_namespaces()
    child_ehash = Path("/proc/sys/net/ipv4/tcp_child_ehash_entries")
    host_before = child_ehash.read_text() if child_ehash.exists() else None
    got = lab("buffers")
    if host_before is not None:
        # A table of its own (a dump of the shared one walks 262,144 buckets), set up from
        # a throw-away namespace: the host's setting is untouched.
        assert got["lab_ehash"] == CHILD_EHASH_ENTRIES, got
        assert got["lab_max_tw"] == CHILD_EHASH_ENTRIES // 2, got  # what keeps every dump short
        assert child_ehash.read_text() == host_before
    assert got["private"] is True
    assert got["lab_wmem"] == [4096, 8192, 16384]
    assert got["lab_rmem"] == [4096, 8192, 16384]
    # With 4096 8192 16384 a non-blocking send hits EAGAIN after a few tens of KiB...
    assert got["lab_eagain"] < 128 * 1024, got
    # ...where the host's defaults take megabytes.
    assert got["host_eagain"] > 8 * got["lab_eagain"], got


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux) to drop a capability")
def test_without_permission_it_falls_back_to_the_host_and_says_why() -> None:
    needs_namespaces()
    got = lab("fallback", prefix=DROP_SYS_ADMIN)
    assert got["private"] is False
    assert "unshare(CLONE_NEWNET) failed: Operation not permitted" in got["note"]


# A container with CAP_SYS_ADMIN but /proc/sys mounted read-only (Docker without --privileged).
READ_ONLY_SYSCTL = [
    "unshare",
    "--mount",
    "sh",
    "-c",
    'mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && exec "$0" "$@"',
]


def test_a_namespace_that_cannot_be_set_up_falls_back_to_the_host_and_says_why() -> None:
    needs_namespaces()
    got = lab("fallback", prefix=READ_ONLY_SYSCTL)
    assert got["private"] is False
    assert "tcp_wmem" in got["note"] and "read-only" in got["note"].lower(), got
    assert got["home"] is True, "the process must be back in the host's namespace"


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux) to drop a capability")
def test_cli_netns_explicitly_without_permission_is_a_clear_error(tmp_path: Path) -> None:
    needs_namespaces()
    result = subprocess.run(
        [*DROP_SYS_ADMIN, sys.executable, "-m", "harness.cli", "check", "--netns", "--max-examples", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "--netns was given but unshare(CLONE_NEWNET) failed" in result.stderr


def test_a_capture_of_a_known_exchange_has_syn_data_fin_and_no_duplicates(tmp_path: Path) -> None:
    needs_namespaces()
    from scapy.layers.inet import TCP
    from scapy.utils import rdpcap

    pcap = tmp_path / "known.pcap"
    got = lab("capture", str(pcap))
    assert got["violations"] == []
    packets = [p for p in rdpcap(str(pcap)) if TCP in p]
    assert len(packets) == got["packets"]
    ports = {p[TCP].sport for p in packets if int(p[TCP].flags) == 0x02}  # a client's SYN
    # The script's connection and the checker's probe connection, each with one SYN.
    assert len(ports) == 2
    keys = [
        (p[TCP].sport, p[TCP].dport, p[TCP].seq, p[TCP].ack, int(p[TCP].flags), len(p[TCP].payload))
        for p in packets
    ]
    assert len(keys) == len(set(keys)), "loopback's outgoing copies must be dropped"
    payloads = [bytes(p[TCP].payload) for p in packets if len(p[TCP].payload)]
    assert payloads.count(b"hello, wire") == 2  # sent once, echoed once
    fins = [p for p in packets if int(p[TCP].flags) & 0x01]
    assert len(fins) >= 4  # both sides of both connections close with FIN
    assert not [p for p in packets if int(p[TCP].flags) & 0x04], "no RST in a graceful exchange"
    if shutil.which("tcpdump"):
        read = subprocess.run(["tcpdump", "-nr", str(pcap)], capture_output=True, text=True, timeout=30)
        assert read.returncode == 0, read.stderr
        assert len(read.stdout.splitlines()) == len(packets)


def test_a_server_that_closes_with_linger0_after_half_close_violates_graceful_fin(tmp_path: Path) -> None:
    needs_namespaces()
    got = lab("linger0", str(tmp_path / "linger0.pcap"))
    names = [name for name, _ in got["violations"]]
    assert "graceful-fin" in names, got
    assert any("ended the connection with RST instead of FIN" in text for _, text in got["violations"])


def test_an_injected_rst_is_seen_by_the_server() -> None:
    needs_namespaces()
    got = lab("injected-reset")
    assert got["evidence"] == ["RST injected toward the server"]
    assert got["with_connection"] == got["baseline"] + 1
    # The server closed its fd although our socket never sent FIN or RST itself.
    assert got["client_socket_open"] is True
    assert got["after"] == got["baseline"], got


def test_a_half_close_with_a_tail_sends_the_bytes_and_the_fin_in_one_segment(tmp_path: Path) -> None:
    """The edge-triggered reader that reads once per event never sees that EOF; the reference does."""
    needs_namespaces()
    got = lab("piggyback", str(tmp_path / "piggyback.pcap"))
    assert got["fin_with_data"], got
    assert got["reference"] == [], got
    assert "half-close" in got["et_no_drain"], got
