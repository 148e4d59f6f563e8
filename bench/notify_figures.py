"""What notifications cost a sync at N sites: time in Notifier.observe, annotation writes,
GitHub compare requests, and delivery to a loopback webhook receiver (prints the figures).

    .venv/bin/python -m bench.notify_figures --sites 1000
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import uuid
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from reconciler.adapters.delivery import WebhookSender
from reconciler.adapters.github import GitHubSource
from reconciler.core.config import sites as config
from reconciler.core.model import Action, SitePlan, SiteResult, SyncReport
from reconciler.settings import GitHubSettings
from reconciler.sync.notifier import Notifier
from reconciler.sync.outbox import Outbox
from testkit.github import GitHubStandIn
from testkit.github_fixtures import TOKEN


class Store:
    def __init__(self) -> None:
        self.notes: dict[str, str] = {}
        self.writes = 0

    def annotate(
        self, namespace: str, deployment: str, key: str, value: str, kind: str = "Deployment"
    ) -> None:
        self.notes[deployment] = value
        self.writes += 1


def receiver() -> tuple[ThreadingHTTPServer, list[int]]:
    got: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            got.append(1)
            self.send_response(204)
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, got


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sites", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    n = args.sites
    text = '[defaults]\nimage = "r/{repo}:{sha}"\n[notify]\nwebhook = { url_env = "HOOK" }\n'
    text += "".join(f'[sites.s{i}]\nrepo = "acme/s{i}"\nbranch = "main"\n' for i in range(n))
    cfg = config.parse(text)
    server, got = receiver()
    with GitHubStandIn(tokens=[TOKEN], validate=False) as gh:
        old, new = {}, {}
        for i in range(n):
            gh.add_repo(f"acme/s{i}", {"main": "0" * 40})
            old[i] = gh.set_branch(f"acme/s{i}", "main", message="before")
            new[i] = gh.set_branch(f"acme/s{i}", "main", message="after", author="Dev")
        store = Store()
        source = GitHubSource(GitHubSettings(api_url=gh.url, token=TOKEN))
        env = {"HOOK": f"http://127.0.0.1:{server.server_address[1]}/hook"}
        box = Outbox(WebhookSender(env), source)
        notifier = Notifier(box, store)

        def report(sha: dict[int, str], action: Action, applied: bool) -> SyncReport:
            results = []
            for i, site in enumerate(cfg.sites):
                plan = SitePlan(site, action, branch="main", sha=sha[i], running_sha=sha[i])
                plan = replace(plan, notified=store.notes.get(site.deployment))
                results.append(SiteResult(plan, applied=applied))
            return SyncReport(uuid.uuid4().hex, "bench", False, False, 0.0, 0.0, tuple(results))

        notifier.observe(cfg, report(old, Action.IN_SYNC, False))  # first sight: recorded
        steady, writes = [], store.writes
        for _ in range(args.repeats):
            r = report(old, Action.IN_SYNC, False)
            t0 = time.perf_counter()
            assert notifier.observe(cfg, r) == []
            steady.append(time.perf_counter() - t0)
        steady_writes = store.writes - writes
        gh.reset_stats()
        deploying = report(new, Action.UPDATE, True)
        t0 = time.perf_counter()
        notifier.observe(cfg, deploying)
        t_deploying = time.perf_counter() - t0
        available = report(new, Action.IN_SYNC, False)
        t0 = time.perf_counter()
        sent = notifier.observe(cfg, available)
        t_deployed = time.perf_counter() - t0
        start = time.perf_counter()
        assert box.flush(600)
        drain = time.perf_counter() - start
        compares = gh.stats()["by_route"].get("rest:compare", 0)
    server.shutdown()
    print(f"sites: {n}")
    print(
        f"observe, nothing changed: median {statistics.median(steady) * 1000:.1f} ms, "
        f"{steady_writes} annotation writes, 0 messages"
    )
    print(f"observe, {n} deploys started: {t_deploying * 1000:.1f} ms (recorded, no message)")
    print(
        f"observe, {n} deploys available: {t_deployed * 1000:.1f} ms, {len(sent)} messages "
        f"queued (the sync returns here)"
    )
    print(
        f"delivery in the background: {len(got)} webhook POSTs and {compares} GitHub compare "
        f"requests in {drain:.1f} s ({len(got) / drain:.0f} messages/s); "
        f"undelivered {box.undelivered}"
    )
    print(f"annotation writes in total: {store.writes}")


if __name__ == "__main__":
    main()
