"""The GitOps write-back adapter against the GitHub stand-in, over real HTTP on loopback."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest

from reconciler.adapters.gitrepo import GitRepoWriter
from reconciler.core.errors import ErrorKind, GitHubError, WriteBackError
from reconciler.core.gitops import RepoFile
from reconciler.core.writeback import (
    GitPerson,
    HelmValues,
    ImageRef,
    KustomizeImage,
    WriteOutcome,
    WriteRequest,
)
from reconciler.settings import GitHubSettings
from testkit.github import GitHubStandIn
from testkit.github import rest as standin_rest

TOKEN = "ghp_deployer"
READER = "ghp_reader"
CONFIG = "acme/config"
PATH = "apps/web/kustomization.yaml"
OLD_SHA = "1a2b3c4" + "0" * 33
NEW_SHA = "5d6e7f8" + "0" * 33
KUSTOMIZATION = """\
# web, production
resources: [../../base]
images:
  - name: gcr.io/acme/web
    newTag: 1a2b3c4   # set by the reconciler
"""


@pytest.fixture
def gh() -> Iterator[GitHubStandIn]:
    standin_rest.REQUEST_VIOLATIONS.clear()
    with GitHubStandIn(tokens=[TOKEN, READER]) as server:
        server.add_repo(CONFIG)
        server.commit_files(CONFIG, "main", {PATH: KUSTOMIZATION, "README.md": "x\n"}, "Layout")
        yield server
        assert server.schema_violations == []
        assert server.internal_errors == []
        assert standin_rest.REQUEST_VIOLATIONS == []


def writer(gh: GitHubStandIn, token: str = TOKEN, **kwargs: Any) -> GitRepoWriter:
    settings = GitHubSettings(api_url=gh.url, token=token, timeout=10.0)
    return GitRepoWriter(settings, sleep=lambda _: None, **kwargs)


def request(tag: str = "5d6e7f8", **changes: Any) -> WriteRequest:
    base = WriteRequest(
        site="web",
        repo=CONFIG,
        branch="main",
        path=PATH,
        target=KustomizeImage("gcr.io/acme/web"),
        image=ImageRef("gcr.io/acme/web", tag),
        source_repo="acme/web",
        old_sha=OLD_SHA,
        new_sha=NEW_SHA,
        compare_url="https://github.com/acme/web/compare/1a2b3c4...5d6e7f8",
        author=GitPerson("Reconciler", "reconciler@example.com"),
        committer=GitPerson("Deploy Bot", "deploy-bot@example.com"),
    )
    return replace(base, **changes)


# ---- mode "commit" ------------------------------------------------------------------------------


def test_commit_writes_the_one_value_with_message_and_people(gh: GitHubStandIn) -> None:
    before = gh.head(CONFIG, "main")
    result = writer(gh).write(request())
    assert result.outcome is WriteOutcome.COMMITTED
    assert (result.attempts, result.requests) == (1, 2)  # GET contents, PUT contents
    assert gh.head(CONFIG, "main") == result.commit
    assert gh.file_at(CONFIG, "main", PATH) == KUSTOMIZATION.replace("1a2b3c4   #", "5d6e7f8   #")
    commit = gh.git_commit(CONFIG, result.commit or "")
    assert commit.parents == (before,)
    assert (commit.author.name, commit.author.email) == ("Reconciler", "reconciler@example.com")
    assert commit.committer.name == "Deploy Bot"
    assert commit.message.splitlines()[:5] == [
        "Deploy web: 1a2b3c4 → 5d6e7f8",
        "",
        f"acme/web: {OLD_SHA} → {NEW_SHA}",
        f"{PATH}: images[name=gcr.io/acme/web].newTag: 1a2b3c4 → 5d6e7f8",
        "Compare: https://github.com/acme/web/compare/1a2b3c4...5d6e7f8",
    ]


def test_nothing_is_committed_when_the_file_holds_the_value(gh: GitHubStandIn) -> None:
    w = writer(gh)
    first = w.write(request())
    head = gh.head(CONFIG, "main")
    again = w.write(request())
    assert again.outcome is WriteOutcome.UNCHANGED
    assert not again.edit.changed
    assert again.requests == 1
    assert gh.head(CONFIG, "main") == head == first.commit


def test_a_file_that_moved_is_re_read_and_the_person_change_kept(
    gh: GitHubStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A person commits to the file between our read and our write: 409, re-read, commit on top."""
    w = writer(gh)
    original = w._read
    reads: list[str] = []

    def read_then_person_commits(*args: Any) -> RepoFile:
        found = original(*args)
        reads.append(found.sha)
        if len(reads) == 1:
            edited = found.text.replace("# web, production", "# web, production (reviewed)")
            gh.commit_files(CONFIG, "main", {PATH: edited}, "A person's edit")
        return found

    monkeypatch.setattr(w, "_read", read_then_person_commits)
    result = w.write(request())
    assert result.outcome is WriteOutcome.COMMITTED
    assert result.attempts == 2
    assert len(set(reads)) == 2
    text = gh.file_at(CONFIG, "main", PATH) or ""
    assert "# web, production (reviewed)" in text
    assert "newTag: 5d6e7f8   # set by the reconciler" in text
    assert [c.message.splitlines()[0] for c in gh.log(CONFIG, "main")[:2]] == [
        "Deploy web: 1a2b3c4 → 5d6e7f8",
        "A person's edit",
    ]


def test_conflicts_are_retried_a_bounded_number_of_times(
    gh: GitHubStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = writer(gh, max_attempts=3)
    original = w._read
    count = iter(range(100))

    def read_then_file_moves(*args: Any) -> RepoFile:
        found = original(*args)
        gh.commit_files(CONFIG, "main", {PATH: found.text + f"# edit {next(count)}\n"})
        return found

    monkeypatch.setattr(w, "_read", read_then_file_moves)
    with pytest.raises(WriteBackError, match=r"kept changing under us \(3 attempts\)") as err:
        w.write(request())
    assert err.value.kind is ErrorKind.WRITEBACK_CONFLICT
    assert all("Deploy web" not in c.message for c in gh.log(CONFIG, "main"))


def test_two_concurrent_writers_of_one_change_make_exactly_one_commit(
    gh: GitHubStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both read the same blob before either writes (a barrier makes sure), then both PUT:
    one commits, the other gets 409, re-reads, finds the value there and commits nothing."""
    barrier = threading.Barrier(2, timeout=10)
    writers = [writer(gh), writer(gh)]
    for w in writers:
        first_read = [True]

        def read_together(
            *args: Any, _read: Callable[..., RepoFile] = w._read, _first: list[bool] = first_read
        ) -> RepoFile:
            found = _read(*args)
            if _first[0]:  # each writer's first read waits for the other's
                _first[0] = False
                barrier.wait()
            return found

        monkeypatch.setattr(w, "_read", read_together)
    before = gh.head(CONFIG, "main")
    results: list[Any] = [None, None]

    def run(i: int) -> None:
        results[i] = writers[i].write(request())

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    outcomes = sorted(r.outcome for r in results)
    assert outcomes == [WriteOutcome.COMMITTED, WriteOutcome.UNCHANGED]
    loser = next(r for r in results if r.outcome is WriteOutcome.UNCHANGED)
    assert loser.attempts == 2  # it did meet the conflict
    log = gh.log(CONFIG, "main")
    assert [c.parents for c in log[:1]] == [(before,)]
    assert sum("Deploy web" in c.message for c in log) == 1


# ---- errors that fail only the site -------------------------------------------------------------


def test_protected_branch_says_use_pr_mode(gh: GitHubStandIn) -> None:
    gh.protect_branch(CONFIG, "main")
    with pytest.raises(WriteBackError, match=r'use mode "pr"') as err:
        writer(gh).write(request())
    assert err.value.kind is ErrorKind.WRITEBACK_PROTECTED
    assert "Changes must be made through a pull request" in str(err.value)


def test_token_that_cannot_push(gh: GitHubStandIn) -> None:
    gh.deny_push(CONFIG, READER)
    with pytest.raises(WriteBackError, match=r"the token cannot push to acme/config \(403") as err:
        writer(gh, token=READER).write(request())
    assert err.value.kind is ErrorKind.WRITEBACK_FORBIDDEN


def test_writes_carry_the_token_the_reads_use_asked_for_each_request(gh: GitHubStandIn) -> None:
    """A GitHub App installation's token (GitHubClient.bearer) is renewed by PyGithub: the writer
    asks for it at every request rather than keeping settings.token."""
    gh.deny_push(CONFIG, READER)
    asked: list[str] = []

    def bearer() -> str:
        asked.append(TOKEN)
        return TOKEN

    result = writer(gh, token=READER, bearer=bearer).write(request())
    assert result.outcome is WriteOutcome.COMMITTED
    assert len(asked) == result.requests


def test_missing_file_branch_and_repository(gh: GitHubStandIn) -> None:
    w = writer(gh)
    cases = [
        (request(path="apps/nope.yaml"), r"no apps/nope.yaml on branch 'main'"),
        (request(branch="gone"), r"no branch 'gone'"),
        (request(repo="acme/nope"), r"acme/nope: no apps/web/kustomization.yaml on branch"),
    ]
    for req, message in cases:
        with pytest.raises(WriteBackError, match=message) as err:
            w.write(req)
        assert err.value.kind is ErrorKind.WRITEBACK_NOT_FOUND


def test_bad_yaml_and_missing_key_fail_with_the_file_named(gh: GitHubStandIn) -> None:
    gh.commit_files(CONFIG, "main", {"values.yaml": "image:\n  tag: [oops\n"})
    with pytest.raises(WriteBackError, match=r"acme/config/values.yaml@main:3: the file does not"):
        writer(gh).write(request(path="values.yaml", target=HelmValues()))
    with pytest.raises(WriteBackError, match=r"no `images:` entry named 'other'") as err:
        writer(gh).write(request(target=KustomizeImage("other")))
    assert err.value.kind is ErrorKind.WRITEBACK_TARGET


def test_a_directory_or_a_file_over_1_mb_is_refused(gh: GitHubStandIn) -> None:
    gh.commit_files(CONFIG, "main", {"big.yaml": "# padding\n" * 120_000})
    with pytest.raises(WriteBackError, match=r"big.yaml@main is larger than the Contents API"):
        writer(gh).write(request(path="big.yaml"))
    with pytest.raises(WriteBackError, match=r"apps/web@main is not a file"):
        writer(gh).write(request(path="apps/web"))


def test_unreachable_github_is_a_github_error() -> None:
    settings = GitHubSettings(api_url="http://127.0.0.1:9", token=TOKEN, timeout=2.0)
    with pytest.raises(GitHubError) as err:
        GitRepoWriter(settings).write(request())
    assert err.value.kind is ErrorKind.GITHUB_UNREACHABLE


# ---- mode "pr" ----------------------------------------------------------------------------------


def test_pr_mode_opens_one_pull_request_and_updates_it(gh: GitHubStandIn) -> None:
    gh.protect_branch(CONFIG, "main")  # what pr mode is for
    main = gh.head(CONFIG, "main")
    w = writer(gh)
    opened = w.write(request(mode="pr"))
    assert opened.outcome is WriteOutcome.PR_OPENED
    # base ref, the file there, open pulls; site ref (404), base commit; tree, commit, ref;
    # the pull request
    assert opened.requests == 9
    assert gh.head(CONFIG, "main") == main  # nothing pushed to the base
    [pull] = gh.pulls(CONFIG)
    assert (pull.number, pull.head, pull.base, pull.state) == (1, "reconciler/web", "main", "open")
    assert pull.title == "Deploy web at 5d6e7f8"
    assert gh.file_at(CONFIG, "reconciler/web", PATH) == KUSTOMIZATION.replace(
        "1a2b3c4 ", "5d6e7f8 "
    )
    assert gh.git_commit(CONFIG, opened.commit or "").parents == (main,)

    same = w.write(request(mode="pr"))
    assert same.outcome is WriteOutcome.PR_CURRENT
    assert same.commit == opened.commit  # nothing pushed again
    assert same.requests == 6

    newer = w.write(request("9f8e7d6", mode="pr", new_sha="9f8e7d6" + "0" * 33))
    assert newer.outcome is WriteOutcome.PR_UPDATED
    assert newer.pull_number == 1
    assert newer.requests == 11
    [pull] = gh.pulls(CONFIG)  # never a second one
    assert pull.title == "Deploy web at 9f8e7d6"
    assert pull.head_sha == newer.commit
    assert "newTag: 9f8e7d6" in (gh.file_at(CONFIG, "reconciler/web", PATH) or "")


def test_pr_mode_closes_the_pull_request_a_newer_base_supersedes(gh: GitHubStandIn) -> None:
    w = writer(gh)
    w.write(request(mode="pr"))
    merged = gh.file_at(CONFIG, "reconciler/web", PATH)
    gh.commit_files(CONFIG, "main", {PATH: merged}, "Merge pull request #1")
    result = w.write(request(mode="pr"))
    assert result.outcome is WriteOutcome.UNCHANGED
    assert result.closed_pulls == (1,)
    assert result.requests == 4  # base ref, file, open pulls, close
    [pull] = gh.pulls(CONFIG)
    assert pull.state == "closed"
    assert "Superseded" in (pull.body or "")


def test_pr_mode_rebuilds_the_branch_on_a_moved_base(gh: GitHubStandIn) -> None:
    w = writer(gh)
    first = w.write(request(mode="pr"))
    moved = gh.commit_files(CONFIG, "main", {"README.md": "changed\n"}, "Unrelated change")
    again = w.write(request(mode="pr"))
    assert again.outcome is WriteOutcome.PR_UPDATED
    assert again.commit != first.commit
    assert gh.git_commit(CONFIG, again.commit or "").parents == (moved,)
    assert gh.file_at(CONFIG, "reconciler/web", "README.md") == "changed\n"
    assert len(gh.pulls(CONFIG)) == 1


def test_pr_mode_builds_on_the_commit_whose_file_it_edited(
    gh: GitHubStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The base moves (a person edits the same file) after the file was read: the pull request's
    commit has the commit it read as parent, so it reverts nothing of the person's edit."""
    w = writer(gh)
    original = w._read
    read_at = gh.head(CONFIG, "main")

    def read_then_person_commits(*args: Any) -> RepoFile:
        found = original(*args)
        text = found.text.replace("# web, production", "# web, production (reviewed)")
        gh.commit_files(CONFIG, "main", {PATH: text}, "A person's edit")
        monkeypatch.setattr(w, "_read", original)
        return found

    monkeypatch.setattr(w, "_read", read_then_person_commits)
    result = w.write(request(mode="pr"))
    assert result.outcome is WriteOutcome.PR_OPENED
    assert gh.git_commit(CONFIG, result.commit or "").parents == (read_at,)
    assert gh.file_at(CONFIG, "reconciler/web", PATH) == KUSTOMIZATION.replace(
        "1a2b3c4 ", "5d6e7f8 "
    )
