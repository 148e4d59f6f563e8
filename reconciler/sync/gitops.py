"""The `git` delivery: a site whose [sites.NAME.git] names a configuration repository is deployed
by committing its image there (reconciler.core.gitops says when; the ConfigRepo port does it),
and the workload it names is only annotated, never given an image: the GitOps tool applies the
commit, and the engine follows the rollout it starts like any other.

Per deploy: one read of the file (the plan's), the write (commit mode: a read and a PUT; a
conflict is re-read and retried by the adapter), one compare for the commit subjects, one
annotation patch on the workload. Two replicas never make two commits: only the Lease holder
writes (the engine's fence), and a file that already holds the image is not committed again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from reconciler.core import annotations as ann
from reconciler.core import gitops
from reconciler.core.errors import ErrorKind, ReconcilerError
from reconciler.core.model import (
    Action,
    ApplyResult,
    DeploymentPatch,
    KubeEvent,
    NamespaceView,
    ObservedDeployment,
    Plan,
    SitePlan,
    Skip,
)
from reconciler.core.notify.render import Comparison
from reconciler.core.ports import Cluster, CommitLog, ConfigRepo
from reconciler.core.writeback import ImageRef, WriteOutcome, WriteRequest, WriteResult
from reconciler.sync.fanout import bounded_map

log = logging.getLogger(__name__)
_PULLS = (WriteOutcome.PR_OPENED, WriteOutcome.PR_UPDATED, WriteOutcome.PR_CURRENT)


class GitDelivery:
    """Reads the configuration repositories for a plan; writes one site's deploy or rollback."""

    def __init__(
        self,
        repos: ConfigRepo,
        cluster: Cluster,
        *,
        commits: CommitLog | None = None,
        clock: Callable[[], float],
        concurrency: int = 8,
        web_url: str = "https://github.com",
    ) -> None:
        self.repos = repos
        self.cluster = cluster
        self.commits = commits
        self.clock = clock
        self.concurrency = concurrency
        self.web_url = web_url.rstrip("/")

    # ---- planning ----------------------------------------------------------------------------

    def observe(
        self, plans: Sequence[SitePlan], workloads: Mapping[str, ObservedDeployment]
    ) -> dict[str, gitops.RepoView]:
        """Each git site's file (and who last changed it when its value is not ours), by site."""
        wanted = [p for p in plans if p.site.git is not None and p.site.name in workloads]
        views = bounded_map(
            lambda p: self.view(p, workloads[p.site.name]),
            wanted,
            limit=self.concurrency,
            name="gitread",
        )
        return {p.site.name: v for p, v in zip(wanted, views, strict=True)}

    def view(self, p: SitePlan, d: ObservedDeployment) -> gitops.RepoView:
        """The site's file, and who last changed it when its value is not the reconciler's."""
        spec = p.site.git
        assert spec is not None
        try:
            text = self.repos.read(spec.repo, spec.branch, spec.file).text
            last = None
            if gitops.foreign(spec, d, text):
                last = self.repos.last_change(spec.repo, spec.branch, spec.file)
            return gitops.RepoView(text, last)
        except ReconcilerError as exc:
            return gitops.RepoView(error=str(exc), kind=exc.kind)

    # ---- writing -----------------------------------------------------------------------------

    def send(self, p: SitePlan, *, dry_run: bool, trigger: str) -> ApplyResult:
        """Deploy (UPDATE), roll back (ROLLED_BACK) or record a hold (HELD) of one git site."""
        try:
            if p.action is Action.UPDATE:
                return self._deploy(p, dry_run=dry_run, trigger=trigger)
            if p.action is Action.ROLLED_BACK:
                return self._roll_back(p, dry_run=dry_run, trigger=trigger)
        except ReconcilerError as exc:
            return ApplyResult(False, str(exc), exc.kind)
        assert p.write is not None
        return self.cluster.patch(p.write, dry_run=dry_run)

    def _request(self, p: SitePlan, image: str, old: str | None, new: str) -> WriteRequest:
        spec = p.site.git
        assert spec is not None
        compare_url = f"{self.web_url}/{p.site.repo}/compare/{old}...{new}" if old else None
        return WriteRequest(
            site=p.site.name,
            repo=spec.repo,
            branch=spec.branch,
            path=spec.file,
            target=gitops.target_of(spec),
            image=ImageRef.parse(image),
            source_repo=p.site.repo,
            new_sha=new,
            old_sha=old,
            comparison=self._compare(p.site.repo, old, new),
            compare_url=compare_url,
            mode="pr" if spec.mode == "pr" else "commit",
            author=gitops.person(spec.author),
            committer=gitops.person(spec.committer),
        )

    def _compare(self, repo: str, old: str | None, new: str) -> Comparison | None:
        if self.commits is None or not old or old == new:
            return None
        try:
            return self.commits.compare(repo, old, new)
        except ReconcilerError as exc:  # the message goes without the subjects
            log.warning("cannot compare %s %s...%s: %s", repo, old[:7], new[:7], exc)
            return None

    def _deploy(self, p: SitePlan, *, dry_run: bool, trigger: str) -> ApplyResult:
        spec = p.site.git
        assert spec is not None and p.target_image and p.sha
        d = self.cluster.read(p.site.namespace, p.site.deployment)
        if d is None:
            return ApplyResult(False, "the workload is gone", ErrorKind.DEPLOYMENT_NOT_FOUND)
        req = self._request(p, p.target_image, d.annotations.get(ann.SHA), p.sha)
        if dry_run:
            found = self.repos.read(spec.repo, spec.branch, spec.file)
            gitops.holds(spec, found.text, p.target_image)  # the edit is possible
            return ApplyResult(True, f"would write {p.target_image} to {gitops.where(spec)}")
        done = self.repos.write(req)
        _log(p, done)
        if done.outcome in _PULLS:
            notes: dict[str, str | None] = {ann.GIT_PROPOSED: f"{p.sha} {p.target_image}"}
            event = KubeEvent("Normal", "PullRequest", f"{done.pull_url}: {p.target_image}")
            made = self._patch(d, notes, (event,), dry_run=False)
            why = f"pull request {done.pull_url} ({done.outcome.value}) waits for a merge"
            return replace(made, pending=why) if made.ok else made
        notes = gitops.record(
            p, dict(d.annotations), commit=done.commit, trigger=trigger, now=self.clock()
        )
        what = f"{gitops.where(spec)} commit {(done.commit or '')[:7]}" if done.commit else ""
        message = f"container {p.container}: {p.target_image} ({p.site.repo} {p.sha[:7]})"
        event = KubeEvent(
            "Normal", "ImageCommitted", f"{message}; {what or 'already in the file'}"[:1024]
        )
        return self._patch(d, notes, (event,), dry_run=False)

    def _roll_back(self, p: SitePlan, *, dry_run: bool, trigger: str) -> ApplyResult:
        """Commit the image before the failed one back, then remember the failure and hold."""
        assert p.write is not None and p.target_image
        back_sha = p.write.annotations.get(ann.SHA) or ""
        req = replace(
            self._request(p, p.target_image, p.failed_sha, back_sha or p.target_image),
            verb="Roll back",
            why=p.reason,
            comparison=None,
            compare_url=None,
            mode="commit",  # a failed rollout is reverted at once, whatever the mode
        )
        done = None if dry_run else self.repos.write(req)
        if done is not None:
            _log(p, done)
        notes = dict(p.write.annotations)
        if done is not None and done.commit:
            notes[ann.GIT_COMMIT] = done.commit
        notes[ann.TRIGGER] = f"rollback ({trigger})"[:100]
        # unguarded: once the commit is made, the record of it must land (else the next plan
        # would take the reconciler's own commit for a person's)
        record = replace(p.write, annotations=notes, resource_version="")
        return self.cluster.patch(record, dry_run=dry_run)

    def _patch(
        self,
        d: ObservedDeployment,
        notes: Mapping[str, str | None],
        events: tuple[KubeEvent, ...],
        *,
        dry_run: bool,
    ) -> ApplyResult:
        if all(d.annotations.get(k) == v for k, v in notes.items() if k != ann.UPDATED_AT):
            return ApplyResult(True)  # already recorded (another replica, an earlier attempt)
        # unguarded (no resourceVersion): the commit is made, its record must land; only
        # reconciler.dev/ annotations change, computed from a read made just before it
        write = DeploymentPatch(d.namespace, d.name, notes, events=events)
        return self.cluster.patch(write, dry_run=dry_run)


def awaiting(p: SitePlan, why: str) -> SitePlan:
    """A write made (a pull request opened or updated) that the deploy still waits on."""
    return replace(p, action=Action.SKIP, skip=Skip.AWAITING_APPLY, reason=why)


def _log(p: SitePlan, done: WriteResult) -> None:
    spec = p.site.git
    assert spec is not None
    log.info(
        "%s: %s %s (%s; %d GitHub requests, %d attempts)",
        p.site.name,
        done.outcome.value,
        gitops.where(spec),
        done.commit or done.pull_url or done.edit.summary(),
        done.requests,
        done.attempts,
        extra={
            "event": "git_write",
            "site": p.site.name,
            "outcome": done.outcome.value,
            "commit": done.commit,
            "pull": done.pull_url,
            "requests": done.requests,
        },
    )


def adjust_plan(
    git: GitDelivery | None,
    result: Plan,
    observed: Mapping[str, NamespaceView],
    troubles: Mapping[str, tuple[str, ...]],
    now: float,
) -> Plan:
    """Git-delivered sites: their verdicts adjusted with their configuration repository."""
    workloads: dict[str, ObservedDeployment] = {}
    for p in result.sites:
        view = observed.get(p.site.namespace)
        d = view.get(p.site.deployment) if isinstance(view, Mapping) else None
        if p.site.git is not None and d is not None:
            workloads[p.site.name] = d
    if not workloads:
        return result
    if git is None:
        views = {n: gitops.RepoView(error="no GitHub client for [git]") for n in workloads}
    else:
        views = git.observe(result.sites, workloads)
    return Plan(
        tuple(
            gitops.adjust(
                p,
                workloads.get(p.site.name),
                views.get(p.site.name, gitops.RepoView()),
                troubles=troubles.get(p.site.name, ()),
                now=now,
            )
            for p in result.sites
        )
    )
