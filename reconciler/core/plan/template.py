"""Image templates: which placeholders exist, how they are checked, and how they are filled in."""

from __future__ import annotations

import functools
import re
import string

PLACEHOLDERS = ("sha", "short_sha", "branch", "owner", "repo")
SHORT_SHA_LEN = 7

# The reference grammar of the OCI distribution spec, simplified: [host[:port]/]path[:tag][@digest].
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_HOST = rf"(?:(?:{_LABEL}(?:\.{_LABEL})+|localhost|{_LABEL}(?=:[0-9]))(?::[0-9]+)?/)"
_IMAGE_RE = re.compile(
    rf"^{_HOST}?{_COMPONENT}(?:/{_COMPONENT})*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})?$"
)
_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def template_problems(template: str) -> list[str]:
    """Every reason `template` cannot be used, empty when it is fine."""
    try:
        specs = [
            (f, spec, conv)
            for _, f, spec, conv in string.Formatter().parse(template)
            if f is not None
        ]
    except ValueError as exc:
        return [f"image template {template!r} is malformed: {exc}"]
    problems = []
    for name, spec, conv in specs:
        if name not in PLACEHOLDERS:
            known = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
            problems.append(f"image template has unknown placeholder {{{name}}} (known: {known})")
        elif spec or conv:
            problems.append(f"image template placeholder {{{name}}} takes no format spec")
    if problems:
        return problems
    fields = {name for name, _, _ in specs}
    if not fields & {"sha", "short_sha"}:
        problems.append(
            "image template must contain {sha} or {short_sha}, or no commit would ever change it"
        )
    sample = render(template, owner="owner", repo="repo", branch="main", sha="0" * 40)
    if not _IMAGE_RE.match(sample):
        problems.append(f"image template does not give a valid image reference (e.g. {sample!r})")
    return problems


def tag_safe(value: str) -> str:
    """`value` with every character not allowed in an image tag replaced by '-'."""
    return _TAG_UNSAFE.sub("-", value)


def render(template: str, *, owner: str, repo: str, branch: str, sha: str) -> str:
    """Fill in an image template. Owner and repo are lowercased: image names must be lowercase."""
    return template.format(
        sha=sha,
        short_sha=sha[:SHORT_SHA_LEN],
        branch=tag_safe(branch),
        owner=owner.lower(),
        repo=repo.lower(),
    )


@functools.lru_cache(maxsize=16384)
def pattern(template: str, *, owner: str, repo: str, branch: str | None) -> re.Pattern[str]:
    """A regex that fully matches every image `template` can render for this owner and repo.

    Group "sha" (or "short_sha") captures the commit; `branch` None matches any branch. Cached:
    matching one image against every site's template must not compile a regex per site (re's
    own cache holds 512, fewer than the sites of a large config).
    """
    any_branch = r"[A-Za-z0-9_.-]+"
    fixed = {
        "sha": "[0-9a-f]{40}",
        "short_sha": f"[0-9a-f]{{{SHORT_SHA_LEN}}}",
        "branch": re.escape(tag_safe(branch)) if branch is not None else any_branch,
        "owner": re.escape(owner.lower()),
        "repo": re.escape(repo.lower()),
    }
    out, seen = [], set()
    for literal, name, _, _ in string.Formatter().parse(template):
        out.append(re.escape(literal))
        if name is None:
            continue
        if name in seen:
            out.append(f"(?P={name})")
        else:
            seen.add(name)
            out.append(f"(?P<{name}>{fixed[name]})")
    return re.compile("".join(out))
