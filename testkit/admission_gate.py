"""An admission webhook on loopback that holds Deployment writes inside the API server.

A test's proof that a patch is in flight (e.g. while the process gets SIGTERM):

    with AdmissionGate(api, namespace, "probe") as gate:   # registered and effective
        gate.hold()
        ...                                       # something patches a Deployment there
        gate.wait_held()                          # the PATCH is at the API server, unanswered
        ...
        gate.release()                            # it completes (allowed)

Every UPDATE of a Deployment in the namespace goes through it (allowed at once unless held).
"""

from __future__ import annotations

import json
import ssl
import tempfile
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

import kubernetes

from testkit.controlplane.pki import CertificateAuthority, b64
from testkit.gate import Gate

_PROBE = "reconciler.test/admission-gate-probe"


class AdmissionGate:
    """The webhook server (HTTPS, its own CA) and its ValidatingWebhookConfiguration."""

    def __init__(
        self, api: kubernetes.client.ApiClient, namespace: str, probe_deployment: str
    ) -> None:
        """probe_deployment: a Deployment in the namespace that start() dry-run patches until the
        webhook sees it (the configuration is effective)."""
        self.api = api
        self.namespace = namespace
        self.probe_deployment = probe_deployment
        self.gate = Gate()
        self.name = f"admission-gate-{uuid.uuid4().hex[:8]}"
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> AdmissionGate:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def hold(self) -> None:
        self.gate.hold()

    def release(self) -> None:
        self.gate.release()

    def wait_held(self, n: int = 1, timeout: float = 30.0) -> None:
        self.gate.wait_held(n, timeout)

    def start(self, timeout: float = 30.0) -> AdmissionGate:
        ca = CertificateAuthority("admission-gate-ca")
        pair = ca.serving("admission-gate", ["localhost"], ["127.0.0.1"])
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.TemporaryDirectory() as d:
            cert, key = Path(d, "tls.crt"), Path(d, "tls.key")
            cert.write_bytes(pair.cert_pem)
            key.write_bytes(pair.key_pem)
            context.load_cert_chain(cert, key)
        gate = self.gate

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                gate.pass_through()
                body = json.dumps(
                    {
                        "apiVersion": "admission.k8s.io/v1",
                        "kind": "AdmissionReview",
                        "response": {"uid": review["request"]["uid"], "allowed": True},
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        port = server.server_address[1]
        admission = kubernetes.client.AdmissionregistrationV1Api(self.api)
        admission.create_validating_webhook_configuration(
            {  # type: ignore[arg-type]  # the client serialises manifest dicts as they are
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingWebhookConfiguration",
                "metadata": {"name": self.name},
                "webhooks": [
                    {
                        "name": "gate.reconciler.test",
                        "clientConfig": {
                            "url": f"https://127.0.0.1:{port}/validate",
                            "caBundle": b64(ca.pair.cert_pem),
                        },
                        "rules": [
                            {
                                "apiGroups": ["apps"],
                                "apiVersions": ["v1"],
                                "operations": ["UPDATE"],
                                "resources": ["deployments"],
                            }
                        ],
                        "namespaceSelector": {
                            "matchLabels": {"kubernetes.io/metadata.name": self.namespace}
                        },
                        "sideEffects": "None",
                        "admissionReviewVersions": ["v1"],
                        "failurePolicy": "Fail",
                        "timeoutSeconds": 30,
                    }
                ],
            }
        )
        self._wait_effective(timeout)
        return self

    def _wait_effective(self, timeout: float) -> None:
        """The configuration reaches the API server's admission chain through an informer: send
        dry-run patches until one is seen by the webhook."""
        apps = kubernetes.client.AppsV1Api(self.api)
        seen = self.gate.passed
        done = threading.Event()

        def probe() -> None:
            n = 0
            while not done.is_set():
                n += 1
                body = {"metadata": {"annotations": {_PROBE: str(n)}}}
                apps.patch_namespaced_deployment(
                    self.probe_deployment, self.namespace, body, dry_run="All"
                )
                done.wait(0.1)  # the next probe (the loop's condition is `done`)

        prober = threading.Thread(target=probe, daemon=True)
        prober.start()
        try:
            self.gate.wait_passed(seen + 1, timeout)
        finally:
            done.set()
            prober.join(10)

    def stop(self) -> None:
        self.gate.release()
        admission = kubernetes.client.AdmissionregistrationV1Api(self.api)
        try:
            admission.delete_validating_webhook_configuration(self.name)
        except kubernetes.client.ApiException as e:
            if e.status != 404:
                raise
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
