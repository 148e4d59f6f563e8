"""k8s/admission-policy.yaml on the real API server: the reconciler's ServiceAccount may change
containers' images and its own annotations, and every other change is refused by the policy."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from kubernetes.client import ApiException

from reconciler.adapters.kube import check_response
from reconciler.cli.main import main
from testkit.controlplane import REPO_ROOT
from testkit.deployments import create_deployment, get_deployment
from testkit.github import GitHubStandIn, random_sha
from testkit.github_fixtures import TOKEN
from testkit.manifests import POLICY, apply, kustomize, one, policy_for
from testkit.wait import wait_until

pytestmark = pytest.mark.controlplane

k8s = kubernetes.client

ALLOWED = (
    "it may only change containers' image and annotations under reconciler.dev/ "
    "(and kubernetes.io/change-cause)"
)
PODSPEC = "/spec/template/spec"
Patch = dict[str, Any] | list[dict[str, Any]]


def _refusal(call: Callable[[], object]) -> str | None:
    """The API server's message when `call` is refused with 403, None when it is admitted."""
    try:
        call()
    except ApiException as exc:
        if exc.status != 403:
            raise
        return str(json.loads(exc.body or "{}").get("message"))
    return None


def _patch(api: Any, namespace: str, body: Patch, name: str = "site") -> Callable[[], object]:
    return lambda: k8s.AppsV1Api(api).patch_namespaced_deployment(name, namespace, body)


def _containers(body: list[dict[str, Any]], init: bool = False) -> Patch:
    key = "initContainers" if init else "containers"
    return {"spec": {"template": {"spec": {key: body}}}}


@pytest.fixture
def policed(
    kube_api_client: Any, installed: str, site_namespace: str, as_reconciler: Any
) -> tuple[str, Any]:
    """A site namespace holding a realistic Deployment `site` (sidecar, init container, ports,
    env), with the shipped policy in force for the installed reconciler's ServiceAccount.
    Returns (namespace, ApiClient acting as the ServiceAccount)."""
    create_deployment(kube_api_client, site_namespace, "site", "gcr.io/p/site:old")
    # The API server compiled every expression when the policy was created (a CEL error is
    # refused there and then); the binding takes effect once its policy informer has seen both.
    # Wait until a forbidden change is refused by the policy.
    replicas = _patch(as_reconciler, site_namespace, {"spec": {"replicas": 7}})
    seen: list[str | None] = []

    def refused_by_the_policy() -> bool:
        seen.append(message := _refusal(replicas))
        if message is not None and "ValidatingAdmissionPolicy" in message:
            return True
        # Admitted before the policy was in force: undo, as an admin.
        _patch(kube_api_client, site_namespace, {"spec": {"replicas": 2}})()
        return False

    try:
        wait_until(refused_by_the_policy, "the policy to refuse a replicas change", timeout=60)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last answer: {seen[-1:]}") from None
    return site_namespace, as_reconciler


FORBIDDEN: dict[str, tuple[Patch, str]] = {
    "replicas": ({"spec": {"replicas": 10}}, "spec"),
    "paused": ({"spec": {"paused": True}}, "spec"),
    "strategy": ({"spec": {"strategy": {"type": "Recreate", "rollingUpdate": None}}}, "spec"),
    "pod template label": (
        {"spec": {"template": {"metadata": {"labels": {"tier": "x"}}}}},
        "spec",
    ),
    "pod template annotation": (
        {"spec": {"template": {"metadata": {"annotations": {"reconciler.dev/x": "y"}}}}},
        "spec",
    ),
    "serviceAccountName": (
        {"spec": {"template": {"spec": {"serviceAccountName": "reconciler"}}}},
        "pod spec",
    ),
    "mounted Secret": (
        {
            "spec": {
                "template": {
                    "spec": {"volumes": [{"name": "s", "secret": {"secretName": "other"}}]}
                }
            }
        },
        "pod spec",
    ),
    "hostNetwork": ({"spec": {"template": {"spec": {"hostNetwork": True}}}}, "pod spec"),
    "pod securityContext": (
        {"spec": {"template": {"spec": {"securityContext": {"runAsUser": 0}}}}},
        "pod spec",
    ),
    "new container": (_containers([{"name": "evil", "image": "evil:1"}]), "containers"),
    "privileged container": (
        _containers([{"name": "app", "securityContext": {"privileged": True}}]),
        "containers",
    ),
    "command": (_containers([{"name": "app", "command": ["sh", "-c", "id"]}]), "containers"),
    "image and command": (
        _containers([{"name": "app", "image": "gcr.io/p/site:new", "args": ["--debug"]}]),
        "containers",
    ),
    "env": (_containers([{"name": "app", "env": [{"name": "X", "value": "1"}]}]), "containers"),
    "init container args": (
        _containers([{"name": "migrate", "args": ["down"]}], init=True),
        "containers",
    ),
    "removed sidecar": (
        [{"op": "remove", "path": f"{PODSPEC}/containers/1"}],
        "containers",
    ),
    "reordered containers": (
        [{"op": "move", "from": f"{PODSPEC}/containers/1", "path": f"{PODSPEC}/containers/0"}],
        "containers",
    ),
    "Deployment label": ({"metadata": {"labels": {"team": "x"}}}, "metadata"),
    "other annotation": ({"metadata": {"annotations": {"example.com/x": "1"}}}, "metadata"),
    "finalizer": ({"metadata": {"finalizers": ["example.com/keep"]}}, "metadata"),
}
WHAT = {
    "spec": "may not change the workload's spec",
    "pod spec": "may not change the pod spec",
    "containers": "may not add, remove, rename or reorder containers",
    "metadata": "may not change the workload's labels or other metadata",
}


@pytest.mark.parametrize("change", list(FORBIDDEN))
def test_the_policy_refuses_every_other_change(
    policed: tuple[str, Any], kube_api_client: Any, change: str
) -> None:
    namespace, as_reconciler = policed
    before = get_deployment(kube_api_client, namespace, "site")
    body, what = FORBIDDEN[change]
    message = _refusal(_patch(as_reconciler, namespace, body))
    assert message is not None, f"{change} was admitted"
    # Refused by the policy (RBAC allows the patch), saying what is allowed.
    assert f"ValidatingAdmissionPolicy '{POLICY}-" in message, message
    assert WHAT[what] in message and ALLOWED in message, message
    after = get_deployment(kube_api_client, namespace, "site")
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    # The same change by anyone else is not the policy's business.
    assert _refusal(_patch(kube_api_client, namespace, body)) is None


def test_the_policy_refuses_other_deployments_changes_too(policed: tuple[str, Any]) -> None:
    namespace, as_reconciler = policed
    message = _refusal(_patch(as_reconciler, namespace, {"spec": {"replicas": 3}}, name="blog"))
    assert message is not None and "ValidatingAdmissionPolicy" in message


def test_a_real_sync_and_dry_run_as_the_serviceaccount_are_admitted(
    policed: tuple[str, Any],
    kube_api_client: Any,
    github: GitHubStandIn,
    reconciler_sa_kubeconfig: Path,
    tmp_path: Path,
) -> None:
    namespace, _ = policed
    sha = random_sha()
    github.add_repo("acme/site", {"main": sha})
    (tmp_path / "sites.toml").write_text(
        f'[defaults]\nnamespace = "{namespace}"\nimage = "gcr.io/p/{{repo}}:{{sha}}"\n'
        'verify = "none"\n\n[sites.site]\nrepo = "acme/site"\ncontainer = "app"\n'
    )
    env = {
        "GITHUB_API_URL": github.url,
        "GITHUB_TOKEN": TOKEN,
        "KUBECONFIG": str(reconciler_sa_kubeconfig),
    }

    def sync(*flags: str) -> tuple[int, dict[str, Any]]:
        out, err = io.StringIO(), io.StringIO()
        argv = ["sync", *flags, "--config", str(tmp_path / "sites.toml"), "--output", "json"]
        code = main(argv, env=env, stdout=out, stderr=err)
        return code, json.loads(out.getvalue())[0] if out.getvalue() else {"stderr": err}

    def app_image() -> str:
        spec = get_deployment(kube_api_client, namespace, "site")["spec"]["template"]["spec"]
        return str(spec["containers"][0]["image"])

    code, dry = sync("--dry-run")
    assert code == 0 and dry["applied"] is True, dry
    assert app_image() == "gcr.io/p/site:old"
    code, result = sync()
    assert code == 0 and result["applied"] is True, result
    after = get_deployment(kube_api_client, namespace, "site")
    app, proxy = after["spec"]["template"]["spec"]["containers"]
    assert app["image"] == f"gcr.io/p/site:{sha}"
    assert proxy["image"] == "envoyproxy/envoy:v1.30.1"
    annotations = after["metadata"]["annotations"]
    assert annotations["reconciler.dev/sha"] == sha
    assert sha[:7] in annotations["kubernetes.io/change-cause"]

    # The real commands, as the ServiceAccount: rollback (to the image before), hold, resume.
    def command(*argv: str) -> int:
        config = ["--config", str(tmp_path / "sites.toml")]
        return main([*argv, *config], env=env, stdout=io.StringIO(), stderr=io.StringIO())

    assert command("rollback", "site") == 0
    assert app_image() == "gcr.io/p/site:old"
    assert command("resume", "site") == 0
    assert app_image() == f"gcr.io/p/site:{sha}"
    assert command("hold", "site", "--reason", "launch freeze") == 0
    held = get_deployment(kube_api_client, namespace, "site")["metadata"]["annotations"]
    assert held["reconciler.dev/hold"] == "launch freeze"


def test_a_sync_and_a_rollback_of_an_init_container_are_admitted(
    policed: tuple[str, Any],
    kube_api_client: Any,
    github: GitHubStandIn,
    reconciler_sa_kubeconfig: Path,
    tmp_path: Path,
) -> None:
    """A site whose target sets the container and the init container (#19): the one write that
    sets both images, and the rollback, pass the policy as the ServiceAccount."""
    namespace, _ = policed
    sha = random_sha()
    github.add_repo("acme/site", {"main": sha})
    (tmp_path / "sites.toml").write_text(
        f'[sites.site]\nrepo = "acme/site"\nnamespace = "{namespace}"\n'
        'image = "gcr.io/p/site:{sha}"\nverify = "none"\n'
        '[[sites.site.targets]]\nname = "site"\ncontainers = ["app"]\n'
        'init_containers = ["migrate"]\nimages = { migrate = "gcr.io/p/migrate:{sha}" }\n'
    )
    env = {
        "GITHUB_API_URL": github.url,
        "GITHUB_TOKEN": TOKEN,
        "KUBECONFIG": str(reconciler_sa_kubeconfig),
    }

    def run(*argv: str) -> int:
        config = ["--config", str(tmp_path / "sites.toml")]
        return main([*argv, *config], env=env, stdout=io.StringIO(), stderr=io.StringIO())

    def images() -> tuple[str, str]:
        spec = get_deployment(kube_api_client, namespace, "site")["spec"]["template"]["spec"]
        return spec["containers"][0]["image"], spec["initContainers"][0]["image"]

    assert run("sync") == 0
    assert images() == (f"gcr.io/p/site:{sha}", f"gcr.io/p/migrate:{sha}")
    assert run("rollback", "site") == 0
    assert images() == ("gcr.io/p/site:old", "gcr.io/p/migrate:v3")


def test_rollback_hold_and_resume_patches_are_admitted(
    policed: tuple[str, Any], kube_api_client: Any
) -> None:
    namespace, as_reconciler = policed
    admitted: list[Patch] = [
        # roll out, then roll back: images of a container, the sidecar and the init container
        {
            "metadata": {
                "annotations": {
                    "reconciler.dev/sha": "b" * 40,
                    "kubernetes.io/change-cause": "reconciler: acme/site@main bbbbbbb",
                }
            },
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {"name": "app", "image": "gcr.io/p/site:new"},
                            {"name": "proxy", "image": "envoyproxy/envoy:v1.31.0"},
                        ],
                        "initContainers": [{"name": "migrate", "image": "gcr.io/p/migrate:v4"}],
                    }
                }
            },
        },
        {
            "metadata": {
                "annotations": {
                    "reconciler.dev/rolled-back-from": "gcr.io/p/site:new",
                    "reconciler.dev/bad-commits": "b" * 40,
                }
            },
            "spec": {
                "template": {
                    "spec": {"containers": [{"name": "app", "image": "gcr.io/p/site:old"}]}
                }
            },
        },
        # hold, then resume (the annotation removed)
        {"metadata": {"annotations": {"reconciler.dev/hold": "true"}}},
        {"metadata": {"annotations": {"reconciler.dev/hold": None}}},
        # a JSON patch of one image
        [
            {
                "op": "replace",
                "path": "/spec/template/spec/containers/0/image",
                "value": "gcr.io/p/site:json",
            }
        ],
    ]
    for body in admitted:
        assert _refusal(_patch(as_reconciler, namespace, body)) is None, body
    after = get_deployment(kube_api_client, namespace, "site")
    annotations = after["metadata"]["annotations"]
    assert "reconciler.dev/hold" not in annotations
    assert annotations["reconciler.dev/rolled-back-from"] == "gcr.io/p/site:new"
    spec = after["spec"]["template"]["spec"]
    assert [c["image"] for c in spec["containers"]] == [
        "gcr.io/p/site:json",
        "envoyproxy/envoy:v1.31.0",
    ]
    assert spec["initContainers"][0]["image"] == "gcr.io/p/migrate:v4"
    assert after["spec"]["replicas"] == 2


def test_a_policy_refusal_is_not_reported_as_missing_rbac(policed: tuple[str, Any]) -> None:
    namespace, as_reconciler = policed
    with pytest.raises(ApiException) as refused:
        _patch(as_reconciler, namespace, {"spec": {"replicas": 4}})()
    error = check_response(refused.value, f"patch deployment {namespace}/site", "host")
    assert str(error).startswith(
        f"cannot patch deployment {namespace}/site: refused by an admission policy ("
    )
    assert "RBAC" not in str(error) and ALLOWED in str(error)


def _type_checked(api: Any, name: str) -> Any:
    """The policy's status.typeChecking once kube-controller-manager has checked this
    generation of it."""
    admission = k8s.AdmissionregistrationV1Api(api)
    checked: list[Any] = []

    def type_checked() -> bool:
        policy: Any = admission.read_validating_admission_policy(name)
        status = policy.status
        if status is not None and status.observed_generation == policy.metadata.generation:
            checked.append(status.type_checking)
            return True
        return False

    wait_until(type_checked, f"policy {name} to be type-checked", timeout=120)
    return checked[0]


def test_the_policy_type_checks_against_the_deployment_schema(
    local_cluster: Any, cluster_api_client: Any, kubectl: str
) -> None:
    docs = [d for d in kustomize(kubectl, REPO_ROOT / "k8s") if d["kind"].startswith("Valid")]
    suffix = f"typecheck-{uuid.uuid4().hex[:6]}"
    shipped = policy_for(docs, suffix)
    # A control case, so that "no warnings" means something: a misspelt field is reported.
    broken = json.loads(json.dumps(one(shipped, "ValidatingAdmissionPolicy")))
    broken["metadata"]["name"] += "-broken"
    broken["spec"]["validations"] = [{"expression": "object.spec.replicaz > 0"}]
    apply(kubectl, local_cluster, [*shipped, broken])
    admission = k8s.AdmissionregistrationV1Api(cluster_api_client)
    try:
        checked = _type_checked(cluster_api_client, f"{POLICY}-{suffix}")
        assert checked is None or not checked.expression_warnings, checked
        warned = _type_checked(cluster_api_client, broken["metadata"]["name"])
        assert warned is not None and "replicaz" in str(warned.expression_warnings), warned
    finally:
        admission.delete_validating_admission_policy_binding(f"{POLICY}-{suffix}")
        admission.delete_validating_admission_policy(f"{POLICY}-{suffix}")
        admission.delete_validating_admission_policy(broken["metadata"]["name"])


def _kind_body(kind: str) -> dict[str, Any]:
    """A StatefulSet, DaemonSet or CronJob with a sidecar, as a person would create it."""
    pod = {
        "metadata": {"labels": {"app": "w"}},
        "spec": {
            "restartPolicy": "Never" if kind == "CronJob" else "Always",
            "containers": [
                {"name": "app", "image": "gcr.io/p/w:old"},
                {"name": "sidecar", "image": "envoy:1"},
            ],
        },
    }
    if kind == "CronJob":
        spec: dict[str, Any] = {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": pod}}}
        return {"apiVersion": "batch/v1", "kind": kind, "metadata": {"name": "w"}, "spec": spec}
    spec = {"selector": {"matchLabels": {"app": "w"}}, "template": pod}
    if kind == "StatefulSet":
        spec.update(serviceName="w", replicas=2)
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": "w"}, "spec": spec}


def _kind_patch(api: Any, ns: str, kind: str, body: Patch) -> Callable[[], object]:
    if kind == "CronJob":
        return lambda: k8s.BatchV1Api(api).patch_namespaced_cron_job("w", ns, body)
    if kind == "StatefulSet":
        return lambda: k8s.AppsV1Api(api).patch_namespaced_stateful_set("w", ns, body)
    return lambda: k8s.AppsV1Api(api).patch_namespaced_daemon_set("w", ns, body)


@pytest.mark.parametrize("kind", ["StatefulSet", "DaemonSet", "CronJob"])
def test_the_other_kinds_may_change_images_and_annotations_only(
    policed: tuple[str, Any], kube_api_client: Any, kind: str
) -> None:
    """The same rules on the StatefulSet and DaemonSet pod template and on a CronJob's
    jobTemplate pod template (#19); RBAC allows each patch, the policy refuses the rest."""
    namespace, as_reconciler = policed
    created: Any = _kind_body(kind)
    if kind == "CronJob":
        k8s.BatchV1Api(kube_api_client).create_namespaced_cron_job(namespace, created)
    elif kind == "StatefulSet":
        k8s.AppsV1Api(kube_api_client).create_namespaced_stateful_set(namespace, created)
    else:
        k8s.AppsV1Api(kube_api_client).create_namespaced_daemon_set(namespace, created)

    def pod(body: dict[str, Any]) -> Patch:
        if kind == "CronJob":
            return {"spec": {"jobTemplate": {"spec": {"template": {"spec": body}}}}}
        return {"spec": {"template": {"spec": body}}}

    image = pod({"containers": [{"name": "app", "image": "gcr.io/p/w:new"}]})
    notes = {"metadata": {"annotations": {"reconciler.dev/sha": "abc"}}}
    assert _refusal(_kind_patch(as_reconciler, namespace, kind, image)) is None
    assert _refusal(_kind_patch(as_reconciler, namespace, kind, notes)) is None
    refused = {
        "pod spec": pod({"serviceAccountName": "reconciler"}),
        "containers": pod({"containers": [{"name": "app", "command": ["sh"]}]}),
        "metadata": {"metadata": {"labels": {"team": "x"}}},
        "spec": {"spec": {"schedule": "* * * * *"}}
        if kind == "CronJob"
        else pod({"containers": [{"name": "evil", "image": "evil:1"}]}),
    }
    if kind == "CronJob":
        refused["job spec"] = {"spec": {"jobTemplate": {"spec": {"backoffLimit": 99}}}}
    for what, body in refused.items():
        message = _refusal(_kind_patch(as_reconciler, namespace, kind, body))
        assert message is not None and "ValidatingAdmissionPolicy" in message, (what, message)
        assert ALLOWED in message, message
