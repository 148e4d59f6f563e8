"""Container registries: does a target image exist, and what is its digest? (OCI distribution)"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import hashlib
import ipaddress
import json
import logging
import re
import threading
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import requests

from reconciler.core.errors import ErrorKind, RegistryError
from reconciler.core.model import ImageStatus
from reconciler.core.ports import ImageVerifier, VerifyRequest
from reconciler.settings import Settings
from reconciler.sync.fanout import bounded_map

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
# Token services of the big registries, which live on another host than the registry itself.
KNOWN_TOKEN_SERVICES = (
    "auth.docker.io",
    "gcr.io",
    "*.gcr.io",
    "*.pkg.dev",
    "ghcr.io",
    "quay.io",
    "gitlab.com",
    "*.azurecr.io",
)
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


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


@dataclass(frozen=True, slots=True)
class Login:
    """Credentials for one registry and where they came from (for messages, never the secret)."""

    user: str
    password: str
    source: str

    def basic(self) -> str:
        return "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()


class RegistryVerifier:
    """HEADs target images' manifests: anonymous, docker config.json, or GKE's metadata token.

    Credentials go only over https (or plain http to a loopback host:port listed as insecure),
    and only to the registry's own host, a known token service or a host in `auth_hosts`.
    """

    def __init__(
        self,
        *,
        insecure: Collection[str] = (),
        docker_config: Path | None = None,
        metadata_host: str | None = None,
        auth_hosts: Collection[str] = (),
        timeout: float = 10.0,
        concurrency: int = 8,
    ) -> None:
        self.insecure = set(insecure)
        self.auth_hosts = tuple(auth_hosts)
        self.timeout = timeout
        self.concurrency = concurrency
        self.metadata_host = metadata_host
        self.docker_config = docker_config
        self._logins = _docker_credentials(docker_config)
        self._auth: dict[tuple[str, str], str] = {}  # (registry, path) -> Authorization header
        self._known: dict[str, str | None] = {}  # image -> digest; a verified image is kept
        self._lock = threading.Lock()
        self._session = requests.Session()
        self._session.headers["User-Agent"] = "reconciler"

    @classmethod
    def from_settings(cls, settings: Settings) -> RegistryVerifier:
        """Insecure registries, credential hosts, config.json and the metadata server."""
        docker_dir = settings.docker_config
        return cls(
            insecure=settings.insecure_registries,
            auth_hosts=settings.registry_auth_hosts,
            docker_config=Path(docker_dir) / "config.json" if docker_dir else None,
            metadata_host=settings.metadata_host,
        )

    def verify(self, requests_: Collection[VerifyRequest]) -> Mapping[VerifyRequest, ImageStatus]:
        wanted = [r for r in requests_ if r.mode == "registry"]
        images = sorted({r.image for r in wanted})
        statuses = bounded_map(self.check, images, limit=self.concurrency, name="registry")
        found = dict(zip(images, statuses, strict=True))
        return {r: found[r.image] for r in wanted}

    def check(self, image: str) -> ImageStatus:
        """One image's status; every problem becomes this image's status, never an exception."""
        with self._lock:
            if image in self._known:
                return ImageStatus(True, digest=self._known[image])
        ref = ImageRef.parse(image)
        try:
            status, digest = self._manifest(ref)
        except requests.RequestException as exc:
            return ImageStatus(
                None,
                f"registry {ref.registry} unreachable ({type(exc).__name__})",
                kind=ErrorKind.REGISTRY_UNREACHABLE,
            )
        except RegistryError as exc:
            return ImageStatus(None, str(exc), kind=exc.kind)
        if status == 200:
            with self._lock:
                self._known[image] = digest
            return ImageStatus(True, digest=digest)
        if status == 404:
            return ImageStatus(
                False, f"image {image} is not in the registry (build not pushed yet?)"
            )
        return ImageStatus(
            None, f"registry {ref.registry} answered {status}", kind=ErrorKind.REGISTRY
        )

    # -- the manifest ---------------------------------------------------------------------------

    def _manifest(self, ref: ImageRef) -> tuple[int, str | None]:
        """HEAD the manifest, authenticating when challenged: (status, digest when found)."""
        scheme = "http" if ref.registry in self.insecure else "https"
        url = f"{scheme}://{ref.registry}/v2/{ref.path}/manifests/{ref.tag}"
        key = (ref.registry, ref.path)
        with self._lock:
            auth = self._auth.get(key)
        r = self._send("HEAD", url, auth)
        if r.status_code == 401:
            auth, login = self._authorize(r.headers.get("www-authenticate", ""), ref, url)
            r = self._send("HEAD", url, auth)
            if r.status_code in (401, 403):
                raise RegistryError(
                    _denied(ref, r.status_code, login, self.docker_config),
                    kind=ErrorKind.REGISTRY_AUTH,
                )
            with self._lock:
                self._auth[key] = auth
        if r.status_code != 200:
            return r.status_code, None
        return 200, self._digest(r, url, auth, ref)

    def _send(self, method: str, url: str, auth: str | None) -> requests.Response:
        headers = {"Accept": MANIFEST_TYPES}
        if auth:
            headers["Authorization"] = auth
        return self._session.request(
            method, url, headers=headers, timeout=self.timeout, allow_redirects=True
        )

    def _digest(self, r: requests.Response, url: str, auth: str | None, ref: ImageRef) -> str:
        """The registry's Docker-Content-Digest, else the sha256 of the manifest it serves."""
        digest = r.headers.get("docker-content-digest")
        if digest is None:
            got = self._send("GET", url, auth)
            if got.status_code != 200:
                raise RegistryError(
                    f"registry {ref.registry} found the manifest of {ref.path}:{ref.tag} on HEAD "
                    f"but answered {got.status_code} on GET",
                    kind=ErrorKind.REGISTRY,
                )
            digest = got.headers.get("docker-content-digest") or (
                "sha256:" + hashlib.sha256(got.content).hexdigest()
            )
        if not DIGEST.match(digest):
            raise RegistryError(
                f"registry {ref.registry} answered a malformed digest {digest[:80]!r} "
                f"for {ref.path}:{ref.tag}",
                kind=ErrorKind.REGISTRY,
            )
        return digest

    # -- authentication -------------------------------------------------------------------------

    def _authorize(self, challenge: str, ref: ImageRef, url: str) -> tuple[str, Login | None]:
        """Answer a 401's challenge: an Authorization header, and the login it used (if any)."""
        scheme, _, rest = challenge.strip().partition(" ")
        params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
        login = self._login(ref.registry)
        if scheme.lower() == "basic":
            if login is None:
                raise RegistryError(
                    f"registry {ref.registry} asks for a user and password (Basic auth) and "
                    f"there are none for it: {_where_logins(self.docker_config)}",
                    kind=ErrorKind.REGISTRY_AUTH,
                )
            self._may_send(url, ref, login)
            return login.basic(), login
        if scheme.lower() != "bearer" or not params.get("realm"):
            raise RegistryError(
                f"registry {ref.registry} asks for an authentication this reconciler does not "
                f"speak ({challenge[:80]!r})",
                kind=ErrorKind.REGISTRY_AUTH,
            )
        realm = params.pop("realm")
        params.setdefault("scope", f"repository:{ref.path}:pull")
        if login is not None:
            self._may_send(realm, ref, login)
        r = self._session.get(
            realm,
            params=params,
            headers={"Authorization": login.basic()} if login else {},
            timeout=self.timeout,
        )
        if r.status_code in (401, 403) and login is not None:
            raise RegistryError(_rejected(ref, login), kind=ErrorKind.REGISTRY_AUTH)
        if r.status_code != 200:
            raise RegistryError(
                f"the token service of {ref.registry} ({_origin(realm)}) answered {r.status_code}",
                kind=ErrorKind.REGISTRY_AUTH,
            )
        try:
            body = r.json()
        except ValueError:
            body = None
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise RegistryError(
                f"the token service of {ref.registry} ({_origin(realm)}) answered without a "
                'token (a JSON object with "token" was expected)',
                kind=ErrorKind.REGISTRY,
            )
        return f"Bearer {token}", login

    def _may_send(self, url: str, ref: ImageRef, login: Login) -> None:
        """Refuse to send `login` to `url` unless it is https (or a listed loopback) and trusted."""
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        own = urlsplit(f"//{ref.registry}").hostname or ""
        why = ""
        if parts.scheme == "http":
            if not (parts.netloc in self.insecure and _loopback(host)):
                why = "it is plain http (credentials go only over https)"
        elif parts.scheme != "https":
            why = f"its scheme is {parts.scheme or 'missing'}"
        if not why and host != own.lower() and not self._trusted(host):
            why = (
                f"{host} is neither the registry's own host nor a known token service; "
                "add it to RECONCILER_REGISTRY_AUTH_HOSTS if it is the registry's"
            )
        if why:
            raise RegistryError(
                f"not sending the credentials for {ref.registry} ({login.source}) to "
                f"{_origin(url)}: {why}",
                kind=ErrorKind.REGISTRY_AUTH,
            )

    def _trusted(self, host: str) -> bool:
        patterns = (*KNOWN_TOKEN_SERVICES, *self.auth_hosts)
        return any(fnmatch.fnmatchcase(host, p.lower()) for p in patterns)

    def _login(self, registry: str) -> Login | None:
        entry = self._logins.get(registry)
        if isinstance(entry, RegistryError):
            raise entry
        if entry is not None:
            return entry
        if self.metadata_host and GOOGLE_REGISTRY.search(registry):
            token = self._metadata_token()
            if token:
                return Login("oauth2accesstoken", token, "the pod's Google access token")
        return None

    def _metadata_token(self) -> str | None:
        """The pod's Google access token (Workload Identity) from the metadata server."""
        try:
            r = self._session.get(
                f"http://{self.metadata_host}{METADATA_TOKEN}",
                headers={"Metadata-Flavor": "Google"},
                timeout=3,
            )
            body = r.json() if r.status_code == 200 else None
        except (requests.RequestException, ValueError) as exc:
            log.warning("no Google access token from the metadata server: %s", exc)
            return None
        token = body.get("access_token") if isinstance(body, dict) else None
        return token if isinstance(token, str) and token else None


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _where_logins(config: Path | None) -> str:
    if config is None:
        return "DOCKER_CONFIG is not set (it names the directory of a docker config.json)"
    return f"{config} has no auths entry for it"


def _rejected(ref: ImageRef, login: Login) -> str:
    return (
        f"registry {ref.registry} rejected the credentials of user {login.user!r} from "
        f"{login.source} (wrong user or password?)"
    )


def _denied(ref: ImageRef, status: int, login: Login | None, config: Path | None) -> str:
    """Why a registry still refuses after authenticating: wrong, too weak or missing credentials."""
    if login is None:
        return (
            f"registry {ref.registry} denied anonymous access to {ref.path} ({status}) and there "
            f"are no credentials for it ({_where_logins(config)}); add them, or set "
            'verify = "none" for this site'
        )
    if status == 401:
        return _rejected(ref, login)
    return (
        f"registry {ref.registry} accepted user {login.user!r} from {login.source} but denied "
        f'pull access to {ref.path} ({status}); grant it, or set verify = "none" for this site'
    )


def _docker_credentials(path: Path | None) -> dict[str, Login | RegistryError]:
    """Credentials per registry from a docker config.json (`auths.<host>`); a bad entry is kept
    as the error it is, so only the images of that registry fail."""
    if path is None or not path.is_file():
        return {}
    try:
        auths = json.loads(path.read_text(encoding="utf-8")).get("auths", {})
    except (OSError, ValueError, AttributeError) as exc:
        log.warning("ignoring unreadable docker config %s: %s", path, exc)
        return {}
    out: dict[str, Login | RegistryError] = {}
    for key, entry in auths.items() if isinstance(auths, dict) else ():
        host = re.sub(r"^https?://", "", key).split("/")[0]
        host = DOCKER_HUB if host == "index.docker.io" else host
        try:
            login = _login_of(entry, f"{path} auths.{key}")
        except RegistryError as exc:
            out[host] = exc
            continue
        if login is not None:
            out[host] = login
    return out


def _login_of(entry: object, source: str) -> Login | None:
    if not isinstance(entry, dict):
        raise RegistryError(f"{source} is not an object", kind=ErrorKind.REGISTRY_CREDENTIALS)
    encoded = entry.get("auth")
    if not encoded:
        user, password = entry.get("username"), entry.get("password")
        if isinstance(user, str) and isinstance(password, str) and user:
            return Login(user, password, source)
        return None
    try:
        if not isinstance(encoded, str):
            raise ValueError
        user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        if not sep or not user:
            raise ValueError
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise RegistryError(
            f'{source}: "auth" is not base64 of "user:password"',
            kind=ErrorKind.REGISTRY_CREDENTIALS,
        ) from None
    return Login(user, password, source)


class Verifiers:
    """Dispatches each request to the verifier of its mode ("registry", "checks")."""

    def __init__(self, by_mode: Mapping[str, ImageVerifier]) -> None:
        self.by_mode = dict(by_mode)

    def verify(self, requests_: Collection[VerifyRequest]) -> Mapping[VerifyRequest, ImageStatus]:
        out: dict[VerifyRequest, ImageStatus] = {}
        for mode, verifier in self.by_mode.items():
            mine = [r for r in requests_ if r.mode == mode]
            if mine:
                out.update(verifier.verify(mine))
        for r in requests_:
            out.setdefault(r, ImageStatus(None, f"no verifier for verify = {r.mode!r}"))
        return out
