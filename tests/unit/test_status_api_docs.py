"""Every key of every JSON answer of the page routes (/status, /sites/<site>?format=json,
/runs/<id>, /readyz) is documented in docs/status-api.md."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from reconciler.core.model import Container, ObservedDeployment, SyncRequest
from reconciler.serve.app import create_app
from reconciler.sync.engine import Engine
from reconciler.wiring import build_service
from tests.fakes import FakeCluster, FakeHeads, FakeVerifier

DOC = Path(__file__).resolve().parents[2] / "docs" / "status-api.md"
TOKEN = "t0ken"
SITES = '[defaults]\nimage = "gcr.io/p/{repo}:{sha}"\n\n[sites.blog]\nrepo = "acme/blog"\n'


def keys(value: Any, path: str = "") -> set[str]:
    """Dotted key paths of a JSON value; list items are `[]`."""
    out: set[str] = set()
    if isinstance(value, dict):
        for k, v in value.items():
            here = f"{path}.{k}" if path else k
            out |= {here} | keys(v, here)
    elif isinstance(value, list):
        for item in value:
            out |= keys(item, f"{path}[]")
    return out


def answers(tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / "sites.toml"
    path.write_text(SITES)
    heads = FakeHeads()
    heads.set("acme/blog", None, "a" * 40)
    cluster = FakeCluster()
    cluster.add(ObservedDeployment("default", "blog", (Container("app", "gcr.io/p/blog:x"),)))
    svc = build_service(str(path), Engine(heads=heads, cluster=cluster, verifier=FakeVerifier()))
    client = create_app(svc, trigger_token=TOKEN).test_client()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    record = svc.submit(SyncRequest(trigger="http"))
    record.future.result(30)
    got = {
        "/status": client.get("/status", headers=auth).get_json(),
        "/sites/<site>?format=json": client.get("/sites/blog?format=json", headers=auth).get_json(),
        "/runs/<id>": client.get(f"/runs/{record.id}", headers=auth).get_json(),
        "/readyz": client.get("/readyz", headers=auth).get_json(),
    }
    svc.shutdown(5)
    return got


def test_every_json_answer_of_the_page_routes_is_documented(tmp_path: Path) -> None:
    doc = DOC.read_text() if DOC.exists() else ""
    documented = set(re.findall(r"`([a-z_][a-z_.\[\]]*)`", doc))
    for route, body in answers(tmp_path).items():
        assert f"`GET {route}`" in doc, f"{route} is not documented"
        missing = {k for k in keys(body) if k.split(".")[-1].removesuffix("[]") not in documented}
        assert not missing, f"{route}: undocumented keys {sorted(missing)}"
