"""The HTTP trigger: POST /sync[/<site>] and POST /sites/<site>/<action> (hold, resume,
rollback), behind the trigger token; the run's typed errors become HTTP answers here, once."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, jsonify, request

from reconciler.core.errors import CommandError, ErrorKind, ReconcilerError, ShuttingDown
from reconciler.core.model import SyncReport, SyncRequest
from reconciler.serve.leader import LeaseWait
from reconciler.serve.service import Service
from reconciler.serve.state import report_dict
from reconciler.serve.web import HttpError, Web, answer, fail, known_site

log = logging.getLogger(__name__)


def blueprint(web: Web) -> Blueprint:
    bp = Blueprint("triggers", __name__)
    service = web.service

    def authorized() -> None:
        if not web.trigger_token:
            fail(403, "the HTTP trigger is disabled: set RECONCILER_TRIGGER_TOKEN to enable it")
        if not web.access.may_trigger(
            request.headers.get("Authorization", ""), request.remote_addr
        ):
            raise HttpError(
                401,
                "missing or wrong bearer token",
                headers={"WWW-Authenticate": 'Bearer realm="reconciler"'},
            )

    @bp.errorhandler(ReconcilerError)
    def refused(exc: ReconcilerError) -> tuple[Response, int]:
        if isinstance(exc, ShuttingDown):
            return answer(HttpError(503, "shutting down; retry against another replica"))
        status = 409 if isinstance(exc, CommandError) else 503
        return answer(HttpError(status, str(exc)))

    @bp.post("/sync")
    @bp.post("/sync/<site>")
    def trigger(site: str | None = None) -> Any:
        authorized()
        sites = None
        if site is not None:
            known_site(service, site)
            sites = frozenset({site})
        override, by = _override(site)
        record = service.submit(
            SyncRequest(sites=sites, trigger="http", override_window=override, by=by)
        )
        log.info(
            "HTTP trigger for %s",
            site or "all sites",
            extra={"event": "trigger", "trigger": "http", "site": site, "run": record.id},
        )
        wait = request.args.get("wait", "true").lower() not in ("false", "0", "no")
        try:
            outcome = service.await_run(record, web.wait_limit if wait else 0.0)
        except ShuttingDown:
            fail(503, "shutting down before the sync ran; retry", id=record.id)
        except Exception as exc:  # the run could not happen at all (config, lease)
            fail(503, f"the sync could not run: {exc}", id=record.id)
        if isinstance(outcome, SyncReport):
            return _answer({"id": record.id, **report_dict(outcome, sites)}, service)
        return jsonify(queued(record.id, outcome or service.lease_wait())), 202

    @bp.post("/sites/<site>/<action>")
    def site_command(site: str, action: str) -> Any:
        """hold | resume | rollback | approve one site; JSON body: reason, to (a commit SHA,
        rollback), sha (approve: the commit approved; default the one it waits for), by."""
        if action not in ("hold", "resume", "rollback", "approve"):
            fail(404, f"no such action {action!r}; use hold, resume, rollback or approve")
        authorized()
        known_site(service, site)
        body = request.get_json(silent=True) or {}
        if not isinstance(body, dict):
            fail(400, "the body must be a JSON object")
        by = str(body.get("by") or "http")[:100]
        to = body.get("sha") if action == "approve" else body.get("to")
        done = service.command(
            site,
            action,
            by=f"{by} (http)" if by != "http" else by,
            reason=str(body.get("reason") or "")[:500],
            to=str(to) if to else None,
        )
        return jsonify(done), 200

    return bp


def _override(site: str | None) -> tuple[str | None, str]:
    """POST /sync/<site> with {"override_window": true, "reason": "…", "by": "…"} (or the
    same as query parameters): deploy through a closed deploy window, on record."""
    body = request.get_json(silent=True) if request.is_json else None
    body = body if isinstance(body, dict) else {}
    wanted = body.get("override_window", request.args.get("override_window", ""))
    if str(wanted).lower() not in ("true", "1", "yes"):
        return None, ""
    if site is None:
        fail(400, "override_window needs one site: POST /sync/<site>")
    reason = " ".join(str(body.get("reason") or request.args.get("reason") or "").split())
    if not reason:
        fail(400, 'override_window needs a "reason": why this cannot wait')
    if len(reason) > 500:
        fail(400, "the override reason must be at most 500 characters")
    by = str(body.get("by") or request.args.get("by") or "http")[:100]
    return reason, f"{by} (http)" if by != "http" else by


def queued(run_id: str, waiting: LeaseWait | None) -> dict[str, Any]:
    """202: the sync is queued (or running); while it waits for another replica's Lease, who
    holds it and until when."""
    body: dict[str, Any] = {"id": run_id, "status_url": f"/runs/{run_id}"}
    if waiting is not None:
        body |= {
            "state": "queued",
            "message": waiting.describe(),
            "waiting_for_lease": waiting.as_dict(),
        }
    return body


def _answer(body: dict[str, Any], service: Service) -> tuple[Response, int]:
    """200 when every site asked for is fine; 503 with Retry-After (when GitHub's limit resets)
    when the only failures are GitHub's exhausted rate limit; else 502."""
    if body["ok"]:
        return jsonify(body), 200
    kinds = {r["error_kind"] for r in body["results"] if r["action"] == "error"}
    if kinds != {ErrorKind.RATE_LIMITED.value}:
        return jsonify(body), 502
    response = jsonify(body)
    response.headers["Retry-After"] = str(service.retry_after())
    return response, 503
