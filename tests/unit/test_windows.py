"""Deploy windows (reconciler/core/windows.py): parsing, the verdict at a clock, DST, overrides."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from reconciler.core.errors import CommandError
from reconciler.core.windows import (
    OVERRIDE_KEYS,
    Kind,
    Verdict,
    Window,
    WindowState,
    covering,
    decide,
    override,
    override_annotations,
    parse_duration,
    parse_windows,
    read_override,
    select,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")

Problems = list[tuple[tuple[str, ...], str, "str | None"]]


def parse(tables: dict[str, Any]) -> tuple[dict[str, Window], Problems]:
    problems: Problems = []
    windows = parse_windows(
        {"windows": tables}, lambda where, msg, site: problems.append((where, msg, site))
    )
    return windows, problems


def one(**table: Any) -> Window:
    windows, problems = parse({"w": table})
    assert problems == []
    return windows["w"]


def at(zone: ZoneInfo, *parts: int, fold: int = 0) -> datetime:
    year, month, day, hour, minute = (*parts, 0, 0)[:5]
    return datetime(year, month, day, hour, minute, tzinfo=zone, fold=fold)


WEEKEND_CRON = {"kind": "deny", "cron": "0 16 * * fri", "duration": "65h"}
WEEKEND_RRULE = {
    "kind": "deny",
    "rrule": "FREQ=WEEKLY;BYDAY=FR;BYHOUR=16;BYMINUTE=0",
    "duration": "65h",
}


# --- parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("65h", timedelta(hours=65)),
        ("30m", timedelta(minutes=30)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("2d", timedelta(days=2)),
        ("1d2h3m", timedelta(days=1, hours=2, minutes=3)),
    ],
)
def test_durations_parse(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "65", "h", "1.5h", "30m1h", "0h", "-1h", "1 h", "65x"])
def test_bad_durations_say_how_to_write_one(text: str) -> None:
    with pytest.raises(ValueError, match=r"duration"):
        parse_duration(text)


def test_a_weekly_freeze_parses_from_rrule_and_from_cron() -> None:
    for table in (WEEKEND_CRON, WEEKEND_RRULE):
        w = one(**table, timezone="Europe/Berlin")
        assert w.kind is Kind.DENY
        assert w.duration == timedelta(hours=65)
        assert w.timezone == "Europe/Berlin"


BASE = {"kind": "deny", "cron": "0 16 * * 5", "duration": "1h", "timezone": "UTC"}
DATED = {"cron": None, "duration": None, "start": "2026-12-21", "end": "2026-12-22"}
RULE = {"cron": None, "rrule": "FREQ=WEEKLY;BYDAY=FR"}


@pytest.mark.parametrize(
    ("changes", "key", "words"),
    [
        ({"kind": None}, "kind", '"deny"'),
        ({"kind": "block"}, "kind", '"allow"'),
        ({"timezone": None}, "timezone", "IANA"),
        ({"timezone": "Mars/Base"}, "timezone", "IANA"),
        ({"timezone": "Europe"}, "timezone", "IANA"),
        ({"timezone": "localtime"}, "timezone", "IANA"),
        ({"duration": "400d"}, "duration", "longer than a year"),
        ({"duration": None}, "duration", "required"),
        ({"duration": "65"}, "duration", "65h"),
        ({"duration": 65}, "duration", "65h"),
        ({"cron": "0 16 * *"}, "cron", "five"),
        ({"cron": "0 25 * * *"}, "cron", "0-23"),
        ({"cron": "0 0 31 2 *"}, "cron", "never"),
        ({"cron": "0 0 5-1 * *"}, "cron", "backwards"),
        ({"cron": "0 0 */0 * *"}, "cron", "step"),
        ({"cron": 5}, "cron", "crontab"),
        ({**RULE, "rrule": "BYDAY=FR"}, "rrule", "FREQ"),
        ({**RULE, "rrule": "FREQ=WEEKLY;BYDAY=XX"}, "rrule", "RFC 5545"),
        ({**RULE, "rrule": "DTSTART:20260102T160000\nRRULE:FREQ=WEEKLY"}, "rrule", '"start"'),
        ({**RULE, "rrule": "FREQ=WEEKLY;INTERVAL=2"}, "rrule", '"start"'),
        ({**RULE, "rrule": "FREQ=DAILY;COUNT=3"}, "rrule", '"start"'),
        ({**RULE, "rrule": 7}, "rrule", "RRULE string"),
        ({**RULE, "rrule": "FREQ=DAILY;BYMONTH=2;BYMONTHDAY=30"}, "rrule", "never"),
        ({**RULE, "rrule": "FREQ=DAILY;UNTIL=20261201T000000Z"}, "rrule", "drop the trailing Z"),
        ({**RULE, "rrule": "FREQ=DAILY;INTERVAL=x"}, "rrule", "INTERVAL"),
        ({**RULE, "rrule": "FREQ=DAILY;BYHOUR=25"}, "rrule", "RFC 5545"),
        ({**RULE, "rrule": "FREQ=DAILY;FOO=1"}, "rrule", "RFC 5545"),
        ({**RULE, "rrule": "FREQ=YEARLY;BYMONTH=4,6;BYMONTHDAY=-31"}, "rrule", "never"),
        ({"rrule": "FREQ=DAILY"}, "cron", "not both"),
        ({**DATED, "end": None}, "end", "needs"),
        ({**DATED, "end": "2026-12-20"}, "end", "after"),
        ({**DATED, "start": "21.12.2026"}, "start", "date"),
        ({**DATED, "start": "2026-12-21T10:00+01:00"}, "start", "offset"),
        ({**DATED, "duration": "1h"}, "duration", "needs"),
        ({"zone": "x"}, "zone", "unknown key"),
    ],
)
def test_problems_name_the_key_at_fault(changes: dict[str, Any], key: str, words: str) -> None:
    table = {k: v for k, v in {**BASE, **changes}.items() if v is not None}
    windows, problems = parse({"freeze": table})
    assert windows == {}
    assert problems, table
    where, message, site = problems[0]
    assert where == ("windows", "freeze", key)
    assert words in message
    assert site is None


def test_windows_as_tomllib_reads_them_from_sites_toml() -> None:
    data = tomllib.loads(
        """
[windows.weekend-freeze]
kind = "deny"
cron = "0 16 * * fri"
duration = "65h"
timezone = "Europe/Berlin"

[windows.launch-freeze]
kind = "deny"
start = 2026-12-21
end = 2027-01-04
timezone = "Europe/Berlin"

[windows.business-hours]
kind = "allow"
rrule = "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR;BYHOUR=8;BYMINUTE=0"
duration = "9h"
timezone = "America/New_York"
start = 2026-01-05T00:00:00
"""
    )
    problems: Problems = []
    windows = parse_windows(data, lambda w, m, s: problems.append((w, m, s)))
    assert problems == []
    assert list(windows) == ["weekend-freeze", "launch-freeze", "business-hours"]
    launch = windows["launch-freeze"]
    assert (launch.start, launch.end) == (datetime(2026, 12, 21), datetime(2027, 1, 5))
    offset = tomllib.loads('[windows.x]\nkind="deny"\ntimezone="UTC"\nstart=2026-12-21T00:00:00Z')
    _, problems = parse(offset["windows"])
    assert problems[0][0] == ("windows", "x", "start") and "offset" in problems[0][1]


def test_every_problem_of_a_window_is_reported_not_only_the_first() -> None:
    _, problems = parse(
        {"w": {"kind": "nope", "timezone": "Nowhere", "cron": "x", "duration": "y"}}
    )
    assert sorted(where[-1] for where, _, _ in problems) == ["cron", "duration", "kind", "timezone"]


def test_a_bad_window_does_not_hide_the_good_ones() -> None:
    windows, problems = parse(
        {"good": {**WEEKEND_CRON, "timezone": "UTC"}, "bad": {"kind": "deny"}, "Bad Name": {}}
    )
    assert set(windows) == {"good"}
    assert {where[1] for where, _, _ in problems} == {"bad", "Bad Name"}


def test_windows_must_be_a_table() -> None:
    problems: Problems = []
    assert parse_windows({"windows": ["x"]}, lambda w, m, s: problems.append((w, m, s))) == {}
    assert problems[0][0] == ("windows",)
    assert parse_windows({}, lambda w, m, s: problems.append((w, m, s))) == {}


def test_a_site_selects_windows_by_name_and_unknown_names_are_problems() -> None:
    windows, _ = parse(
        {
            "a": {**WEEKEND_CRON, "timezone": "UTC"},
            "b": {"kind": "allow", "cron": "0 8 * * 1-5", "duration": "9h", "timezone": "UTC"},
        }
    )
    problems: Problems = []

    def report(where: tuple[str, ...], msg: str, site: str | None) -> None:
        problems.append((where, msg, site))

    where = ("sites", "blog", "windows")
    assert [w.name for w in select(["b", "a", "b"], windows, where, "blog", report)] == ["b", "a"]
    assert problems == []
    assert [w.name for w in select(["a", "c"], windows, where, "blog", report)] == ["a"]
    assert problems == [(where, "unknown window(s) c; known: a, b", "blog")]
    assert select("a", windows, where, "blog", report) == ()
    assert "list of window names" in problems[-1][1]


# --- the verdict --------------------------------------------------------------------------


def test_no_windows_means_a_deploy_may_go() -> None:
    v = decide([], datetime(2026, 12, 25, tzinfo=UTC))
    assert v == Verdict(WindowState.OPEN)
    assert v.may_deploy and v.reason == ""


def test_the_clock_is_an_aware_value_or_seconds_since_the_epoch() -> None:
    with pytest.raises(ValueError, match="aware"):
        decide([], datetime(2026, 12, 25))
    w = one(**WEEKEND_CRON, timezone="Europe/Berlin")
    saturday = at(BERLIN, 2026, 12, 5, 12)
    assert decide([w], saturday.timestamp()) == decide([w], saturday)
    frozen = decide([w], saturday)
    o = override(frozen, "urgent", "alice", saturday.timestamp())
    assert o is not None and o.at == "2026-12-05T11:00:00Z"


@pytest.mark.parametrize("table", [WEEKEND_CRON, WEEKEND_RRULE], ids=["cron", "rrule"])
def test_fridays_from_16_for_65h(table: dict[str, Any]) -> None:
    w = one(**table, timezone="Europe/Berlin")
    # 2026-12-04 is a Friday, far from any DST switch
    assert decide([w], at(BERLIN, 2026, 12, 4, 15, 59)).may_deploy
    for moment in (
        at(BERLIN, 2026, 12, 4, 16, 0),  # it starts: inclusive
        at(BERLIN, 2026, 12, 5, 12, 0),
        at(BERLIN, 2026, 12, 6, 23, 59),  # started two days ago and still lasts: the look-back
        at(BERLIN, 2026, 12, 7, 8, 59),
    ):
        v = decide([w], moment)
        assert v.state is WindowState.FROZEN, moment
        assert v.reason == "frozen until Mon 09:00 Europe/Berlin by window w"
        assert v.until == at(BERLIN, 2026, 12, 7, 9, 0)
        assert v.window == "w" and v.windows == ("w",)
    assert decide([w], at(BERLIN, 2026, 12, 7, 9, 0)).may_deploy  # it ends: exclusive
    assert decide([w], at(BERLIN, 2026, 12, 9, 12, 0)).may_deploy


def test_deny_wins_over_allow() -> None:
    windows, _ = parse(
        {
            "weekend-freeze": {**WEEKEND_CRON, "timezone": "Europe/Berlin"},
            "always": {"kind": "allow", "cron": "0 0 * * *", "duration": "24h", "timezone": "UTC"},
        }
    )
    v = decide(list(windows.values()), at(BERLIN, 2026, 12, 5, 12))
    assert v.state is WindowState.FROZEN
    assert v.window == "weekend-freeze"


def test_outside_allowed_time_says_when_it_next_opens() -> None:
    business = one(kind="allow", cron="0 8 * * mon-fri", duration="9h", timezone="Europe/Berlin")
    assert decide([business], at(BERLIN, 2026, 12, 8, 8, 0)).may_deploy
    assert decide([business], at(BERLIN, 2026, 12, 8, 16, 59)).may_deploy
    v = decide([business], at(BERLIN, 2026, 12, 8, 17, 0))
    assert v.state is WindowState.OUTSIDE
    assert v.reason == "outside allowed time (window w): next opens Wed 08:00 Europe/Berlin"
    assert v.until == at(BERLIN, 2026, 12, 9, 8, 0)
    weekend = decide([business], at(BERLIN, 2026, 12, 5, 12))  # Saturday
    assert weekend.until == at(BERLIN, 2026, 12, 7, 8, 0)
    assert "next opens Mon 08:00" in weekend.reason


def test_several_allow_windows_union() -> None:
    windows, _ = parse(
        {
            "mornings": {"kind": "allow", "cron": "0 8 * * *", "duration": "2h", "timezone": "UTC"},
            "afternoons": {
                "kind": "allow",
                "cron": "0 14 * * *",
                "duration": "2h",
                "timezone": "UTC",
            },
        }
    )
    both = list(windows.values())
    assert decide(both, datetime(2026, 12, 8, 9, tzinfo=UTC)).may_deploy
    assert decide(both, datetime(2026, 12, 8, 15, tzinfo=UTC)).may_deploy
    v = decide(both, datetime(2026, 12, 8, 11, tzinfo=UTC))
    assert v.state is WindowState.OUTSIDE
    assert v.until == datetime(2026, 12, 8, 14, tzinfo=UTC)
    assert v.reason.startswith("outside allowed time (windows mornings, afternoons): next opens")
    assert v.windows == ("mornings", "afternoons")


def test_until_is_past_every_freeze_that_follows_and_inside_an_allow_window() -> None:
    windows, _ = parse(
        {
            "weekend-freeze": {**WEEKEND_CRON, "timezone": "Europe/Berlin"},
            "monday-maintenance": {
                "kind": "deny",
                "cron": "0 9 * * mon",
                "duration": "2h",
                "timezone": "Europe/Berlin",
            },
            "business": {
                "kind": "allow",
                "cron": "0 8 * * 1-5",
                "duration": "9h",
                "timezone": "Europe/Berlin",
            },
        }
    )
    v = decide(list(windows.values()), at(BERLIN, 2026, 12, 5, 12))
    assert v.state is WindowState.FROZEN
    assert v.window == "weekend-freeze"
    assert v.until == at(BERLIN, 2026, 12, 7, 11, 0)  # the freeze, then the maintenance
    assert v.reason == "frozen until Mon 11:00 Europe/Berlin by window weekend-freeze"
    # A freeze ending at night waits for the next allowed morning.
    late = one(kind="deny", cron="0 18 * * *", duration="4h", timezone="Europe/Berlin")
    v = decide([late, windows["business"]], at(BERLIN, 2026, 12, 8, 19))
    assert v.until == at(BERLIN, 2026, 12, 9, 8, 0)


def test_a_dated_launch_freeze_covers_its_whole_last_day() -> None:
    w = one(kind="deny", start="2026-12-21", end="2027-01-04", timezone="Europe/Berlin")
    assert decide([w], at(BERLIN, 2026, 12, 20, 23, 59)).may_deploy
    v = decide([w], at(BERLIN, 2026, 12, 21, 0, 0))
    assert v.state is WindowState.FROZEN
    assert v.until == at(BERLIN, 2027, 1, 5, 0, 0)
    assert v.reason == "frozen until Tue 2027-01-05 00:00 Europe/Berlin by window w"
    assert decide([w], at(BERLIN, 2027, 1, 4, 23, 59)).state is WindowState.FROZEN
    assert decide([w], at(BERLIN, 2027, 1, 5, 0, 0)).may_deploy


def test_a_dated_window_with_times_ends_exactly_at_its_end() -> None:
    w = one(kind="deny", start="2026-12-21T18:00", end="2026-12-22T06:00", timezone="UTC")
    assert decide([w], datetime(2026, 12, 21, 17, 59, tzinfo=UTC)).may_deploy
    assert not decide([w], datetime(2026, 12, 21, 18, tzinfo=UTC)).may_deploy
    assert decide([w], datetime(2026, 12, 22, 6, tzinfo=UTC)).may_deploy


def test_start_and_end_bound_a_recurrence() -> None:
    nightly = one(
        kind="deny",
        cron="0 20 * * *",
        duration="12h",
        timezone="UTC",
        start="2026-12-10",
        end="2026-12-12",
    )
    assert decide([nightly], datetime(2026, 12, 9, 21, tzinfo=UTC)).may_deploy  # before start
    assert not decide([nightly], datetime(2026, 12, 10, 21, tzinfo=UTC)).may_deploy
    # the occurrence of the 12th starts after the end (the whole 12th is included)
    assert not decide([nightly], datetime(2026, 12, 12, 21, tzinfo=UTC)).may_deploy
    v = decide([nightly], datetime(2026, 12, 12, 23, tzinfo=UTC))
    assert v.until == datetime(2026, 12, 13, tzinfo=UTC)  # clipped at the end bound
    assert decide([nightly], datetime(2026, 12, 13, 21, tzinfo=UTC)).may_deploy


def test_a_rule_with_an_interval_counts_from_its_start() -> None:
    fortnightly = one(
        kind="deny",
        rrule="FREQ=WEEKLY;INTERVAL=2;BYDAY=FR;BYHOUR=16;BYMINUTE=0",
        duration="65h",
        timezone="UTC",
        start="2026-01-02",  # a Friday: frozen that weekend, then every other one
    )
    assert not decide([fortnightly], datetime(2026, 12, 5, 12, tzinfo=UTC)).may_deploy
    assert decide([fortnightly], datetime(2026, 12, 12, 12, tzinfo=UTC)).may_deploy
    assert not decide([fortnightly], datetime(2026, 12, 19, 12, tzinfo=UTC)).may_deploy


def test_an_rrule_may_be_written_in_lower_case_and_with_its_rrule_prefix() -> None:
    for text in ("freq=weekly;byday=fr;byhour=16", "RRULE:FREQ=WEEKLY;BYDAY=FR;BYHOUR=16"):
        w = one(kind="deny", rrule=text, duration="65h", timezone="UTC")
        assert not decide([w], datetime(2026, 12, 5, tzinfo=UTC)).may_deploy


def test_a_rule_that_ended_no_longer_freezes() -> None:
    w = one(kind="deny", rrule="FREQ=DAILY;UNTIL=20261201T000000", duration="23h", timezone="UTC")
    assert not decide([w], datetime(2026, 11, 30, 12, tzinfo=UTC)).may_deploy
    assert decide([w], datetime(2026, 12, 8, 12, tzinfo=UTC)).may_deploy


def test_cron_day_of_month_and_day_of_week_both_restricted_match_either() -> None:
    w = one(kind="deny", cron="0 0 13 * fri", duration="24h", timezone="UTC")
    assert not decide([w], datetime(2026, 12, 13, 12, tzinfo=UTC)).may_deploy  # a Sunday, 13th
    assert not decide([w], datetime(2026, 12, 11, 12, tzinfo=UTC)).may_deploy  # a Friday
    assert decide([w], datetime(2026, 12, 10, 12, tzinfo=UTC)).may_deploy


@pytest.mark.parametrize(
    ("cron", "frozen", "free"),
    [
        ("*/15 9-10 * * *", datetime(2026, 12, 8, 11, 44), datetime(2026, 12, 8, 11, 45)),
        ("0 0 * dec sun", datetime(2026, 12, 6, 0, 30), datetime(2026, 11, 29, 0, 30)),
        ("0 0 * * 7", datetime(2026, 12, 6, 0, 30), datetime(2026, 12, 7, 0, 30)),
        ("@daily", datetime(2026, 12, 8, 0, 30), datetime(2026, 12, 8, 1, 30)),
        ("* 9 * * *", datetime(2026, 12, 8, 10, 58, 30), datetime(2026, 12, 8, 11, 0)),
        ("30 9 * * *", datetime(2026, 12, 8, 10, 29), datetime(2026, 12, 8, 10, 30)),
        ("0 0 1,15 * *", datetime(2026, 12, 15, 0, 30), datetime(2026, 12, 14, 0, 30)),
    ],
)
def test_cron_forms(cron: str, frozen: datetime, free: datetime) -> None:
    w = one(kind="deny", cron=cron, duration="1h", timezone="UTC")
    assert not decide([w], frozen.replace(tzinfo=UTC)).may_deploy
    assert decide([w], free.replace(tzinfo=UTC)).may_deploy


def test_every_hour_of_a_cron_start_counts_and_a_freeze_without_end_says_so() -> None:
    hourly = one(kind="deny", cron="30 * * * *", duration="30m", timezone="UTC")
    assert not decide([hourly], datetime(2026, 12, 8, 13, 45, tzinfo=UTC)).may_deploy
    assert decide([hourly], datetime(2026, 12, 8, 13, 15, tzinfo=UTC)).may_deploy
    always = one(kind="deny", cron="30 * * * *", duration="1h", timezone="UTC")
    v = decide([always], datetime(2026, 12, 8, 13, 45, tzinfo=UTC))
    assert v.state is WindowState.FROZEN and v.until is None
    assert v.reason == "frozen by window w: no opening found ahead"
    never = one(kind="allow", start="2020-01-01", end="2020-01-02", timezone="UTC")
    v = decide([never], datetime(2026, 12, 8, tzinfo=UTC))
    assert v.state is WindowState.OUTSIDE and v.until is None
    assert v.reason == "outside allowed time (window w): no opening found ahead"


def test_a_long_running_minutely_rule_is_cheap_to_evaluate() -> None:
    w = one(kind="deny", rrule="FREQ=MINUTELY;INTERVAL=1;BYSECOND=0", duration="1m", timezone="UTC")
    # anchored in 2000: the rule is moved forward by whole minutes, not walked 14 million times
    assert covering(w, datetime(2026, 12, 8, 12, 0, 30, tzinfo=UTC)) is not None


def test_a_monthly_rule_walks_from_its_anchor_in_whole_months() -> None:
    w = one(kind="deny", rrule="FREQ=MONTHLY;BYDAY=1MO;BYHOUR=9", duration="2h", timezone="UTC")
    span = covering(w, datetime(2026, 12, 7, 10, tzinfo=UTC))  # the first Monday of December
    assert span is not None and span.start == datetime(2026, 12, 7, 9, tzinfo=UTC)
    assert decide([w], datetime(2026, 12, 14, 10, tzinfo=UTC)).may_deploy
    v = decide([w], datetime(2027, 1, 4, 9, 30, tzinfo=UTC))
    assert v.until == datetime(2027, 1, 4, 11, tzinfo=UTC)
    yearly = one(
        kind="deny", rrule="FREQ=YEARLY;BYMONTH=12;BYMONTHDAY=24", duration="3d", timezone="UTC"
    )
    assert not decide([yearly], datetime(2026, 12, 26, tzinfo=UTC)).may_deploy
    assert decide([yearly], datetime(2026, 12, 27, tzinfo=UTC)).may_deploy


def test_windows_parsed_twice_are_equal_and_hashable() -> None:
    first, second = one(**WEEKEND_CRON, timezone="UTC"), one(**WEEKEND_CRON, timezone="UTC")
    assert first == second and hash(first) == hash(second)
    assert first != one(**WEEKEND_RRULE, timezone="UTC")


# --- daylight saving ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "spring_friday", "autumn_friday"),
    [
        (BERLIN, (2026, 3, 27), (2026, 10, 23)),  # clocks change Sun 29 Mar / Sun 25 Oct
        (NEW_YORK, (2026, 3, 6), (2026, 10, 30)),  # clocks change Sun 8 Mar / Sun 1 Nov
    ],
)
def test_a_weekend_freeze_across_a_dst_switch_ends_monday_0900_local(
    zone: ZoneInfo, spring_friday: tuple[int, int, int], autumn_friday: tuple[int, int, int]
) -> None:
    w = one(**WEEKEND_RRULE, timezone=zone.key)
    for friday, elapsed in ((spring_friday, 64), (autumn_friday, 66)):
        start = at(zone, *friday, 16, 0)
        monday = at(zone, *friday, 9, 0) + timedelta(days=3)  # wall clock: Mon 09:00
        v = decide([w], start + timedelta(hours=1))
        assert v.until == monday
        assert v.reason == f"frozen until Mon 09:00 {zone.key} by window w"
        # a wall-clock duration: 64 or 66 hours elapsed
        assert monday.astimezone(UTC) - start.astimezone(UTC) == timedelta(hours=elapsed)
        assert not decide([w], monday - timedelta(seconds=1)).may_deploy
        assert decide([w], monday).may_deploy
        # on the Sunday the clocks changed the look-back still finds Friday's start
        assert not decide([w], at(zone, *friday, 12, 0) + timedelta(days=2)).may_deploy


def test_a_start_in_the_skipped_spring_hour_moves_forward_by_the_gap() -> None:
    # Europe/Berlin skips 02:00-03:00 on 2026-03-29: a 02:30 start begins at 03:30 CEST.
    w = one(kind="deny", cron="30 2 * * *", duration="2h", timezone="Europe/Berlin")
    span = covering(w, datetime(2026, 3, 29, 2, 0, tzinfo=UTC))  # 04:00 CEST
    assert span is not None
    assert span.start == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)  # 03:30 CEST
    assert span.end == datetime(2026, 3, 29, 2, 30, tzinfo=UTC)  # 04:30 CEST, as on the wall
    assert decide([w], datetime(2026, 3, 29, 1, 29, tzinfo=UTC)).may_deploy
    # the day before and after, 02:30 local as usual
    assert covering(w, at(BERLIN, 2026, 3, 28, 2, 30)) is not None
    assert covering(w, at(BERLIN, 2026, 3, 30, 2, 30)) is not None


def test_a_window_shorter_than_the_gap_it_starts_in_lasts_its_duration_in_elapsed_time() -> None:
    w = one(kind="deny", cron="30 2 * * *", duration="20m", timezone="Europe/Berlin")
    span = covering(w, datetime(2026, 3, 29, 1, 40, tzinfo=UTC))  # 03:40 CEST
    assert span is not None
    assert span.end - span.start == timedelta(minutes=20)


def test_a_start_in_the_repeated_autumn_hour_happens_once_at_the_first() -> None:
    # America/New_York repeats 01:00-02:00 on 2026-11-01: a 01:30 start is the EDT one, and
    # its wall-clock end (02:00, EST) comes after the repeated hour: one occurrence, 90 minutes.
    w = one(kind="deny", cron="30 1 * * *", duration="30m", timezone="America/New_York")
    first = at(NEW_YORK, 2026, 11, 1, 1, 45, fold=0)  # 05:45 UTC, EDT
    second = at(NEW_YORK, 2026, 11, 1, 1, 45, fold=1)  # 06:45 UTC, EST
    assert first.astimezone(UTC) == datetime(2026, 11, 1, 5, 45, tzinfo=UTC)
    spans = {covering(w, first), covering(w, second)}
    assert len(spans) == 1
    (span,) = spans
    assert span is not None
    assert span.start == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)  # 01:30 EDT
    assert span.end == datetime(2026, 11, 1, 7, 0, tzinfo=UTC)  # 02:00 EST
    assert decide([w], at(NEW_YORK, 2026, 11, 1, 1, 29, fold=0)).may_deploy
    assert decide([w], at(NEW_YORK, 2026, 11, 1, 2, 0)).may_deploy


def test_an_occurrence_spanning_the_autumn_fold_ends_at_its_wall_clock_end() -> None:
    # 00:00 for 3 h on 2026-10-25 in Berlin: ends at 03:00 CET, 4 hours later.
    w = one(kind="deny", cron="0 0 * * *", duration="3h", timezone="Europe/Berlin")
    span = covering(w, at(BERLIN, 2026, 10, 25, 2, 30, fold=1))
    assert span is not None
    assert span.start == datetime(2026, 10, 24, 22, 0, tzinfo=UTC)
    assert span.end == datetime(2026, 10, 25, 2, 0, tzinfo=UTC)  # 03:00 CET
    assert span.end - span.start == timedelta(hours=4)
    v = decide([w], at(BERLIN, 2026, 10, 25, 2, 30, fold=0))
    assert v.until == at(BERLIN, 2026, 10, 25, 3, 0)


def test_business_hours_open_at_0800_local_on_both_sides_of_a_switch() -> None:
    business = one(kind="allow", cron="0 8 * * 1-5", duration="9h", timezone="America/New_York")
    for friday, monday in (((2026, 3, 6), (2026, 3, 9)), ((2026, 10, 30), (2026, 11, 2))):
        v = decide([business], at(NEW_YORK, *friday, 18, 0))
        assert v.until == at(NEW_YORK, *monday, 8, 0)
        assert v.reason == "outside allowed time (window w): next opens Mon 08:00 America/New_York"


# --- overrides ----------------------------------------------------------------------------


def test_an_override_records_who_when_why_which_windows_and_the_commit() -> None:
    w = one(**WEEKEND_CRON, timezone="Europe/Berlin")
    now = at(BERLIN, 2026, 12, 5, 12, 0)
    frozen = decide([w], now)
    o = override(frozen, "  hotfix for\tthe login outage ", "alice", now, sha="3f2c1a9deadbeef")
    assert o is not None
    assert o.reason == "hotfix for the login outage"
    assert o.at == "2026-12-05T11:00:00Z"
    assert o.windows == ("w",)
    assert (
        o.text
        == "deployed 3f2c1a9 through window w: override by alice: hotfix for the login outage"
    )
    notes = override_annotations(o)
    assert set(notes) == set(OVERRIDE_KEYS)
    assert all(k.startswith("reconciler.dev/window-override") for k in notes)
    assert notes["reconciler.dev/window-override-windows"] == "w"
    assert read_override({k: v for k, v in notes.items() if v is not None}) == o
    assert read_override({}) is None


def test_an_override_needs_a_one_line_reason() -> None:
    frozen = decide([one(**WEEKEND_CRON, timezone="UTC")], datetime(2026, 12, 5, 12, tzinfo=UTC))
    now = datetime(2026, 12, 5, 12, tzinfo=UTC)
    for reason in ("", "   ", "\n"):
        with pytest.raises(CommandError, match="--reason"):
            override(frozen, reason, "alice", now)
    for reason in ("first line\nsecond line", "x" * 501):
        with pytest.raises(CommandError, match="one line"):
            override(frozen, reason, "alice", now)


def test_an_override_of_an_open_window_records_nothing() -> None:
    now = datetime(2026, 12, 8, 12, tzinfo=UTC)
    assert override(decide([], now), "urgent", "alice", now) is None
