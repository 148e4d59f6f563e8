"""Container registries: does a target image exist? (OCI distribution API, HEAD on the manifest)."""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

import requests

from reconciler.core.fanout import bounded_map
from reconciler.core.model import ImageStatus
from reconciler.core.ports import ImageVerifier, VerifyRequest
from reconciler.settings import Settings

log = logging.getLogger(__name__)

MANIFEST_TYPES = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)
DOCKER_HUB = "registry-1.docker.io"
GOOGLE_REGISTRY = re.compile(r"(^|\.)gcr\.io$|-docker\.pkg\.dev$")
METADATA_TOKEN = "/computeMetadata/v1/instance/service-accounts/default/token"


@dataclass(frozen=True, slots=True)
class ImageRef:
    """An image reference split into registry host, repository path and tag."""

    registry: str
    path: str
    tag: str

    @classmethod
    def parse(cls, image: str) -> ImageRef:
        name, _, digest = image.partition("@")
        head, sep, last = name.rpartition("/")
        last, _, tag = last.partition(":")
        tag = digest or tag or "latest"
        name = f"{head}{sep}{last}"
        first, _, rest = name.partition("/")
        if rest and ("." in first or ":" in first or first == "localhost"):
            return cls(first, rest, tag)
        path = name if "/" in name else f"library/{name}"
        return cls(DOCKER_HUB, path, tag)


class RegistryVerifier:
    """HEADs target images' manifests: anonymous, docker config.json, or GKE's metadata token."""

    def __init__(
        self,
        *,
        insecure: Collection[str] = (),
        docker_config: Path | None = None,
        metadata_host: str | None = None,
        timeout: float = 10.0,
        concurrency: int = 8,
    ) -> None:
        self.insecure = set(insecure)
        self.timeout = timeout
        self.concurrency = concurrency
        self.metadata_host = metadata_host
        self._basic = _docker_credentials(docker_config)
        self._tokens: dict[tuple[str, str], str] = {}
        self._known: set[str] = set()  # images seen to exist; a sha-tagged image does not vanish
        self._lock = threading.Lock()
        self._session = requests.Session()
        self._session.headers["User-Agent"] = "reconciler"

    @classmethod
    def from_settings(cls, settings: Settings) -> RegistryVerifier:
        """Insecure registries, docker config.json and the metadata server from the settings."""
        docker_dir = settings.docker_config
        return cls(
            insecure=settings.insecure_registries,
            docker_config=Path(docker_dir) / "config.json" if docker_dir else None,
            metadata_host=settings.metadata_host,
        )

    def verify(self, requests_: Collection[VerifyRequest]) -> Mapping[str, ImageStatus]:
        images = sorted({r.image for r in requests_ if r.mode == "registry"})
        statuses = bounded_map(self.check, images, limit=self.concurrency, name="registry")
        return dict(zip(images, statuses, strict=True))

    def check(self, image: str) -> ImageStatus:
        with self._lock:
            if image in self._known:
                return ImageStatus(True)
        try:
            ref = ImageRef.parse(image)
        except ValueError:
            return ImageStatus(None, f"cannot parse image reference {image!r}")
        scheme = "http" if ref.registry in self.insecure else "https"
        url = f"{scheme}://{ref.registry}/v2/{ref.path}/manifests/{ref.tag}"
        try:
            status = self._head(url, ref)
        except requests.RequestException as exc:
            return ImageStatus(None, f"registry {ref.registry} unreachable ({type(exc).__name__})")
        if status == 200:
            with self._lock:
                self._known.add(image)
            return ImageStatus(True)
        if status == 404:
            return ImageStatus(
                False, f"image {image} is not in the registry (build not pushed yet?)"
            )
        if status in (401, 403):
            return ImageStatus(
                None,
                f"registry {ref.registry} denied access ({status}); give the reconciler pull "
                'access, or set verify = "none" for this site',
            )
        return ImageStatus(None, f"registry {ref.registry} answered {status}")

    def _head(self, url: str, ref: ImageRef) -> int:
        headers = {"Accept": MANIFEST_TYPES}
        key = (ref.registry, ref.path)
        with self._lock:
            token = self._tokens.get(key)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        r = self._session.head(url, headers=headers, timeout=self.timeout, allow_redirects=True)
        if r.status_code != 401:
            return r.status_code
        challenge = r.headers.get("www-authenticate", "")
        token = self._token(challenge, ref)
        if token is None:
            return 401
        with self._lock:
            self._tokens[key] = token
        headers["Authorization"] = f"Bearer {token}"
        r = self._session.head(url, headers=headers, timeout=self.timeout, allow_redirects=True)
        return r.status_code

    def _token(self, challenge: str, ref: ImageRef) -> str | None:
        """Answer a `Bearer realm=...` challenge, with credentials when we have any."""
        if not challenge.lower().startswith("bearer "):
            return None
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        realm = params.pop("realm", None)
        if not realm:
            return None
        params.setdefault("scope", f"repository:{ref.path}:pull")
        auth = self._credentials(ref.registry)
        r = self._session.get(realm, params=params, auth=auth, timeout=self.timeout)
        if r.status_code != 200:
            return None
        body = r.json()
        token = body.get("token") or body.get("access_token")
        return str(token) if token else None

    def _credentials(self, registry: str) -> tuple[str, str] | None:
        if registry in self._basic:
            return self._basic[registry]
        if self.metadata_host and GOOGLE_REGISTRY.search(registry):
            token = self._metadata_token()
            if token:
                return ("oauth2accesstoken", token)
        return None

    def _metadata_token(self) -> str | None:
        """The pod's Google access token (Workload Identity) from the metadata server."""
        try:
            r = self._session.get(
                f"http://{self.metadata_host}{METADATA_TOKEN}",
                headers={"Metadata-Flavor": "Google"},
                timeout=3,
            )
        except requests.RequestException as exc:
            log.warning("no Google access token from the metadata server: %s", exc)
            return None
        return str(r.json().get("access_token")) if r.status_code == 200 else None


def _docker_credentials(path: Path | None) -> dict[str, tuple[str, str]]:
    """Basic credentials per registry from a docker config.json (`auths.<host>.auth`)."""
    if path is None or not path.is_file():
        return {}
    try:
        auths = json.loads(path.read_text(encoding="utf-8")).get("auths", {})
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable docker config %s: %s", path, exc)
        return {}
    out: dict[str, tuple[str, str]] = {}
    for key, entry in auths.items():
        encoded = entry.get("auth") if isinstance(entry, dict) else None
        if not encoded:
            continue
        user, _, password = base64.b64decode(encoded).decode().partition(":")
        host = re.sub(r"^https?://", "", key).split("/")[0]
        out["registry-1.docker.io" if host == "index.docker.io" else host] = (user, password)
    return out


class Verifiers:
    """Dispatches each request to the verifier of its mode ("registry", "checks")."""

    def __init__(self, by_mode: Mapping[str, ImageVerifier]) -> None:
        self.by_mode = dict(by_mode)

    def verify(self, requests_: Collection[VerifyRequest]) -> Mapping[str, ImageStatus]:
        out: dict[str, ImageStatus] = {}
        for mode, verifier in self.by_mode.items():
            mine = [r for r in requests_ if r.mode == mode]
            if mine:
                out.update(verifier.verify(mine))
        for r in requests_:
            out.setdefault(r.image, ImageStatus(None, f"no verifier for verify = {r.mode!r}"))
        return out
