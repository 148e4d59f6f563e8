"""Notifications: their settings, when to send one, how it reads (pure)."""
