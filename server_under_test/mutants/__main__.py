"""``python -m server_under_test.mutants``: list the catalogue, one line each.

``python -m server_under_test.mutants NAME [contract arguments]`` runs mutant
NAME, like ``python -m server_under_test.mutants.NAME``.
"""

from __future__ import annotations

import sys

from server_under_test.mutants import NAMES, by_name, catalogue
from server_under_test.mutants._base import PACKAGE, run_mutant


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-l", "--list"):
        entries = catalogue()
        width = max(len(entry.name) for entry in entries)
        pwidth = max(len(entry.expected_property) for entry in entries)
        for entry in entries:
            prop = f"{entry.expected_property:<{pwidth}}"
            print(f"{entry.name:<{width}}  {prop}  {entry.default_mode}  {entry.bug}")
        return 0
    if args[0] in ("-h", "--help"):
        print("usage: python -m server_under_test.mutants [NAME [--port P] [--mode lt|et] ...]")
        print("Without NAME, list the catalogue: name, expected property, default mode, bug.")
        return 0
    name = args[0]
    if name not in NAMES:
        print(
            f"python -m {PACKAGE}: error: unknown mutant {name!r} (run without arguments for the list)",
            file=sys.stderr,
        )
        return 2
    return run_mutant(by_name(name).server_class(), args[1:], name)


if __name__ == "__main__":
    sys.exit(main())
