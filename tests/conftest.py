"""Shared fixtures: the real control plane, the GitHub stand-in, the Pub/Sub emulator."""

pytest_plugins = [
    "testkit.controlplane_fixtures",
    "testkit.github_fixtures",
    "testkit.manifests",
    "testkit.pubsub_fixtures",
    "testkit.registry_fixtures",
    "testkit.serve_world",
    "testkit.webhook_receiver",
]
