"""A matrix's files for machines: report.json (every cell), junit.xml (a case per cell), summary.md.

JUnit, as CIs read it: one ``<testsuite>`` per server, one ``<testcase>`` per
property (``classname`` ``matrix.<server>``, ``name`` the property). A cell
whose verdict differs from its expectation is a ``<failure>`` (an ``<error>``
when the server could not be checked); a skipped cell is ``<skipped>``; every
other cell passes, and one whose verdict is not ``pass`` (an expected failure,
a non-strict finding) says so in its ``<system-out>``, so a CI's test view
shows known failures as passing tests with a note.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from harness.model.properties import PROPERTIES
from harness.run.matrix import ERROR, PASS, SKIPPED, Cell, MatrixReport, ServerResult

REPORT_JSON = "report.json"
JUNIT_XML = "junit.xml"

# Characters XML 1.0 does not allow, even escaped (a server's output may hold any byte).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _text(value: object) -> str:
    return _NOT_XML.sub("\ufffd", str(value))


def write_report_json(report: MatrixReport, out: Path) -> Path:
    path = out / REPORT_JSON
    report.save(path)
    return path


def _case_note(cell: Cell) -> str:
    lines = [f"verdict: {cell.verdict} (expected: {cell.expected})"]
    if cell.verdict != PASS and cell.matches and cell.verdict == cell.expected:
        lines[0] += " - a known finding, expected by the servers file"
    if cell.detail:
        lines.append(f"detail: {cell.detail}")
    if cell.confirmed:
        lines.append(f"confirmed: {cell.confirmed}")
    if cell.seconds_to_first is not None:
        lines.append(f"first seen after: {cell.seconds_to_first:.1f} s")
    lines.append(f"examples: {cell.examples}")
    paths = (("reproducer", cell.reproducer), ("readable", cell.reproducer_page), ("pcap", cell.pcap))
    for label, path in paths:
        if path:
            lines.append(f"{label}: {path}")
    if cell.last_output:
        lines.append("the server's last output:\n    " + "\n    ".join(cell.last_output.splitlines()))
    return "\n".join(lines)


def _suite(parent: ET.Element, server: ServerResult, created: str) -> None:
    cells = server.cells
    failures = sum(1 for c in cells if not c.matches and c.verdict != ERROR)
    errors = sum(1 for c in cells if c.verdict == ERROR)
    skipped = sum(1 for c in cells if c.verdict == SKIPPED)
    suite = ET.SubElement(
        parent,
        "testsuite",
        name=_text(server.name),
        tests=str(len(cells)),
        failures=str(failures),
        errors=str(errors),
        skipped=str(skipped),
        time=f"{server.seconds:.1f}",
        timestamp=created.rstrip("Z"),
    )
    props = ET.SubElement(suite, "properties")
    for name, value in (
        ("command", server.command),
        ("cwd", server.cwd),
        ("notes", server.notes),
        ("examples", server.examples),
        ("log", server.log or ""),
    ):
        ET.SubElement(props, "property", name=name, value=_text(value))
    for cell in cells:
        case = ET.SubElement(
            suite, "testcase", classname=_text(f"matrix.{server.slug}"), name=cell.property_name, time="0"
        )
        if cell.verdict == ERROR:
            element = ET.SubElement(case, "error", message=_text(cell.mismatch()), type="server-error")
            element.text = _text(cell.detail + (f"\n\n{server.last_output}" if server.last_output else ""))
        elif not cell.matches:
            element = ET.SubElement(case, "failure", message=_text(cell.mismatch()), type="verdict-mismatch")
            element.text = _text(_case_note(cell))
        elif cell.verdict == SKIPPED:
            ET.SubElement(case, "skipped", message=_text(cell.detail or "not checked in this run"))
        if cell.verdict not in (PASS, ERROR, SKIPPED) or not cell.matches:
            out = ET.SubElement(case, "system-out")
            out.text = _text(_case_note(cell))


def junit_tree(report: MatrixReport) -> ET.ElementTree[ET.Element]:
    cells = report.cells
    root = ET.Element(
        "testsuites",
        name="epoll-harness matrix",
        tests=str(len(cells)),
        failures=str(sum(1 for c in cells if not c.matches and c.verdict != ERROR)),
        errors=str(sum(1 for c in cells if c.verdict == ERROR)),
        skipped=str(sum(1 for c in cells if c.verdict == SKIPPED)),
        time=f"{report.seconds:.1f}",
    )
    for server in report.servers:
        _suite(root, server, report.created)
    ET.indent(root)
    return ET.ElementTree(root)


def write_junit(report: MatrixReport, out: Path) -> Path:
    path = out / JUNIT_XML
    path.parent.mkdir(parents=True, exist_ok=True)
    junit_tree(report).write(path, encoding="utf-8", xml_declaration=True)
    return path


SUMMARY_MD = "summary.md"
_MARKS = {"pass": "pass", "fail": "**FAIL**", "non-strict": "non-strict", "error": "**ERROR**"}


def markdown(report: MatrixReport) -> str:
    """The grid as a Markdown table (a CI's job summary, a README): one row per server."""
    header = "| server | " + " | ".join(f"`{p}`" for p in PROPERTIES) + " |"
    lines = [header, "|---" * (len(PROPERTIES) + 1) + "|"]
    for server in report.servers:
        by = {c.property_name: c for c in server.cells}
        marks = []
        for prop in PROPERTIES:
            cell = by.get(prop)
            if cell is None:
                marks.append("")
                continue
            mark = _MARKS.get(cell.verdict, cell.verdict)
            if not cell.matches:
                mark += f" (expected {cell.expected})"
            marks.append(mark)
        lines.append(f"| {server.name} | " + " | ".join(marks) + " |")
    mismatches = report.mismatches
    lines.append("")
    lines.append(
        "Every cell as expected."
        if not mismatches
        else f"{len(mismatches)} of {len(report.cells)} cells differ from the expectation."
    )
    return "\n".join(lines) + "\n"


def write_markdown(report: MatrixReport, out: Path) -> Path:
    path = out / SUMMARY_MD
    path.write_text(markdown(report), encoding="utf-8")
    return path
