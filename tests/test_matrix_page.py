"""The matrix page in a real browser: what a person sees, from ``file://``, with no network.

A real matrix (the reference server and a mutant with one known bug) is run,
then Debian's chromium opens its ``index.html`` headless, with every network
request sent to a closed port: the DOM it builds holds the grid (a row per
server, a column per property, each cell with its verdict), a failing cell's
link leads to the reproducer's page, which lists the client's steps in plain
words, and the screenshot shows the cells in their verdicts' colours.
Skipped only when chromium is not installed (``.ci/run`` installs it:
``apt-get install -y chromium``).
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from harness.model.properties import PROPERTIES
from tests.test_matrix import CHECKED, RUN_ARGS, SERVERS, matrix

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install -y chromium; .ci/run does)"
)

# The page's colours (harness/run/matrix_page.py): pass and fail backgrounds.
PASS_RGB = (0xCD, 0xEB, 0xD3)
FAIL_RGB = (0xF9, 0xC9, 0xCE)


# -- a small DOM from chromium's --dump-dom --------------------------------------------------------------


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node] = field(default_factory=list)
    text: list[str] = field(default_factory=list)

    def all(self, tag: str | None = None, cls: str | None = None) -> list[Node]:
        found = []
        for child in self.children:
            if (tag is None or child.tag == tag) and (
                cls is None or cls in child.attrs.get("class", "").split()
            ):
                found.append(child)
            found += child.all(tag, cls)
        return found

    def by_id(self, ident: str) -> Node | None:
        return next((n for n in self.all() if n.attrs.get("id") == ident), None)

    def content(self) -> str:
        return "".join(self.text) + "".join(c.content() for c in self.children)


class _Builder(HTMLParser):
    VOID = frozenset({"br", "meta", "link", "img", "input", "hr", "wbr", "source", "col"})

    def __init__(self) -> None:
        super().__init__()
        self.root = Node("#root", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in self.VOID:
            self.stack.append(node)

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].text.append(data)


def parse(html_text: str) -> Node:
    builder = _Builder()
    builder.feed(html_text)
    return builder.root


# -- a PNG decoder, enough for chromium's screenshots (8-bit RGB/RGBA, not interlaced) --------------------


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and rows of RGB bytes."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, channels = 8, b"", 0, 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
    raw = zlib.decompress(idat)
    stride = width * channels
    rows: list[bytes] = []
    previous = bytes(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], raw[start + 1 : start + 1 + stride]
        if kind == 2:  # up
            line = bytes([(v + u) & 0xFF for v, u in zip(line, previous, strict=True)])
        elif kind:  # sub, average, paeth: byte by byte
            out = bytearray(line)
            for x in range(stride):
                a = out[x - channels] if x >= channels else 0
                b = previous[x]
                if kind == 1:
                    out[x] = (out[x] + a) & 0xFF
                elif kind == 3:
                    out[x] = (out[x] + ((a + b) >> 1)) & 0xFF
                else:
                    c = previous[x - channels] if x >= channels else 0
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    out[x] = (out[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
            line = bytes(out)
        previous = line
        rows.append(line if channels == 3 else bytes(v for i, v in enumerate(line) if i % 4 != 3))
    return width, height, rows


def count_colour(rows: list[bytes], rgb: tuple[int, int, int]) -> int:
    """Pixels of exactly this colour (runs of it; a stray match across pixels is negligible)."""
    needle = bytes(rgb)
    return sum(row.count(needle) for row in rows)


# -- the browser ----------------------------------------------------------------------------------------


def chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    assert CHROMIUM is not None
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            # Any request that leaves the machine would fail: the page must need none.
            "--proxy-server=127.0.0.1:9",
            "--proxy-bypass-list=<-loopback>",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            *args,
        ],
        capture_output=True,
        timeout=120,
    )


def dump_dom(profile: Path, page: Path) -> Node:
    result = chromium(profile, "--dump-dom", page.resolve().as_uri())
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    return parse(result.stdout.decode())


def local_target(page: Path, href: str) -> Path:
    """Where a relative link of ``page`` leads (asserting it is relative: no scheme, no host)."""
    parts = urlsplit(href)
    assert not parts.scheme and not parts.netloc, f"{page.name} links outside: {href}"
    return (page.parent / unquote(parts.path)).resolve() if parts.path else page.resolve()


def test_the_page_in_a_headless_browser(tmp_path: Path) -> None:
    servers = tmp_path / "servers.toml"
    servers.write_text(SERVERS)
    # The same matrix as tests/test_matrix.py runs: the reference server and one known bug.
    run = matrix(str(servers), "--out", "out", "--jobs", "2", *RUN_ARGS, cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    index = tmp_path / "out" / "index.html"
    profile = tmp_path / "profile"

    # The grid: a header row with a column per property, a row per server, a cell per property.
    dom = dump_dom(profile, index)
    grid = dom.by_id("grid")
    assert grid is not None
    header = grid.all("thead")[0].all("th")
    assert [h.content().strip() for h in header] == ["server", *PROPERTIES]
    rows = grid.all("tbody")[0].all("tr")
    assert [r.attrs["data-server"] for r in rows] == ["reference", "ignores EOF"]
    verdicts = {}
    for row in rows:
        cells = row.all("td", "cell")
        assert [c.attrs["data-property"] for c in cells] == list(PROPERTIES)
        for cell in cells:
            assert cell.attrs["data-verdict"] in cell.content()  # the word is shown, not only coloured
            verdicts[row.attrs["data-server"], cell.attrs["data-property"]] = cell
    assert {verdicts["reference", p].attrs["data-verdict"] for p in CHECKED} == {"pass"}
    assert verdicts["reference", "idle-cpu"].attrs["data-verdict"] == "skipped"
    failing = verdicts["ignores EOF", "cleanup"]
    assert failing.attrs["data-verdict"] == "fail" and failing.attrs["data-matches"] == "true"
    assert "expected fail" in failing.content() and "first after" in failing.content()
    summary = dom.by_id("summary")
    assert summary is not None and "Every cell matches its expectation" in summary.content()
    assert dom.by_id("legend") is not None and dom.by_id("prop-graceful-fin") is not None

    # Every link and source is local, and what it names exists; nothing is loaded from elsewhere.
    for node in dom.all():
        for attr in ("href", "src"):
            if attr in node.attrs and not node.attrs[attr].startswith("#"):
                assert local_target(index, node.attrs[attr]).exists(), node.attrs[attr]
    assert not dom.all("script") and not dom.all("link") and not dom.all("img")
    style = "".join(s.content() for s in dom.all("style"))
    assert "url(" not in style and "@import" not in style

    # The failing cell's links: the reproducer's page, its pcap and the check log.
    links = {a.attrs["class"]: a.attrs["href"] for a in failing.all("a")}
    assert set(links) == {"repro", "pcap", "log"}
    assert local_target(index, links["pcap"]).read_bytes()[:4] in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4")
    page = local_target(index, links["repro"])
    repro = dump_dom(profile, page)
    heading = repro.all("h1")[0].content()
    assert "ignores EOF" in heading and "cleanup" in heading
    steps = [li.content() for ol in repro.all("ol", "steps") for li in ol.all("li")]
    assert steps and all(step.endswith(".") for step in steps)
    assert all(step.startswith(("Connection", "Wait", "An RST")) or "connections" in step for step in steps)
    assert "epoll-harness replay servers/ignores-EOF/artifacts/repro-" in repro.content()
    back = next(a.attrs["href"] for a in repro.all("a") if "back to the matrix" in a.content())
    assert local_target(page, back) == index.resolve()
    assert urlsplit(back).fragment == failing.attrs["id"]
    for node in repro.all("a"):
        assert local_target(page, node.attrs["href"]).exists(), node.attrs["href"]

    # What a person sees: the cells in their colours (a screenshot, decoded).
    shot = tmp_path / "shot.png"
    result = chromium(profile, f"--screenshot={shot}", "--window-size=1300,600", index.resolve().as_uri())
    assert result.returncode == 0 and shot.is_file(), result.stderr.decode(errors="replace")[-2000:]
    width, height, pixels = png_pixels(shot.read_bytes())
    assert (width, height) == (1300, 600)
    assert count_colour(pixels, PASS_RGB) > 20_000  # ten pass cells
    assert count_colour(pixels, FAIL_RGB) > 2_000  # one fail cell
