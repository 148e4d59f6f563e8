"""The one TOML line scanner: where tables and keys are (tomllib keeps no positions)."""

from __future__ import annotations

import contextlib
import re
import tomllib

_HEADER = re.compile(r"^\s*\[\[?\s*([^\[\]]+?)\s*\]\]?\s*(?:#.*)?$")
_KEY_PART = re.compile(r'"(?:[^"\\]|\\.)*"|\'[^\']*\'|[^.\s]+')
_PART = r"""(?:"(?:[^"\\]|\\.)*"|'[^']*'|[A-Za-z0-9_-]+)"""
_KEY = re.compile(rf"^\s*({_PART}(?:\s*\.\s*{_PART})*)\s*=")  # a bare, quoted or dotted key
# What nesting depends on: strings and comments (skipped whole), brackets, braces and newlines.
_NESTING = re.compile(
    r'"""[\s\S]*?"""|\'\'\'[\s\S]*?\'\'\'|"(?:[^"\\\n]|\\.)*"|\'[^\'\n]*\'|#[^\n]*|[\[\]{}\n]'
)


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


def toml_lines(text: str) -> list[str]:
    """The lines of a TOML text as TOML (and tomllib's line numbers) count them: split at "\n"
    only (str.splitlines also splits at U+0085, U+2028, form feeds, ... which TOML strings and
    comments may hold)."""
    return text.split("\n")


def header_line(text: str, key: tuple[str, ...]) -> int | None:
    """The 1-based line of the header of table `key`, or None."""
    for number, line in enumerate(toml_lines(text), start=1):
        if header_key(line) == key:
            return number
    return None


def deepest(text: str) -> tuple[int, int]:
    """(how deep arrays and inline tables nest at most, the 1-based line where that depth is
    first reached): where to point when a file nests too deeply to be parsed."""
    depth = most = 0
    line = most_line = 1
    for match in _NESTING.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            if depth > most:
                most, most_line = depth, line
        elif token in ("]", "}"):
            depth = max(0, depth - 1)
        else:
            line += token.count("\n")
    return most, most_line


def _element(
    header: tuple[str, ...], arrays: dict[tuple[str, ...], int], is_array: bool
) -> tuple[str, ...]:
    """The path of a header's table with the index of each array of tables it is in: the
    second `[[sites.shop.targets]]` is ("sites", "shop", "targets", "1")."""
    for end in range(len(header) - (0 if is_array else 1), 0, -1):
        prefix = header[:end]
        if end == len(header):  # this header adds an element to its own array
            arrays[prefix] = arrays.get(prefix, -1) + 1
            return (*prefix, str(arrays[prefix]))
        if prefix in arrays:
            return (*prefix, str(arrays[prefix]), *header[end:])
    return header


class Lines:
    """The line of every table header and `key =` line, to name file:line in messages."""

    def __init__(self, text: str) -> None:
        self.tables: dict[tuple[str, ...], int] = {}
        self.keys: dict[tuple[str, ...], int] = {}
        # the first line that names something below a table no line of its own defines
        # (`sites_` of `[sites_.blog]` or of `sites_.blog.repo = ...`)
        self.within: dict[tuple[str, ...], int] = {}
        table: tuple[str, ...] = ()
        arrays: dict[tuple[str, ...], int] = {}  # [[array]] headers: the last element's index
        for number, line in enumerate(toml_lines(text), start=1):
            header = header_key(line)
            if header is not None:
                self.tables.setdefault(header, number)
                table = _element(header, arrays, line.lstrip().startswith("[["))
                self.tables.setdefault(table, number)
                self._below(table, number)
                continue
            key = _KEY.match(line)
            if key:
                path = (*table, *(unquote(p) for p in _KEY_PART.findall(key.group(1))))
                self.keys.setdefault(path, number)
                self._below(path, number)

    def _below(self, path: tuple[str, ...], number: int) -> None:
        for end in range(1, len(path)):
            self.within.setdefault(path[:end], number)

    def of(self, *path: str) -> int | None:
        """The line of the key at `path`, else of the nearest enclosing table or key."""
        if path in self.keys:
            return self.keys[path]
        while path:
            for known in (self.tables, self.keys, self.within):
                if path in known:
                    return known[path]
            path = path[:-1]
        return None
