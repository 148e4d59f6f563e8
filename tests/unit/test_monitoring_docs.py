"""The example alert rules and Grafana dashboard only use metrics the service exports."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import yaml  # type: ignore[import-untyped]

from reconciler.core.config import sites as config
from reconciler.core.model import Action, Lead, Rollout, SitePlan, SiteResult, Stages, SyncReport
from reconciler.serve.metrics import Metrics
from reconciler.serve.site_metrics import SiteMetrics

DOCS = Path(__file__).resolve().parents[2] / "docs" / "monitoring"
NAME = re.compile(r"\breconciler_[a-z_]+")


def exported() -> set[str]:
    metrics, sites = Metrics(), SiteMetrics(clock=lambda: 100.0)
    metrics.register(sites)
    site = config.parse('[sites.blog]\nrepo = "acme/blog"\nimage = "r/b:{sha}"\n').sites[0]
    plan = SitePlan(site, Action.UPDATE, sha="b" * 40, running_sha="a" * 40, branch="main")
    report = SyncReport("r", "cli", False, False, 0.0, 1.0, (SiteResult(plan, applied=True),))
    metrics.record(report, {})
    lead = Lead(Stages("b" * 40, pushed=0.0, image=250.0, patched=281.0, available=303.0))
    done = replace(plan, action=Action.IN_SYNC, rollout=Rollout.AVAILABLE, lead=lead)
    metrics.followed(SiteResult(done), Rollout.PROGRESSING)
    metrics.notification("slack", "deployed", False)
    sites.record(report)
    sites.followed(SiteResult(done), Rollout.PROGRESSING)
    sites.commits_behind("blog", 3)
    text = metrics.render().decode()
    names = set(NAME.findall(text))
    return names | {n.removesuffix("_total") for n in names}


def test_alerts_and_dashboard_use_exported_metrics() -> None:
    rules = yaml.safe_load((DOCS / "alerts.yaml").read_text())["groups"][0]["rules"]
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
    used = {n for r in rules for n in NAME.findall(r["expr"])}
    used |= {n for p in dashboard["panels"] for t in p["targets"] for n in NAME.findall(t["expr"])}
    assert used and used <= exported(), used - exported()
