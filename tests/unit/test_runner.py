"""The runner's merging rules: what may share a run, and what never does."""

from __future__ import annotations

from reconciler.core.model import SyncReport, SyncRequest
from reconciler.sync.runner import Runner
from tests.unit.test_engine import SlowRun


class KindRun(SlowRun):
    """A SlowRun whose reports say what kind of run they were asked for."""

    def __call__(self, request: SyncRequest) -> SyncReport:
        super().__call__(request)
        return SyncReport("id", request.trigger, request.dry_run, request.plan_only, 0, 0)


def test_requests_that_differ_in_kind_are_never_merged() -> None:
    run = KindRun()
    runner = Runner(run)
    runner.submit(SyncRequest(trigger="schedule"))
    assert run.started.wait(5)
    dry = runner.submit(SyncRequest(sites=frozenset({"a"}), dry_run=True, trigger="http"))
    plan = runner.submit(SyncRequest(sites=frozenset({"b"}), plan_only=True, trigger="cli"))
    real = runner.submit(SyncRequest(sites=frozenset({"c"}), trigger="pubsub"))
    dry_too = runner.submit(SyncRequest(sites=frozenset({"d"}), dry_run=True, trigger="http"))
    run.gate.set()
    for f in (dry, plan, real, dry_too):
        f.result(5)
    asked = [(r.sites, r.dry_run, r.plan_only) for r in run.requests[1:]]
    assert asked == [
        (frozenset({"a", "d"}), True, False),  # the two dry runs share one run, and only they do
        (frozenset({"b"}), False, True),
        (frozenset({"c"}), False, False),
    ]
    assert dry.result().dry_run and dry_too.result().dry_run and not real.result().dry_run
    assert plan.result().plan_only and not real.result().plan_only
