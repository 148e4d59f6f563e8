"""Compatibility name for the GitHub stand-in package: import from testkit.github instead."""

from testkit.github import *  # noqa: F403
