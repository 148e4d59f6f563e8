"""webhooks.classify: which sites a GitHub delivery concerns (pure), on Octokit's example
payloads adapted to our repos and validated against Octokit's schema."""

from __future__ import annotations

from typing import Any

import pytest

from reconciler.core.model import Site
from reconciler.core.triggers.hints import Outcome
from reconciler.core.triggers.webhooks import classify
from testkit import webhooks as w

A, B = "a" * 40, "b" * 40


def _site(name: str, repo: str, branch: str | None = "main", verify: str = "registry") -> Site:
    return Site(name, repo, branch, "web", name, None, "gcr.io/p/{repo}:{sha}", verify=verify)


SITES = (
    _site("blog", "acme/blog"),
    _site("blog-staging", "acme/blog", "staging"),
    _site("shop", "acme/shop", None),  # the default branch
    _site("docs", "acme/docs", verify="checks"),
)


def _classify(event: str, payload: Any, known: dict[str, str] | None = None) -> Any:
    w.validate(event, payload)
    return classify(event, payload, SITES, known)


def test_push_to_a_followed_branch_syncs_its_sites() -> None:
    hint = _classify("push", w.push("acme/blog", "main", A, B))
    assert hint.outcome is Outcome.SYNC and hint.sites == {"blog"}
    assert "acme/blog@main" in hint.reason and A[:7] in hint.reason


def test_push_repo_names_are_case_insensitive() -> None:
    assert _classify("push", w.push("Acme/Blog", "staging", A, B)).sites == {"blog-staging"}


def test_push_to_the_default_branch_reaches_sites_without_a_branch() -> None:
    hint = _classify("push", w.push("acme/shop", "trunk", A, B, default_branch="trunk"))
    assert hint.outcome is Outcome.SYNC and hint.sites == {"shop"}
    other = _classify("push", w.push("acme/shop", "feature", A, B, default_branch="trunk"))
    assert other.outcome is Outcome.IGNORED


def test_push_to_other_branches_repos_and_tags_is_ignored() -> None:
    assert _classify("push", w.push("acme/blog", "feature", A, B)).outcome is Outcome.IGNORED
    assert _classify("push", w.push("acme/other", "main", A, B)).outcome is Outcome.IGNORED
    tag = w.push("acme/blog", "main", A, B)
    tag["ref"] = "refs/tags/v1"
    hint = _classify("push", tag)
    assert hint.outcome is Outcome.IGNORED and "not a branch" in hint.reason


def test_a_deleted_branch_is_reported_never_synced() -> None:
    hint = _classify("push", w.push("acme/blog", "main", w.ZERO_SHA, B))
    assert hint.outcome is Outcome.REPORTED and hint.sites == {"blog"}
    assert "deleted" in hint.reason and not hint.syncs


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(lambda: w.check_suite("acme/docs", "main", A), id="check_suite"),
        pytest.param(lambda: w.workflow_run("acme/docs", "main", A, "failure"), id="workflow_run"),
        pytest.param(lambda: w.status("acme/docs", A, "success", ["main", "x"]), id="status"),
    ],
)
def test_checks_completing_sync_the_sites_that_verify_by_checks(payload: Any) -> None:
    doc = payload()
    event = (
        "status" if "state" in doc else next(k for k in ("check_suite", "workflow_run") if k in doc)
    )
    hint = _classify(event, doc)
    assert hint.outcome is Outcome.SYNC and hint.sites == {"docs"}


def test_checks_reach_registry_sites_only_when_that_commit_is_their_head() -> None:
    assert _classify("check_suite", w.check_suite("acme/blog", "main", A)).outcome is (
        Outcome.IGNORED
    )
    hint = _classify("check_suite", w.check_suite("acme/blog", "main", A), {"blog": A, "shop": A})
    assert hint.sites == {"blog"}


def test_check_run_reads_the_branch_from_its_suite() -> None:
    doc = w.example("check_run", "completed")
    doc["repository"]["full_name"] = "acme/docs"
    doc["check_run"]["head_sha"] = A
    doc["check_run"]["check_suite"]["head_branch"] = "main"
    assert _classify("check_run", doc).sites == {"docs"}
    doc["check_run"]["check_suite"]["head_branch"] = "other"
    assert _classify("check_run", doc).outcome is Outcome.IGNORED


def test_unfinished_checks_and_pending_statuses_are_ignored() -> None:
    requested = w.example("check_suite", "requested")
    requested["repository"]["full_name"] = "acme/docs"
    assert _classify("check_suite", requested).outcome is Outcome.IGNORED
    pending = _classify("status", w.status("acme/docs", A, "pending", ["main"]))
    assert pending.outcome is Outcome.IGNORED and "pending" in pending.reason


def test_ping_and_other_events() -> None:
    assert _classify("ping", w.example("ping")).outcome is Outcome.PING
    deployment = w.example("deployment", "created")
    assert _classify("deployment", deployment).outcome is Outcome.IGNORED


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ([], "JSON object"),
        ({"ref": "refs/heads/main", "after": A}, '"repository"'),
        ({"repository": {"full_name": 3}, "ref": "x", "after": A}, '"repository.full_name"'),
        ({"repository": {"full_name": "acme/blog"}, "after": A}, '"ref"'),
    ],
)
def test_malformed_pushes_name_the_field(payload: Any, field: str) -> None:
    hint = classify("push", payload, SITES)
    assert hint.outcome is Outcome.MALFORMED and field in hint.reason
