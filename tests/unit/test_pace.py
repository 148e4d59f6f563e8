"""core.pace: the adaptive number of GitHub requests in flight, inside the secondary limits."""

from __future__ import annotations

import pytest

from reconciler.core.pace import GITHUB_MAX_CONCURRENT, Pace
from reconciler.settings import Settings


def test_the_pace_doubles_each_round_trip_up_to_githubs_hundred() -> None:
    pace = Pace(limit=8)
    rounds = []
    while pace.bounded < GITHUB_MAX_CONCURRENT:
        for _ in range(pace.bounded):  # a round trip: every request in flight is answered
            pace = pace.answered()
        rounds.append(pace.bounded)
    assert rounds == [16, 32, 64, 100]
    assert pace.answered().bounded == GITHUB_MAX_CONCURRENT


def test_a_secondary_limit_halves_the_pace_and_pauses_until_retry_after() -> None:
    pace = Pace(limit=64).limited(retry_after=30, now=1000.0)
    assert pace.bounded == 32
    assert not pace.start(in_flight=0, now=1029.9)
    assert pace.wait(1010.0) == pytest.approx(20.0)
    assert pace.start(in_flight=31, now=1030.0) and not pace.start(in_flight=32, now=1030.0)
    again = pace.limited(retry_after=5, now=1001.0)  # a shorter retry-after never shortens it
    assert again.paused_until == 1030.0 and again.bounded == 16


def test_the_pace_never_falls_below_its_floor_nor_exceeds_githubs_limit() -> None:
    pace = Pace(limit=1)
    for _ in range(5):
        pace = pace.limited(retry_after=0, now=0.0)
    assert pace.bounded == 1 and pace.start(in_flight=0, now=0.0)
    with pytest.raises(ValueError, match="100"):
        Pace(ceiling=101)


def test_the_ceiling_is_a_setting_of_at_most_a_hundred() -> None:
    assert Settings.from_env({}).github.max_concurrency == 32
    assert Settings.from_env({"RECONCILER_GITHUB_CONCURRENCY": "100"}).github.max_concurrency == 100
    github = Settings.from_env({"RECONCILER_GITHUB_CONCURRENCY": "4"}).github
    assert (github.concurrency, github.max_concurrency) == (4, 4)
    with pytest.raises(Exception, match="RECONCILER_GITHUB_CONCURRENCY must be from 1 to 100"):
        Settings.from_env({"RECONCILER_GITHUB_CONCURRENCY": "500"})
