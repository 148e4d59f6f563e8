"""The control plane's errors: it failed to start, or its binaries cannot be had."""

from __future__ import annotations


class ControlPlaneError(RuntimeError):
    """The control plane failed to start (the message carries the log tails)."""


class ControlPlaneUnavailable(ControlPlaneError):
    """The binaries could not be found or built. ``go_missing``: no Go toolchain to build."""

    def __init__(self, message: str, *, go_missing: bool = False) -> None:
        super().__init__(message)
        self.go_missing = go_missing


class PortInUse(Exception):
    """A child process lost the race for a port picked by free_port(); start again."""
