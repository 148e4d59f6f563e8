"""The pure rules of Helm delivery (reconciler/core/helmrelease.py): no helm, no cluster."""

from __future__ import annotations

import pytest

from reconciler.core.errors import HelmError
from reconciler.core.helmrelease import (
    Container,
    Mark,
    ReleaseImage,
    Revision,
    Workload,
    bad_commits,
    deploy_description,
    hold_revisions,
    is_bad,
    mark,
    person_change,
    release_image,
    rollback_description,
    rollback_target,
    set_argument,
    set_pairs,
    touched,
    wanted,
    workloads,
)
from reconciler.core.writeback import HelmValues, ImageRef

TAG = HelmValues(tag="image.tag")
REPO_TAG = HelmValues(tag="image.tag", repository="image.repository")
DIGEST = HelmValues(tag="image.tag", repository="image.repository", digest="image.digest")

SHA_A = "0a48ebe" + "1" * 33
SHA_B = "3f2c1a9" + "2" * 33
BAD = "badc0de" + "3" * 33


def rev(n: int, description: str, status: str = "superseded", updated: str = "") -> Revision:
    return Revision(n, status, description, updated or f"2026-12-07T02:{n:02d}:00Z")


def img(tag: str) -> ReleaseImage:
    return ReleaseImage(tag=tag)


# ---- values -----------------------------------------------------------------------------------


def test_release_image_reads_the_keys_the_site_names() -> None:
    values = {"image": {"repository": "r.example/web", "tag": "v2", "digest": ""}, "x": 1}
    assert release_image(values, TAG) == ReleaseImage(tag="v2")
    assert release_image(values, REPO_TAG) == ReleaseImage("r.example/web", "v2")
    assert release_image(values, DIGEST) == ReleaseImage("r.example/web", "v2", None)
    assert release_image({}, REPO_TAG) == ReleaseImage()
    assert str(ReleaseImage("r/web", "v2", "sha256:ab")) == "r/web:v2@sha256:ab"


def test_a_number_valued_tag_is_read_as_text() -> None:
    assert release_image({"image": {"tag": 1234567}}, TAG) == ReleaseImage(tag="1234567")


def test_set_pairs_name_only_the_keys_that_change() -> None:
    current = ReleaseImage("r/web", "v1", "sha256:old")
    target = wanted(DIGEST, ImageRef.parse("r/web:v2"))
    # the stale digest is cleared so it never outranks the new tag
    assert set_pairs(DIGEST, current, target) == (("image.tag", "v2"), ("image.digest", ""))
    assert set_pairs(DIGEST, target, target) == ()
    moved = wanted(REPO_TAG, ImageRef.parse("other/web:v2"))
    assert set_pairs(REPO_TAG, current, moved) == (
        ("image.repository", "other/web"),
        ("image.tag", "v2"),
    )


def test_wanted_refuses_an_image_without_what_the_keys_need() -> None:
    with pytest.raises(HelmError, match=r"no tag for the values key image\.tag"):
        wanted(TAG, ImageRef.parse("r/web@sha256:ab"))
    only_digest = HelmValues(tag=None, repository="image.repository", digest="image.digest")
    with pytest.raises(HelmError, match="no digest"):
        wanted(only_digest, ImageRef.parse("r/web:v2"))


def test_set_argument_escapes_helms_separators() -> None:
    assert set_argument("image.tag", "main-3f2c1a9") == "image.tag=main-3f2c1a9"
    assert set_argument("a.b", r"x,y\z") == r"a.b=x\,y\\z"


# ---- the manifest -----------------------------------------------------------------------------

MANIFEST = """\
---
# Source: web/templates/service.yaml
apiVersion: v1
kind: Service
metadata:
  name: web
---
# Source: web/templates/deployment.yaml
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  template:
    spec:
      initContainers:
        - name: migrate
          image: "r/web:v1"
      containers:
        - name: app
          image: "r/web:v1"
        - name: envoy
          image: "envoy:v1.30"
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: report
  namespace: jobs
spec:
  jobTemplate:
    spec:
      template:
        spec:
          containers:
            - name: report
              image: r/report:v1
"""


def test_workloads_of_a_manifest() -> None:
    found = workloads(MANIFEST, "shop")
    assert found == (
        Workload(
            "Deployment",
            "shop",
            "web",
            (Container("app", "r/web:v1"), Container("envoy", "envoy:v1.30")),
            (Container("migrate", "r/web:v1"),),
        ),
        Workload("CronJob", "jobs", "report", (Container("report", "r/report:v1"),)),
    )
    assert [w.followed for w in found] == [True, False]
    assert str(found[0]) == "Deployment/web"


def test_a_broken_manifest_is_a_helm_error() -> None:
    with pytest.raises(HelmError, match="manifest does not parse"):
        workloads("kind: [unclosed", "ns")


def test_touched_lists_workloads_whose_containers_change() -> None:
    before = workloads(MANIFEST, "shop")
    after = workloads(MANIFEST.replace('"r/web:v1"', '"r/web:v2"'), "shop")
    assert [str(w) for w in touched(before, after)] == ["Deployment/web"]
    assert touched(before, before) == ()


# ---- descriptions -----------------------------------------------------------------------------


def test_descriptions_name_the_commit_and_read_back() -> None:
    text = deploy_description("main", SHA_B, SHA_A)
    assert text == "reconciler: main@3f2c1a9 (was 0a48ebe)"
    assert mark(text) == Mark("main", "3f2c1a9", previous="0a48ebe")
    assert deploy_description("main", SHA_B) == "reconciler: main@3f2c1a9"
    back = rollback_description("main", BAD, 3, "rollout failed: CrashLoopBackOff")
    assert back == (
        f"reconciler: rollback of main@{BAD} to revision 3: rollout failed: CrashLoopBackOff"
    )
    assert mark(back) == Mark("main", BAD, rollback_to=3)
    old = "reconciler: rollback of main@badc0de to revision 3: as written before #21"
    assert mark(old) == Mark("main", "badc0de", rollback_to=3)
    assert mark("Upgrade complete") is None
    assert mark("Rollback to 2") is None


def test_a_description_fits_helms_limit() -> None:
    text = rollback_description("main", BAD, 3, "x" * 400)
    assert len(text) == 256
    assert mark(text) == Mark("main", BAD, rollback_to=3)


def test_bad_commits_come_from_the_rollback_descriptions() -> None:
    history = [
        rev(1, "Install complete"),
        rev(2, deploy_description("main", BAD, SHA_A)),
        rev(3, rollback_description("main", BAD, 1, "crash-looping"), "deployed"),
    ]
    assert bad_commits(history) == {BAD}
    assert is_bad(BAD, bad_commits(history)) and is_bad(BAD[:7], bad_commits(history))
    assert not is_bad("badc0de" + "f" * 33, bad_commits(history))  # another commit


# ---- a person's change ------------------------------------------------------------------------


def test_a_persons_upgrade_of_the_image_holds() -> None:
    history = [
        rev(1, "Install complete"),
        rev(2, deploy_description("main", SHA_B, SHA_A)),
        rev(3, "Upgrade complete", "deployed", "2026-12-07T03:00:00.5+00:00"),
    ]
    images = {1: img("a"), 2: img("b"), 3: img("hotfix")}
    change = person_change(history, images)
    assert change is not None
    assert (change.revision, change.image, change.was) == (3, img("hotfix"), img("b"))
    assert 'by revision 3 ("Upgrade complete") at 2026-12-07T03:00:00.5+00:00' in change.reason
    # resumed after the change: no hold; before it: still held
    assert person_change(history, images, resumed_at="2026-12-07T03:00:01Z") is None
    assert person_change(history, images, resumed_at="2026-12-07T02:59:00Z") is not None


def test_a_persons_rollback_holds() -> None:
    history = [
        rev(1, "Install complete"),
        rev(2, deploy_description("main", SHA_B, SHA_A)),
        rev(3, "Rollback to 1", "deployed"),
    ]
    change = person_change(history, {1: img("a"), 2: img("b"), 3: img("a")})
    assert change is not None
    assert (change.revision, change.description) == (3, "Rollback to 1")


def test_no_hold_when_the_image_is_unchanged_or_the_last_revision_is_ours() -> None:
    ours_last = [rev(1, "Install complete"), rev(2, deploy_description("main", SHA_B), "deployed")]
    assert person_change(ours_last, {1: img("a"), 2: img("b")}) is None
    other_value = [*ours_last[:1], rev(2, "reconciler: main@3f2c1a9"), rev(3, "Upgrade complete")]
    other_value[-1] = rev(3, "Upgrade complete", "deployed")
    assert person_change(other_value, {1: img("a"), 2: img("b"), 3: img("b")}) is None


def test_a_release_the_reconciler_never_deployed_is_adopted_not_held() -> None:
    history = [rev(1, "Install complete"), rev(2, "Upgrade complete", "deployed")]
    assert person_change(history, {1: img("a"), 2: img("b")}) is None


def test_a_failed_person_upgrade_does_not_count() -> None:
    history = [
        rev(1, deploy_description("main", SHA_B), "deployed"),
        rev(2, 'Upgrade "web" failed: boom', "failed"),
    ]
    assert person_change(history, {1: img("b"), 2: img("x")}) is None


def test_the_change_reported_is_the_persons_last_one() -> None:
    history = [
        rev(1, deploy_description("main", SHA_B)),
        rev(2, "Upgrade complete"),
        rev(3, "Upgrade complete", "deployed"),
    ]
    change = person_change(history, {1: img("b"), 2: img("x"), 3: img("y")})
    assert change is not None
    assert (change.revision, change.was) == (3, img("x"))


# ---- rollback target --------------------------------------------------------------------------


def test_rollback_target_is_the_previous_good_revision() -> None:
    history = [
        rev(1, "Install complete"),
        rev(2, deploy_description("main", SHA_B, SHA_A)),
        rev(3, deploy_description("main", BAD, SHA_B), "deployed"),
    ]
    target = rollback_target(history, 3)
    assert target is not None and target.number == 2


def test_rollback_target_skips_commits_already_rolled_back_and_failed_revisions() -> None:
    history = [
        rev(1, "Install complete"),
        rev(2, deploy_description("main", BAD, SHA_A)),
        rev(3, rollback_description("main", BAD, 1, "crash-looping")),
        rev(4, 'Upgrade "web" failed', "failed"),
        rev(5, deploy_description("main", "c0ffee1" + "0" * 33, SHA_A), "deployed"),
    ]
    target = rollback_target(history, 5)
    assert target is not None and target.number == 3
    # a revision running the very image that failed is no way back
    images = {1: img("a"), 2: img("bad"), 3: img("c"), 5: img("c")}
    target = rollback_target(history, 5, images)
    assert target is not None and target.number == 1
    assert rollback_target(history[:1], 1) is None


def test_resume_compares_instants_whatever_zone_helm_wrote() -> None:
    """helm records times in the zone of the machine that ran it: 05:00+02:00 is 03:00Z."""
    history = [
        rev(1, deploy_description("main", SHA_B)),
        rev(2, "Upgrade complete", "deployed", "2026-12-07T05:00:00.123456789+02:00"),
    ]
    images = {1: img("b"), 2: img("hotfix")}
    assert person_change(history, images, resumed_at="2026-12-07T03:00:30Z") is None
    assert person_change(history, images, resumed_at="2026-12-07T02:59:30Z") is not None
    # a time that does not parse never lifts a hold
    assert person_change(history, images, resumed_at="yesterday") is not None


def test_hold_revisions_are_only_those_a_hold_needs() -> None:
    ours_last = [rev(1, "Install complete"), rev(2, deploy_description("main", SHA_B), "deployed")]
    assert hold_revisions(ours_last) == ()
    assert hold_revisions([rev(1, "Install complete", "deployed")]) == ()
    history = [
        rev(1, "Install complete"),
        rev(2, deploy_description("main", SHA_A)),
        rev(3, deploy_description("main", SHA_B, SHA_A)),
        rev(4, 'Upgrade "web" failed: boom', "failed"),
        rev(5, "Rollback to 2", "deployed"),
        rev(6, "Upgrade complete", "pending-upgrade"),
    ]
    assert hold_revisions(history) == (3, 5)
