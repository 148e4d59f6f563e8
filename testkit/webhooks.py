"""GitHub webhook deliveries for tests: Octokit's example payloads adapted to a test's repos,
validated against Octokit's JSON Schema before they are sent, signed like GitHub signs them."""

from __future__ import annotations

import copy
import functools
import hashlib
import hmac
import json
import urllib.error
import urllib.request
import uuid
from typing import Any

import jsonschema  # type: ignore[import-untyped]

from testkit.github.schemas import shared_dir

SHARED = shared_dir() / "github" / "webhooks"  # RECONCILER_SHARED_DIR overrides, as for schemas
ZERO_SHA = "0" * 40


@functools.cache
def _examples() -> dict[str, Any]:
    return json.loads((SHARED / "examples.json").read_text())  # type: ignore[no-any-return]


@functools.cache
def _validator(definition: str) -> Any:
    schema = json.loads((SHARED / "schema.json").read_text())
    root = {"$ref": f"#/definitions/{definition}", "definitions": schema["definitions"]}
    return jsonschema.Draft7Validator(root)


def definition(event: str, payload: dict[str, Any]) -> str:
    """The schema definition a payload of ``event`` must match (``push$event``, ...)."""
    action = payload.get("action")
    return f"{event}${action}" if action else f"{event}$event"


def _valid(event: str, payload: dict[str, Any]) -> bool:
    return bool(_validator(definition(event, payload)).is_valid(payload))


def validate(event: str, payload: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError unless ``payload`` is a valid ``event`` delivery."""
    _validator(definition(event, payload)).validate(payload)


def example(event: str, action: str | None = None, **match: Any) -> dict[str, Any]:
    """A deep copy of the first example of ``event`` (with ``action``) whose top-level fields
    equal ``match`` and that is valid under the schema (a few examples predate it)."""
    for doc in _examples()[event]["examples"]:
        if action is not None and doc.get("action") != action:
            continue
        if all(doc.get(k) == v for k, v in match.items()) and _valid(event, doc):
            return copy.deepcopy(doc)
    raise KeyError(f"no {event} example with action={action} {match}")


def _repository(payload: dict[str, Any], repo: str, default_branch: str) -> None:
    owner, name = repo.split("/")
    r = payload["repository"]
    r.update(full_name=repo, name=name, default_branch=default_branch)
    if isinstance(r.get("owner"), dict):
        r["owner"]["login"] = owner
        if "name" in r["owner"]:
            r["owner"]["name"] = owner


def push(repo: str, branch: str, after: str, before: str, default_branch: str = "main") -> Any:
    """A push of ``branch`` to ``after`` (ZERO_SHA: the branch was deleted)."""
    deleted = after == ZERO_SHA
    doc = example("push", ref="refs/heads/master" if not deleted else "refs/tags/simple-tag")
    _repository(doc, repo, default_branch)
    doc.update(ref=f"refs/heads/{branch}", after=after, before=before, deleted=deleted)
    doc["created"] = before == ZERO_SHA
    if not deleted and doc.get("head_commit"):
        doc["head_commit"]["id"] = after
        doc["head_commit"]["tree_id"] = after
    return doc


def check_suite(repo: str, branch: str, sha: str, conclusion: str = "success") -> Any:
    doc = example("check_suite", "completed")
    _repository(doc, repo, "main")
    doc["check_suite"].update(head_sha=sha, head_branch=branch, conclusion=conclusion)
    return doc


def workflow_run(repo: str, branch: str, sha: str, conclusion: str = "success") -> Any:
    doc = example("workflow_run", "completed")
    _repository(doc, repo, "main")
    doc["workflow_run"].update(head_sha=sha, head_branch=branch, conclusion=conclusion)
    return doc


def status(repo: str, sha: str, state: str, branches: list[str]) -> Any:
    doc = example("status")
    _repository(doc, repo, "main")
    template = doc["branches"][0]
    doc.update(sha=sha, state=state)
    doc["branches"] = [
        {**copy.deepcopy(template), "name": b, "commit": {**template["commit"], "sha": sha}}
        for b in branches
    ]
    return doc


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def deliver(
    url: str,
    event: str,
    payload: Any,
    secret: str | None,
    *,
    delivery: str | None = None,
    signature: str | None = None,
    check: bool = True,
) -> tuple[int, Any]:
    """POST one delivery to ``url`` as GitHub would (validated first unless ``check`` is off);
    (status, JSON body)."""
    if check:
        validate(event, payload)
    body = json.dumps(payload).encode()
    req = urllib.request.Request(url, data=body, method="POST")
    req.add_header("Content-Type", "application/json")
    req.add_header("User-Agent", "GitHub-Hookshot/test")
    req.add_header("X-GitHub-Event", event)
    req.add_header("X-GitHub-Delivery", delivery or str(uuid.uuid4()))
    if signature is None and secret is not None:
        signature = sign(secret, body)
    if signature is not None:
        req.add_header("X-Hub-Signature-256", signature)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())
