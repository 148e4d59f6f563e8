"""The token config-repository writes carry: the one the reads use, a GitHub App installation's
too (fetched on loopback from a one-endpoint server: the shared REST subset has no App routes)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from reconciler.adapters.github.client import GitHubClient
from reconciler.settings import GitHubSettings


class _Tokens(BaseHTTPRequestHandler):
    minted: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        assert self.path == "/app/installations/7/access_tokens", self.path
        assert self.headers["Authorization"].startswith("Bearer ")  # the App's JWT
        token = f"ghs_installation{len(self.minted)}"
        self.minted.append(token)
        body = json.dumps({"token": token, "expires_at": "2099-01-01T00:00:00Z"}).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def api() -> Iterator[str]:
    _Tokens.minted = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Tokens)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def test_an_app_installation_token_is_fetched_once_and_reused_until_it_expires(api: str) -> None:
    settings = GitHubSettings(
        api_url=api, app_id="123", app_private_key=_pem(), app_installation_id=7, timeout=5.0
    )
    client = GitHubClient(settings)
    assert client.bearer() == "ghs_installation0"
    assert client.bearer() == "ghs_installation0"
    assert _Tokens.minted == ["ghs_installation0"]


def test_a_token_is_the_bearer_and_none_is_anonymous() -> None:
    assert GitHubClient(GitHubSettings(token="ghp_x")).bearer() == "ghp_x"
    assert GitHubClient(GitHubSettings()).bearer() is None
