"""The CLI's contract: exit codes, messages that say what to do, text and JSON output."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

from reconciler.cli.main import main
from reconciler.core.model import Container, ObservedDeployment
from reconciler.wiring import Parts
from tests.fakes import FakeCluster, FakeHeads, FakeVerifier

SITES = '[defaults]\nimage = "gcr.io/p/{repo}:{sha}"\n\n[sites.blog]\nrepo = "acme/blog"\n'


def run(
    *argv: str, parts: Parts | None = None, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), parts=parts, env=env or {}, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def fakes(blog_image: str = "gcr.io/p/blog:old") -> Parts:
    heads = FakeHeads()
    heads.set("acme/blog", None, "c" * 40)
    cluster = FakeCluster()
    cluster.add(
        ObservedDeployment("default", "blog", (Container("app", blog_image),), resource_version="1")
    )
    return Parts(heads=heads, cluster=cluster, verifier=FakeVerifier())


def test_validate(tmp_path: Path) -> None:
    cfg = tmp_path / "sites.toml"
    cfg.write_text(SITES)
    assert run("validate", "--config", str(cfg))[:2] == (0, f"{cfg}: ok, 1 site(s)\n")
    cfg.write_text(SITES + "brnach = 'x'\n")
    code, _, err = run("validate", "--config", str(cfg))
    assert code == 2 and f'{cfg}:6: site "blog": unknown key "brnach"' in err


def test_config_from_env_and_missing_file(tmp_path: Path) -> None:
    code, _, err = run("validate", env={"RECONCILER_CONFIG": str(tmp_path / "nope.toml")})
    assert code == 2 and "nope.toml: file not found" in err


def test_plan_text_and_json(tmp_path: Path) -> None:
    cfg = tmp_path / "sites.toml"
    cfg.write_text(SITES)
    code, out, _ = run("plan", "--config", str(cfg), parts=fakes())
    assert code == 0
    assert "→ blog" in out and "update" in out and "gcr.io/p/blog:old → gcr.io/p/blog:ccc" in out
    assert out.strip().endswith("s") and "plan: 1 update" in out
    code, out, _ = run("plan", "--config", str(cfg), "-o", "json", parts=fakes())
    [row] = json.loads(out)
    assert row["action"] == "update" and row["container"] == "app" and row["applied"] is False


def test_sync_exit_code_reflects_site_failures(tmp_path: Path) -> None:
    cfg = tmp_path / "sites.toml"
    cfg.write_text(SITES + '\n[sites.gone]\nrepo = "acme/gone"\n')
    code, out, _ = run("sync", "--config", str(cfg), parts=fakes())
    assert code == 1 and "! gone" in out and "→ blog" in out


def test_unknown_site_is_a_usage_error(tmp_path: Path) -> None:
    cfg = tmp_path / "sites.toml"
    cfg.write_text(SITES)
    code, _, err = run("plan", "--config", str(cfg), "--site", "nope", parts=fakes())
    assert code == 2 and "unknown site(s) nope; known: blog" in err


def test_missing_kube_context_says_what_to_do(tmp_path: Path) -> None:
    cfg = tmp_path / "sites.toml"
    cfg.write_text(SITES)
    code, _, err = run(
        "plan",
        "--config",
        str(cfg),
        parts=Parts(heads=FakeHeads(), verifier=FakeVerifier()),
        env={"KUBECONFIG": str(tmp_path / "missing-kubeconfig")},
    )
    assert code == 2 and "KUBECONFIG" in err and "no usable Kubernetes credentials" in err


def test_bad_usage() -> None:
    assert run("frobnicate")[0] == 2
    assert run("sync", "--output", "yaml")[0] == 2


def test_sync_wait_exits_1_when_a_rollout_does_not_finish_in_time(tmp_path: Path) -> None:
    from reconciler.core.model import DeploymentStatus

    cfg = tmp_path / "sites.toml"
    cfg.write_text(SITES.replace("[defaults]", '[defaults]\nverify = "none"'))
    parts = fakes()
    assert isinstance(parts.cluster, FakeCluster)
    d = parts.cluster.deployments[("default", "blog")]
    status = DeploymentStatus(observed_generation=1, desired=1, updated=1, replicas=1, available=1)
    parts.cluster.add(replace(d, generation=1, status=status))
    code, out, _ = run("plan", "--config", str(cfg), "-o", "json", parts=parts)
    assert json.loads(out)[0]["rollout"] == "available"  # before any change, too
    code, out, _ = run(
        "sync", "--wait", "--wait-timeout", "0", "--config", str(cfg), "-o", "json", parts=parts
    )
    [row] = json.loads(out)
    assert code == 1 and row["applied"] and row["rollout"] == "progressing"
    assert "still progressing after 0s" in row["reason"]
    code, out, _ = run("sync", "--config", str(cfg), "-o", "json", parts=parts)
    assert code == 0 and json.loads(out)[0]["action"] == "in-sync"  # never waits by default
