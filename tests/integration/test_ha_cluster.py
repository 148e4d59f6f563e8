"""Two `reconciler serve` replicas on the local cluster, as an operator deploys them for
availability: the shipped Lease (60 s) and lease wait, distinct pod names, each replica its own
ServiceAccount with the shipped Roles. The holder is killed (SIGKILL) right after its patches;
the survivor answers a trigger, takes the Lease over, follows the rollout the dead replica
started and rolls the crash-looping commit back exactly once (#24).

Nothing here sleeps or asserts a time: each step waits on what the API server or the survivor
says. The takeover time and what the survivor answers meanwhile are printed (pytest -s).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from testkit.admission_gate import AdmissionGate
from testkit.controlplane import (
    LocalCluster,
    crashloop_sha,
    kubeconfig_for_token,
    serviceaccount_token,
)
from testkit.deployments import create_deployment, get_deployment
from testkit.github import GitHubStandIn, random_sha
from testkit.github_fixtures import TOKEN
from testkit.serve_process import ServeProcess
from testkit.serve_world import TRIGGER
from testkit.wait import wait_until

REPO = Path(__file__).resolve().parents[2]
REPLICAS = ("reconciler-0", "reconciler-1")
LONG = 240.0  # a bound for waits that span the 60 s Lease, never a measured figure


@pytest.fixture
def namespaces(cluster_api_client: Any, cluster_namespace: str) -> Iterator[tuple[str, str]]:
    """blog's (the Lease's and the replicas' ServiceAccounts' too) and shop's."""
    core = kubernetes.client.CoreV1Api(cluster_api_client)
    name = f"t-ha-shop-{uuid.uuid4().hex[:6]}"
    core.create_namespace(
        kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name=name))
    )
    yield cluster_namespace, name
    with contextlib.suppress(Exception):
        core.delete_namespace(name, propagation_policy="Background")


def grant_shipped_roles(cluster: LocalCluster, home: str, sites_ns: tuple[str, ...]) -> None:
    """Each replica's ServiceAccount (in `home`, the Lease's namespace) gets the Role k8s/rbac
    ships in every site namespace and the Lease Role k8s/lease-rbac.yaml ships in `home`."""
    subjects = [f"--serviceaccount={home}:{name}" for name in REPLICAS]
    for ns in sites_ns:
        cluster.kubectl("apply", "-n", ns, "-f", str(REPO / "k8s" / "rbac" / "role.yaml"))
        cluster.kubectl(
            "create", "rolebinding", "reconciler-ha", "-n", ns, "--role=reconciler", *subjects
        )
    cluster.kubectl("apply", "-n", home, "-f", str(REPO / "k8s" / "lease-rbac.yaml"))
    cluster.kubectl(
        "create",
        "rolebinding",
        "reconciler-lease-ha",
        "-n",
        home,
        "--role=reconciler-lease",
        *subjects,
    )


def replica(
    cluster: LocalCluster, gh: GitHubStandIn, sites: Path, *, home: str, name: str
) -> ServeProcess:
    """`reconciler serve` as ServiceAccount `name`, the shipped Lease settings untouched."""
    token = serviceaccount_token(cluster, home, name)
    kubeconfig = kubeconfig_for_token(cluster, token, sites.parent / f"{name}.kubeconfig")
    env = {
        "GITHUB_API_URL": gh.url,
        "GITHUB_TOKEN": TOKEN,
        "KUBECONFIG": str(kubeconfig),
        "RECONCILER_TRIGGER_TOKEN": TRIGGER,
        "POD_NAMESPACE": home,
        "POD_NAME": name,
    }
    return ServeProcess(sites, env, sites.parent / f"{name}.log").start()


def image(api: Any, ns: str, name: str) -> str:
    d = get_deployment(api, ns, name)
    return str(
        next(c["image"] for c in d["spec"]["template"]["spec"]["containers"] if c["name"] == "app")
    )


def lease(api: Any, ns: str) -> Any:
    return kubernetes.client.CoordinationV1Api(api).read_namespaced_lease("reconciler", ns)


def events(api: Any, ns: str, reason: str) -> int:
    items = kubernetes.client.CoreV1Api(api).list_namespaced_event(ns).items
    return sum(1 for e in items if e.involved_object.name == "blog" and e.reason == reason)


def site(proc: ServeProcess, name: str) -> dict[str, Any]:
    return next(s for s in proc.request("GET", "/status")[1]["sites"] if s["site"] == name)


@pytest.fixture
def sites(namespaces: tuple[str, str], tmp_path: Path) -> Path:
    """blog in the Lease's namespace, shop in another; a crash loop is judged within 1 s."""
    home, shop = namespaces
    path = tmp_path / "sites.toml"
    path.write_text(
        '[defaults]\ncontainer = "app"\nverify = "none"\nrollout_timeout = 1\n\n'
        '[service]\nschedule = "0 0 1 1 *"\n\n'  # no scheduled sync during the test
        f'[sites.blog]\nrepo = "acme/blog"\nnamespace = "{home}"\n'
        'image = "gcr.io/p/blog:{sha}"\n\n'
        f'[sites.shop]\nrepo = "acme/shop"\nnamespace = "{shop}"\n'
        'image = "gcr.io/p/shop:{sha}"\n'
    )
    return path


def test_the_survivor_of_a_killed_holder_answers_takes_over_and_rolls_back_once(
    local_cluster: LocalCluster,
    cluster_api_client: Any,
    namespaces: tuple[str, str],
    github: GitHubStandIn,
    sites: Path,
) -> None:
    api, (home, shop_namespace) = cluster_api_client, namespaces
    github.add_repo("acme/blog", {"main": random_sha()})
    github.add_repo("acme/shop", {"main": random_sha()})
    create_deployment(api, home, "blog", "gcr.io/p/blog:before")
    create_deployment(api, shop_namespace, "shop", "gcr.io/p/shop:before")
    grant_shipped_roles(local_cluster, home, (home, shop_namespace))
    with (
        replica(local_cluster, github, sites, home=home, name=REPLICAS[0]) as holder,
        replica(local_cluster, github, sites, home=home, name=REPLICAS[1]) as survivor,
    ):
        for proc in (holder, survivor):  # both startup syncs ran (one after the other), and
            proc.wait_for(  # every rollout they started has ended
                lambda p=proc: all(
                    s.get("rollout") == "available" for s in p.request("GET", "/status")[1]["sites"]
                ),
                timeout=LONG,
                what="both sites available",
            )
        good_blog = image(api, home, "blog")
        bad = github.set_branch("acme/blog", "main", crashloop_sha())
        shop_sha = github.set_branch("acme/shop", "main", random_sha())

        with AdmissionGate(api, shop_namespace, "shop") as gate:
            gate.hold()  # the holder's shop patch stays in flight: it holds the Lease, mid-sync
            status, body = holder.request("POST", "/sync?wait=false", TRIGGER)
            assert status == 202, body
            gate.wait_held(timeout=60)
            wait_until(lambda: bad in image(api, home, "blog"), "the holder's blog patch", 60)
            assert lease(api, home).spec.holder_identity == REPLICAS[0]
            assert holder.proc is not None
            os.killpg(holder.proc.pid, signal.SIGKILL)
            holder.wait_exit()
            killed = time.time()
            gate.release()

        # A trigger to the survivor while the dead holder's Lease has not run out: queued,
        # saying who holds the Lease until when, never a 503.
        status, queued = survivor.request("POST", "/sync/shop?wait=false", TRIGGER)
        assert status == 202, queued
        run = survivor.wait_for(
            lambda: (
                (r := survivor.request("GET", queued["status_url"])[1]).get("waiting_for_lease")
                and r
            ),
            what="the survivor's sync to wait for the Lease",
        )
        assert run["state"] == "queued" and run["waiting_for_lease"]["holder"] == REPLICAS[0]
        leader = survivor.wait_for(  # the Lease as the page shows it is read every 2 s at most
            lambda: (
                (v := survivor.request("GET", "/status")[1]["leader"])["holder"] == REPLICAS[0]
                and v
            ),
            what="the survivor's page to name the holder",
        )
        assert leader["identity"] == REPLICAS[1] and leader["holder"] == REPLICAS[0]
        assert leader["leading"] is False and leader["waiting"]["holder"] == REPLICAS[0]
        assert (
            f'reconciler_leader{{pod="{REPLICAS[1]}"}} 0.0'
            in survivor.request("GET", "/metrics")[1]
        )
        page = survivor.request("GET", "/")[1]
        assert REPLICAS[1] in page and f"Lease held by <code>{REPLICAS[0]}</code>" in page

        answers: dict[str, Any] = {}

        def trigger() -> None:
            posted = time.time()
            answers["answer"] = survivor.request("POST", "/sync/shop", TRIGGER, timeout=LONG)
            answers["seconds"] = time.time() - posted

        waiting = threading.Thread(target=trigger)
        waiting.start()
        waiting.join(LONG)
        status, body = answers["answer"]
        assert status == 200 and body["ok"], body  # the default wait outlasts the dead Lease
        assert f"gcr.io/p/shop:{shop_sha}" == image(api, shop_namespace, "shop")
        first = survivor.request("GET", queued["status_url"])[1]
        assert first["state"] == "done" and first["ok"], first  # the queued sync ran too

        # The rollout the dead holder started: found, followed, rolled back once.
        rolled = survivor.wait_for(
            lambda: (s := site(survivor, "blog"))["state"] == "rolled-back" and s,
            timeout=LONG,
            what="the survivor to roll the orphaned rollout back",
        )
        assert rolled["failed_sha"] == bad
        assert image(api, home, "blog") == good_blog
        status, again = survivor.request("POST", "/sync", TRIGGER)
        assert status == 200, again
        blog = next(r for r in again["results"] if r["site"] == "blog")
        assert blog["action"] == "skip" and "failed" in blog["reason"]
        assert events(api, home, "RolledBack") == 1 and events(api, home, "RolloutFailed") == 1
        wait_until(  # given back after each sync (a follow-up the sync's writes woke may hold it)
            lambda: lease(api, home).spec.holder_identity is None,
            "the survivor to give the Lease back",
            timeout=LONG,
        )

        print(  # the queued sync started as soon as the survivor held the Lease
            f"\ntakeover with the default Lease: {first['started_at'] - killed:.1f} s from SIGKILL "
            f"to the survivor's sync holding the Lease; meanwhile POST /sync/shop?wait=false: "
            f"202 {queued}; GET {queued['status_url']}: {run}; a blocking POST /sync/shop: "
            f"200 after {answers['seconds']:.1f} s"
        )
