"""The JSON reads: runs, health, readiness, metrics, status (behind the read token but /healthz
and /readyz, which the app's read check lets through)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from reconciler import __version__
from reconciler.serve.web import Web, fail


def blueprint(web: Web) -> Blueprint:
    bp = Blueprint("reads", __name__)
    service = web.service

    @bp.get("/runs/<run_id>")
    def run(run_id: str) -> Any:
        status = service.run_status(run_id)
        if status is None:
            fail(404, f"no run {run_id} (only the last few hundred are kept)")
        return jsonify(status)

    @bp.get("/healthz")
    def healthz() -> Any:
        return jsonify({"ok": True, "version": __version__})

    @bp.get("/readyz")
    def readyz() -> Any:
        """Ready or not for anyone (the kubelet's probe); which check fails only with a token."""
        readiness = service.readiness()
        code = 200 if readiness["ready"] else 503
        if not web.access.may_read(
            request.headers.get("Authorization", ""), request.remote_addr, quiet=True
        ):
            return jsonify({"ready": readiness["ready"]}), code
        return jsonify({**readiness, "leader": service.leadership()}), code

    @bp.get("/metrics")
    def metrics() -> Response:
        return Response(service.metrics.render(), mimetype="text/plain; version=0.0.4")

    @bp.get("/status")
    def status() -> Any:
        return jsonify(service.status())

    return bp
