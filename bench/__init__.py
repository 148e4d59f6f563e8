"""Benchmark: what a sync costs at N sites, against the straightforward per-site loop.

Run ``.venv/bin/python -m bench.run`` from the repository root (see bench/README.md).
"""
