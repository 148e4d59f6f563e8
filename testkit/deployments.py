"""Realistic test Deployments: a sidecar, an init container, ports, env."""

from __future__ import annotations

from typing import Any

import kubernetes


def deployment_body(
    name: str, image: str, *, container: str = "app", sidecar: bool = True
) -> dict[str, Any]:
    containers: list[dict[str, Any]] = [
        {
            "name": container,
            "image": image,
            "ports": [{"name": "http", "containerPort": 8080}],
            "env": [{"name": "MODE", "value": "production"}],
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
        }
    ]
    if sidecar:
        containers.append(
            {
                "name": "proxy",
                "image": "envoyproxy/envoy:v1.30.1",
                "ports": [{"name": "admin", "containerPort": 9901}],
                "args": ["--config-path", "/etc/envoy/envoy.yaml"],
            }
        )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "initContainers": [
                        {"name": "migrate", "image": "gcr.io/p/migrate:v3", "args": ["up"]}
                    ],
                    "containers": containers,
                },
            },
        },
    }


def create_deployment(
    api: kubernetes.client.ApiClient, namespace: str, name: str, image: str, **kw: Any
) -> dict[str, Any]:
    create_from_body(api, namespace, deployment_body(name, image, **kw))
    return get_deployment(api, namespace, name)


def create_from_body(
    api: kubernetes.client.ApiClient, namespace: str, body: dict[str, Any]
) -> None:
    """Create a Deployment from a plain manifest dict (the client serialises dicts as they are;
    its annotation names only the V1Deployment model)."""
    apps = kubernetes.client.AppsV1Api(api)
    apps.create_namespaced_deployment(namespace, body)  # type: ignore[arg-type]


def get_deployment(api: kubernetes.client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    apps = kubernetes.client.AppsV1Api(api)
    d = apps.read_namespaced_deployment(name, namespace)
    result: dict[str, Any] = api.sanitize_for_serialization(d)  # type: ignore[no-untyped-call]
    return result


def write_status(
    api: kubernetes.client.ApiClient, namespace: str, name: str, *, rollout: str = "available"
) -> None:
    """Write the status the deployment controller would (for an API server without one):
    `available`, `progressing` (0 of 2 updated) or `failed` (ProgressDeadlineExceeded)."""
    gen = get_deployment(api, namespace, name)["metadata"]["generation"]
    conditions = {
        "available": {"reason": "NewReplicaSetAvailable", "status": "True", "message": "done"},
        "progressing": {"reason": "ReplicaSetUpdated", "status": "True", "message": "going"},
        "failed": {
            "reason": "ProgressDeadlineExceeded",
            "status": "False",
            "message": f'ReplicaSet "{name}-x" has timed out progressing.',
        },
    }
    ready = 2 if rollout == "available" else 0
    updated = 0 if rollout == "progressing" else 2
    body = {
        "status": {
            "observedGeneration": gen,
            "replicas": 2,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "conditions": [{"type": "Progressing", **conditions[rollout]}],
        }
    }
    kubernetes.client.AppsV1Api(api).patch_namespaced_deployment_status(name, namespace, body)
