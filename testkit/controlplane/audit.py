"""Reading the API server's audit log: events, and requests counted per verb."""

from __future__ import annotations

import collections
import contextlib
import json
from pathlib import Path
from typing import Any

# Every request at Metadata level. RequestReceived is kept on purpose: in blocking mode it is
# written before the request is handled, so every request the client has seen answered is
# already in the log (ResponseComplete may trail the response by a hair). Count unique
# auditIDs (see audit_verb_counts), not lines.
AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
rules:
- level: Metadata
"""


def audit_events(path: Path) -> list[dict[str, Any]]:
    """All events (JSON lines) of an audit log written with ControlPlane(audit_log=...)."""
    events: list[dict[str, Any]] = []
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return events
    for raw in text.splitlines():
        line = raw.strip()
        if line:
            with contextlib.suppress(json.JSONDecodeError):  # a partially written last line
                events.append(json.loads(line))
    return events


def audit_verb_counts(
    path: Path,
    *,
    username: str | None = None,
    exclude_system: bool = True,
    resources_only: bool = True,
) -> collections.Counter[str]:
    """Requests per verb (get, list, watch, create, update, patch, delete, ...) in an audit
    log, each request counted once (stages merged by auditID).

    ``username``: only requests by this effective user (the impersonated one, if any), e.g.
    ``"admin"`` or ``"system:serviceaccount:NS:NAME"``. ``exclude_system``: drop the API
    server's own loopback requests (``system:apiserver``) and other ``system:`` users that
    are not service accounts. ``resources_only``: drop non-resource requests (``/readyz``,
    ``/version``, discovery ``/api``, ``/apis``...).

    Every answered request is in the log (its RequestReceived stage is written, blocking,
    before it is handled); the impersonated user only appears in later stages, which may
    trail the response by a moment, so read impersonated counts after a short pause.
    """
    requests: dict[str, tuple[str, str, bool]] = {}
    for event in audit_events(path):
        audit_id = str(event.get("auditID", ""))
        user = str((event.get("user") or {}).get("username", ""))
        impersonated = event.get("impersonatedUser")
        if impersonated:
            user = str(impersonated.get("username", ""))
        elif audit_id in requests:
            user = requests[audit_id][1]
        requests[audit_id] = (str(event.get("verb", "")), user, "objectRef" in event)
    counts: collections.Counter[str] = collections.Counter()
    for verb, user, is_resource in requests.values():
        if username is not None and user != username:
            continue
        if (
            exclude_system
            and user.startswith("system:")
            and not user.startswith("system:serviceaccount:")
        ):
            continue
        if resources_only and not is_resource:
            continue
        counts[verb] += 1
    return counts
