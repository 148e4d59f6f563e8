"""Writes a site's image into its configuration repository through GitHub's REST API (requests).

Mode "commit": read the file at the branch (Contents API: text and blob SHA), edit it
(core.writeback, pure), PUT it back with that blob SHA. A conflict (409: the file moved; 422:
the branch moved) is re-read and retried, at most `max_attempts` times; a re-read file that
already holds the image is not committed again, so two writers of one change make one commit.
Mode "pr": the edit of the base branch's file is pushed (Git data API) to the site's own branch
`reconciler/<site>`, forced, on top of the base's head, and one pull request from it is opened,
or the open one updated (never a second); when the base already holds the image, an open one is
closed as superseded. GitHub's answers are mapped once, in `_failure`, to WriteBackError (that
site's failure) or GitHubError.
"""

from __future__ import annotations

import base64
import binascii
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote

import requests

from reconciler.core.errors import ErrorKind, GitHubError, WriteBackError
from reconciler.core.gitops import FileChange, RepoFile
from reconciler.core.writeback import (
    Edit,
    GitPerson,
    WriteOutcome,
    WriteRequest,
    WriteResult,
    pr_branch,
    pull_title,
    set_image,
)
from reconciler.settings import GitHubSettings

_PROTECTION_WORDS = ("protected branch", "rule violation", "through a pull request")
_CONFLICT_WORDS = ("but expected", "does not match", "not a fast forward", "wasn't supplied")


@dataclass
class _Call:
    """One write's request count (reported in WriteResult.requests)."""

    requests: int = 0


class GitRepoWriter:
    """One requests.Session against GitHub's REST API (settings.api_url), authenticated by
    `bearer` (GitHubClient.bearer: the token or the GitHub App installation's), else
    settings.token."""

    def __init__(
        self,
        settings: GitHubSettings,
        *,
        max_attempts: int = 4,
        sleep: Callable[[float], None] = time.sleep,
        bearer: Callable[[], str | None] | None = None,
    ) -> None:
        self.settings = settings
        self._bearer = bearer
        self.max_attempts = max_attempts
        self._sleep = sleep
        self.session = requests.Session()
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str, str], tuple[str, RepoFile]] = {}  # read()'s ETags
        self.session.headers.update(
            {
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
                "User-Agent": "reconciler",
            }
        )
        if settings.token:
            self.session.headers["Authorization"] = f"Bearer {settings.token}"

    # ---- plumbing ----------------------------------------------------------------------------

    def _repo_url(self, repo: str) -> str:
        return f"{self.settings.api_url.rstrip('/')}/repos/{repo}"

    def _send(self, call: _Call, method: str, url: str, **kwargs: Any) -> requests.Response:
        call.requests += 1
        token = self._bearer() if self._bearer else None
        if token:
            kwargs["headers"] = {**kwargs.get("headers", {}), "Authorization": f"Bearer {token}"}
        try:
            return self.session.request(method, url, timeout=self.settings.timeout, **kwargs)
        except requests.RequestException as exc:
            raise GitHubError(
                f"cannot reach GitHub ({type(exc).__name__})", kind=ErrorKind.GITHUB_UNREACHABLE
            ) from exc

    def _failure(self, r: requests.Response, repo: str, what: str) -> Exception:
        """The one mapping of GitHub's answers to this adapter's errors."""
        message = _message(r)
        where = f"{repo}: {what}"
        lowered = message.lower()
        if r.status_code in (403, 429) and (
            r.headers.get("x-ratelimit-remaining") == "0" or "retry-after" in r.headers
        ):
            return GitHubError(f"{where}: rate limited ({message})", kind=ErrorKind.RATE_LIMITED)
        if r.status_code in (403, 405, 409, 422) and any(w in lowered for w in _PROTECTION_WORDS):
            return WriteBackError(
                f"{where}: the branch refuses direct writes ({message.splitlines()[-1]}); "
                'use mode "pr" to deploy through a pull request',
                kind=ErrorKind.WRITEBACK_PROTECTED,
            )
        if r.status_code == 401:
            return GitHubError(f"{where}: GitHub rejected the credentials", kind=ErrorKind.AUTH)
        if r.status_code == 403:
            return WriteBackError(
                f"{where}: the token cannot push to {repo} (403: {message})",
                kind=ErrorKind.WRITEBACK_FORBIDDEN,
            )
        if r.status_code == 404:
            return WriteBackError(
                f"{where}: not found ({message})", kind=ErrorKind.WRITEBACK_NOT_FOUND
            )
        if r.status_code >= 500:
            return GitHubError(
                f"{where}: GitHub answered {r.status_code}", kind=ErrorKind.GITHUB_UNAVAILABLE
            )
        return WriteBackError(f"{where}: GitHub answered {r.status_code}: {message}")

    def _expect(
        self, r: requests.Response, ok: tuple[int, ...], repo: str, what: str
    ) -> Mapping[str, Any]:
        if r.status_code not in ok:
            raise self._failure(r, repo, what)
        body = r.json()
        return body if isinstance(body, Mapping) else {"items": body}

    # ---- reading -----------------------------------------------------------------------------

    def read(self, repo: str, ref: str, path: str) -> RepoFile:
        """The file at a branch (or commit); WriteBackError when there is no such file. A
        conditional request (the last answer's ETag): an unchanged file is a 304, which
        GitHub does not count against the rate limit, so following a rollout reads it freely."""
        key = (repo, ref, path)
        with self._lock:
            cached = self._cache.get(key)
        headers = {"If-None-Match": cached[0]} if cached else {}
        found, etag = self._get(_Call(), repo, ref, path, headers)
        if found is None:
            assert cached is not None
            return cached[1]
        if etag:
            with self._lock:
                self._cache[key] = (etag, found)
        return found

    def _read(self, call: _Call, repo: str, ref: str, path: str) -> RepoFile:
        found, _ = self._get(call, repo, ref, path, {})
        assert found is not None
        return found

    def _get(
        self, call: _Call, repo: str, ref: str, path: str, headers: Mapping[str, str]
    ) -> tuple[RepoFile | None, str]:
        """(the file, its ETag); (None, "") for a 304 to a conditional request."""
        url = f"{self._repo_url(repo)}/contents/{quote(path.strip('/'))}"
        r = self._send(call, "GET", url, params={"ref": ref}, headers=dict(headers))
        if r.status_code == 304 and headers:
            return None, ""
        if r.status_code == 404:
            missing = "branch" if "ref" in _message(r) else "file"
            thing = f"branch {ref!r}" if missing == "branch" else f"{path} on branch {ref!r}"
            raise WriteBackError(
                f"{repo}: no {thing} (or the repository is not visible to the token)",
                kind=ErrorKind.WRITEBACK_NOT_FOUND,
            )
        body = self._expect(r, (200,), repo, f"reading {path}@{ref}")
        if body.get("type") != "file":
            raise WriteBackError(
                f"{repo}: {path}@{ref} is not a file", kind=ErrorKind.WRITEBACK_TARGET
            )
        if body.get("encoding") != "base64":  # "none": over 1 MB, served without its content
            raise WriteBackError(
                f"{repo}: {path}@{ref} is larger than the Contents API serves (1 MB)",
                kind=ErrorKind.WRITEBACK_TARGET,
            )
        try:
            text = base64.b64decode(str(body["content"])).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise WriteBackError(
                f"{repo}: {path}@{ref} is not UTF-8 text", kind=ErrorKind.WRITEBACK_YAML
            ) from exc
        return RepoFile(text, str(body["sha"]), ref), r.headers.get("ETag", "")

    def last_change(self, repo: str, branch: str, path: str) -> FileChange | None:
        """The newest commit of `branch` that changed `path` (List commits with a path), or
        None when no commit did; one request."""
        call = _Call()
        params = {"sha": branch, "path": path.strip("/"), "per_page": "1"}
        r = self._send(call, "GET", f"{self._repo_url(repo)}/commits", params=params)
        found = self._expect(r, (200,), repo, f"reading the history of {path}")["items"]
        if not found:
            return None
        c = found[0]
        author = c["commit"].get("author") or {}
        return FileChange(
            str(c["sha"]),
            str(author.get("name") or "?"),
            str(author.get("email") or ""),
            str(author.get("date") or ""),
            str(c["commit"].get("message") or ""),
        )

    # ---- writing -----------------------------------------------------------------------------

    def write(self, req: WriteRequest) -> WriteResult:
        """Deploy by commit or pull request (req.mode); raises WriteBackError or GitHubError."""
        call = _Call()
        result = self._commit(call, req) if req.mode == "commit" else self._pull_request(call, req)
        return replace(result, requests=call.requests)

    def _edit(self, call: _Call, req: WriteRequest, ref: str) -> tuple[RepoFile, Edit]:
        """The file at `ref` (the branch, or a commit of it) and the edit that writes the image."""
        found = self._read(call, req.repo, ref, req.path)
        where = f"{req.repo}/{req.path}@{req.branch}"
        return found, set_image(found.text, req.target, req.image, file=where)

    def _commit(self, call: _Call, req: WriteRequest) -> WriteResult:
        url = f"{self._repo_url(req.repo)}/contents/{quote(req.path.strip('/'))}"
        for attempt in range(1, self.max_attempts + 1):
            found, edit = self._edit(call, req, req.branch)
            if not edit.changed:
                return WriteResult(WriteOutcome.UNCHANGED, edit, attempts=attempt)
            body = {
                "message": req.message(edit),
                "content": base64.b64encode(edit.text.encode()).decode(),
                "sha": found.sha,
                "branch": req.branch,
                **_people(req),
            }
            r = self._send(call, "PUT", url, json=body)
            if r.status_code in (200, 201):
                sha = str(r.json()["commit"]["sha"])
                return WriteResult(WriteOutcome.COMMITTED, edit, commit=sha, attempts=attempt)
            if not _conflict(r):
                raise self._failure(r, req.repo, f"committing {req.path} to {req.branch}")
            if attempt < self.max_attempts:
                self._sleep(random.uniform(0.05, 0.1) * 2**attempt)  # re-read after a pause
        raise WriteBackError(
            f"{req.repo}: {req.path} on {req.branch} kept changing under us "
            f"({self.max_attempts} attempts); the next sync tries again",
            kind=ErrorKind.WRITEBACK_CONFLICT,
        )

    # ---- pull requests -----------------------------------------------------------------------

    def _pull_request(self, call: _Call, req: WriteRequest) -> WriteResult:
        base = self._ref(call, req.repo, req.branch)
        if base is None:
            raise WriteBackError(
                f"{req.repo}: no branch {req.branch!r}", kind=ErrorKind.WRITEBACK_NOT_FOUND
            )
        _, edit = self._edit(call, req, base)  # the file of that very commit, the new one's parent
        head = pr_branch(req.site)
        open_pull = self._open_pull(call, req.repo, head, req.branch)
        if not edit.changed:
            closed: tuple[int, ...] = ()
            if open_pull is not None:
                self._close(call, req, int(open_pull["number"]))
                closed = (int(open_pull["number"]),)
            return WriteResult(WriteOutcome.UNCHANGED, edit, closed_pulls=closed)
        commit, pushed = self._push_branch(call, req, base, head, edit)
        title, body = pull_title(req.site, req.new_sha), req.message(edit)
        if open_pull is None:
            made = self._open(call, req, head, title, body)
            if made is not None:
                return _pull_result(WriteOutcome.PR_OPENED, edit, commit, made)
            open_pull = self._open_pull(call, req.repo, head, req.branch)  # lost a race
            if open_pull is None:
                raise WriteBackError(f"{req.repo}: the pull request from {head} vanished")
        if not pushed and open_pull.get("title") == title:
            return _pull_result(WriteOutcome.PR_CURRENT, edit, commit, open_pull)
        url = f"{self._repo_url(req.repo)}/pulls/{open_pull['number']}"
        r = self._send(call, "PATCH", url, json={"title": title, "body": body})
        updated = self._expect(r, (200,), req.repo, f"updating pull request {head}")
        return _pull_result(WriteOutcome.PR_UPDATED, edit, commit, updated)

    def _open_pull(self, call: _Call, repo: str, head: str, base: str) -> Mapping[str, Any] | None:
        owner = repo.split("/", 1)[0]
        params = {"head": f"{owner}:{head}", "base": base, "state": "open"}
        r = self._send(call, "GET", f"{self._repo_url(repo)}/pulls", params=params)
        pulls = self._expect(r, (200,), repo, f"listing pull requests from {head}")["items"]
        return pulls[0] if pulls else None

    def _open(
        self, call: _Call, req: WriteRequest, head: str, title: str, body: str
    ) -> Mapping[str, Any] | None:
        """The new pull request; None when one from `head` already exists (a concurrent open)."""
        payload = {"title": title, "head": head, "base": req.branch, "body": body}
        r = self._send(call, "POST", f"{self._repo_url(req.repo)}/pulls", json=payload)
        if r.status_code == 422 and "already exists" in r.text:
            return None
        return self._expect(r, (201,), req.repo, f"opening a pull request from {head}")

    def _close(self, call: _Call, req: WriteRequest, number: int) -> None:
        url = f"{self._repo_url(req.repo)}/pulls/{number}"
        body = f"Superseded: {req.branch} already holds {req.image} ({req.site})."
        r = self._send(call, "PATCH", url, json={"state": "closed", "body": body})
        self._expect(r, (200,), req.repo, f"closing pull request #{number}")

    def _push_branch(
        self, call: _Call, req: WriteRequest, base: str, head: str, edit: Edit
    ) -> tuple[str, bool]:
        """The site branch's head carrying `edit` on top of commit `base`, and whether it had to
        be pushed (False: it already was exactly that)."""
        current = self._ref(call, req.repo, head)
        if current is not None:
            commit = self._git(call, req.repo, "GET", f"commits/{current}")
            parents = [p["sha"] for p in commit["parents"]]
            if (
                parents == [base]
                and self._read(call, req.repo, current, req.path).text == edit.text
            ):
                return current, False
        base_commit = self._git(call, req.repo, "GET", f"commits/{base}")
        entry = {
            "path": req.path.strip("/"),
            "mode": "100644",
            "type": "blob",
            "content": edit.text,
        }
        tree = self._git(
            call,
            req.repo,
            "POST",
            "trees",
            {"base_tree": base_commit["tree"]["sha"], "tree": [entry]},
        )
        payload = {"message": req.message(edit), "tree": tree["sha"], "parents": [base]}
        made = self._git(call, req.repo, "POST", "commits", {**payload, **_people(req)})
        sha = str(made["sha"])
        if current is None:
            r = self._send(
                call,
                "POST",
                f"{self._repo_url(req.repo)}/git/refs",
                json={"ref": f"refs/heads/{head}", "sha": sha},
            )
            if r.status_code == 201:
                return sha, True
            if "already exists" not in r.text:
                raise self._failure(r, req.repo, f"creating branch {head}")
        self._git(call, req.repo, "PATCH", f"refs/heads/{quote(head)}", {"sha": sha, "force": True})
        return sha, True

    def _ref(self, call: _Call, repo: str, branch: str) -> str | None:
        r = self._send(call, "GET", f"{self._repo_url(repo)}/git/ref/heads/{quote(branch)}")
        if r.status_code == 404:
            return None
        return str(self._expect(r, (200,), repo, f"reading branch {branch}")["object"]["sha"])

    def _git(
        self, call: _Call, repo: str, method: str, path: str, body: Any = None
    ) -> Mapping[str, Any]:
        r = self._send(call, method, f"{self._repo_url(repo)}/git/{path}", json=body)
        return self._expect(r, (200, 201), repo, f"{method} git/{path.partition('/')[0]}")


def _message(r: requests.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return r.text[:200]
    return str(body.get("message", "")) if isinstance(body, dict) else r.text[:200]


def _conflict(r: requests.Response) -> bool:
    """The file or the branch moved since it was read (re-read and try again)."""
    lowered = _message(r).lower()
    if any(w in lowered for w in _PROTECTION_WORDS):
        return False
    return r.status_code in (409, 422) and any(w in lowered for w in _CONFLICT_WORDS)


def _people(req: WriteRequest) -> dict[str, dict[str, str]]:
    out = {}
    for key, who in (("author", req.author), ("committer", req.committer)):
        if isinstance(who, GitPerson):
            out[key] = {"name": who.name, "email": who.email}
    return out


def _pull_result(
    outcome: WriteOutcome, edit: Edit, commit: str, pull: Mapping[str, Any]
) -> WriteResult:
    return WriteResult(
        outcome, edit, commit=commit, pull_number=int(pull["number"]), pull_url=pull.get("html_url")
    )
