"""Short units: no function over 80 lines and no class over 400 in a package (run by
scripts/test, and by tests/unit/test_house.py). A function's lines run from its first decorator
to its last line, nested functions included.

    .venv/bin/python -m testkit.sizes [DIR ...]     # default: reconciler
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

MAX_FUNCTION = 80
MAX_CLASS = 400


def too_long(root: Path) -> Iterator[str]:
    """`path:line: kind name is N lines (max M)` for every unit over its limit under `root`."""
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                kind, limit = "function", MAX_FUNCTION
            elif isinstance(node, ast.ClassDef):
                kind, limit = "class", MAX_CLASS
            else:
                continue
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            lines = (node.end_lineno or node.lineno) - first + 1
            if lines > limit:
                yield f"{path}:{first}: {kind} {node.name} is {lines} lines (max {limit})"


def main(argv: list[str]) -> int:
    problems = [p for root in (argv or ["reconciler"]) for p in too_long(Path(root))]
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
