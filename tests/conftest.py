"""Shared fixtures: the real control plane, the GitHub stand-in, the Pub/Sub emulator."""

pytest_plugins = [
    "tests.support.controlplane_fixtures",
    "tests.support.github_fixtures",
    "tests.support.pubsub_fixtures",
    "tests.support.serve_world",
]
