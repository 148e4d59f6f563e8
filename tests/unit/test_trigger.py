"""The HTTP trigger's answers, in-process (Flask test client, fakes): about the caller's sites."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from reconciler.core.model import Container, ObservedDeployment, SyncRequest
from reconciler.serve.app import create_app
from reconciler.sync.engine import Engine
from reconciler.wiring import build_service
from testkit.wait import wait_until
from tests.fakes import FakeHeads, FakeVerifier, GatedCluster

TOKEN = "t0ken"
SITES = """\
[defaults]
image = "gcr.io/p/{repo}:{sha}"

[sites.blog]
repo = "acme/blog"

[sites.shop]
repo = "acme/shop"
"""


def test_a_site_trigger_is_answered_about_its_own_sites(tmp_path: Path) -> None:
    path = tmp_path / "sites.toml"
    path.write_text(SITES)
    heads = FakeHeads()
    heads.set("acme/blog", None, "a" * 40)  # acme/shop has no head: shop fails
    cluster = GatedCluster()
    for name in ("blog", "shop"):
        cluster.add(ObservedDeployment("default", name, (Container("app", f"gcr.io/p/{name}:x"),)))
    svc = build_service(str(path), Engine(heads=heads, cluster=cluster, verifier=FakeVerifier()))
    app = create_app(svc, trigger_token=TOKEN)
    try:
        svc.submit(SyncRequest(trigger="startup"))  # in flight until the gate opens
        assert cluster.entered.wait(10)
        answers: dict[str, tuple[int, Any]] = {}

        def post(path: str) -> None:
            r = app.test_client().post(path, headers={"Authorization": f"Bearer {TOKEN}"})
            answers[path] = (r.status_code, r.get_json())

        callers = [threading.Thread(target=post, args=(p,)) for p in ("/sync/blog", "/sync")]
        for t in callers:
            t.start()
        wait_until(lambda: len(svc.runs) == 3, "both triggers to be queued behind the first run")
        cluster.gate.set()
        for t in callers:
            t.join(10)
        blog_status, blog = answers["/sync/blog"]
        all_status, every = answers["/sync"]
        assert blog["run_id"] == every["run_id"], "one merged run covered both callers"
        assert [r["site"] for r in every["results"]] == ["blog", "shop"]
        assert all_status == 502 and every["ok"] is False  # shop failed, and /sync asked for it
        assert [r["site"] for r in blog["results"]] == ["blog"]
        assert blog_status == 200 and blog["ok"] is True, blog  # blog is fine
    finally:
        cluster.gate.set()
        svc.shutdown(5)
