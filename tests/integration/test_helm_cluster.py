"""Helm delivery with the real helm (helm.sh/helm/v4) on the local cluster: the chart in
testkit/charts/web installed, upgraded through reconciler/adapters/helm.py, dry-run, a
crash-looping image rolled back with `helm rollback`, a person's `helm upgrade`/`helm rollback`
recognised as a person's change. One cluster (the session's) for the whole module; each test
its own namespace and release."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from reconciler.adapters.helm import HelmCLI, _failure
from reconciler.core.errors import ErrorKind, HelmError
from reconciler.core.helmrelease import (
    ReleaseImage,
    bad_commits,
    deploy_description,
    hold_revisions,
    person_change,
    release_image,
    rollback_description,
    rollback_target,
    set_pairs,
    touched,
    wanted,
    workloads,
)
from reconciler.core.writeback import HelmValues, ImageRef
from testkit.controlplane import LocalCluster
from testkit.helm import Helm
from testkit.wait import wait_until

CHART = Path(__file__).resolve().parents[2] / "testkit" / "charts" / "web"
KEYS = HelmValues(tag="image.tag", repository="image.repository")
GOOD_A = "0a48ebe" + "a" * 33
GOOD_B = "3f2c1a9" + "b" * 33
BAD = "badc0de" + "c" * 33


@pytest.fixture
def person(helm: Path, local_cluster: LocalCluster, tmp_path: Path) -> Helm:
    """helm as a person runs it, with the cluster's admin kubeconfig."""
    return Helm(helm, home=tmp_path / "person", kubeconfig=local_cluster.kubeconfig_path)


@pytest.fixture
def cli(helm: Path, local_cluster: LocalCluster, tmp_path: Path) -> HelmCLI:
    """The reconciler's adapter, with its own helm home."""
    home = tmp_path / "reconciler"
    home.mkdir()
    return HelmCLI(helm, home=home, kubeconfig=local_cluster.kubeconfig_path, timeout=120)


@pytest.fixture
def release(person: Helm, cluster_namespace: str) -> str:
    """Release `web` of the test chart, installed by a person (revision 1, tag v1)."""
    person.ok("install", "web", CHART, "-n", cluster_namespace, "--set", "replicas=3")
    return "web"


def as_dict(api: kubernetes.client.ApiClient, obj: object) -> Any:
    """An API object as the API server wrote it (JSON names), untyped."""
    return api.sanitize_for_serialization(obj)  # type: ignore[no-untyped-call]


def deployment(api: kubernetes.client.ApiClient, ns: str) -> Any:
    return as_dict(api, kubernetes.client.AppsV1Api(api).read_namespaced_deployment("web", ns))


def app_image(api: kubernetes.client.ApiClient, ns: str) -> dict[str, str]:
    spec = deployment(api, ns)["spec"]["template"]["spec"]
    return {c["name"]: c["image"] for c in spec["containers"]}


def rolled_out(api: kubernetes.client.ApiClient, ns: str) -> bool:
    d = deployment(api, ns)
    s, want = d.get("status", {}), d["spec"]["replicas"]
    return bool(
        s.get("observedGeneration") == d["metadata"]["generation"]
        and s.get("updatedReplicas", 0) == want
        and s.get("availableReplicas", 0) == want
        and s.get("replicas", 0) == want
    )


def crash_looping(api: kubernetes.client.ApiClient, ns: str, image: str) -> bool:
    pods = as_dict(api, kubernetes.client.CoreV1Api(api).list_namespaced_pod(ns))["items"]
    return any(
        c["image"] == image
        and c.get("state", {}).get("waiting", {}).get("reason") == "CrashLoopBackOff"
        for p in pods
        for c in p.get("status", {}).get("containerStatuses", ())
    )


def helm_secrets(api: kubernetes.client.ApiClient, ns: str) -> set[str]:
    """The names of the release records (helm's storage Secrets) in `ns`."""
    got = kubernetes.client.CoreV1Api(api).list_namespaced_secret(ns, label_selector="owner=helm")
    return {s["metadata"]["name"] for s in as_dict(api, got)["items"]}


def deploy(cli: HelmCLI, ns: str, image: str, sha: str, was: str | None) -> int:
    """One deploy as the sync will make it: read, compute the values, upgrade."""
    rel = cli.read(ns, "web")
    now = release_image(rel.values, KEYS)
    pairs = set_pairs(KEYS, now, wanted(KEYS, ImageRef.parse(image)))
    return cli.upgrade(ns, "web", pairs, description=deploy_description("main", sha, was)).revision


def images(cli: HelmCLI, ns: str) -> dict[int, ReleaseImage]:
    """The image values of the revisions a hold needs (hold_revisions), as a sync reads them."""
    return {
        n: release_image(cli.values(ns, "web", n), KEYS)
        for n in hold_revisions(cli.history(ns, "web"))
    }


def all_images(cli: HelmCLI, ns: str) -> dict[int, ReleaseImage]:
    return {
        r.number: release_image(cli.values(ns, "web", r.number), KEYS)
        for r in cli.history(ns, "web")
    }


def test_upgrade_reuses_the_deployed_chart_and_values_and_names_the_commit(
    cli: HelmCLI,
    person: Helm,
    release: str,
    cluster_namespace: str,
    cluster_api_client: kubernetes.client.ApiClient,
) -> None:
    ns = cluster_namespace
    rel = cli.read(ns, release)
    assert (rel.revision.number, rel.revision.status) == (1, "deployed")
    assert release_image(rel.values, KEYS) == ReleaseImage("registry.example/web", "v1")
    [web] = rel.workloads
    assert (str(web), [c.name for c in web.containers]) == ("Deployment/web", ["app", "envoy"])
    wait_until(lambda: rolled_out(cluster_api_client, ns), "revision 1 rolled out", 60)

    assert deploy(cli, ns, f"registry.example/web:main-{GOOD_A[:7]}", GOOD_A, None) == 2
    assert deploy(cli, ns, f"registry.example/web:main-{GOOD_B[:7]}", GOOD_B, GOOD_A) == 3

    history = cli.history(ns, release)
    assert [(r.number, r.status, r.description, r.chart) for r in history] == [
        (1, "superseded", "Install complete", "web-0.1.0"),
        (2, "superseded", "reconciler: main@0a48ebe", "web-0.1.0"),
        (3, "deployed", "reconciler: main@3f2c1a9 (was 0a48ebe)", "web-0.1.0"),
    ]
    table = person.ok("history", release, "-n", ns)
    assert "reconciler: main@3f2c1a9 (was 0a48ebe)" in table
    assert app_image(cluster_api_client, ns) == {
        "app": "registry.example/web:main-3f2c1a9",
        "envoy": "registry.example/envoy:v1.30",  # the sidecar is left alone
    }
    now = cli.read(ns, release)
    assert now.values["replicas"] == 3  # the person's value, reused
    # the rebuilt chart renders exactly what the original did, but for the image
    assert now.manifest == cli.manifest(ns, release, 1).replace("web:v1", "web:main-3f2c1a9")
    wait_until(lambda: rolled_out(cluster_api_client, ns), "revision 3 rolled out", 60)
    assert person_change(history, images(cli, ns)) is None


def test_a_dry_run_renders_the_change_and_writes_nothing(
    cli: HelmCLI,
    release: str,
    cluster_namespace: str,
    cluster_api_client: kubernetes.client.ApiClient,
) -> None:
    ns = cluster_namespace
    before = cli.read(ns, release)
    stored = helm_secrets(cluster_api_client, ns)
    generation = deployment(cluster_api_client, ns)["metadata"]["generation"]

    # an all-digit tag (a short SHA can be one) stays text: with --set, helm would make it the
    # number 1234567, which the chart's schema refuses
    got = cli.upgrade(
        ns, release, [("image.tag", "1234567")], description="reconciler: main@1234567",
        dry_run=True,
    )  # fmt: skip
    assert got.dry_run and got.revision == 2
    changed = touched(before.workloads, workloads(got.manifest, ns))
    assert [(str(w), w.containers[0].image) for w in changed] == [
        ("Deployment/web", "registry.example/web:1234567")
    ]
    assert "s3cr3t-t0ken" not in got.manifest  # a plan never carries a Secret's data
    assert "kind: Secret" not in got.manifest
    assert cli.history(ns, release) == before.history
    assert helm_secrets(cluster_api_client, ns) == stored
    assert deployment(cluster_api_client, ns)["metadata"]["generation"] == generation
    assert app_image(cluster_api_client, ns)["app"] == "registry.example/web:v1"


def test_a_crash_looping_commit_is_rolled_back_to_the_previous_revision(
    cli: HelmCLI,
    release: str,
    cluster_namespace: str,
    cluster_api_client: kubernetes.client.ApiClient,
) -> None:
    ns = cluster_namespace
    deploy(cli, ns, f"registry.example/web:main-{GOOD_A[:7]}", GOOD_A, None)
    wait_until(lambda: rolled_out(cluster_api_client, ns), "the good commit rolled out", 60)
    bad_image = f"registry.example/web:main-{BAD[:7]}"
    failed = deploy(cli, ns, bad_image, BAD, GOOD_A)
    assert failed == 3
    wait_until(
        lambda: crash_looping(cluster_api_client, ns, bad_image), "the bad commit crash-loops", 60
    )

    history = cli.history(ns, release)
    target = rollback_target(history, failed, all_images(cli, ns))
    assert target is not None and target.number == 2
    why = "rollout failed: new pods are not coming up: app: CrashLoopBackOff"
    made = cli.rollback(
        ns, release, target.number, description=rollback_description("main", BAD, 2, why)
    )
    assert (made.number, made.status) == (4, "deployed")
    assert made.description.startswith(f"reconciler: rollback of main@{BAD} to revision 2: ")
    assert app_image(cluster_api_client, ns)["app"] == f"registry.example/web:main-{GOOD_A[:7]}"
    wait_until(lambda: rolled_out(cluster_api_client, ns), "the rollback rolled out", 60)

    history = cli.history(ns, release)
    assert bad_commits(history) == {BAD}  # remembered on the release, level-triggered
    assert person_change(history, images(cli, ns)) is None  # the rollback is the reconciler's


def test_a_persons_upgrade_of_the_image_is_a_persons_change(
    cli: HelmCLI, person: Helm, release: str, cluster_namespace: str
) -> None:
    ns = cluster_namespace
    deploy(cli, ns, f"registry.example/web:main-{GOOD_A[:7]}", GOOD_A, None)
    # a value other than the image: not a hold
    person.ok("upgrade", release, CHART, "-n", ns, "--reuse-values", "--set", "replicas=1")
    assert person_change(cli.history(ns, release), images(cli, ns)) is None

    person.ok("upgrade", release, CHART, "-n", ns, "--reuse-values", "--set", "image.tag=hotfix")
    history = cli.history(ns, release)
    change = person_change(history, images(cli, ns))
    assert change is not None
    assert (change.revision, change.description) == (4, "Upgrade complete")
    assert change.image == ReleaseImage("registry.example/web", "hotfix")
    assert change.was == ReleaseImage("registry.example/web", f"main-{GOOD_A[:7]}")
    assert change.updated == history[-1].updated
    # `reconciler resume` after it lifts the hold
    assert person_change(history, images(cli, ns), resumed_at="2999-01-01T00:00:00Z") is None


def test_a_persons_helm_rollback_is_a_persons_change(
    cli: HelmCLI, person: Helm, release: str, cluster_namespace: str
) -> None:
    ns = cluster_namespace
    deploy(cli, ns, f"registry.example/web:main-{GOOD_A[:7]}", GOOD_A, None)
    person.ok("rollback", release, "1", "-n", ns)
    change = person_change(cli.history(ns, release), images(cli, ns))
    assert change is not None
    assert (change.revision, change.description) == (3, "Rollback to 1")
    assert change.image.tag == "v1"


def test_helms_failures_are_typed_errors_with_helms_message(
    cli: HelmCLI, release: str, cluster_namespace: str
) -> None:
    ns = cluster_namespace
    with pytest.raises(HelmError) as missing:
        cli.read(ns, "nope")
    assert missing.value.kind is ErrorKind.HELM_RELEASE_NOT_FOUND
    assert f"helm release {ns}/nope: not found" in str(missing.value)

    # the chart's schema wants an integer: helm refuses, nothing is written
    with pytest.raises(HelmError) as refused:
        cli.upgrade(ns, release, [("replicas", "many")], description="reconciler: main@0a48ebe")
    assert refused.value.kind is ErrorKind.HELM
    assert "helm upgrade failed:" in str(refused.value)
    assert "schema" in str(refused.value)
    assert [r.number for r in cli.history(ns, release)] == [1]


def test_a_chart_with_subcharts_is_refused(
    cli: HelmCLI, person: Helm, cluster_namespace: str, tmp_path: Path
) -> None:
    parent = tmp_path / "parent"
    (parent / "charts" / "child" / "templates").mkdir(parents=True)
    (parent / "templates").mkdir()
    (parent / "Chart.yaml").write_text(
        "apiVersion: v2\nname: parent\nversion: 0.1.0\n"
        "dependencies:\n  - name: child\n    version: 0.1.0\n"
    )
    (parent / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: parent\n"
    )
    (parent / "charts" / "child" / "Chart.yaml").write_text(
        "apiVersion: v2\nname: child\nversion: 0.1.0\n"
    )
    (parent / "charts" / "child" / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: child\n"
    )
    person.ok("install", "parent", parent, "-n", cluster_namespace)
    with pytest.raises(HelmError) as refused:
        cli.upgrade(cluster_namespace, "parent", [("x", "y")], description="reconciler: main@0")
    assert refused.value.kind is ErrorKind.HELM_CHART
    assert "subcharts (child)" in str(refused.value)
    assert [r.number for r in cli.history(cluster_namespace, "parent")] == [1]


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield s.getsockname()[1]


def test_every_helm_run_is_bounded_by_a_timeout(
    helm: Path, tmp_path: Path, silent_server: int
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters: [{{name: c, cluster: {{server: 'http://127.0.0.1:{silent_server}'}}}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\nusers: [{name: u, user: {}}]\n"
    )
    cli = HelmCLI(helm, home=tmp_path, kubeconfig=kubeconfig, timeout=1)
    with pytest.raises(HelmError) as stuck:
        cli.history("ns", "web")
    assert stuck.value.kind is ErrorKind.HELM_TIMEOUT
    assert "helm history did not finish within 1 s (stopped)" in str(stuck.value)


def test_no_helm_binary_is_a_typed_error(tmp_path: Path) -> None:
    cli = HelmCLI(tmp_path / "no-helm", home=tmp_path)
    with pytest.raises(HelmError) as missing:
        cli.history("ns", "web")
    assert missing.value.kind is ErrorKind.HELM_MISSING
    assert "no helm binary at" in str(missing.value)


def test_a_release_busy_with_another_operation_is_its_own_kind() -> None:
    got = _failure(
        "helm release ns/web",
        "upgrade",
        "Error: UPGRADE FAILED: another operation (install/upgrade/rollback) is in progress\n",
    )
    assert got.kind is ErrorKind.HELM_BUSY
    assert str(got) == (
        "helm release ns/web: UPGRADE FAILED: another operation (install/upgrade/rollback) "
        "is in progress; it is retried on the next sync"
    )
