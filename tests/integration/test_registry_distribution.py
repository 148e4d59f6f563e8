"""The registry check against CNCF Distribution v3 on loopback: no auth, htpasswd, token auth."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from pathlib import Path

from reconciler.adapters.registry import RegistryVerifier
from reconciler.core.config.sites import parse
from reconciler.core.model import (
    Action,
    Container,
    ImageStatus,
    ObservedDeployment,
    SyncRequest,
    VerifyRequest,
)
from reconciler.sync.engine import Engine
from testkit.registry import PASSWORD, USER, DistributionRegistry
from tests.fakes import FakeCluster, FakeHeads

Registries = Callable[[str], DistributionRegistry]


def docker_config(tmp_path: Path, host: str, user: str = USER, password: str = PASSWORD) -> Path:
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    return path


def check(verifier: RegistryVerifier, image: str) -> ImageStatus:
    request = VerifyRequest(image, "acme/blog", "a" * 40, "registry")
    return verifier.verify([request])[request]


def name() -> str:
    return f"acme/site-{uuid.uuid4().hex[:8]}"


def test_anonymous_registry_answers_the_manifest_digest(distribution: Registries) -> None:
    reg = distribution("none")
    pushed = reg.push_image(name(), "v1")
    v = RegistryVerifier(insecure=[reg.host])
    assert check(v, pushed.image) == ImageStatus(True, digest=pushed.digest)
    missing = check(v, pushed.image.replace(":v1", ":v2"))
    assert missing.exists is False and "not in the registry" in missing.reason


def test_index_is_pinned_by_the_index_digest(distribution: Registries) -> None:
    reg = distribution("none")
    pushed = reg.push_index(name(), "multi")
    status = check(RegistryVerifier(insecure=[reg.host]), pushed.image)
    assert status.exists is True and status.digest == pushed.digest


def test_basic_auth_registry_with_config_json_credentials(
    distribution: Registries, tmp_path: Path
) -> None:
    reg = distribution("htpasswd")
    pushed = reg.push_image(name(), "v1")
    config = docker_config(tmp_path, reg.host)
    v = RegistryVerifier(insecure=[reg.host], docker_config=config)
    assert check(v, pushed.image) == ImageStatus(True, digest=pushed.digest)


def test_basic_auth_wrong_and_missing_credentials_say_which(
    distribution: Registries, tmp_path: Path
) -> None:
    reg = distribution("htpasswd")
    pushed = reg.push_image(name(), "v1")
    wrong = check(
        RegistryVerifier(
            insecure=[reg.host], docker_config=docker_config(tmp_path, reg.host, password="nope")
        ),
        pushed.image,
    )
    assert wrong.exists is None and wrong.kind == "registry_auth"
    assert f"rejected the credentials of user '{USER}'" in wrong.reason
    missing = check(RegistryVerifier(insecure=[reg.host]), pushed.image)
    assert missing.exists is None and missing.kind == "registry_auth"
    assert "asks for a user and password" in missing.reason and "DOCKER_CONFIG" in missing.reason
    assert wrong.reason != missing.reason


def test_token_auth_private_and_public_repositories(
    distribution: Registries, tmp_path: Path
) -> None:
    reg = distribution("token")
    assert reg.tokens is not None
    private, public = reg.push_image(name(), "v1"), reg.push_image(name(), "v1")
    reg.tokens.public.add(public.image.split("/", 1)[1].split(":")[0])
    insecure = [reg.host, reg.tokens.host]
    anonymous = RegistryVerifier(insecure=insecure)
    assert check(anonymous, public.image) == ImageStatus(True, digest=public.digest)
    denied = check(anonymous, private.image)
    assert denied.exists is None and "denied anonymous access" in denied.reason
    assert "no credentials" in denied.reason
    v = RegistryVerifier(insecure=insecure, docker_config=docker_config(tmp_path, reg.host))
    assert check(v, private.image) == ImageStatus(True, digest=private.digest)
    assert reg.tokens.requests[-1]["user"] == USER
    wrong = RegistryVerifier(
        insecure=insecure, docker_config=docker_config(tmp_path, reg.host, password="nope")
    )
    assert "rejected the credentials" in check(wrong, private.image).reason


def test_credentials_go_to_a_plain_http_token_service_only_when_listed(
    distribution: Registries, tmp_path: Path
) -> None:
    reg = distribution("token")
    assert reg.tokens is not None
    pushed = reg.push_image(name(), "v1")
    config = docker_config(tmp_path, reg.host)
    before = len(reg.tokens.requests)
    status = check(RegistryVerifier(insecure=[reg.host], docker_config=config), pushed.image)
    assert status.exists is None and status.kind == "registry_auth"
    assert f"not sending the credentials for {reg.host}" in status.reason
    assert "plain http" in status.reason
    assert len(reg.tokens.requests) == before, "nothing was sent to the token service"


def test_token_service_answering_a_non_object_fails_only_its_images(
    distribution: Registries, tmp_path: Path
) -> None:
    reg, other = distribution("token"), distribution("none")
    assert reg.tokens is not None
    bad, good = reg.push_image(name(), "v1"), other.push_image(name(), "v1")
    v = RegistryVerifier(
        insecure=[reg.host, reg.tokens.host, other.host],
        docker_config=docker_config(tmp_path, reg.host),
    )
    reg.tokens.answer = ["not", "an", "object"]
    try:
        requests = [
            VerifyRequest(i, "acme/blog", "a" * 40, "registry") for i in (bad.image, good.image)
        ]
        statuses = v.verify(requests)
    finally:
        reg.tokens.answer = None
    assert (
        statuses[requests[0]].exists is None and "without a token" in statuses[requests[0]].reason
    )
    assert statuses[requests[1]] == ImageStatus(True, digest=good.digest)


def test_sync_deploys_the_digest_the_registry_answered(distribution: Registries) -> None:
    reg = distribution("none")
    repo = name()
    sha = uuid.uuid4().hex + uuid.uuid4().hex[:8]
    pushed = reg.push_image(repo, sha)
    config = parse(
        f"""
        [defaults]
        image = "{reg.host}/{repo}:{{sha}}"
        [sites.pinned]
        repo = "acme/pinned"
        [sites.plain]
        repo = "acme/plain"
        pin_digest = false
        """
    )
    heads, cluster = FakeHeads(), FakeCluster()
    for site in ("pinned", "plain"):
        heads.set(f"acme/{site}", None, sha)
        cluster.add(
            ObservedDeployment("default", site, (Container("app", f"{reg.host}/{repo}:old"),))
        )
    engine = Engine(heads=heads, cluster=cluster, verifier=RegistryVerifier(insecure=[reg.host]))
    report = engine.run(config, SyncRequest())
    images = {c.deployment: c.image for c, _ in cluster.applied}
    assert images == {"pinned": f"{pushed.image}@{pushed.digest}", "plain": pushed.image}
    again = engine.run(config, SyncRequest())
    assert [r.action for r in again.results] == [Action.IN_SYNC, Action.IN_SYNC]
    assert report.ok
