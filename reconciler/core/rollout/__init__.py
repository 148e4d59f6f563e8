"""Rollouts: state, failure, holds, the patches that roll back, hold and resume, history (pure)."""
