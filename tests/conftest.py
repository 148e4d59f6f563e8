"""Shared fixtures: the real control plane, the GitHub stand-in, the Pub/Sub emulator."""

from typing import Any

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
