"""CNCF Distribution's registry on loopback (no auth, htpasswd, or token auth), a token server
for it, and an image pusher speaking the OCI distribution API.

The registry binary is built from the Go module proxy by tools/build-registry.sh into a cache
outside the repo (``$RECONCILER_REGISTRY_BIN`` names a prebuilt one instead).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from testkit.processes import die_with_parent, free_port, tail

REPO_ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO_ROOT / "tools" / "build-registry.sh"
ENV_BIN = "RECONCILER_REGISTRY_BIN"
USER, PASSWORD = "robot", "robot-password"
# bcrypt (the only htpasswd format Distribution reads) of PASSWORD, cost 5
HTPASSWD = f"{USER}:$2a$05$m0EuBx/yNJ/3MwQUFHwENuGa8XIE/3S.hlBL1vgz3JiwO59UFDd0O\n"
SERVICE = "test-registry"
ISSUER = "testkit-token-server"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"


class RegistryUnavailable(Exception):
    """No registry binary here (no Go toolchain and no $RECONCILER_REGISTRY_BIN)."""


def find_registry(*, build: bool = True) -> Path:
    """The registry binary: $RECONCILER_REGISTRY_BIN, else tools/build-registry.sh's (cached)."""
    explicit = os.environ.get(ENV_BIN)
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise RegistryUnavailable(f"{ENV_BIN}={explicit} is not executable")
        return Path(explicit)
    if not build or shutil.which("go") is None:
        raise RegistryUnavailable("the registry cannot be built: 'go' is not on PATH")
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True, check=False
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines or not os.access(lines[-1], os.X_OK):
        raise RuntimeError(f"{BUILD_SCRIPT} failed (exit {proc.returncode})")
    return Path(lines[-1])


def _b64url(obj: Mapping[str, Any]) -> str:
    data = json.dumps(obj, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class TokenServer:
    """Issues the JWTs Distribution's `auth.token` accepts, signed by a key whose cert is the
    registry's root bundle; `robot` gets pull+push, anonymous callers pull on `public` repos."""

    def __init__(self, workdir: Path) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.bundle = workdir / "token-ca.pem"
        self.bundle.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self.public: set[str] = set()
        self.requests: list[dict[str, Any]] = []  # what each caller sent (user or None)
        self.answer: Any = None  # when set, answered as JSON instead of a token
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                user = server.user_of(self.headers.get("Authorization", ""))
                server.requests.append(
                    {"user": user, "authorization": "Authorization" in self.headers, **query}
                )
                if user is False:
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = server.answer if server.answer is not None else server.token(user, query)
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.realm = f"http://{self.host}/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @staticmethod
    def user_of(header: str) -> str | bool | None:
        """The Basic-authenticated user, None for anonymous, False for wrong credentials."""
        if not header.startswith("Basic "):
            return None
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        return user if (user, password) == (USER, PASSWORD) else False

    def token(self, user: str | bool | None, query: Mapping[str, list[str]]) -> dict[str, Any]:
        access = []
        for scope in query.get("scope", []):
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if user == USER:
                granted = actions.split(",")
            else:
                granted = ["pull"] if name in self.public and "pull" in actions else []
            access.append({"type": kind, "name": name, "actions": granted})
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": user or "",
            "aud": query.get("service", [SERVICE])[0],
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        token = self.sign(claims)
        return {"token": token, "access_token": token, "expires_in": 300}

    def sign(self, claims: Mapping[str, Any]) -> str:
        """A compact ES256 JWS whose x5c header carries the bundle's certificate."""
        der = self.cert.public_bytes(serialization.Encoding.DER)
        header = {"typ": "JWT", "alg": "ES256", "x5c": [base64.b64encode(der).decode()]}
        signing_input = f"{_b64url(header)}.{_b64url(claims)}".encode()
        r, s = decode_dss_signature(self.key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return (
            f"{signing_input.decode()}.{base64.urlsafe_b64encode(signature).decode().rstrip('=')}"
        )

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Pushed:
    """An image pushed to the registry: its reference and manifest digest."""

    image: str
    digest: str
    media_type: str
    size: int


@dataclass
class DistributionRegistry:
    """One `registry serve` process on loopback in one auth mode: none, htpasswd or token."""

    binary: Path
    mode: str = "none"
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="registry-")))
    proc: subprocess.Popen[bytes] | None = None
    tokens: TokenServer | None = None
    host: str = ""

    def start(self) -> DistributionRegistry:
        port = free_port()
        self.host = f"127.0.0.1:{port}"
        auth: dict[str, Any] = {}
        if self.mode == "htpasswd":
            (self.workdir / "htpasswd").write_text(HTPASSWD)
            auth = {"htpasswd": {"realm": "test", "path": str(self.workdir / "htpasswd")}}
        elif self.mode == "token":
            self.tokens = TokenServer(self.workdir)
            auth = {
                "token": {
                    "realm": self.tokens.realm,
                    "service": SERVICE,
                    "issuer": ISSUER,
                    "rootcertbundle": str(self.tokens.bundle),
                }
            }
        config = {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {"inmemory": {}, "delete": {"enabled": True}},
            "http": {"addr": self.host, "secret": uuid.uuid4().hex},
            **({"auth": auth} if auth else {}),
        }
        path = self.workdir / "config.yml"
        path.write_text(json.dumps(config))  # JSON is YAML
        log = (self.workdir / "registry.log").open("wb")
        self.proc = subprocess.Popen(
            [str(self.binary), "serve", str(path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lambda: die_with_parent(os.getppid()),  # noqa: PLW1509
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"registry exited: {tail(self.workdir / 'registry.log')}")
            try:
                requests.get(f"http://{self.host}/v2/", timeout=1)
                return self
            except requests.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"registry did not listen: {tail(self.workdir / 'registry.log')}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.tokens is not None:
            self.tokens.close()
        shutil.rmtree(self.workdir, ignore_errors=True)

    # -- pushing (as the admin user, whatever the mode) -----------------------------------------

    def _request(self, method: str, url: str, name: str, **kw: Any) -> requests.Response:
        if not url.startswith("http"):
            url = f"http://{self.host}{url}"
        headers = dict(kw.pop("headers", {}))
        if self.mode == "htpasswd":
            kw["auth"] = (USER, PASSWORD)
        elif self.mode == "token":
            assert self.tokens is not None
            scope = f"repository:{name}:pull,push"
            token = self.tokens.token(USER, {"scope": [scope], "service": [SERVICE]})["token"]
            headers["Authorization"] = f"Bearer {token}"
        r = requests.request(method, url, headers=headers, timeout=30, **kw)
        if r.status_code >= 400:
            raise RuntimeError(f"{method} {url}: {r.status_code} {r.text[:300]}")
        return r

    def push_blob(self, name: str, data: bytes) -> str:
        digest = _digest(data)
        r = self._request("POST", f"/v2/{name}/blobs/uploads/", name)
        location = r.headers["Location"]
        if location.startswith("/"):
            location = f"http://{self.host}{location}"
        sep = "&" if "?" in location else "?"
        self._request(
            "PUT",
            f"{location}{sep}digest={digest}",
            name,
            data=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        return digest

    def push_manifest(self, name: str, ref: str, manifest: dict[str, Any]) -> tuple[str, int]:
        data = json.dumps(manifest, separators=(",", ":")).encode()
        r = self._request(
            "PUT",
            f"/v2/{name}/manifests/{ref}",
            name,
            data=data,
            headers={"Content-Type": manifest["mediaType"]},
        )
        digest = r.headers["Docker-Content-Digest"]
        assert digest == _digest(data), (digest, _digest(data))
        return digest, len(data)

    def push_image(self, name: str, tag: str, *, arch: str = "amd64") -> Pushed:
        """A single-platform OCI image: a config blob, one layer, a manifest tagged `tag`."""
        config = json.dumps(
            {"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}
        ).encode()
        layer = f"layer of {name}:{tag} {arch} {uuid.uuid4().hex}".encode()
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": OCI_CONFIG,
                "digest": self.push_blob(name, config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": self.push_blob(name, layer),
                    "size": len(layer),
                }
            ],
        }
        digest, size = self.push_manifest(name, tag, manifest)
        return Pushed(f"{self.host}/{name}:{tag}", digest, OCI_MANIFEST, size)

    def push_index(self, name: str, tag: str) -> Pushed:
        """A multi-platform image: two manifests (by digest) and an OCI index tagged `tag`."""
        manifests = []
        for arch in ("amd64", "arm64"):
            one = self.push_image(name, f"{tag}-{arch}", arch=arch)
            manifests.append(
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": one.digest,
                    "size": one.size,
                    "platform": {"architecture": arch, "os": "linux"},
                }
            )
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
        digest, size = self.push_manifest(name, tag, index)
        return Pushed(f"{self.host}/{name}:{tag}", digest, OCI_INDEX, size)
