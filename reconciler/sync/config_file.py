"""Reading sites.toml: the file's text, validated by core.config (remembered while unchanged)."""

from __future__ import annotations

import functools
from pathlib import Path

from reconciler.core.config.sites import Config, ScheduleCheck, parse
from reconciler.core.errors import ConfigError, ConfigProblem


def load(path: str | Path, *, schedule_problem: ScheduleCheck | None = None) -> Config:
    """Read and validate a sites.toml; raise ConfigError naming every problem. The callers pass
    serve.schedule.cron_problem as `schedule_problem` (the cron check lives with the schedule)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            [ConfigProblem(str(p), None, "file not found (pass --config PATH or create it)")]
        ) from None
    except OSError as exc:
        raise ConfigError([ConfigProblem(str(p), None, f"cannot read: {exc.strerror}")]) from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError([ConfigProblem(str(p), line, f"not UTF-8 text: {exc}")]) from None
    return _parse_unchanged(text, str(p), schedule_problem)


@functools.lru_cache(maxsize=4)
def _parse_unchanged(text: str, path: str, schedule_problem: ScheduleCheck | None) -> Config:
    """parse(), remembered for the same text: serve re-reads sites.toml before every sync, and
    validating 1,000 sites again costs 0.2-0.5 s of an event's latency. A Config is immutable;
    a file that does not validate is never remembered (it raises) and is checked again."""
    return parse(text, path, schedule_problem=schedule_problem)
