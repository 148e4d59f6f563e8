"""The try-it demo (`scripts/demo`): a local cluster, example sites, and `reconciler serve` on them.

Modules: world (the example sites, sites.toml and Deployments), build (the cluster binaries, with
progress), control (the loopback endpoint `scripts/demo push` talks to), run (start everything,
stop everything), __main__ (the command line).
"""
