"""The Kubernetes adapter (the only module that talks to the kubernetes client): observe, patch."""

from __future__ import annotations

import json
import logging
import socket
import threading
import uuid
from collections.abc import Collection, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from reconciler.core import annotations as ann
from reconciler.core import workloads
from reconciler.core.errors import ConflictError, ErrorKind, KubernetesError
from reconciler.core.model import (
    CRONJOB,
    DAEMONSET,
    DEPLOYMENT,
    STATEFULSET,
    ApplyResult,
    Container,
    DeploymentPatch,
    DeploymentStatus,
    ImageChange,
    KubeEvent,
    NamespaceError,
    NamespaceView,
    ObservedDeployment,
)
from reconciler.core.rollout import state as rollout
from reconciler.core.rollout.history import ReplicaSetRecord
from reconciler.sync.fanout import bounded_map

log = logging.getLogger(__name__)

FIELD_MANAGER = rollout.FIELD_MANAGER
SMP = "application/strategic-merge-patch+json"
LIST_PAGE = 500
REQUEST_TIMEOUT = (5.0, 30.0)


def api_client(
    kubeconfig: str | None = None, context: str | None = None, *, in_cluster: bool = False
) -> Any:
    """An ApiClient: in-cluster config inside a pod (no kubeconfig given), else the kubeconfig
    (None: the client's default, ~/.kube/config) and its context."""
    try:
        if kubeconfig is None and in_cluster:
            cfg = client.Configuration()
            config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
            return client.ApiClient(cfg)
        return config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, context=context
        )
    except (ConfigException, OSError) as exc:
        where = kubeconfig or "~/.kube/config"
        raise KubernetesError(
            f"no usable Kubernetes credentials ({exc}); outside a cluster, point KUBECONFIG "
            f"(now {where}) at a kubeconfig whose current context reaches your cluster",
            kind=ErrorKind.KUBE_CONFIG,
        ) from exc


class KubeCluster:
    """Observes Deployments with one LIST per namespace and patches one container's image.

    A patch's Events are created in the background (on at most `writes` threads), so the next
    patch does not wait for them; settle() waits until they are all written.
    """

    def __init__(
        self,
        api: Any,
        *,
        concurrency: int = 8,
        writes: int = 8,
        reporter: str | None = None,
        events: bool = True,
    ) -> None:
        # patches and Events in flight at once, plus the namespace LISTs
        api.configuration.connection_pool_maxsize = max(
            api.configuration.connection_pool_maxsize or 0, 2 * writes + concurrency + 2
        )
        self.api = api
        self.concurrency = concurrency
        self.reporter = reporter or socket.gethostname()
        self.events = events
        self._event_pool = ThreadPoolExecutor(writes, thread_name_prefix="events")
        self._pending: set[Future[None]] = set()
        self._pending_lock = threading.Lock()

    @property
    def host(self) -> str:
        return str(self.api.configuration.host)

    def close(self) -> None:
        """Let the Events in flight be written, then end their threads (a port that is no
        longer used: another cluster's, dropped by a reload or rebuilt on new credentials)."""
        self._event_pool.shutdown(wait=False)

    # -- reads ---------------------------------------------------------------------------------

    def observe(
        self, namespaces: Collection[str], kinds: Mapping[str, frozenset[str]] | None = None
    ) -> Mapping[str, NamespaceView]:
        """Every namespace's workloads (keyed by model.view_key), or its NamespaceError; one
        LIST per kind in `kinds[namespace]` (default: Deployments), and one of Jobs where
        there are CronJobs to judge; namespaces listed in parallel."""
        names = sorted(set(namespaces))
        wanted = {ns: (kinds or {}).get(ns) or frozenset({DEPLOYMENT}) for ns in names}
        views = bounded_map(
            lambda ns: self._observe_one(ns, wanted[ns]),
            names,
            limit=self.concurrency,
            name="observe",
        )
        return dict(zip(names, views, strict=True))

    def _observe_one(self, namespace: str, kinds: frozenset[str]) -> NamespaceView:
        view: dict[str, ObservedDeployment] = {}
        try:
            jobs = self._list(namespace, "Job") if CRONJOB in kinds else []
            now = datetime.now(UTC).timestamp()
            for kind in sorted(kinds):
                for item in self._list(namespace, kind):
                    d = observed_of(kind, item, jobs, now)
                    view[d.key] = d
        except KubernetesError as error:
            return NamespaceError(str(error), error.kind)
        return view

    def _list(self, namespace: str, kind: str) -> list[Mapping[str, Any]]:
        """Every object of `kind` in the namespace, in pages of LIST_PAGE."""
        items: list[Mapping[str, Any]] = []
        token: str | None = None
        while True:
            page = request(
                self.api,
                "GET",
                kind_path(kind, namespace),
                action=f"list {_plural(kind)} in namespace {namespace}",
                query={"limit": LIST_PAGE, "continue": token},
            )
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue") or None
            if not token:
                return items

    def read(self, namespace: str, name: str, kind: str = DEPLOYMENT) -> ObservedDeployment | None:
        try:
            raw = request(
                self.api,
                "GET",
                kind_path(kind, namespace, name),
                action=f"get {kind.lower()} {namespace}/{name}",
            )
            jobs = self._list(namespace, "Job") if kind == CRONJOB else []
        except KubernetesError as error:
            if error.kind is ErrorKind.NOT_FOUND:
                return None
            raise
        return observed_of(kind, raw, jobs, datetime.now(UTC).timestamp())

    # -- writes --------------------------------------------------------------------------------

    def apply(self, change: ImageChange, *, dry_run: bool) -> ApplyResult:
        """Strategic-merge patch of one container's image, guarded by the observed resourceVersion.

        A strategic-merge patch merges the containers list by name, so sidecars, init containers
        and every other field stay as they are (a JSON merge patch would replace the whole list).
        """
        now = datetime.now(UTC).timestamp()
        return self.patch(rollout.update_patch(change, now), dry_run=dry_run)

    def patch(self, patch: DeploymentPatch, *, dry_run: bool) -> ApplyResult:
        """Send one DeploymentPatch (field manager `reconciler`), then its Events."""
        try:
            patched = request(
                self.api,
                "PATCH",
                kind_path(patch.kind, patch.namespace, patch.deployment),
                action=f"patch {patch.kind.lower()} {patch.namespace}/{patch.deployment}",
                query={
                    "dryRun": "All" if dry_run else None,
                    "fieldManager": FIELD_MANAGER,
                    "fieldValidation": "Strict",
                },
                body=smp_body(patch),
                content_type=SMP,
            )
        except ConflictError:
            return ApplyResult(False, "conflict", ErrorKind.CONFLICT, conflict=True)
        except KubernetesError as error:
            return ApplyResult(False, str(error), error.kind)
        if not dry_run and self.events and patch.events:
            self._post_events(patch, patched.get("metadata") or {})
        return ApplyResult(True, generation=(patched.get("metadata") or {}).get("generation"))

    def _post_events(self, patch: DeploymentPatch, meta: Mapping[str, Any]) -> None:
        """Queue the patch's Events (in order, on one thread); settle() waits for them."""

        def post() -> None:
            for note in patch.events:
                self.event(patch.namespace, patch.deployment, note, meta, kind=patch.kind)

        future = self._event_pool.submit(post)
        with self._pending_lock:
            self._pending.add(future)
        future.add_done_callback(self._forget)

    def _forget(self, future: Future[None]) -> None:
        with self._pending_lock:
            self._pending.discard(future)

    def settle(self) -> None:
        """Wait for every Event queued so far (each failure is logged by event(), never raised)."""
        with self._pending_lock:
            pending = list(self._pending)
        for future in pending:
            try:
                future.result()
            except Exception:  # event() logs its own failures; anything else is logged here
                log.exception("creating an event failed")

    def replica_sets(self, d: ObservedDeployment) -> list[ReplicaSetRecord]:
        """The Deployment's ReplicaSets (one LIST by its selector, kept when it owns them)."""
        labels = ",".join(f"{k}={v}" for k, v in sorted(d.selector.items()))
        items = (
            request(
                self.api,
                "GET",
                f"/apis/apps/v1/namespaces/{d.namespace}/replicasets",
                action=f"list replicasets in {d.namespace}",
                query={"labelSelector": labels or None},
            ).get("items")
            or []
        )
        out = []
        for item in items:
            meta = item.get("metadata") or {}
            owners = {o.get("uid") for o in meta.get("ownerReferences") or []}
            if d.uid and d.uid not in owners:
                continue
            pod = ((item.get("spec") or {}).get("template") or {}).get("spec") or {}
            out.append(
                ReplicaSetRecord(
                    name=str(meta.get("name", "")),
                    created=str(meta.get("creationTimestamp", "")),
                    images={
                        str(c.get("name")): str(c.get("image", ""))
                        for field in ("initContainers", "containers")
                        for c in pod.get(field) or ()
                    },
                    annotations=dict(meta.get("annotations") or {}),
                    replicas=int((item.get("status") or {}).get("replicas") or 0),
                )
            )
        return out

    def workload_revisions(self, d: ObservedDeployment) -> list[workloads.Revision]:
        """A StatefulSet's or DaemonSet's ControllerRevisions, or a CronJob's Jobs (one LIST
        of the namespace's, kept when the workload owns them), oldest first."""
        listed = "Job" if d.kind == CRONJOB else "ControllerRevision"
        items = self._list(d.namespace, listed)
        return list(workloads.revisions(d.kind, {"metadata": {"uid": d.uid}}, items))

    def annotate(
        self, namespace: str, deployment: str, key: str, value: str, kind: str = DEPLOYMENT
    ) -> None:
        """Set one annotation with a JSON merge patch, unguarded: it touches nothing anyone else
        writes (the notification state); raises KubernetesError."""
        request(
            self.api,
            "PATCH",
            kind_path(kind, namespace, deployment),
            action=f"annotate {kind.lower()} {namespace}/{deployment}",
            query={"fieldManager": FIELD_MANAGER},
            body={"metadata": {"annotations": {key: value}}},
            content_type="application/merge-patch+json",
        )

    def pod_troubles(
        self, namespace: str, selector: Mapping[str, str], container: str, image: str
    ) -> tuple[str, ...]:
        """One LIST of the Deployment's pods; why those running `image` are stuck."""
        labels = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        pods = request(
            self.api,
            "GET",
            f"/api/v1/namespaces/{namespace}/pods",
            action=f"list pods in {namespace}",
            query={"labelSelector": labels or None},
        )
        return pod_troubles(pods.get("items") or [], container, image)

    def event(
        self,
        namespace: str,
        deployment: str,
        note: KubeEvent,
        meta: Mapping[str, Any],
        *,
        kind: str = DEPLOYMENT,
    ) -> None:
        """Record an Event on the workload; failing to do so fails nothing."""
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        now_micro = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{deployment}.{uuid.uuid4().hex[:16]}",
                "namespace": namespace,
            },
            "involvedObject": {
                "apiVersion": KIND_API[kind][0],
                "kind": kind,
                "name": deployment,
                "namespace": namespace,
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "reason": note.reason,
            "message": note.message[:1024],
            "type": note.type,
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
            request(
                self.api,
                "POST",
                f"/api/v1/namespaces/{namespace}/events",
                action=f"create an event in {namespace}",
                body=event,
            )
        except KubernetesError as error:
            log.warning("changed %s/%s but %s", namespace, deployment, error)


def patch_body(change: ImageChange, now: datetime) -> dict[str, Any]:
    """The strategic-merge patch for one change: the container's image and where it came from."""
    return smp_body(rollout.update_patch(change, now.timestamp()))


def smp_body(patch: DeploymentPatch) -> dict[str, Any]:
    """A strategic-merge patch: annotations (null removes), maybe images of containers and
    init containers (each list merges by name: the others stay as they are)."""
    annotations: dict[str, str | None] = dict(patch.annotations)
    if patch.change_cause:
        annotations[ann.CHANGE_CAUSE] = patch.change_cause
    metadata: dict[str, Any] = {"annotations": annotations}
    if patch.resource_version:
        metadata["resourceVersion"] = patch.resource_version  # 409 if it changed since we looked
    body: dict[str, Any] = {"metadata": metadata}
    if patch.images:  # merged by name into containers and initContainers
        pod: dict[str, Any] = {}
        for one in patch.images:
            field = "initContainers" if one.init else "containers"
            pod.setdefault(field, []).append({"name": one.container, "image": one.image})
        for key in reversed(workloads.template_path(patch.kind)):  # spec.template, or a
            pod = {key: {"spec": pod} if key == "template" else pod}  # CronJob's jobTemplate
        body.update(pod)
    return body


def pod_troubles(pods: list[Mapping[str, Any]], container: str, image: str) -> tuple[str, ...]:
    """Why pods of `image` are stuck: a stuck waiting reason of the container (or init
    container: the pod then stays Pending, Init:CrashLoopBackOff), per pod."""
    out = []
    for pod in pods:
        spec = pod.get("spec") or {}
        listed = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
        if not any(c.get("name") == container and c.get("image") == image for c in listed):
            continue
        status = pod.get("status") or {}
        for cs in (
            cs for f in ("initContainerStatuses", "containerStatuses") for cs in status.get(f) or ()
        ):
            if cs.get("name") != container:
                continue
            waiting = (cs.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason")
            if reason in rollout.STUCK_REASONS:
                name = (pod.get("metadata") or {}).get("name", "?")
                restarts = cs.get("restartCount") or 0
                out.append(f"pod {name}: {reason} ({restarts} restarts)")
    return tuple(out)


def _status(item: Mapping[str, Any]) -> DeploymentStatus | None:
    status = item.get("status") or {}
    if "observedGeneration" not in status:
        return None
    spec = item.get("spec") or {}
    progressing: Mapping[str, Any] = next(
        (c for c in status.get("conditions") or [] if c.get("type") == "Progressing"), {}
    )
    return DeploymentStatus(
        observed_generation=int(status.get("observedGeneration") or 0),
        desired=int(spec.get("replicas", 1)),
        replicas=int(status.get("replicas") or 0),
        updated=int(status.get("updatedReplicas") or 0),
        ready=int(status.get("readyReplicas") or 0),
        available=int(status.get("availableReplicas") or 0),
        deadline_exceeded=progressing.get("reason") == "ProgressDeadlineExceeded",
        message=str(progressing.get("message") or ""),
        progress_deadline_seconds=int(spec.get("progressDeadlineSeconds") or 600),
    )


KIND_API = {  # kind → (apiVersion, resource)
    DEPLOYMENT: ("apps/v1", "deployments"),
    STATEFULSET: ("apps/v1", "statefulsets"),
    DAEMONSET: ("apps/v1", "daemonsets"),
    CRONJOB: ("batch/v1", "cronjobs"),
    "Job": ("batch/v1", "jobs"),
    "ControllerRevision": ("apps/v1", "controllerrevisions"),
}


def kind_path(kind: str, namespace: str, name: str | None = None) -> str:
    """The API path of a namespace's objects of `kind`, or of one of them."""
    version, resource = KIND_API[kind]
    path = f"/apis/{version}/namespaces/{namespace}/{resource}"
    return f"{path}/{name}" if name is not None else path


def _plural(kind: str) -> str:
    return KIND_API[kind][1]


def observed_of(
    kind: str, item: Mapping[str, Any], jobs: list[Mapping[str, Any]], now: float
) -> ObservedDeployment:
    """The ObservedDeployment of a workload of any kind as the API server returns it: a
    Deployment's status, or the other kinds' rollout judged by core.workloads (a CronJob's
    by its Jobs, `jobs`: those of its namespace)."""
    if kind == DEPLOYMENT:
        return _observed(item)
    meta = item.get("metadata") or {}
    pod: Mapping[str, Any] = item
    for key in (*workloads.template_path(kind), "spec"):
        pod = pod.get(key) or {}
    selector = {} if kind == CRONJOB else ((item.get("spec") or {}).get("selector") or {})
    return ObservedDeployment(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        containers=_containers(pod.get("containers")),
        init_containers=_containers(pod.get("initContainers")),
        annotations=dict(meta.get("annotations") or {}),
        resource_version=str(meta.get("resourceVersion", "")),
        uid=str(meta.get("uid", "")),
        generation=int(meta.get("generation", 0)),
        image_owners=workloads.kind_image_owners(kind, list(meta.get("managedFields") or [])),
        selector=dict(selector.get("matchLabels") or {}),
        kind=kind,
        verdict=workloads.state(kind, item, jobs, now),
    )


def _containers(items: Any) -> tuple[Container, ...]:
    return tuple(Container(str(c.get("name")), str(c.get("image", ""))) for c in items or ())


def observed(item: Mapping[str, Any]) -> ObservedDeployment:
    """The ObservedDeployment of one Deployment as the API server returns it."""
    return _observed(item)


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
        status=_status(item),
        image_owners=rollout.image_owners(list(meta.get("managedFields") or [])),
        selector=dict(((item.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}),
    )


def request(
    api: Any,
    method: str,
    path: str,
    *,
    action: str,
    query: Mapping[str, str | int | None] | None = None,
    body: Any = None,
    content_type: str = "application/json",
    timeout: tuple[float, float] = REQUEST_TIMEOUT,
) -> Any:
    """One API call through the client's ApiClient, answered as JSON.

    The generated *Api classes import hundreds of pydantic models (AppsV1Api + CoreV1Api cost
    ~90 MiB of RSS here) to parse answers we read as JSON anyway, so the adapter goes through
    the ApiClient's own request path: same configuration, auth (token refresh included), TLS
    and pooling. Every failure comes out as our KubernetesError (see check_response), saying
    what `action` was refused: the client's exceptions never leave this module.
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
    try:
        response = api.call_api(*request, _request_timeout=timeout)
        response.read()
        if not 200 <= response.status <= 299:
            raise ApiException.from_response(http_resp=response, body=None, data=None)
    except (ApiException, urllib3.exceptions.HTTPError) as exc:
        raise check_response(exc, action, str(api.configuration.host)) from exc
    return json.loads(response.data) if response.data else {}


def check_response(exc: Exception, action: str, host: str) -> KubernetesError:
    """The one mapping of the client's exceptions into ours, saying what to do about each."""
    if not isinstance(exc, ApiException):
        return KubernetesError(
            f"cannot {action}: the API server at {host} is unreachable "
            f"({type(exc).__name__}); check the kube context and the network",
            kind=ErrorKind.KUBE_UNREACHABLE,
        )
    status = exc.status
    message = _api_message(exc)
    if status == 401:
        return KubernetesError(
            f"cannot {action}: the API server rejected our credentials (401); "
            "refresh the kubeconfig or the ServiceAccount token",
            status=401,
            kind=ErrorKind.KUBE_AUTH,
        )
    if status == 403 and "ValidatingAdmissionPolicy" in message:
        return KubernetesError(
            f"cannot {action}: refused by an admission policy ({message})",
            status=403,
            kind=ErrorKind.FORBIDDEN,
        )
    if status == 403:
        return KubernetesError(
            f"cannot {action}: forbidden by RBAC ({message}); grant the reconciler's "
            "ServiceAccount the Role from k8s/ in that namespace",
            status=403,
            kind=ErrorKind.FORBIDDEN,
        )
    if status == 404:
        return KubernetesError(f"cannot {action}: not found", status=404, kind=ErrorKind.NOT_FOUND)
    if status == 409:
        return ConflictError(f"cannot {action}: it changed meanwhile ({message})", status=409)
    if status == 422:
        return KubernetesError(
            f"cannot {action}: the API server rejected the change: {message}",
            status=422,
            kind=ErrorKind.INVALID,
        )
    return KubernetesError(
        f"cannot {action}: API server answered {status}: {message}",
        status=status,
        kind=ErrorKind.KUBERNETES,
    )


def _api_message(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "")
    except ValueError:
        return str(exc.reason or exc.body or "")[:300]
    return str(body.get("message") or exc.reason)[:500] if isinstance(body, dict) else str(body)


def ping(api: Any) -> str | None:
    """None when the API server answers /version (no RBAC needed), else why it does not."""
    try:
        request(api, "GET", "/version", action="read /version", timeout=(3.0, 5.0))
    except KubernetesError as exc:
        return f"Kubernetes API server unreachable: {type(exc.__cause__).__name__}"
    return None
