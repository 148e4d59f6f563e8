"""Plain values shared by every layer: sites, branch heads, observed Deployments, plans."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from reconciler.core.errors import ErrorKind

HOME_CLUSTER = "home"  # the cluster the reconciler runs in: its name on pages, metrics, JSON


@dataclass(frozen=True, slots=True)
class ClusterRef:
    """A named cluster of sites.toml's [clusters.NAME]: a mounted kubeconfig file and/or one of
    its contexts (never credentials). Sites without one live in the home cluster."""

    name: str
    kubeconfig: str | None = None  # an absolute path; None: the default kubeconfig
    context: str | None = None  # None: the kubeconfig's current context

    def __str__(self) -> str:
        return f'cluster "{self.name}"'


DEPLOYMENT = "Deployment"
STATEFULSET = "StatefulSet"
DAEMONSET = "DaemonSet"
CRONJOB = "CronJob"
KINDS = (DEPLOYMENT, STATEFULSET, DAEMONSET, CRONJOB)  # the workload kinds a target may be


@dataclass(frozen=True, slots=True)
class Target:
    """One workload of a site: its kind, its name (in the site's namespace), the containers and
    init containers to set, and the image template of each container that does not take the
    site's. ``containers`` empty means the workload's only container (several: an error at
    plan time), as a site without "container" does today, unless ``only_init`` (written
    ``containers = []`` with ``init_containers``: those alone are set)."""

    name: str
    kind: str = DEPLOYMENT
    containers: tuple[str, ...] = ()
    init_containers: tuple[str, ...] = ()
    images: Mapping[str, str] = field(default_factory=dict)  # container → its own template
    line: int | None = field(default=None, compare=False)
    only_init: bool = False  # containers = [] with init_containers: no container is set

    @property
    def names(self) -> tuple[str, ...]:
        """Every container this target names, init containers last."""
        return (*self.containers, *self.init_containers)

    @property
    def sets(self) -> tuple[tuple[str | None, bool], ...]:
        """What it sets, in order: (container, is an init container); container None is the
        workload's only container."""
        plain = self.containers or (() if self.only_init else (None,))
        return (*((c, False) for c in plain), *((c, True) for c in self.init_containers))

    def image_for(self, container: str, site_image: str) -> str:
        """The image template of one of its containers: its own, else the site's."""
        return self.images.get(container, site_image)

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}"


# How a site's image reaches the cluster (Site.delivery): the reconciler patches the Deployment
# itself (the default), upgrades the Helm release that owns it, or commits the image to a GitOps
# repository. The sync layer routes each site to its delivery (reconciler.sync.delivery).
KUBERNETES = "kubernetes"
HELM = "helm"
GIT = "git"
DELIVERIES = (KUBERNETES, HELM, GIT)


@dataclass(frozen=True, slots=True)
class HelmSpec:
    """[sites.NAME.helm]: the release that delivers the site, and the values keys (dotted
    paths) that carry its image: a tag key, a repository key with it, or a digest key."""

    release: str
    namespace: str
    tag: str | None = "image.tag"
    repository: str | None = None
    digest: str | None = None


@dataclass(frozen=True, slots=True)
class GitSpec:
    """[sites.NAME.git]: the site is delivered by committing its image to a file of a
    configuration repository (a GitOps tool applies it); the cluster is only read.

    `write` says how the image is written: "kustomize" (the `images:` entry `kustomize_image`:
    newTag, or newName + digest with `digest`), "values" (the dotted key paths `values_tag`,
    `values_repository`, `values_digest` of a Helm values file) or "manifest" (container
    `container` of the object `manifest_kind`/`manifest_name`)."""

    repo: str
    file: str
    write: str
    branch: str = "main"
    mode: str = "commit"  # commit | pr
    kustomize_image: str = ""
    digest: bool = False
    values_tag: str | None = None
    values_repository: str | None = None
    values_digest: str | None = None
    manifest_kind: str = ""
    manifest_name: str = ""
    container: str = ""
    author: tuple[str, str] | None = None  # (name, email); None: the token's user
    committer: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Site:
    """One site from sites.toml, with defaults already applied.

    ``targets`` are its workloads (always at least one); a site written in the single form
    (``deployment``/``container``) has exactly one, that Deployment, and ``deployment`` and
    ``container`` always name the first target (its first container) for the callers that
    mean the one Deployment."""

    name: str
    repo: str
    branch: str | None
    namespace: str
    deployment: str
    container: str | None
    image: str
    paused: bool = False
    verify: str = "registry"
    line: int | None = None
    pin_digest: bool = True  # deploy image:tag@digest when the registry answered a digest
    required_checks: tuple[str, ...] = ()  # verify = "checks": these must have passed
    rollout_timeout: int | None = None  # seconds; None = the Deployment's progressDeadlineSeconds
    delivery: str = KUBERNETES  # one of DELIVERIES: who writes the image (see above)
    helm: HelmSpec | None = None  # delivery = "helm": the release
    git: GitSpec | None = None  # delivered through a configuration repository (GitOps)
    cluster: ClusterRef | None = None  # None: the home cluster (the one the reconciler runs in)

    @property
    def cluster_name(self) -> str:
        """The site's cluster as pages, metrics and JSON name it."""
        return self.cluster.name if self.cluster is not None else HOME_CLUSTER

    # environments (#20; core/gates.py): follow a site instead of a branch, a person approves,
    # deploy windows by name ([windows.NAME] of sites.toml)
    promote_from: str | None = None
    soak: int = 0  # seconds the source must run a commit available first
    approval: str = "auto"  # "manual": each commit waits for `reconciler approve`
    windows: tuple[str, ...] = ()
    targets: tuple[Target, ...] = ()  # () when built: the one Deployment of deployment/container

    def __post_init__(self) -> None:
        if not self.targets:
            containers = (self.container,) if self.container else ()
            one = Target(self.deployment, DEPLOYMENT, containers, line=self.line)
            object.__setattr__(self, "targets", (one,))

    @property
    def single(self) -> bool:
        """One Deployment target: the form sites were before targets (and the common one)."""
        return len(self.targets) == 1 and self.targets[0].kind == DEPLOYMENT

    @property
    def owner(self) -> str:
        return self.repo.split("/", 1)[0]

    @property
    def repo_name(self) -> str:
        return self.repo.split("/", 1)[1]

    @property
    def ref(self) -> RepoRef:
        return RepoRef(self.repo, self.branch)


@dataclass(frozen=True, slots=True)
class RepoRef:
    """A repository and branch to resolve; branch None means the repository's default branch."""

    repo: str
    branch: str | None

    def __str__(self) -> str:
        return f"{self.repo}@{self.branch or '(default branch)'}"


@dataclass(frozen=True, slots=True)
class CommitState:
    """A commit of a branch's recent history and its checks' combined state as GitHub rolls
    them up (SUCCESS, PENDING, FAILURE, ERROR, EXPECTED; None when it has none)."""

    sha: str
    checks: str | None = None
    committed_at: str | None = field(default=None, compare=False)  # committedDate (RFC 3339)


@dataclass(frozen=True, slots=True)
class BranchHead:
    """The commit a branch points at, as GitHub reported it, and (when asked for) its recent
    first-parent history, newest first, starting with the head itself."""

    repo: str
    branch: str
    sha: str
    history: tuple[CommitState, ...] = field(default=(), compare=False)  # derived from sha
    committed_at: str | None = field(default=None, compare=False)  # the head's committedDate


@dataclass(frozen=True, slots=True)
class HeadError:
    """Why a branch head could not be resolved, and which kind of failure it is."""

    reason: str
    kind: ErrorKind = ErrorKind.GITHUB


HeadResult = BranchHead | HeadError


@dataclass(frozen=True, slots=True)
class Container:
    name: str
    image: str


@dataclass(frozen=True, slots=True)
class FieldOwner:
    """Who last set a field, from the Deployment's managedFields: manager, Update|Apply, when."""

    manager: str
    operation: str = "Update"
    time: str = ""


@dataclass(frozen=True, slots=True)
class DeploymentStatus:
    """The Deployment's rollout status as its controller reports it."""

    observed_generation: int = 0
    desired: int = 1  # spec.replicas
    replicas: int = 0  # status.replicas: pods of every revision
    updated: int = 0
    ready: int = 0
    available: int = 0
    deadline_exceeded: bool = False
    message: str = ""  # the Progressing condition's message
    progress_deadline_seconds: int = 600


@dataclass(frozen=True, slots=True)
class WorkloadVerdict:
    """A StatefulSet's, DaemonSet's or CronJob's rollout as core.workloads judges it: its
    state (None until a controller reported), progress such as "2/3 ready", the reason (what
    it waits on, or why it failed), and whether stuck pods past the rollout timeout may fail it
    (not while it waits on a person or the schedule)."""

    rollout: Rollout | None
    progress: str = ""
    reason: str = ""
    timed: bool = True


def view_key(kind: str, name: str) -> str:
    """A workload's key in a NamespaceView: a Deployment's name, else "Kind/name"."""
    return name if kind == DEPLOYMENT else f"{kind}/{name}"


@dataclass(frozen=True, slots=True)
class ObservedDeployment:
    """What the API server says a workload runs, reduced to what planning needs: a Deployment
    (``status`` from its controller), or a StatefulSet, DaemonSet or CronJob (``kind``; its
    rollout judged by core.workloads into ``verdict`` when it was read)."""

    namespace: str
    name: str
    containers: tuple[Container, ...]
    init_containers: tuple[Container, ...] = ()
    annotations: Mapping[str, str] = field(default_factory=dict)
    resource_version: str = ""
    uid: str = ""
    generation: int = 0
    status: DeploymentStatus | None = None  # None: no controller has reported on it yet
    image_owners: Mapping[str, FieldOwner] = field(default_factory=dict)  # by container name
    selector: Mapping[str, str] = field(default_factory=dict)  # spec.selector.matchLabels
    kind: str = DEPLOYMENT
    verdict: WorkloadVerdict | None = None  # the other kinds' rollout (None: not reported)

    @property
    def key(self) -> str:
        return view_key(self.kind, self.name)

    def image_of(self, container: str | None) -> str | None:
        """The image of a container or init container of its pod template (None: no such)."""
        found = (c.image for c in (*self.containers, *self.init_containers) if c.name == container)
        return next(found, None)

    def is_init(self, container: str | None) -> bool:
        """Whether `container` is one of its init containers."""
        return any(c.name == container for c in self.init_containers)


@dataclass(frozen=True, slots=True)
class NamespaceError:
    """A namespace whose Deployments could not be listed."""

    reason: str
    kind: ErrorKind = ErrorKind.KUBERNETES


NamespaceView = Mapping[str, ObservedDeployment] | NamespaceError


class Action(StrEnum):
    UPDATE = "update"
    IN_SYNC = "in-sync"
    SKIP = "skip"
    HELD = "held"  # a person changed the image, or `reconciler hold`: left alone
    ROLLED_BACK = "rolled-back"  # its rollout failed: back to the image before it
    ERROR = "error"


class Rollout(StrEnum):
    """The observed rollout state of a site's Deployment."""

    PROGRESSING = "progressing"
    AVAILABLE = "available"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class KubeEvent:
    """A Kubernetes Event to record on the Deployment ("events" of a patch mean these)."""

    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class SetImage:
    """One image a write sets: of a container, or (init) of an init container."""

    container: str
    image: str
    init: bool = False


@dataclass(frozen=True, slots=True)
class DeploymentPatch:
    """A write to one Deployment: maybe one container's image (``init``: an init container's),
    annotations under reconciler.dev/ (None removes one), and Events; guarded by the
    resourceVersion it was planned against. ``also``: the images of the workload's other
    containers a release sets in the same write (one pod template change, not several)."""

    namespace: str
    deployment: str
    annotations: Mapping[str, str | None]
    container: str | None = None
    image: str | None = None
    change_cause: str | None = None
    events: tuple[KubeEvent, ...] = ()
    resource_version: str = ""
    kind: str = DEPLOYMENT  # the workload's kind (`deployment` is its name)
    init: bool = False  # `container` is an init container (the pod's initContainers)
    also: tuple[SetImage, ...] = ()

    @property
    def images(self) -> tuple[SetImage, ...]:
        """Every image the write sets, its own first."""
        if not self.container or self.image is None:
            return self.also
        return (SetImage(self.container, self.image, self.init), *self.also)


class Skip(StrEnum):
    """Why a site was skipped (its action is SKIP)."""

    PAUSED = "paused"  # in sites.toml or by the Deployment's annotation
    IMAGE_MISSING = "image_missing"  # the target image is not there (yet)
    CHECKS_PENDING = "checks_pending"  # verify = "checks": checks still running or not reported
    SHUTTING_DOWN = "shutting_down"  # the reconciler stopped before patching it
    FAILED_COMMIT = "failed_commit"  # the branch head's rollout failed and was rolled back
    AWAITING_APPLY = "awaiting_apply"  # git delivery: committed; the GitOps tool has not applied it
    PROMOTION = "promotion"  # promote_from: the source's commit is not ready (soak, blocked)
    APPROVAL = "approval"  # approval = "manual": waiting for a person to approve the commit
    WINDOW = "window"  # a deploy window is closed


GATES = (Skip.PROMOTION, Skip.APPROVAL, Skip.WINDOW)  # what the environment gates hold back


class SiteState(StrEnum):
    """What an operator wants to know about a site at a glance: the one name of a site's state
    (the status page, the metrics and the notifications alike)."""

    IN_SYNC = "in-sync"
    BEHIND = "behind"
    FAILING = "failing"
    PAUSED = "paused"
    HELD = "held"
    ROLLED_BACK = "rolled-back"  # runs the image from before a failed rollout
    DEPLOYING = "deploying"  # for notifications: the rollout this sync started still progresses
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class ImageStatus:
    """Whether a target image may be rolled out: True, False (not yet: skip) or None (fail).

    `digest` is the manifest digest the registry answered (the index's for a multi-platform
    image); `kind` says why it failed.
    """

    exists: bool | None
    reason: str = ""
    digest: str | None = None
    kind: ErrorKind | None = None


@dataclass(frozen=True, slots=True)
class VerifyRequest:
    """A target image to check before rollout, with the commit it was built from.

    Two sites sharing an image but verifying it differently are two requests.
    """

    image: str
    repo: str
    sha: str
    mode: str
    required_checks: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Stages:
    """When each stage of one commit's way to a site happened (seconds since the epoch; None:
    not reached, or not known): pushed, checks green, image present, patched (a Helm site's
    upgrade, a git site's commit to its configuration repository), applied (a git site: its
    GitOps tool ran the commit), available; and when the reconciler first saw it as the
    branch head."""

    sha: str
    pushed: float | None = None
    checks: float | None = None
    image: float | None = None
    patched: float | None = None
    available: float | None = None
    seen: float | None = None
    applied: float | None = None


@dataclass(frozen=True, slots=True)
class Lead:
    """A site's lead time (core/leadtime.py): the stages of the commit it runs, and of the
    branch head while that is not live yet: the stage it waits in, and since when."""

    deployed: Stages | None = None
    head: Stages | None = None
    waiting: str | None = None  # the stage the head waits in (leadtime.WAITS), None: live
    since: float | None = None
    target: Stages | None = None  # an older commit an update deploys instead of the head
    write: DeploymentPatch | None = field(default=None, compare=False)  # records the head
    verb: str = "patched"  # how the page names the deploying write: "upgraded", "committed"


@dataclass(frozen=True, slots=True)
class SitePlan:
    """The planner's verdict for one site."""

    site: Site
    action: Action
    reason: str = ""
    branch: str | None = None
    sha: str | None = None  # the commit the plan targets: the head, or an older ready one
    container: str | None = None
    current_image: str | None = None
    target_image: str | None = None
    resource_version: str = ""
    error_kind: ErrorKind | None = None
    skip: Skip | None = None
    running_sha: str | None = None  # the commit the Deployment runs, as last recorded
    changed_at: str | None = None  # when the reconciler last changed it (annotation)
    notified: str | None = None  # what was last notified about it (annotation, JSON)
    rollout: Rollout | None = None
    progress: str = ""  # e.g. "2/3 ready"
    held_by: str | None = None
    held_at: str | None = None
    failed_sha: str | None = None  # a commit remembered as bad on the Deployment
    fallback: str = ""  # why an older commit than the head is the target (core/plan/fallback.py)
    write: DeploymentPatch | None = None  # what a rolled-back / held verdict writes
    clear: tuple[str, ...] = ()  # hold annotations an update removes (the branch moved on)
    head_sha: str | None = None  # the branch head (differs from sha during a fallback)
    back_to: str | None = None  # a delivery's rollback target (helm: the revision to go back to)
    note: DeploymentPatch | None = None  # recorded once the update went out (window override)
    gated: str = ""  # what the environment gates let it through with (core/gates.py)
    approved_by: str | None = None  # approval = "manual": who approved the commit it deploys
    retry_at: float | None = None  # when a gate may open by itself (a soak's end, a window's)
    lead: Lead | None = None  # lead time, stage by stage (core/leadtime.py)
    # progressing on a person or the schedule (OnDelete, a CronJob's next run): not waited for
    waiting: bool = False
    parts: tuple[SitePlan, ...] = ()  # a site of several targets: each part's verdict (release)

    @property
    def ok(self) -> bool:
        return self.action is not Action.ERROR

    def state(self, *, applied: bool = False) -> SiteState:
        """The site's state from the verdict's action and typed cause, never from its reason."""
        if self.action is Action.ERROR:
            return SiteState.FAILING
        if self.action is Action.HELD:
            return SiteState.HELD
        if self.action is Action.ROLLED_BACK or self.skip is Skip.FAILED_COMMIT:
            return SiteState.ROLLED_BACK
        if self.action is Action.IN_SYNC or applied:
            return SiteState.IN_SYNC
        if self.action is Action.SKIP and self.skip is Skip.PAUSED:
            return SiteState.PAUSED
        return SiteState.BEHIND


@dataclass(frozen=True, slots=True)
class Plan:
    """A plan value: one SitePlan per site, in config order."""

    sites: tuple[SitePlan, ...]

    @property
    def updates(self) -> tuple[SitePlan, ...]:
        return tuple(p for p in self.sites if p.action is Action.UPDATE)


@dataclass(frozen=True, slots=True)
class ImageChange:
    """One container image change the applier must make, with what to record about it."""

    namespace: str
    deployment: str
    container: str
    image: str
    previous_image: str
    repo: str
    branch: str
    sha: str
    resource_version: str = ""
    previous_sha: str = ""  # the commit previous_image was built from, when known
    clear: tuple[str, ...] = ()  # reconciler.dev/ annotations this update removes (a hold)
    trigger: str = ""  # what asked for the sync that makes it (recorded on the Deployment)
    kind: str = DEPLOYMENT  # the workload's kind (`deployment` is its name)
    notes: Mapping[str, str | None] = field(default_factory=dict)  # more annotations to write
    init: bool = False  # `container` is an init container


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What happened when one ImageChange was sent to the API server."""

    ok: bool
    reason: str = ""
    error_kind: ErrorKind | None = None
    conflict: bool = False
    generation: int | None = None
    pending: str = ""  # done, but the deploy waits for this (git delivery: a pull request)


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """The Lease as the cluster has it: who holds it (None: nobody) and the holder's stamps
    (Unix times, by the holder's clock: shown to people, never used to judge expiry)."""

    holder: str | None
    acquired_at: float | None = None
    renewed_at: float | None = None
    duration: int | None = None
    transitions: int = 0

    @property
    def expires_at(self) -> float | None:
        """When the holder's Lease runs out unless renewed (by the holder's clock)."""
        if self.holder is None or self.renewed_at is None or self.duration is None:
            return None
        return self.renewed_at + self.duration


@dataclass(frozen=True, slots=True)
class SyncRequest:
    """What a trigger asks for: some sites (None = all), and whether to stop after planning."""

    sites: frozenset[str] | None = None
    dry_run: bool = False
    plan_only: bool = False
    trigger: str = "cli"
    override_window: str | None = None  # the reason for deploying through a closed window
    by: str = ""  # who asked (recorded with an override)


@dataclass(frozen=True, slots=True)
class SiteResult:
    """A site's final verdict after a run: its plan, and whether the change was applied."""

    plan: SitePlan
    applied: bool = False
    dry_run: bool = False

    @property
    def action(self) -> Action:
        return self.plan.action

    @property
    def ok(self) -> bool:
        return self.plan.ok

    @property
    def state(self) -> SiteState:
        """in-sync, behind, failing or paused, from the verdict (a dry run changes nothing)."""
        return self.plan.state(applied=self.applied and not self.dry_run)

    def as_dict(self) -> dict[str, object]:
        p = self.plan
        return {
            "site": p.site.name,
            "repo": p.site.repo,
            "branch": p.branch,
            "sha": p.sha,
            "head_sha": p.head_sha,
            "target_sha": p.sha,
            "cluster": p.site.cluster_name,
            "namespace": p.site.namespace,
            "kind": p.site.targets[0].kind,
            "deployment": p.site.deployment,
            "container": p.container,
            "current_image": p.current_image,
            "target_image": p.target_image,
            "action": p.action.value,
            "reason": p.reason,
            "applied": self.applied,
            "error_kind": p.error_kind or None,
            "running_sha": p.running_sha,
            "changed_at": p.changed_at,
            "rollout": p.rollout.value if p.rollout else None,
            "progress": p.progress or None,
            "held_by": p.held_by,
            "held_at": p.held_at,
            "failed_sha": p.failed_sha,
            "targets": [_part(q) for q in p.parts] or None,
            "promote_from": p.site.promote_from,
            "gate": p.skip.value if p.skip in GATES else None,
            "waiting_sha": p.sha if p.skip is Skip.APPROVAL else None,
        }


@dataclass(frozen=True, slots=True)
class SyncReport:
    """The outcome of one run, for every site it covered."""

    run_id: str
    trigger: str
    dry_run: bool
    plan_only: bool
    started_at: float
    finished_at: float
    results: tuple[SiteResult, ...] = ()
    config_path: str = ""
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    @property
    def duration(self) -> float:
        return self.finished_at - self.started_at

    def count(self, action: Action) -> int:
        return sum(1 for r in self.results if r.action is action)

    @property
    def updated(self) -> int:
        return sum(1 for r in self.results if r.applied)

    def summary(self) -> str:
        """E.g. "1 update, 2 in-sync"; a site that skips its rolled-back commit counts as
        rolled-back, the word the page's counts use for it."""
        words = Counter(_word(r.plan) for r in self.results)
        parts = [f"{words[a.value]} {a.value}" for a in Action if words[a.value]]
        return ", ".join(parts) or "no sites"


def _word(p: SitePlan) -> str:
    return Action.ROLLED_BACK.value if p.skip is Skip.FAILED_COMMIT else p.action.value


def _part(p: SitePlan) -> dict[str, object]:
    """One target (container) of a site of several, for JSON."""
    target = p.site.targets[0]
    return {
        "kind": target.kind,
        "name": target.name,
        "container": p.container,
        "init": bool(p.container and p.container in target.init_containers),
        "current_image": p.current_image,
        "target_image": p.target_image,
        "action": p.action.value,
        "rollout": p.rollout.value if p.rollout else None,
        "progress": p.progress or None,
    }
