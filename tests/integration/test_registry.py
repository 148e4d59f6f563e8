"""The image-existence check against a registry on loopback speaking the OCI distribution API."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from reconciler.adapters.registry import DOCKER_HUB, ImageRef, RegistryVerifier
from reconciler.core.model import ImageStatus, VerifyRequest
from reconciler.settings import Settings

DIGEST = "sha256:" + "0" * 64


class Registry:
    """A fault stand-in: manifests by (path, tag); private paths need a bearer token from /token
    (or Basic credentials when `challenge` is "basic"); answers can be made wrong on purpose."""

    def __init__(self) -> None:
        self.manifests: set[tuple[str, str]] = set()
        self.private: set[str] = set()
        self.users = {"robot": "pw"}
        self.heads = 0
        self.token_requests: list[dict[str, Any]] = []
        self.challenge = "bearer"
        self.realm: str | None = None  # default: this server's /token
        self.token_answer: Any = None  # default: {"token": ...}
        self.digest: str | None = DIGEST  # None: no Docker-Content-Digest header
        self.body = b'{"schemaVersion":2}'
        registry = self

        def user_of(header: str) -> str | None:
            if not header.startswith("Basic "):
                return None
            name, _, pw = base64.b64decode(header[6:]).decode().partition(":")
            return name if registry.users.get(name) == pw else None

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def reply(self, status: int, body: bytes = b"", **headers: str) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k.replace("_", "-"), v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path.startswith("/token"):
                    user = user_of(self.headers.get("Authorization", ""))
                    registry.token_requests.append(
                        {"path": self.path, "user": user, "sent": "Authorization" in self.headers}
                    )
                    if "Authorization" in self.headers and user is None:
                        self.reply(401)
                        return
                    answer = registry.token_answer
                    if answer is None:
                        answer = {"token": f"tok-{user or 'anonymous'}"}
                    self.reply(200, json.dumps(answer).encode(), Content_Type="application/json")
                    return
                self.do_HEAD()

            def do_HEAD(self) -> None:
                registry.heads += 1
                parts = self.path.split("/manifests/")
                path, tag = parts[0].removeprefix("/v2/"), parts[1]
                auth = self.headers.get("Authorization", "")
                allowed = auth == "Bearer tok-robot" or user_of(auth) is not None
                if path in registry.private and not allowed:
                    host = self.headers["Host"]
                    realm = registry.realm or f"http://{host}/token"
                    challenge = (
                        'Basic realm="reg"'
                        if registry.challenge == "basic"
                        else f'Bearer realm="{realm}",service="reg",scope="repository:{path}:pull"'
                    )
                    self.reply(401, WWW_Authenticate=challenge)
                    return
                if (path, tag) not in registry.manifests:
                    self.reply(404)
                    return
                headers = {"Docker_Content_Digest": registry.digest} if registry.digest else {}
                self.reply(200, registry.body, **headers)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def registry() -> Iterator[Registry]:
    r = Registry()
    yield r
    r.server.shutdown()


def check(verifier: RegistryVerifier, image: str) -> ImageStatus:
    request = VerifyRequest(image, "acme/blog", "a" * 40, "registry")
    return verifier.verify([request])[request]


def docker_config(tmp_path: Path, auths: dict[str, Any]) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"auths": auths}))
    return path


ROBOT = {"auth": base64.b64encode(b"robot:pw").decode()}


def test_existing_missing_and_cached(registry: Registry) -> None:
    registry.manifests.add(("acme/blog", "v1"))
    v = RegistryVerifier(insecure=[registry.host])
    assert check(v, f"{registry.host}/acme/blog:v1") == ImageStatus(True, digest=DIGEST)
    missing = check(v, f"{registry.host}/acme/blog:v2")
    assert missing.exists is False and "not in the registry" in missing.reason
    heads = registry.heads
    assert check(v, f"{registry.host}/acme/blog:v1") == ImageStatus(True, digest=DIGEST)
    assert registry.heads == heads, "an image seen to exist is not asked for again"


def test_private_repository_with_docker_config_credentials(
    registry: Registry, tmp_path: Path
) -> None:
    registry.private.add("acme/private")
    registry.manifests.add(("acme/private", "v1"))
    image = f"{registry.host}/acme/private:v1"
    anonymous = check(RegistryVerifier(insecure=[registry.host]), image)
    assert anonymous.exists is None and "denied anonymous access" in anonymous.reason
    config = docker_config(tmp_path, {registry.host: ROBOT})
    v = RegistryVerifier(insecure=[registry.host], docker_config=config)
    assert check(v, image).exists is True
    assert registry.token_requests[-1]["user"] == "robot"
    assert "scope=repository%3Aacme%2Fprivate%3Apull" in registry.token_requests[-1]["path"]


def test_basic_challenge_is_answered_with_config_credentials(
    registry: Registry, tmp_path: Path
) -> None:
    registry.challenge = "basic"
    registry.private.add("acme/private")
    registry.manifests.add(("acme/private", "v1"))
    config = docker_config(tmp_path, {registry.host: ROBOT})
    v = RegistryVerifier(insecure=[registry.host], docker_config=config)
    assert check(v, f"{registry.host}/acme/private:v1") == ImageStatus(True, digest=DIGEST)


def test_wrong_and_missing_credentials_give_distinct_messages(
    registry: Registry, tmp_path: Path
) -> None:
    registry.private.add("acme/private")
    registry.manifests.add(("acme/private", "v1"))
    image = f"{registry.host}/acme/private:v1"
    wrong = {"auth": base64.b64encode(b"robot:nope").decode()}
    v = RegistryVerifier(
        insecure=[registry.host], docker_config=docker_config(tmp_path, {registry.host: wrong})
    )
    rejected = check(v, image)
    assert "rejected the credentials of user 'robot'" in rejected.reason
    missing = check(RegistryVerifier(insecure=[registry.host]), image)
    assert "no credentials" in missing.reason and "rejected" not in missing.reason
    assert rejected.kind == missing.kind == "registry_auth"


def test_credentials_go_only_to_the_registry_host_or_a_trusted_token_service(
    registry: Registry, tmp_path: Path
) -> None:
    registry.private.add("acme/private")
    registry.manifests.add(("acme/private", "v1"))
    registry.realm = f"http://localhost:{registry.port}/token"  # another host name
    image = f"{registry.host}/acme/private:v1"
    config = docker_config(tmp_path, {registry.host: ROBOT})
    insecure = [registry.host, f"localhost:{registry.port}"]
    refused = check(RegistryVerifier(insecure=insecure, docker_config=config), image)
    assert refused.exists is None and refused.kind == "registry_auth"
    assert "neither the registry's own host nor a known token service" in refused.reason
    assert registry.token_requests == [], "the credentials were not sent"
    allowed = RegistryVerifier(insecure=insecure, docker_config=config, auth_hosts=["localhost"])
    assert check(allowed, image).exists is True
    assert registry.token_requests[-1]["user"] == "robot"


@pytest.mark.parametrize(
    ("realm", "why"),
    [
        ("http://127.0.0.1:9/token", "plain http"),  # loopback, but not listed as insecure
        ("http://auth.docker.io/token", "plain http"),  # listed, known, but not loopback
        ("ftp://127.0.0.1/token", "scheme is ftp"),
    ],
)
def test_credentials_never_travel_in_clear_text(
    registry: Registry, tmp_path: Path, realm: str, why: str
) -> None:
    registry.private.add("acme/private")
    registry.manifests.add(("acme/private", "v1"))
    registry.realm = realm
    config = docker_config(tmp_path, {registry.host: ROBOT})
    v = RegistryVerifier(insecure=[registry.host, "auth.docker.io"], docker_config=config)
    status = check(v, f"{registry.host}/acme/private:v1")
    assert status.exists is None and status.kind == "registry_auth"
    assert "not sending the credentials" in status.reason and why in status.reason


def test_malformed_auth_entry_fails_only_that_registry(registry: Registry, tmp_path: Path) -> None:
    registry.private.add("acme/private")
    registry.manifests.update({("acme/private", "v1"), ("acme/public", "v1")})
    config = docker_config(tmp_path, {registry.host: {"auth": "%%% not base64"}})
    v = RegistryVerifier(insecure=[registry.host], docker_config=config)
    private = VerifyRequest(f"{registry.host}/acme/private:v1", "acme/a", "a" * 40, "registry")
    public = VerifyRequest(f"{registry.host}/acme/public:v1", "acme/b", "b" * 40, "registry")
    statuses = v.verify([private, public])
    assert statuses[public].exists is True
    bad = statuses[private]
    assert bad.exists is None and bad.kind == "registry_credentials"
    assert '"auth" is not base64 of "user:password"' in bad.reason and "config.json" in bad.reason


@pytest.mark.parametrize("answer", [["a", "list"], "a string", 42, {"no": "token"}])
def test_token_endpoint_answering_no_object_fails_only_that_image(
    registry: Registry, answer: Any
) -> None:
    registry.private.add("acme/private")
    registry.manifests.update({("acme/private", "v1"), ("acme/public", "v1")})
    registry.token_answer = answer
    v = RegistryVerifier(insecure=[registry.host])
    private = VerifyRequest(f"{registry.host}/acme/private:v1", "acme/a", "a" * 40, "registry")
    public = VerifyRequest(f"{registry.host}/acme/public:v1", "acme/b", "b" * 40, "registry")
    statuses = v.verify([private, public])
    assert statuses[public].exists is True
    assert statuses[private].exists is None and "without a token" in statuses[private].reason


def test_insecure_registries_list_ignores_spaces() -> None:
    env = {"RECONCILER_INSECURE_REGISTRIES": "a:1, b:2 ,", "RECONCILER_REGISTRY_AUTH_HOSTS": " x "}
    v = RegistryVerifier.from_settings(Settings.from_env(env))
    assert v.insecure == {"a:1", "b:2"} and v.auth_hosts == ("x",)


def test_digest_from_the_manifest_when_the_registry_sends_none(registry: Registry) -> None:
    registry.manifests.add(("acme/blog", "v1"))
    registry.digest = None
    status = check(RegistryVerifier(insecure=[registry.host]), f"{registry.host}/acme/blog:v1")
    assert status.digest == "sha256:" + hashlib.sha256(registry.body).hexdigest()


def test_malformed_digest_is_refused(registry: Registry) -> None:
    registry.manifests.add(("acme/blog", "v1"))
    registry.digest = "sha256:../../x"
    status = check(RegistryVerifier(insecure=[registry.host]), f"{registry.host}/acme/blog:v1")
    assert status.exists is None and "malformed digest" in status.reason


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
