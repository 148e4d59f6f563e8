"""Rendering results for people (a table) and programs (JSON)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from reconciler.core import leadtime
from reconciler.core.model import Action, SiteResult, SyncReport
from reconciler.sync.behind import Behind

SYMBOL = {
    Action.UPDATE: "→",
    Action.IN_SYNC: "=",
    Action.SKIP: "-",
    Action.HELD: "‖",
    Action.ROLLED_BACK: "↩",
    Action.ERROR: "!",
}


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    """A plain left-aligned text table."""
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def _image_cell(r: SiteResult) -> str:
    p = r.plan
    if p.action in (Action.UPDATE, Action.ROLLED_BACK) and p.target_image:
        return f"{p.current_image or '?'} → {p.target_image}"
    return p.current_image or p.target_image or ""


def _rollout_cell(r: SiteResult) -> str:
    p = r.plan
    if p.rollout is None:
        return ""
    return f"{p.rollout.value} {p.progress}".strip()


def _behind_cell(b: Behind | None) -> str:
    if b is None:
        return ""
    return "?" if b.commits is None else str(b.commits)


def behind_lines(behind: Mapping[str, Behind]) -> str:
    """One line per site that is behind: how many commits, and the compare link."""
    lines = []
    for name, b in behind.items():
        count = f"{b.commits} commit(s)" if b.commits is not None else f"? commits ({b.error})"
        lines.append(f"{name}: {count} behind {b.head[:7]}: {b.compare_url}")
    return "\n".join(lines)


def lead_lines(report: SyncReport) -> str:
    """One line per site whose branch head is not live yet: the stage it waits in, since when
    ("blog: head 3f2c1a9 waiting for checks since 14:02, 6 min")."""
    lines = []
    for r in report.results:
        text = leadtime.waiting_text(r.plan.lead, report.finished_at)
        if text:
            lines.append(f"{r.plan.site.name}: {text}")
    return "\n".join(lines)


def report_text(report: SyncReport, behind: Mapping[str, Behind] | None = None) -> str:
    rows = []
    for r in report.results:
        p = r.plan
        action = p.action.value
        if r.applied and p.action is Action.UPDATE:
            action = "updated" if not report.dry_run else "update (dry run ok)"
        top = p.head_sha or p.sha
        head = f"{p.branch or '?'}@{top[:7]}" if top else (p.branch or "")
        target = (p.sha or "")[:7] if p.action is Action.UPDATE else ""
        rows.append(
            [
                f"{SYMBOL[p.action]} {p.site.name}",
                action,
                # the workload, prefixed with its cluster when that is not the home one
                (f"{p.site.cluster.name}:" if p.site.cluster else "")
                + f"{p.site.namespace}/{p.site.deployment}",
                p.container or p.site.container or "",
                head,
                target,
                _image_cell(r),
                _rollout_cell(r),
                *([_behind_cell(behind.get(p.site.name))] if behind is not None else []),
                p.reason,
            ]
        )
    header = ["site", "action", "deployment", "container", "head", "target", "image", "rollout"]
    header += [*(["behind"] if behind is not None else []), "reason"]
    mode = "plan" if report.plan_only else ("dry run" if report.dry_run else "sync")
    footer = f"{mode}: {report.summary()} in {report.duration:.1f}s"
    notes = "\n".join(x for x in (lead_lines(report), behind_lines(behind or {})) if x)
    return f"{table(rows, header)}\n\n{notes + chr(10) if notes else ''}{footer}"


def report_json(report: SyncReport, behind: Mapping[str, Behind] | None = None) -> str:
    """The results as JSON; with `behind` (plan) each gains commits_behind and compare_url."""
    rows = []
    for r in report.results:
        row = r.as_dict()
        row["lead"] = leadtime.as_dict(r.plan.lead, report.finished_at)
        if behind is not None:
            b = behind.get(r.plan.site.name)
            row["commits_behind"] = (
                b.commits if b else (0 if r.plan.action.value == "in-sync" else None)
            )
            row["compare_url"] = b.compare_url if b else None
        rows.append(row)
    return json.dumps(rows, indent=2)
