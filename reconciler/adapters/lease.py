"""The Lease adapter: a coordination.k8s.io Lease, so one replica syncs at a time.

Built on the Kubernetes adapter's request path (kube.request), which maps the client's errors.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from reconciler.adapters.kube import request
from reconciler.core.errors import ConflictError, ErrorKind, KubernetesError, LeaseBusy
from reconciler.core.model import LeaseRecord

__all__ = ["KubeLease", "LeaseBusy"]

log = logging.getLogger(__name__)


class KubeLease:
    """A coordination.k8s.io Lease held while a sync runs, so one replica syncs at a time.

    Expiry is judged as client-go's leader election does it: by when this replica last saw the
    record change, on its own monotonic clock, never by comparing the holder's timestamps with
    the local clock (the holder's clock may be skewed). A replica that has just started must
    therefore see another holder's record unchanged for its leaseDurationSeconds before it takes
    the Lease over; a released Lease (no holder) is taken at once.
    """

    def __init__(
        self,
        api: Any,
        namespace: str,
        name: str,
        identity: str,
        duration: int = 60,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.duration = duration
        self.clock = clock
        self._seen: tuple[Any, ...] | None = None  # the record as last seen ...
        self._seen_at = 0.0  # ... and when (self.clock) it was first seen like that
        self._mine: int | None = None  # leaseTransitions when this replica last took it

    def acquire(self) -> bool:
        """Take the Lease or raise LeaseBusy (held by a live holder) / KubernetesError. True
        when another replica may have held it since this one last did (or this is the first
        time): what it started is then followed from what the cluster says."""
        stamp = _stamp()
        spec: dict[str, Any] = {
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
            body: dict[str, Any] = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {**spec, "leaseTransitions": 0},
            }
            try:
                request(self.api, "POST", self.path, action=f"create {self._what}", body=body)
            except ConflictError as exc:
                raise LeaseBusy("another replica took the Lease first") from exc
            self._observe(body["spec"])
            self._mine = 0
            return True
        current = lease.get("spec") or {}
        self._observe(current)
        holder = current.get("holderIdentity")
        if holder and holder != self.identity:
            remaining = self._remaining(current)
            if remaining >= 0:
                raise LeaseBusy(
                    f"replica {holder} is syncing (Lease {self.name})",
                    holder=holder,
                    remaining=remaining,
                )
        transitions = int(current.get("leaseTransitions") or 0)
        others = self._mine is None or transitions != self._mine
        if holder == self.identity:
            spec["acquireTime"] = current.get("acquireTime") or stamp
        else:
            others = others or bool(holder)
            transitions += 1
            spec["leaseTransitions"] = transitions
        lease["spec"] = {**current, **spec}
        self._replace(lease)
        self._mine = transitions
        return others

    def renew(self) -> None:
        """Renew our hold; LeaseBusy when another replica holds it now, KubernetesError when the
        Lease is gone or the API server refuses."""
        lease = self._read()
        current = lease.get("spec") or {}
        self._observe(current)
        if current.get("holderIdentity") != self.identity:
            raise LeaseBusy(f"lost the Lease to {current.get('holderIdentity') or 'nobody'}")
        lease["spec"]["renewTime"] = _stamp()
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

    def _observe(self, spec: Mapping[str, Any]) -> None:
        record = tuple(spec.get(k) for k in _RECORD)
        if record != self._seen:
            self._seen, self._seen_at = record, self.clock()

    def record(self) -> LeaseRecord:
        """The Lease as the cluster has it now (nobody holds a Lease not created yet). Seeing
        the record counts as observing it: a dead holder's Lease runs out sooner here."""
        try:
            spec = self._read().get("spec") or {}
        except KubernetesError as error:
            if error.kind is ErrorKind.NOT_FOUND:
                return LeaseRecord(holder=None)
            raise
        self._observe(spec)
        return LeaseRecord(
            holder=spec.get("holderIdentity") or None,
            acquired_at=_epoch(spec.get("acquireTime")),
            renewed_at=_epoch(spec.get("renewTime")),
            duration=spec.get("leaseDurationSeconds"),
            transitions=int(spec.get("leaseTransitions") or 0),
        )

    def _remaining(self, spec: Mapping[str, Any]) -> float:
        """Seconds until this replica may take the Lease over (negative: it may now)."""
        duration = float(spec.get("leaseDurationSeconds") or self.duration)
        return duration - (self.clock() - self._seen_at)

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
        self._observe(lease.get("spec") or {})


_RECORD = (
    "holderIdentity",
    "leaseDurationSeconds",
    "acquireTime",
    "renewTime",
    "leaseTransitions",
)


def _epoch(stamp: Any) -> float | None:
    """A Lease's MicroTime ("2026-01-02T03:04:05.123456Z") as a Unix time; None if unset."""
    if not isinstance(stamp, str) or not stamp:
        return None
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
