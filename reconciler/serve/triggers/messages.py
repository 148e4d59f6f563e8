"""Event triggers of serve: GitHub webhook deliveries and Pub/Sub event messages become syncs.

The parsing is pure (reconciler.core.triggers.webhooks, .cloud_events, .jobs); this module checks
signatures, forgets nothing it has handled for a while (redeliveries), counts every event in
the metrics by source, event and outcome, and hands syncs to the Service's one door, submit().
It never waits for a sync: a webhook is answered at once and the runner does the work.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from flask import Blueprint, jsonify, request

from reconciler.core.model import SyncRequest
from reconciler.core.ports import HeaderLookup
from reconciler.core.triggers import cloud_events, jobs, jsontext, webhooks
from reconciler.core.triggers.hints import Hint, Outcome
from reconciler.serve.service import Service
from reconciler.serve.web import fail
from reconciler.sync.runner import ShuttingDown

__all__ = ["WEBHOOK_TRIGGER", "GitHubHooks", "hooks_blueprint", "pubsub_classifier"]

log = logging.getLogger(__name__)

WEBHOOK_TRIGGER = "webhook"
REMEMBERED_DELIVERIES = 4096  # recent X-GitHub-Delivery ids kept to spot redeliveries
MAX_BODY = 25 * 1024 * 1024  # GitHub caps payloads at 25 MB
_SOURCE = "github"
# how a delivery that syncs nothing is answered: 202 (accepted, nothing to do) unless listed
_STATUS = {Outcome.PING: 200, Outcome.MALFORMED: 400}


class GitHubHooks:
    """Receives GitHub deliveries: verify, de-duplicate, classify, submit; answers at once."""

    def __init__(
        self, service: Service, secret: str | None, *, remember: int = REMEMBERED_DELIVERIES
    ) -> None:
        self.service = service
        self._secret = secret.encode() if secret else None
        self._remember = remember
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self._secret is not None

    def receive(
        self, headers: HeaderLookup, body: bytes, remote: str | None
    ) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON body) for one delivery; ``headers`` is looked up by name in any
        case (werkzeug's Headers)."""
        if self._secret is None:
            return 403, {
                "error": "GitHub webhooks are disabled: set GITHUB_WEBHOOK_SECRET to enable them"
            }
        event = headers.get("X-GitHub-Event", "")
        delivery = headers.get("X-GitHub-Delivery", "")
        where = {"delivery": delivery or None, "github_event": event or None, "remote": remote}
        if not self._signed(headers.get("X-Hub-Signature-256", ""), body):
            self._count("-", Outcome.REJECTED)  # never a label an unsigned client chose
            log.warning(
                "webhook: rejected a delivery with a missing or wrong signature",
                extra={"event": "webhook.unauthorized", **where, "bytes": len(body)},
            )
            return 401, {"error": "missing or wrong X-Hub-Signature-256"}
        if delivery and self._seen_before(delivery):
            hint = Hint(event, Outcome.DUPLICATE, f"delivery {delivery} was handled already")
            return self._answer(hint, where)
        try:
            payload = jsontext.decode(_json_text(body))
        except ValueError as exc:  # not UTF-8, not JSON, nested too deeply, a form without it
            hint = Hint(event, Outcome.MALFORMED, f"the payload is not JSON: {exc}")
            return self._answer(hint, where, status=400)
        sites, heads = self.service.current_sites(), self.service.known_heads()
        try:
            hint = webhooks.classify(event, payload, sites, heads)
        except Exception as exc:  # the rules are total; a payload they missed
            # is still the sender's mistake to hear about (400), never a 500
            hint = Hint(event, Outcome.MALFORMED, f"the payload cannot be read: {_describe(exc)}")
        if not hint.syncs:
            return self._answer(hint, where, status=_STATUS.get(hint.outcome, 202))
        if (pushed := webhooks.push_time(event, payload)) is not None:
            self.service.note_push(*pushed)  # the "pushed" stage of the commit's lead time
        try:
            record = self.service.submit(SyncRequest(sites=hint.sites, trigger=WEBHOOK_TRIGGER))
        except ShuttingDown:
            self._forget(delivery)
            return 503, {"error": "shutting down; redeliver later", **hint.as_dict()}
        return self._answer(hint, where, run=record.id)

    def _answer(
        self, hint: Hint, where: dict[str, Any], *, status: int = 202, run: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        self._count(hint.event or "-", hint.outcome)
        if hint.outcome is Outcome.REPORTED:
            self.service.report_event(hint.sites or (), f"github {hint.event}", hint.reason)
        level = logging.WARNING if hint.outcome is Outcome.REPORTED else logging.INFO
        log.log(
            level,
            "webhook %s: %s (%s)",
            hint.event,
            hint.outcome.value,
            hint.reason,
            extra={"event": f"webhook.{hint.outcome.value}", **where, **_fields(hint), "run": run},
        )
        body = hint.as_dict()
        if run is not None:
            body.update(id=run, status_url=f"/runs/{run}")
        return status, body

    def _signed(self, header: str, body: bytes) -> bool:
        assert self._secret is not None
        scheme, _, given = header.partition("=")
        if scheme != "sha256" or not given:
            return False
        expected = hmac.new(self._secret, body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(given.strip().lower().encode(), expected.encode())

    def _seen_before(self, delivery: str) -> bool:
        """Remember ``delivery``; True if it was remembered already."""
        with self._lock:
            if delivery in self._seen:
                self._seen.move_to_end(delivery)
                return True
            self._seen[delivery] = None
            while len(self._seen) > self._remember:
                self._seen.popitem(last=False)
            return False

    def _forget(self, delivery: str) -> None:
        with self._lock:
            self._seen.pop(delivery, None)

    def _count(self, event: str, outcome: Outcome) -> None:
        self.service.metrics.events.labels(_SOURCE, event, outcome.value).inc()


Classifier = Callable[[bytes, Mapping[str, str]], Hint]


def pubsub_classifier(service: Service, kind: str) -> Classifier:
    """How messages of one subscription ``kind`` (scheduler, cloud-build, gcr) become Hints,
    against the service's current config; every message is counted."""

    def classify(data: bytes, attributes: Mapping[str, str]) -> Hint:
        sites = service.current_sites()  # raises only when no config could be read: transient
        try:
            if kind == cloud_events.BUILD_EVENT:
                hint = cloud_events.classify_build(data, attributes, sites)
            elif kind == cloud_events.GCR_EVENT:
                hint = cloud_events.classify_gcr(data, sites)
            else:
                hint = jobs.classify_job(data, attributes, [s.name for s in sites])
        except Exception as exc:  # a message no rule can read is poison: no retry
            # would read it either, so it is acked as malformed (the rules are pure and total;
            # this only keeps a message they missed from coming back forever)
            hint = Hint(kind, Outcome.MALFORMED, f"the message cannot be read: {_describe(exc)}")
        service.metrics.events.labels("pubsub", hint.event, hint.outcome.value).inc()
        if hint.outcome is Outcome.REPORTED:
            service.report_event(hint.sites or (), hint.event, hint.reason)
            log.warning(
                "%s: %s", hint.event, hint.reason, extra={"event": "reported", **_fields(hint)}
            )
        return hint

    return classify


def _json_text(body: bytes) -> bytes | str:
    """The JSON of a delivery: the body, or its ``payload`` field when the webhook was set up
    with the form content type (application/x-www-form-urlencoded); ValueError if that form
    cannot be read."""
    if body.startswith(b"payload="):
        form = urllib.parse.parse_qs(
            body.decode("utf-8"), keep_blank_values=True, strict_parsing=True
        )
        return form["payload"][0]
    return body


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _fields(hint: Hint) -> dict[str, Any]:
    return {"outcome": hint.outcome.value, "reason": hint.reason, "sites": hint.as_dict()["sites"]}


def hooks_blueprint(hooks: GitHubHooks) -> Blueprint:
    """POST /hooks/github: GitHub's deliveries, answered at once."""
    bp = Blueprint("hooks", __name__)

    @bp.post("/hooks/github")
    def github_hook() -> Any:
        if (request.content_length or 0) > MAX_BODY:
            fail(413, "payload larger than GitHub's 25 MB")
        status, body = hooks.receive(request.headers, request.get_data(), request.remote_addr)
        return jsonify(body), status

    return bp
