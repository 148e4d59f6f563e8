"""The GitHub adapter (the only package that talks to PyGithub)."""

from reconciler.adapters.github.client import GitHubDeployments, GitHubSettings, GitHubSource

__all__ = ["GitHubDeployments", "GitHubSettings", "GitHubSource"]
