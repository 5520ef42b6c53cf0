"""Echo-server benchmark of issue 2 §4: the reference server against asyncio and uvloop.

    python -m bench.echo_bench            # the full run behind bench/RESULTS.md
    python -m bench.echo_bench --quick    # a smoke run of a few seconds

Compiles bench/loadgen.c into bench/build/, then for every server (reference
lt, reference et, asyncio, uvloop) starts it as a subprocess in its own
process group and measures, with the C load generator:

* requests/s, 10 connections, 64 B / 1 KiB / 64 KiB messages (every echo
  checked byte for byte);
* bulk MB/s, 2 connections streaming 64 KiB writes while reading;
* the time to open 10,000 concurrent connections and get one echo on each.

Method, and why:

* Server and load generator are pinned to different cores (server on CPU 1,
  loadgen on CPU 0). The server is single-threaded and so is loadgen; on a
  two-core machine that gives each its own core, so neither steals the
  other's cycles, and the CPU use of each side, sampled over the measurement
  window, tells which one is saturated. A separate check (run first) compares
  one loadgen process with two against the fastest server.
* Repeats are interleaved (repeat 1 of every server, then repeat 2, ...), so
  a burst of other activity on the machine hits every server alike.
* The machine may be shared (other people's test suites): every run also
  measures the CPU that everything else used meanwhile (``others_cpu``), a
  run during which that exceeded ``--max-others`` cores is redone (at most
  ``--retries`` times), and the report says how many were.
* Interference only ever slows a run down, so the main table is the best of
  the repeats (like ``timeit``); the medians are shown too. Next to
  throughput, the server's CPU time per request (per MB, per connection) is
  reported: it depends far less on how much CPU the scheduler granted.
* Every server is stopped with SIGTERM to its process group, then SIGKILL if
  it has not exited, in a ``finally``: on error, Ctrl-C or SIGTERM alike.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import selectors
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
BUILD_DIR = BENCH_DIR / "build"
LOADGEN_SRC = BENCH_DIR / "loadgen.c"
LOADGEN = BUILD_DIR / "loadgen"

SERVERS: dict[str, list[str]] = {
    "reference lt": [sys.executable, "-m", "server_under_test", "--port", "0", "--mode", "lt"],
    "reference et": [sys.executable, "-m", "server_under_test", "--port", "0", "--mode", "et"],
    "asyncio": [sys.executable, "-m", "bench.echo_servers.asyncio_echo", "--port", "0"],
    "uvloop": [sys.executable, "-m", "bench.echo_servers.uvloop_echo", "--port", "0"],
}
# Not in the default table: the reference with one suggested change (see
# reference_variant.py), for --servers when weighing that suggestion.
EXTRA_SERVERS: dict[str, list[str]] = {
    "variant lt": [
        sys.executable,
        "-m",
        "bench.echo_servers.reference_variant",
        "--port",
        "0",
        "--mode",
        "lt",
    ],
}
ALL_SERVERS = {**SERVERS, **EXTRA_SERVERS}
FASTEST_BASELINE = "uvloop"

SERVER_CPU = 1
LOADGEN_CPU = 0
STARTUP_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
LOADGEN_SATURATED = 0.95
# Headroom over the held connections: listener, epoll, wakeup pair, stdio.
NOFILE_HEADROOM = 1024


@dataclass(frozen=True)
class Workload:
    key: str
    label: str
    mode: str  # loadgen mode: rr, bulk or hold
    conns: int
    size: int
    unit: str  # what the table shows: "req/s", "MB/s" or "s"

    @property
    def cost_unit(self) -> str:
        return {"rr": "µs/request", "bulk": "ms/MB", "hold": "µs/connection"}[self.mode]

    def cost(self, result: dict[str, Any]) -> float:
        """Server CPU time per unit of work, over the measurement window.

        Throughput on a shared machine depends on how much CPU the scheduler
        happens to give the server; CPU time per request much less so, which
        makes it the steadier way to compare two servers' efficiency.
        """
        cpu_seconds = float(result["server_cpu"]) * float(result["elapsed"])
        if self.mode == "bulk":
            return 1e3 * cpu_seconds / max(1e-9, result["bytes"] / 1e6)
        return 1e6 * cpu_seconds / max(1, result["requests"])

    def metric(self, result: dict[str, Any]) -> float:
        if self.mode == "rr":
            return float(result["rps"])
        if self.mode == "bulk":
            return float(result["mb_per_s"])
        return float(result["elapsed"])


@dataclass
class Settings:
    duration: float
    warmup: float
    repeats: int
    hold_conns: int
    hold_window: int
    pin: bool
    quiet_wait: float = 0.0
    max_others: float = float("inf")
    retries: int = 0
    servers: list[str] = field(default_factory=lambda: list(SERVERS))
    workloads: list[Workload] = field(default_factory=list)


def workloads_for(hold_conns: int) -> list[Workload]:
    return [
        Workload("rr64", "req/s, 10 conns, 64 B", "rr", 10, 64, "req/s"),
        Workload("rr1k", "req/s, 10 conns, 1 KiB", "rr", 10, 1024, "req/s"),
        Workload("rr64k", "req/s, 10 conns, 64 KiB", "rr", 10, 65536, "req/s"),
        Workload("bulk", "bulk MB/s, 2 conns, 64 KiB writes", "bulk", 2, 65536, "MB/s"),
        Workload("hold", f"hold {hold_conns:,} conns, 64 B each: seconds", "hold", hold_conns, 64, "s"),
    ]


class BenchError(RuntimeError):
    pass


# -- building ---------------------------------------------------------------------


def compile_loadgen() -> Path:
    """Build loadgen with the machine's gcc unless the binary is newer than the source."""
    BUILD_DIR.mkdir(exist_ok=True)
    if LOADGEN.exists() and LOADGEN.stat().st_mtime >= LOADGEN_SRC.stat().st_mtime:
        return LOADGEN
    cmd = ["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(LOADGEN), str(LOADGEN_SRC)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BenchError(f"compiling loadgen failed:\n{proc.stderr}")
    return LOADGEN


# -- processes --------------------------------------------------------------------


def _child_setup(cpu: int | None, nofile: int) -> Callable[[], None]:
    """A preexec_fn: pin to one core and raise RLIMIT_NOFILE (hard too, if allowed)."""

    def setup() -> None:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = nofile
        if hard != resource.RLIM_INFINITY and hard < want:
            try:
                # Only root may raise the hard limit; otherwise use what there is.
                resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
                return
            except (ValueError, OSError):
                want = hard
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    return setup


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    stderr_path: Path
    exit_code: int | None = None


_live: dict[int, subprocess.Popen[bytes]] = {}  # pgid -> process, for the last-resort cleanup


def _stop_group(proc: subprocess.Popen[bytes]) -> int | None:
    """SIGTERM the process group, SIGKILL it if still there; returns the leader's exit code."""
    pgid = proc.pid  # start_new_session: the server leads its own group
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    try:
        code: int | None = proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        code = None
    # Anything else in the group (there should be nothing) goes too.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    if code is None:
        proc.wait()
    _live.pop(pgid, None)
    return code


@contextlib.contextmanager
def running_server(name: str, settings: Settings) -> Iterator[Server]:
    # stderr goes to a file, not a pipe nobody reads: a chatty server must not block.
    with tempfile.NamedTemporaryFile(
        prefix=f"echo-bench-{name.replace(' ', '-')}-", suffix=".err", delete=False
    ) as stderr_file:
        proc = subprocess.Popen(
            ALL_SERVERS[name],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr_file,
            start_new_session=True,  # its own process group, killed as a whole
            preexec_fn=_child_setup(
                SERVER_CPU if settings.pin else None, settings.hold_conns + NOFILE_HEADROOM
            ),
        )
        _live[proc.pid] = proc
    server = Server(name, proc, 0, Path(stderr_file.name))
    try:
        server.port = _read_port(proc, name)
        yield server
    finally:
        server.exit_code = _stop_group(proc)
        if proc.stdout is not None:
            proc.stdout.close()


def _read_port(proc: subprocess.Popen[bytes], name: str) -> int:
    assert proc.stdout is not None
    deadline = time.monotonic() + STARTUP_TIMEOUT
    line = b""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise BenchError(f"{name}: no LISTENING line within {STARTUP_TIMEOUT:.0f} s")
            chunk = os.read(proc.stdout.fileno(), 256)
            if not chunk:
                raise BenchError(f"{name}: exited with {proc.wait()} before announcing its port")
            line += chunk
    text = line.decode().strip()
    if not text.startswith("LISTENING 127.0.0.1:"):
        raise BenchError(f"{name}: unexpected first line {text!r}")
    return int(text.rsplit(":", 1)[1])


def _cpu_times() -> dict[int, tuple[int, int]]:
    """Per-core (busy, total) jiffies from /proc/stat: softirq work counts as busy."""
    times: dict[int, tuple[int, int]] = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                parts = line.split()
                values = [int(v) for v in parts[1:]]
                idle = values[3] + values[4]  # idle + iowait
                total = sum(values[:8])  # guest time is already in user
                times[int(parts[0][3:])] = (total - idle, total)
    return times


def _busy(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]], cpu: int) -> float:
    if cpu not in before or cpu not in after:
        return float("nan")
    busy = after[cpu][0] - before[cpu][0]
    total = after[cpu][1] - before[cpu][1]
    return busy / total if total else float("nan")


def loadgen_args(
    w: Workload, port: int, server_pid: int, settings: Settings, conns: int | None = None
) -> list[str]:
    args = [
        str(LOADGEN),
        w.mode,
        "--port",
        str(port),
        "--conns",
        str(conns or w.conns),
        "--size",
        str(w.size),
        "--server-pid",
        str(server_pid),
    ]
    if w.mode == "hold":
        args += ["--timeout", "60", "--window", str(settings.hold_window)]
    else:
        args += ["--duration", str(settings.duration), "--warmup", str(settings.warmup)]
    if w.mode == "bulk":
        # A hard cap per connection on top of the time bound: 4 GB/s for the whole run.
        args += ["--max-bytes", str(int(4e9 * (settings.duration + settings.warmup)))]
    return args


def _proc_cpu(pid: int) -> float:
    """utime + stime of a live process, in seconds (fields 14 and 15 of /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _machine_busy() -> float:
    """Busy CPU-seconds of all cores together since boot."""
    return sum(busy for busy, _ in _cpu_times().values()) / CLOCK_TICKS


def run_loadgens(arg_lists: list[list[str]], settings: Settings, server_pid: int) -> list[dict[str, Any]]:
    """Run loadgen processes concurrently (pinned like the single one) and parse their JSON.

    Also measures ``others_cpu``: the cores' busy time during the run that was
    neither the server's nor loadgen's, i.e. whatever else the machine was
    doing. The machine is shared, so every figure carries this with it.
    """
    procs: list[subprocess.Popen[str]] = []
    timeout = settings.warmup + settings.duration + 90
    before = _cpu_times()
    started = time.monotonic()
    machine0, server0, children0 = _machine_busy(), _proc_cpu(server_pid), _children_cpu()
    try:
        for args in arg_lists:
            procs.append(
                subprocess.Popen(
                    args,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    preexec_fn=_child_setup(
                        LOADGEN_CPU if settings.pin else None, settings.hold_conns + NOFILE_HEADROOM
                    ),
                )
            )
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=timeout)
            if not out.strip():
                raise BenchError(f"loadgen printed nothing (exit {proc.returncode}): {err.strip()}")
            result: dict[str, Any] = json.loads(out)
            result["stderr"] = err.strip()
            results.append(result)
    finally:
        for proc in procs:  # only on error or interrupt is any still running
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    after = _cpu_times()
    wall = time.monotonic() - started
    ours = (_proc_cpu(server_pid) - server0) + (_children_cpu() - children0)
    others = max(0.0, (_machine_busy() - machine0 - ours) / wall)
    for result in results:
        result["core_busy_server"] = _busy(before, after, SERVER_CPU)
        result["core_busy_loadgen"] = _busy(before, after, LOADGEN_CPU)
        result["others_cpu"] = others
    return results


def wait_for_quiet(max_wait: float, log: Callable[[str], None]) -> float:
    """Wait (at most max_wait s) until the rest of the machine uses < 0.15 core; returns that load.

    Other people run test suites on this machine; starting a measurement in
    a quiet second does not guarantee a quiet run, but it avoids starting in
    the middle of a burst.
    """
    deadline = time.monotonic() + max_wait
    while True:
        m0, c0, t0 = _machine_busy(), _children_cpu(), time.monotonic()
        time.sleep(1.0)
        load = max(0.0, (_machine_busy() - m0 - (_children_cpu() - c0)) / (time.monotonic() - t0))
        if load < 0.15 or time.monotonic() >= deadline:
            if load >= 0.15:
                log(f"  machine still busy ({load:.2f} cores used by others); measuring anyway")
            return load


# -- the measurements -------------------------------------------------------------


@dataclass
class Cell:
    values: list[float] = field(default_factory=list)
    costs: list[float] = field(default_factory=list)
    discarded: int = 0  # runs thrown away because the machine was busy
    contended: int = 0  # runs kept although it still was (retries exhausted)
    results: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def _describe_failure(r: dict[str, Any]) -> str:
    return (
        f"mismatches={r['mismatches']} conn_errors={r['conn_errors']} unfinished={r['unfinished']} "
        f"connected={r['connected']}/{r['conns']} {r['first_error']}"
    ).strip()


def measure_all(
    settings: Settings, log: Callable[[str], None]
) -> tuple[dict[str, dict[str, Cell]], dict[str, list[int | None]]]:
    cells = {name: {w.key: Cell() for w in settings.workloads} for name in settings.servers}
    exits: dict[str, list[int | None]] = {name: [] for name in settings.servers}
    warm = Workload("warm", "warm-up", "rr", 10, 1024, "req/s")
    warm_settings = Settings(
        duration=min(settings.duration, 0.5),
        warmup=0.1,
        repeats=1,
        hold_conns=settings.hold_conns,
        hold_window=settings.hold_window,
        pin=settings.pin,
    )
    for rep in range(settings.repeats):
        for name in settings.servers:
            if settings.quiet_wait > 0:
                wait_for_quiet(settings.quiet_wait, log)
            with running_server(name, settings) as server:
                # One unrecorded run first: imports, first allocations, the
                # scheduler settling.
                run_loadgens(
                    [loadgen_args(warm, server.port, server.proc.pid, warm_settings)],
                    warm_settings,
                    server.proc.pid,
                )
                for w in settings.workloads:
                    cell = cells[name][w.key]
                    for attempt in range(settings.retries + 1):
                        (r,) = run_loadgens(
                            [loadgen_args(w, server.port, server.proc.pid, settings)],
                            settings,
                            server.proc.pid,
                        )
                        # The machine is shared: a run during which other
                        # processes used more than max_others cores measured
                        # the scheduler, not the server. Retry it, a few times.
                        if r["others_cpu"] <= settings.max_others or not r["ok"]:
                            break
                        if attempt < settings.retries:
                            cell.discarded += 1
                            log(
                                f"  repeat {rep + 1} {name:13s} {w.key:6s} discarded: others used "
                                f"{r['others_cpu']:.2f} cores; retrying"
                            )
                            wait_for_quiet(settings.quiet_wait, log)
                    else:
                        cell.contended += 1  # kept, and counted in the report
                    cell.results.append(r)
                    if r["ok"]:
                        cell.values.append(w.metric(r))
                        cell.costs.append(w.cost(r))
                    else:
                        cell.failures.append(_describe_failure(r))
                    log(
                        f"  repeat {rep + 1} {name:13s} {w.key:6s} {w.metric(r):12.1f} {w.unit:5s} "
                        f"server cpu {r['server_cpu']:.2f} loadgen cpu {r['loadgen_cpu']:.2f} "
                        f"others {r['others_cpu']:.2f}; {w.cost(r):8.2f} {w.cost_unit}"
                        + ("" if r["ok"] else f"  FAILED: {_describe_failure(r)}")
                    )
            exits[name].append(server.exit_code)
            stderr = server.stderr_path.read_text(errors="replace").strip()
            if stderr:
                log(f"  {name} stderr: {stderr[:500]}")
            server.stderr_path.unlink(missing_ok=True)
    return cells, exits


def bottleneck_check(settings: Settings, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """One loadgen with 10 connections against two with 5 each, on the fastest baseline.

    64 B request/response is the row where the client's per-request cost is
    largest relative to the server's; if a second client process does not
    raise the total, the single loadgen was not what limited the rate.
    """
    w = workloads_for(settings.hold_conns)[0]
    rows = []
    with running_server(FASTEST_BASELINE, settings) as server:
        run_loadgens([loadgen_args(w, server.port, server.proc.pid, settings)], settings, server.proc.pid)
        for rep in range(settings.repeats):
            for procs in (1, 2):
                conns = w.conns // procs
                results = run_loadgens(
                    [loadgen_args(w, server.port, server.proc.pid, settings, conns) for _ in range(procs)],
                    settings,
                    server.proc.pid,
                )
                row = {
                    "processes": procs,
                    "rps": sum(r["rps"] for r in results),
                    "ok": all(r["ok"] for r in results),
                    "server_cpu": results[0]["server_cpu"],
                    "loadgen_cpu": sum(r["loadgen_cpu"] for r in results),
                    "core_busy_server": results[0]["core_busy_server"],
                    "core_busy_loadgen": results[0]["core_busy_loadgen"],
                    "others_cpu": results[0]["others_cpu"],
                    "cost": w.cost(results[0]) if procs == 1 else float("nan"),
                    "repeat": rep + 1,
                }
                rows.append(row)
                log(
                    f"  check repeat {rep + 1}: {procs} loadgen process(es): {row['rps']:.0f} req/s, "
                    f"server cpu {row['server_cpu']:.2f}, loadgen cpu {row['loadgen_cpu']:.2f}, "
                    f"core {SERVER_CPU} busy {row['core_busy_server']:.2f}, "
                    f"core {LOADGEN_CPU} busy {row['core_busy_loadgen']:.2f}, others {row['others_cpu']:.2f}"
                )
    return rows


# -- the report -------------------------------------------------------------------


def _fmt(value: float, unit: str) -> str:
    if unit in ("req/s", "MB/s"):
        return f"{value:,.0f}"
    if unit == "s":
        return f"{value:.3f}"
    return f"{value:.2f}"


def _summary_table(
    settings: Settings,
    cells: dict[str, dict[str, Cell]],
    pick: Callable[[Cell], list[float]],
    unit_of: Callable[[Workload], str],
    ratio_note: str,
    summarise: Callable[[list[float]], float] = statistics.median,
) -> list[str]:
    """Rows of workloads, one summary per server, and each reference mode ÷ the fastest baseline."""
    names = list(cells)
    refs = [n for n in names if n.startswith(("reference", "variant"))]
    lines = [
        "| workload | unit | "
        + " | ".join(names)
        + " | "
        + " | ".join(f"{r} ÷ {FASTEST_BASELINE}" for r in refs)
        + " |",
        "|" + "---|" * (len(names) + len(refs) + 2),
    ]
    for w in settings.workloads:
        unit = unit_of(w)
        row = [w.label, unit]
        medians: dict[str, float] = {}
        for name in names:
            cell = cells[name][w.key]
            values = pick(cell)
            if values:
                medians[name] = summarise(values)
            text = _fmt(medians[name], unit) if values else "n/a"
            if cell.failures:
                text += f" ({len(cell.failures)}/{len(cell.results)} runs FAILED)"
            row.append(text)
        base = medians.get(FASTEST_BASELINE)
        for ref in refs:
            row.append(f"{medians[ref] / base:.2f}" if ref in medians and base else "n/a")
        lines.append("| " + " | ".join(row) + " |")
    return [*lines, "", ratio_note]


def render(
    settings: Settings,
    cells: dict[str, dict[str, Cell]],
    exits: dict[str, list[int | None]],
    check: list[dict[str, Any]],
) -> str:
    names = list(cells)
    n = settings.repeats

    def best(w: Workload) -> Callable[[list[float]], float]:
        # Other processes can only slow a run down: the best run is the one
        # closest to what the server does on a quiet machine.
        return min if w.unit == "s" else max

    lines = [f"Throughput, best of {n} interleaved runs per cell:", ""]
    for w in settings.workloads:  # one row at a time: best is max for rates, min for times
        table = _summary_table(
            replace(settings, workloads=[w]), cells, lambda c: c.values, lambda w: w.unit, "", best(w)
        )
        lines += table[:-2] if w is settings.workloads[0] else table[2:-2]
    lines += [
        "",
        f"Ratios above 1 mean more than {FASTEST_BASELINE} (in the hold row, seconds: more is worse).",
        "",
        f"Server CPU time per unit of work, lowest of {n} runs (lower is better):",
        "",
    ]
    lines += _summary_table(
        settings,
        cells,
        lambda c: c.costs,
        lambda w: w.cost_unit,
        f"Ratios above 1 mean the reference spends more CPU than {FASTEST_BASELINE} for the same work.",
        min,
    )
    lines += ["", f"Throughput, median of {n} runs (what a run on this shared machine typically got):", ""]
    lines += _summary_table(settings, cells, lambda c: c.values, lambda w: w.unit, "")[:-2]

    lines += ["", "Throughput spread over the runs (min–max):", ""]
    lines += ["| workload | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
    for w in settings.workloads:
        row = [w.label]
        for name in names:
            v = cells[name][w.key].values
            row.append(f"{_fmt(min(v), w.unit)}–{_fmt(max(v), w.unit)}" if v else "n/a")
        lines.append("| " + " | ".join(row) + " |")

    lines += [
        "",
        "CPU during the measurement window, median, in cores: server process / loadgen process / "
        "everything else on the machine (over the whole run):",
        "",
    ]
    lines += ["| workload | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
    for w in settings.workloads:
        row = [w.label]
        for name in names:
            rs = cells[name][w.key].results
            if rs:
                srv = statistics.median(r["server_cpu"] for r in rs)
                lg = statistics.median(r["loadgen_cpu"] for r in rs)
                others = statistics.median(r["others_cpu"] for r in rs)
                row.append(f"{srv:.2f} / {lg:.2f} / {others:.2f}")
            else:
                row.append("n/a")
        lines.append("| " + " | ".join(row) + " |")

    # Where loadgen had no idle time left, the throughput cell is a lower
    # bound for the server (the CPU-cost tables stay valid).
    saturated = [
        f"{name} / {w.key}"
        for name in names
        for w in settings.workloads
        if cells[name][w.key].results
        and statistics.median(r["loadgen_cpu"] for r in cells[name][w.key].results) >= LOADGEN_SATURATED
    ]
    lines += [
        "",
        f"Cells where loadgen used ≥ {LOADGEN_SATURATED:.2f} of its core (median), "
        "i.e. the client side may be "
        "what limits the rate: " + (", ".join(saturated) if saturated else "none"),
    ]
    lines += [
        "",
        "Echo checks: "
        + ", ".join(
            f"{name}: {sum(len(c.values) for c in cells[name].values())} runs verified, "
            f"{sum(len(c.failures) for c in cells[name].values())} failed"
            for name in names
        ),
    ]
    lines.append(
        "Runs redone because other processes were busy (discarded / kept anyway after the last retry): "
        + ", ".join(
            f"{name}: {sum(c.discarded for c in cells[name].values())} / "
            f"{sum(c.contended for c in cells[name].values())}"
            for name in names
        )
    )
    held = {name: [r["requests"] for r in cells[name]["hold"].results] for name in names}
    peak = {name: [r["peak_open"] for r in cells[name]["hold"].results] for name in names}
    lines.append("Hold row, echoes verified per run: " + ", ".join(f"{n}: {v}" for n, v in held.items()))
    lines.append(
        "Hold row, connections open at once (peak): " + ", ".join(f"{n}: {v}" for n, v in peak.items())
    )
    lines.append("Exit codes on SIGTERM: " + ", ".join(f"{n}: {exits[n]}" for n in names))
    for name in names:
        for w in settings.workloads:
            for failure in cells[name][w.key].failures:
                lines.append(f"FAILED {name} {w.key}: {failure}")

    if check:
        lines += [
            "",
            f"Load-generator check ({FASTEST_BASELINE}, 64 B, 10 connections in total, "
            f"{len(check) // 2} runs each, alternating):",
            "",
            "| loadgen processes | req/s, median | req/s, each run | server process CPU | loadgen CPU (sum) "
            "| others' CPU |",
            "|---|---|---|---|---|---|",
        ]
        for procs in (1, 2):
            rows = [r for r in check if r["processes"] == procs and r["ok"]]
            if rows:
                lines.append(
                    f"| {procs} | {statistics.median(r['rps'] for r in rows):,.0f} | "
                    + ", ".join(f"{r['rps']:,.0f}" for r in rows)
                    + f" | {statistics.median(r['server_cpu'] for r in rows):.2f} | "
                    f"{statistics.median(r['loadgen_cpu'] for r in rows):.2f} | "
                    f"{statistics.median(r['others_cpu'] for r in rows):.2f} |"
                )
    return "\n".join(lines)


def machine_description(settings: Settings) -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    gcc = subprocess.run(
        ["gcc", "-dumpfullversion"], capture_output=True, text=True, check=False
    ).stdout.strip()
    try:
        import uvloop

        uvloop_version = uvloop.__version__
    except ImportError:
        uvloop_version = "not installed"
    return (
        f"{os.cpu_count()} cores ({model}), Linux {platform.release()}, Python {platform.python_version()}, "
        f"uvloop {uvloop_version}, gcc {gcc}; load average before the run: "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
        + (
            f"server pinned to CPU {SERVER_CPU}, loadgen to CPU {LOADGEN_CPU}"
            if settings.pin
            else "no pinning"
        )
    )


# -- main ---------------------------------------------------------------------------


def _header(command: str, machine: str, load_after: str, took: float) -> str:
    return (
        f"Command: `{command}`  \nMachine: {machine}  \n"
        f"Load average after: {load_after}; wall time {took:.0f} s\n"
    )


def render_saved(path: Path) -> int:
    """Rebuild the tables from a raw results file (costs are recomputed from the loadgen results)."""
    saved = json.loads(path.read_text())
    opts = saved["settings"]
    settings = Settings(
        duration=opts["duration"],
        warmup=opts["warmup"],
        repeats=opts["repeats"],
        hold_conns=opts["hold"],
        hold_window=opts["window"],
        pin=not opts["no_pin"],
    )
    settings.workloads = workloads_for(settings.hold_conns)
    cells: dict[str, dict[str, Cell]] = {}
    for name, row in saved["cells"].items():
        cells[name] = {}
        for w in settings.workloads:
            raw = row[w.key]
            ok = [r for r in raw["results"] if r["ok"]]
            cells[name][w.key] = Cell(
                values=raw["values"],
                costs=[w.cost(r) for r in ok],
                results=raw["results"],
                failures=raw["failures"],
                discarded=raw.get("discarded", 0),
                contended=raw.get("contended", 0),
            )
    print(
        _header(
            saved["command"], saved["machine"], saved.get("load_after", "?"), saved.get("wall_seconds", 0)
        )
    )
    print(render(settings, cells, saved["exits"], saved["check"]))
    return 0


def _raise_on_sigterm(signum: int, frame: object) -> None:
    # Turn SIGTERM into an exception so the finally blocks stop the servers.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.echo_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: short windows, 1 repeat, 1,000 held")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds measured per run (default 2)")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds before measuring (default 0.5)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats per cell (default 5)")
    parser.add_argument(
        "--hold", type=int, default=10_000, help="connections in the hold row (default 10000)"
    )
    parser.add_argument(
        "--window",
        type=int,
        default=1000,
        help="hold row: connects/echoes outstanding at once (default 1000)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=5.0,
        help="before each server and retry, wait up to this many seconds for an idle machine (default 5)",
    )
    parser.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help=f"comma-separated, from: {', '.join(ALL_SERVERS)} (default: the first four)",
    )
    parser.add_argument(
        "--max-others",
        type=float,
        default=0.3,
        help="redo a run if other processes used more than this many cores meanwhile (default 0.3)",
    )
    parser.add_argument("--retries", type=int, default=2, help="redos per run at most (default 2)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and loadgen to cores")
    parser.add_argument("--skip-check", action="store_true", help="skip the load-generator check")
    parser.add_argument(
        "--json",
        type=Path,
        default=BUILD_DIR / "echo_bench.json",
        help="raw results (default bench/build/echo_bench.json)",
    )
    parser.add_argument(
        "--render",
        type=Path,
        metavar="JSON",
        help="measure nothing: print the tables of an earlier run's raw results",
    )
    ns = parser.parse_args(argv)
    if ns.render is not None:
        return render_saved(ns.render)
    if ns.quick:
        ns.duration, ns.warmup, ns.repeats, ns.hold, ns.quiet_wait, ns.retries = 0.3, 0.1, 1, 1000, 0.0, 0
    settings = Settings(
        duration=ns.duration,
        warmup=ns.warmup,
        repeats=ns.repeats,
        hold_conns=ns.hold,
        hold_window=ns.window,
        pin=not ns.no_pin and (os.cpu_count() or 1) >= 2,
        quiet_wait=ns.quiet_wait,
        max_others=ns.max_others,
        retries=ns.retries,
        servers=[name.strip() for name in ns.servers.split(",")],
    )
    unknown = [name for name in settings.servers if name not in ALL_SERVERS]
    if unknown:
        parser.error(f"unknown server(s): {', '.join(unknown)}")
    settings.workloads = workloads_for(settings.hold_conns)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    try:
        compile_loadgen()
        machine = machine_description(settings)
        log(f"machine: {machine}")
        started = time.monotonic()
        check = [] if ns.quick or ns.skip_check else bottleneck_check(settings, log)
        cells, exits = measure_all(settings, log)
        took = time.monotonic() - started
    except KeyboardInterrupt:
        log("interrupted; servers stopped")
        return 130
    except BenchError as exc:
        log(f"error: {exc}")
        return 1
    finally:
        for proc in list(_live.values()):  # normally empty: running_server cleans up itself
            _stop_group(proc)
    command = shlex.join(["python", "-m", "bench.echo_bench", *(argv if argv is not None else sys.argv[1:])])
    load_after = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(_header(command, machine, load_after, took))
    print(render(settings, cells, exits, check))
    ns.json.parent.mkdir(parents=True, exist_ok=True)
    ns.json.write_text(
        json.dumps(
            {
                "command": command,
                "machine": machine,
                "settings": {k: v for k, v in vars(ns).items() if k != "json"},
                "load_after": load_after,
                "wall_seconds": took,
                "check": check,
                "cells": {
                    n: {
                        k: {
                            "values": c.values,
                            "failures": c.failures,
                            "results": c.results,
                            "discarded": c.discarded,
                            "contended": c.contended,
                        }
                        for k, c in row.items()
                    }
                    for n, row in cells.items()
                },
                "exits": exits,
            },
            indent=1,
            default=str,
        )
    )
    failed = any(c.failures for row in cells.values() for c in row.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
