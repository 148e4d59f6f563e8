"""Trigger messages (webhooks, Cloud Build, gcr, Cloud Scheduler) into hints (pure)."""
