"""A real, local Kubernetes control plane (etcd + kube-apiserver) for tests and benchmarks,
and a LocalCluster on top of it that rolls Deployments out (controllers, scheduler, kwok nodes).

envtest-style ControlPlane: only etcd and kube-apiserver run (no kubelet, scheduler or
controllers), on loopback ports, with RBAC authorization, a generated CA, an admin client
certificate (CN=admin, O=system:masters) and ServiceAccount token signing, so TokenRequest
tokens work.

    with ControlPlane() as cp:
        api = cp.api_client()            # admin kubernetes.client.ApiClient
        token = serviceaccount_token(cp, "ns", "reconciler")
        kubeconfig_for_token(cp, token, tmp / "sa.kubeconfig")

LocalCluster (testkit/controlplane/cluster.py) is a ControlPlane that also runs
kube-controller-manager, kube-scheduler and kwok, so Deployments get ReplicaSets and Pods that
become Ready, or crash-loop / fail to pull when their image says so.

Binaries come from ``$RECONCILER_CONTROLPLANE_BIN`` (a dir with ``kube-apiserver`` and
``etcd``), else ``$KUBEBUILDER_ASSETS``, else ``tools/build-controlplane.sh`` builds them from
the Go module proxy into a cache dir outside the repo (the first build takes minutes); the
cluster's from ``$RECONCILER_CLUSTER_BIN``, else ``tools/build-cluster.sh``; ``helm`` (any chart,
for tests or delivery) from ``$RECONCILER_HELM`` (the binary), else ``tools/build-helm.sh``.

Child processes run in their own sessions and get ``PR_SET_PDEATHSIG=SIGKILL``, so they die
with the Python process that started them (start the control plane from the main thread or
a thread that outlives it); ``stop()`` also runs at interpreter exit and on SIGTERM.

Modules: binaries (finding/building), pki (CA, certs, kubeconfigs), processes (spawn, kill,
exit hooks), plane (ControlPlane), clients (ApiClients, ServiceAccount tokens), audit (audit
log reading), cluster (LocalCluster, kwok stages), errors.
"""

from __future__ import annotations

from testkit.controlplane.audit import AUDIT_POLICY, audit_events, audit_verb_counts
from testkit.controlplane.binaries import (
    BUILD_SCRIPT,
    CLUSTER_BUILD_SCRIPT,
    HELM_BUILD_SCRIPT,
    REPO_ROOT,
    find_binaries,
    find_cluster_binaries,
    find_helm,
    pinned_versions,
)
from testkit.controlplane.clients import (
    api_client_from_kubeconfig,
    ensure_service_account,
    impersonating_api_client,
    kubeconfig_for_token,
    serviceaccount_token,
    token_api_client,
)
from testkit.controlplane.cluster import (
    CRASHLOOP_MARKERS,
    DEFAULT_CONTROLLERS,
    JOBFAIL_MARKERS,
    PULLFAIL_MARKERS,
    WORKLOAD_CONTROLLERS,
    LocalCluster,
    crashloop_sha,
    jobfail_sha,
    pullfail_sha,
    wait_for,
)
from testkit.controlplane.errors import ControlPlaneError, ControlPlaneUnavailable
from testkit.controlplane.plane import (
    SERVICE_ACCOUNT_ISSUER,
    SERVICE_CLUSTER_IP_RANGE,
    ControlPlane,
)

__all__ = [
    "AUDIT_POLICY",
    "BUILD_SCRIPT",
    "CLUSTER_BUILD_SCRIPT",
    "CRASHLOOP_MARKERS",
    "DEFAULT_CONTROLLERS",
    "HELM_BUILD_SCRIPT",
    "JOBFAIL_MARKERS",
    "PULLFAIL_MARKERS",
    "REPO_ROOT",
    "SERVICE_ACCOUNT_ISSUER",
    "SERVICE_CLUSTER_IP_RANGE",
    "WORKLOAD_CONTROLLERS",
    "ControlPlane",
    "ControlPlaneError",
    "ControlPlaneUnavailable",
    "LocalCluster",
    "api_client_from_kubeconfig",
    "audit_events",
    "audit_verb_counts",
    "crashloop_sha",
    "ensure_service_account",
    "find_binaries",
    "find_cluster_binaries",
    "find_helm",
    "impersonating_api_client",
    "jobfail_sha",
    "kubeconfig_for_token",
    "pinned_versions",
    "pullfail_sha",
    "serviceaccount_token",
    "token_api_client",
    "wait_for",
]
