"""GitHubHooks in-process (Flask test client, fake ports): content types, disabled, limits."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path
from typing import Any

from flask.testing import FlaskClient

from reconciler.serve.app import create_app
from reconciler.serve.triggers.messages import GitHubHooks
from testkit import webhooks as w
from tests.unit.test_service import service

SECRET = "s"


def _post(client: FlaskClient, body: bytes, event: str, ctype: str, delivery: str = "d") -> Any:
    headers = {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": w.sign(SECRET, body),
        "Content-Type": ctype,
    }
    return client.post("/hooks/github", data=body, headers=headers)


def test_form_encoded_deliveries_are_read_like_json(tmp_path: Path) -> None:
    svc, _, _ = service(tmp_path)
    client = create_app(svc, trigger_token=None, webhook_secret=SECRET).test_client()
    payload = w.push("acme/blog", "main", "c" * 40, "d" * 40)
    body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
    answer = _post(client, body, "push", "application/x-www-form-urlencoded")
    assert answer.status_code == 202
    assert answer.json["sites"] == ["blog"] and answer.json["outcome"] == "sync"
    bad = _post(client, b"{nope", "push", "application/json", delivery="e")
    assert bad.status_code == 400 and bad.json["outcome"] == "malformed"
    svc.shutdown(5)


def test_delivery_memory_is_bounded(tmp_path: Path) -> None:
    svc, _, _ = service(tmp_path)
    hooks = GitHubHooks(svc, SECRET, remember=2)
    body = json.dumps(w.example("ping")).encode()

    def ping(delivery: str) -> str:
        headers = {
            "X-GitHub-Event": "ping",
            "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": w.sign(SECRET, body),
        }
        return str(hooks.receive(headers, body, None)[1]["outcome"])

    assert [ping(d) for d in ("a", "b", "a", "c", "b")] == [
        "ping",
        "ping",
        "duplicate",
        "ping",
        "ping",  # forgotten: only the last two are kept
    ]
    svc.shutdown(5)
