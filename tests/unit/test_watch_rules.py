"""The pure rules of the watch-fed cache (core/watch.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from reconciler.core import annotations as ann
from reconciler.core.model import Container, FieldOwner, ObservedDeployment
from reconciler.core.watch import (
    Backoff,
    ended_too_soon,
    is_gone,
    relist_changes,
    slim,
    watch_seconds,
)


@pytest.mark.parametrize("draw", [0.0, 0.5, 0.999])
def test_backoff_doubles_up_to_its_cap_with_jitter_never_below_half_a_step(draw: float) -> None:
    b = Backoff(base=0.5, cap=30.0)
    delays = [b.delay(attempt, draw) for attempt in range(1, 12)]
    steps = [min(30.0, 0.5 * 2 ** (a - 1)) for a in range(1, 12)]
    for delay, step in zip(delays, steps, strict=True):
        assert step / 2 <= delay <= step
    assert max(b.delay(10_000, draw) for _ in range(3)) <= 30.0


def test_watch_seconds_spread_over_the_range() -> None:
    assert watch_seconds(300, 600, 0.0) == 300
    assert 300 <= watch_seconds(300, 600, 0.999) <= 600


def test_gone_is_a_410_error_event_only() -> None:
    assert is_gone({"type": "ERROR", "object": {"kind": "Status", "code": 410}})
    assert is_gone({"type": "ERROR", "object": {"reason": "Expired", "code": 0}})
    assert not is_gone({"type": "ERROR", "object": {"code": 500}})
    assert not is_gone({"type": "MODIFIED", "object": {"code": 410}})


def test_a_relist_reports_deletions_additions_and_changes() -> None:
    old = {"a": 1, "b": 2, "gone": 3}
    new = {"a": 1, "b": 20, "new": 4}
    assert relist_changes(old, new) == [("gone", None), ("b", 20), ("new", 4)]
    assert relist_changes(new, new) == []


def test_slim_keeps_only_the_annotations_something_reads() -> None:
    d = ObservedDeployment(
        "ns",
        "web",
        (Container("app", "img:1"),),
        annotations={
            ann.SHA: "abc",
            ann.CHANGE_CAUSE: "reconciler: ...",
            "deployment.kubernetes.io/revision": "3",
            "kubectl.kubernetes.io/last-applied-configuration": "{" + "x" * 5000 + "}",
            "team": "payments",
        },
    )
    assert dict(slim(d).annotations) == {
        ann.SHA: "abc",
        ann.CHANGE_CAUSE: "reconciler: ...",
        "deployment.kubernetes.io/revision": "3",
    }
    assert slim(d) == slim(slim(d))
    assert replace(slim(d), annotations=d.annotations) == d  # nothing else changes


def test_slim_shares_the_strings_deployments_repeat() -> None:
    def made(name: str) -> ObservedDeployment:
        # strings built at run time, as json.loads makes them: equal, not the same object
        sidecar = "".join(["envoyproxy/envoy:", "v1.30.1"])
        return ObservedDeployment(
            "".join(["w", "eb"]),
            name,
            (Container("".join(["a", "pp"]), f"img/{name}:1"), Container("proxy", sidecar)),
            image_owners={"".join(["a", "pp"]): FieldOwner("".join(["kube", "ctl"]))},
        )

    a, b = slim(made("a")), slim(made("b"))
    assert a.namespace is b.namespace
    assert a.containers[1].image is b.containers[1].image
    assert a.containers[0].name is b.containers[0].name
    assert a.image_owners["app"].manager is b.image_owners["app"].manager


def test_only_a_silent_watch_cut_early_waits_before_the_next() -> None:
    assert ended_too_soon(0, 0.01, 300)
    assert not ended_too_soon(0, 299.0, 300)  # idle, ran its course: renewed at once
    assert not ended_too_soon(3, 0.01, 300)  # it said something: renewed at once
