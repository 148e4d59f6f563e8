"""CI or not, and the one way a test reacts to a tool it needs but cannot have."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    """$CI is set (and not "", "0", "false" or "no"): what scripts/test sees on CI."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def unavailable(problem: str, enable: str) -> NoReturn:
    """A needed tool is missing: in CI that fails the test (CI must have every tool); elsewhere
    the test is skipped, saying how to enable it."""
    if in_ci():
        pytest.fail(f"required in CI but unavailable: {problem}", pytrace=False)
    pytest.skip(f"{problem}; to enable: {enable}")
