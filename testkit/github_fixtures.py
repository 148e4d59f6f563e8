"""pytest fixtures: a GitHub stand-in on loopback and a GitHubSource pointed at it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from testkit.github import GitHubStandIn

TOKEN = "ghp_test_token"


@pytest.fixture
def github() -> Iterator[GitHubStandIn]:
    with GitHubStandIn(tokens=[TOKEN]) as gh:
        yield gh
        assert gh.schema_violations == [], gh.schema_violations
        assert gh.internal_errors == [], gh.internal_errors
