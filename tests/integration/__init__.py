"""Integration tests: against the real servers (kube-apiserver, the local cluster, Pub/Sub, the
registry, waitress on loopback, Chromium, the GitHub stand-in)."""
