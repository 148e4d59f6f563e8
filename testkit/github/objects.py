"""REST object builders: the JSON shapes of rest-openapi-subset.json, built from the state."""

from __future__ import annotations

import hashlib
import urllib.parse
from collections.abc import Mapping
from typing import Any

from testkit.github.state import (
    Commit,
    Deployment,
    DeploymentStatus,
    Repo,
    combined_state,
    node_id,
    page,
)

Json = Any

HTML_BASE = "https://github.com"


def quote(segment: str) -> str:
    """A path segment as GitHub puts it in URLs (slashes kept)."""
    return urllib.parse.quote(segment, safe="/")


_BOT_LOGIN = "standin-bot"
_BOT_ID = 9_000_001


def simple_user(login: str, user_id: int, kind: str, api: str) -> dict[str, Json]:
    prefix = "orgs" if kind == "Organization" else "users"
    user_api = f"{api}/users/{login}"
    return {
        "login": login,
        "id": user_id,
        "node_id": node_id(f"04:{kind}{user_id}"),
        "avatar_url": f"https://avatars.githubusercontent.com/u/{user_id}?v=4",
        "gravatar_id": "",
        "url": f"{api}/{prefix}/{login}",
        "html_url": f"{HTML_BASE}/{login}",
        "followers_url": f"{user_api}/followers",
        "following_url": f"{user_api}/following{{/other_user}}",
        "gists_url": f"{user_api}/gists{{/gist_id}}",
        "starred_url": f"{user_api}/starred{{/owner}}{{/repo}}",
        "subscriptions_url": f"{user_api}/subscriptions",
        "organizations_url": f"{user_api}/orgs",
        "repos_url": f"{api}/{prefix}/{login}/repos",
        "events_url": f"{user_api}/events{{/privacy}}",
        "received_events_url": f"{user_api}/received_events",
        "type": kind,
        "user_view_type": "public",
        "site_admin": False,
    }


def minimal_repository(repo: Repo, api: str) -> dict[str, Json]:
    base = f"{api}/repos/{repo.owner}/{repo.name}"
    return {
        "id": repo.id,
        "node_id": node_id(f"010:Repository{repo.id}"),
        "name": repo.name,
        "full_name": repo.full_name,
        "private": repo.private,
        "owner": simple_user(repo.owner, repo.owner_id, repo.owner_type, api),
        "html_url": f"{HTML_BASE}/{repo.full_name}",
        "description": None,
        "fork": False,
        "url": base,
        "forks_url": f"{base}/forks",
        "keys_url": f"{base}/keys{{/key_id}}",
        "collaborators_url": f"{base}/collaborators{{/collaborator}}",
        "teams_url": f"{base}/teams",
        "hooks_url": f"{base}/hooks",
        "issue_events_url": f"{base}/issues/events{{/number}}",
        "events_url": f"{base}/events",
        "assignees_url": f"{base}/assignees{{/user}}",
        "branches_url": f"{base}/branches{{/branch}}",
        "tags_url": f"{base}/tags",
        "blobs_url": f"{base}/git/blobs{{/sha}}",
        "git_tags_url": f"{base}/git/tags{{/sha}}",
        "git_refs_url": f"{base}/git/refs{{/sha}}",
        "trees_url": f"{base}/git/trees{{/sha}}",
        "statuses_url": f"{base}/statuses/{{sha}}",
        "languages_url": f"{base}/languages",
        "stargazers_url": f"{base}/stargazers",
        "contributors_url": f"{base}/contributors",
        "subscribers_url": f"{base}/subscribers",
        "subscription_url": f"{base}/subscription",
        "commits_url": f"{base}/commits{{/sha}}",
        "git_commits_url": f"{base}/git/commits{{/sha}}",
        "comments_url": f"{base}/comments{{/number}}",
        "issue_comment_url": f"{base}/issues/comments{{/number}}",
        "contents_url": f"{base}/contents/{{+path}}",
        "compare_url": f"{base}/compare/{{base}}...{{head}}",
        "merges_url": f"{base}/merges",
        "archive_url": f"{base}/{{archive_format}}{{/ref}}",
        "downloads_url": f"{base}/downloads",
        "issues_url": f"{base}/issues{{/number}}",
        "pulls_url": f"{base}/pulls{{/number}}",
        "milestones_url": f"{base}/milestones{{/number}}",
        "notifications_url": f"{base}/notifications{{?since,all,participating}}",
        "labels_url": f"{base}/labels{{/name}}",
        "releases_url": f"{base}/releases{{/id}}",
        "deployments_url": f"{base}/deployments",
    }


def full_repository(repo: Repo, api: str) -> dict[str, Json]:
    obj = minimal_repository(repo, api)
    html = obj["html_url"]
    obj.update(
        {
            "git_url": f"git://github.com/{repo.full_name}.git",
            "ssh_url": f"git@github.com:{repo.full_name}.git",
            "clone_url": f"{html}.git",
            "svn_url": html,
            "mirror_url": None,
            "homepage": None,
            "language": "Python",
            "forks_count": 0,
            "stargazers_count": 0,
            "watchers_count": 0,
            "size": 128,
            "default_branch": repo.default_branch,
            "open_issues_count": 0,
            "is_template": False,
            "topics": [],
            "has_issues": True,
            "has_projects": True,
            "has_wiki": False,
            "has_pages": False,
            "has_downloads": True,
            "has_discussions": False,
            "archived": False,
            "disabled": False,
            "visibility": "private" if repo.private else "public",
            "pushed_at": repo.pushed_at,
            "created_at": repo.created_at,
            "updated_at": repo.pushed_at,
            "permissions": {
                "admin": False,
                "maintain": False,
                "push": False,
                "triage": False,
                "pull": True,
            },
            "allow_forking": True,
            "web_commit_signoff_required": False,
            "license": None,
            "forks": 0,
            "open_issues": 0,
            "watchers": 0,
            "network_count": 0,
            "subscribers_count": 1,
        }
    )
    if repo.owner_type == "Organization":
        obj["organization"] = obj["owner"]
    return obj


def commit_object(repo: Repo, commit: Commit, api: str) -> dict[str, Json]:
    base = f"{api}/repos/{repo.owner}/{repo.name}"
    html = f"{HTML_BASE}/{repo.full_name}"
    tree = hashlib.sha1(b"tree" + commit.sha.encode(), usedforsecurity=False).hexdigest()
    person = {
        "name": commit.author,
        "email": "standin-bot@users.noreply.github.com",
        "date": commit.date,
    }
    return {
        "sha": commit.sha,
        "node_id": node_id(f"06:Commit{repo.id}:{commit.sha}"),
        "commit": {
            "author": person,
            "committer": dict(person),
            "message": commit.message,
            "tree": {"sha": tree, "url": f"{base}/git/trees/{tree}"},
            "url": f"{base}/git/commits/{commit.sha}",
            "comment_count": 0,
            "verification": {
                "verified": False,
                "reason": "unsigned",
                "signature": None,
                "payload": None,
                "verified_at": None,
            },
        },
        "url": f"{base}/commits/{commit.sha}",
        "html_url": f"{html}/commit/{commit.sha}",
        "comments_url": f"{base}/commits/{commit.sha}/comments",
        "author": simple_user(_BOT_LOGIN, _BOT_ID, "User", api),
        "committer": simple_user(_BOT_LOGIN, _BOT_ID, "User", api),
        "parents": [
            {"sha": p, "url": f"{base}/commits/{p}", "html_url": f"{html}/commit/{p}"}
            for p in commit.parents
        ],
    }


def branch_object(repo: Repo, branch: str, sha: str, api: str) -> dict[str, Json]:
    base = f"{api}/repos/{repo.owner}/{repo.name}/branches/{quote(branch)}"
    return {
        "name": branch,
        "commit": commit_object(repo, repo.commits[sha], api),
        "_links": {"self": base, "html": f"{HTML_BASE}/{repo.full_name}/tree/{branch}"},
        "protected": False,
        "protection": {
            "enabled": False,
            "required_status_checks": {"enforcement_level": "off", "contexts": [], "checks": []},
        },
        "protection_url": f"{base}/protection",
    }


def git_ref(repo: Repo, branch: str, sha: str, api: str) -> dict[str, Json]:
    base = f"{api}/repos/{repo.owner}/{repo.name}/git"
    return {
        "ref": f"refs/heads/{branch}",
        "node_id": node_id(f"03:Ref{repo.id}:refs/heads/{branch}"),
        "url": f"{base}/refs/heads/{quote(branch)}",
        "object": {"type": "commit", "sha": sha, "url": f"{base}/commits/{sha}"},
    }


def combined_status(
    repo: Repo, sha: str, api: str, query: Mapping[str, list[str]] | None = None
) -> dict[str, Json]:
    base = f"{api}/repos/{repo.owner}/{repo.name}"
    checks = [c for c in repo.checks.get(sha, []) if c.status]
    statuses = [
        {
            "url": f"{base}/statuses/{sha}",
            "avatar_url": f"https://avatars.githubusercontent.com/u/{_BOT_ID}?v=4",
            "id": c.id,
            "node_id": node_id(f"013:StatusContext{c.id}"),
            "state": c.state,
            "description": f"{c.name}: {c.state}",
            "target_url": f"https://ci.example.com/{c.id}",
            "context": c.name,
            "created_at": c.created_at,
            "updated_at": c.created_at,
        }
        for c in checks
    ]
    return {
        "state": combined_state(checks),
        "statuses": page(statuses, query or {})[0],
        "sha": sha,
        "total_count": len(statuses),
        "repository": minimal_repository(repo, api),
        "commit_url": f"{base}/commits/{sha}",
        "url": f"{base}/commits/{sha}/status",
    }


_ACTIONS_APP_ID = 15368


def check_runs(repo: Repo, sha: str, api: str, query: Mapping[str, list[str]]) -> dict[str, Json]:
    base = f"{api}/repos/{repo.owner}/{repo.name}"
    app = {
        "id": _ACTIONS_APP_ID,
        "slug": "github-actions",
        "node_id": "MDM6QXBwMTUzNjg=",
        "owner": simple_user("github", 9919, "Organization", api),
        "name": "GitHub Actions",
        "description": "Automate your workflow from idea to production",
        "external_url": "https://help.github.com/en/actions",
        "html_url": f"{HTML_BASE}/apps/github-actions",
        "created_at": "2018-07-30T09:30:17Z",
        "updated_at": "2019-12-10T19:04:12Z",
        "permissions": {
            "actions": "write",
            "checks": "write",
            "contents": "write",
            "metadata": "read",
        },
        "events": ["check_run", "check_suite", "push"],
    }
    wanted_name = query["check_name"][0] if query.get("check_name") else None
    wanted_status = query["status"][0] if query.get("status") else None
    runs = []
    for c in repo.checks.get(sha, []):
        if not c.run:
            continue
        done = c.state != "pending"
        status = "completed" if done else "in_progress"
        if wanted_name is not None and c.name != wanted_name:
            continue
        if wanted_status is not None and status != wanted_status:
            continue
        runs.append(
            {
                "id": c.id,
                "head_sha": sha,
                "node_id": node_id(f"08:CheckRun{c.id}"),
                "external_id": "",
                "url": f"{base}/check-runs/{c.id}",
                "html_url": f"{HTML_BASE}/{repo.full_name}/runs/{c.id}",
                "details_url": f"{HTML_BASE}/{repo.full_name}/runs/{c.id}",
                "status": status,
                "conclusion": ("failure" if c.state == "error" else c.state) if done else None,
                "started_at": c.created_at,
                "completed_at": c.created_at if done else None,
                "output": {
                    "title": None,
                    "summary": None,
                    "text": None,
                    "annotations_count": 0,
                    "annotations_url": f"{base}/check-runs/{c.id}/annotations",
                },
                "name": c.name,
                "check_suite": {"id": c.id + 1},
                "app": app,
                "pull_requests": [],
            }
        )
    return {"total_count": len(runs), "check_runs": page(runs, query)[0]}


def ancestry(repo: Repo, sha: str, limit: int = 10_000) -> list[str]:
    """sha and its first-parent ancestors, newest first."""
    out: list[str] = []
    current: str | None = sha
    while current is not None and current in repo.commits and len(out) < limit:
        out.append(current)
        parents = repo.commits[current].parents
        current = parents[0] if parents else None
    return out


def comparison(
    repo: Repo, base: str, head: str, basehead: str, api: str, *, page: int, per_page: int
) -> dict[str, Json] | None:
    """GET /compare/{base}...{head} over first-parent history; None for unrelated histories."""
    head_line, base_line = ancestry(repo, head), ancestry(repo, base)
    if base in head_line:
        ahead, behind, merge_base = head_line[: head_line.index(base)], [], base
    elif head in base_line:
        ahead, behind, merge_base = [], base_line[: base_line.index(head)], head
    else:
        common = next((c for c in head_line if c in set(base_line)), None)
        if common is None:
            return None
        ahead, behind = head_line[: head_line.index(common)], base_line[: base_line.index(common)]
        merge_base = common
    if base == head:
        status = "identical"
    elif not behind:
        status = "ahead"
    else:
        status = "behind" if not ahead else "diverged"
    shown = list(reversed(ahead))[(page - 1) * per_page : page * per_page]
    html = f"{HTML_BASE}/{repo.full_name}"
    return {
        "url": f"{api}/repos/{repo.owner}/{repo.name}/compare/{basehead}",
        "html_url": f"{html}/compare/{basehead}",
        "permalink_url": f"{html}/compare/{repo.owner}:{base}...{repo.owner}:{head}",
        "diff_url": f"{html}/compare/{basehead}.diff",
        "patch_url": f"{html}/compare/{basehead}.patch",
        "base_commit": commit_object(repo, repo.commits[base], api),
        "merge_base_commit": commit_object(repo, repo.commits[merge_base], api),
        "status": status,
        "ahead_by": len(ahead),
        "behind_by": len(behind),
        "total_commits": len(ahead),
        "commits": [commit_object(repo, repo.commits[c], api) for c in shown],
        "files": [],
    }


def deployment_object(repo: Repo, d: Deployment, api: str) -> dict[str, Json]:
    base = f"{api}/repos/{repo.owner}/{repo.name}"
    return {
        "url": f"{base}/deployments/{d.id}",
        "id": d.id,
        "node_id": node_id(f"010:Deployment{d.id}"),
        "sha": d.sha,
        "ref": d.ref,
        "task": d.task,
        "payload": d.payload,
        "original_environment": d.environment,
        "environment": d.environment,
        "description": d.description,
        "creator": simple_user(_BOT_LOGIN, _BOT_ID, "User", api),
        "created_at": d.created_at,
        "updated_at": d.statuses[-1].created_at if d.statuses else d.created_at,
        "statuses_url": f"{base}/deployments/{d.id}/statuses",
        "repository_url": base,
        "transient_environment": d.transient,
        "production_environment": d.production,
    }


def deployment_status_object(
    repo: Repo, d: Deployment, s: DeploymentStatus, api: str
) -> dict[str, Json]:
    base = f"{api}/repos/{repo.owner}/{repo.name}"
    obj: dict[str, Json] = {
        "url": f"{base}/deployments/{d.id}/statuses/{s.id}",
        "id": s.id,
        "node_id": node_id(f"016:DeploymentStatus{s.id}"),
        "state": s.state,
        "creator": simple_user(_BOT_LOGIN, _BOT_ID, "User", api),
        "description": s.description,
        "environment": s.environment,
        "target_url": s.log_url,
        "created_at": s.created_at,
        "updated_at": s.created_at,
        "deployment_url": f"{base}/deployments/{d.id}",
        "repository_url": base,
        "log_url": s.log_url,
    }
    if s.environment_url:
        obj["environment_url"] = s.environment_url
    return obj
