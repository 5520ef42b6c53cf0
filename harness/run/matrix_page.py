"""A matrix for people: ``index.html``, a row per server, a column per property, a page per reproducer.

Static and self-contained: inline CSS, no script, no font, nothing fetched, so
the page works from ``file://`` (an artifact a CI keeps) as from a web server.
Each cell is coloured by its verdict and shows the time to the first finding,
the confirmation (k/n replays), and links to the reproducer (a page that says
the client's steps in plain words: ``reproducers/<server>--<name>.html``), its
packet capture and the server's check log. A cell whose verdict differs from
its expectation is outlined and says what was expected.
"""

from __future__ import annotations

import dataclasses
import html
import json
import shutil
from collections.abc import Iterable
from pathlib import Path

from harness.model.errors import HarnessError
from harness.model.properties import PROPERTIES
from harness.model.scenario import CONTROL_CLIENTS, Scenario
from harness.model.script import (
    AbortConnect,
    BurstConnect,
    Close,
    Connect,
    Flood,
    InjectReset,
    Pause,
    Payload,
    Read,
    ReadToEof,
    Reset,
    Send,
    ShutdownWrite,
    Step,
)
from harness.run.matrix import (
    ERROR,
    FAIL,
    NON_STRICT,
    NOT_EXERCISED,
    PASS,
    SKIPPED,
    UNCONFIRMED,
    VERDICTS,
    Cell,
    MatrixReport,
    ServerResult,
)
from harness.run.report import Reproducer, safe_name

INDEX_HTML = "index.html"

#: The verdict levels each property can give besides pass and fail (Autobahn's "non-strict": legal but
#: impolite behaviour, reported and never a failure). Properties not listed are pass or fail only.
NON_STRICT_CASES: dict[str, str] = {
    "bounded-memory": "the server drops (closes or resets) a client that sends without reading its echo",
    "accept-robust": "a slow accept queue: connects dropped while the listen backlog was full, served on the "
    "client's SYN retry",
}

_STYLE = """
:root { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
        color: #1d1d1f; background: #fff; }
body { margin: 1rem; }
h1 { font-size: 1.5rem; margin: 0 0 .3rem; }
h2 { font-size: 1.15rem; margin: 2rem 0 .5rem; }
p.meta { color: #555; margin: .2rem 0; font-size: .9rem; }
a { color: #0b57d0; }
table.grid { border-collapse: separate; border-spacing: 3px; margin-top: 1rem; }
table.grid th { font-weight: 600; font-size: .8rem; text-align: left; vertical-align: bottom; }
table.grid thead th { max-width: 6rem; padding: .2rem .3rem; word-break: break-word; }
table.grid th.server { min-width: 8rem; max-width: 12rem; vertical-align: top; padding: .4rem .5rem;
                       background: #f3f4f6; border-radius: 4px; }
th.server .notes { font-weight: 400; color: #555; font-size: .7rem; display: block; margin-top: .2rem; }
th.server .links { font-weight: 400; font-size: .75rem; display: block; margin-top: .2rem; }
td.cell { width: 6rem; min-width: 5.2rem; height: 4.2rem; vertical-align: top; padding: .3rem .4rem;
          border-radius: 4px; font-size: .75rem; line-height: 1.25; border: 2px solid transparent; }
td.cell .word { font-weight: 700; font-size: .85rem; display: block; }
td.cell .links a { margin-right: .35rem; }
td.cell .expect { display: block; font-style: italic; }
.v-pass { background: #cdebd3; color: #14532d; }
.v-non-strict { background: #fff1b8; color: #6b4f00; }
.v-fail { background: #f9c9ce; color: #7a1020; }
.v-unconfirmed { background: #ffd9b3; color: #7a3b00; }
.v-not-exercised { background: #e3e5e8; color: #3d434a; }
.v-skipped { background: #f7f7f8; color: #6b7280; border: 2px dashed #c9ccd1 !important; }
.v-error { background: #3b3f45; color: #fff; }
.v-error a { color: #cfe0ff; }
td.cell.mismatch, td.swatch.mismatch { border: 3px solid #1d4ed8 !important; box-shadow: 0 0 0 2px #bfdbfe; }
td.cell.mismatch .expect { font-weight: 700; font-style: normal; color: #1d4ed8; }
.v-error.mismatch .expect { color: #bfdbfe !important; }
.badge { display: inline-block; padding: .1rem .45rem; border-radius: 3px; font-size: .8rem;
         font-weight: 600; }
.summary { margin: .6rem 0; padding: .6rem .8rem; border-radius: 6px; }
.summary.ok { background: #e7f6ea; border: 1px solid #9fd4aa; }
.summary.bad { background: #eef3ff; border: 1px solid #1d4ed8; }
.summary ul { margin: .3rem 0 0 1.2rem; padding: 0; }
table.legend td { padding: .25rem .5rem; font-size: .85rem; vertical-align: top; }
table.legend td.swatch { width: 7rem; border-radius: 4px; font-weight: 700; }
dl.props dt { font-weight: 700; margin-top: .5rem; font-family: ui-monospace, Menlo, Consolas, monospace; }
dl.props dd { margin-left: 1.2rem; }
pre { background: #f6f8fa; padding: .6rem; border-radius: 4px; overflow-x: auto; font-size: .8rem; }
code { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: .85em; }
ol.steps li { margin: .25rem 0; }
table.servers td, table.servers th { padding: .25rem .5rem; font-size: .85rem; text-align: left;
                                     vertical-align: top; border-bottom: 1px solid #e5e7eb; }
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def verdict_class(verdict: str) -> str:
    return "v-" + verdict.replace(" ", "-")


def cell_id(cell: Cell) -> str:
    return f"cell-{_slug(cell.server)}-{cell.property_name}"


def _slug(name: str) -> str:
    return safe_name(name)


# -- the grid ---------------------------------------------------------------------------------------------


def _cell_html(cell: Cell, server: ServerResult) -> str:
    classes = ["cell", verdict_class(cell.verdict)]
    if not cell.matches:
        classes.append("mismatch")
    word = cell.verdict
    parts = [f'<span class="word">{_e(word)}</span>']
    if cell.seconds_to_first is not None:
        parts.append(f'<span class="when">first after {cell.seconds_to_first:.1f} s</span><br>')
    if cell.confirmed:
        parts.append(f'<span class="confirmed">confirmed {_e(cell.confirmed)}</span><br>')
    if cell.verdict in (PASS, NOT_EXERCISED) or (cell.verdict not in (ERROR, SKIPPED) and not cell.findings):
        scripts = "1 script" if cell.examples == 1 else f"{cell.examples} scripts"
        parts.append(f'<span class="examples">{scripts}</span><br>')
    links = []
    if cell.reproducer_page:
        links.append(f'<a class="repro" href="{_e(cell.reproducer_page)}">script</a>')
    if cell.pcap:
        links.append(f'<a class="pcap" href="{_e(cell.pcap)}">pcap</a>')
    if cell.verdict in (FAIL, UNCONFIRMED, NON_STRICT, ERROR) and server.log:
        links.append(f'<a class="log" href="{_e(server.log)}">log</a>')
    if links:
        parts.append(f'<span class="links">{"".join(links)}</span>')
    if not cell.matches:
        parts.append(f'<span class="expect">≠ expected {_e(cell.expected)}</span>')
    elif cell.expected != PASS:
        parts.append(f'<span class="expect">expected {_e(cell.expected)}</span>')
    title = cell.detail or VERDICTS.get(cell.verdict, "")
    return (
        f'<td class="{" ".join(classes)}" id="{_e(cell_id(cell))}" data-server="{_e(cell.server)}" '
        f'data-property="{_e(cell.property_name)}" data-verdict="{_e(cell.verdict)}" '
        f'data-expected="{_e(cell.expected)}" data-matches="{str(cell.matches).lower()}" '
        f'title="{_e(title)}">{"".join(parts)}</td>'
    )


def _row(server: ServerResult) -> str:
    links = []
    if server.log:
        links.append(f'<a href="{_e(server.log)}">check log</a>')
    if server.check_report:
        links.append(f'<a href="{_e(server.check_report)}">report</a>')
    links.append(f'<a href="#server-{_e(server.slug)}">details</a>')
    head = (
        f'<th class="server" scope="row" id="row-{_e(server.slug)}">{_e(server.name)}'
        + (f'<span class="notes">{_e(server.notes)}</span>' if server.notes else "")
        + f'<span class="links">{" · ".join(links)}</span></th>'
    )
    by_property = {cell.property_name: cell for cell in server.cells}
    cells = []
    for prop in PROPERTIES:
        cell = by_property.get(prop)
        if cell is None:
            cells.append(f'<td class="cell {verdict_class(SKIPPED)}" data-verdict="absent">absent</td>')
        else:
            cells.append(_cell_html(cell, server))
    return f'<tr data-server="{_e(server.name)}">{head}{"".join(cells)}</tr>'


def _legend() -> str:
    rows = [
        f'<tr><td class="swatch {verdict_class(v)}">{_e(v)}</td><td>{_e(meaning)}</td></tr>'
        for v, meaning in VERDICTS.items()
    ]
    rows.append(
        '<tr><td class="swatch mismatch v-pass">≠ expected</td><td>outlined: the verdict differs from '
        "the one the servers file expects (unlisted properties are expected to pass); the run fails only "
        "on these. A skipped cell, and an unconfirmed one where pass or fail is expected, count as "
        "matching.</td></tr>"
    )
    return f'<table class="legend">{"".join(rows)}</table>'


def _properties_section() -> str:
    items = []
    for name, text in PROPERTIES.items():
        levels = "pass or fail"
        if name in NON_STRICT_CASES:
            levels = f"pass, fail, or non-strict when {NON_STRICT_CASES[name]}"
        if name == "graceful-fin":
            levels += "; judged on captured packets (skipped without --capture always)"
        items.append(
            f'<dt id="prop-{_e(name)}">{_e(name)}</dt>'
            f"<dd>{_e(text)}.<br><small>Levels: {_e(levels)}.</small></dd>"
        )
    return f'<dl class="props">{"".join(items)}</dl>'


def _servers_section(report: MatrixReport) -> str:
    rows = []
    for s in report.servers:
        status = "did not finish" if s.exit_status is None else f"exit {s.exit_status}"
        extra = ""
        if s.error:
            extra += f"<p><strong>Could not be checked:</strong> {_e(s.error)}</p>"
        if s.last_output:
            extra += f"<p>The server's last output:</p><pre>{_e(s.last_output)}</pre>"
        env = " ".join(f"{k}={v}" for k, v in s.env.items())
        rows.append(
            f'<tr id="server-{_e(s.slug)}"><th>{_e(s.name)}</th><td><code>{_e(s.command)}</code>'
            f"<br><small>cwd {_e(s.cwd)}{(' · env ' + _e(env)) if env else ''}</small>"
            + (f"<br>{_e(s.notes)}" if s.notes else "")
            + f"{extra}</td><td>{s.examples} scripts in {s.seconds:.0f} s, {s.restarts} restarts, {status}"
            + (f"<br><small>{_e(s.network)}</small>" if s.network else "")
            + "</td></tr>"
        )
    return (
        '<table class="servers"><thead><tr><th>server</th><th>command</th><th>run</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _summary(report: MatrixReport) -> str:
    mismatches = report.mismatches
    counts = ", ".join(f"{n} {v}" for v, n in report.counts().items() if n)
    if not mismatches:
        return (
            f'<div class="summary ok" id="summary"><strong>Every cell matches its expectation.</strong> '
            f"{_e(counts)}.</div>"
        )
    items = []
    for server in report.servers:
        if server.error:
            items.append(
                f'<li><a href="#server-{_e(server.slug)}">{_e(server.name)}: every cell is an error: '
                f"{_e(server.error)}</a></li>"
            )
            continue
        items += [f'<li><a href="#{_e(cell_id(c))}">{_e(c.mismatch())}</a></li>' for c in server.mismatches]
    differ = "1 cell differs" if len(mismatches) == 1 else f"{len(mismatches)} cells differ"
    return (
        f'<div class="summary bad" id="summary"><strong>{differ} from the expectation</strong> '
        f"({_e(counts)}):<ul>{''.join(items)}</ul></div>"
    )


def index_html(report: MatrixReport) -> str:
    options = report.options
    bits = [f"created {report.created}", f"harness {report.harness_version}"]
    if options:
        budget, shrink = options.get("budget"), options.get("shrink_budget")
        bits.append(f"budget {budget:g} s per server" if isinstance(budget, int | float) else "")
        bits.append(f"shrink {shrink:g} s" if isinstance(shrink, int | float) else "")
        if options.get("seed") is not None:
            bits.append(f"seed {options.get('seed')}")
        bits.append(f"capture {options.get('capture')}")
    if report.shards:
        bits.append("merged from shards " + ", ".join(report.shards))
    header = "".join(
        f'<th scope="col"><a href="#prop-{_e(p)}" title="{_e(t)}">{_e(p)}</a></th>'
        for p, t in PROPERTIES.items()
    )
    rows = "".join(_row(server) for server in report.servers)
    notes = "".join(f'<p class="meta">{_e(n)}</p>' for n in report.notes)
    meta = " · ".join(b for b in bits if b)
    body = f"""<h1>epoll-harness conformance matrix</h1>
<p class="meta">{len(report.servers)} servers × {len(PROPERTIES)} properties · {_e(meta)}</p>
<p class="meta">servers file: <code>{_e(report.servers_file)}</code></p>
{notes}{_summary(report)}
<table class="grid" id="grid">
<thead><tr><th scope="col">server</th>{header}</tr></thead>
<tbody>{rows}</tbody>
</table>
<h2 id="legend">Legend</h2>
{_legend()}
<h2 id="properties">What each property checks</h2>
{_properties_section()}
<h2 id="servers">Servers</h2>
{_servers_section(report)}
<p class="meta">Reproducers replay with <code>epoll-harness replay servers/NAME/artifacts/repro-….json</code>
run in this folder; each pcap opens in Wireshark or <code>tcpdump -r</code>.</p>"""
    return _page("epoll-harness conformance matrix", body)


# -- reproducers in plain words -----------------------------------------------------------------------


def _bytes(count: int) -> str:
    return f"{count:,} byte{'s' if count != 1 else ''}"


def _payload_words(payload: Payload) -> str:
    head = payload.literal
    if not payload.size:
        shown = repr(head[:48]) + (" …" if len(head) > 48 else "")
        return f"{_bytes(len(head))}: {shown}" if head else "0 bytes"
    if head:
        shown = repr(head[:48]) + (" …" if len(head) > 48 else "")
        return f"{_bytes(len(payload))}: {shown} then {_bytes(payload.size)} of pattern"
    return f"{_bytes(payload.size)} of pattern"


def _sizes(values: tuple[int, ...]) -> str:
    if len(values) > 6:
        return ", ".join(str(v) for v in values[:6]) + f", … ({len(values)} writes)"
    return ", ".join(str(v) for v in values)


def step_words(step: Step) -> str:
    """One step of a client script in plain words."""
    if isinstance(step, Connect):
        words = f"Connection {step.conn} connects"
        if step.rcvbuf is not None:
            words += f", with a receive buffer of {_bytes(step.rcvbuf)} (a slow reader's small window)"
        if not step.nodelay:
            words += ", with Nagle's algorithm on"
        return words + "."
    if isinstance(step, Send):
        words = f"Connection {step.conn} sends {_payload_words(step.payload)}"
        if step.fragments:
            words += f", cut into writes of {_sizes(step.fragments)} bytes (the rest in one last write)"
        if step.delay_ms:
            words += f", {step.delay_ms} ms apart"
        return words + ", reading the echo meanwhile."
    if isinstance(step, Read):
        what = _bytes(step.nbytes) if step.nbytes is not None else "everything still owed"
        words = f"Connection {step.conn} reads {what}"
        if step.chunk:
            words += f", {_bytes(step.chunk)} at a time"
        if step.pace_ms:
            words += f", {step.pace_ms} ms apart"
        return words + "."
    if isinstance(step, ReadToEof):
        words = f"Connection {step.conn} reads until the server closes its side (EOF)"
        if step.chunk:
            words += f", {_bytes(step.chunk)} at a time"
        if step.pace_ms:
            words += f", {step.pace_ms} ms apart"
        return words + "."
    if isinstance(step, Pause):
        return f"Wait {step.ms} ms."
    if isinstance(step, ShutdownWrite):
        if step.payload is not None:
            return (
                f"Connection {step.conn} sends {_payload_words(step.payload)} and half-closes at once: "
                "the bytes and the FIN leave in one segment; it can still read."
            )
        return f"Connection {step.conn} half-closes: shutdown(SHUT_WR) sends FIN; it can still read."
    if isinstance(step, Close):
        return f"Connection {step.conn} closes (with echo left unread the kernel sends RST instead of FIN)."
    if isinstance(step, Reset):
        return f"Connection {step.conn} resets: SO_LINGER 0, then close, sends RST."
    if isinstance(step, AbortConnect):
        return f"Connection {step.conn} connects and resets at once, before the server has accepted it."
    if isinstance(step, Flood):
        return (
            f"Connection {step.conn} sends up to {_bytes(step.size)} without reading, until its socket "
            "stays unwritable (the server's send() must hit EAGAIN)."
        )
    if isinstance(step, BurstConnect):
        return (
            f"{step.count} connections open at once; each sends {_bytes(step.size)}, reads its echo and "
            "closes."
        )
    if isinstance(step, InjectReset):
        return (
            f"An RST with the right sequence number is forged on the wire into connection {step.conn}, "
            f"toward the {step.toward}."
        )
    fields = ", ".join(f"{f.name} {getattr(step, f.name)!r}" for f in dataclasses.fields(step))
    return f"{step.op}: {fields}."


def scenario_words(scenario: Scenario) -> str:
    return (
        f"Fixed scenario {scenario.name}: a second instance of the server starts with RLIMIT_NOFILE="
        f"{scenario.nofile}; first a control ({CONTROL_CLIENTS} clients send a byte, half reset, half "
        f"stay idle), then {scenario.connections} clients connect at once, then close; the server must "
        "neither die nor spin, and must serve again afterwards."
    )


def reproducer_html(cell: Cell, server: ServerResult, out: Path) -> str:
    """The page of ``cell``'s reproducer; its links are relative to ``out/reproducers/``."""
    assert cell.reproducer is not None
    up = "../"
    source = out / cell.reproducer
    steps_html = ""
    replay = f"epoll-harness replay {cell.reproducer}"
    heading = f"{server.name} × {cell.property_name}"
    facts: list[tuple[str, str]] = []
    try:
        repro = Reproducer.load(source)
    except HarnessError as exc:
        raw = ""
        try:
            raw = json.dumps(json.loads(source.read_text()), indent=1)
        except (OSError, ValueError):
            pass
        steps_html = f"<p>The reproducer could not be read: {_e(exc)}</p>" + (
            f"<pre>{_e(raw)}</pre>" if raw else ""
        )
    else:
        facts.append(("property", repro.property_name))
        if repro.also:
            facts.append(("also violated", ", ".join(repro.also)))
        facts.append(("level", repro.level))
        if repro.seed is not None:
            facts.append(("seed", str(repro.seed)))
        if repro.script is not None:
            items = "".join(f"<li>{_e(step_words(step))}</li>" for step in repro.script.steps)
            steps_html = (
                f"<p>{len(repro.script.steps)} step{'s' if len(repro.script.steps) != 1 else ''}, "
                f'{_bytes(repro.script.bytes_sent)} sent in all:</p><ol class="steps">{items}</ol>'
            )
        elif repro.scenario is not None:
            steps_html = f"<p>{_e(scenario_words(repro.scenario))}</p>"
        if repro.message:
            facts.append(("message", repro.message))
    facts.insert(0, ("verdict", f"{cell.verdict} (expected {cell.expected})"))
    if cell.confirmed:
        facts.append(("confirmed", f"{cell.confirmed} replays failed again"))
    if cell.seconds_to_first is not None:
        facts.append(("first seen", f"{cell.seconds_to_first:.1f} s into the check"))
    facts.append(("server command", server.command))
    links = [f'<a href="{_e(up + cell.reproducer)}">reproducer (JSON)</a>']
    if cell.pcap:
        links.append(f'<a href="{_e(up + cell.pcap)}">packet capture of a replay (pcap)</a>')
    if server.log:
        links.append(f'<a href="{_e(up + server.log)}">check log</a>')
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in facts)
    last = f"<h2>The server's last output</h2><pre>{_e(cell.last_output)}</pre>" if cell.last_output else ""
    body = f"""<p><a href="{up}{INDEX_HTML}#{_e(cell_id(cell))}">← back to the matrix</a></p>
<h1>Reproducer: {_e(heading)}</h1>
<table class="servers">{rows}</table>
<h2>What the client does</h2>
{steps_html}
{last}
<h2>Replay it</h2>
<p>From the matrix folder:</p>
<pre>{_e(replay)}</pre>
<p>{" · ".join(links)}</p>"""
    return _page(f"reproducer: {heading}", body)


# -- writing --------------------------------------------------------------------------------------------


def _cells_with_reproducers(report: MatrixReport) -> Iterable[tuple[Cell, ServerResult]]:
    for server in report.servers:
        for cell in server.cells:
            if cell.reproducer and cell.reproducer_page:
                yield cell, server


def write_pages(report: MatrixReport, out: Path) -> Path:
    """Write ``index.html`` and one page per reproducer into ``out``; the index's path."""
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out / "reproducers", ignore_errors=True)  # this module's own: pages of an earlier run go
    written: set[str] = set()
    for cell, server in _cells_with_reproducers(report):
        assert cell.reproducer_page is not None
        if cell.reproducer_page in written:
            continue  # one reproducer shown by several cells (a finding that violates several properties)
        written.add(cell.reproducer_page)
        page = out / cell.reproducer_page
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(reproducer_html(cell, server, out), encoding="utf-8")
    index = out / INDEX_HTML
    index.write_text(index_html(report), encoding="utf-8")
    return index
