"""The one TOML line scanner: where tables and keys are (tomllib keeps no positions)."""

from __future__ import annotations

import contextlib
import re
import tomllib

_HEADER = re.compile(r"^\s*\[\[?\s*([^\[\]]+?)\s*\]\]?\s*(?:#.*)?$")
_KEY_PART = re.compile(r'"(?:[^"\\]|\\.)*"|\'[^\']*\'|[^.\s]+')
_KEY = re.compile(r"""^\s*("(?:[^"\\]|\\.)*"|'[^']*'|[A-Za-z0-9_-]+)\s*=""")


def header_key(line: str) -> tuple[str, ...] | None:
    """The dotted key of a `[table]` or `[[array]]` header line, None for any other line."""
    match = _HEADER.match(line)
    if match is None:
        return None
    return tuple(unquote(part) for part in _KEY_PART.findall(match.group(1)))


def unquote(part: str) -> str:
    """A bare or quoted key part as its name ("a.b" -> a.b, escapes undone)."""
    part = part.strip()
    if len(part) >= 2 and part[0] == part[-1] and part[0] in "\"'":
        with contextlib.suppress(tomllib.TOMLDecodeError):  # undo escapes in "..." keys
            return str(tomllib.loads(f"k = {part}")["k"])
        return part[1:-1]
    return part


def header_line(text: str, key: tuple[str, ...]) -> int | None:
    """The 1-based line of the header of table `key`, or None."""
    for number, line in enumerate(text.splitlines(), start=1):
        if header_key(line) == key:
            return number
    return None


class Lines:
    """The line of every table header and `key =` line, to name file:line in messages."""

    def __init__(self, text: str) -> None:
        self.tables: dict[tuple[str, ...], int] = {}
        self.keys: dict[tuple[str, ...], int] = {}
        table: tuple[str, ...] = ()
        for number, line in enumerate(text.splitlines(), start=1):
            header = header_key(line)
            if header is not None:
                table = header
                self.tables.setdefault(table, number)
                continue
            key = _KEY.match(line)
            if key:
                self.keys.setdefault((*table, unquote(key.group(1))), number)

    def of(self, *path: str) -> int | None:
        """The line of the key at `path`, else of the nearest enclosing table or key."""
        if path in self.keys:
            return self.keys[path]
        while path:
            if path in self.tables:
                return self.tables[path]
            if path in self.keys:
                return self.keys[path]
            path = path[:-1]
        return None
