"""What the environment gates cost a sync's plan: milliseconds of `Engine.plan` over N
staging → production pairs (2N sites), in memory (no API server, no GitHub: the reads are the
sync's own and the gates add none but one LIST per source namespace before a real sync, to
record `available-at`), against the same 2N sites following their branch without gates.

Production sites are in one of three states, a third each: soaking (the source's commit is
available for 10 of 30 min), waiting for approval (soaked, not approved) and, during a freeze
(`weekend-freeze`, in force at the clock's value), approved and frozen. Each fleet is planned
three times; the figures are the median.

    .venv/bin/python -m bench.gates_cost [--pairs 5000]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Collection, Mapping
from datetime import UTC, datetime

from reconciler.core import annotations as ann
from reconciler.core import gates
from reconciler.core.config import sites as config
from reconciler.core.model import (
    BranchHead,
    CommitState,
    Container,
    DeploymentStatus,
    FieldOwner,
    HeadResult,
    ImageStatus,
    NamespaceView,
    ObservedDeployment,
    RepoRef,
    VerifyRequest,
)
from reconciler.core.promotion import AVAILABLE_AT
from reconciler.core.rollout.state import FIELD_MANAGER, stamp
from reconciler.sync.engine import Engine

NOW = datetime(2026, 12, 12, 10, 0, tzinfo=UTC).timestamp()  # a Saturday: the freeze holds
FREEZE = """\
[windows.weekend-freeze]
kind = "deny"
rrule = "FREQ=WEEKLY;BYDAY=FR;BYHOUR=16;BYMINUTE=0"
duration = "65h"
timezone = "Europe/Berlin"

"""


class Heads:
    def __init__(self, heads: Mapping[RepoRef, HeadResult]) -> None:
        self.heads = heads

    def resolve(self, refs: Collection[RepoRef]) -> Mapping[RepoRef, HeadResult]:
        return {r: self.heads[r] for r in refs}

    def rate_limits(self) -> Mapping[str, object]:
        return {}


class Cluster:
    def __init__(self, views: Mapping[str, NamespaceView]) -> None:
        self.views = views

    def observe(
        self, namespaces: Collection[str], kinds: object = None
    ) -> Mapping[str, NamespaceView]:
        return {ns: self.views[ns] for ns in namespaces}

    def pod_troubles(self, *args: object) -> tuple[str, ...]:
        return ()


class Verifier:
    def verify(self, requests: Collection[VerifyRequest]) -> Mapping[VerifyRequest, ImageStatus]:
        return {r: ImageStatus(True) for r in requests}


def _workload(name: str, image: str, notes: Mapping[str, str]) -> ObservedDeployment:
    status = DeploymentStatus(
        observed_generation=2, desired=1, replicas=1, updated=1, ready=1, available=1
    )
    return ObservedDeployment(
        "ns",
        name,
        (Container("app", image),),
        annotations=dict(notes),
        generation=2,
        status=status,
        resource_version="1",
        image_owners={"app": FieldOwner(FIELD_MANAGER)},
    )


def world(pairs: int, *, gated: bool) -> tuple[config.Config, Engine]:
    text = [FREEZE, '[defaults]\nnamespace = "ns"\ncontainer = "app"\nverify = "none"\n']
    heads: dict[RepoRef, HeadResult] = {}
    view: dict[str, ObservedDeployment] = {}
    for i in range(pairs):
        new, old = f"{i:040x}", f"{i + pairs:040x}"
        repo = f"acme/r{i}"
        history = (CommitState(new), CommitState(old))
        heads[RepoRef(repo, "main")] = BranchHead(repo, "main", new, history)
        text.append(
            f'[sites.s{i}]\nrepo = "{repo}"\nbranch = "main"\ndeployment = "s{i}"\n'
            'image = "stage/{repo}:{sha}"\n'
        )
        prod = (
            f'[sites.p{i}]\nrepo = "{repo}"\ndeployment = "p{i}"\nimage = "prod/{{repo}}:{{sha}}"\n'
        )
        if gated:
            prod += 'promote_from = "s' + str(i) + '"\nsoak = "30m"\napproval = "manual"\n'
            prod += 'windows = ["weekend-freeze"]\n'
        else:
            prod += 'branch = "main"\n'
        text.append(prod)
        soaked = 10 * 60 if i % 3 == 0 else 40 * 60
        view[f"s{i}"] = _workload(
            f"s{i}",
            f"stage/r{i}:{new}",
            {
                ann.SHA: new,
                ann.BRANCH: "main",
                ann.UPDATED_AT: stamp(NOW - soaked - 60),
                AVAILABLE_AT: stamp(NOW - soaked),
            },
        )
        notes = {ann.SHA: old, ann.BRANCH: "main", ann.UPDATED_AT: stamp(NOW - 86400)}
        if i % 3 == 2:
            notes[gates.APPROVED_SHA] = new
        view[f"p{i}"] = _workload(f"p{i}", f"prod/r{i}:{old}", notes)
    cfg = config.parse("\n".join(text))
    engine = Engine(
        heads=Heads(heads),  # type: ignore[arg-type]
        cluster=Cluster({"ns": view}),  # type: ignore[arg-type]
        verifier=Verifier(),
        clock=lambda: NOW,
    )
    return cfg, engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=5000)
    args = parser.parse_args()
    for gated in (False, True):
        cfg, engine = world(args.pairs, gated=gated)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            plan = engine.plan(cfg)
            times.append(time.perf_counter() - t0)
        verdicts: dict[str, int] = {}
        for p in plan.sites:
            if p.site.name.startswith("p"):
                word = f"skip: {p.skip.value}" if p.skip else p.action.value
                verdicts[word] = verdicts.get(word, 0) + 1
        label = "with gates   " if gated else "without gates"
        top = ", ".join(f"{n} {w}" for w, n in sorted(verdicts.items()))
        print(
            f"{label} {2 * args.pairs:,} sites: plan {statistics.median(times) * 1000:,.0f} ms "
            f"median of 3 ({top})"
        )


if __name__ == "__main__":
    main()
