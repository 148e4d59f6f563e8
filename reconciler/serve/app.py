"""The HTTP face of the service (Flask app factory): trigger, health, metrics, status page."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, jsonify, render_template, request

from reconciler import __version__
from reconciler.core.engine import SyncReport, SyncRequest
from reconciler.core.errors import CommandError, ErrorKind, ReconcilerError, ShuttingDown
from reconciler.serve.auth import Access
from reconciler.serve.events import MAX_BODY, GitHubHooks
from reconciler.serve.service import LeaseWait, Service
from reconciler.serve.state import report_dict

log = logging.getLogger(__name__)

DEFAULT_WAIT = 300.0


def create_app(
    service: Service,
    *,
    trigger_token: str | None,
    wait_limit: float = DEFAULT_WAIT,
    webhook_secret: str | None = None,
    read_token: str | None = None,
    reads_open: bool = False,
) -> Flask:
    """The WSGI app over a Service; the token guards POST /sync (None disables the trigger),
    the secret verifies GitHub's deliveries to POST /hooks/github (None disables them), and
    reads need the read or trigger token (see Access)."""
    app = Flask(__name__)
    access = Access(trigger_token, read_token, reads_open)
    hooks = GitHubHooks(service, webhook_secret)
    app.config["JSON_SORT_KEYS"] = False
    app.extensions["reconciler"] = service

    def error(status: int, message: str, **extra: Any) -> tuple[Response, int]:
        return jsonify({"error": message, **extra}), status

    def authorized() -> tuple[Response, int] | None:
        if not trigger_token:
            return error(
                403,
                "the HTTP trigger is disabled: set RECONCILER_TRIGGER_TOKEN to enable it",
            )
        if not access.may_trigger(request.headers.get("Authorization", ""), request.remote_addr):
            response, status = error(401, "missing or wrong bearer token")
            response.headers["WWW-Authenticate"] = 'Bearer realm="reconciler"'
            return response, status
        return None

    @app.before_request
    def reads_need_a_token() -> Any:
        """GET endpoints other than /healthz and /readyz need the read (or trigger) token."""
        if request.method not in ("GET", "HEAD") or request.path in ("/healthz", "/readyz"):
            return None
        if access.may_read(request.headers.get("Authorization", ""), request.remote_addr):
            return None
        response, status = error(
            401, "this page needs the read token (RECONCILER_READ_TOKEN) or the trigger token"
        )
        # The page asks a browser for it (any user name, the token as password).
        page = request.path == "/" or (
            request.path.startswith("/sites/") and request.path.count("/") == 2
        )
        scheme = "Basic" if page else "Bearer"
        response.headers["WWW-Authenticate"] = f'{scheme} realm="reconciler"'
        return response, status

    @app.post("/sync")
    @app.post("/sync/<site>")
    def trigger(site: str | None = None) -> Any:
        denied = authorized()
        if denied:
            return denied
        sites = None
        if site is not None:
            if site not in service.site_names():
                return error(404, f'unknown site "{site}"', known=list(service.site_names()))
            sites = frozenset({site})
        try:
            record = service.submit(SyncRequest(sites=sites, trigger="http"))
        except ShuttingDown:
            return error(503, "shutting down; retry against another replica")
        log.info(
            "HTTP trigger for %s",
            site or "all sites",
            extra={"event": "trigger", "trigger": "http", "site": site, "run": record.id},
        )
        wait = request.args.get("wait", "true").lower() not in ("false", "0", "no")
        try:
            outcome = service.await_run(record, wait_limit if wait else 0.0)
        except ShuttingDown:
            return error(503, "shutting down before the sync ran; retry", id=record.id)
        except Exception as exc:  # the run could not happen at all (config, lease)
            return error(503, f"the sync could not run: {exc}", id=record.id)
        if isinstance(outcome, SyncReport):
            return _answer({"id": record.id, **report_dict(outcome, sites)}, service)
        return jsonify(queued(record.id, outcome or service.lease_wait())), 202

    @app.post("/sites/<site>/<action>")
    def site_command(site: str, action: str) -> Any:
        """hold | resume | rollback one site; JSON body: reason, to (a commit SHA), by."""
        if action not in ("hold", "resume", "rollback"):
            return error(404, f"no such action {action!r}; use hold, resume or rollback")
        denied = authorized()
        if denied:
            return denied
        if site not in service.site_names():
            return error(404, f'unknown site "{site}"', known=list(service.site_names()))
        body = request.get_json(silent=True) or {}
        if not isinstance(body, dict):
            return error(400, "the body must be a JSON object")
        by = str(body.get("by") or "http")[:100]
        try:
            done = service.command(
                site,
                action,
                by=f"{by} (http)" if by != "http" else by,
                reason=str(body.get("reason") or "")[:500],
                to=str(body["to"]) if body.get("to") else None,
            )
        except CommandError as exc:
            return error(409, str(exc))
        except ShuttingDown:
            return error(503, "shutting down; retry against another replica")
        except ReconcilerError as exc:
            return error(503, str(exc))
        return jsonify(done), 200

    @app.post("/hooks/github")
    def github_hook() -> Any:
        if (request.content_length or 0) > MAX_BODY:
            return error(413, "payload larger than GitHub's 25 MB")
        status, body = hooks.receive(request.headers, request.get_data(), request.remote_addr)
        return jsonify(body), status

    @app.get("/runs/<run_id>")
    def run(run_id: str) -> Any:
        status = service.run_status(run_id)
        if status is None:
            return error(404, f"no run {run_id} (only the last few hundred are kept)")
        return jsonify(status)

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify({"ok": True, "version": __version__})

    @app.get("/readyz")
    def readyz() -> Any:
        """Ready or not for anyone (the kubelet's probe); which check fails only with a token."""
        readiness = service.readiness()
        code = 200 if readiness["ready"] else 503
        if not access.may_read(
            request.headers.get("Authorization", ""), request.remote_addr, quiet=True
        ):
            return jsonify({"ready": readiness["ready"]}), code
        return jsonify({**readiness, "leader": service.leadership()}), code

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(service.metrics.render(), mimetype="text/plain; version=0.0.4")

    @app.get("/status")
    def status() -> Any:
        return jsonify(service.status())

    @app.get("/")
    def index() -> str:
        return render_template(
            "status.html",
            status=service.status(),
            version=__version__,
            trigger_enabled=bool(trigger_token),
            now=time.time(),
        )

    @app.get("/sites/<site>")
    def site_page(site: str) -> Any:
        """One site: what the page says of it, and its deploy history (HTML; JSON when asked)."""
        if site not in service.site_names():
            return error(404, f'unknown site "{site}"', known=list(service.site_names()))
        view = service.site_history(site)
        if request.args.get("format") == "json":
            return jsonify(view)
        return render_template("site.html", view=view, version=__version__, now=time.time())

    @app.template_filter("when")
    def when(value: float | str | None) -> str:
        if not isinstance(value, int | float | str) or value == "":  # None; not there yet
            return "—"
        if isinstance(value, str):
            return value.replace("T", " ").replace("Z", " UTC")
        return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")

    @app.template_filter("ago")
    def ago(value: float | None) -> str:
        if not isinstance(value, int | float):  # None; a site not synced yet has no value
            return ""
        delta = time.time() - value
        text = _span(abs(delta))
        return f"in {text}" if delta < 0 else f"{text} ago"

    @app.template_filter("lasting")
    def lasting(value: float | None) -> str:
        """How long since `value`: "for 12 min" (the page's "why" of a site not in sync)."""
        if not isinstance(value, int | float):
            return ""
        return f"for {_span(max(0.0, time.time() - value))}"

    return app


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


def _span(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
