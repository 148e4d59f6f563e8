"""The GitHub adapter (the only package that talks to PyGithub), by concern: the client and its
rate-limit rules, branch heads, commit checks, compares and GitHub Deployments."""

from reconciler.adapters.github.deployments import GitHubDeployments
from reconciler.adapters.github.source import GitHubSource
from reconciler.settings import GitHubSettings

__all__ = ["GitHubDeployments", "GitHubSettings", "GitHubSource"]
