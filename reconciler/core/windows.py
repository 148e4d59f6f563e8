"""Deploy windows (pure): when a site may take a new image, from named windows and a clock value.

A ``[windows.NAME]`` table of sites.toml becomes a `Window` (`parse_windows`); a site (or the
defaults) names the windows it obeys (`select`); `decide(windows, clock)` says whether a deploy
may go at that moment and, if not, until when and because of which window, as a `Verdict` with
a human text ("frozen until Mon 09:00 Europe/Berlin by window weekend-freeze"). The clock is
always passed in, never read here.

An urgent deploy through a closed window (``sync --site X --override-window --reason "…"``)
is recorded by `override`: a one-line reason is required; `override_annotations` gives the
``reconciler.dev/window-override*`` annotations for the Deployment, `Override.text` the line
for its Event and the notification, and `read_override` reads it back for the page.

A window is a recurrence of starts with a duration, or one span from a date to a date:

- ``rrule``: an RFC 5545 RRULE (``FREQ=WEEKLY;BYDAY=FR;BYHOUR=16;BYMINUTE=0``), read by
  dateutil's ``rrulestr``. Its first start is ``start`` (default Monday 2000-01-03 00:00 local,
  so the time of day comes from BYHOUR/BYMINUTE, 00:00 when absent); a rule with COUNT or
  INTERVAL > 1 counts from that start, so it needs an explicit ``start``. DTSTART, TZID and
  several rules in one string are refused: ``start`` and ``timezone`` say them once.
- ``cron``: a five-field crontab start (``0 16 * * 5``, names and ranges allowed, ``@daily``
  and friends). Day of month and day of week both restricted match either (as cron does).
- ``duration``: ``"65h"``, ``"30m"``, ``"1h30m"``, ``"2d"`` (required with ``rrule``/``cron``).
- ``timezone``: an IANA zone (required: a window is a local-time idea).
- ``kind``: ``"deny"`` (a freeze) or ``"allow"`` (deploys only inside it).
- ``start``/``end``: dates (``2026-12-21``) or local times (``2026-12-21T18:00``). Without a
  recurrence they are the window itself (a launch freeze), and a plain ``end`` date includes that
  whole day. With one they bound it: no part of any occurrence lies outside [start, end).

Rules of `decide`:

- deny wins over allow: any deny window in force at ``now`` forbids the deploy;
- several allow windows union: with at least one allow window, a deploy may go only while at
  least one of them is in force; with none, any time no deny window covers is allowed;
- an occurrence that started before ``now`` and still lasts counts: the search looks back by
  the window's duration (plus a day, for time-zone offsets), so a Friday 16:00 freeze for 65 h
  still holds on Sunday;
- "until when" is the first instant a deploy may go: past the end of every deny occurrence that
  covers it (chained or overlapping freezes add up) and inside an allow window if there are any;
  searched up to a year and 1,000 window changes ahead (``until`` None beyond: "no opening found
  ahead", e.g. a deny window that always covers the next start);
- times are wall-clock in the window's zone. A start in the hour a spring-forward skips moves
  forward by the gap (02:30 on the last Sunday of March in Europe/Berlin starts at 03:30 CEST); a
  start in the hour an autumn fold repeats is the first of the two (fold=0), so it happens once,
  and an occurrence whose wall-clock span covers the repeated hour lasts through both;
- durations are wall-clock too: an occurrence ends where its local start plus the duration
  shows on the clock (resolved the same way), so "Fridays 16:00 for 65 h" ends Mon 09:00 local
  on a DST weekend as on any other (64 or 66 hours elapsed). Only if that end is not after the
  start (a window shorter than the gap it starts in) does it last its duration in elapsed time.

Compared with Argo CD's sync windows (cron ``schedule``, ``duration``, ``timeZone``, kind
allow/deny): the same precedence (deny wins, allow windows union, no window means allowed) and the
same look-back (its SyncWindows.active takes the first cron start after now minus the duration).
They differ in that Argo CD adds the duration as elapsed time to the start instant (a Friday 16:00
freeze of 65 h ends Mon 10:00 or 08:00 on a DST weekend), has no one-off dated window and no RRULE,
and its override is a standing per-window ``manualSync`` flag; here an override is one explicit
deploy with a reason, recorded on the workload (`override`). Kargo's open-source release had no
deploy windows when this was written (its paid edition has them); the proposed ``PromotionWindow``
resource (akuity/kargo#5544, open then) follows Argo CD's model (cron, duration, timeZone,
allow/deny, no RRULE, no dated window) and gates only automatic promotion, as windows here gate
only what the sync deploys by itself: rollbacks, hold, resume and rollback always run.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil.rrule import DAILY, rrule, rruleset, rrulestr

from reconciler.core.annotations import PREFIX
from reconciler.core.errors import CommandError

__all__ = [
    "OVERRIDE_KEYS",
    "WINDOW_KEYS",
    "Kind",
    "Override",
    "Span",
    "Verdict",
    "Window",
    "WindowState",
    "decide",
    "override",
    "override_annotations",
    "parse_duration",
    "parse_windows",
    "read_override",
    "select",
]

# Proposed annotation keys (to join core/annotations.py when windows are wired): the last
# explicit override of a window, on the Deployment it let a deploy through.
WINDOW_OVERRIDE = PREFIX + "window-override"  # the reason given
WINDOW_OVERRIDE_BY = PREFIX + "window-override-by"
WINDOW_OVERRIDE_AT = PREFIX + "window-override-at"
WINDOW_OVERRIDE_SHA = PREFIX + "window-override-sha"  # the commit it let out
# the windows it went through, comma-separated
WINDOW_OVERRIDE_WINDOWS = PREFIX + "window-override-windows"
OVERRIDE_KEYS = (
    WINDOW_OVERRIDE,
    WINDOW_OVERRIDE_BY,
    WINDOW_OVERRIDE_AT,
    WINDOW_OVERRIDE_SHA,
    WINDOW_OVERRIDE_WINDOWS,
)

WINDOW_KEYS = ("kind", "rrule", "cron", "duration", "timezone", "start", "end")
MAX_REASON = 500
HORIZON = timedelta(days=366)  # how far ahead "until when" is searched
DEFAULT_ANCHOR = datetime(2000, 1, 3)  # a Monday, 00:00: a rule without `start` counts from it
_SLACK = timedelta(days=1)  # covers any UTC offset difference between wall clock and instant
_MAX_STEPS = 1000
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_DURATION_RE = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?$")
_PERIOD: dict[str, timedelta | int] = {  # one period of each frequency; months as a number
    "YEARLY": 12,
    "MONTHLY": 1,
    "WEEKLY": timedelta(weeks=1),
    "DAILY": timedelta(days=1),
    "HOURLY": timedelta(hours=1),
    "MINUTELY": timedelta(minutes=1),
    "SECONDLY": timedelta(seconds=1),
}

Problem = Callable[[tuple[str, ...], str, "str | None"], None]


class Kind(StrEnum):
    DENY = "deny"  # a freeze: no deploy while it is in force
    ALLOW = "allow"  # with any allow window, deploys go only while one is in force


class WindowState(StrEnum):
    OPEN = "open"  # a deploy may go now
    FROZEN = "frozen"  # a deny window is in force
    OUTSIDE = "outside"  # no allow window is in force


class _Recurrence:
    """Starts of a window as naive local times: `starts(lo)` yields those >= lo, in order."""

    def starts(self, lo: datetime) -> Iterator[datetime]:  # pragma: no cover - interface
        raise NotImplementedError


class _Rule(_Recurrence):
    """An RRULE counted from `anchor`. Unless it has COUNT, the anchor moves forward by whole
    periods of the rule (``step``: a span for weekly to secondly rules, a number of months for
    monthly and yearly ones) before a query: that leaves every start where it was and spares
    walking from 2000 at each call."""

    def __init__(self, text: str, anchor: datetime, step: timedelta | int | None) -> None:
        self.text, self.anchor, self.step = text, anchor, step

    def starts(self, lo: datetime) -> Iterator[datetime]:
        for s in _parsed(self.text, self._rebased(lo)):
            if s >= lo:
                yield s

    def _rebased(self, lo: datetime) -> datetime:
        anchor, step = self.anchor, self.step
        if isinstance(step, timedelta) and lo - anchor > 2 * step:
            return anchor + ((lo - anchor) // step - 1) * step
        if isinstance(step, int) and anchor.day <= 28:  # every month has that day
            periods = ((lo.year - anchor.year) * 12 + lo.month - anchor.month) // step - 1
            if periods > 0:
                month = anchor.month - 1 + periods * step
                return anchor.replace(year=anchor.year + month // 12, month=month % 12 + 1)
        return anchor


def _never(parts: Mapping[str, str]) -> bool:
    """Whether BYMONTHDAY names only days its BYMONTH months lack (dateutil would search such a
    rule up to the year 9999 at every query, for seconds)."""
    days = [abs(int(d)) for d in parts.get("BYMONTHDAY", "").split(",") if d.lstrip("+-").isdigit()]
    months = [
        int(m) for m in parts.get("BYMONTH", "").split(",") if m.isdigit() and 0 < int(m) < 13
    ]
    longest = max(_MONTH_DAYS[m - 1] for m in months or range(1, 13))
    return bool(days) and min(days) > longest


@functools.lru_cache(maxsize=256)
def _parsed(text: str, anchor: datetime) -> rrule:
    """The rule counted from `anchor` (rrulestr costs more than a short walk: remembered)."""
    return rrulestr(text, dtstart=anchor)


class _Cron(_Recurrence):
    """A crontab start as an rrule (or the union of two, when day of month and day of week are
    both restricted), built from the midnight of each query: cron has no anchor."""

    def __init__(self, fields: Mapping[str, tuple[int, ...] | None], either: bool) -> None:
        self.fields, self.either = fields, either

    def starts(self, lo: datetime) -> Iterator[datetime]:
        f = self.fields
        base: dict[str, Any] = {
            "dtstart": datetime(lo.year, lo.month, lo.day),
            "byhour": f["hour"],
            "byminute": f["minute"],
            "bysecond": 0,
            "bymonth": f["month"],
        }
        if self.either:
            rules = rruleset()
            rules.rrule(rrule(DAILY, bymonthday=f["day"], **base))
            rules.rrule(rrule(DAILY, byweekday=f["weekday"], **base))
            source: Iterator[datetime] = iter(rules)
        else:
            source = iter(rrule(DAILY, bymonthday=f["day"], byweekday=f["weekday"], **base))
        for s in source:
            if s >= lo:
                yield s


@dataclass(frozen=True, slots=True)
class Window:
    """A named deploy window. `start`/`end` are naive local times in `timezone` (end exclusive);
    `duration` is None only for a one-off window that is just [start, end)."""

    name: str
    kind: Kind
    timezone: str
    schedule: str = ""  # the rrule or cron text as written ("" for a one-off window)
    duration: timedelta | None = None
    start: datetime | None = None
    end: datetime | None = None
    recurrence: _Recurrence | None = field(default=None, compare=False, repr=False)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@dataclass(frozen=True, slots=True)
class Span:
    """One occurrence of a window, as aware UTC instants; `end` is exclusive."""

    window: Window
    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a deploy may go now; if not, why (`reason`), by which window, and from when on it
    may (`until`, aware UTC; None when open, or when none was found ahead)."""

    state: WindowState
    reason: str = ""
    window: str | None = None
    windows: tuple[str, ...] = ()  # every window that keeps the deploy back now
    until: datetime | None = None

    @property
    def may_deploy(self) -> bool:
        return self.state is WindowState.OPEN


# --- parsing ------------------------------------------------------------------------------


def parse_duration(text: str) -> timedelta:
    """ "65h", "30m", "1h30m", "2d" (units in that order, whole numbers) as a positive span."""
    m = _DURATION_RE.match(text.strip()) if isinstance(text, str) else None
    if m is None or not any(m.groups()):
        raise ValueError(f'{text!r} is not a duration: write it like "65h", "30m" or "1h30m"')
    days, hours, minutes = (int(g or 0) for g in m.groups())
    span = timedelta(days=days, hours=hours, minutes=minutes)
    if span <= timedelta(0):
        raise ValueError(f"{text!r} is not a duration: it must be longer than zero")
    return span


class Windows(dict[str, Window]):
    """The file's valid windows by name; `defined` names every [windows.NAME], broken or not."""

    defined: frozenset[str] = frozenset()


def parse_windows(data: Mapping[str, Any], problem: Problem) -> Windows:
    """Validate the [windows] table (``data["windows"]``); report each problem through `problem`
    with the path of the key at fault, e.g. ("windows", "weekend-freeze", "duration")."""
    raw = data.get("windows", {})
    if not isinstance(raw, dict):
        problem(
            ("windows",), '"windows" must be a table of named windows, e.g. [windows.NAME]', None
        )
        return Windows()
    out = Windows()
    out.defined = frozenset(raw)
    for name, table in raw.items():
        where = ("windows", name)
        if not _NAME_RE.match(name):
            problem(where, f'window name "{name}" must be letters, digits, "-", "_" or "."', None)
        elif not isinstance(table, dict):
            problem(where, f'window "{name}" must be a table: [windows.{name}]', None)
        else:
            window = _window(name, table, where, problem)
            if window is not None:
                out[name] = window
    return out


def select(
    names: Any,
    windows: Mapping[str, Window],
    where: tuple[str, ...],
    site: str | None,
    problem: Problem,
) -> tuple[Window, ...]:
    """The windows a site or the defaults name (``windows = ["weekend-freeze"]``), in order (a
    window of the file with problems of its own is not unknown: those were reported)."""
    defined = windows.defined if isinstance(windows, Windows) else frozenset(windows)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        problem(where, '"windows" must be a list of window names, e.g. ["weekend-freeze"]', site)
        return ()
    unknown = [n for n in names if n not in windows and n not in defined]
    if unknown:
        known = ", ".join(sorted({*windows, *defined})) or "none defined"
        close = [m for n in unknown for m in difflib.get_close_matches(n, [*windows, *defined], 1)]
        said = ", ".join(f'"{m}"' for m in close)
        hint = f" (did you mean {said}?)" if close else ""
        problem(where, f"unknown window(s) {', '.join(unknown)}{hint}; known: {known}", site)
    return tuple(windows[n] for n in dict.fromkeys(names) if n in windows)


def _window(
    name: str, t: Mapping[str, Any], where: tuple[str, ...], problem: Problem
) -> Window | None:
    failed: list[str] = []

    def fail(key: str, message: str) -> None:
        problem((*where, key), f'window "{name}": {message}', None)
        failed.append(key)

    for key in t:
        if key not in WINDOW_KEYS:
            fail(key, f'unknown key "{key}" in a window; allowed: ' + ", ".join(WINDOW_KEYS))

    kind = t.get("kind")
    if kind not in ("deny", "allow"):
        fail("kind", '"kind" must be "deny" (a freeze) or "allow" (deploys only inside it)')
    zone = t.get("timezone")
    if not isinstance(zone, str) or not _zone_ok(zone):
        fail("timezone", '"timezone" must be an IANA time zone such as "Europe/Berlin" or "UTC"')
    start = _moment(t, "start", fail, end=False)
    end = _moment(t, "end", fail, end=True)
    if start is not None and end is not None and end <= start:
        fail("end", f'"end" ({t["end"]}) must be after "start" ({t["start"]})')
    schedule, recurrence = _recurrence(t, start, fail)
    duration = None
    if "rrule" in t or "cron" in t:
        duration = _duration(t, fail)
    else:
        if "duration" in t:
            fail("duration", '"duration" needs "rrule" or "cron"; a dated window is start to end')
        if start is None or end is None:
            for key in ("start", "end"):
                if key not in t:
                    fail(key, f'a window without "rrule" or "cron" needs "{key}" (a date)')
    if failed:
        return None
    return Window(name, Kind(str(kind)), str(zone), schedule, duration, start, end, recurrence)


def _zone_ok(zone: str) -> bool:
    """An IANA zone name ("localtime" would be whatever the machine says: refused)."""
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: "Europe" is a directory
        return False
    return zone != "localtime"


def _moment(
    t: Mapping[str, Any], key: str, fail: Callable[[str, str], None], *, end: bool
) -> datetime | None:
    """A `start`/`end` value as a naive local time; a plain `end` date means the end of that day."""
    value = t.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value) if "T" in value else date.fromisoformat(value)
        except ValueError:
            value = None
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            fail(key, f'"{key}" is local to "timezone": write it without an offset')
            return None
        return value
    if isinstance(value, date):
        day = datetime(value.year, value.month, value.day)
        return day + timedelta(days=1) if end else day
    fail(key, f'"{key}" must be a date (2026-12-21) or a local time (2026-12-21T18:00)')
    return None


def _duration(t: Mapping[str, Any], fail: Callable[[str, str], None]) -> timedelta | None:
    if "duration" not in t:
        fail("duration", '"duration" is required with "rrule" or "cron", e.g. "65h" or "1h30m"')
        return None
    value = t["duration"]
    try:
        span = parse_duration(value if isinstance(value, str) else repr(value))
    except ValueError as exc:
        fail("duration", f'"duration" {exc}')
        return None
    if span > HORIZON:
        fail("duration", f'"duration" {value!r} is longer than a year: use "start" and "end"')
        return None
    return span


def _recurrence(
    t: Mapping[str, Any], start: datetime | None, fail: Callable[[str, str], None]
) -> tuple[str, _Recurrence | None]:
    if "rrule" in t and "cron" in t:
        fail("cron", 'a window has "rrule" or "cron", not both')
        return "", None
    if "rrule" in t:
        text = t["rrule"]
        rule = _rrule(text, start, fail) if isinstance(text, str) else None
        if not isinstance(text, str):
            fail("rrule", '"rrule" must be an RRULE string, e.g. "FREQ=WEEKLY;BYDAY=FR;BYHOUR=16"')
        return (text if isinstance(text, str) else ""), rule
    if "cron" in t:
        text = t["cron"]
        if not isinstance(text, str):
            fail("cron", '"cron" must be a crontab string, e.g. "0 16 * * 5"')
            return "", None
        try:
            return text, _cron(text)
        except ValueError as exc:
            fail("cron", f'"cron" {text!r}: {exc}')
    return "", None


def _rrule(text: str, start: datetime | None, fail: Callable[[str, str], None]) -> _Rule | None:
    body = text.strip().upper()
    body = body.removeprefix("RRULE:")
    parts = dict(p.split("=", 1) for p in body.split(";") if "=" in p)
    problem = _rrule_problem(body, parts, start)
    if problem is not None:
        fail("rrule", f'"rrule" {text!r}: {problem}')
        return None
    anchor = start or DEFAULT_ANCHOR
    try:
        first = rrulestr(body, dtstart=anchor)
        if not isinstance(first, rrule):
            raise ValueError("more than one rule")
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        fail("rrule", f'"rrule" {text!r} is not a valid RFC 5545 RRULE: {exc}')
        return None
    step: timedelta | int | None = None
    if "COUNT" not in parts:
        step = _PERIOD[parts["FREQ"]] * int(parts.get("INTERVAL", "1"))
    return _Rule(body, anchor, step)


def _rrule_problem(body: str, parts: Mapping[str, str], start: datetime | None) -> str | None:
    if "\n" in body or any(k in body for k in ("DTSTART", "TZID", "EXDATE", "RDATE")):
        return 'write one RRULE line; its first start goes in "start", its zone in "timezone"'
    if parts.get("FREQ") not in _PERIOD:
        return "it needs FREQ=, one of " + ", ".join(_PERIOD)
    if re.search(r"UNTIL=[0-9T]+Z", body):
        return 'UNTIL is a local time in "timezone": drop the trailing Z (or bound it with "end")'
    interval = parts.get("INTERVAL", "1")
    if not interval.isdigit() or int(interval) < 1:
        return "INTERVAL must be a whole number above 0"
    if start is None and ("COUNT" in parts or interval != "1"):
        return 'with COUNT or INTERVAL it counts from its first start: set "start"'
    if _never(parts):
        return "that day of the month never comes in those months"
    return None


_CRON_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_CRON_FIELDS = (  # name, low, high, names for low.. (month and weekday)
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day", 1, 31, ()),
    ("month", 1, 12, _MONTH_NAMES),
    ("weekday", 0, 7, ("sun", "mon", "tue", "wed", "thu", "fri", "sat")),
)
_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _cron(text: str) -> _Cron:
    """A five-field crontab start (minute hour day-of-month month day-of-week)."""
    fields = _CRON_ALIASES.get(text.strip().lower(), text).split()
    if len(fields) != 5:
        raise ValueError("needs five fields: minute hour day-of-month month day-of-week")
    values: dict[str, tuple[int, ...] | None] = {}
    for (name, low, high, names), text_field in zip(_CRON_FIELDS, fields, strict=True):
        chosen = _cron_field(text_field.lower(), low, high, names, name)
        if name == "weekday":  # cron: 0 and 7 are Sunday; dateutil: Monday is 0
            chosen = tuple(sorted({(d - 1) % 7 for d in chosen}))
        full = len(chosen) == (7 if name == "weekday" else high - low + 1)
        # a full minute or hour field stays a list: rrule would fill a missing one from dtstart
        values[name] = None if full and name in ("day", "month", "weekday") else chosen
    # as cron does: when both day fields are restricted and neither starts with "*", either matches
    either = not fields[2].startswith("*") and not fields[4].startswith("*")
    either = either and values["day"] is not None and values["weekday"] is not None
    if values["day"] is not None and values["weekday"] is None:
        months = values["month"] or tuple(range(1, 13))
        if min(values["day"]) > max(_MONTH_DAYS[m - 1] for m in months):
            raise ValueError("that day of the month never comes in those months")
    return _Cron(values, either)


def _cron_field(
    field: str, low: int, high: int, names: Sequence[str], what: str
) -> tuple[int, ...]:
    def number(token: str) -> int:
        if token in names:
            return names.index(token) + low
        if not token.isdigit() or not low <= int(token) <= high:
            raise ValueError(f"{what} {token!r} is not {low}-{high}")
        return int(token)

    out: set[int] = set()
    for part in field.split(","):
        span, _, step_text = part.partition("/")
        step = int(step_text) if step_text.isdigit() and int(step_text) > 0 else None
        if step_text and step is None:
            raise ValueError(f"{what} step {step_text!r} must be a whole number above 0")
        if span == "*":
            first, last = low, high
        elif "-" in span:
            a, _, b = span.partition("-")
            first, last = number(a), number(b)
            if last < first:
                raise ValueError(f"{what} range {span!r} runs backwards")
        else:
            first = number(span)
            last = high if step else first
        out.update(range(first, last + 1, step or 1))
    return tuple(sorted(out))


# --- evaluation ---------------------------------------------------------------------------


def _instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """A wall-clock time in `zone` as an aware UTC instant: in a repeated hour the first one
    (fold=0); in a skipped hour, the offset before the gap, i.e. moved forward by it."""
    return wall.replace(tzinfo=zone, fold=0).astimezone(UTC)


def _span(w: Window, wall_start: datetime) -> Span | None:
    """The occurrence of `w` that starts at `wall_start`, clipped to its start/end bounds."""
    zone = w.zone
    start = _instant(wall_start, zone)
    if w.duration is None:
        end = _instant(w.end or wall_start, zone)
    else:
        end = _instant(wall_start + w.duration, zone)
        if end <= start:  # shorter than the spring-forward gap it starts in: elapsed time
            end = start + w.duration
    if w.start is not None:
        start = max(start, _instant(w.start, zone))
    if w.end is not None:
        end = min(end, _instant(w.end, zone))
    return Span(w, start, end) if start < end else None


def _wall(t: datetime, zone: ZoneInfo) -> datetime:
    return t.astimezone(zone).replace(tzinfo=None)


def _spans(w: Window, lo: datetime, hi: datetime) -> Iterator[Span]:
    """Occurrences of `w` whose wall-clock start lies in [lo, hi] (naive local), in order."""
    if w.recurrence is None:
        if w.start is not None and lo <= w.start <= hi:
            span = _span(w, w.start)
            if span is not None:
                yield span
        return
    for wall in w.recurrence.starts(lo):
        if wall > hi or (w.end is not None and wall >= w.end):
            return
        span = _span(w, wall)
        if span is not None:
            yield span


def covering(w: Window, now: datetime) -> Span | None:
    """The occurrence of `w` in force at `now` (the one lasting longest, if several)."""
    local = _wall(now, w.zone)
    back = (w.duration or ((w.end or local) - (w.start or local))) + _SLACK
    found = [s for s in _spans(w, local - back, local + _SLACK) if s.start <= now < s.end]
    return max(found, key=lambda s: s.end, default=None)


def next_start(w: Window, now: datetime) -> datetime | None:
    """The first instant after `now` at which an occurrence of `w` begins, within a year."""
    local = _wall(now, w.zone)
    best: datetime | None = None
    best_wall: datetime | None = None
    for span in _spans(w, local - _SLACK, local + HORIZON):
        wall = _wall(span.start, w.zone)
        if best_wall is not None and wall > best_wall + _SLACK:
            break  # starts come in wall-clock order; only a DST shift can reorder them a little
        if span.start > now and (best is None or span.start < best):
            best, best_wall = span.start, wall
    return best


def decide(windows: Sequence[Window], clock: datetime | float) -> Verdict:
    """Whether a deploy may go at `clock` (an aware datetime, or seconds since the epoch as the
    engine's clock gives them) under `windows`: the rules of this module."""
    now = _aware(clock)
    deny = _in_force(windows, Kind.DENY, now)
    allows = [w for w in windows if w.kind is Kind.ALLOW]
    allowed = not allows or any(covering(w, now) is not None for w in allows)
    if not deny and allowed:
        return Verdict(WindowState.OPEN)
    until = _opens(windows, now)
    if deny:
        by = max(deny, key=lambda s: (s.end, s.window.name)).window
        names = tuple(dict.fromkeys(s.window.name for s in deny))
        if until is None:
            reason = f"frozen by window {by.name}: no opening found ahead"
        else:
            reason = f"frozen until {_when(until, by.zone, now)} by window {by.name}"
        return Verdict(WindowState.FROZEN, reason, by.name, names, until)
    names = tuple(w.name for w in allows)
    label = ("window " if len(names) == 1 else "windows ") + ", ".join(names)
    zone = allows[0].zone
    when = f"next opens {_when(until, zone, now)}" if until else "no opening found ahead"
    reason = f"outside allowed time ({label}): {when}"
    return Verdict(WindowState.OUTSIDE, reason, names[0], names, until)


def _aware(clock: datetime | float) -> datetime:
    if isinstance(clock, datetime):
        if clock.tzinfo is None:
            raise ValueError("a clock value must be aware (UTC) or seconds since the epoch")
        return clock
    return datetime.fromtimestamp(clock, UTC)


def _in_force(windows: Sequence[Window], kind: Kind, t: datetime) -> list[Span]:
    return [s for w in windows if w.kind is kind and (s := covering(w, t)) is not None]


def _opens(windows: Sequence[Window], now: datetime) -> datetime | None:
    """The first instant from `now` on at which no deny window and (if any) an allow window is
    in force; None when none is found within a year and _MAX_STEPS changes."""
    allows = [w for w in windows if w.kind is Kind.ALLOW]
    t = now
    for _ in range(_MAX_STEPS):
        if t > now + HORIZON:
            return None
        deny = _in_force(windows, Kind.DENY, t)
        if deny:
            t = max(s.end for s in deny)
            continue
        if allows and not any(covering(w, t) is not None for w in allows):
            starts = [n for w in allows if (n := next_start(w, t)) is not None]
            if not starts:
                return None
            t = min(starts)
            continue
        return t
    return None


def _when(t: datetime, zone: ZoneInfo, now: datetime) -> str:
    """ "Mon 09:00 Europe/Berlin" within the coming week, else with the date."""
    local = t.astimezone(zone)
    days = (local.date() - now.astimezone(zone).date()).days
    text = local.strftime("%a %H:%M") if 0 <= days < 7 else local.strftime("%a %Y-%m-%d %H:%M")
    return f"{text} {zone.key}"


# --- overrides ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Override:
    """An explicit deploy through a closed window (`sync --override-window --reason`): who,
    when, why, which windows it went through and the commit it let out."""

    reason: str
    by: str
    at: str  # RFC 3339 UTC, as the other reconciler.dev/ times
    windows: tuple[str, ...]
    sha: str | None = None

    @property
    def text(self) -> str:
        """For the Event and the notification."""
        what = f"deployed {self.sha[:7]}" if self.sha else "deployed"
        label = ("window " if len(self.windows) == 1 else "windows ") + ", ".join(self.windows)
        return f"{what} through {label}: override by {self.by}: {self.reason}"[:1024]


def override(
    verdict: Verdict, reason: str, by: str, clock: datetime | float, sha: str | None = None
) -> Override | None:
    """The override to record when a deploy goes out despite `verdict`; None when the window was
    open (nothing was overridden). A missing, multi-line or overlong reason is a CommandError."""
    why = " ".join(reason.split()) if isinstance(reason, str) else ""
    if not why:
        raise CommandError('--override-window needs --reason "why this cannot wait"')
    if "\n" in reason.strip() or len(why) > MAX_REASON:
        raise CommandError(f"the override reason must be one line, at most {MAX_REASON} characters")
    now = _aware(clock)
    if verdict.may_deploy:
        return None
    at = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return Override(why, by or "someone", at, verdict.windows, sha)


def override_annotations(o: Override) -> dict[str, str | None]:
    """The annotations that record `o` on the Deployment (None removes a key: no stale sha)."""
    return {
        WINDOW_OVERRIDE: o.reason,
        WINDOW_OVERRIDE_BY: o.by,
        WINDOW_OVERRIDE_AT: o.at,
        WINDOW_OVERRIDE_SHA: o.sha,
        WINDOW_OVERRIDE_WINDOWS: ",".join(o.windows),
    }


def read_override(annotations: Mapping[str, str]) -> Override | None:
    """The last override recorded on a Deployment, or None."""
    reason = annotations.get(WINDOW_OVERRIDE)
    if not reason:
        return None
    windows = tuple(n for n in annotations.get(WINDOW_OVERRIDE_WINDOWS, "").split(",") if n)
    return Override(
        reason,
        annotations.get(WINDOW_OVERRIDE_BY, "someone"),
        annotations.get(WINDOW_OVERRIDE_AT, ""),
        windows,
        annotations.get(WINDOW_OVERRIDE_SHA) or None,
    )


def cron_next(text: str, after: datetime) -> datetime:
    """The first start of the five-field crontab `text` (or an alias such as ``@daily``) after
    the naive wall-clock time `after` (its next whole minute or later); ValueError if `text` is
    not one (used for CronJob schedules by core/workloads.py)."""
    lo = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
    for start in _cron(text).starts(lo):
        return start
    raise ValueError(f"{text!r} never starts")
