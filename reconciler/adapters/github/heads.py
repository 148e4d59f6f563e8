"""Branch heads: GraphQL batches (1 point per 100 repositories, with each branch's recent
history) or conditional REST (an unchanged head costs nothing); renamed and missing branches."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any
from urllib.parse import quote

from reconciler.adapters.github.client import GitHubClient, Halt, Response
from reconciler.core.errors import ErrorKind, GitHubError
from reconciler.core.model import BranchHead, CommitState, HeadError, HeadResult, RepoRef
from reconciler.sync.fanout import bounded_map

log = logging.getLogger(__name__)

SHA_MEDIA_TYPE = "application/vnd.github.sha"
BATCH_SIZE = 100  # GitHub charges 1 point for up to ~100 repository fields with no connections


class HeadReader:
    """Resolves branch heads in batches: GraphQL (1 point per 100 repos) or conditional REST."""

    def __init__(self, client: GitHubClient) -> None:
        self.client = client

    def resolve(self, refs: Collection[RepoRef]) -> Mapping[RepoRef, HeadResult]:
        """Every ref's head; each failure becomes that ref's HeadError, never an exception."""
        if not refs:
            return {}
        use_graphql = self.client.settings.strategy == "graphql" or (
            self.client.settings.strategy == "auto" and self.client.settings.authenticated
        )
        if use_graphql:
            return self._resolve_graphql(refs)
        return self._resolve_rest(refs)

    def _fan_out(
        self,
        work: Iterable[Any],
        task: Callable[[Any], Mapping[RepoRef, HeadResult]],
        keys: Callable[[Any], Iterable[RepoRef]],
    ) -> dict[RepoRef, HeadResult]:
        """Run `task` over `work` on up to max_concurrency threads (the client's throttle says how
        many of their requests are in flight); a halt fails what has not run yet."""
        items = list(work)
        out: dict[RepoRef, HeadResult] = {}
        halted: list[HeadError] = []

        def guarded(item: Any) -> Mapping[RepoRef, HeadResult]:
            if halted:
                return dict.fromkeys(keys(item), halted[0])
            try:
                return task(item)
            except Halt as halt:
                halted.append(halt.error)
                return dict.fromkeys(keys(item), halt.error)
            except GitHubError as exc:
                return dict.fromkeys(keys(item), HeadError(str(exc), exc.kind))

        for result in bounded_map(
            guarded, items, limit=self.client.settings.max_concurrency, name="github"
        ):
            out.update(result)
        return out

    def _resolve_graphql(self, refs: Collection[RepoRef]) -> dict[RepoRef, HeadResult]:
        by_repo: dict[str, list[RepoRef]] = {}
        for ref in sorted(refs, key=lambda r: (r.repo.lower(), r.branch or "")):
            by_repo.setdefault(ref.repo.lower(), []).append(ref)
        groups = list(by_repo.values())
        batches = [groups[i : i + BATCH_SIZE] for i in range(0, len(groups), BATCH_SIZE)]
        return self._fan_out(
            batches, self._graphql_batch, lambda batch: [r for group in batch for r in group]
        )

    def _graphql_batch(self, batch: list[list[RepoRef]]) -> dict[RepoRef, HeadResult]:
        query, variables, aliases = _heads_query(batch, self.client.settings.lookback)
        response = self.client.request(
            "POST", self.client.graphql_url(), body={"query": query, "variables": variables}
        )
        if response.status >= 400:
            raise GitHubError(
                f"GitHub GraphQL answered {response.status}: {response.message}",
                kind=ErrorKind.GITHUB,
            )
        payload = response.json() or {}
        data = payload.get("data") or {}
        errors = {
            str(e["path"][0]): e
            for e in payload.get("errors") or []
            if isinstance(e, dict) and e.get("path")
        }
        general = [e for e in payload.get("errors") or [] if not e.get("path")]
        if any(e.get("type") == "RATE_LIMITED" for e in general):
            reset = float(response.headers.get("x-ratelimit-reset", self.client.clock() + 3600))
            raise Halt(self.client.limited(response, max(0.0, reset - self.client.clock())))
        if not data and general:
            message = "; ".join(str(e.get("message")) for e in general)
            raise GitHubError(
                f"GitHub GraphQL rejected the query: {message}", kind=ErrorKind.GITHUB
            )
        self._note_graphql_cost(data.get("rateLimit"))
        out: dict[RepoRef, HeadResult] = {}
        missing: list[RepoRef] = []
        shared: dict[str, str] = {}
        for alias, group in aliases.items():
            node = data.get(alias)
            repo = group[0][0].repo
            if node is None:
                error = errors.get(alias, {})
                kind = (
                    ErrorKind.REPO_NOT_FOUND
                    if error.get("type") == "NOT_FOUND"
                    else ErrorKind.GITHUB
                )
                reason = (
                    f"repository {repo} not found (or the credentials cannot see it)"
                    if kind is ErrorKind.REPO_NOT_FOUND
                    else f"GitHub could not answer for {repo}: {error.get('message', 'no data')}"
                )
                out.update(dict.fromkeys((ref for ref, _ in group), HeadError(reason, kind)))
                continue
            for ref, field in group:
                target = node.get(field)
                if target is None or not (target.get("target") or {}).get("oid"):
                    if ref.branch is None:
                        out[ref] = HeadError(
                            f"repository {repo} has no default branch (is it empty?)",
                            ErrorKind.BRANCH_NOT_FOUND,
                        )
                    else:
                        missing.append(ref)
                    continue
                head = target["target"]
                out[ref] = BranchHead(
                    ref.repo, target["name"], head["oid"], _history(head, shared), _date(head)
                )
        for ref in missing:
            out[ref] = self._missing_branch(ref)
        return out

    def _note_graphql_cost(self, rate: Any) -> None:
        if not isinstance(rate, dict) or "remaining" not in rate:
            return
        log.debug("GitHub GraphQL cost %s, %s points left", rate.get("cost"), rate["remaining"])

    def _missing_branch(self, ref: RepoRef) -> HeadError:
        """A branch GraphQL did not find: ask REST once if it was renamed (GitHub redirects)."""
        assert ref.branch is not None
        try:
            r = self.client.request("GET", f"/repos/{ref.repo}/branches/{_quote(ref.branch)}")
        except (GitHubError, Halt):
            r = None
        data = r.json() if r is not None and r.status == 200 else None
        if isinstance(data, dict) and data.get("name") and data["name"] != ref.branch:
            return HeadError(
                f'branch "{ref.branch}" of {ref.repo} was renamed to "{data["name"]}": '
                f'set branch = "{data["name"]}" in sites.toml',
                ErrorKind.BRANCH_RENAMED,
            )
        return HeadError(
            f'branch "{ref.branch}" not found in {ref.repo}', ErrorKind.BRANCH_NOT_FOUND
        )

    def _resolve_rest(self, refs: Collection[RepoRef]) -> dict[RepoRef, HeadResult]:
        return self._fan_out(sorted(refs, key=str), self._rest_one, lambda ref: [ref])

    def _rest_one(self, ref: RepoRef) -> dict[RepoRef, HeadResult]:
        branch = ref.branch
        if branch is None:
            r = self.client.conditional(f"/repos/{ref.repo}", "application/vnd.github+json")
            if r.status == 404:
                return {ref: _repo_missing(ref)}
            if r.status != 200:
                return {ref: _http_error(ref, r)}
            branch = str(json.loads(r.body)["default_branch"])
        r = self.client.conditional(f"/repos/{ref.repo}/commits/{_quote(branch)}", SHA_MEDIA_TYPE)
        if r.status == 200 and len(r.body.strip()) == 40:
            return {ref: BranchHead(ref.repo, branch, r.body.strip())}
        if r.status in (404, 422):
            if r.status == 404 and "commit" not in r.message.lower():
                probe = self.client.conditional(f"/repos/{ref.repo}", "application/vnd.github+json")
                if probe.status == 404:
                    return {ref: _repo_missing(ref)}
            return {ref: self._missing_branch(RepoRef(ref.repo, branch))}
        return {ref: _http_error(ref, r)}


def _heads_query(
    batch: list[list[RepoRef]], lookback: int = 0
) -> tuple[str, dict[str, str], dict[str, list[tuple[RepoRef, str]]]]:
    """An aliased GraphQL query for a batch of repositories (grouped refs of one repo each),
    with the last ``lookback`` commits of each branch and their checks' rollup state."""
    params: list[str] = []
    fields: list[str] = []
    variables: dict[str, str] = {}
    # committedDate is a scalar: it adds nothing to the query's cost (points count connections)
    history = (
        f" ... on Commit {{ committedDate history(first: {lookback}) {{ nodes {{ oid"
        " committedDate statusCheckRollup { state } } } }"
        if lookback > 0
        else " ... on Commit { committedDate }"
    )
    aliases: dict[str, list[tuple[RepoRef, str]]] = {}
    for i, group in enumerate(batch):
        owner, name = group[0].repo.split("/", 1)
        variables[f"o{i}"], variables[f"n{i}"] = owner, name
        params += [f"$o{i}: String!", f"$n{i}: String!"]
        selections: list[str] = []
        entries: list[tuple[RepoRef, str]] = []
        for j, ref in enumerate(group):
            if ref.branch is None:
                if "defaultBranchRef" not in selections:
                    selections.append("defaultBranchRef")
                entries.append((ref, "defaultBranchRef"))
                continue
            var = f"b{i}_{j}"
            variables[var] = f"refs/heads/{ref.branch}"
            params.append(f"${var}: String!")
            selections.append(f"{var}: ref(qualifiedName: ${var})")
            entries.append((ref, var))
        body = " ".join(f"{s} {{ name target {{ oid{history} }} }}" for s in selections)
        fields.append(f"r{i}: repository(owner: $o{i}, name: $n{i}) {{ {body} }}")
        aliases[f"r{i}"] = entries
    query = (
        f"query Heads({', '.join(params)}) {{\n  "
        + "\n  ".join(fields)
        + "\n  rateLimit { cost remaining limit resetAt }\n}"
    )
    return query, variables, aliases


def _history(target: Any, shared: dict[str, str]) -> tuple[CommitState, ...]:
    """The commits of a ``history`` connection, newest first, with their rollup state. A
    10,000-site sync holds 200,000 of them at the default lookback of 20: the few rollup states
    and the dates repeated within an answer are held once (`shared`, one per answer)."""
    nodes = ((target.get("history") or {}).get("nodes")) or []
    out = []
    for n in nodes:
        if not isinstance(n, dict) or not isinstance(oid := n.get("oid"), str):
            continue
        rollup = n.get("statusCheckRollup")
        state = rollup.get("state") if isinstance(rollup, dict) else None
        if isinstance(state, str):
            state = _STATES.get(state, state)
        date = n.get("committedDate")
        date = shared.setdefault(date, date) if isinstance(date, str) else None
        out.append(CommitState(oid, state, date))
    return tuple(out)


# GitHub's StatusState values, one string each (not one per commit answered)
_STATES = {s: s for s in ("SUCCESS", "PENDING", "FAILURE", "ERROR", "EXPECTED")}


def _date(commit: Any) -> str | None:
    """A commit's committedDate (RFC 3339), when GitHub answered one."""
    value = commit.get("committedDate") if isinstance(commit, dict) else None
    return value if isinstance(value, str) else None


def _quote(branch: str) -> str:
    return quote(branch, safe="/")


def _repo_missing(ref: RepoRef) -> HeadError:
    return HeadError(
        f"repository {ref.repo} not found (or the credentials cannot see it)",
        ErrorKind.REPO_NOT_FOUND,
    )


def _http_error(ref: RepoRef, r: Response) -> HeadError:
    return HeadError(f"GitHub answered {r.status} for {ref}: {r.message}", ErrorKind.GITHUB)
