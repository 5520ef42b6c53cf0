"""graceful-fin judges only what the capture really saw.

A capture that lost packets once blamed correct servers (uvloop, asyncio,
Twisted, socat) for a reset: the forged RST and a stretch of the flow were
missing, so the server kernel's RST answering the client's last FIN looked
like the server's own. The pure part (holes in a flow) is tested on plain
segments; the capture's kernel filter and drop counter on real sockets in a
namespace of their own.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.drive.wire import ACK, FIN, RST, SYN, Segment, has_hole, judge_graceful_fin
from tests.test_network_lab import lab, needs_namespaces

C, S = 1000, 5000  # the client's and the server's initial sequence numbers


def handshake_and_100_bytes() -> list[Segment]:
    return [
        Segment(0.0, False, 40000, SYN, C, 0, 64, 0),
        Segment(0.1, True, 40000, SYN | ACK, S, C + 1, 64, 0),
        Segment(0.2, False, 40000, ACK, C + 1, S + 1, 64, 0),
        Segment(0.3, False, 40000, ACK, C + 1, S + 1, 64, 100),
    ]


def flow(*, lose_data: bool = False, forged: bool | None = None) -> list[Segment]:
    """A flow the server ends with RST after the client's FIN; the forged RST before it if asked."""
    c, s = C, S
    segments = [
        *handshake_and_100_bytes(),
        Segment(0.4, True, 40000, ACK, s + 1, c + 101, 64, 100),
        Segment(0.5, False, 40000, ACK, c + 101, s + 101, 64, 300),
    ]
    if lose_data:
        del segments[4]  # the server's 100 bytes never reached the capture
    if forged:
        segments.append(Segment(0.55, False, 40000, RST, c + 401, 0, 0, 0, forged=True))
    segments += [
        Segment(0.6, False, 40000, FIN | ACK, c + 401, s + 101 if not lose_data else s + 201, 64, 0),
        Segment(0.7, True, 40000, RST, s + 101 if not lose_data else s + 201, 0, 0, 0),
    ]
    return segments


def test_a_complete_flow_without_the_forged_rst_is_judged_a_reset() -> None:
    assert not has_hole(flow())
    found = judge_graceful_fin(flow())
    assert [v.property_name for v in found] == ["graceful-fin"]


def test_with_the_forged_rst_seen_the_servers_answer_is_not_its_fault() -> None:
    assert judge_graceful_fin(flow(forged=True)) == []


def test_a_flow_with_a_hole_is_not_judged() -> None:
    lossy = flow(lose_data=True)
    assert has_hole(lossy)
    assert judge_graceful_fin(lossy) == []


def test_probes_and_retransmissions_are_not_holes() -> None:
    segments = flow()
    # A zero-window probe (one below the next sequence number) and a retransmission.
    segments.insert(4, Segment(0.35, False, 40000, ACK, 1000, 5001, 64, 0))
    segments.insert(5, Segment(0.36, False, 40000, ACK, 1001, 5001, 64, 100))
    assert not has_hole(segments)


pytestmark = pytest.mark.netns


def test_a_forged_reset_after_a_flood_is_never_blamed_on_a_correct_server(tmp_path: Path) -> None:
    needs_namespaces()
    got = lab("reset-after-flood", str(tmp_path))
    for run in got["runs"]:
        assert run["violations"] == [], got
        # The evidence that the case happened: the forged RST is in the capture, whole.
        assert run["forged_seen"] == 1 and run["holes"] == 0, got


def test_the_capture_keeps_only_its_servers_port() -> None:
    needs_namespaces()
    got = lab("capture-filter")
    assert got["all_watched"] and not got["other_port_seen"], got
    assert got["packets"] >= 6 and got["dropped"] == 0, got


def test_a_capture_that_overflowed_counts_its_losses() -> None:
    needs_namespaces()
    got = lab("capture-drops")
    assert got["dropped"] > 0, got


def test_the_clients_reset_of_an_echo_it_closed_against_is_not_the_servers_fault() -> None:
    """The client closes with echo still owed; the server flushes it and its FIN; the client resets."""
    c, s = C, S
    segments = [
        *handshake_and_100_bytes(),
        Segment(0.4, False, 40000, FIN | ACK, c + 101, s + 1, 64, 0),  # closed, the echo unread
        Segment(0.5, True, 40000, ACK, s + 1, c + 102, 64, 100),  # the echo it still owed
        Segment(0.5, True, 40000, FIN | ACK, s + 101, c + 102, 64, 0),
        Segment(0.6, False, 40000, RST, c + 102, 0, 0, 0),  # data for a closed socket
    ]
    assert not has_hole(segments)
    assert judge_graceful_fin(segments) == []


def test_a_port_reused_for_a_new_connection_is_judged_as_two_connections() -> None:
    """Loopback reuses a port in TIME_WAIT: the first connection's reset must not excuse the next."""
    first = [*handshake_and_100_bytes(), Segment(0.4, False, 40000, RST, C + 101, 0, 0, 0)]
    again = [
        Segment(0.7, False, 40000, SYN, 9000, 0, 64, 0),
        Segment(0.7, True, 40000, SYN | ACK, 7000, 9001, 64, 0),
        Segment(0.7, False, 40000, ACK, 9001, 7001, 64, 0),
        Segment(0.8, True, 40000, RST, 7001, 0, 0, 0),  # the server resets, unprovoked
    ]
    assert judge_graceful_fin(first) == []
    found = judge_graceful_fin(first + again)
    assert [v.message for v in found] == [
        "client port 40000: the server reset the connection while the client had not"
    ]


def test_a_reset_answering_a_stray_segment_after_the_close_completed_is_not_judged() -> None:
    """Seen on a correct fork-per-connection server: both FINs acknowledged, then a stray ACK
    from the server, the client's TIME_WAIT answers, and the server's kernel (no socket) resets."""
    segments = [
        Segment(0.0, False, 40000, SYN, C, 0, 64, 0),
        Segment(0.0, True, 40000, SYN | ACK, S, C + 1, 64, 0),
        Segment(0.0, False, 40000, ACK, C + 1, S + 1, 64, 0),
        Segment(0.1, False, 40000, FIN | ACK, C + 1, S + 1, 64, 0),
        Segment(0.2, True, 40000, FIN | ACK, S + 1, C + 2, 64, 0),
        Segment(0.2, False, 40000, ACK, C + 2, S + 2, 64, 0),  # the close is complete
        Segment(0.3, True, 40000, ACK, S + 1, C + 2, 64, 0),
        Segment(0.3, False, 40000, ACK, C + 2, S + 2, 64, 0),
        Segment(0.3, True, 40000, RST, S + 2, 0, 0, 0),
    ]
    assert judge_graceful_fin(segments) == []
    # Before the client acknowledged the server's FIN, the same RST aborts the close: judged.
    aborted = [*segments[:5], Segment(0.2, True, 40000, RST, S + 2, 0, 0, 0)]
    assert [v.property_name for v in judge_graceful_fin(aborted)] == ["graceful-fin"]


def test_a_reset_from_a_full_listen_queue_is_left_to_accept_robust() -> None:
    """socat's backlog of 5 under a burst: a SYN retried, data sent, the kernel resets it."""
    refused = [
        Segment(0.0, False, 40000, SYN, C, 0, 64, 0),
        Segment(1.0, False, 40000, SYN, C, 0, 64, 0),  # the first SYN found no room
        Segment(1.0, True, 40000, SYN | ACK, S, C + 1, 64, 0),
        Segment(1.0, False, 40000, ACK, C + 1, S + 1, 64, 0),
        Segment(1.1, False, 40000, ACK, C + 1, S + 1, 64, 100),
        Segment(1.1, True, 40000, RST, S + 1, 0, 0, 0),
    ]
    assert judge_graceful_fin(refused) == []
    # Without the retried handshake the same reset is the server's own: judged.
    accepted_then_reset = [refused[0], *refused[2:]]
    assert [v.property_name for v in judge_graceful_fin(accepted_then_reset)] == ["graceful-fin"]
