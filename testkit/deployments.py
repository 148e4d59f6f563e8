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
    apps = kubernetes.client.AppsV1Api(api)
    body = deployment_body(name, image, **kw)
    apps.create_namespaced_deployment(namespace, body)  # type: ignore[arg-type]  # dicts serialise too
    return get_deployment(api, namespace, name)


def get_deployment(api: kubernetes.client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    apps = kubernetes.client.AppsV1Api(api)
    d = apps.read_namespaced_deployment(name, namespace)
    result: dict[str, Any] = api.sanitize_for_serialization(d)  # type: ignore[no-untyped-call]
    return result
