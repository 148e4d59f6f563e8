"""The status page (/) and a site's page (/sites/<site>, JSON with ?format=json), and the
template filters they use."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, jsonify, render_template, request

from reconciler import __version__
from reconciler.serve.web import Web, known_site


def blueprint(web: Web) -> Blueprint:
    bp = Blueprint("pages", __name__)
    service = web.service

    @bp.get("/")
    def index() -> str:
        return render_template(
            "status.html",
            status=service.status(),
            version=__version__,
            trigger_enabled=bool(web.trigger_token),
            now=time.time(),
        )

    @bp.get("/sites/<site>")
    def site_page(site: str) -> Any:
        """One site: what the page says of it, and its deploy history (HTML; JSON when asked)."""
        known_site(service, site)
        view = service.site_history(site)
        if request.args.get("format") == "json":
            return jsonify(view)
        return render_template(
            "site.html",
            view=view,
            version=__version__,
            now=time.time(),
            trigger_enabled=bool(web.trigger_token),
        )

    bp.add_app_template_filter(when, "when")
    bp.add_app_template_filter(ago, "ago")
    bp.add_app_template_filter(lasting, "lasting")
    return bp


def when(value: float | str | None) -> str:
    if not isinstance(value, int | float | str) or value == "":  # None; not there yet
        return "—"
    if isinstance(value, str):
        return value.replace("T", " ").replace("Z", " UTC")
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def ago(value: float | None) -> str:
    if not isinstance(value, int | float):  # None; a site not synced yet has no value
        return ""
    delta = time.time() - value
    text = _span(abs(delta))
    return f"in {text}" if delta < 0 else f"{text} ago"


def lasting(value: float | None) -> str:
    """How long since `value`: "for 12 min" (the page's "why" of a site not in sync)."""
    if not isinstance(value, int | float):
        return ""
    return f"for {_span(max(0.0, time.time() - value))}"


def _span(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
