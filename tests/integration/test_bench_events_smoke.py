"""Smoke test of bench/event_latency.py: N=30, ~5 ms GitHub latency, three events of each kind.

Asserts only what does not depend on the machine: every webhook and every gcr message led to
PATCHes of the Deployment whose branch moved only (its image, then the notifier's state
annotation), which then ran the new head.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.event_latency import measure
from testkit.pubsub_emulator import PubSubEmulator

pytestmark = [pytest.mark.controlplane, pytest.mark.timeout(300)]


def test_event_latency_smoke(
    pubsub_emulator: PubSubEmulator, monkeypatch: pytest.MonkeyPatch, control_plane_binaries: Path
) -> None:
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.host)  # restored afterwards
    report = measure(
        30,
        3,
        latency_ms=5.0,
        emulator_host=pubsub_emulator.host,
        project=pubsub_emulator.project,
    )
    rows = {r["kind"]: r for r in report["results"]}
    assert set(rows) == {"webhook", "gcr"}
    for row in rows.values():
        assert row["events"] == 3
        # The image PATCH, then at most the notifier's state annotation.
        assert set(row["patches_per_event"]) <= {1, 2}, row
        assert row["other_patches"] == 0 and row["deployed"] == 3, row
        assert row["p50_s"] > 0
