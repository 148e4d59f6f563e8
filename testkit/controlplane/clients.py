"""Kubernetes clients for a control plane: from a kubeconfig, as a ServiceAccount, by token."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import kubernetes

from testkit.controlplane.pki import write_kubeconfig

if TYPE_CHECKING:
    from testkit.controlplane.plane import ControlPlane


def api_client_from_kubeconfig(path: Path) -> kubernetes.client.ApiClient:
    """``kubernetes.config.new_client_from_config`` for ``path`` (global config untouched)."""
    client = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(path), persist_config=False
    )
    assert isinstance(client, kubernetes.client.ApiClient)
    return client


def _serviceaccount_groups(namespace: str) -> list[str]:
    return ["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"]


def impersonating_api_client(
    cp: ControlPlane,
    namespace: str,
    sa_name: str,
    *,
    groups: Sequence[str] | None = None,
) -> kubernetes.client.ApiClient:
    """Admin ApiClient that impersonates ServiceAccount ``namespace/sa_name``.

    Sends ``Impersonate-User: system:serviceaccount:NS:NAME`` plus one ``Impersonate-Group``
    header per group (default: system:serviceaccounts, system:serviceaccounts:NS,
    system:authenticated). The API server wants repeated headers, not a comma-joined list,
    and ApiClient.set_default_header holds one value per name, so the rest client's urllib3
    pool manager is wrapped to add them. The ServiceAccount object need not exist.
    """
    import urllib3

    client = cp.api_client()
    user = f"system:serviceaccount:{namespace}:{sa_name}"
    group_values = list(groups) if groups is not None else _serviceaccount_groups(namespace)
    pool = client.rest_client.pool_manager
    original_request = pool.request

    def request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        headers = urllib3.HTTPHeaderDict(kwargs.get("headers") or {})
        headers["Impersonate-User"] = user
        headers.discard("Impersonate-Group")
        for group in group_values:
            headers.add("Impersonate-Group", group)
        kwargs["headers"] = headers
        return original_request(method, url, *args, **kwargs)

    setattr(pool, "request", request)  # noqa: B010 (mypy: no method assignment)
    return client


def ensure_service_account(api: kubernetes.client.ApiClient, namespace: str, name: str) -> None:
    """Create namespace ``namespace`` and ServiceAccount ``name`` in it unless they exist."""
    core = kubernetes.client.CoreV1Api(api)
    for create in (
        lambda: core.create_namespace(
            kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name=namespace))
        ),
        lambda: core.create_namespaced_service_account(
            namespace,
            kubernetes.client.V1ServiceAccount(metadata=kubernetes.client.V1ObjectMeta(name=name)),
        ),
    ):
        try:
            create()
        except kubernetes.client.ApiException as e:
            if e.status != 409:
                raise


def serviceaccount_token(
    cp: ControlPlane,
    namespace: str,
    sa_name: str,
    *,
    expiration_seconds: int = 3600,
    audiences: Sequence[str] | None = None,
) -> str:
    """A bearer token for ServiceAccount ``namespace/sa_name`` from the TokenRequest API
    (the namespace and ServiceAccount are created if missing)."""
    with cp.api_client() as api:
        ensure_service_account(api, namespace, sa_name)
        spec = kubernetes.client.V1TokenRequestSpec(
            audiences=list(audiences) if audiences else [],
            expiration_seconds=expiration_seconds,
        )
        resp = kubernetes.client.CoreV1Api(api).create_namespaced_service_account_token(
            sa_name, namespace, kubernetes.client.AuthenticationV1TokenRequest(spec=spec)
        )
        assert resp.status is not None
        return str(resp.status.token)


def kubeconfig_for_token(
    cp: ControlPlane, token: str, path: Path, *, namespace: str | None = None
) -> Path:
    """Write a kubeconfig for ``cp`` authenticating with bearer ``token``; returns ``path``."""
    path = write_kubeconfig(Path(path), cp.host, cp.ca_pem, {"token": token})
    if namespace is not None:
        config = json.loads(path.read_text())
        config["contexts"][0]["context"]["namespace"] = namespace
        path.write_text(json.dumps(config, indent=2) + "\n")
    return path


def token_api_client(cp: ControlPlane, token: str) -> kubernetes.client.ApiClient:
    """A ``kubernetes.client.ApiClient`` for ``cp`` authenticating with bearer ``token``."""
    configuration = kubernetes.client.Configuration()
    configuration.host = cp.host
    configuration.ssl_ca_cert = str(cp.ca_path)
    configuration.verify_ssl = True
    configuration.api_key = {"authorization": token}
    configuration.api_key_prefix = {"authorization": "Bearer"}
    return kubernetes.client.ApiClient(configuration)
