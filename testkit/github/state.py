"""The stand-in's world: repositories, branches, commits and checks, and the methods tests drive."""

from __future__ import annotations

import base64
import re
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

from testkit.github.git import GitStore

Json = Any
CheckState = Literal[
    "success",
    "pending",
    "failure",
    "error",
    # check-run conclusions only (a commit status has none of these)
    "neutral",
    "skipped",
    "timed_out",
    "cancelled",
    "action_required",
]
CheckKind = Literal["both", "run", "status"]
STATUS_STATES = ("success", "pending", "failure", "error")

SHA_RE = re.compile(r"^[0-9a-f]{40}$")


def random_sha() -> str:
    """A random 40-hex commit SHA."""
    return secrets.token_hex(20)


def iso(ts: float) -> str:
    """GitHub's timestamp format (UTC, seconds)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def node_id(text: str) -> str:
    """A GraphQL-style opaque node id."""
    return base64.b64encode(text.encode()).decode().rstrip("=")


@dataclass(frozen=True)
class Commit:
    sha: str
    message: str
    date: str
    parents: tuple[str, ...]
    author: str = "Stand-in Bot"


@dataclass(frozen=True)
class Check:
    id: int
    name: str
    state: str
    created_at: str
    kind: str = "both"  # a commit status and a check run, or only one of them

    @property
    def status(self) -> bool:
        return self.kind in ("both", "status")

    @property
    def run(self) -> bool:
        return self.kind in ("both", "run")


@dataclass
class DeploymentStatus:
    """One status of a GitHub Deployment, as created through the API."""

    id: int
    state: str
    description: str
    environment: str
    log_url: str
    environment_url: str
    created_at: str


@dataclass
class Deployment:
    """A GitHub Deployment and its statuses (newest last)."""

    id: int
    sha: str
    ref: str
    task: str
    environment: str
    description: str | None
    payload: Json
    transient: bool
    production: bool
    created_at: str
    statuses: list[DeploymentStatus] = field(default_factory=list)


@dataclass
class Repo:
    owner: str
    name: str
    id: int
    owner_id: int
    owner_type: str
    default_branch: str
    private: bool
    created_at: str
    pushed_at: str
    branches: dict[str, str] = field(default_factory=dict)
    renamed: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)
    checks: dict[str, list[Check]] = field(default_factory=dict)
    full_cache: dict[str, Json] | None = None
    deployments: dict[int, Deployment] = field(default_factory=dict)
    git: GitStore = field(default_factory=GitStore)  # real git objects (gitstate.py)
    protected: set[str] = field(default_factory=set)  # branches that refuse direct writes
    push_denied: set[str] = field(default_factory=set)  # tokens that may read but not write
    pulls: dict[int, Any] = field(default_factory=dict)  # number -> gitstate.Pull

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


def resolve_commit(repo: Repo, ref: str) -> str | None:
    """The SHA a ref names in `repo` (branch, heads/…, refs/heads/…, HEAD or a known SHA)."""
    if ref in repo.branches:
        return repo.branches[ref]
    for prefix in ("refs/heads/", "heads/"):
        if ref.startswith(prefix) and ref[len(prefix) :] in repo.branches:
            return repo.branches[ref[len(prefix) :]]
    if ref == "HEAD":
        return repo.branches.get(repo.default_branch)
    lowered = ref.lower()
    if SHA_RE.match(lowered) and lowered in repo.commits:
        return lowered
    return None


def rollup_state(checks: Sequence[Check]) -> str:
    """GraphQL's StatusCheckRollupState over statuses and check runs alike."""
    states = {c.state for c in checks}
    if states - {"success", "pending", "neutral", "skipped"}:
        return "FAILURE"
    return "PENDING" if "pending" in states else "SUCCESS"


def page(items: list[Json], query: Mapping[str, list[str]]) -> tuple[list[Json], int, int]:
    """One page of a REST list (`per_page` default 30, at most 100; `page` from 1)."""
    try:
        per_page = max(1, min(100, int((query.get("per_page") or ["30"])[0])))
        number = max(1, int((query.get("page") or ["1"])[0]))
    except ValueError:
        per_page, number = 30, 1
    return items[(number - 1) * per_page : number * per_page], per_page, number


def links(url: str, total: int, query: Mapping[str, list[str]]) -> str:
    """GitHub's Link header (next, last) for the page `query` asks for; "" on the last page."""
    _, per_page, number = page([], query)
    last = max(1, -(-total // per_page))
    if number >= last:
        return ""
    return (
        f'<{url}?per_page={per_page}&page={number + 1}>; rel="next", '
        f'<{url}?per_page={per_page}&page={last}>; rel="last"'
    )


def combined_state(checks: Sequence[Check]) -> str:
    """GitHub's combined status over a commit's statuses."""
    states = {c.state for c in checks if c.status}
    if not states:
        return "pending"
    if states & {"failure", "error"}:
        return "failure"
    if "pending" in states:
        return "pending"
    return "success"


class Core:
    """What every part of the stand-in shares: one re-entrant lock and one id sequence."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._next_id = 100_000

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id


class RepoState(Core):
    """Repositories and their branches, commits and checks; every method takes the lock."""

    def __init__(self) -> None:
        super().__init__()
        self._repos: dict[str, Repo] = {}
        self._owner_ids: dict[str, int] = {}
        # bumped by every change of repositories, branches, commits or checks: an answer
        # remembered at another generation is stale (GraphQLApi.memo_answers)
        self.generation = 0

    def _repo(self, full_name: str) -> Repo:
        repo = self._repos.get(full_name.lower())
        if repo is None:
            raise KeyError(f"no such repository in the stand-in: {full_name}")
        return repo

    def _find_repo(self, owner: str, name: str) -> Repo | None:
        with self._lock:
            return self._repos.get(f"{owner}/{name}".lower())

    def add_repo(
        self,
        full_name: str,
        branches: Mapping[str, str] | None = None,
        default_branch: str = "main",
        private: bool = False,
        owner_type: Literal["User", "Organization"] = "Organization",
    ) -> None:
        """Create/replace a repository; branches=None gives it one random-SHA default branch."""
        owner, _, name = full_name.partition("/")
        if not owner or not name or "/" in name:
            raise ValueError(f"expected owner/name, got {full_name!r}")
        now = time.time()
        with self._lock:
            self.generation += 1
            owner_id = self._owner_ids.setdefault(owner.lower(), self._new_id())
            repo = Repo(
                owner=owner,
                name=name,
                id=self._new_id(),
                owner_id=owner_id,
                owner_type=owner_type,
                default_branch=default_branch,
                private=private,
                created_at=iso(now - 86_400),
                pushed_at=iso(now),
            )
            self._repos[full_name.lower()] = repo
            initial = {default_branch: random_sha()} if branches is None else dict(branches)
            for branch, sha in initial.items():
                self._set_branch_locked(repo, branch, sha, None)

    def remove_repo(self, full_name: str) -> None:
        with self._lock:
            self.generation += 1
            self._repos.pop(full_name.lower(), None)

    def _set_branch_locked(
        self,
        repo: Repo,
        branch: str,
        sha: str,
        message: str | None,
        author: str | None = None,
    ) -> None:
        if not SHA_RE.match(sha):
            raise ValueError(f"not a 40-hex lowercase SHA: {sha!r}")
        self.generation += 1
        previous = repo.branches.get(branch)
        if sha not in repo.commits:
            now = time.time()
            repo.commits[sha] = Commit(
                sha=sha,
                message=message or f"Update {branch} to {sha[:7]}",
                date=iso(now),
                parents=(previous,) if previous and previous != sha else (),
                author=author or "Stand-in Bot",
            )
            repo.pushed_at = iso(now)
        repo.branches[branch] = sha
        repo.renamed.pop(branch, None)
        repo.full_cache = None

    def set_branch(
        self,
        full_name: str,
        branch: str,
        sha: str | None = None,
        message: str | None = None,
        author: str | None = None,
    ) -> str:
        """Move (or create) a branch; returns the SHA (random when not given). A new SHA becomes
        a commit whose parent is the branch's previous head, with this message and author."""
        sha = sha or random_sha()
        with self._lock:
            self._set_branch_locked(self._repo(full_name), branch, sha, message, author)
        return sha

    def branch_sha(self, full_name: str, branch: str) -> str | None:
        with self._lock:
            return self._repo(full_name).branches.get(branch)

    def head(self, full_name: str, branch: str) -> str:
        """The SHA of an existing branch (KeyError if there is no such branch)."""
        with self._lock:
            return self._repo(full_name).branches[branch]

    def delete_branch(self, full_name: str, branch: str) -> None:
        with self._lock:
            self.generation += 1
            repo = self._repo(full_name)
            repo.branches.pop(branch, None)
            repo.renamed = {k: v for k, v in repo.renamed.items() if v != branch}

    def rename_branch(self, full_name: str, old: str, new: str) -> None:
        """Rename like GitHub: GET .../branches/{old} then answers 301 to the new name."""
        with self._lock:
            self.generation += 1
            repo = self._repo(full_name)
            sha = repo.branches.pop(old)
            repo.branches[new] = sha
            repo.renamed = {k: (new if v == old else v) for k, v in repo.renamed.items()}
            repo.renamed[old] = new
            repo.renamed.pop(new, None)
            if repo.default_branch == old:
                repo.default_branch = new
            repo.full_cache = None

    def set_default_branch(self, full_name: str, branch: str) -> None:
        with self._lock:
            self.generation += 1
            repo = self._repo(full_name)
            repo.default_branch = branch
            repo.full_cache = None

    def set_checks(
        self,
        full_name: str,
        sha: str,
        state: CheckState,
        names: Sequence[str] = ("ci",),
        kind: CheckKind = "both",
    ) -> None:
        """Give commit `sha` one commit status and/or one check run per name, all in `state`
        (check-run conclusions such as "neutral" need kind="run")."""
        if state not in CheckState.__args__:  # type: ignore[attr-defined]
            raise ValueError(f"bad check state {state!r}")
        if kind != "run" and state not in STATUS_STATES:
            raise ValueError(f"a commit status cannot be {state!r}: use kind='run'")
        now = iso(time.time())
        with self._lock:
            self.generation += 1
            repo = self._repo(full_name)
            kept = [c for c in repo.checks.get(sha, []) if c.name not in names]
            kept += [Check(self._new_id(), name, state, now, kind) for name in names]
            repo.checks[sha] = kept

    def deployments(self, full_name: str) -> list[Deployment]:
        """The repository's Deployments (oldest first), each with its statuses."""
        with self._lock:
            return [
                replace(d, statuses=list(d.statuses))
                for d in self._repo(full_name).deployments.values()
            ]

    def clear_checks(self, full_name: str, sha: str) -> None:
        with self._lock:
            self.generation += 1
            self._repo(full_name).checks.pop(sha, None)
