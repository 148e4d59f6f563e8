"""GitHub points of one sync's head query at N sites, with and without each branch's history.

The real GitHub adapter against the stand-in, whose GraphQL cost model is GitHub's (every
repository field and every connection page is a request; cost = requests / 100, rounded up).

    .venv/bin/python -m bench.github_points [-n 1000] [--lookback 20,0]
"""

from __future__ import annotations

import argparse
import sys

from reconciler.adapters.github import GitHubSource
from reconciler.core.model import RepoRef
from reconciler.settings import GitHubSettings
from testkit.github import GitHubStandIn, random_sha

TOKEN = "ghp_points"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=1000, help="sites, one repository each")
    ap.add_argument("--lookback", default="20,0", help="RECONCILER_LOOKBACK values to compare")
    args = ap.parse_args()
    with GitHubStandIn(tokens=[TOKEN]) as gh:
        refs = []
        for i in range(args.n):
            repo = f"org/site-{i:05d}"
            gh.add_repo(repo, {"main": random_sha()})
            for _ in range(3):  # a little history
                gh.set_branch(repo, "main")
            refs.append(RepoRef(repo, "main"))
        for lookback in (int(x) for x in args.lookback.split(",")):
            gh.reset_stats()
            settings = GitHubSettings(api_url=gh.url, token=TOKEN, lookback=lookback)
            GitHubSource(settings).resolve(refs)
            stats = gh.stats()
            points = stats["by_token"][TOKEN]["points"].get("graphql", 0)
            print(
                f"N = {args.n}, lookback {lookback}: {stats['graphql_queries']} GraphQL queries, "
                f"{points} points"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
