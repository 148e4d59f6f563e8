"""LocalCluster: a ControlPlane that rolls Deployments out (controllers, scheduler, kwok nodes).

On top of etcd + kube-apiserver it runs, all on loopback and built like them (tools/
build-cluster.sh):

- kube-controller-manager with only the deployment, replicaset, garbage-collector and
  namespace controllers (no leader election, no cloud, its own client identity): deleting a
  Deployment deletes its ReplicaSets and Pods, deleting a namespace empties it (kwok then
  drops the pods at once); still, give each test its own namespace;
- kube-scheduler, which binds pods to the fake nodes;
- kwok, which plays the kubelet of ``nodes`` fake Nodes (annotated ``kwok.x-k8s.io/node:
  fake``; their ``not-ready`` taint is removed here, as no node-lifecycle controller runs)
  through the Stages in kwok_stages.yaml.

Which pods come up is decided by their containers' images (anywhere in the reference):

- an image containing ``crashloop`` or ``badc0de`` (CRASHLOOP_MARKERS) crash-loops: the pod is
  Running but never Ready; that container waits with reason ``CrashLoopBackOff``, its
  ``lastState`` is a terminated ``Error`` (exit 1), and its ``restartCount`` starts at 1 and
  grows by one every ~2 s;
- an image containing ``pullfail`` or ``deadbee`` (PULLFAIL_MARKERS) cannot be pulled: the pod
  stays Pending, never Ready; that container waits with reason ``ImagePullBackOff``;
- an init container with either marker keeps its pod Pending (Init:CrashLoopBackOff): it waits
  with reason ``CrashLoopBackOff`` (or ``ImagePullBackOff``), the containers in
  ``PodInitializing``;
- anything else becomes Running and Ready at once (init containers ``Completed``); a pod a Job
  owns then ends at once: ``Failed`` (containers exited 1) when an image contains ``jobfail``
  or ``0bfa11e`` (JOBFAIL_MARKERS; jobfail_sha()), else ``Succeeded`` (exited 0).

With ``controllers=WORKLOAD_CONTROLLERS`` kube-controller-manager also runs the statefulset,
daemonset, job and cronjob controllers: StatefulSets and DaemonSets roll out (DaemonSet pods
on every kwok node) with their ControllerRevisions, and Jobs, created by a CronJob or
``kubectl create job --from=cronjob/…``, complete or fail.

The hex markers fit in a commit SHA, so a GitHub stand-in commit can be "bad": see
crashloop_sha() and pullfail_sha() (the marker is the SHA's first 7 characters, so it
survives ``{short_sha}`` too).

    with LocalCluster() as cluster:
        api = cluster.api_client()
        cluster.kubectl("rollout", "history", "deployment/web", "-n", ns)

Components authenticate with their own client certificates (``system:kube-controller-
manager``, ``system:kube-scheduler``, ``system:kwok``, each also in ``system:masters``), so
audit_verb_counts(exclude_system=True) leaves their traffic out. Logs are in ``work_dir``.
"""

from __future__ import annotations

import json
import os
import secrets
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Self, TypeVar

import kubernetes

from testkit.controlplane import processes
from testkit.controlplane.binaries import CLUSTER_BINARIES, find_cluster_binaries, has_binaries
from testkit.controlplane.errors import ControlPlaneError, ControlPlaneUnavailable
from testkit.controlplane.plane import ControlPlane
from testkit.processes import free_port, tail

__all__ = [
    "CRASHLOOP_MARKERS",
    "DEFAULT_CONTROLLERS",
    "JOBFAIL_MARKERS",
    "NODE_ANNOTATION",
    "PULLFAIL_MARKERS",
    "WORKLOAD_CONTROLLERS",
    "LocalCluster",
    "crashloop_sha",
    "jobfail_sha",
    "kwok_stages",
    "pullfail_sha",
    "wait_for",
]

CRASHLOOP_MARKERS = ("crashloop", "badc0de")
PULLFAIL_MARKERS = ("pullfail", "deadbee")
JOBFAIL_MARKERS = ("jobfail", "0bfa11e")
STAGES_TEMPLATE = Path(__file__).with_name("kwok_stages.yaml")
NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
NOT_READY_TAINT = "node.kubernetes.io/not-ready"
DEFAULT_CONTROLLERS = (
    "deployment-controller",
    "replicaset-controller",
    "garbage-collector-controller",
    "namespace-controller",
    # Type-checks ValidatingAdmissionPolicies against the matched kinds' schemas (status only).
    "validatingadmissionpolicy-status-controller",
)
# DEFAULT_CONTROLLERS plus those of the other workload kinds (opt in with
# ``LocalCluster(controllers=WORKLOAD_CONTROLLERS)``): StatefulSets and DaemonSets (each
# controller keeps its own ControllerRevisions), Jobs and the CronJobs that create them.
WORKLOAD_CONTROLLERS = (
    *DEFAULT_CONTROLLERS,
    "statefulset-controller",
    "daemonset-controller",
    "job-controller",
    "cronjob-controller",
)

T = TypeVar("T")


def _hex_sha(marker: str) -> str:
    return marker + secrets.token_hex(20)[len(marker) :]


def crashloop_sha() -> str:
    """A random 40-hex commit SHA whose image (``…:{sha}`` or ``{short_sha}``) crash-loops."""
    return _hex_sha(CRASHLOOP_MARKERS[1])


def pullfail_sha() -> str:
    """A random 40-hex commit SHA whose image fails to pull (ImagePullBackOff)."""
    return _hex_sha(PULLFAIL_MARKERS[1])


def jobfail_sha() -> str:
    """A random 40-hex commit SHA whose image makes a Job's pod exit 1 (a Job fails)."""
    return _hex_sha(JOBFAIL_MARKERS[1])


def _jq_test(markers: Sequence[str]) -> str:
    return "(.image | " + " or ".join(f'contains("{m}")' for m in markers) + ")"


def _tpl_test(markers: Sequence[str]) -> str:
    return "(or " + " ".join(f'(contains "{m}" .image)' for m in markers) + ")"


def kwok_stages() -> str:
    """The Stage documents kwok runs with (kwok_stages.yaml, markers filled in)."""
    text = STAGES_TEMPLATE.read_text()
    for name, value in (
        ("CRASHLOOP_JQ", _jq_test(CRASHLOOP_MARKERS)),
        ("PULLFAIL_JQ", _jq_test(PULLFAIL_MARKERS)),
        ("JOBFAIL_JQ", _jq_test(JOBFAIL_MARKERS)),
        ("CRASHLOOP_TPL", _tpl_test(CRASHLOOP_MARKERS)),
        ("PULLFAIL_TPL", _tpl_test(PULLFAIL_MARKERS)),
    ):
        text = text.replace(f"@{name}@", value)
    return text


def wait_for(
    predicate: Callable[[], T | None], *, timeout: float = 120.0, what: str = "a condition"
) -> T:
    """Poll ``predicate`` until it returns something truthy and return that; TimeoutError
    naming ``what`` after ``timeout`` seconds (a generous deadline, not a timing assert)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


class LocalCluster(ControlPlane):
    """A ControlPlane plus kube-controller-manager, kube-scheduler and kwok (see the module
    docstring). Use as a context manager, or start()/stop().

    Extra attributes (valid after start()): ``cluster_bin_dir`` (kube-controller-manager,
    kube-scheduler, kubectl, kwok), ``node_names``, ``kubectl_path``, ``cluster_startup_seconds``
    (start() until nodes are schedulable and the components healthy, the control plane's
    start included), ``component_log_paths`` (name → log file).
    """

    def __init__(
        self,
        *,
        cluster_bin_dir: Path | None = None,
        nodes: int = 1,
        controllers: Sequence[str] = DEFAULT_CONTROLLERS,
        extra_controller_manager_args: Sequence[str] = (),
        **control_plane_kwargs: Any,
    ) -> None:
        """``cluster_bin_dir``: dir with the cluster binaries (default:
        find_cluster_binaries()). ``nodes``: how many fake Nodes. ``controllers``:
        kube-controller-manager's ``--controllers``. The rest goes to ControlPlane."""
        super().__init__(**control_plane_kwargs)
        self._cluster_bin_dir_arg = cluster_bin_dir
        self.node_count = nodes
        self.controllers = list(controllers)
        self.extra_controller_manager_args = list(extra_controller_manager_args)
        self.cluster_bin_dir = Path()
        self.kubectl_path = Path()
        self.node_names = [f"kwok-node-{i}" for i in range(nodes)]
        self.component_log_paths: dict[str, Path] = {}
        self.cluster_startup_seconds = 0.0
        self._components: dict[str, subprocess.Popen[bytes]] = {}
        self._argv: dict[str, Callable[[], list[str]]] = {}
        self._port_retries = 0
        self._health_ports: dict[str, int] = {}

    @property
    def running(self) -> bool:
        return super().running or any(p.poll() is None for p in self._components.values())

    def start(self) -> Self:
        t0 = time.monotonic()
        # Find (or build) the cluster binaries before starting anything, as the control
        # plane does for its own.
        self.cluster_bin_dir = self._cluster_bin_dir_arg or find_cluster_binaries()
        if not has_binaries(self.cluster_bin_dir, CLUSTER_BINARIES):
            raise ControlPlaneUnavailable(
                f"{self.cluster_bin_dir} lacks some of {', '.join(CLUSTER_BINARIES)}"
            )
        self.kubectl_path = self.cluster_bin_dir / "kubectl"
        super().start()
        try:
            self._start_components(t0 + self.start_timeout)
        except BaseException:
            self.stop()
            raise
        self.cluster_startup_seconds = time.monotonic() - t0
        return self

    def _kill_children(self) -> None:
        for proc in self._components.values():
            processes.kill_group(proc)
        self._components = {}
        super()._kill_children()

    # -- components --------------------------------------------------------------------------

    def _component_kubeconfig(self, name: str, user: str) -> Path:
        return self.client_kubeconfig(self.work_dir / f"{name}.kubeconfig", user, "system:masters")

    def _spawn_component(self, name: str, argv: Callable[[], list[str]]) -> None:
        """Start component ``name`` with ``argv()`` (called again for a restart, so that it
        can pick new ports), its HOME in the work dir (no ~/.kwok, ~/.kube)."""
        log = self.work_dir / f"{name}.log"
        self.component_log_paths[name] = log
        self._argv[name] = argv
        self._components[name] = self._spawn(argv(), log, {"HOME": str(self.work_dir)})

    def _secure_serving(self, name: str, kubeconfig: Path) -> list[str]:
        port = free_port()
        self._health_ports[name] = port
        return [
            f"--kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={self.work_dir / (name + '-certs')}",
            "--leader-elect=false",
            "--profiling=false",
        ]

    def _start_components(self, deadline: float) -> None:
        w = self.work_dir
        kcm = self._component_kubeconfig(
            "kube-controller-manager", "system:kube-controller-manager"
        )
        self._spawn_component(
            "kube-controller-manager",
            lambda: [
                str(self.cluster_bin_dir / "kube-controller-manager"),
                *self._secure_serving("kube-controller-manager", kcm),
                "--use-service-account-credentials=false",
                f"--controllers={','.join(self.controllers)}",
                "--kube-api-qps=200",
                "--kube-api-burst=400",
                *self.extra_controller_manager_args,
            ],
        )
        scheduler = self._component_kubeconfig("kube-scheduler", "system:kube-scheduler")
        self._spawn_component(
            "kube-scheduler",
            lambda: [
                str(self.cluster_bin_dir / "kube-scheduler"),
                *self._secure_serving("kube-scheduler", scheduler),
                "--kube-api-qps=200",
                "--kube-api-burst=400",
            ],
        )
        stages = w / "kwok-stages.yaml"
        stages.write_text(kwok_stages())
        kwok = self._component_kubeconfig("kwok", "system:kwok")
        key, value = NODE_ANNOTATION
        self._spawn_component(
            "kwok",
            lambda: [
                str(self.cluster_bin_dir / "kwok"),
                f"--kubeconfig={kwok}",
                f"--config={stages}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={key}={value}",
                "--node-lease-duration-seconds=0",
                "--cidr=10.244.0.1/16",
                "--node-ip=10.96.0.2",
            ],
        )
        with self.api_client() as api:
            self._create_nodes(api)
            self._wait_cluster_ready(api, deadline)

    def _create_nodes(self, api: kubernetes.client.ApiClient) -> None:
        core = kubernetes.client.CoreV1Api(api)
        key, value = NODE_ANNOTATION
        for name in self.node_names:
            core.create_node(
                kubernetes.client.V1Node(
                    metadata=kubernetes.client.V1ObjectMeta(
                        name=name,
                        annotations={key: value},
                        labels={
                            "kubernetes.io/hostname": name,
                            "kubernetes.io/os": "linux",
                            "kubernetes.io/arch": "amd64",
                            "type": "kwok",
                        },
                    )
                )
            )

    def _node_ready(self, core: kubernetes.client.CoreV1Api, name: str) -> bool:
        """Is Node ``name`` Ready (kwok initialised it) and free of the not-ready taint?
        The taint, which the API server puts on every new Node and only the node-lifecycle
        controller (not run here) would remove, is removed here."""
        resp: Any = core.read_node(name, _preload_content=False)  # the raw HTTP response
        node: dict[str, Any] = json.loads(resp.data)
        taints = node.get("spec", {}).get("taints") or []
        tainted = [i for i, t in enumerate(taints) if t.get("key") == NOT_READY_TAINT]
        if tainted:
            patch = [
                {
                    "op": "test",
                    "path": "/metadata/resourceVersion",
                    "value": node["metadata"]["resourceVersion"],
                },
                *({"op": "remove", "path": f"/spec/taints/{i}"} for i in reversed(tainted)),
            ]
            try:
                core.patch_node(name, patch)
            except kubernetes.client.ApiException as e:
                if e.status not in (409, 422):  # changed meanwhile: next round
                    raise
            return False
        conditions = node.get("status", {}).get("conditions") or []
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)

    def _wait_cluster_ready(self, api: kubernetes.client.ApiClient, deadline: float) -> None:
        core = kubernetes.client.CoreV1Api(api)
        pending = {"kube-controller-manager", "kube-scheduler"}
        last = "nothing checked yet"
        while True:
            self._check_components_alive()
            for name in sorted(pending):
                if self._healthy(name):
                    pending.discard(name)
            nodes_ready = all([self._node_ready(core, name) for name in self.node_names])
            if not pending and nodes_ready:
                return
            last = f"unhealthy: {sorted(pending)}; nodes ready: {nodes_ready}"
            if time.monotonic() > deadline:
                logs = "\n".join(
                    f"--- {name} log tail:\n{tail(path)}"
                    for name, path in self.component_log_paths.items()
                )
                raise ControlPlaneError(
                    f"local cluster not ready within {self.start_timeout:.0f}s ({last})\n{logs}"
                )
            time.sleep(0.1)

    def _check_components_alive(self) -> None:
        """Raise if a component exited, unless it lost the race for its port: then it starts
        again on another (three times at most)."""
        for name, proc in list(self._components.items()):
            code = proc.poll()
            if code is None:
                continue
            log = tail(self.component_log_paths[name])
            if "address already in use" in log and self._port_retries < 3:
                self._port_retries += 1
                self._spawn_component(name, self._argv[name])
                continue
            raise ControlPlaneError(
                f"{name} exited with code {code} during startup; log tail:\n{log}"
            )

    def _healthy(self, name: str) -> bool:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # self-signed serving cert in --cert-dir
        url = f"https://127.0.0.1:{self._health_ports[name]}/healthz"
        try:
            with urllib.request.urlopen(url, context=ctx, timeout=2) as r:
                return int(r.status) == 200
        except (OSError, ssl.SSLError, urllib.error.HTTPError):
            return False

    def component_pids(self) -> dict[str, int]:
        """Process id of each running component: etcd, kube-apiserver, and the cluster's."""
        procs = {"etcd": self._etcd, "kube-apiserver": self._apiserver, **self._components}
        return {name: p.pid for name, p in procs.items() if p is not None and p.poll() is None}

    # -- the person at the keyboard ----------------------------------------------------------

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run the built kubectl against this cluster as admin (``--kubeconfig`` is the admin
        kubeconfig; no ~/.kube, no kuberc). ``check``: raise ControlPlaneError with its output
        on a non-zero exit."""
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.work_dir),
            "KUBECONFIG": str(self.kubeconfig_path),
            "KUBERC": "off",
        }
        argv = [
            str(self.kubectl_path),
            f"--kubeconfig={self.kubeconfig_path}",
            f"--cache-dir={self.work_dir / 'kubectl-cache'}",
            *args,
        ]
        proc = subprocess.run(
            argv,
            input=input,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise ControlPlaneError(
                f"kubectl {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
            )
        return proc

    def __repr__(self) -> str:
        return f"LocalCluster(host={self.host!r}, work_dir={str(self.work_dir)!r})"
