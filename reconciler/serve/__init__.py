"""Serve mode: the long-running service, its triggers, the web app and the server."""
