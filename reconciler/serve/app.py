"""The HTTP face of the service (Flask app factory): the blueprints of the triggers, the reads,
the pages and GitHub's hooks, one read check before every GET, one error handler."""

from __future__ import annotations

from flask import Flask, Response, request

from reconciler.serve import pages, reads
from reconciler.serve.auth import Access
from reconciler.serve.service import Service
from reconciler.serve.triggers import http
from reconciler.serve.triggers.messages import GitHubHooks, hooks_blueprint
from reconciler.serve.web import DEFAULT_WAIT, HttpError, Web, answer

__all__ = ["create_app"]


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
    web = Web(service, Access(trigger_token, read_token, reads_open), trigger_token, wait_limit)
    app.config["JSON_SORT_KEYS"] = False
    app.extensions["reconciler"] = service
    app.register_error_handler(HttpError, answer)
    app.before_request(lambda: _reads_need_a_token(web.access))
    app.register_blueprint(http.blueprint(web))
    app.register_blueprint(hooks_blueprint(GitHubHooks(service, webhook_secret)))
    app.register_blueprint(reads.blueprint(web))
    app.register_blueprint(pages.blueprint(web))
    return app


def _reads_need_a_token(access: Access) -> tuple[Response, int] | None:
    """GET endpoints other than /healthz and /readyz need the read (or trigger) token."""
    if request.method not in ("GET", "HEAD") or request.path in ("/healthz", "/readyz"):
        return None
    if access.may_read(request.headers.get("Authorization", ""), request.remote_addr):
        return None
    # The page asks a browser for it (any user name, the token as password).
    page = request.path == "/" or (
        request.path.startswith("/sites/") and request.path.count("/") == 2
    )
    scheme = "Basic" if page else "Bearer"
    return answer(
        HttpError(
            401,
            "this page needs the read token (RECONCILER_READ_TOKEN) or the trigger token",
            headers={"WWW-Authenticate": f'{scheme} realm="reconciler"'},
        )
    )
