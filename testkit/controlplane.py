"""A real, local Kubernetes control plane (etcd + kube-apiserver) for tests and benchmarks.

envtest-style: only etcd and kube-apiserver run (no kubelet, scheduler or controllers), on
loopback ports, with RBAC authorization, a generated CA, an admin client certificate
(CN=admin, O=system:masters) and ServiceAccount token signing, so TokenRequest tokens work.

    with ControlPlane() as cp:
        api = cp.api_client()            # admin kubernetes.client.ApiClient
        token = serviceaccount_token(cp, "ns", "reconciler")
        kubeconfig_for_token(cp, token, tmp / "sa.kubeconfig")

Binaries come from ``$RECONCILER_CONTROLPLANE_BIN`` (a dir with ``kube-apiserver`` and
``etcd``), else ``$KUBEBUILDER_ASSETS``, else ``tools/build-controlplane.sh`` builds them from
the Go module proxy into a cache dir outside the repo (the first build takes minutes).

Child processes run in their own sessions and get ``PR_SET_PDEATHSIG=SIGKILL``, so they die
with the Python process that started them (start the control plane from the main thread or
a thread that outlives it); ``stop()`` also runs at interpreter exit and on SIGTERM.
"""

from __future__ import annotations

import atexit
import base64
import collections
import contextlib
import datetime
import ipaddress
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import kubernetes
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from testkit.processes import die_with_parent, free_port, tail

__all__ = [
    "ControlPlane",
    "ControlPlaneError",
    "ControlPlaneUnavailable",
    "api_client_from_kubeconfig",
    "audit_events",
    "audit_verb_counts",
    "ensure_service_account",
    "find_binaries",
    "impersonating_api_client",
    "kubeconfig_for_token",
    "pinned_versions",
    "serviceaccount_token",
    "token_api_client",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = REPO_ROOT / "tools" / "build-controlplane.sh"
_GO_MODULES = REPO_ROOT / "tools" / "controlplane"

SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"

# Every request at Metadata level. RequestReceived is kept on purpose: in blocking mode it is
# written before the request is handled, so every request the client has seen answered is
# already in the log (ResponseComplete may trail the response by a hair). Count unique
# auditIDs (see audit_verb_counts), not lines.
AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
rules:
- level: Metadata
"""


class ControlPlaneError(RuntimeError):
    """The control plane failed to start (the message carries the log tails)."""


class ControlPlaneUnavailable(ControlPlaneError):
    """The binaries could not be found or built. ``go_missing``: no Go toolchain to build."""

    def __init__(self, message: str, *, go_missing: bool = False) -> None:
        super().__init__(message)
        self.go_missing = go_missing


# --------------------------------------------------------------------------------------------
# Binaries


def _has_binaries(d: Path) -> bool:
    return all(os.access(d / name, os.X_OK) for name in ("kube-apiserver", "etcd"))


def _mod_version(go_mod: Path, module: str) -> str:
    m = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", go_mod.read_text(), re.M)
    if not m:
        raise ControlPlaneError(f"{module} not required in {go_mod}")
    return m.group(1)


def pinned_versions() -> tuple[str, str]:
    """(kube-apiserver version, etcd version) pinned in tools/controlplane/*/go.mod."""
    return (
        _mod_version(_GO_MODULES / "kube-apiserver" / "go.mod", "k8s.io/kubernetes"),
        _mod_version(_GO_MODULES / "etcd" / "go.mod", "go.etcd.io/etcd/server/v3"),
    )


def find_binaries(*, build: bool = True) -> Path:
    """Directory holding ``kube-apiserver`` and ``etcd``.

    ``$RECONCILER_CONTROLPLANE_BIN``, else ``$KUBEBUILDER_ASSETS``, else (``build=True``) the
    output of tools/build-controlplane.sh (progress goes to this process's stderr).
    Raises ControlPlaneUnavailable.
    """
    explicit = os.environ.get("RECONCILER_CONTROLPLANE_BIN")
    if explicit:
        if not _has_binaries(Path(explicit)):
            raise ControlPlaneUnavailable(
                f"RECONCILER_CONTROLPLANE_BIN={explicit} has no executable kube-apiserver and etcd"
            )
        return Path(explicit)
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets and _has_binaries(Path(assets)):
        return Path(assets)
    if not build:
        raise ControlPlaneUnavailable("no control-plane binaries and building is disabled")
    # The script reuses cached binaries even without Go; it needs Go only to build.
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT)],
        stdout=subprocess.PIPE,
        stderr=None,  # progress straight to our stderr
        stdin=subprocess.DEVNULL,
        check=False,
        text=True,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode == 0 and lines and _has_binaries(Path(lines[-1])):
        return Path(lines[-1])
    if shutil.which("go") is None:
        raise ControlPlaneUnavailable(
            "kube-apiserver/etcd are not available: 'go' is not on PATH to build them "
            "(install Go >= 1.26, or set KUBEBUILDER_ASSETS / RECONCILER_CONTROLPLANE_BIN "
            "to a dir holding kube-apiserver and etcd)",
            go_missing=True,
        )
    raise ControlPlaneUnavailable(
        f"{BUILD_SCRIPT.relative_to(REPO_ROOT)} failed (exit {proc.returncode}); "
        "see its output on stderr"
    )


# --------------------------------------------------------------------------------------------
# Certificates


@dataclass(frozen=True)
class _Pair:
    cert_pem: bytes
    key_pem: bytes


def _key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _make_pki(sans_ips: Iterable[str]) -> tuple[_Pair, _Pair, _Pair]:
    """(CA, apiserver serving pair, admin client pair)."""
    now = datetime.datetime.now(datetime.UTC)
    not_before, not_after = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=30)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "reconciler-test-ca")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(
        subject: x509.Name, usage: x509.ObjectIdentifier, sans: list[x509.GeneralName]
    ) -> _Pair:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        return _Pair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))

    dns = [
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ]
    serving = leaf(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]),
        ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.DNSName(d) for d in dns]
        + [x509.IPAddress(ipaddress.ip_address(ip)) for ip in sans_ips],
    )
    admin = leaf(
        x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
                x509.NameAttribute(NameOID.COMMON_NAME, "admin"),
            ]
        ),
        ExtendedKeyUsageOID.CLIENT_AUTH,
        [],
    )
    return _Pair(ca_cert.public_bytes(serialization.Encoding.PEM), _key_pem(ca_key)), serving, admin


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _write_kubeconfig(path: Path, host: str, ca_pem: bytes, user: dict[str, str]) -> Path:
    """Kubeconfig (JSON is valid YAML) with one cluster/user/context named 'controlplane'."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "controlplane",
                "cluster": {"server": host, "certificate-authority-data": _b64(ca_pem)},
            }
        ],
        "users": [{"name": "controlplane", "user": user}],
        "contexts": [
            {"name": "controlplane", "context": {"cluster": "controlplane", "user": "controlplane"}}
        ],
        "current-context": "controlplane",
        "preferences": {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2) + "\n")
    path.chmod(0o600)
    return path


# --------------------------------------------------------------------------------------------
# Processes


_WORK_DIR_PREFIX = "controlplane-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep_stale_work_dirs() -> None:
    """Remove temp work dirs left by owners that were SIGKILLed (their etcd/apiserver died
    with them through PDEATHSIG; only the files stayed)."""
    for d in Path(tempfile.gettempdir()).glob(_WORK_DIR_PREFIX + "*"):
        with contextlib.suppress(OSError, ValueError):
            pid = int((d / "owner.pid").read_text().strip())
            if d.stat().st_uid == os.getuid() and not _pid_alive(pid):
                shutil.rmtree(d, ignore_errors=True)


_live: set[ControlPlane] = set()
_live_lock = threading.Lock()


@dataclass
class _ExitHooks:
    installed: bool = False
    previous_sigterm: Any = None


_exit_hooks = _ExitHooks()


def _stop_all() -> None:
    with _live_lock:
        planes = list(_live)
    for cp in planes:
        with contextlib.suppress(Exception):
            cp.stop()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    _stop_all()
    previous = _exit_hooks.previous_sigterm
    if callable(previous):
        previous(signum, frame)
        return
    # Default disposition: die by SIGTERM, as we would have without this handler.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _install_exit_hooks() -> None:
    """atexit + SIGTERM (main thread only; SIGTERM's default would skip atexit): stop every
    running ControlPlane. An existing SIGTERM handler is chained; SIG_IGN is respected."""
    if _exit_hooks.installed:
        return
    _exit_hooks.installed = True
    atexit.register(_stop_all)
    if threading.current_thread() is threading.main_thread():
        current = signal.getsignal(signal.SIGTERM)
        if current is not signal.SIG_IGN:
            _exit_hooks.previous_sigterm = current
            signal.signal(signal.SIGTERM, _on_sigterm)


class ControlPlane:
    """etcd + kube-apiserver on loopback. Use as a context manager, or start()/stop().

    Attributes (valid after start()): ``host`` (``https://127.0.0.1:PORT``), ``port``,
    ``kubeconfig_path`` (admin, with embedded CA/cert/key data), ``ca_path`` (CA of both the
    serving cert and client certs), ``admin_cert_path``, ``admin_key_path``, ``etcd_url``,
    ``work_dir`` (temp dir: certs, etcd data, logs), ``apiserver_log_path``,
    ``etcd_log_path``, ``audit_log`` (None unless given), ``bin_dir``,
    ``service_account_issuer``, ``startup_seconds`` (start() to /readyz ok).
    """

    def __init__(
        self,
        *,
        bin_dir: Path | None = None,
        audit_log: Path | None = None,
        work_dir: Path | None = None,
        extra_apiserver_args: Sequence[str] = (),
        start_timeout: float = 60.0,
        keep_work_dir: bool = False,
    ) -> None:
        """``bin_dir``: dir with the binaries (default: find_binaries()). ``audit_log``: when
        set, every request is audited (level Metadata, blocking mode, JSON lines) to this
        file. ``work_dir``: where certs/data/logs go (default: a fresh temp dir, removed on
        stop unless ``keep_work_dir``). ``extra_apiserver_args``: appended, e.g.
        ``["--v=4"]``."""
        self._bin_dir_arg = bin_dir
        self.audit_log = Path(audit_log) if audit_log is not None else None
        self._work_dir_arg = work_dir
        self.extra_apiserver_args = list(extra_apiserver_args)
        self.start_timeout = start_timeout
        self.keep_work_dir = keep_work_dir or work_dir is not None
        self.service_account_issuer = SERVICE_ACCOUNT_ISSUER
        self.service_cluster_ip_range = SERVICE_CLUSTER_IP_RANGE

        self.bin_dir: Path = Path()
        self.work_dir: Path = Path()
        self.port = 0
        self.host = ""
        self.etcd_url = ""
        self.kubeconfig_path = Path()
        self.ca_path = Path()
        self.admin_cert_path = Path()
        self.admin_key_path = Path()
        self.apiserver_log_path = Path()
        self.etcd_log_path = Path()
        self.startup_seconds = 0.0
        self._etcd: subprocess.Popen[bytes] | None = None
        self._apiserver: subprocess.Popen[bytes] | None = None
        self._ca_pem = b""
        self._admin_pair = _Pair(b"", b"")
        self._owns_work_dir = False

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return any(p is not None and p.poll() is None for p in (self._etcd, self._apiserver))

    def start(self) -> ControlPlane:
        if self.running:
            raise ControlPlaneError("already started")
        t0 = time.monotonic()
        self.bin_dir = self._bin_dir_arg or find_binaries()
        if not _has_binaries(self.bin_dir):
            raise ControlPlaneUnavailable(f"{self.bin_dir} has no kube-apiserver and etcd")
        if self._work_dir_arg is not None:
            self.work_dir = self._work_dir_arg
            self.work_dir.mkdir(parents=True, exist_ok=True)
            self._owns_work_dir = False
        else:
            _sweep_stale_work_dirs()
            self.work_dir = Path(tempfile.mkdtemp(prefix=_WORK_DIR_PREFIX))
            (self.work_dir / "owner.pid").write_text(f"{os.getpid()}\n")
            self._owns_work_dir = True
        _install_exit_hooks()
        with _live_lock:
            _live.add(self)
        try:
            self._write_pki()
            for attempt in range(3):
                try:
                    self._launch()
                    self._wait_ready(t0 + self.start_timeout)
                    break
                except _PortInUse:
                    self._kill_children()
                    if attempt == 2:
                        raise ControlPlaneError("could not find free ports in 3 attempts") from None
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def stop(self) -> None:
        """Stop kube-apiserver then etcd (SIGTERM to the process group, SIGKILL after 5 s)
        and remove the temp work dir. Idempotent."""
        self._kill_children()
        with _live_lock:
            _live.discard(self)
        if self._owns_work_dir and not self.keep_work_dir and self.work_dir != Path():
            shutil.rmtree(self.work_dir, ignore_errors=True)
            self._owns_work_dir = False

    def _kill_children(self) -> None:
        for proc in (self._apiserver, self._etcd):
            if proc is None:
                continue
            for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 10.0)):
                if proc.poll() is not None:
                    break
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(wait)
            # Anything else left in its process group.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        self._apiserver = self._etcd = None

    # -- internals ---------------------------------------------------------------------------

    def _write_pki(self) -> None:
        pki = self.work_dir / "pki"
        pki.mkdir(parents=True, exist_ok=True)
        first_service_ip = str(next(ipaddress.ip_network(self.service_cluster_ip_range).hosts()))
        ca, serving, admin = _make_pki(["127.0.0.1", first_service_ip])
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        files = {
            "ca.crt": ca.cert_pem,
            "ca.key": ca.key_pem,
            "apiserver.crt": serving.cert_pem,
            "apiserver.key": serving.key_pem,
            "admin.crt": admin.cert_pem,
            "admin.key": admin.key_pem,
            "sa.key": _key_pem(sa_key),
            "sa.pub": sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        }
        for name, data in files.items():
            (pki / name).write_bytes(data)
            (pki / name).chmod(0o600)
        (self.work_dir / "audit-policy.yaml").write_text(AUDIT_POLICY)
        self._ca_pem = ca.cert_pem
        self.ca_path = pki / "ca.crt"
        self.admin_cert_path = pki / "admin.crt"
        self.admin_key_path = pki / "admin.key"
        self._admin_pair = admin

    def _spawn(self, argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
        parent = os.getpid()
        with open(log_path, "ab") as log:
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                # Only prctl + getppid run between fork and exec (see die_with_parent).
                preexec_fn=lambda: die_with_parent(parent),  # noqa: PLW1509
                cwd=self.work_dir,
                close_fds=True,
            )

    def _launch(self) -> None:
        w = self.work_dir
        pki = w / "pki"
        etcd_port, peer_port, self.port = free_port(), free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{etcd_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        self.host = f"https://127.0.0.1:{self.port}"
        self.etcd_log_path = w / "etcd.log"
        self.apiserver_log_path = w / "kube-apiserver.log"
        data_dir = w / "etcd-data"
        shutil.rmtree(data_dir, ignore_errors=True)

        self._etcd = self._spawn(
            [
                str(self.bin_dir / "etcd"),
                "--name=controlplane",
                f"--data-dir={data_dir}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=controlplane={peer_url}",
                "--initial-cluster-state=new",
                "--unsafe-no-fsync=true",  # test data only: skip fsync for speed
                "--log-level=warn",
            ],
            self.etcd_log_path,
        )
        args = [
            str(self.bin_dir / "kube-apiserver"),
            f"--etcd-servers={self.etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.port}",
            f"--cert-dir={w / 'apiserver-certs'}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            "--authorization-mode=RBAC",
            f"--service-cluster-ip-range={self.service_cluster_ip_range}",
            f"--service-account-issuer={self.service_account_issuer}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--allow-privileged=true",
            # As envtest: no token controller runs, so don't require SA objects for pods.
            "--disable-admission-plugins=ServiceAccount",
            # No kubelet/nodes: don't maintain the kubernetes Service's endpoints.
            "--endpoint-reconciler-type=none",
            "--profiling=false",
        ]
        if self.audit_log is not None:
            self.audit_log.parent.mkdir(parents=True, exist_ok=True)
            args += [
                f"--audit-policy-file={w / 'audit-policy.yaml'}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-format=json",
                "--audit-log-mode=blocking",
                "--audit-log-maxsize=0",
                "--audit-log-maxbackup=0",
            ]
        args += self.extra_apiserver_args
        self._apiserver = self._spawn(args, self.apiserver_log_path)

        self.kubeconfig_path = _write_kubeconfig(
            w / "admin.kubeconfig",
            self.host,
            self._ca_pem,
            {
                "client-certificate-data": _b64(self._admin_pair.cert_pem),
                "client-key-data": _b64(self._admin_pair.key_pem),
            },
        )

    def ssl_context(self) -> ssl.SSLContext:
        """Client TLS context trusting the CA and presenting the admin certificate."""
        ctx = ssl.create_default_context(cafile=str(self.ca_path))
        ctx.load_cert_chain(str(self.admin_cert_path), str(self.admin_key_path))
        return ctx

    def raw_get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        """GET ``path`` as admin with plain urllib: (status, body)."""
        try:
            with urllib.request.urlopen(
                self.host + path, context=self.ssl_context(), timeout=timeout
            ) as resp:
                return int(resp.status), resp.read().decode(errors="replace")
        except urllib.error.HTTPError as e:
            return int(e.code), e.read().decode(errors="replace")

    def _wait_ready(self, deadline: float) -> None:
        ctx = self.ssl_context()
        last = "no answer yet"
        while True:
            for name, proc, log in (
                ("etcd", self._etcd, self.etcd_log_path),
                ("kube-apiserver", self._apiserver, self.apiserver_log_path),
            ):
                assert proc is not None
                code = proc.poll()
                if code is not None:
                    text = tail(log)
                    if "address already in use" in text:
                        raise _PortInUse
                    raise ControlPlaneError(
                        f"{name} exited with code {code} during startup; log tail:\n{text}"
                        + (
                            f"\n--- etcd log tail:\n{tail(self.etcd_log_path)}"
                            if name == "kube-apiserver"
                            else ""
                        )
                    )
            try:
                with urllib.request.urlopen(self.host + "/readyz", context=ctx, timeout=2) as r:
                    if r.status == 200:
                        return
                    last = f"HTTP {r.status}"
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code}: {e.read().decode(errors='replace')[-2000:]}"
            except (OSError, ssl.SSLError) as e:
                last = repr(e)
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"kube-apiserver not ready within {self.start_timeout:.0f}s "
                    f"(last /readyz: {last}); kube-apiserver log tail:\n"
                    f"{tail(self.apiserver_log_path)}\n--- etcd log tail:\n"
                    f"{tail(self.etcd_log_path)}"
                )
            time.sleep(0.1)

    # -- clients -----------------------------------------------------------------------------

    def api_client(self) -> kubernetes.client.ApiClient:
        """A new admin ``kubernetes.client.ApiClient`` (from the kubeconfig; global default
        configuration untouched). Close it when done."""
        return api_client_from_kubeconfig(self.kubeconfig_path)

    @property
    def ca_pem(self) -> bytes:
        return self._ca_pem

    def __repr__(self) -> str:
        return f"ControlPlane(host={self.host!r}, work_dir={str(self.work_dir)!r})"


class _PortInUse(Exception):
    pass


# --------------------------------------------------------------------------------------------
# Clients


def api_client_from_kubeconfig(path: Path) -> kubernetes.client.ApiClient:
    """``kubernetes.config.new_client_from_config`` for ``path`` (global config untouched)."""
    client = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(path), persist_config=False
    )
    assert isinstance(client, kubernetes.client.ApiClient)
    return client


# --------------------------------------------------------------------------------------------
# Acting as a ServiceAccount


def _serviceaccount_groups(namespace: str) -> list[str]:
    return ["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"]


def impersonating_api_client(
    cp: ControlPlane,
    namespace: str,
    sa_name: str,
    *,
    groups: Sequence[str] | None = None,
) -> kubernetes.client.ApiClient:
    """Admin ApiClient that impersonates ServiceAccount ``namespace/sa_name``.

    Sends ``Impersonate-User: system:serviceaccount:NS:NAME`` plus one ``Impersonate-Group``
    header per group (default: system:serviceaccounts, system:serviceaccounts:NS,
    system:authenticated). The API server wants repeated headers, not a comma-joined list,
    and ApiClient.set_default_header holds one value per name, so the rest client's urllib3
    pool manager is wrapped to add them. The ServiceAccount object need not exist.
    """
    import urllib3

    client = cp.api_client()
    user = f"system:serviceaccount:{namespace}:{sa_name}"
    group_values = list(groups) if groups is not None else _serviceaccount_groups(namespace)
    pool = client.rest_client.pool_manager
    original_request = pool.request

    def request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        headers = urllib3.HTTPHeaderDict(kwargs.get("headers") or {})
        headers["Impersonate-User"] = user
        headers.discard("Impersonate-Group")
        for group in group_values:
            headers.add("Impersonate-Group", group)
        kwargs["headers"] = headers
        return original_request(method, url, *args, **kwargs)

    setattr(pool, "request", request)  # noqa: B010 (mypy: no method assignment)
    return client


def ensure_service_account(api: kubernetes.client.ApiClient, namespace: str, name: str) -> None:
    """Create namespace ``namespace`` and ServiceAccount ``name`` in it unless they exist."""
    core = kubernetes.client.CoreV1Api(api)
    for create in (
        lambda: core.create_namespace(
            kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name=namespace))
        ),
        lambda: core.create_namespaced_service_account(
            namespace,
            kubernetes.client.V1ServiceAccount(metadata=kubernetes.client.V1ObjectMeta(name=name)),
        ),
    ):
        try:
            create()
        except kubernetes.client.ApiException as e:
            if e.status != 409:
                raise


def serviceaccount_token(
    cp: ControlPlane,
    namespace: str,
    sa_name: str,
    *,
    expiration_seconds: int = 3600,
    audiences: Sequence[str] | None = None,
) -> str:
    """A bearer token for ServiceAccount ``namespace/sa_name`` from the TokenRequest API
    (the namespace and ServiceAccount are created if missing)."""
    with cp.api_client() as api:
        ensure_service_account(api, namespace, sa_name)
        spec = kubernetes.client.V1TokenRequestSpec(
            audiences=list(audiences) if audiences else [],
            expiration_seconds=expiration_seconds,
        )
        resp = kubernetes.client.CoreV1Api(api).create_namespaced_service_account_token(
            sa_name, namespace, kubernetes.client.AuthenticationV1TokenRequest(spec=spec)
        )
        assert resp.status is not None
        return str(resp.status.token)


def kubeconfig_for_token(
    cp: ControlPlane, token: str, path: Path, *, namespace: str | None = None
) -> Path:
    """Write a kubeconfig for ``cp`` authenticating with bearer ``token``; returns ``path``."""
    path = _write_kubeconfig(Path(path), cp.host, cp.ca_pem, {"token": token})
    if namespace is not None:
        config = json.loads(path.read_text())
        config["contexts"][0]["context"]["namespace"] = namespace
        path.write_text(json.dumps(config, indent=2) + "\n")
    return path


def token_api_client(cp: ControlPlane, token: str) -> kubernetes.client.ApiClient:
    """A ``kubernetes.client.ApiClient`` for ``cp`` authenticating with bearer ``token``."""
    configuration = kubernetes.client.Configuration()
    configuration.host = cp.host
    configuration.ssl_ca_cert = str(cp.ca_path)
    configuration.verify_ssl = True
    configuration.api_key = {"authorization": token}
    configuration.api_key_prefix = {"authorization": "Bearer"}
    return kubernetes.client.ApiClient(configuration)


# --------------------------------------------------------------------------------------------
# Audit log


def audit_events(path: Path) -> list[dict[str, Any]]:
    """All events (JSON lines) of an audit log written with ControlPlane(audit_log=...)."""
    events: list[dict[str, Any]] = []
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return events
    for raw in text.splitlines():
        line = raw.strip()
        if line:
            with contextlib.suppress(json.JSONDecodeError):  # a partially written last line
                events.append(json.loads(line))
    return events


def audit_verb_counts(
    path: Path,
    *,
    username: str | None = None,
    exclude_system: bool = True,
    resources_only: bool = True,
) -> collections.Counter[str]:
    """Requests per verb (get, list, watch, create, update, patch, delete, ...) in an audit
    log, each request counted once (stages merged by auditID).

    ``username``: only requests by this effective user (the impersonated one, if any), e.g.
    ``"admin"`` or ``"system:serviceaccount:NS:NAME"``. ``exclude_system``: drop the API
    server's own loopback requests (``system:apiserver``) and other ``system:`` users that
    are not service accounts. ``resources_only``: drop non-resource requests (``/readyz``,
    ``/version``, discovery ``/api``, ``/apis``...).

    Every answered request is in the log (its RequestReceived stage is written, blocking,
    before it is handled); the impersonated user only appears in later stages, which may
    trail the response by a moment, so read impersonated counts after a short pause.
    """
    requests: dict[str, tuple[str, str, bool]] = {}
    for event in audit_events(path):
        audit_id = str(event.get("auditID", ""))
        user = str((event.get("user") or {}).get("username", ""))
        impersonated = event.get("impersonatedUser")
        if impersonated:
            user = str(impersonated.get("username", ""))
        elif audit_id in requests:
            user = requests[audit_id][1]
        requests[audit_id] = (str(event.get("verb", "")), user, "objectRef" in event)
    counts: collections.Counter[str] = collections.Counter()
    for verb, user, is_resource in requests.values():
        if username is not None and user != username:
            continue
        if (
            exclude_system
            and user.startswith("system:")
            and not user.startswith("system:serviceaccount:")
        ):
            continue
        if resources_only and not is_resource:
            continue
        counts[verb] += 1
    return counts
