"""parse_job: the Cloud Scheduler job carried by a Pub/Sub message (pure, table-driven)."""

from __future__ import annotations

import json

import pytest

from reconciler.core.errors import ReconcilerError
from reconciler.core.triggers.jobs import JobError, parse_job

KNOWN = ("blog", "shop", "docs")


def _j(doc: object) -> bytes:
    return json.dumps(doc).encode()


VALID: list[tuple[str, bytes, dict[str, str], frozenset[str] | None]] = [
    ("json-all", _j({"job": "sync"}), {}, None),
    ("json-one", _j({"job": "sync", "sites": ["blog"]}), {}, frozenset({"blog"})),
    ("json-two", _j({"job": "sync", "sites": ["shop", "blog"]}), {}, frozenset({"blog", "shop"})),
    ("json-duplicates", _j({"job": "sync", "sites": ["blog", "blog"]}), {}, frozenset({"blog"})),
    ("json-null-sites", _j({"job": "sync", "sites": None}), {}, None),
    ("json-whitespace", b'  \n{"job": "sync"}\n', {}, None),
    ("json-wins-over-attributes", _j({"job": "sync"}), {"job": "nope", "sites": "x"}, None),
    ("attr-all", b"", {"job": "sync"}, None),
    ("attr-sites", b"", {"job": "sync", "sites": "blog,shop"}, frozenset({"blog", "shop"})),
    (
        "attr-sites-spaces",
        b"",
        {"job": " sync ", "sites": " blog , shop ,"},
        frozenset({"blog", "shop"}),
    ),
    ("attr-blank-data", b"  \n", {"job": "sync"}, None),
    ("attr-other-attributes", b"", {"job": "sync", "origin": "scheduler"}, None),
]


@pytest.mark.parametrize(
    ("data", "attributes", "expected"),
    [case[1:] for case in VALID],
    ids=[case[0] for case in VALID],
)
def test_valid_jobs(
    data: bytes, attributes: dict[str, str], expected: frozenset[str] | None
) -> None:
    assert parse_job(data, attributes, KNOWN) == expected


INVALID: list[tuple[str, bytes, dict[str, str], str]] = [
    ("empty", b"", {}, "empty message"),
    ("empty-with-other-attributes", b"", {"sites": "blog"}, "empty message"),
    ("not-json", b"{not json", {}, "not JSON"),
    ("not-utf8", b"\xff\xfe", {}, "not UTF-8"),
    ("json-list", _j(["sync"]), {}, "must be a JSON object, not a list"),
    ("json-string", _j("sync"), {}, "must be a JSON object, not a string"),
    ("json-number", b"42", {}, "must be a JSON object, not a number"),
    ("no-job", _j({"sites": ["blog"]}), {}, 'no "job" key'),
    ("job-not-string", _j({"job": 1}), {}, '"job" must be a string, not a number'),
    ("unknown-job", _j({"job": "deploy"}), {}, "unknown job 'deploy' (known jobs: sync)"),
    ("unknown-job-case", _j({"job": "Sync"}), {}, "unknown job 'Sync'"),
    ("unexpected-key", _j({"job": "sync", "site": "blog"}), {}, "unexpected key 'site'"),
    ("sites-string", _j({"job": "sync", "sites": "blog"}), {}, '"sites" must be a list'),
    ("sites-object", _j({"job": "sync", "sites": {"blog": 1}}), {}, "not an object"),
    ("sites-not-strings", _j({"job": "sync", "sites": ["blog", 3]}), {}, "list of strings; got 3"),
    ("sites-empty", _j({"job": "sync", "sites": []}), {}, '"sites" is empty'),
    ("unknown-site", _j({"job": "sync", "sites": ["blog", "nope"]}), {}, "unknown site: 'nope'"),
    (
        "unknown-sites",
        _j({"job": "sync", "sites": ["zzz", "blog", "aaa"]}),
        {},
        "unknown sites: 'aaa', 'zzz'",
    ),
    ("attr-unknown-job", b"", {"job": "deploy"}, "unknown job 'deploy'"),
    ("attr-empty-job", b"", {"job": ""}, "unknown job ''"),
    ("attr-sites-empty", b"", {"job": "sync", "sites": " , "}, "names no site"),
    ("attr-unknown-site", b"", {"job": "sync", "sites": "blog,nope"}, "unknown site: 'nope'"),
]


@pytest.mark.parametrize(
    ("data", "attributes", "message"),
    [case[1:] for case in INVALID],
    ids=[case[0] for case in INVALID],
)
def test_invalid_jobs(data: bytes, attributes: dict[str, str], message: str) -> None:
    with pytest.raises(JobError) as info:
        parse_job(data, attributes, KNOWN)
    assert message in str(info.value)


def test_job_error_is_a_reconciler_error() -> None:
    assert issubclass(JobError, ReconcilerError)


def test_known_sites_is_any_collection() -> None:
    assert parse_job(_j({"job": "sync", "sites": ["a"]}), {}, {"a", "b"}) == frozenset({"a"})
    with pytest.raises(JobError, match="unknown site: 'a'"):
        parse_job(_j({"job": "sync", "sites": ["a"]}), {}, frozenset())


def test_long_bad_values_are_truncated() -> None:
    with pytest.raises(JobError) as info:
        parse_job(_j({"job": "x" * 5000}), {}, KNOWN)
    assert len(str(info.value)) < 400
