"""Writing to a repository: real git commits on branches, files, protection, pull requests.

A branch moved by `RepoState.set_branch` points at a commit with no git object (its tree reads as
empty); a commit made here (a test's `commit_files`, the Contents API, the Git data API) is a real
git object and is also listed in `Repo.commits`, so the read routes (commits, compare, GraphQL)
see it like any other.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, replace

from testkit.github.git import BLOB_MODES, EMPTY_TREE, Entry, GitCommit, Person
from testkit.github.state import Commit, Repo, RepoState, iso

BOT = ("Stand-in Bot", "standin-bot@users.noreply.github.com")


@dataclass
class Pull:
    """A pull request from `head` into `base` (both branches of the same repository)."""

    number: int
    id: int
    title: str
    body: str | None
    head: str
    base: str
    head_sha: str
    base_sha: str
    state: str  # open | closed
    draft: bool
    created_at: str
    updated_at: str
    closed_at: str | None = None
    merged_at: str | None = None


def person(name: str | None = None, email: str | None = None, when: float | None = None) -> Person:
    return Person(name or BOT[0], email or BOT[1], int(time.time() if when is None else when))


def record_commit(repo: Repo, c: GitCommit) -> None:
    """List a git commit among the repository's commits (what the read routes serve)."""
    if c.sha not in repo.commits:
        repo.commits[c.sha] = Commit(
            sha=c.sha,
            message=c.message,
            date=iso(c.committer.epoch),
            parents=c.parents,
            author=c.author.name,
        )
        repo.pushed_at = iso(time.time())
        repo.full_cache = None


def tree_of(repo: Repo, commit_sha: str) -> str:
    """The commit's tree; the empty tree for a commit that has no git object."""
    c = repo.git.commits.get(commit_sha)
    return c.tree if c is not None else EMPTY_TREE


def is_ancestor(repo: Repo, ancestor: str, sha: str) -> bool:
    """Whether `ancestor` is `sha` or reachable from it through parents."""
    seen: set[str] = set()
    todo = [sha]
    while todo:
        current = todo.pop()
        if current == ancestor:
            return True
        if current in seen:
            continue
        seen.add(current)
        c = repo.commits.get(current)
        if c is not None:
            todo.extend(c.parents)
    return False


def read_file(repo: Repo, commit_sha: str, path: str) -> tuple[bytes, str] | None:
    """(content, blob sha) of the file at `path` in the commit, or None."""
    entry = repo.git.lookup(tree_of(repo, commit_sha), path)
    if entry is None or entry.mode not in BLOB_MODES:
        return None
    return repo.git.blobs[entry.sha], entry.sha


def commit_changes(
    repo: Repo,
    parent: str | None,
    changes: Mapping[str, bytes | None],
    message: str,
    *,
    author: Person,
    committer: Person | None = None,
) -> str:
    """A new commit on top of `parent` with each path set to its bytes (None deletes it)."""
    tree = tree_of(repo, parent) if parent else EMPTY_TREE
    for path, data in changes.items():
        entry = None if data is None else Entry("100644", "", repo.git.put_blob(data))
        tree = repo.git.with_path(tree, path, entry)
    sha = repo.git.put_commit(
        tree, (parent,) if parent else (), author, committer or author, message
    )
    record_commit(repo, repo.git.commits[sha])
    return sha


class GitRepoState(RepoState):
    """What tests set and read: files on branches, protection, push access, pull requests."""

    def commit_files(
        self,
        full_name: str,
        branch: str,
        files: Mapping[str, str | bytes | None],
        message: str = "Update files",
        author: tuple[str, str] | None = None,
    ) -> str:
        """A person's commit on `branch` (created from the default branch's head if missing)
        setting each file (None deletes it); returns its SHA. Protection does not apply (it is
        what a merge or an admin does)."""
        with self._lock:
            repo = self._repo(full_name)
            data = {p: v.encode() if isinstance(v, str) else v for p, v in files.items()}
            who = person(*(author or BOT))
            parent = repo.branches.get(branch) or repo.branches.get(repo.default_branch)
            sha = commit_changes(repo, parent, data, message, author=who)
            repo.branches[branch] = sha
            return sha

    def file_at(self, full_name: str, ref: str, path: str) -> str | None:
        """The text of `path` at a branch or commit SHA (None when there is no such file)."""
        with self._lock:
            repo = self._repo(full_name)
            sha = repo.branches.get(ref, ref)
            found = read_file(repo, sha, path)
            return None if found is None else found[0].decode()

    def git_commit(self, full_name: str, sha: str) -> GitCommit:
        with self._lock:
            return self._repo(full_name).git.commits[sha]

    def log(self, full_name: str, branch: str, limit: int = 50) -> list[Commit]:
        """The branch's first-parent history, newest first."""
        with self._lock:
            repo = self._repo(full_name)
            out: list[Commit] = []
            current: str | None = repo.branches.get(branch)
            while current is not None and current in repo.commits and len(out) < limit:
                out.append(repo.commits[current])
                parents = repo.commits[current].parents
                current = parents[0] if parents else None
            return out

    def protect_branch(self, full_name: str, branch: str, protected: bool = True) -> None:
        """Make `branch` refuse direct writes (Contents API, ref updates), as a protected branch
        with "require a pull request before merging" does."""
        with self._lock:
            repo = self._repo(full_name)
            (repo.protected.add if protected else repo.protected.discard)(branch)

    def deny_push(self, full_name: str, token: str, denied: bool = True) -> None:
        """The token may read the repository but not write to it (403 on every write)."""
        with self._lock:
            repo = self._repo(full_name)
            (repo.push_denied.add if denied else repo.push_denied.discard)(token)

    def pulls(self, full_name: str) -> list[Pull]:
        """Every pull request of the repository (a snapshot), oldest first."""
        with self._lock:
            return [replace(p) for p in self._repo(full_name).pulls.values()]
