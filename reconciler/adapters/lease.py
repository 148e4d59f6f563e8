"""The Lease adapter: a coordination.k8s.io Lease, so one replica syncs at a time.

Built on the Kubernetes adapter's request path (kube.request), which maps the client's errors.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from reconciler.adapters.kube import request
from reconciler.core.errors import ConflictError, ErrorKind, KubernetesError, LeaseBusy

__all__ = ["KubeLease", "LeaseBusy"]

log = logging.getLogger(__name__)


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
        except KubernetesError as error:
            if error.kind is not ErrorKind.NOT_FOUND:
                raise
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": spec,
            }
            try:
                request(self.api, "POST", self.path, action=f"create {self._what}", body=body)
            except ConflictError as exc:
                raise LeaseBusy("another replica took the Lease first") from exc
            return
        current = lease.get("spec") or {}
        holder = current.get("holderIdentity")
        if holder and holder != self.identity and not _expired(current, now):
            raise LeaseBusy(f"replica {holder} is syncing (Lease {self.name})")
        if holder == self.identity:
            spec["acquireTime"] = current.get("acquireTime") or stamp
        lease["spec"] = {**current, **spec}
        self._replace(lease)

    def renew(self) -> None:
        lease = self._read()
        if (lease.get("spec") or {}).get("holderIdentity") != self.identity:
            raise LeaseBusy("lost the Lease")
        lease["spec"]["renewTime"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        self._replace(lease)

    def release(self) -> None:
        """Give the Lease up so another replica need not wait for it to expire."""
        try:
            lease = self._read()
            if (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                lease["spec"]["holderIdentity"] = None
                self._replace(lease)
        except KubernetesError as exc:
            log.warning("could not release the Lease %s: %s", self.name, exc)

    @property
    def _what(self) -> str:
        return f"Lease {self.namespace}/{self.name}"

    def _read(self) -> Any:
        return request(self.api, "GET", f"{self.path}/{self.name}", action=f"read {self._what}")

    def _replace(self, lease: Mapping[str, Any]) -> None:
        try:
            request(
                self.api,
                "PUT",
                f"{self.path}/{self.name}",
                action=f"update {self._what}",
                body=lease,
            )
        except ConflictError as exc:
            raise LeaseBusy("another replica updated the Lease first") from exc


def _expired(spec: Mapping[str, Any], now: datetime) -> bool:
    renew = spec.get("renewTime") or spec.get("acquireTime")
    if not renew:
        return True
    try:
        renewed = datetime.fromisoformat(str(renew).replace("Z", "+00:00"))
    except ValueError:
        return True
    return (now - renewed).total_seconds() > float(spec.get("leaseDurationSeconds") or 0)
