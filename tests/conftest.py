"""Shared fixtures: the real control plane, the GitHub stand-in, the Pub/Sub emulator."""

import os
from typing import Any

# Before anything imports gRPC (testkit.pubsub_fixtures does): testkit starts its servers with a
# preexec_fn, a real fork(), and gRPC's fork support would restart its poller in the child, which
# then aborts with "epoll_wait: Bad file descriptor" (grpc/grpc#43055). Nothing here forks to run
# gRPC in the child, so it is off; the processes started inherit it.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

pytest_plugins = [
    "testkit.controlplane_fixtures",
    "testkit.github_fixtures",
    "testkit.manifests",
    "testkit.pubsub_fixtures",
    "testkit.registry_fixtures",
    "testkit.serve_world",
    "testkit.webhook_receiver",
]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """What the property tests (tests/integration/test_properties.py) tried, by outcome."""
    from testkit.fuzz import EXAMPLES, TALLY

    if TALLY:
        terminalreporter.section(
            f"generated cases by outcome (RECONCILER_FUZZ_EXAMPLES={EXAMPLES})"
        )
        for outcome, count in sorted(TALLY.items()):
            terminalreporter.write_line(f"{count:8,}  {outcome}")
