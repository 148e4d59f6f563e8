"""Unit tests: pure, no servers, no binaries; the everyday loop (a few seconds)."""
