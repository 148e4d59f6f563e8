"""REST routes for writing to a repository: Contents API, Git data API, pull requests.

Writes (PUT contents, POST blobs/trees/commits/refs, PATCH refs, POST/PATCH pulls) answer 401 to
anonymous callers and 403 to a token the repository denies push (`deny_push`). A protected branch
(`protect_branch`) refuses a direct write the way GitHub does, with a status that depends on the
route (409 from the Contents API, 422 from a ref update), so a client must match on the message.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import time
from typing import Any

from testkit.github import objects
from testkit.github.git import BLOB_MODES, EMPTY_TREE, TREE_MODE, Entry, GitCommit, Person
from testkit.github.gitstate import (
    Pull,
    commit_changes,
    is_ancestor,
    person,
    read_file,
    record_commit,
    tree_of,
)
from testkit.github.replies import Reply
from testkit.github.rest import _REPO_PREFIX, RestRequest, _json_body, route
from testkit.github.state import Repo, iso, node_id, page, resolve_commit

Json = Any

_DOCS = "https://docs.github.com/rest"
_CONTENTS_DOCS = f"{_DOCS}/repos/contents"
_GIT_DOCS = f"{_DOCS}/git"
_PULLS_DOCS = f"{_DOCS}/pulls/pulls"
_PULL_IDS = itertools.count(3_000_001)
CONTENTS_LIMIT = 1024 * 1024  # larger files: GET contents answers encoding "none", no content
RULE_VIOLATION = "Repository rule violations found\n\nChanges must be made through a pull request."


# ---- shared ------------------------------------------------------------------------------------


def _refused(req: RestRequest, branch: str | None) -> Reply | None:
    """401/403 for a caller that may not write; the protection answer for a protected branch."""
    if req.caller.token is None:
        return req.error(401, "Requires authentication")
    if req.caller.token in req.repo.push_denied:
        return req.error(403, "Resource not accessible by personal access token")
    if branch is not None and branch in req.repo.protected:
        if req.route.operation_id == "git/update-ref":
            return req.error(422, f"Protected branch update failed for refs/heads/{branch}.")
        return req.error(409, RULE_VIOLATION)
    return None


def _write_body(req: RestRequest) -> Json | Reply:
    """The JSON body of a write no branch protection concerns, or the answer that refuses it."""
    body = _json_body(req)
    if isinstance(body, Reply):
        return body
    return _refused(req, None) or body


def _base(repo: Repo, api: str) -> str:
    return f"{api}/repos/{repo.owner}/{repo.name}"


def _who(p: Person) -> dict[str, str]:
    return {"name": p.name, "email": p.email, "date": iso(p.epoch)}


def _person_of(body: Json, key: str, default: Person) -> Person:
    given = body.get(key) if isinstance(body, dict) else None
    if not isinstance(given, dict):
        return default
    return person(given.get("name"), given.get("email"))


def _verification() -> dict[str, Json]:
    return {
        "verified": False,
        "reason": "unsigned",
        "signature": None,
        "payload": None,
        "verified_at": None,
    }


def git_commit_object(repo: Repo, c: GitCommit, api: str) -> dict[str, Json]:
    base, html = _base(repo, api), f"{objects.HTML_BASE}/{repo.full_name}"
    return {
        "sha": c.sha,
        "node_id": node_id(f"06:Commit{repo.id}:{c.sha}"),
        "url": f"{base}/git/commits/{c.sha}",
        "html_url": f"{html}/commit/{c.sha}",
        "author": _who(c.author),
        "committer": _who(c.committer),
        "tree": {"sha": c.tree, "url": f"{base}/git/trees/{c.tree}"},
        "message": c.message,
        "parents": [
            {"sha": p, "url": f"{base}/git/commits/{p}", "html_url": f"{html}/commit/{p}"}
            for p in c.parents
        ],
        "verification": _verification(),
    }


def _any_commit(repo: Repo, sha: str) -> GitCommit | None:
    """The git commit, or a view of a commit that has none (empty tree, its parents)."""
    found = repo.git.commits.get(sha)
    if found is not None:
        return found
    legacy = repo.commits.get(sha)
    if legacy is None:
        return None
    who = Person(legacy.author, "standin-bot@users.noreply.github.com", 0)
    return GitCommit(sha, EMPTY_TREE, legacy.parents, who, who, legacy.message)


# ---- Contents API ------------------------------------------------------------------------------


def _content_links(repo: Repo, api: str, path: str, ref: str, sha: str) -> dict[str, str]:
    html = f"{objects.HTML_BASE}/{repo.full_name}"
    quoted = objects.quote(path)
    return {
        "url": f"{_base(repo, api)}/contents/{quoted}?ref={objects.quote(ref)}",
        "git_url": f"{_base(repo, api)}/git/blobs/{sha}",
        "html_url": f"{html}/blob/{objects.quote(ref)}/{quoted}",
        "download_url": f"https://raw.githubusercontent.com/{repo.full_name}/{ref}/{quoted}",
    }


def _content_entry(repo: Repo, api: str, path: str, ref: str, e: Entry) -> dict[str, Json]:
    links = _content_links(repo, api, path, ref, e.sha)
    is_dir = e.mode == TREE_MODE
    if is_dir:
        links["download_url"] = None  # type: ignore[assignment]
        links["git_url"] = f"{_base(repo, api)}/git/trees/{e.sha}"
    return {
        "type": "dir" if is_dir else "file",
        "size": 0 if is_dir else len(repo.git.blobs[e.sha]),
        "name": path.rsplit("/", 1)[-1],
        "path": path,
        "sha": e.sha,
        **links,
        "_links": {"self": links["url"], "git": links["git_url"], "html": links["html_url"]},
    }


def _base64_lines(data: bytes) -> str:
    """Base64 in lines of 60 characters, each ending in a newline, as GitHub sends content."""
    text = base64.b64encode(data).decode()
    return "".join(text[i : i + 60] + "\n" for i in range(0, len(text), 60))


@route(
    "rest:contents",
    "GET",
    f"{_REPO_PREFIX}/contents/{{path}}",
    "repos/get-content",
    f"{_CONTENTS_DOCS}#get-repository-content",
)
def _get_content(req: RestRequest) -> Reply:
    repo, path = req.repo, req.params["path"].strip("/")
    ref = (req.query.get("ref") or [repo.default_branch])[0]
    sha = resolve_commit(repo, ref)
    if sha is None:
        return req.error(404, f"No commit found for the ref {ref}")
    entry = repo.git.lookup(tree_of(repo, sha), path)
    if entry is None or not path:
        return req.error(404, "Not Found")
    if entry.mode == TREE_MODE:
        listing = [
            _content_entry(repo, req.api, f"{path}/{e.name}", ref, e)
            for e in repo.git.trees[entry.sha]
        ]
        return req.ok(listing)
    obj = _content_entry(repo, req.api, path, ref, entry)
    data = repo.git.blobs[entry.sha]
    if len(data) > CONTENTS_LIMIT:  # GitHub: 1-100 MB files come without their content
        obj.update(encoding="none", content="")
    else:
        obj.update(encoding="base64", content=_base64_lines(data))
    return req.ok(obj)


def _decoded(req: RestRequest, text: str) -> bytes | Reply:
    try:
        return base64.b64decode(text.replace("\n", ""), validate=True)
    except (binascii.Error, ValueError):
        return req.error(422, "content is not valid Base64")


@route(
    "rest:contents-put",
    "PUT",
    f"{_REPO_PREFIX}/contents/{{path}}",
    "repos/create-or-update-file-contents",
    f"{_CONTENTS_DOCS}#create-or-update-file-contents",
)
def _put_content(req: RestRequest) -> Reply:
    body = _json_body(req)
    if isinstance(body, Reply):
        return body
    repo, path = req.repo, req.params["path"].strip("/")
    branch = body.get("branch") or repo.default_branch
    refused = _refused(req, branch)
    if refused is not None:
        return refused
    head = repo.branches.get(branch)
    if head is None:
        return req.error(404, f"Branch {branch} not found")
    data = _decoded(req, body["content"])
    if isinstance(data, Reply):
        return data
    current = read_file(repo, head, path)
    given = body.get("sha")
    if current is not None and given is None:
        return req.error(422, 'Invalid request.\n\n"sha" wasn\'t supplied.')
    if given is not None and (current is None or current[1] != given):
        return req.error(409, f"{path} is at {current[1] if current else ''} but expected {given}")
    committer = _person_of(body, "committer", person())
    author = _person_of(body, "author", committer)
    sha = commit_changes(
        repo, head, {path: data}, body["message"], author=author, committer=committer
    )
    repo.branches[branch] = sha
    entry = repo.git.lookup(tree_of(repo, sha), path)
    assert entry is not None
    out = {
        "content": _content_entry(repo, req.api, path, branch, entry),
        "commit": git_commit_object(repo, repo.git.commits[sha], req.api),
    }
    return req.answer(200 if current is not None else 201, out)


# ---- Git data API ------------------------------------------------------------------------------


@route(
    "rest:git-blobs-create",
    "POST",
    f"{_REPO_PREFIX}/git/blobs",
    "git/create-blob",
    f"{_GIT_DOCS}/blobs#create-a-blob",
)
def _create_blob(req: RestRequest) -> Reply:
    body = _write_body(req)
    if isinstance(body, Reply):
        return body
    encoding = body.get("encoding", "utf-8")
    if encoding not in ("utf-8", "utf8", "base64"):
        return req.error(422, f"encoding must be utf-8 or base64, not {encoding}")
    data = body["content"].encode() if encoding != "base64" else _decoded(req, body["content"])
    if isinstance(data, Reply):
        return data
    sha = req.repo.git.put_blob(data)
    return req.answer(201, {"sha": sha, "url": f"{_base(req.repo, req.api)}/git/blobs/{sha}"})


@route(
    "rest:git-blob",
    "GET",
    f"{_REPO_PREFIX}/git/blobs/{{file_sha}}",
    "git/get-blob",
    f"{_GIT_DOCS}/blobs#get-a-blob",
)
def _get_blob(req: RestRequest) -> Reply:
    sha = req.params["file_sha"].lower()
    data = req.repo.git.blobs.get(sha)
    if data is None:
        return req.error(404, "Not Found")
    return req.ok(
        {
            "sha": sha,
            "node_id": node_id(f"04:Blob{req.repo.id}:{sha}"),
            "size": len(data),
            "url": f"{_base(req.repo, req.api)}/git/blobs/{sha}",
            "content": _base64_lines(data),
            "encoding": "base64",
        }
    )


def tree_object(repo: Repo, sha: str, api: str, recursive: bool) -> dict[str, Json]:
    base = _base(repo, api)
    listed = repo.git.walk(sha) if recursive else ((e.name, e) for e in repo.git.trees[sha])
    entries = []
    for path, e in listed:
        kind = e.kind
        item: dict[str, Json] = {"path": path, "mode": e.mode, "type": kind, "sha": e.sha}
        if kind == "blob":
            item.update(size=len(repo.git.blobs[e.sha]), url=f"{base}/git/blobs/{e.sha}")
        elif kind == "tree":
            item["url"] = f"{base}/git/trees/{e.sha}"
        entries.append(item)
    return {"sha": sha, "url": f"{base}/git/trees/{sha}", "tree": entries, "truncated": False}


@route(
    "rest:git-tree",
    "GET",
    f"{_REPO_PREFIX}/git/trees/{{tree_sha}}",
    "git/get-tree",
    f"{_GIT_DOCS}/trees#get-a-tree",
)
def _get_tree(req: RestRequest) -> Reply:
    repo, wanted = req.repo, req.params["tree_sha"]
    sha = wanted.lower() if wanted.lower() in repo.git.trees else None
    if sha is None:  # a branch name or a commit SHA names its commit's tree
        commit = resolve_commit(repo, wanted)
        sha = tree_of(repo, commit) if commit else None
    if sha is None:
        return req.error(404, "Not Found")
    recursive = bool((req.query.get("recursive") or [""])[0])
    return req.ok(tree_object(repo, sha, req.api, recursive))


def _tree_entry(req: RestRequest, item: Json) -> Entry | Reply | None:
    """The entry one item of POST /git/trees asks for (None: delete the path)."""
    repo, mode = req.repo, item.get("mode")
    if not item.get("path") or mode not in (*BLOB_MODES, TREE_MODE):
        return req.error(422, f"tree.path and tree.mode are required: {item}")
    if "content" in item:
        if item.get("sha") is not None:
            return req.error(422, "tree.sha and tree.content cannot both be given")
        return Entry(mode, "", repo.git.put_blob(str(item["content"]).encode()))
    sha = item.get("sha")
    if sha is None:
        return None
    known = repo.git.trees if mode == TREE_MODE else repo.git.blobs
    if sha not in known:
        return req.error(
            422, f"tree.sha {sha} is not a valid {'tree' if mode == TREE_MODE else 'blob'}"
        )
    return Entry(mode, "", sha)


@route(
    "rest:git-trees-create",
    "POST",
    f"{_REPO_PREFIX}/git/trees",
    "git/create-tree",
    f"{_GIT_DOCS}/trees#create-a-tree",
)
def _create_tree(req: RestRequest) -> Reply:
    body = _write_body(req)
    if isinstance(body, Reply):
        return body
    repo, tree = req.repo, body.get("base_tree")
    if tree is not None and tree not in repo.git.trees:
        return req.error(404, "Not Found")  # GitHub: base_tree must be a tree of the repository
    tree = tree or EMPTY_TREE
    for item in body["tree"]:
        entry = _tree_entry(req, item)
        if isinstance(entry, Reply):
            return entry
        tree = repo.git.with_path(tree, item["path"], entry)
    return req.answer(201, tree_object(repo, tree, req.api, recursive=False))


@route(
    "rest:git-commits-create",
    "POST",
    f"{_REPO_PREFIX}/git/commits",
    "git/create-commit",
    f"{_GIT_DOCS}/commits#create-a-commit",
)
def _create_commit(req: RestRequest) -> Reply:
    body = _write_body(req)
    if isinstance(body, Reply):
        return body
    repo = req.repo
    if body["tree"] not in repo.git.trees:
        return req.error(422, "Tree SHA does not exist")
    parents = tuple(body.get("parents") or ())
    if any(p not in repo.commits for p in parents):
        return req.error(422, "Parent SHA does not exist or is not a commit object")
    author = _person_of(body, "author", person())
    committer = _person_of(body, "committer", author)
    sha = repo.git.put_commit(body["tree"], parents, author, committer, body["message"])
    record_commit(repo, repo.git.commits[sha])
    return req.answer(201, git_commit_object(repo, repo.git.commits[sha], req.api))


@route(
    "rest:git-commit",
    "GET",
    f"{_REPO_PREFIX}/git/commits/{{commit_sha}}",
    "git/get-commit",
    f"{_GIT_DOCS}/commits#get-a-commit-object",
)
def _get_git_commit(req: RestRequest) -> Reply:
    c = _any_commit(req.repo, req.params["commit_sha"].lower())
    if c is None:
        return req.error(404, "Not Found")
    return req.ok(git_commit_object(req.repo, c, req.api))


def _branch_of(ref: str) -> str | None:
    for prefix in ("refs/heads/", "heads/"):
        if ref.startswith(prefix) and len(ref) > len(prefix):
            return ref[len(prefix) :]
    return None


@route(
    "rest:git-refs-create",
    "POST",
    f"{_REPO_PREFIX}/git/refs",
    "git/create-ref",
    f"{_GIT_DOCS}/refs#create-a-reference",
)
def _create_ref(req: RestRequest) -> Reply:
    body = _json_body(req)
    if isinstance(body, Reply):
        return body
    ref, repo = body["ref"], req.repo
    branch = _branch_of(ref) if ref.startswith("refs/") else None
    if branch is None:
        return req.error(422, f"{ref} is not a valid ref name.")
    refused = _refused(req, branch)
    if refused is not None:
        return refused
    if branch in repo.branches:
        return req.error(422, "Reference already exists")
    if body["sha"] not in repo.commits:
        return req.error(422, "Object does not exist")
    repo.branches[branch] = body["sha"]
    reply = req.answer(201, objects.git_ref(repo, branch, body["sha"], req.api))
    reply.headers.append(("Location", f"{_base(repo, req.api)}/git/refs/heads/{branch}"))
    return reply


@route(
    "rest:git-refs-update",
    "PATCH",
    f"{_REPO_PREFIX}/git/refs/{{ref}}",
    "git/update-ref",
    f"{_GIT_DOCS}/refs#update-a-reference",
)
def _update_ref(req: RestRequest) -> Reply:
    body = _json_body(req)
    if isinstance(body, Reply):
        return body
    repo, branch = req.repo, _branch_of(req.params["ref"])
    current = repo.branches.get(branch) if branch else None
    if branch is None or current is None:
        return req.error(422, "Reference does not exist")
    refused = _refused(req, branch)
    if refused is not None:
        return refused
    new = body["sha"]
    if new not in repo.commits:
        return req.error(422, "Object does not exist")
    if not body.get("force", False) and not is_ancestor(repo, current, new):
        return req.error(422, "Update is not a fast forward")
    repo.branches[branch] = new
    repo.full_cache = None
    return req.ok(objects.git_ref(repo, branch, new, req.api))


# ---- pull requests -----------------------------------------------------------------------------


def pull_object(repo: Repo, p: Pull, api: str) -> dict[str, Json]:
    base, html = _base(repo, api), f"{objects.HTML_BASE}/{repo.full_name}"
    url, issue = f"{base}/pulls/{p.number}", f"{base}/issues/{p.number}"
    owner = objects.simple_user(repo.owner, repo.owner_id, repo.owner_type, api)
    bot = objects.simple_user("standin-bot", 9_000_001, "User", api)
    full = objects.full_repository(repo, api)

    def side(branch: str, sha: str) -> dict[str, Json]:
        return {"label": f"{repo.owner}:{branch}", "ref": branch, "sha": sha, "repo": full,
                "user": owner}  # fmt: skip

    links = {"self": url, "html": f"{html}/pull/{p.number}", "issue": issue,
             "comments": f"{issue}/comments", "review_comments": f"{url}/comments",
             "review_comment": f"{base}/pulls/comments{{/number}}", "commits": f"{url}/commits",
             "statuses": f"{base}/statuses/{p.head_sha}"}  # fmt: skip
    return {
        "url": url, "id": p.id, "node_id": node_id(f"011:PullRequest{p.id}"),
        "html_url": links["html"], "diff_url": f"{links['html']}.diff",
        "patch_url": f"{links['html']}.patch", "issue_url": issue,
        "commits_url": links["commits"], "review_comments_url": links["review_comments"],
        "review_comment_url": links["review_comment"], "comments_url": links["comments"],
        "statuses_url": links["statuses"], "number": p.number, "state": p.state,
        "locked": False, "title": p.title, "user": bot, "body": p.body, "labels": [],
        "milestone": None, "active_lock_reason": None, "created_at": p.created_at,
        "updated_at": p.updated_at, "closed_at": p.closed_at, "merged_at": p.merged_at,
        "merge_commit_sha": None, "assignee": None, "assignees": [], "requested_reviewers": [],
        "requested_teams": [], "head": side(p.head, p.head_sha), "base": side(p.base, p.base_sha),
        "_links": {k: {"href": v} for k, v in links.items()}, "author_association": "NONE",
        "auto_merge": None, "draft": p.draft,
    }  # fmt: skip


def _full_pull(repo: Repo, p: Pull, api: str) -> dict[str, Json]:
    obj = pull_object(repo, p, api)
    obj.update(
        merged=p.merged_at is not None, mergeable=True, rebaseable=True,
        mergeable_state="clean", merged_by=None, comments=0, review_comments=0,
        maintainer_can_modify=False, commits=1, additions=1, deletions=1, changed_files=1,
    )  # fmt: skip
    return obj


def _refresh(repo: Repo, p: Pull) -> Pull:
    """The pull request with its branches' current heads."""
    if p.state == "open":
        p.head_sha = repo.branches.get(p.head, p.head_sha)
        p.base_sha = repo.branches.get(p.base, p.base_sha)
    return p


@route(
    "rest:pulls", "GET", f"{_REPO_PREFIX}/pulls", "pulls/list", f"{_PULLS_DOCS}#list-pull-requests"
)
def _list_pulls(req: RestRequest) -> Reply:
    repo, q = req.repo, req.query
    state = (q.get("state") or ["open"])[0]
    head = q["head"][0] if q.get("head") else None
    base = q["base"][0] if q.get("base") else None
    found = [
        _refresh(repo, p)
        for p in reversed(repo.pulls.values())
        if (state in ("all", p.state))
        and (head is None or f"{repo.owner}:{p.head}".lower() == head.lower())
        and (base is None or p.base == base)
    ]
    if (q.get("direction") or ["desc"])[0] == "asc":
        found.reverse()
    shown, _, _ = page([pull_object(repo, p, req.api) for p in found], q)
    return req.ok(shown)


def _validation(req: RestRequest, message: str, field: str, code: str = "invalid") -> Reply:
    body = {
        "message": "Validation Failed",
        "errors": [{"resource": "PullRequest", "field": field, "code": code, "message": message}],
        "documentation_url": req.route.doc,
        "status": "422",
    }
    return Reply(422, body, schema_op=req.route.operation_id)


@route(
    "rest:pulls-create",
    "POST",
    f"{_REPO_PREFIX}/pulls",
    "pulls/create",
    f"{_PULLS_DOCS}#create-a-pull-request",
)
def _create_pull(req: RestRequest) -> Reply:
    body = _write_body(req)
    if isinstance(body, Reply):
        return body
    repo = req.repo
    head = str(body.get("head", "")).split(":", 1)[-1]
    base = str(body.get("base", ""))
    if head not in repo.branches:
        return _validation(req, f"head {head} does not exist", "head")
    if base not in repo.branches:
        return _validation(req, f"base {base} does not exist", "base")
    if not body.get("title"):
        return _validation(req, "title is missing", "title", "missing_field")
    if any(p.state == "open" and p.head == head and p.base == base for p in repo.pulls.values()):
        return _validation(
            req, f"A pull request already exists for {repo.owner}:{head}.", "", "custom"
        )
    if is_ancestor(repo, repo.branches[head], repo.branches[base]):
        return _validation(req, f"No commits between {base} and {head}", "", "custom")
    now = iso(time.time())
    number = len(repo.pulls) + 1
    pull = Pull(number, next(_PULL_IDS), body["title"], body.get("body"), head, base,
                repo.branches[head], repo.branches[base], "open", bool(body.get("draft", False)),
                now, now)  # fmt: skip
    repo.pulls[number] = pull
    reply = req.answer(201, _full_pull(repo, pull, req.api))
    reply.headers.append(("Location", f"{_base(repo, req.api)}/pulls/{number}"))
    return reply


def _pull(req: RestRequest) -> Pull | Reply:
    try:
        found = req.repo.pulls.get(int(req.params["pull_number"]))
    except ValueError:
        found = None
    return req.error(404, "Not Found") if found is None else _refresh(req.repo, found)


@route(
    "rest:pull",
    "GET",
    f"{_REPO_PREFIX}/pulls/{{pull_number}}",
    "pulls/get",
    f"{_PULLS_DOCS}#get-a-pull-request",
)
def _get_pull(req: RestRequest) -> Reply:
    p = _pull(req)
    return p if isinstance(p, Reply) else req.ok(_full_pull(req.repo, p, req.api))


@route(
    "rest:pull-update",
    "PATCH",
    f"{_REPO_PREFIX}/pulls/{{pull_number}}",
    "pulls/update",
    f"{_PULLS_DOCS}#update-a-pull-request",
)
def _update_pull(req: RestRequest) -> Reply:
    body = _write_body(req)
    if isinstance(body, Reply):
        return body
    p = _pull(req)
    if isinstance(p, Reply):
        return p
    if "base" in body and body["base"] not in req.repo.branches:
        return _validation(req, f"base {body['base']} does not exist", "base")
    now = iso(time.time())
    for key in ("title", "body", "base"):
        if key in body:
            setattr(p, key, body[key])
    if body.get("state") in ("open", "closed") and body["state"] != p.state:
        p.state = body["state"]
        p.closed_at = now if p.state == "closed" else None
    p.updated_at = now
    return req.ok(_full_pull(req.repo, _refresh(req.repo, p), req.api))


# ---- a file's history --------------------------------------------------------------------------


def _touches(repo: Repo, sha: str, path: str) -> bool:
    """Whether the commit changed `path` against its first parent (git log's path filter)."""
    c = _any_commit(repo, sha)
    if c is None:
        return False
    mine = repo.git.lookup(c.tree, path)
    parent = _any_commit(repo, c.parents[0]) if c.parents else None
    theirs = repo.git.lookup(parent.tree, path) if parent is not None else None
    return (mine.sha if mine else None) != (theirs.sha if theirs else None)


@route(
    "rest:list-commits",
    "GET",
    f"{_REPO_PREFIX}/commits",
    "repos/list-commits",
    "https://docs.github.com/rest/commits/commits#list-commits",
)
def _list_commits(req: RestRequest) -> Reply:
    """The first-parent history of `sha` (default branch), newest first; with `path` only the
    commits that changed that file. Authors and committers as the git objects say."""
    repo = req.repo
    ref = (req.query.get("sha") or [repo.default_branch])[0]
    path = (req.query.get("path") or [""])[0].strip("/")
    current = resolve_commit(repo, ref)
    if current is None:
        return req.error(404, f"No commit found for SHA: {ref}")
    chosen: list[Any] = []
    while current is not None and current in repo.commits:
        if not path or _touches(repo, current, path):
            chosen.append(current)
        parents = repo.commits[current].parents
        current = parents[0] if parents else None
    shown, _, _ = page(chosen, req.query)
    out = []
    for sha in shown:
        obj = objects.commit_object(repo, repo.commits[sha], req.api)
        git = repo.git.commits.get(sha)
        if git is not None:
            obj["commit"]["author"] = _who(git.author)
            obj["commit"]["committer"] = _who(git.committer)
        out.append(obj)
    return req.ok(out)
