"""charts/reconciler rendered with the real helm: for the same settings it renders the same
objects as the kustomize base (k8s/ plus overlays/extra-namespace per site namespace), so
neither drifts; `helm lint` passes; values.schema.json refuses wrong values at install time.
The chart on the local cluster: tests/test_chart_cluster.py."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from reconciler import __version__
from testkit.controlplane import REPO_ROOT, ControlPlaneUnavailable, find_helm
from testkit.helm import Doc, Helm
from testkit.manifests import kustomize, one, overlay

CHART = REPO_ROOT / "charts" / "reconciler"
SITES = REPO_ROOT / "k8s" / "sites.toml"
CLUSTER_SCOPED = ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "Namespace")


@pytest.fixture
def h(helm: Path, tmp_path: Path) -> Helm:
    return Helm(helm, home=tmp_path / "helm-home")


def _keyed(docs: list[Doc]) -> dict[tuple[str, str, str], Doc]:
    keyed = {}
    for doc in docs:
        meta = doc["metadata"]
        key = (doc["kind"], meta.get("namespace", ""), meta["name"])
        assert key not in keyed, f"rendered twice: {key}"
        keyed[key] = doc
    return keyed


def _from_kustomize(docs: list[Doc]) -> list[Doc]:
    """kustomize writes the base's namespace into the cluster-scoped admission objects (it does
    not know their kinds; the API server drops it): drop it, as the API server does."""
    out: list[Doc] = json.loads(json.dumps(docs))
    for doc in out:
        if doc["kind"] in CLUSTER_SCOPED:
            doc["metadata"].pop("namespace", None)
    return out


def _cel_whitespace(node: Any) -> Any:
    """Every CEL `expression` with its whitespace runs as one space: kustomize re-emits a folded
    (>-) scalar with more-indented lines as extra blank lines, which CEL ignores."""
    if isinstance(node, dict):
        return {
            k: re.sub(r"\s+", " ", v)
            if k == "expression" and isinstance(v, str)
            else _cel_whitespace(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_cel_whitespace(v) for v in node]
    return node


def _without_keep(docs: list[Doc]) -> list[Doc]:
    """The chart's Namespace carries helm.sh/resource-policy: keep (helm's, not the object's)."""
    out: list[Doc] = json.loads(json.dumps(docs))
    for doc in out:
        annotations = doc["metadata"].get("annotations", {})
        if annotations.pop("helm.sh/resource-policy", None) and not annotations:
            del doc["metadata"]["annotations"]
    return out


def assert_same_objects(chart: list[Doc], base: list[Doc]) -> None:
    ours = _keyed(_cel_whitespace(_without_keep(chart)))
    theirs = _keyed(_cel_whitespace(_from_kustomize(base)))
    assert sorted(ours) == sorted(theirs), "the chart and the kustomize base render other objects"
    for key, doc in theirs.items():
        assert ours[key] == doc, f"{key} differs between the chart and the kustomize base"


def _kustomize_all(kubectl: str, tmp: Path, base: Path, namespaces: list[str]) -> list[Doc]:
    """The base plus a copy of overlays/extra-namespace for each site namespace, as the README
    tells a user to apply them."""
    docs = kustomize(kubectl, base)
    extra = base / "overlays" / "extra-namespace"
    for namespace in namespaces:
        docs += kustomize(kubectl, overlay(tmp / namespace, {"namespace": namespace}, [extra]))
    return docs


def test_defaults_render_what_the_kustomize_base_renders(
    h: Helm, kubectl: str, tmp_path: Path
) -> None:
    chart = h.template(
        "reconciler",
        CHART,
        *("--namespace", "reconciler", "--set-file", f"sites.toml={SITES}"),
        *("--set", "namespace.create=true", "--set", "namespaces={web}"),
    )
    assert_same_objects(chart, _kustomize_all(kubectl, tmp_path, REPO_ROOT / "k8s", ["web"]))


def test_helm_namespaces_render_what_the_helm_namespace_overlay_renders(
    h: Helm, kubectl: str, tmp_path: Path
) -> None:
    """A namespace of Helm-delivered sites (#21): Roles "reconciler" and "reconciler-helm" with
    their RoleBindings, as k8s/overlays/helm-namespace gives them; none elsewhere."""
    base = REPO_ROOT / "k8s"
    chart = h.template(
        "reconciler",
        CHART,
        *("--namespace", "reconciler", "--set-file", f"sites.toml={SITES}"),
        *("--set", "namespace.create=true", "--set", "namespaces={web,shop}"),
        *("--set", "helmNamespaces={shop}"),
    )
    docs = _kustomize_all(kubectl, tmp_path, base, ["web"])
    helm_overlay = base / "overlays" / "helm-namespace"
    docs += kustomize(kubectl, overlay(tmp_path / "shop", {"namespace": "shop"}, [helm_overlay]))
    assert_same_objects(chart, docs)
    roles = {
        (d["metadata"]["namespace"], d["metadata"]["name"]) for d in chart if d["kind"] == "Role"
    }
    assert ("shop", "reconciler-helm") in roles and ("web", "reconciler-helm") not in roles


def is_role(doc: Doc) -> bool:
    return bool(doc["kind"] == "Role")


def test_the_same_settings_render_the_same_objects(h: Helm, kubectl: str, tmp_path: Path) -> None:
    """Workload Identity, the Pub/Sub subscriptions, GitHub Enterprise, another image, two site
    namespaces and another sites.toml (with characters JSON escapes: the ConfigMap's name is a
    hash of its JSON), set the way k8s/kustomization.yaml's comments say and as chart values."""
    base = tmp_path / "k8s"
    shutil.copytree(REPO_ROOT / "k8s", base, symlinks=False)
    sites = base / "sites.toml"
    sites.write_text(SITES.read_text() + '\n# <b> & "c" \\ é\n[sites.wiki]\nrepo = "acme/wiki"\n')
    env = [
        ("GITHUB_API_URL", "https://ghe.example.com/api/v3"),
        ("PUBSUB_SUBSCRIPTION", "projects/p/subscriptions/reconciler"),
        ("PUBSUB_CLOUD_BUILD_SUBSCRIPTION", "projects/p/subscriptions/builds"),
        ("PUBSUB_GCR_SUBSCRIPTION", "projects/p/subscriptions/gcr"),
    ]
    gsa = "reconciler@p.iam.gserviceaccount.com"
    add_env = [
        {
            "op": "add",
            "path": "/spec/template/spec/containers/0/env/-",
            "value": {"name": n, "value": v},
        }
        for n, v in env
    ]
    annotate = [
        {
            "op": "add",
            "path": "/metadata/annotations",
            "value": {"iam.gke.io/gcp-service-account": gsa},
        }
    ]
    setup = overlay(
        tmp_path / "setup",
        {
            "images": [
                {
                    "name": "us-docker.pkg.dev/my-project/containers/reconciler",
                    "newName": "registry.example.com/ops/reconciler",
                    "newTag": "9.9.9",
                }
            ],
            "patches": [
                {
                    "target": {"kind": "ServiceAccount", "name": "reconciler"},
                    "patch": json.dumps(annotate),
                },
                {
                    "target": {"kind": "Deployment", "name": "reconciler"},
                    "patch": json.dumps(add_env),
                },
            ],
        },
        [base],
    )
    docs = kustomize(kubectl, setup)
    for namespace in ("web", "shop"):
        docs += kustomize(
            kubectl,
            overlay(
                tmp_path / namespace,
                {"namespace": namespace},
                [base / "overlays" / "extra-namespace"],
            ),
        )
    chart = h.template(
        "reconciler",
        CHART,
        *("--namespace", "reconciler", "--set-file", f"sites.toml={sites}"),
        *("--set", "namespace.create=true", "--set", "namespaces={web,shop}"),
        *(
            "--set",
            "image.repository=registry.example.com/ops/reconciler",
            "--set",
            "image.tag=9.9.9",
        ),
        *("--set", f"serviceAccount.gcpServiceAccount={gsa}"),
        *("--set", "github.apiUrl=https://ghe.example.com/api/v3"),
        *("--set", "pubsub.subscription=projects/p/subscriptions/reconciler"),
        *("--set", "pubsub.cloudBuildSubscription=projects/p/subscriptions/builds"),
        *("--set", "pubsub.gcrSubscription=projects/p/subscriptions/gcr"),
    )
    assert_same_objects(chart, docs)
    configmap = one(chart, "ConfigMap")
    assert configmap["data"]["sites.toml"] == sites.read_text()


def test_an_edited_sites_toml_is_a_new_configmap_name_and_pod_template(h: Helm) -> None:
    def render(text: str) -> tuple[str, str]:
        docs = h.template("r", CHART, "--namespace", "reconciler", "--set", f"sites.toml={text}")
        volumes = one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
        used = next(v for v in volumes if v["name"] == "sites")["configMap"]["name"]
        return one(docs, "ConfigMap")["metadata"]["name"], used

    first, second = render("[sites.a]\nrepo = 'o/a'\n"), render("[sites.b]\nrepo = 'o/b'\n")
    assert first[0] == first[1] and second[0] == second[1]
    assert first[0] != second[0] and first[0].startswith("reconciler-sites-")


def test_an_existing_configmap_is_mounted_and_none_is_rendered(h: Helm) -> None:
    docs = h.template("r", CHART, "--namespace", "ops", "--set", "sites.existingConfigMap=my-sites")
    assert not [d for d in docs if d["kind"] == "ConfigMap"]
    volumes = one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert next(v for v in volumes if v["name"] == "sites")["configMap"]["name"] == "my-sites"
    # The policy names the ServiceAccount of the release's namespace.
    policy = one(docs, "ValidatingAdmissionPolicy")
    assert (
        "system:serviceaccount:ops:reconciler" in policy["spec"]["matchConditions"][0]["expression"]
    )


def test_lease_off_single_replica_and_optional_objects(h: Helm) -> None:
    docs = h.template(
        "r",
        CHART,
        *("--namespace", "ops", "--set-file", f"sites.toml={SITES}"),
        *("--set", "lease.enabled=false", "--set", "networkPolicy.enabled=false"),
        *("--set", "admissionPolicy.enabled=false", "--set", "serviceMonitor.enabled=true"),
    )
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["ConfigMap", "Deployment", "Service", "ServiceAccount", "ServiceMonitor"]
    env = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "RECONCILER_LEASE", "value": "off"} in env
    endpoint = one(docs, "ServiceMonitor")["spec"]["endpoints"][0]
    assert endpoint["bearerTokenSecret"] == {
        "name": "reconciler-secrets",
        "key": "RECONCILER_READ_TOKEN",
    }


def test_other_clusters_kubeconfigs_are_mounted_where_sites_toml_names_them(h: Helm) -> None:
    """clusters: {prod: SECRET} mounts the Secret's `kubeconfig` at
    /var/run/clusters/prod/kubeconfig, the path docs/clusters.md gives [clusters.prod]."""
    docs = h.template(
        "r",
        CHART,
        *("--namespace", "ops", "--set-file", f"sites.toml={SITES}"),
        *("--set", "clusters.prod=reconciler-cluster-prod"),
    )
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    mounts = pod["containers"][0]["volumeMounts"]
    assert {
        "name": "cluster-prod",
        "mountPath": "/var/run/clusters/prod",
        "readOnly": True,
    } in mounts
    volume = next(v for v in pod["volumes"] if v["name"] == "cluster-prod")
    assert volume["secret"]["secretName"] == "reconciler-cluster-prod"
    assert volume["secret"]["items"] == [{"key": "kubeconfig", "path": "kubeconfig"}]


def test_helm_lint_passes(h: Helm) -> None:
    out = h.ok("lint", "--strict", CHART, "--set-file", f"sites.toml={SITES}")
    assert "0 chart(s) failed" in out


BAD_VALUES: dict[str, tuple[list[str], str]] = {
    "replicas not a number": (["--set-string", "replicas=two"], "replicas"),
    "unknown value": (["--set", "replica=2"], "replica"),
    "bad pull policy": (["--set", "image.pullPolicy=Sometimes"], "pullPolicy"),
    "bad namespace name": (["--set", "namespaces={Web_1}"], "namespaces"),
    "bad subscription": (["--set", "pubsub.subscription=reconciler"], "subscription"),
    "a cluster named home": (["--set", "clusters.home=reconciler-cluster"], "home"),
    "a cluster's Secret name": (["--set", "clusters.prod=Not_A_Name"], "clusters"),
    "two replicas without the Lease": (
        ["--set", "replicas=2", "--set", "lease.enabled=false"],
        "lease",
    ),
}


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_values_schema_refuses_wrong_values(h: Helm, case: str) -> None:
    argv, where = BAD_VALUES[case]
    proc = h.run("template", "r", CHART, "--set-file", f"sites.toml={SITES}", *argv)
    assert proc.returncode != 0, proc.stdout[:500]
    assert "schema" in proc.stderr and where in proc.stderr, proc.stderr


def test_no_sites_toml_is_refused_with_how_to_give_it(h: Helm) -> None:
    proc = h.run("template", "r", CHART)
    assert proc.returncode != 0
    assert "--set-file sites.toml=" in proc.stderr, proc.stderr


def test_the_chart_follows_the_reconciler_version(h: Helm) -> None:
    """The chart's version and appVersion are the reconciler's; the image tag defaults to it."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == __version__ and chart["version"] == __version__
    docs = h.template("r", CHART, "--set-file", f"sites.toml={SITES}")
    image = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.endswith(f"/reconciler:{__version__}")


def test_find_helm_takes_an_explicit_binary_and_names_a_bad_one(
    helm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECONCILER_HELM", str(helm))
    assert find_helm() == helm
    monkeypatch.setenv("RECONCILER_HELM", str(tmp_path / "no-helm"))
    with pytest.raises(ControlPlaneUnavailable, match=r"RECONCILER_HELM=.*not executable"):
        find_helm()
