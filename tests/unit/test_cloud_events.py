"""cloud_events: Cloud Build and Artifact Registry notifications → which sites to sync (pure)."""

from __future__ import annotations

import json

import pytest

from reconciler.core.model import Site
from reconciler.core.plan.template import pattern
from reconciler.core.triggers.cloud_events import classify_build, classify_gcr, sites_for_image
from reconciler.core.triggers.hints import Outcome

A = "0123456789abcdef0123456789abcdef01234567"


def _site(name: str, repo: str, image: str, branch: str | None = "main") -> Site:
    return Site(name, repo, branch, "web", name, None, image)


SITES = (
    _site("blog", "acme/blog", "us-docker.pkg.dev/p/web/{repo}:{sha}"),
    _site("blog-eu", "acme/blog", "europe-docker.pkg.dev/p/web/{repo}:{branch}-{short_sha}", "eu"),
    _site("shop", "Acme/Shop", "gcr.io/p/{owner}-{repo}:{sha}"),
)


def _build(status: str, **extra: object) -> bytes:
    return json.dumps({"id": "b-1", "status": status, **extra}).encode()


def test_template_pattern_captures_the_commit_and_pins_the_branch() -> None:
    p = pattern("r.io/x/{repo}:{branch}-{short_sha}-{sha}", owner="O", repo="R", branch="f/x")
    m = p.fullmatch(f"r.io/x/r:f-x-{A[:7]}-{A}")
    assert m and m["sha"] == A
    assert not p.fullmatch(f"r.io/x/r:main-{A[:7]}-{A}")
    assert not p.fullmatch(f"r.io/x/r:f-x-{A[:7]}-{A}x")
    repeated = pattern("r.io/{sha}:{sha}", owner="o", repo="r", branch=None)
    assert repeated.fullmatch(f"r.io/{A}:{A}") and not repeated.fullmatch(f"r.io/{A}:{'f' * 40}")


def test_sites_for_image() -> None:
    assert sites_for_image(SITES, f"us-docker.pkg.dev/p/web/blog:{A}") == {"blog"}
    assert sites_for_image(SITES, f"europe-docker.pkg.dev/p/web/blog:eu-{A[:7]}") == {"blog-eu"}
    assert sites_for_image(SITES, f"gcr.io/p/acme-shop:{A}") == {"shop"}
    assert sites_for_image(SITES, "gcr.io/p/acme-shop:latest") == frozenset()


def test_a_successful_build_syncs_the_sites_its_substitutions_name() -> None:
    subs = {"REPO_NAME": "blog", "COMMIT_SHA": A, "BRANCH_NAME": "main"}
    hint = classify_build(_build("SUCCESS", substitutions=subs), {}, SITES)
    assert hint.outcome is Outcome.SYNC and hint.sites == frozenset({"blog"})
    assert A[:7] in hint.reason
    full = {"REPO_FULL_NAME": "acme/shop", "COMMIT_SHA": A}  # no branch: any branch
    assert classify_build(_build("SUCCESS", substitutions=full), {}, SITES).sites == frozenset(
        {"shop"}
    )


def test_a_successful_build_syncs_the_sites_of_its_images() -> None:
    images = [{"name": f"europe-docker.pkg.dev/p/web/blog:eu-{A[:7]}", "digest": "sha256:0"}]
    hint = classify_build(_build("SUCCESS", results={"images": images}), {}, SITES)
    assert hint.sites == frozenset({"blog-eu"})


@pytest.mark.parametrize("status", ["QUEUED", "WORKING", "FAILURE", "TIMEOUT", "CANCELLED"])
def test_other_build_states_are_ignored(status: str) -> None:
    subs = {"REPO_NAME": "blog", "COMMIT_SHA": A}
    hint = classify_build(_build(status, substitutions=subs), {"status": status}, SITES)
    assert hint.outcome is Outcome.IGNORED and status in hint.reason


def test_unrelated_and_malformed_builds() -> None:
    other = classify_build(_build("SUCCESS", substitutions={"REPO_NAME": "x"}), {}, SITES)
    assert other.outcome is Outcome.IGNORED
    assert classify_build(b"{nope", {}, SITES).outcome is Outcome.MALFORMED
    assert classify_build(b"{}", {}, SITES).outcome is Outcome.MALFORMED
    assert classify_build(b"{}", {"status": "WORKING"}, SITES).outcome is Outcome.IGNORED


def _gcr(action: str, tag: str | None) -> bytes:
    doc = {"action": action, "digest": "us-docker.pkg.dev/p/web/blog@sha256:" + "0" * 64}
    if tag is not None:
        doc["tag"] = tag
    return json.dumps(doc).encode()


def test_gcr_insert_of_a_site_image_syncs_it_and_delete_is_only_reported() -> None:
    tag = f"us-docker.pkg.dev/p/web/blog:{A}"
    insert = classify_gcr(_gcr("INSERT", tag), SITES)
    assert insert.outcome is Outcome.SYNC and insert.sites == frozenset({"blog"})
    delete = classify_gcr(_gcr("DELETE", tag), SITES)
    assert (
        delete.outcome is Outcome.REPORTED
        and delete.sites == frozenset({"blog"})
        and not delete.syncs
    )


def test_gcr_unrelated_untagged_and_malformed() -> None:
    assert classify_gcr(_gcr("INSERT", None), SITES).outcome is Outcome.IGNORED
    assert classify_gcr(_gcr("INSERT", "gcr.io/p/x:1"), SITES).outcome is Outcome.IGNORED
    assert classify_gcr(_gcr("UPDATE", "gcr.io/p/x:1"), SITES).outcome is Outcome.MALFORMED
    assert classify_gcr(b"[]", SITES).outcome is Outcome.MALFORMED


def test_a_build_that_names_its_branch_syncs_only_that_branchs_sites() -> None:
    """#17: an image every branch's template renders no longer syncs the other branches."""
    sites = (
        _site("www", "acme/www", "gcr.io/p/{repo}:{sha}", "main"),
        _site("www-staging", "acme/www", "gcr.io/p/{repo}:{sha}", "staging"),
        _site("www-default", "acme/www", "gcr.io/p/{repo}:{sha}", None),
    )
    images = {"images": [{"name": f"gcr.io/p/www:{A}"}]}
    built = _build("SUCCESS", results=images, substitutions={"BRANCH_NAME": "staging"})
    assert classify_build(built, {}, sites).sites == frozenset({"www-staging", "www-default"})
    unnamed = _build("SUCCESS", results=images)
    assert classify_build(unnamed, {}, sites).sites == frozenset(
        {"www", "www-staging", "www-default"}
    )
