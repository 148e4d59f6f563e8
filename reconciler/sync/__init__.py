"""Orchestration: runs syncs, commands and notifications through the ports (threads live here)."""
