"""The pure GitOps edit: an image written into kustomizations, Helm values and manifests."""

from __future__ import annotations

import difflib

import pytest

from reconciler.core.errors import ErrorKind, WriteBackError
from reconciler.core.notify.render import Commit, Comparison
from reconciler.core.writeback import (
    Edit,
    HelmValues,
    ImageRef,
    KustomizeImage,
    ManifestImage,
    commit_message,
    pr_branch,
    set_image,
)

DIGEST = "sha256:" + "ab" * 32
NEW = ImageRef.parse(f"gcr.io/acme/web:5d6e7f8@{DIGEST}")

COMMENTED = """\
# Production overlay for the web site.
#   Owned by the platform team; the reconciler bumps newTag below.

apiVersion: kustomize.config.k8s.io/v1beta1   # trailing comment
kind: Kustomization
namespace: web

resources:   # order matters
  - ../../base
  - ingress.yaml

# images are listed by name; keep them sorted
images:
  - name: gcr.io/acme/web        # the app
    newTag: 1a2b3c4              # <- this one
  # a comment between entries
  - name: envoyproxy/envoy
    newTag: "v1.30.1"            # pinned by hand

patches:
  - path: replicas.yaml
    target: {kind: Deployment, name: web}   # flow style stays flow style
configMapGenerator:
  - name: web-env
    literals:
      - LOG_LEVEL=info   # quiet
"""


def changed_lines(before: str, after: str) -> list[str]:
    return [
        line
        for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]


# ---- kustomizations -----------------------------------------------------------------------------


def test_a_file_full_of_comments_comes_back_byte_identical_but_for_the_value() -> None:
    edit = set_image(COMMENTED, KustomizeImage("gcr.io/acme/web"), NEW, file="k.yaml")
    expected = COMMENTED.replace(
        "    newTag: 1a2b3c4              # <- this one",
        "    newTag: 5d6e7f8              # <- this one",
    )
    assert edit.text == expected
    assert edit.changed
    assert [(c.key, c.old, c.new, c.line) for c in edit.changes] == [
        ("images[name=gcr.io/acme/web].newTag", "1a2b3c4", "5d6e7f8", 15)
    ]
    assert edit.summary() == "images[name=gcr.io/acme/web].newTag: 1a2b3c4 → 5d6e7f8"


def test_quoting_style_is_kept_and_added_only_where_needed() -> None:
    edit = set_image(COMMENTED, KustomizeImage("envoyproxy/envoy"), ImageRef("e", "v1.31.0"))
    assert changed_lines(COMMENTED, edit.text) == [
        '-    newTag: "v1.30.1"            # pinned by hand',
        '+    newTag: "v1.31.0"            # pinned by hand',
    ]
    # a plain tag that YAML would read as a number is quoted; a single-quoted one stays single
    numeric = set_image(
        "images:\n- name: a\n  newTag: v1\n", KustomizeImage("a"), ImageRef("a", "1.10")
    )
    assert numeric.text == 'images:\n- name: a\n  newTag: "1.10"\n'
    single = set_image(
        "images:\n- name: a\n  newTag: 'v1'\n", KustomizeImage("a"), ImageRef("a", "it's")
    )
    assert single.text == "images:\n- name: a\n  newTag: 'it''s'\n"


def test_the_file_already_holding_the_value_is_unchanged() -> None:
    first = set_image(COMMENTED, KustomizeImage("gcr.io/acme/web"), NEW)
    again = set_image(first.text, KustomizeImage("gcr.io/acme/web"), NEW)
    assert again == Edit(first.text, ())
    assert not again.changed
    assert again.summary() == "unchanged"
    as_written = set_image(
        "images:\n- name: a\n  newTag: 1.30\n", KustomizeImage("a"), ImageRef("a", "1.30")
    )
    assert not as_written.changed  # compared as written, not as the float 1.3


def test_digest_mode_writes_new_name_and_digest_after_the_name() -> None:
    text = "images:\n- name: web   # app\n  newTag: old\n- name: other\n  newTag: x\n"
    edit = set_image(text, KustomizeImage("web", digest=True), NEW, file="k.yaml")
    assert edit.text == (
        "images:\n- name: web   # app\n"
        "  newName: gcr.io/acme/web\n"
        f"  digest: {DIGEST}\n"
        "  newTag: old\n- name: other\n  newTag: x\n"
    )
    assert not set_image(edit.text, KustomizeImage("web", digest=True), NEW).changed
    moved = ImageRef("gcr.io/acme/web", None, "sha256:" + "cd" * 32)
    again = set_image(edit.text, KustomizeImage("web", digest=True), moved)
    assert [c.key for c in again.changes] == ["images[name=web].digest"]


def test_a_flow_style_entry_is_edited_in_place_but_not_extended() -> None:
    text = "images: [{name: web, newTag: v1}]  # one line\n"
    edit = set_image(text, KustomizeImage("web"), ImageRef("web", "v2"))
    assert edit.text == "images: [{name: web, newTag: v2}]  # one line\n"
    with pytest.raises(WriteBackError, match=r"cannot add images\[name=web\].newName to a flow"):
        set_image(text, KustomizeImage("web", digest=True), NEW, file="k.yaml")


def test_crlf_line_endings_and_a_missing_final_newline_are_kept() -> None:
    text = "images:\r\n  - name: web\r\n    newTag: v1\r\n"
    assert set_image(text, KustomizeImage("web"), NEW).text == text.replace("v1", "5d6e7f8")
    bare = "images:\n- name: web"
    inserted = set_image(bare, KustomizeImage("web"), NEW).text
    assert inserted == "images:\n- name: web\n  newTag: 5d6e7f8\n"


def test_kustomize_errors_name_the_file_and_what_is_missing() -> None:
    with pytest.raises(WriteBackError, match=r"k.yaml:13: no `images:` entry named 'nope' "):
        set_image(COMMENTED, KustomizeImage("nope"), NEW, file="k.yaml")
    with pytest.raises(WriteBackError, match=r"entries: gcr.io/acme/web, envoyproxy/envoy"):
        set_image(COMMENTED, KustomizeImage("nope"), NEW, file="k.yaml")
    with pytest.raises(WriteBackError, match=r"k.yaml: no `images:` list"):
        set_image("kind: Kustomization\n", KustomizeImage("web"), NEW, file="k.yaml")
    with pytest.raises(WriteBackError, match=r"has no digest to write") as err:
        set_image(COMMENTED, KustomizeImage("gcr.io/acme/web", digest=True), ImageRef("a", "b"))
    assert err.value.kind is ErrorKind.WRITEBACK_TARGET


def test_a_tag_kustomize_would_not_deploy_is_refused_naming_the_line() -> None:
    pinned = f"images:\n- name: web\n  newTag: old\n  digest: {DIGEST}\n"
    with pytest.raises(WriteBackError, match=r"k.yaml:4: images\[name=web\] has a digest") as err:
        set_image(pinned, KustomizeImage("web"), NEW, file="k.yaml")
    assert err.value.kind is ErrorKind.WRITEBACK_TARGET
    assert "digest = true" in str(err.value)
    other = "images:\n- name: web\n  newName: gcr.io/acme/web-old\n  newTag: old\n"
    with pytest.raises(WriteBackError, match=r"k.yaml:3: .* newName gcr.io/acme/web-old, not"):
        set_image(other, KustomizeImage("web"), NEW, file="k.yaml")
    same = other.replace("web-old", "web")
    assert set_image(same, KustomizeImage("web"), NEW).text == same.replace("old\n", "5d6e7f8\n")


def test_a_file_that_does_not_parse() -> None:
    with pytest.raises(WriteBackError, match=r"^k.yaml:3: the file does not parse as YAML") as err:
        set_image("images:\n- name: a\n  newTag: v1: x\n", KustomizeImage("a"), NEW, file="k.yaml")
    assert err.value.kind is ErrorKind.WRITEBACK_YAML


# ---- Helm values --------------------------------------------------------------------------------

VALUES = """\
replicaCount: 2
image:
  repository: gcr.io/acme/old   # where images live
  tag: "1a2b3c4"                # set by the reconciler
  digest: ""
  pullPolicy: IfNotPresent
sidecar:
  image: {repository: envoy, tag: v1}
"""


def test_helm_tag_only() -> None:
    edit = set_image(VALUES, HelmValues(), NEW, file="values.yaml")
    assert changed_lines(VALUES, edit.text) == [
        '-  tag: "1a2b3c4"                # set by the reconciler',
        '+  tag: "5d6e7f8"                # set by the reconciler',
    ]


def test_helm_repository_tag_and_digest() -> None:
    target = HelmValues(tag="image.tag", repository="image.repository", digest="image.digest")
    edit = set_image(VALUES, target, NEW)
    assert [(c.key, c.old, c.new) for c in edit.changes] == [
        ("image.repository", "gcr.io/acme/old", "gcr.io/acme/web"),
        ("image.tag", "1a2b3c4", "5d6e7f8"),
        ("image.digest", "", DIGEST),
    ]
    assert "  repository: gcr.io/acme/web   # where images live\n" in edit.text
    assert f'  digest: "{DIGEST}"\n' in edit.text
    flow = set_image(VALUES, HelmValues(tag="sidecar.image.tag"), ImageRef("envoy", "v2"))
    assert "  image: {repository: envoy, tag: v2}\n" in flow.text


def test_helm_missing_keys_are_named() -> None:
    with pytest.raises(
        WriteBackError, match=r"values.yaml:3: no key 'image.version' \(keys there: "
    ):
        set_image(VALUES, HelmValues(tag="image.version"), NEW, file="values.yaml")
    with pytest.raises(WriteBackError, match=r"no mapping at 'app' \(wanted key 'app.image.tag'\)"):
        set_image(VALUES, HelmValues(tag="app.image.tag"), NEW, file="values.yaml")
    with pytest.raises(WriteBackError, match=r"holds no scalar to replace"):
        set_image("image:\n  tag:\n", HelmValues(), NEW)
    with pytest.raises(WriteBackError, match=r"spans lines"):
        set_image("image:\n  tag: |\n    v1\n", HelmValues(), NEW)


# ---- plain manifests ----------------------------------------------------------------------------

MANIFESTS = """\
apiVersion: v1
kind: Service
metadata: {name: web}
---
# the app
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  template:
    spec:
      initContainers:
        - name: migrate
          image: gcr.io/acme/web:1a2b3c4   # same image, runs first
      containers:
        - name: web
          image: gcr.io/acme/web:1a2b3c4
        - {name: envoy, image: "envoyproxy/envoy:v1.30"}
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: report
spec:
  jobTemplate:
    spec:
      template:
        spec:
          containers:
            - name: report
              image: gcr.io/acme/report:old
"""


def test_manifest_container_in_a_multi_document_file() -> None:
    edit = set_image(MANIFESTS, ManifestImage("Deployment", "web", "web"), NEW)
    assert changed_lines(MANIFESTS, edit.text) == [
        "-          image: gcr.io/acme/web:1a2b3c4",
        f"+          image: gcr.io/acme/web:5d6e7f8@{DIGEST}",
    ]
    init = set_image(MANIFESTS, ManifestImage("Deployment", "web", "migrate"), NEW)
    assert [c.line for c in init.changes] == [15]
    flow = set_image(MANIFESTS, ManifestImage("Deployment", "web", "envoy"), ImageRef("e", "v2"))
    assert '        - {name: envoy, image: "e:v2"}\n' in flow.text
    cron = set_image(MANIFESTS, ManifestImage("CronJob", "report", "report"), ImageRef("r", "new"))
    assert cron.text.endswith("              image: r:new\n")


def test_manifest_missing_object_or_container() -> None:
    with pytest.raises(WriteBackError, match=r"m.yaml:6: Deployment 'web' has no container 'app' "):
        set_image(MANIFESTS, ManifestImage("Deployment", "web", "app"), NEW, file="m.yaml")
    with pytest.raises(WriteBackError, match=r"containers: web, envoy, migrate\)"):
        set_image(MANIFESTS, ManifestImage("Deployment", "web", "app"), NEW, file="m.yaml")
    with pytest.raises(WriteBackError, match=r"no StatefulSet named 'web' \(objects: Service/web"):
        set_image(MANIFESTS, ManifestImage("StatefulSet", "web", "web"), NEW, file="m.yaml")


# ---- values and messages ------------------------------------------------------------------------


def test_image_refs() -> None:
    assert ImageRef.parse("localhost:5000/a/b:v1@sha256:x") == ImageRef(
        "localhost:5000/a/b", "v1", "sha256:x"
    )
    assert ImageRef.parse("localhost:5000/a/b") == ImageRef("localhost:5000/a/b")
    assert str(ImageRef.parse("a/b@sha256:x")) == "a/b@sha256:x"


def test_commit_message_names_site_commits_and_link() -> None:
    edit = set_image(COMMENTED, KustomizeImage("gcr.io/acme/web"), NEW)
    commits = tuple(
        Commit(sha=f"{i}" * 40, subject=f"change {i}", author="ann", url="") for i in (2, 3)
    )
    message = commit_message(
        site="web",
        file="apps/web/kustomization.yaml",
        edit=edit,
        repo="acme/web",
        old_sha="1a2b3c4" + "0" * 33,
        new_sha="5d6e7f8" + "0" * 33,
        comparison=Comparison(commits=commits, total=5),
        compare_url="https://github.com/acme/web/compare/1a2b3c4...5d6e7f8",
    )
    assert message.splitlines() == [
        "Deploy web: 1a2b3c4 → 5d6e7f8",
        "",
        f"acme/web: {'1a2b3c4' + '0' * 33} → {'5d6e7f8' + '0' * 33}",
        "apps/web/kustomization.yaml: images[name=gcr.io/acme/web].newTag: 1a2b3c4 → 5d6e7f8",
        "Compare: https://github.com/acme/web/compare/1a2b3c4...5d6e7f8",
        "",
        "Commits (5):",
        "- 3333333 change 3",
        "- 2222222 change 2",
        "- … and 3 more",
        "",
        "Site: web",
    ]
    assert pr_branch("web") == "reconciler/web"
