"""ControlPlane: etcd + kube-apiserver on loopback, with RBAC, a test CA and SA token signing."""

from __future__ import annotations

import ipaddress
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Self

import kubernetes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from testkit.controlplane import processes
from testkit.controlplane.audit import AUDIT_POLICY
from testkit.controlplane.binaries import find_binaries, has_binaries
from testkit.controlplane.clients import api_client_from_kubeconfig
from testkit.controlplane.errors import ControlPlaneError, ControlPlaneUnavailable, PortInUse
from testkit.controlplane.pki import (
    CertificateAuthority,
    Pair,
    client_cert_user,
    key_pem,
    make_pki,
    write_kubeconfig,
)
from testkit.processes import Started, free_port, tail

SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"


class ControlPlane(Started):
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
        self._admin_pair = Pair(b"", b"")
        self._ca: CertificateAuthority | None = None
        self._owns_work_dir = False

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return any(p is not None and p.poll() is None for p in (self._etcd, self._apiserver))

    def start(self) -> Self:
        if self.running:
            raise ControlPlaneError("already started")
        t0 = time.monotonic()
        self.bin_dir = self._bin_dir_arg or find_binaries()
        if not has_binaries(self.bin_dir):
            raise ControlPlaneUnavailable(f"{self.bin_dir} has no kube-apiserver and etcd")
        if self._work_dir_arg is not None:
            self.work_dir = self._work_dir_arg
            self.work_dir.mkdir(parents=True, exist_ok=True)
            self._owns_work_dir = False
        else:
            self.work_dir = processes.make_work_dir()
            self._owns_work_dir = True
        processes.register(self)
        try:
            self._write_pki()
            for attempt in range(3):
                try:
                    self._launch()
                    self._wait_ready(t0 + self.start_timeout)
                    break
                except PortInUse:
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
        processes.unregister(self)
        if self._owns_work_dir and not self.keep_work_dir and self.work_dir != Path():
            shutil.rmtree(self.work_dir, ignore_errors=True)
            self._owns_work_dir = False

    def _kill_children(self) -> None:
        for proc in (self._apiserver, self._etcd):
            processes.kill_group(proc)
        self._apiserver = self._etcd = None

    # -- internals ---------------------------------------------------------------------------

    def _write_pki(self) -> None:
        pki = self.work_dir / "pki"
        pki.mkdir(parents=True, exist_ok=True)
        first_service_ip = str(next(ipaddress.ip_network(self.service_cluster_ip_range).hosts()))
        ca, serving, admin = make_pki(["127.0.0.1", first_service_ip])
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        files = {
            "ca.crt": ca.pair.cert_pem,
            "ca.key": ca.pair.key_pem,
            "apiserver.crt": serving.cert_pem,
            "apiserver.key": serving.key_pem,
            "admin.crt": admin.cert_pem,
            "admin.key": admin.key_pem,
            "sa.key": key_pem(sa_key),
            "sa.pub": sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        }
        for name, data in files.items():
            (pki / name).write_bytes(data)
            (pki / name).chmod(0o600)
        (self.work_dir / "audit-policy.yaml").write_text(AUDIT_POLICY)
        self._ca = ca
        self._ca_pem = ca.pair.cert_pem
        self.ca_path = pki / "ca.crt"
        self.admin_cert_path = pki / "admin.crt"
        self.admin_key_path = pki / "admin.key"
        self._admin_pair = admin

    def _spawn(
        self, argv: list[str], log_path: Path, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        return processes.spawn(argv, log_path, self.work_dir, env)

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

        self.kubeconfig_path = write_kubeconfig(
            w / "admin.kubeconfig", self.host, self._ca_pem, client_cert_user(self._admin_pair)
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
                        raise PortInUse
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

    def client_kubeconfig(self, path: Path, user: str, *groups: str) -> Path:
        """Write a kubeconfig authenticating as ``user`` in ``groups`` with a client
        certificate from the control plane's CA; returns ``path``."""
        if self._ca is None:
            raise ControlPlaneError("not started")
        pair = self._ca.client(user, *groups)
        return write_kubeconfig(Path(path), self.host, self._ca_pem, client_cert_user(pair))

    def __repr__(self) -> str:
        return f"ControlPlane(host={self.host!r}, work_dir={str(self.work_dir)!r})"
