"""GitHub webhook deliveries → Hints (pure): which sites an event concerns, and why.

- ``push`` to a branch some sites follow: sync them; a deleted branch (``after`` all zeros) is
  reported on them and never deployed; tags and other branches are ignored.
- ``check_suite`` / ``check_run`` / ``workflow_run`` ``completed`` and ``status`` (not
  ``pending``): sync the sites whose verification waits on that commit: those with
  ``verify = "checks"`` on that repository and branch, and those whose branch head, as last
  seen, is that commit (a workflow that builds the image finishing makes it exist).
- ``ping``: answered; anything else is ignored.

The payload is checked for the few fields used here; anything missing or of the wrong type makes
the delivery MALFORMED, with the field named.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from reconciler.core.model import Site
from reconciler.core.triggers.hints import Hint, Outcome, follows

__all__ = ["CHECK_EVENTS", "ZERO_SHA", "classify", "push_time"]

ZERO_SHA = "0" * 40
CHECK_EVENTS = ("check_suite", "check_run", "workflow_run", "status")
_HEADS = "refs/heads/"


class _Malformed(Exception):
    pass


def classify(
    event: str,
    payload: object,
    sites: Iterable[Site],
    known_heads: Mapping[str, str] | None = None,
) -> Hint:
    """The Hint for one delivery of ``event`` (the X-GitHub-Event header) with ``payload``.

    ``known_heads`` maps site names to the branch head (SHA) the last sync saw for them.
    """
    sites = tuple(sites)
    try:
        if event == "ping":
            return Hint(event, Outcome.PING, "ping: the webhook is set up")
        if not isinstance(payload, dict):
            raise _Malformed("the payload is not a JSON object")
        if event == "push":
            return _push(payload, sites)
        if event in CHECK_EVENTS:
            return _check(event, payload, sites, known_heads or {})
    except _Malformed as exc:
        return Hint(event, Outcome.MALFORMED, f"{event}: {exc}")
    return Hint(event, Outcome.IGNORED, f"{event or 'unnamed'} events are not used")


def push_time(event: str, payload: object) -> tuple[str, str, float] | None:
    """(repository, commit, push time) of a ``push`` delivery: the time is the payload's
    ``repository.pushed_at`` (seconds since the epoch in push events; an RFC 3339 string is
    read too); None when it is not a push to a commit or has no such time. Never raises."""
    if event != "push" or not isinstance(payload, dict):
        return None
    repo, after = payload.get("repository"), payload.get("after")
    if not isinstance(repo, dict) or not isinstance(after, str) or after == ZERO_SHA:
        return None
    name, at = repo.get("full_name"), repo.get("pushed_at")
    if not isinstance(name, str):
        return None
    if isinstance(at, str):
        at = _rfc3339(at)
    if isinstance(at, bool) or not isinstance(at, int | float) or at <= 0:
        return None
    return name, after, float(at)


def _rfc3339(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _push(payload: dict[str, Any], sites: tuple[Site, ...]) -> Hint:
    repo, default = _repository(payload)
    ref = _field(payload, "ref", str)
    after = _field(payload, "after", str)
    deleted = _optional(payload, "deleted", bool)
    if not ref.startswith(_HEADS):
        return Hint("push", Outcome.IGNORED, f"push to {ref} of {repo}: not a branch")
    branch = ref[len(_HEADS) :]
    names = follows(sites, repo, branch, default)
    if not names:
        return Hint("push", Outcome.IGNORED, f"push to {repo}@{branch}: no site follows it")
    if after == ZERO_SHA or deleted is True:
        return Hint(
            "push",
            Outcome.REPORTED,
            f"branch {repo}@{branch} was deleted; its sites keep what they run",
            names,
        )
    return Hint("push", Outcome.SYNC, f"push to {repo}@{branch}: now at {after[:7]}", names)


def _check(
    event: str, payload: dict[str, Any], sites: tuple[Site, ...], known: Mapping[str, str]
) -> Hint:
    repo, default = _repository(payload)
    branches: list[str | None]
    if event == "status":
        sha = _field(payload, "sha", str)
        state = _field(payload, "state", str)
        if state == "pending":
            return Hint(event, Outcome.IGNORED, f"status of {repo}@{sha[:7]} is pending")
        branches = list(_branches(payload))
        what = f"status {state}"
    else:
        action = _field(payload, "action", str)
        body = _field(payload, event, dict)
        if action != "completed":
            return Hint(event, Outcome.IGNORED, f"{event} {action}: only completed is used")
        sha = _field(body, "head_sha", str, f"{event}.head_sha")
        suite = body
        if event == "check_run":
            suite = _optional(body, "check_suite", dict, "check_run.check_suite") or {}
        where = "check_run.check_suite" if event == "check_run" else event
        branches = [_optional(suite, "head_branch", str, f"{where}.head_branch")]
        conclusion = _optional(body, "conclusion", str, f"{event}.conclusion")
        what = f"{event} completed ({conclusion or 'no conclusion'})"
    repo_sites = [s for s in sites if s.repo.lower() == repo.lower()]
    checked = [s for s in repo_sites if s.verify == "checks"]
    names = {s.name for s in repo_sites if known.get(s.name) == sha}
    for branch in branches:
        if branch is not None:  # a commit on no branch: only the known heads can match
            names |= follows(checked, repo, branch, default)
    if not names:
        return Hint(event, Outcome.IGNORED, f"{what} on {repo}@{sha[:7]}: no site waits on it")
    return Hint(event, Outcome.SYNC, f"{what} on {repo}@{sha[:7]}", frozenset(names))


def _branches(payload: dict[str, Any]) -> Iterable[str]:
    """The names in a status event's ``branches``: a list of objects, each with a ``name``."""
    listed = _optional(payload, "branches", list) or []
    for i, entry in enumerate(listed):
        if not isinstance(entry, dict):
            raise _Malformed(f'"branches[{i}]" is {_kind(entry)}, expected an object')
        yield _field(entry, "name", str, f"branches[{i}].name")


def _repository(payload: dict[str, Any]) -> tuple[str, str | None]:
    repo = _field(payload, "repository", dict)
    name = _field(repo, "full_name", str, "repository.full_name")
    default = _optional(repo, "default_branch", str, "repository.default_branch")
    return name, default


def _field(doc: dict[str, Any], key: str, kind: type, where: str | None = None) -> Any:
    """``doc[key]``, which must be a ``kind``: missing, null or another type is malformed."""
    value = doc.get(key)
    if not isinstance(value, kind):
        shown = "missing" if value is None else _kind(value)
        raise _Malformed(f'"{where or key}" is {shown}, expected {_KINDS[kind]}')
    return value


def _optional(doc: dict[str, Any], key: str, kind: type, where: str | None = None) -> Any:
    """``doc[key]`` if present and not null, else None; another type is malformed."""
    return None if doc.get(key) is None else _field(doc, key, kind, where)


_KINDS = {
    str: "a string",
    bool: "a boolean",
    int: "a number",
    float: "a number",
    list: "a list",
    dict: "an object",
}


def _kind(value: object) -> str:
    """How JSON calls the type of ``value``: a string, a number, an object, ..."""
    if isinstance(value, bool):
        return _KINDS[bool]
    return next((name for kind, name in _KINDS.items() if isinstance(value, kind)), "null")
