"""`reconciler sites add|list`: edit sites.toml keeping its comments and layout, list sites."""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomlkit

from reconciler.core.config.lines import header_key, header_line
from reconciler.core.config.sites import Config, parse
from reconciler.core.errors import ConfigError, ConfigProblem, SitesFileError
from reconciler.serve.triggers.schedule import cron_problem

NEW_FILE_MODE = 0o644

_BLANK = re.compile(r"^\s*$")
_COMMENT = re.compile(r"^\s*#")


def add_site(path: Path, name: str, fields: Mapping[str, str | bool]) -> str:
    """Add table [sites.NAME] with `fields` to the sites.toml at `path`; return its text.

    The table goes after the last existing [sites.*] table (or at the end), and nothing else in
    the file changes. The whole resulting file is validated like `reconciler validate` before
    it is written, atomically and with the file's mode kept; a missing file is created. A
    duplicate name or an invalid result raises SitesFileError and leaves the file untouched.
    """
    path = Path(path)
    target = Path(os.path.realpath(path))  # write through a symlink, don't replace it
    where = str(path)
    refused = f'not adding site "{name}" ({where} left unchanged)'
    try:
        raw = target.read_bytes()
        mode = stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        raw, mode = b"", NEW_FILE_MODE
    except OSError as exc:
        problem = ConfigProblem(where, None, f"cannot read: {exc.strerror}")
        raise SitesFileError([problem], refused) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        problem = ConfigProblem(where, None, f"not UTF-8 text: {exc}")
        raise SitesFileError([problem], refused) from exc

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        raise SitesFileError(_problems(text, where), f"{refused}: fix the file first") from None
    sites = data.get("sites", {})
    if isinstance(sites, dict) and name in sites:
        line = header_line(text, ("sites", name))
        problem = ConfigProblem(
            where, line, "already exists; edit its table or choose another name", name
        )
        raise SitesFileError([problem], refused)

    table = _render_table(name, fields)
    expected = {**data, "sites": {**sites, name: dict(fields)}} if isinstance(sites, dict) else None
    new_text = _insert(text, table, at_end=False)
    if expected is not None and _loads_or_none(new_text) != expected:
        # The layout fooled the header scan (e.g. a "[...]" line inside a multi-line string):
        # appending at the very end is always right for TOML that parsed.
        new_text = _insert(text, table, at_end=True)
    try:
        parse(new_text, where, schedule_problem=cron_problem)
    except ConfigError as exc:
        headline = f"{refused}: the result would not be a valid sites.toml"
        raise SitesFileError(list(exc.problems), headline) from exc
    if expected is not None and _loads_or_none(new_text) != expected:
        problem = ConfigProblem(where, None, "could not place the new table without changes")
        raise SitesFileError([problem], refused)

    try:
        _write_atomic(target, new_text.encode("utf-8"), mode)
    except OSError as exc:
        problem = ConfigProblem(where, None, f"cannot write: {exc.strerror or exc}")
        raise SitesFileError([problem], refused) from exc
    return table.rstrip("\n")


def list_rows(config: Config) -> list[dict[str, str]]:
    """Every site's effective settings (defaults applied), one dict of display strings per site."""
    return [
        {
            "name": site.name,
            "repo": site.repo,
            "branch": site.branch or "(default)",
            "namespace": site.namespace,
            "deployment": site.deployment,
            "container": site.container or "(only container)",
            "image": site.image,
            "verify": site.verify,
            "pin_digest": "true" if site.pin_digest else "false",
            "required_checks": ", ".join(site.required_checks) or "-",
            "paused": "true" if site.paused else "false",
        }
        for site in config.sites
    ]


def _render_table(name: str, fields: Mapping[str, str | bool]) -> str:
    """`[sites.NAME]` and its keys as TOML text, quoted and escaped by tomlkit."""
    table = tomlkit.table()
    for key, value in fields.items():
        table.add(key, value)
    sites = tomlkit.table(is_super_table=True)
    sites.add(name, table)
    document = tomlkit.document()
    document.add("sites", sites)
    return document.as_string().lstrip("\r\n")


def _insert(text: str, table: str, *, at_end: bool) -> str:
    newline = "\r\n" if "\r\n" in text else "\n"
    block = table.replace("\n", newline) if newline != "\n" else table
    lines = text.splitlines(keepends=True)
    index = len(lines) if at_end else _insertion_index(lines)
    before, after = lines[:index], lines[index:]
    if before and not before[-1].endswith(("\n", "\r")):
        before[-1] += newline
    gap_before = newline if before and not _BLANK.match(before[-1]) else ""
    gap_after = newline if after and not _BLANK.match(after[0]) else ""
    return "".join(before) + gap_before + block + gap_after + "".join(after)


def _insertion_index(lines: list[str]) -> int:
    """Where a new [sites.*] table goes: after the last one, before what follows it.

    Comment lines right under the last site's keys belong to that site; a comment block
    separated from them by a blank line belongs to the table after it.
    """
    headers = [(i, key) for i, line in enumerate(lines) if (key := header_key(line)) is not None]
    last = max((n for n, (_, key) in enumerate(headers) if key[:1] == ("sites",)), default=None)
    if last is None or last == len(headers) - 1:
        return len(lines)
    start, stop = headers[last][0], headers[last + 1][0]
    end = stop
    while end > start + 1 and (_BLANK.match(lines[end - 1]) or _COMMENT.match(lines[end - 1])):
        end -= 1
    while end < stop and _COMMENT.match(lines[end]):
        end += 1
    return end


def _loads_or_none(text: str) -> dict[str, Any] | None:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return None


def _problems(text: str, where: str) -> list[ConfigProblem]:
    try:
        parse(text, where, schedule_problem=cron_problem)
    except ConfigError as exc:
        return list(exc.problems)
    return []


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Replace `path` with `data` in one step (a temporary file, then os.replace)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename durable where the platform allows
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
