"""The `git` delivery (Site.delivery "git", issue #21): a site whose [sites.NAME.git] names a
configuration repository is deployed by committing its image there, through the ConfigRepo port
(adapters/gitrepo.py); the Deployment it names is only annotated, never given an image: the
GitOps tool (Argo CD, Flux) applies the commit, and the engine follows the rollout it starts.
The rules are core.gitops's, over the planner's verdict for the Deployment.

Per deploy: one read of the file (observe; conditional, so a follow that finds it unchanged
costs no rate limit), the write (commit mode: a read and a PUT; a conflict is re-read and
retried by the adapter), one compare for the commit subjects, one annotation patch. Two replicas
never make two commits: only the Lease holder writes (the engine's fence), and a file that
already holds the image is not committed again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from reconciler.core import annotations as ann
from reconciler.core import gitops, leadtime
from reconciler.core.errors import CommandError, ErrorKind, ReconcilerError
from reconciler.core.model import (
    Action,
    ApplyResult,
    DeploymentPatch,
    HeadResult,
    KubeEvent,
    ObservedDeployment,
    Site,
    SitePlan,
)
from reconciler.core.notify.render import Comparison
from reconciler.core.plan import planner
from reconciler.core.plan.running import same_image
from reconciler.core.ports import Cluster, CommitLog, ConfigRepo, RevisionSource
from reconciler.core.rollout import state as rollout
from reconciler.core.rollout.history import Deploy, deploys
from reconciler.core.writeback import ImageRef, WriteOutcome, WriteRequest, WriteResult
from reconciler.sync.fanout import bounded_map

log = logging.getLogger(__name__)
_PULLS = (WriteOutcome.PR_OPENED, WriteOutcome.PR_UPDATED, WriteOutcome.PR_CURRENT)


@dataclass(frozen=True, slots=True)
class GitSeen:
    """What observe() read for one git site: its Deployment (None: not found), its file, and
    the stuck pods of a rollout of the image it committed."""

    deployment: ObservedDeployment | None
    repo: gitops.RepoView
    troubles: tuple[str, ...] = ()


class GitDelivery:
    """The SiteDelivery of sites with a [sites.NAME.git] table."""

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

    # ---- reading -----------------------------------------------------------------------------

    def observe(self, sites: Sequence[Site]) -> Mapping[str, object]:
        """Each site's GitSeen (one GET of its Deployment, one conditional read of its file, who
        last changed the file when its value is not the reconciler's), or its ReconcilerError."""
        seen = bounded_map(self._seen, sites, limit=self.concurrency, name="gitread")
        return {s.name: v for s, v in zip(sites, seen, strict=True)}

    def _seen(self, site: Site) -> GitSeen | ReconcilerError:
        try:
            d = self.cluster.read(site.namespace, site.deployment)
        except ReconcilerError as exc:
            return exc
        if d is None:
            return GitSeen(None, gitops.RepoView())
        return GitSeen(d, self.view(site, d), self._troubles(site, d))

    def view(self, site: Site, d: ObservedDeployment) -> gitops.RepoView:
        """The site's file, and who last changed it when its value is not the reconciler's."""
        spec = site.git
        assert spec is not None
        try:
            text = self.repos.read(spec.repo, spec.branch, spec.file).text
            last = None
            if gitops.foreign(spec, d, text):
                last = self.repos.last_change(spec.repo, spec.branch, spec.file)
            return gitops.RepoView(text, last)
        except ReconcilerError as exc:
            return gitops.RepoView(error=str(exc), kind=exc.kind)

    def _troubles(self, site: Site, d: ObservedDeployment) -> tuple[str, ...]:
        container = planner.container_of(site, d)
        if container is None or not gitops.wants_pods(site, d, container, self.clock()):
            return ()
        image = next(c.image for c in d.containers if c.name == container)
        try:
            return self.cluster.pod_troubles(d.namespace, d.selector, container, image)
        except ReconcilerError as exc:  # the progress deadline still catches it
            log.warning("cannot read the pods of %s/%s: %s", d.namespace, d.name, exc)
            return ()

    def verdict(self, site: Site, head: HeadResult | None, seen: object, now: float) -> SitePlan:
        """The planner's verdict for the Deployment, adjusted with the configuration repository."""
        assert isinstance(seen, GitSeen)
        view = {site.deployment: seen.deployment} if seen.deployment is not None else {}
        heads = {site.ref: head} if head is not None else {}
        p = planner.plan_site(site, heads, {site.namespace: view}, now=now, troubles=seen.troubles)
        return gitops.adjust(p, seen.deployment, seen.repo, troubles=seen.troubles, now=now)

    def workload(self, plan: SitePlan, seen: object) -> ObservedDeployment | None:
        """The Deployment the GitOps tool rolls: the reconciler's records are on it."""
        assert isinstance(seen, GitSeen)
        return seen.deployment

    # ---- writing -----------------------------------------------------------------------------

    def apply(self, p: SitePlan, *, dry_run: bool, trigger: str) -> ApplyResult:
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
            notes.update(leadtime.head_notes(p))  # its stages, until the merge is recorded
            event = KubeEvent("Normal", "PullRequest", f"{done.pull_url}: {p.target_image}")
            made = self._patch(d, notes, (event,), dry_run=False)
            why = f"pull request {done.pull_url} ({done.outcome.value}) waits for a merge"
            return replace(made, pending=why) if made.ok else made
        notes = gitops.record(
            p, dict(d.annotations), commit=done.commit, trigger=trigger, now=self.clock()
        )
        notes.update(leadtime.update_notes(p))  # its stages: the commit is its "patched"
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

    # ---- commands ----------------------------------------------------------------------------

    def _workload(self, site: Site) -> ObservedDeployment:
        d = self.cluster.read(site.namespace, site.deployment)
        if d is None:
            raise CommandError(f"deployment {site.namespace}/{site.deployment} not found")
        return d

    def _note(self, site: Site, write: DeploymentPatch) -> None:
        """A command's record on the Deployment: only reconciler.dev/ annotations, so unguarded
        (a rollout in progress changes the resourceVersion every few seconds)."""
        result = self.cluster.patch(replace(write, resource_version=""), dry_run=False)
        if not result.ok:
            raise CommandError(f"{site.name}: {result.reason}")
        self.cluster.settle()

    def hold(self, site: Site, *, by: str, reason: str, now: float) -> str:
        self._note(site, rollout.hold_patch(self._workload(site), by, reason, now))
        return f"{site.name} held by {by}: {reason or 'held'}"

    def resume(self, site: Site, *, by: str, now: float) -> str:
        self._note(site, rollout.resume_patch(self._workload(site), by, now))
        return f"{site.name} resumed by {by}; the next sync deploys its branch head"

    def rollback(
        self, site: Site, *, by: str, to: str | None, image: str | None, now: float
    ) -> tuple[str, str | None]:
        """Commit the image before the current one (or commit `to`'s image) to the configuration
        repository, whatever the mode, and hold the site there."""
        spec = site.git
        assert spec is not None
        d = self._workload(site)
        notes = d.annotations
        sha = to if to is not None else notes.get(ann.PREVIOUS_SHA)
        image = image if to is not None else notes.get(ann.PREVIOUS_IMAGE)
        if not image:
            raise CommandError(f"{site.name}: no earlier image recorded to go back to")
        p = SitePlan(site, Action.ROLLED_BACK, branch=site.branch, sha=sha, target_image=image)
        req = replace(
            self._request(p, image, notes.get(ann.SHA), sha or image),
            verb="Roll back",
            why=f"`reconciler rollback` by {by}",
            comparison=None,
            compare_url=None,
            mode="commit",
        )
        try:
            done = self.repos.write(req)
        except ReconcilerError as exc:
            raise CommandError(f"{site.name}: {exc}") from exc
        _log(p, done)
        target = (sha or "")[:7] or image
        record: dict[str, str | None] = {
            ann.SHA: sha,
            ann.UPDATED_AT: rollout.stamp(now),
            ann.PREVIOUS_IMAGE: notes.get(ann.GIT_IMAGE),
            ann.PREVIOUS_SHA: notes.get(ann.SHA),
            ann.GIT_IMAGE: image,
            ann.GIT_COMMIT: done.commit or notes.get(ann.GIT_COMMIT),
            ann.GIT_PROPOSED: None,
            ann.HOLD: f"rolled back to {target}",
            ann.HOLD_BY: by,
            ann.HOLD_AT: rollout.stamp(now),
            ann.HELD_HEAD: None,
            ann.TRIGGER: f"{by} (rollback command)"[:100],
        }
        where = f"{gitops.where(spec)} commit {(done.commit or '')[:7] or '(unchanged)'}"
        event = KubeEvent("Normal", "RolledBack", f"by {by}: {image} ({where})"[:1024])
        self._note(site, DeploymentPatch(d.namespace, d.name, record, events=(event,)))
        return f"{site.name} rolled back to {target} by {by} ({where}) and held", image

    def history(self, site: Site) -> list[Deploy]:
        """The Deployment's revisions (the GitOps tool's applies of the reconciler's commits carry
        its annotations, copied onto each ReplicaSet), newest first."""
        d = self.cluster.read(site.namespace, site.deployment)
        if d is None:
            raise ReconcilerError(
                f"deployment {site.namespace}/{site.deployment} not found",
                kind=ErrorKind.DEPLOYMENT_NOT_FOUND,
            )
        container = planner.container_of(site, d)
        if container is None or not isinstance(self.cluster, RevisionSource):
            raise ReconcilerError(
                f"cannot tell which container of {site.name} is managed",
                kind=ErrorKind.CONTAINER_NOT_FOUND,
            )
        return [_applied(d, x) for x in deploys(d, container, self.cluster.replica_sets(d))]

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


def _applied(d: ObservedDeployment, x: Deploy) -> Deploy:
    """The running revision as the GitOps tool's apply of the reconciler's commit (its field
    manager would otherwise read as a person's change)."""
    written, commit = d.annotations.get(ann.GIT_IMAGE), d.annotations.get(ann.GIT_COMMIT, "")
    if not (written and x.image and same_image(x.image, written) and "a person's" in x.by):
        return x
    tool = x.by.split(" (", 1)[0]
    by = f"{tool} applying the reconciler's commit {commit[:7] or '?'}"
    return replace(x, by=by, sha=x.sha or d.annotations.get(ann.SHA))


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
