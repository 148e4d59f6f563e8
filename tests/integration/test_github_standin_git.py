"""The GitHub stand-in's git objects and write routes (Contents, Git data, pulls), over HTTP."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from testkit.ci import unavailable
from testkit.github import GitHubStandIn, rest_schema_errors
from testkit.github import rest as standin_rest
from testkit.github.git import EMPTY_TREE, Entry, GitStore, Person

TOKEN = "ghp_writer"
READER = "ghp_reader"
REPO = "acme/config"
KUSTOMIZATION = "images:\n- name: app\n  newTag: v1\n"


@pytest.fixture
def gh() -> Iterator[GitHubStandIn]:
    standin_rest.REQUEST_VIOLATIONS.clear()
    with GitHubStandIn(tokens=[TOKEN, READER]) as server:
        server.add_repo(REPO)
        server.commit_files(
            REPO,
            "main",
            {"apps/web/kustomization.yaml": KUSTOMIZATION, "README.md": "config\n"},
            "Initial layout",
        )
        yield server
        assert server.schema_violations == []
        assert server.internal_errors == []
        assert standin_rest.REQUEST_VIOLATIONS == []


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.headers["Authorization"] = f"token {TOKEN}"
        yield session


def api(gh: GitHubStandIn, path: str) -> str:
    return f"{gh.url}/repos/{REPO}{path}"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def checked(r: requests.Response, status: int, operation: str) -> Any:
    """The JSON body, after asserting the status and that the shared schema accepts it."""
    assert r.status_code == status, r.text
    body = r.json()
    assert rest_schema_errors(operation, status, body) == []
    return body


# ---- object ids ---------------------------------------------------------------------------------


def test_object_ids_are_the_ones_git_computes(tmp_path: Path) -> None:
    git = shutil.which("git")
    if git is None:
        unavailable("git is not installed", "apt-get install git")
    store = GitStore()
    blob = store.put_blob(b"hello\n")
    tree = store.with_path(None, "dir/hello.txt", None)  # deleting from nothing: empty
    assert tree == EMPTY_TREE
    tree = store.with_path(EMPTY_TREE, "dir/hello.txt", Entry("100644", "", blob))
    tree = store.with_path(tree, "a.txt", Entry("100644", "", blob))
    who = Person("Ann", "ann@example.com", 1_700_000_000)
    commit = store.put_commit(tree, (), who, who, "First\n\nbody\n")

    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Ann",
        "GIT_AUTHOR_EMAIL": "ann@example.com",
        "GIT_AUTHOR_DATE": "1700000000 +0000",
        "GIT_COMMITTER_NAME": "Ann",
        "GIT_COMMITTER_EMAIL": "ann@example.com",
        "GIT_COMMITTER_DATE": "1700000000 +0000",
    }

    def run(*args: str, stdin: str | None = None) -> str:
        out = subprocess.run(
            [git, *args],
            check=False,
            cwd=tmp_path,
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    run("init", "-q")
    assert run("hash-object", "-w", "--stdin", stdin="hello\n") == blob
    sub = run("mktree", stdin=f"100644 blob {blob}\thello.txt\n")
    top = run("mktree", stdin=f"100644 blob {blob}\ta.txt\n040000 tree {sub}\tdir\n")
    assert top == tree
    assert run("commit-tree", tree, "-m", "First\n\nbody") == commit
    assert store.files(tree) == {"a.txt": b"hello\n", "dir/hello.txt": b"hello\n"}


# ---- Contents API -------------------------------------------------------------------------------


def test_contents_get_file_and_directory(gh: GitHubStandIn, http: requests.Session) -> None:
    r = http.get(api(gh, "/contents/apps/web/kustomization.yaml"), params={"ref": "main"})
    body = checked(r, 200, "repos/get-content")
    assert base64.b64decode(body["content"]) == KUSTOMIZATION.encode()
    assert body["encoding"] == "base64"
    assert body["sha"] == GitStore().put_blob(KUSTOMIZATION.encode())
    listing = checked(http.get(api(gh, "/contents/apps")), 200, "repos/get-content")
    assert [(e["name"], e["type"]) for e in listing] == [("web", "dir")]

    missing = http.get(api(gh, "/contents/apps/nope.yaml"))
    assert checked(missing, 404, "repos/get-content")["message"] == "Not Found"
    no_ref = http.get(api(gh, "/contents/README.md"), params={"ref": "gone"})
    assert (
        "No commit found for the ref gone" in checked(no_ref, 404, "repos/get-content")["message"]
    )


def test_contents_put_updates_creates_and_refuses_a_stale_sha(
    gh: GitHubStandIn, http: requests.Session
) -> None:
    path = "/contents/apps/web/kustomization.yaml"
    old = http.get(api(gh, path)).json()["sha"]
    head = gh.head(REPO, "main")
    put = {"message": "web: v2", "content": b64("images: []\n"), "sha": old, "branch": "main"}
    body = checked(http.put(api(gh, path), json=put), 200, "repos/create-or-update-file-contents")
    assert body["commit"]["parents"][0]["sha"] == head
    assert gh.head(REPO, "main") == body["commit"]["sha"]
    assert gh.file_at(REPO, "main", "apps/web/kustomization.yaml") == "images: []\n"
    assert gh.file_at(REPO, "main", "README.md") == "config\n"  # the rest of the tree is kept
    assert gh.log(REPO, "main")[0].message == "web: v2"

    stale = http.put(api(gh, path), json={**put, "content": b64("x: 1\n")})
    message = checked(stale, 409, "repos/create-or-update-file-contents")["message"]
    assert (
        message == f"apps/web/kustomization.yaml is at {body['content']['sha']} but expected {old}"
    )
    no_sha = http.put(api(gh, path), json={k: v for k, v in put.items() if k != "sha"})
    assert '"sha" wasn\'t supplied' in no_sha.json()["message"]
    assert no_sha.status_code == 422

    created = http.put(
        api(gh, "/contents/apps/new.yaml"), json={"message": "new", "content": b64("a\n")}
    )
    checked(created, 201, "repos/create-or-update-file-contents")
    no_branch = http.put(api(gh, "/contents/x.yaml"), json={**put, "branch": "gone"})
    assert checked(no_branch, 404, "repos/create-or-update-file-contents")["message"] == (
        "Branch gone not found"
    )


def test_contents_put_author_and_committer(gh: GitHubStandIn, http: requests.Session) -> None:
    path = "/contents/README.md"
    sha = http.get(api(gh, path)).json()["sha"]
    put = {
        "message": "docs",
        "content": b64("new\n"),
        "sha": sha,
        "author": {"name": "Ann", "email": "ann@example.com"},
        "committer": {"name": "Deploy Bot", "email": "bot@example.com"},
    }
    body = checked(http.put(api(gh, path), json=put), 200, "repos/create-or-update-file-contents")
    commit = gh.git_commit(REPO, body["commit"]["sha"])
    assert (commit.author.name, commit.author.email) == ("Ann", "ann@example.com")
    assert (commit.committer.name, commit.committer.email) == ("Deploy Bot", "bot@example.com")


# ---- Git data API -------------------------------------------------------------------------------


def test_git_data_commit_and_fast_forward_rules(gh: GitHubStandIn, http: requests.Session) -> None:
    head = gh.head(REPO, "main")
    commit = checked(http.get(api(gh, f"/git/commits/{head}")), 200, "git/get-commit")
    tree = checked(
        http.get(api(gh, f"/git/trees/{commit['tree']['sha']}"), params={"recursive": "1"}),
        200,
        "git/get-tree",
    )
    assert [e["path"] for e in tree["tree"]] == [
        "README.md",
        "apps",
        "apps/web",
        "apps/web/kustomization.yaml",
    ]
    blob = checked(
        http.post(api(gh, "/git/blobs"), json={"content": "v2\n"}), 201, "git/create-blob"
    )
    got = checked(http.get(api(gh, f"/git/blobs/{blob['sha']}")), 200, "git/get-blob")
    assert base64.b64decode(got["content"]) == b"v2\n"
    new_tree = checked(
        http.post(
            api(gh, "/git/trees"),
            json={
                "base_tree": commit["tree"]["sha"],
                "tree": [
                    {"path": "apps/web/tag", "mode": "100644", "type": "blob", "sha": blob["sha"]}
                ],
            },
        ),
        201,
        "git/create-tree",
    )
    made = checked(
        http.post(
            api(gh, "/git/commits"),
            json={"message": "web: v2", "tree": new_tree["sha"], "parents": [head]},
        ),
        201,
        "git/create-commit",
    )
    gh.commit_files(REPO, "main", {"OTHER": "someone else\n"}, "A person's commit")
    refused = http.patch(api(gh, "/git/refs/heads/main"), json={"sha": made["sha"], "force": False})
    assert checked(refused, 422, "git/update-ref")["message"] == "Update is not a fast forward"

    branch = checked(
        http.post(api(gh, "/git/refs"), json={"ref": "refs/heads/deploy", "sha": made["sha"]}),
        201,
        "git/create-ref",
    )
    assert branch["object"]["sha"] == made["sha"]
    again = http.post(api(gh, "/git/refs"), json={"ref": "refs/heads/deploy", "sha": head})
    assert checked(again, 422, "git/create-ref")["message"] == "Reference already exists"
    moved = http.patch(api(gh, "/git/refs/heads/deploy"), json={"sha": head, "force": True})
    assert checked(moved, 200, "git/update-ref")["object"]["sha"] == head
    assert gh.file_at(REPO, made["sha"], "apps/web/tag") == "v2\n"
    assert gh.file_at(REPO, made["sha"], "README.md") == "config\n"


def test_schema_quirks_are_relaxed_only_where_github_needs_it() -> None:
    """A directory (an array) passes the discriminated oneOf of GET contents, and an error body
    both error schemas accept passes the Contents API's 409; a body no alternative accepts, or
    a file without its required fields, still fails."""
    assert rest_schema_errors("repos/get-content", 200, []) == []
    assert rest_schema_errors("repos/get-content", 200, 5) != []
    assert rest_schema_errors("repos/get-content", 200, {"type": "file", "name": "x"}) != []
    conflict = {"message": "x is at a but expected b", "documentation_url": "d", "status": "409"}
    assert rest_schema_errors("repos/create-or-update-file-contents", 409, conflict) == []
    assert rest_schema_errors("repos/create-or-update-file-contents", 409, ["no"]) != []


def test_a_bad_request_body_is_422(gh: GitHubStandIn, http: requests.Session) -> None:
    from testkit.github import rest

    r = http.post(api(gh, "/git/refs"), json={"ref": "refs/heads/x"})  # no sha
    assert r.status_code == 422
    assert "'sha' is a required property" in r.json()["message"]
    rest.REQUEST_VIOLATIONS.clear()


# ---- protection and permissions ------------------------------------------------------------------


def test_protected_branch_refuses_direct_writes(gh: GitHubStandIn, http: requests.Session) -> None:
    gh.protect_branch(REPO, "main")
    path = "/contents/README.md"
    sha = http.get(api(gh, path)).json()["sha"]
    put = http.put(api(gh, path), json={"message": "m", "content": b64("x\n"), "sha": sha})
    assert put.status_code == 409
    assert "Changes must be made through a pull request" in put.json()["message"]
    head = gh.head(REPO, "main")
    child = gh.commit_files(REPO, "side", {"a": "a"})  # side starts at main's head
    ref = http.patch(api(gh, "/git/refs/heads/main"), json={"sha": child})
    assert checked(ref, 422, "git/update-ref")["message"] == (
        "Protected branch update failed for refs/heads/main."
    )
    assert gh.head(REPO, "main") == head
    # the way round: a branch of one's own and a pull request
    ok = http.put(
        api(gh, path), json={"message": "m", "content": b64("x\n"), "sha": sha, "branch": "side"}
    )
    assert ok.status_code == 200, ok.text
    pull = http.post(api(gh, "/pulls"), json={"title": "t", "head": "side", "base": "main"})
    checked(pull, 201, "pulls/create")


def test_reader_token_gets_403_and_anonymous_401(gh: GitHubStandIn, http: requests.Session) -> None:
    gh.deny_push(REPO, READER)
    reader = {"Authorization": f"token {READER}"}
    path = "/contents/README.md"
    sha = http.get(api(gh, path), headers=reader).json()["sha"]
    put = {"message": "m", "content": b64("x\n"), "sha": sha}
    r = requests.put(api(gh, path), json=put, headers=reader)
    assert checked(r, 403, "repos/create-or-update-file-contents")["message"] == (
        "Resource not accessible by personal access token"
    )
    anonymous = requests.post(api(gh, "/git/blobs"), json={"content": "x"})
    assert anonymous.status_code == 401
    assert anonymous.json()["message"] == "Requires authentication"


# ---- pull requests ------------------------------------------------------------------------------


def test_pull_requests_one_per_head_list_filters_update(
    gh: GitHubStandIn, http: requests.Session
) -> None:
    gh.commit_files(REPO, "reconciler/web", {"apps/web/kustomization.yaml": "images: []\n"})
    same = http.post(api(gh, "/pulls"), json={"title": "t", "head": "main", "base": "main"})
    assert "No commits between main and main" in same.json()["errors"][0]["message"]
    made = checked(
        http.post(
            api(gh, "/pulls"),
            json={
                "title": "Deploy web",
                "head": "acme:reconciler/web",
                "base": "main",
                "body": "b",
            },
        ),
        201,
        "pulls/create",
    )
    assert (made["number"], made["state"], made["head"]["ref"]) == (1, "open", "reconciler/web")
    second = http.post(
        api(gh, "/pulls"), json={"title": "again", "head": "reconciler/web", "base": "main"}
    )
    body = checked(second, 422, "pulls/create")
    assert body["errors"][0]["message"] == "A pull request already exists for acme:reconciler/web."

    def listed(**params: str) -> list[int]:
        r = http.get(api(gh, "/pulls"), params=params)
        return [p["number"] for p in checked(r, 200, "pulls/list")]

    assert listed(head="acme:reconciler/web", base="main") == [1]
    assert listed(head="acme:other") == []
    assert listed(state="closed") == []
    new_head = gh.commit_files(REPO, "reconciler/web", {"x": "y"})
    assert checked(http.get(api(gh, "/pulls/1")), 200, "pulls/get")["head"]["sha"] == new_head
    edited = http.patch(api(gh, "/pulls/1"), json={"title": "Deploy web v3", "state": "closed"})
    assert checked(edited, 200, "pulls/update")["title"] == "Deploy web v3"
    assert listed() == []
    assert listed(state="closed") == [1]
    assert listed(state="all") == [1]
    reopened = http.post(
        api(gh, "/pulls"), json={"title": "t", "head": "reconciler/web", "base": "main"}
    )
    assert checked(reopened, 201, "pulls/create")["number"] == 2
    assert http.get(api(gh, "/pulls/99")).status_code == 404
    assert [p.state for p in gh.pulls(REPO)] == ["closed", "open"]
