"""The Kubernetes adapter (the only module that talks to the kubernetes client): observe, patch."""

from __future__ import annotations

import json
import logging
import os
import socket
import uuid
from collections.abc import Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from reconciler.core.errors import KubernetesError
from reconciler.core.model import (
    ApplyResult,
    Container,
    ImageChange,
    NamespaceError,
    NamespaceView,
    ObservedDeployment,
)
from reconciler.core.planner import ANNOTATION_PREFIX, SHA_ANNOTATION, UPDATED_ANNOTATION

log = logging.getLogger(__name__)

FIELD_MANAGER = "reconciler"
SMP = "application/strategic-merge-patch+json"
LIST_PAGE = 500
CHANGE_CAUSE = "kubernetes.io/change-cause"
REPO_ANNOTATION = ANNOTATION_PREFIX + "repo"
BRANCH_ANNOTATION = ANNOTATION_PREFIX + "branch"
REQUEST_TIMEOUT = (5.0, 30.0)


def api_client(kubeconfig: str | None = None, context: str | None = None) -> Any:
    """An ApiClient: in-cluster config inside a pod, else the kubeconfig (KUBECONFIG, context)."""
    try:
        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            cfg = client.Configuration()
            config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
            return client.ApiClient(cfg)
        return config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, context=context
        )
    except (ConfigException, OSError) as exc:
        where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        raise KubernetesError(
            f"no usable Kubernetes credentials ({exc}); outside a cluster, point KUBECONFIG "
            f"(now {where}) at a kubeconfig whose current context reaches your cluster",
            kind="kube_config",
        ) from exc


class KubeCluster:
    """Observes Deployments with one LIST per namespace and patches one container's image."""

    def __init__(
        self,
        api: Any,
        *,
        concurrency: int = 8,
        reporter: str | None = None,
        events: bool = True,
    ) -> None:
        api.configuration.connection_pool_maxsize = max(
            api.configuration.connection_pool_maxsize or 0, concurrency + 2
        )
        self.api = api
        self.concurrency = concurrency
        self.reporter = reporter or os.environ.get("POD_NAME") or socket.gethostname()
        self.events = events

    @property
    def host(self) -> str:
        return str(self.api.configuration.host)

    # -- reads ---------------------------------------------------------------------------------

    def observe(self, namespaces: Collection[str]) -> Mapping[str, NamespaceView]:
        """Every namespace's Deployments, or its NamespaceError; namespaces listed in parallel."""
        names = sorted(set(namespaces))
        if not names:
            return {}
        workers = max(1, min(self.concurrency, len(names)))
        with ThreadPoolExecutor(workers, thread_name_prefix="observe") as pool:
            return dict(zip(names, pool.map(self._observe_one, names), strict=True))

    def _observe_one(self, namespace: str) -> NamespaceView:
        deployments: dict[str, ObservedDeployment] = {}
        token: str | None = None
        try:
            while True:
                page = _request(
                    self.api,
                    "GET",
                    f"/apis/apps/v1/namespaces/{namespace}/deployments",
                    query={"limit": LIST_PAGE, "continue": token},
                )
                for item in page.get("items", []):
                    d = _observed(item)
                    deployments[d.name] = d
                token = (page.get("metadata") or {}).get("continue") or None
                if not token:
                    return deployments
        except (ApiException, urllib3.exceptions.HTTPError) as exc:
            error = self._error(exc, f"list deployments in namespace {namespace}")
            return NamespaceError(str(error), error.kind)

    def read(self, namespace: str, name: str) -> ObservedDeployment | None:
        try:
            raw = _request(
                self.api, "GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}"
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise self._error(exc, f"get deployment {namespace}/{name}") from exc
        except urllib3.exceptions.HTTPError as exc:
            raise self._error(exc, f"get deployment {namespace}/{name}") from exc
        return _observed(raw)

    # -- writes --------------------------------------------------------------------------------

    def apply(self, change: ImageChange, *, dry_run: bool) -> ApplyResult:
        """Strategic-merge patch of one container's image, guarded by the observed resourceVersion.

        A strategic-merge patch merges the containers list by name, so sidecars, init containers
        and every other field stay as they are (a JSON merge patch would replace the whole list).
        """
        body = patch_body(change, datetime.now(UTC))
        try:
            patched = _request(
                self.api,
                "PATCH",
                f"/apis/apps/v1/namespaces/{change.namespace}/deployments/{change.deployment}",
                query={
                    "dryRun": "All" if dry_run else None,
                    "fieldManager": FIELD_MANAGER,
                    "fieldValidation": "Strict",
                },
                body=body,
                content_type=SMP,
            )
        except ApiException as exc:
            if exc.status == 409:
                return ApplyResult(False, "conflict", "conflict", conflict=True)
            error = self._error(exc, f"patch deployment {change.namespace}/{change.deployment}")
            return ApplyResult(False, str(error), error.kind)
        except urllib3.exceptions.HTTPError as exc:
            error = self._error(exc, f"patch deployment {change.namespace}/{change.deployment}")
            return ApplyResult(False, str(error), error.kind)
        if not dry_run and self.events:
            self._event(change, patched)
        return ApplyResult(True, generation=(patched.get("metadata") or {}).get("generation"))

    def _event(self, change: ImageChange, patched: Mapping[str, Any]) -> None:
        """Record the update as an Event on the Deployment; failing to do so fails nothing."""
        meta = patched.get("metadata") or {}
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        now_micro = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{change.deployment}.{uuid.uuid4().hex[:16]}",
                "namespace": change.namespace,
            },
            "involvedObject": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": change.deployment,
                "namespace": change.namespace,
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "reason": "ImageUpdated",
            "message": (
                f"container {change.container}: {change.previous_image} -> {change.image} "
                f"({change.repo}@{change.branch} {change.sha[:7]})"
            )[:1024],
            "type": "Normal",
            "source": {"component": FIELD_MANAGER},
            "reportingComponent": FIELD_MANAGER,
            "reportingInstance": self.reporter[:128],
            "action": "Update",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "eventTime": now_micro,
            "count": 1,
        }
        try:
            _request(self.api, "POST", f"/api/v1/namespaces/{change.namespace}/events", body=event)
        except (ApiException, urllib3.exceptions.HTTPError) as exc:
            error = self._error(exc, f"create an event in {change.namespace}")
            log.warning("updated %s/%s but %s", change.namespace, change.deployment, error)

    def annotate(self, namespace: str, deployment: str, key: str, value: str) -> None:
        """Set one annotation with a JSON merge patch (no resourceVersion: it touches nothing
        anyone else writes); raises KubernetesError."""
        action = f"annotate deployment {namespace}/{deployment}"
        try:
            _request(
                self.api,
                "PATCH",
                f"/apis/apps/v1/namespaces/{namespace}/deployments/{deployment}",
                query={"fieldManager": FIELD_MANAGER},
                body={"metadata": {"annotations": {key: value}}},
                content_type="application/merge-patch+json",
            )
        except (ApiException, urllib3.exceptions.HTTPError) as exc:
            raise self._error(exc, action) from exc

    # -- errors --------------------------------------------------------------------------------

    def _error(self, exc: Exception, action: str) -> KubernetesError:
        """Our own error, saying what was refused and what to do about it."""
        if isinstance(exc, ApiException):
            status = exc.status
            message = _api_message(exc)
            if status == 401:
                return KubernetesError(
                    f"cannot {action}: the API server rejected our credentials (401); "
                    "refresh the kubeconfig or the ServiceAccount token",
                    status=401,
                    kind="kube_auth",
                )
            if status == 403:
                return KubernetesError(
                    f"cannot {action}: forbidden by RBAC ({message}); grant the reconciler's "
                    "ServiceAccount the Role from k8s/ in that namespace",
                    status=403,
                    kind="forbidden",
                )
            if status == 422:
                return KubernetesError(
                    f"cannot {action}: the API server rejected the change: {message}",
                    status=422,
                    kind="invalid",
                )
            if status == 404:
                return KubernetesError(f"cannot {action}: not found", status=404, kind="not_found")
            return KubernetesError(
                f"cannot {action}: API server answered {status}: {message}",
                status=status,
                kind="kubernetes",
            )
        return KubernetesError(
            f"cannot {action}: the API server at {self.host} is unreachable "
            f"({type(exc).__name__}); check the kube context and the network",
            kind="kube_unreachable",
        )


def patch_body(change: ImageChange, now: datetime) -> dict[str, Any]:
    """The strategic-merge patch for one change: the container's image and where it came from."""
    metadata: dict[str, Any] = {
        "annotations": {
            REPO_ANNOTATION: change.repo,
            BRANCH_ANNOTATION: change.branch,
            SHA_ANNOTATION: change.sha,
            UPDATED_ANNOTATION: now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            CHANGE_CAUSE: (
                f"reconciler: {change.repo}@{change.branch} {change.sha[:7]} "
                f"({change.container}={change.image})"
            ),
        }
    }
    if change.resource_version:
        metadata["resourceVersion"] = change.resource_version  # 409 if it changed since we looked
    return {
        "metadata": metadata,
        "spec": {
            "template": {
                "spec": {"containers": [{"name": change.container, "image": change.image}]}
            }
        },
    }


def _observed(item: Mapping[str, Any]) -> ObservedDeployment:
    meta = item.get("metadata") or {}
    pod = ((item.get("spec") or {}).get("template") or {}).get("spec") or {}
    return ObservedDeployment(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        containers=tuple(
            Container(str(c.get("name")), str(c.get("image", "")))
            for c in pod.get("containers", [])
        ),
        init_containers=tuple(
            Container(str(c.get("name")), str(c.get("image", "")))
            for c in pod.get("initContainers", [])
        ),
        annotations=dict(meta.get("annotations") or {}),
        resource_version=str(meta.get("resourceVersion", "")),
        uid=str(meta.get("uid", "")),
        generation=int(meta.get("generation", 0)),
    )


def _request(
    api: Any,
    method: str,
    path: str,
    *,
    query: Mapping[str, str | int | None] | None = None,
    body: Any = None,
    content_type: str = "application/json",
    timeout: tuple[float, float] = REQUEST_TIMEOUT,
) -> Any:
    """One API call through the client's ApiClient, answered as JSON.

    The generated *Api classes import hundreds of pydantic models (AppsV1Api + CoreV1Api cost
    ~90 MiB of RSS here) to parse answers we read as JSON anyway, so the adapter goes through
    the ApiClient's own request path: same configuration, auth (token refresh included), TLS
    and pooling. Non-2xx answers raise the client's ApiException.
    """
    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = content_type
    params = [(k, v) for k, v in (query or {}).items() if v is not None]
    request = api.param_serialize(
        method=method,
        resource_path=path,
        query_params=params,
        header_params=headers,
        body=body,
        auth_settings=["BearerToken"],
    )
    response = api.call_api(*request, _request_timeout=timeout)
    response.read()
    if not 200 <= response.status <= 299:
        raise ApiException.from_response(http_resp=response, body=None, data=None)
    return json.loads(response.data) if response.data else {}


def _api_message(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "")
    except ValueError:
        return str(exc.reason or exc.body or "")[:300]
    return str(body.get("message") or exc.reason)[:500] if isinstance(body, dict) else str(body)


class LeaseBusy(KubernetesError):
    """Another replica holds the Lease."""


class KubeLease:
    """A coordination.k8s.io Lease held while a sync runs, so one replica syncs at a time."""

    def __init__(
        self, api: Any, namespace: str, name: str, identity: str, duration: int = 60
    ) -> None:
        self.api = api
        self.path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.duration = duration

    def acquire(self) -> None:
        """Take the Lease or raise LeaseBusy (held by a live holder) / KubernetesError."""
        now = datetime.now(UTC)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.duration,
            "acquireTime": stamp,
            "renewTime": stamp,
        }
        try:
            lease = self._read()
        except ApiException as exc:
            if exc.status != 404:
                raise self._error(exc, "read") from exc
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": spec,
            }
            try:
                _request(self.api, "POST", self.path, body=body)
            except ApiException as exc2:
                if exc2.status == 409:
                    raise LeaseBusy("another replica took the Lease first", kind="lease") from exc2
                raise self._error(exc2, "create") from exc2
            return
        current = lease.get("spec") or {}
        holder = current.get("holderIdentity")
        if holder and holder != self.identity and not _expired(current, now):
            raise LeaseBusy(f"replica {holder} is syncing (Lease {self.name})", kind="lease")
        if holder == self.identity:
            spec["acquireTime"] = current.get("acquireTime") or stamp
        lease["spec"] = {**current, **spec}
        self._replace(lease)

    def renew(self) -> None:
        lease = self._read()
        if (lease.get("spec") or {}).get("holderIdentity") != self.identity:
            raise LeaseBusy("lost the Lease", kind="lease")
        lease["spec"]["renewTime"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        self._replace(lease)

    def release(self) -> None:
        """Give the Lease up so another replica need not wait for it to expire."""
        try:
            lease = self._read()
            if (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                lease["spec"]["holderIdentity"] = None
                self._replace(lease)
        except (ApiException, urllib3.exceptions.HTTPError, KubernetesError) as exc:
            log.warning("could not release the Lease %s: %s", self.name, exc)

    def _read(self) -> Any:
        return _request(self.api, "GET", f"{self.path}/{self.name}")

    def _replace(self, lease: Mapping[str, Any]) -> None:
        try:
            _request(self.api, "PUT", f"{self.path}/{self.name}", body=lease)
        except ApiException as exc:
            if exc.status == 409:
                raise LeaseBusy("another replica updated the Lease first", kind="lease") from exc
            raise self._error(exc, "update") from exc

    def _error(self, exc: ApiException, verb: str) -> KubernetesError:
        return KubernetesError(
            f"cannot {verb} Lease {self.namespace}/{self.name}: {exc.status} {_api_message(exc)}",
            status=exc.status,
            kind="lease",
        )


def _expired(spec: Mapping[str, Any], now: datetime) -> bool:
    renew = spec.get("renewTime") or spec.get("acquireTime")
    if not renew:
        return True
    try:
        renewed = datetime.fromisoformat(str(renew).replace("Z", "+00:00"))
    except ValueError:
        return True
    return (now - renewed).total_seconds() > float(spec.get("leaseDurationSeconds") or 0)


def ping(api: Any) -> str | None:
    """None when the API server answers /version (no RBAC needed), else why it does not."""
    try:
        _request(api, "GET", "/version", timeout=(3.0, 5.0))
    except (ApiException, urllib3.exceptions.HTTPError) as exc:
        return f"Kubernetes API server unreachable: {type(exc).__name__}"
    return None
