"""The house keeps its map: README's "How it is built" names exactly the modules that exist, and
no unit in reconciler/ outgrows its limit (testkit.sizes)."""

from __future__ import annotations

import re
from pathlib import Path

from testkit import sizes

REPO = Path(__file__).resolve().parents[2]
TREES = ("reconciler", "demo")  # the packages the README's tree maps
NOT_MAPPED = {"__init__.py", "__main__.py"}


def readme_tree(readme: str) -> set[str]:
    """The paths the README's "How it is built" block names: `pkg/` lines open a folder at their
    indentation (two spaces a level), `name.py` lines name a module in the folder above."""
    section = readme.split("## How it is built", 1)[1]
    block = section.split("```", 2)[1]
    named: set[str] = set()
    stack: list[tuple[int, str]] = []
    for line in block.splitlines():
        match = re.match(r"( *)(\S+)", line)
        if not match:
            continue
        depth, name = len(match.group(1)) // 2, match.group(2)
        stack = [(d, n) for d, n in stack if d < depth]
        parent = "/".join(n.rstrip("/") for _, n in stack)
        if name.endswith("/"):
            stack.append((depth, name))
            named.add(f"{parent}/{name.rstrip('/')}/" if parent else name)
        elif name.endswith(".py"):
            named.add(f"{parent}/{name}")
    return named


def existing() -> set[str]:
    found: set[str] = set()
    for top in TREES:
        for path in (REPO / top).rglob("*.py"):
            rel = path.relative_to(REPO)
            if path.name not in NOT_MAPPED:
                found.add(rel.as_posix())
            found.update(f"{p.as_posix()}/" for p in rel.parents if p != Path("."))
    return found


def test_the_readme_tree_names_exactly_the_modules_that_exist() -> None:
    tree = readme_tree((REPO / "README.md").read_text(encoding="utf-8"))
    named = {n for n in tree if n.startswith(tuple(f"{top}/" for top in TREES))}
    real = existing()
    assert sorted(real - named) == [], "modules missing from README's How it is built"
    assert sorted(named - real) == [], "README's How it is built names modules that do not exist"


def test_the_tree_reader_sees_folders_and_modules() -> None:
    text = (
        "## How it is built\n\n```\n"
        "reconciler/\n  core/   pure\n    model.py  x\n  wiring.py  y\n```\n"
    )
    assert readme_tree(text) == {
        "reconciler/",
        "reconciler/core/",
        "reconciler/core/model.py",
        "reconciler/wiring.py",
    }


def test_no_function_over_80_lines_and_no_class_over_400() -> None:
    assert list(sizes.too_long(REPO / "reconciler")) == []


def test_the_size_check_finds_a_long_function(tmp_path: Path) -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(sizes.MAX_FUNCTION))
    (tmp_path / "long.py").write_text(f"def long() -> None:\n{body}")
    (tmp_path / "short.py").write_text("def short() -> None:\n    pass\n")
    assert [p.split(": ", 1)[1] for p in sizes.too_long(tmp_path)] == [
        f"function long is {sizes.MAX_FUNCTION + 1} lines (max {sizes.MAX_FUNCTION})"
    ]
