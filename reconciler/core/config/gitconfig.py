"""[sites.NAME.git] and [defaults.git] → a GitSpec, validated; problems name file:line:site.

Pure; called by the sites.toml validator (sites.py) once per site with its own problem sink,
so the keys, types, enums and patterns are the ones of keys.GIT that the JSON Schema reads too.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from typing import Any

from reconciler.core.config import keys as configkeys
from reconciler.core.model import DEPLOYMENT, GitSpec, Target

Problem = Callable[[tuple[str, ...], str, str | None], None]

GIT_KEYS = tuple(configkeys.GIT)
GIT_DEFAULT_KEYS = tuple(configkeys.GIT_DEFAULTS)
WRITE_KEYS = ("kustomize_image", "values_tag", "values_digest", "manifest")
_PERSON_RE = re.compile(configkeys.GIT_PERSON_PATTERN)
_BAD_PATH = re.compile(r"(^/|//|(^|/)\.\.?(/|$)|[\x00-\x1f\\])")


def parse_git(
    raw: Mapping[str, Any],
    defaults: Mapping[str, Any],
    where: tuple[str, ...],
    of: tuple[str, str | None, tuple[Target, ...]],
    problem: Problem,
) -> GitSpec | None:
    """The site's GitSpec (None without a `git` table, or when it has problems: each reported);
    `of` is the site's name, container and [[targets]] (git delivers to one Deployment)."""
    site, container, targets = of
    if "git" not in raw:
        return None
    one_way(raw, targets, where, site, problem)
    table, base = raw["git"], defaults.get("git", {})
    here = (*where, "git")
    if not isinstance(table, dict):
        problem(here, '"git" must be a table: [sites.NAME.git]', site)
        return None
    if not isinstance(base, dict):
        base = {}  # check_defaults reports it, once
    reader = _Reader(table, base, here, site, problem)
    return reader.spec(container)


def one_way(
    raw: Mapping[str, Any],
    targets: tuple[Target, ...],
    where: tuple[str, ...],
    site: str,
    problem: Problem,
) -> None:
    """A git site is delivered only by git, to one Deployment."""
    if "helm" in raw:
        message = "a site is delivered one way: a [helm] release or a [git] repository, not both"
        problem((*where, "git"), message, site)
    if len(targets) > 1 or (targets and targets[0].kind != DEPLOYMENT):
        message = (
            "git delivery writes one Deployment's image: use deployment/container, "
            "not [[sites.NAME.targets]]"
        )
        problem((*where, "git"), message, site)


def check_defaults(defaults: Mapping[str, Any], problem: Problem) -> None:
    """[defaults.git], once: a table of known keys with valid values (each site's table is
    checked by parse_git, and uses only the valid ones of these)."""
    if "git" not in defaults:
        return
    base = defaults["git"]
    if not isinstance(base, dict):
        problem(("defaults", "git"), '"git" must be a table: [defaults.git]', None)
        return
    reader = _Reader({}, base, ("defaults", "git"), None, problem)
    reader.unknown(base, GIT_DEFAULT_KEYS, True)
    for key in GIT_DEFAULT_KEYS:
        reader.string(key, report_defaults=True)


def _quiet(where: tuple[str, ...], message: str, site: str | None) -> None:
    """A problem already reported elsewhere."""


class _Reader:
    def __init__(
        self,
        table: Mapping[str, Any],
        base: Mapping[str, Any],
        where: tuple[str, ...],
        site: str | None,
        problem: Problem,
    ) -> None:
        self.table, self.base, self.where, self.site = table, base, where, site
        self.report = problem
        self.bad = 0

    def problem(self, key: str | None, message: str, *, default: bool = False) -> None:
        self.bad += 1
        where = ("defaults", "git") if default else self.where
        self.report((*where, key) if key else where, message, self.site)

    def unknown(self, table: Mapping[str, Any], known: tuple[str, ...], default: bool) -> None:
        for key in table:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f' (did you mean "{close[0]}"?)' if close else ""
                self.problem(
                    key, f'unknown key "{key}"{hint}; allowed: {", ".join(known)}', default=default
                )

    def string(self, key: str, *, report_defaults: bool = False) -> str | None:
        """The key's string, from the site's table or else [defaults.git]; pattern and enum
        of keys.GIT checked (a bad default is None here: check_defaults reports it)."""
        own = key in self.table
        value = self.table.get(key) if own else self.base.get(key)
        if value is None:
            return None
        if not own and not report_defaults:  # quietly: check_defaults reports it
            problems, report = self.bad, self.report
            self.report = _quiet
            try:
                return self.string(key, report_defaults=True)
            finally:
                self.bad, self.report = problems, report
        if not isinstance(value, str) or not value.strip():
            what = "a non-empty string" if isinstance(value, str) else "a string"
            self.problem(key, f'"{key}" must be {what}', default=not own)
            return None
        spec = configkeys.GIT[key]
        if spec.enum and value not in spec.enum:
            allowed = ", ".join(f'"{v}"' for v in spec.enum)
            self.problem(key, f'"{key}" must be one of {allowed}', default=not own)
            return None
        if spec.pattern is not None and not re.match(spec.pattern, value):
            self.problem(
                key, f'"{key}" {value!r} is not valid: {spec.description}', default=not own
            )
            return None
        return value

    def spec(self, container: str | None) -> GitSpec | None:
        self.unknown(self.table, GIT_KEYS, False)
        repo, file = self.string("repo"), self.string("file")
        for key, value in (("repo", repo), ("file", file)):
            if value is None and key not in self.table and key not in self.base:
                example = "acme/deploy" if key == "repo" else "apps/shop/kustomization.yaml"
                self.problem(None, f'missing required key "{key}" (e.g. {key} = "{example}")')
        if file is not None and _BAD_PATH.search(file):
            self.problem("file", f"{file!r} is not a path inside the repository (a/b.yaml)")
        branch = self.string("branch") or "main"
        if re.search(r"(^/|/$|\.\.|[\x00-\x20~^:?*\[\\]|@\{|//|\.lock$|^-)", branch):
            self.problem("branch", f"{branch!r} is not a valid git branch name")
        mode = self.string("mode") or "commit"
        author, committer = self.person("author"), self.person("committer")
        write = self.write_target(container)
        if self.bad or repo is None or file is None or write is None:
            return None
        return GitSpec(
            repo=repo,
            file=file,
            branch=branch,
            mode=mode,
            author=author,
            committer=committer or author,
            **write,
        )

    def person(self, key: str) -> tuple[str, str] | None:
        value = self.string(key)
        if value is None or not _PERSON_RE.match(value):
            return None
        name, _, email = value.rpartition(" <")
        return name.strip(), email.rstrip(">")

    def write_target(self, container: str | None) -> dict[str, Any] | None:
        """How the image is written: exactly one of kustomize_image, values_*, manifest."""
        given = [k for k in WRITE_KEYS if k in self.table]
        kinds = {"values_digest": "values_tag"}
        chosen = {kinds.get(k, k) for k in given}
        if not chosen:
            self.problem(
                None,
                "say how the image is written: kustomize_image = NAME (a kustomization's "
                'images: entry), values_tag = "image.tag" (a Helm values file) or '
                'manifest = "Deployment/NAME" (a plain manifest)',
            )
            return None
        if len(chosen) > 1:
            self.problem(
                given[1], f"give one of kustomize_image, values_tag, manifest, not {given}"
            )
            return None
        digest = self.table.get("digest", False)
        if not isinstance(digest, bool):
            self.problem("digest", '"digest" must be true or false')
        (kind,) = chosen
        if kind != "kustomize_image" and "digest" in self.table:
            self.problem("digest", '"digest" goes with kustomize_image (values: values_digest)')
        if kind != "values_tag" and "values_repository" in self.table:
            self.problem("values_repository", '"values_repository" goes with values_tag')
        if kind != "manifest" and "container" in self.table:
            self.problem("container", '"container" goes with manifest')
        if kind == "kustomize_image":
            name = self.string("kustomize_image")
            return {"write": "kustomize", "kustomize_image": name or "", "digest": digest is True}
        if kind == "values_tag":
            return {
                "write": "values",
                "values_tag": self.string("values_tag"),
                "values_repository": self.string("values_repository"),
                "values_digest": self.string("values_digest"),
            }
        return self.manifest(container)

    def manifest(self, container: str | None) -> dict[str, Any] | None:
        target = self.string("manifest")
        chosen = self.string("container") or container
        if chosen is None:
            self.problem(
                "manifest",
                'name the container: container = "NAME" here or in the site (the manifest '
                "is not read at load time)",
            )
        if target is None or chosen is None:
            return None
        kind, _, name = target.partition("/")
        return {
            "write": "manifest",
            "manifest_kind": kind,
            "manifest_name": name,
            "container": chosen,
        }
