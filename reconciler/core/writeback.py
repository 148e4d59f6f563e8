"""Writing an image into a YAML file of a configuration repository (GitOps write-back). Pure.

`set_image(text, target, image, file=...)` returns the file with the image written where the
target says (a kustomization's `images:` entry, a dotted key path of a Helm values file, or a
container of a plain manifest) and nothing else changed: ruamel.yaml's round-trip parser finds
each value's line and column, and only the characters of that one scalar are replaced, in the
quoting style it had, so comments, key order, indentation, blank lines and line endings stay
byte for byte. A file that already holds the image comes back unchanged (`Edit.changed` false:
nothing to commit). Problems raise WriteBackError naming the file, the line and what is missing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from reconciler.core.errors import ErrorKind, WriteBackError
from reconciler.core.notify.render import Comparison

_PLAIN_END = {False: re.compile(r"\s+#|\s*$"), True: re.compile(r"\s+#|\s*[,}\]]|\s*$")}


@dataclass(frozen=True, slots=True)
class ImageRef:
    """An image reference split into repository, tag and digest (either may be absent)."""

    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, ref: str) -> ImageRef:
        name, _, digest = ref.partition("@")
        slash = name.rfind("/")
        colon = name.rfind(":")
        if colon > slash:
            return cls(name[:colon], name[colon + 1 :] or None, digest or None)
        return cls(name, None, digest or None)

    def __str__(self) -> str:
        tag = f":{self.tag}" if self.tag else ""
        digest = f"@{self.digest}" if self.digest else ""
        return f"{self.repository}{tag}{digest}"


@dataclass(frozen=True, slots=True)
class KustomizeImage:
    """The `images:` entry of a kustomization whose `name` is `name`: newTag, or with
    digest=True newName + digest (kustomize then uses the digest and ignores any newTag)."""

    name: str
    digest: bool = False


@dataclass(frozen=True, slots=True)
class HelmValues:
    """Dotted key paths of a Helm values file: the tag, and optionally the repository and a
    digest key (tag=None with a digest key writes only repository and digest)."""

    tag: str | None = "image.tag"
    repository: str | None = None
    digest: str | None = None


@dataclass(frozen=True, slots=True)
class ManifestImage:
    """The `image:` of container `container` of the object of `kind` named `name` (in any
    document of a multi-document file; containers and initContainers)."""

    kind: str
    name: str
    container: str


Target = KustomizeImage | HelmValues | ManifestImage


@dataclass(frozen=True, slots=True)
class Change:
    """One value written: where (a readable path) and from what to what."""

    key: str
    old: str | None
    new: str
    line: int  # 1-based


@dataclass(frozen=True, slots=True)
class Edit:
    """The file after the edit; `changes` empty (and `text` the input) when it held the image."""

    text: str
    changes: tuple[Change, ...]

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    def summary(self) -> str:
        if not self.changes:
            return "unchanged"
        return ", ".join(f"{c.key}: {c.old or '(none)'} → {c.new}" for c in self.changes)


@dataclass(frozen=True, slots=True)
class _Slot:
    """A value to write: `key` of mapping `owner`; inserted after `anchor` when missing."""

    owner: Any
    key: str
    new: str
    label: str
    anchor: str | None = None


def set_image(text: str, target: Target, image: ImageRef, *, file: str = "<file>") -> Edit:
    """The file with `image` written where `target` says; raises WriteBackError."""
    docs = _load(text, file)
    slots = _slots(docs, target, image, file)
    lines = text.splitlines(keepends=True)
    edits: list[tuple[int, int, int, int, str]] = []  # line, start, order, end (-1: insert), text
    changes: list[Change] = []
    for order, slot in enumerate(slots):
        found = _edit_of(slot, lines, file)
        if found is None:
            continue
        (line, start, end, new), change = found
        edits.append((line, start, order, end, new))
        changes.append(change)
    if not changes:
        return Edit(text, ())
    # bottom up, so earlier positions stay valid; insertions at one line in reverse order
    for line, start, _, end, new in sorted(edits, reverse=True):
        if end < 0:
            lines.insert(line, new)
        else:
            lines[line] = lines[line][:start] + new + lines[line][end:]
    out = "".join(lines)
    _verify(out, target, image, file)
    return Edit(out, tuple(sorted(changes, key=lambda c: c.line)))


def _verify(out: str, target: Target, image: ImageRef, file: str) -> None:
    """Re-read the result: every slot now holds its value (else the splice went wrong)."""
    lines = out.splitlines(keepends=True)
    for slot in _slots(_load(out, file), target, image, file):
        if slot.key not in slot.owner or _current(slot, lines)[0] != slot.new:
            raise WriteBackError(f"{file}: {slot.label} did not take the value {slot.new!r}")


def _load(text: str, file: str) -> list[Any]:
    try:
        return [d for d in YAML(typ="rt").load_all(text) if d is not None]
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{file}:{mark.line + 1}" if mark is not None else file
        problem = exc.problem or exc.context or "invalid YAML"
        raise WriteBackError(
            f"{where}: the file does not parse as YAML: {problem}", kind=ErrorKind.WRITEBACK_YAML
        ) from exc
    except YAMLError as exc:
        raise WriteBackError(
            f"{file}: the file does not parse as YAML: {exc}", kind=ErrorKind.WRITEBACK_YAML
        ) from exc


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _line(node: Any) -> int:
    return int(node.lc.line) + 1 if hasattr(node, "lc") else 0


def _slots(docs: Sequence[Any], target: Target, image: ImageRef, file: str) -> list[_Slot]:
    if isinstance(target, KustomizeImage):
        return _kustomize_slots(docs, target, image, file)
    if isinstance(target, HelmValues):
        return _helm_slots(docs, target, image, file)
    return _manifest_slots(docs, target, image, file)


def _need(value: str | None, what: str, image: ImageRef) -> str:
    if not value:
        raise WriteBackError(f"the image {image} has no {what} to write")
    return value


def _kustomize_slots(
    docs: Sequence[Any], target: KustomizeImage, image: ImageRef, file: str
) -> list[_Slot]:
    doc: Any = next((d for d in docs if isinstance(d, Mapping)), None)
    images = doc.get("images") if doc is not None else None
    if not isinstance(images, list):
        raise WriteBackError(f"{file}: no `images:` list in the kustomization")
    entry = next(
        (e for e in images if isinstance(e, Mapping) and e.get("name") == target.name), None
    )
    if entry is None:
        names = ", ".join(str(e.get("name")) for e in images if isinstance(e, Mapping)) or "none"
        raise WriteBackError(
            f"{file}:{doc.lc.key('images')[0] + 1}: no `images:` entry named {target.name!r} "
            f"(entries: {names})"
        )
    label = f"images[name={target.name}]"
    if not target.digest:
        tag = _need(image.tag, "tag", image)
        _tag_is_used(entry, label, image, file)
        return [_Slot(entry, "newTag", tag, f"{label}.newTag", anchor="name")]
    digest = _need(image.digest, "digest", image)
    return [
        _Slot(entry, "newName", image.repository, f"{label}.newName", anchor="name"),
        _Slot(entry, "digest", digest, f"{label}.digest", anchor="name"),
    ]


def _tag_is_used(entry: Any, label: str, image: ImageRef, file: str) -> None:
    """A newTag kustomize would not deploy is refused: beside a `digest` (kustomize takes the
    digest and ignores the tag), or beside a `newName` that is not the image's repository."""
    name = entry.get("newName")
    if "digest" in entry:
        raise WriteBackError(
            f"{file}:{entry.lc.key('digest')[0] + 1}: {label} has a digest, which kustomize "
            "deploys instead of newTag: set digest = true in the site's [git] table (with "
            "pin_digest) or remove the digest from the file"
        )
    if name is not None and str(name) != image.repository:
        raise WriteBackError(
            f"{file}:{entry.lc.key('newName')[0] + 1}: {label} has newName {name}, not the "
            f"image's repository {image.repository}: newTag would deploy {name}:{image.tag}"
        )


def _helm_slots(docs: Sequence[Any], target: HelmValues, image: ImageRef, file: str) -> list[_Slot]:
    doc = docs[0] if docs else None
    if not isinstance(doc, Mapping):
        raise WriteBackError(f"{file}: a values file must be a mapping")
    wanted = [
        (target.repository, image.repository),
        (target.tag, _need(image.tag, "tag", image) if target.tag else None),
        (target.digest, _need(image.digest, "digest", image) if target.digest else None),
    ]
    return [_helm_slot(doc, path, value, file) for path, value in wanted if path and value]


def _helm_slot(doc: Any, path: str, value: str, file: str) -> _Slot:
    *parents, leaf = path.split(".")
    node = doc
    for depth, part in enumerate(parents):
        child = node.get(part) if isinstance(node, Mapping) else None
        if not isinstance(child, Mapping):
            seen = ".".join(parents[: depth + 1])
            raise WriteBackError(f"{file}: no mapping at {seen!r} (wanted key {path!r})")
        node = child
    if leaf not in node:
        keys = ", ".join(map(str, node)) or "none"
        raise WriteBackError(f"{file}:{_line(node)}: no key {path!r} (keys there: {keys})")
    return _Slot(node, leaf, value, path)


_POD_SPEC = {
    "Pod": ("spec",),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}


def _manifest_slots(
    docs: Sequence[Any], target: ManifestImage, image: ImageRef, file: str
) -> list[_Slot]:
    found = [
        d
        for d in docs
        if isinstance(d, Mapping)
        and d.get("kind") == target.kind
        and (d.get("metadata") or {}).get("name") == target.name
    ]
    if not found:
        objects = ", ".join(_describe(d) for d in docs if isinstance(d, Mapping)) or "none"
        raise WriteBackError(f"{file}: no {target.kind} named {target.name!r} (objects: {objects})")
    doc = found[0]
    spec: Any = doc
    for part in _POD_SPEC.get(target.kind, ("spec", "template", "spec")):
        spec = spec.get(part) if isinstance(spec, Mapping) else None
    containers = list(_containers(spec))
    match = next((c for c in containers if c.get("name") == target.container), None)
    if match is None:
        names = ", ".join(str(c.get("name")) for c in containers) or "none"
        raise WriteBackError(
            f"{file}:{_line(doc)}: {target.kind} {target.name!r} has no container "
            f"{target.container!r} (containers: {names})"
        )
    label = f"{target.kind}/{target.name} container {target.container} image"
    return [_Slot(match, "image", str(image), label)]


def _describe(doc: Mapping[str, Any]) -> str:
    return f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"


def _containers(spec: Any) -> Iterator[Any]:
    if not isinstance(spec, Mapping):
        return
    for key in ("containers", "initContainers"):
        for c in spec.get(key) or ():
            if isinstance(c, Mapping):
                yield c


# ---- the splice ---------------------------------------------------------------------------------


def _current(slot: _Slot, lines: list[str]) -> tuple[str | None, int, int, int, str]:
    """(value as written, line, start, end, quoting style) of the slot's scalar: a plain scalar
    as its source text (so 1.30 stays "1.30"), a quoted one as the string it means; end -1 when
    it cannot be edited in place (a multi-line or block scalar)."""
    owner, key = slot.owner, slot.key
    line, col = owner.lc.value(key)
    value = owner.get(key)
    if value is None or isinstance(value, (Mapping, list)):
        return None, line, col, -1, ""
    end, style = _extent(lines[line], col, bool(owner.fa.flow_style()))
    if end >= 0 and style == "":
        return lines[line][col:end], line, col, end, style
    return str(value), line, col, end, style


def _edit_of(
    slot: _Slot, lines: list[str], file: str
) -> tuple[tuple[int, int, int, str], Change] | None:
    """The text edit that writes the slot, and the change; None when it already holds it."""
    if slot.key not in slot.owner:
        return _insertion(slot, lines, file, bool(slot.owner.fa.flow_style()))
    old, line, col, end, style = _current(slot, lines)
    if old == slot.new:
        return None
    if old is None:
        raise WriteBackError(
            f"{file}:{line + 1}: {slot.label} holds no scalar to replace "
            '(give it a value first, e.g. "")'
        )
    if end < 0:
        raise WriteBackError(f"{file}:{line + 1}: {slot.label} spans lines; cannot edit in place")
    change = Change(slot.label, old, slot.new, line + 1)
    return (line, col, end, _render(slot.new, style)), change


def _insertion(
    slot: _Slot, lines: list[str], file: str, flow: bool
) -> tuple[tuple[int, int, int, str], Change]:
    """A new `key: value` line after the anchor key's line, at the anchor's indentation."""
    owner = slot.owner
    if slot.anchor is None or slot.anchor not in owner:
        raise WriteBackError(f"{file}:{_line(owner)}: no key {slot.label!r} to write")
    if flow:
        raise WriteBackError(
            f"{file}:{_line(owner)}: cannot add {slot.label} to a flow-style entry "
            f"({{...}}); add `{slot.key}:` to it once by hand"
        )
    line, col = owner.lc.key(slot.anchor)
    value_line, _ = owner.lc.value(slot.anchor)
    if value_line != line:
        raise WriteBackError(f"{file}:{line + 1}: cannot add {slot.label} after a multi-line value")
    ending = "\r\n" if lines[line].endswith("\r\n") else "\n"
    if not lines[line].endswith("\n"):
        lines[line] += ending  # the anchor was the file's last line, without a newline
    text = f"{' ' * col}{slot.key}: {_render(slot.new, '')}{ending}"
    return (line + 1, 0, -1, text), Change(slot.label, None, slot.new, line + 2)


def _extent(line: str, col: int, flow: bool) -> tuple[int, str]:
    """(end column, quoting style) of the scalar starting at `col`; end -1 when it goes on past
    the line (a multi-line or block scalar)."""
    quote = line[col]
    if quote == '"':
        i = col + 1
        while i < len(line):
            if line[i] == "\\":
                i += 2
                continue
            if line[i] == '"':
                return i + 1, '"'
            i += 1
        return -1, '"'
    if quote == "'":
        i = col + 1
        while i < len(line):
            if line[i] == "'":
                if line[i + 1 : i + 2] == "'":
                    i += 2
                    continue
                return i + 1, "'"
            i += 1
        return -1, "'"
    if quote in "|>":
        return -1, ""
    m = _PLAIN_END[flow].search(line, col + 1)
    assert m is not None  # the patterns match at the end of any line
    return m.start(), ""


def _render(value: str, style: str) -> str:
    """`value` as a YAML scalar in `style` (plain falls back to double quotes where a plain
    scalar would not read back as this string)."""
    if style == "'":
        return "'" + value.replace("'", "''") + "'"
    if style == "" and _plain_ok(value):
        return value
    return json.dumps(value, ensure_ascii=False)


def _plain_ok(value: str) -> bool:
    if not value or value != value.strip() or value[0] in "-?:#&*!|>'\"%@`":
        return False
    if any(c in value for c in "{}[],") or ": " in value or " #" in value or value.endswith(":"):
        return False
    try:
        return bool(YAML(typ="safe").load(f"k: {value}\n") == {"k": value})
    except YAMLError:
        return False


# ---- messages -----------------------------------------------------------------------------------


def pr_branch(site: str) -> str:
    """The branch a site's pull requests come from."""
    return f"reconciler/{site}"


def _short(sha: str | None) -> str:
    return sha[:7] if sha else "(none)"


def commit_message(
    *,
    site: str,
    file: str,
    edit: Edit,
    repo: str,
    old_sha: str | None,
    new_sha: str,
    comparison: Comparison | None = None,
    compare_url: str | None = None,
    verb: str = "Deploy",
    why: str = "",
) -> str:
    """The config repository's commit message for deploying `new_sha` of `repo` to `site`:
    a subject naming the site and old → new, then the file's change, the compare link and the
    subjects of the commits deployed (a rollback: verb "Roll back" and why)."""
    lines = [
        f"{verb} {site}: {_short(old_sha)} → {_short(new_sha)}",
        "",
        f"{repo}: {old_sha or '(nothing deployed)'} → {new_sha}",
        f"{file}: {edit.summary()}",
    ]
    if why:
        lines.append(f"Why: {why}")
    if compare_url:
        lines.append(f"Compare: {compare_url}")
    if comparison is not None and comparison.commits:
        lines += ["", f"Commits ({comparison.total}):"]
        lines += [f"- {c.sha[:7]} {c.subject}" for c in reversed(comparison.commits)]
        hidden = comparison.total - len(comparison.commits)
        if hidden > 0:
            lines.append(f"- … and {hidden} more")
    lines += ["", f"Site: {site}"]
    return "\n".join(lines) + "\n"


def pull_title(site: str, new_sha: str) -> str:
    return f"Deploy {site} at {_short(new_sha)}"


# ---- what the adapter is asked to do, and what it did --------------------------------------------


@dataclass(frozen=True, slots=True)
class GitPerson:
    """A commit's author or committer (GitHub: the token's user when not given)."""

    name: str
    email: str


@dataclass(frozen=True, slots=True)
class WriteRequest:
    """Deploy `new_sha` of `source_repo` to `site` by writing `image` into `path` on `branch` of
    the configuration repository `repo`: a commit there (mode "commit"), or a pull request from
    the site's own branch (mode "pr")."""

    site: str
    repo: str
    branch: str
    path: str
    target: Target
    image: ImageRef
    source_repo: str
    new_sha: str
    old_sha: str | None = None
    comparison: Comparison | None = None
    compare_url: str | None = None
    mode: Literal["commit", "pr"] = "commit"
    author: GitPerson | None = None
    committer: GitPerson | None = None
    verb: str = "Deploy"  # the subject's first word ("Roll back" for a rollback)
    why: str = ""

    def message(self, edit: Edit) -> str:
        return commit_message(
            site=self.site,
            file=self.path,
            edit=edit,
            repo=self.source_repo,
            old_sha=self.old_sha,
            new_sha=self.new_sha,
            comparison=self.comparison,
            compare_url=self.compare_url,
            verb=self.verb,
            why=self.why,
        )


class WriteOutcome(StrEnum):
    COMMITTED = "committed"  # a commit on the branch
    UNCHANGED = "unchanged"  # the branch already holds the image: nothing committed
    PR_OPENED = "pr_opened"
    PR_UPDATED = "pr_updated"  # the site's open pull request now carries this image
    PR_CURRENT = "pr_current"  # the open pull request already carried it: nothing pushed


@dataclass(frozen=True, slots=True)
class WriteResult:
    outcome: WriteOutcome
    edit: Edit
    commit: str | None = None  # the commit made (on the branch, or the pull request's head)
    pull_number: int | None = None
    pull_url: str | None = None
    closed_pulls: tuple[int, ...] = ()  # superseded pull requests closed
    attempts: int = 1
    requests: int = 0  # GitHub requests this write made
