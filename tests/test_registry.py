"""The image-existence check against a registry on loopback speaking the OCI distribution API."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from reconciler.adapters.registry import DOCKER_HUB, ImageRef, RegistryVerifier
from reconciler.core.ports import VerifyRequest


class Registry:
    """Manifests by (path, tag); private paths need a bearer token from /token (basic auth)."""

    def __init__(self) -> None:
        self.manifests: set[tuple[str, str]] = set()
        self.private: set[str] = set()
        self.users = {"robot": "pw"}
        self.heads = 0
        self.token_requests: list[dict[str, Any]] = []
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if self.path.startswith("/token"):
                    auth = self.headers.get("Authorization", "")
                    user = None
                    if auth.startswith("Basic "):
                        name, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
                        user = name if registry.users.get(name) == pw else None
                    registry.token_requests.append({"path": self.path, "user": user})
                    body = json.dumps({"token": f"tok-{user or 'anonymous'}"}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                self.send_response(404)
                self.end_headers()

            def do_HEAD(self) -> None:
                registry.heads += 1
                parts = self.path.split("/manifests/")
                path, tag = parts[0].removeprefix("/v2/"), parts[1]
                if (
                    path in registry.private
                    and self.headers.get("Authorization") != "Bearer tok-robot"
                ):
                    self.send_response(401)
                    host = self.headers["Host"]
                    self.send_header(
                        "WWW-Authenticate",
                        f'Bearer realm="http://{host}/token",service="reg",scope="repository:{path}:pull"',
                    )
                    self.end_headers()
                    return
                found = (path, tag) in registry.manifests
                self.send_response(200 if found else 404)
                self.send_header("Docker-Content-Digest", "sha256:" + "0" * 64)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def registry() -> Iterator[Registry]:
    r = Registry()
    yield r
    r.server.shutdown()


def check(verifier: RegistryVerifier, image: str) -> Any:
    return verifier.verify([VerifyRequest(image, "acme/blog", "a" * 40, "registry")])[image]


def test_existing_missing_and_cached(registry: Registry) -> None:
    registry.manifests.add(("acme/blog", "v1"))
    v = RegistryVerifier(insecure=[registry.host])
    assert check(v, f"{registry.host}/acme/blog:v1").exists is True
    missing = check(v, f"{registry.host}/acme/blog:v2")
    assert missing.exists is False and "not in the registry" in missing.reason
    heads = registry.heads
    assert check(v, f"{registry.host}/acme/blog:v1").exists is True
    assert registry.heads == heads, "an image seen to exist is not asked for again"


def test_private_repository_with_docker_config_credentials(
    registry: Registry, tmp_path: Path
) -> None:
    registry.private.add("acme/private")
    registry.manifests.add(("acme/private", "v1"))
    image = f"{registry.host}/acme/private:v1"
    anonymous = check(RegistryVerifier(insecure=[registry.host]), image)
    assert anonymous.exists is None and "denied access (401)" in anonymous.reason
    auth = base64.b64encode(b"robot:pw").decode()
    (tmp_path / "config.json").write_text(json.dumps({"auths": {registry.host: {"auth": auth}}}))
    v = RegistryVerifier(insecure=[registry.host], docker_config=tmp_path / "config.json")
    assert check(v, image).exists is True
    assert registry.token_requests[-1]["user"] == "robot"
    assert "scope=repository%3Aacme%2Fprivate%3Apull" in registry.token_requests[-1]["path"]


def test_unreachable_registry_is_unknown_not_missing() -> None:
    status = check(RegistryVerifier(insecure=["127.0.0.1:9"], timeout=2), "127.0.0.1:9/a/b:v1")
    assert status.exists is None and "unreachable" in status.reason


@pytest.mark.parametrize(
    ("image", "ref"),
    [
        ("gcr.io/p/blog:abc", ImageRef("gcr.io", "p/blog", "abc")),
        ("localhost:5000/blog:1", ImageRef("localhost:5000", "blog", "1")),
        ("nginx", ImageRef(DOCKER_HUB, "library/nginx", "latest")),
        ("acme/blog:2", ImageRef(DOCKER_HUB, "acme/blog", "2")),
        (
            "eu-docker.pkg.dev/p/r/img@sha256:ab",
            ImageRef("eu-docker.pkg.dev", "p/r/img", "sha256:ab"),
        ),
    ],
)
def test_image_ref_parse(image: str, ref: ImageRef) -> None:
    assert ImageRef.parse(image) == ref
