"""pytest fixtures: CNCF Distribution registries on loopback, one per auth mode, per session.

The binary comes from tools/build-registry.sh (scripts/test builds it). Under CI the tests fail
when it cannot be had; elsewhere they skip, saying how to enable them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from testkit.ci import unavailable
from testkit.registry import DistributionRegistry, RegistryUnavailable, find_registry


@pytest.fixture(scope="session")
def registry_binary() -> Path:
    try:
        return find_registry()
    except RegistryUnavailable as e:
        unavailable(
            f"the Distribution registry: {e}",
            "install Go >= 1.26 so tools/build-registry.sh can build the registry",
        )


@pytest.fixture(scope="session")
def distribution(registry_binary: Path) -> Iterator[Callable[[str], DistributionRegistry]]:
    """A factory: distribution("none" | "htpasswd" | "token") -> a running registry (shared)."""
    running: dict[str, DistributionRegistry] = {}

    def get(mode: str) -> DistributionRegistry:
        if mode not in running:
            running[mode] = DistributionRegistry(registry_binary, mode).start()
        return running[mode]

    yield get
    for r in running.values():
        r.stop()
