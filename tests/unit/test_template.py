"""Image templates: placeholders, tag safety, reference validity."""

from __future__ import annotations

import pytest

from reconciler.core.plan.template import render, template_problems

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize(
    ("template", "branch", "expected"),
    [
        ("gcr.io/p/{repo}:{sha}", "main", f"gcr.io/p/blog:{SHA}"),
        ("gcr.io/p/{owner}/{repo}:{short_sha}", "main", "gcr.io/p/acme/blog:0123456"),
        ("reg:5000/{repo}:{branch}-{short_sha}", "feature/x", "reg:5000/blog:feature-x-0123456"),
        ("{repo}:{sha}", "main", f"blog:{SHA}"),
    ],
)
def test_render(template: str, branch: str, expected: str) -> None:
    assert template_problems(template) == []
    assert render(template, owner="Acme", repo="Blog", branch=branch, sha=SHA) == expected


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ("x/{repo}:{nope}", "unknown placeholder {nope}"),
        ("x/{repo}:{sha!r}", "takes no format spec"),
        ("x/{repo}:{sha:.7}", "takes no format spec"),
        ("x/{repo}:latest", "must contain {sha} or {short_sha}"),
        ("x/{repo}:{sha", "malformed"),
        ("Bad/{repo}:{sha}", "not give a valid image reference"),
        ("x y/{repo}:{sha}", "not give a valid image reference"),
    ],
)
def test_problems(template: str, fragment: str) -> None:
    assert any(fragment in p for p in template_problems(template))
