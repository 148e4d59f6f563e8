"""Property-based tests of everything that reads input from outside (#23): generated malformed
sites.toml files, environments, webhook deliveries and Pub/Sub messages.

The invariant, for each: a clear error or ignored; never a crash, never a 5xx, never a message
redelivered forever. Seeded and bounded (testkit/fuzz.py): RECONCILER_FUZZ_EXAMPLES cases per
test (200 by default, a few seconds each); a longer run:

    RECONCILER_FUZZ_EXAMPLES=5000 .venv/bin/python -m pytest tests/integration/test_properties.py
"""

from __future__ import annotations

import copy
import ipaddress
import itertools
import json
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
import tomlkit
from hypothesis import given
from hypothesis import strategies as st

from reconciler.adapters.pubsub import PubSubTrigger
from reconciler.core.config import sites as config
from reconciler.core.errors import ConfigError, SettingsError
from reconciler.core.model import SyncRequest
from reconciler.serve.app import create_app
from reconciler.serve.service import Service
from reconciler.serve.triggers.messages import pubsub_classifier
from reconciler.settings import SUBSCRIPTION, Settings
from reconciler.sync import config_file
from testkit import webhooks as w
from testkit.fuzz import FUZZ, TALLY
from tests.unit.test_service import service

# -- generators shared by the properties -------------------------------------------------------

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
# nesting no decoder should recurse through: arrays, objects, both, unclosed
DEEP_JSON = st.builds(
    lambda n, kind: {
        "array": "[" * n + "]" * n,
        "object": '{"a": ' * n + "1" + "}" * n,
        "mixed": '[{"a": ' * n + "1" + "}]" * n,
        "open": "[" * n,
    }[kind],
    st.integers(min_value=500, max_value=50_000),
    st.sampled_from(["array", "object", "mixed", "open"]),
)


def _deep_into(doc: Any, path: tuple[Any, ...], value: Any, delete: bool = False) -> Any:
    """`doc` with the value at `path` replaced (or deleted); missing objects are created."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(doc, list) and isinstance(head, int) and doc:
        out = list(doc)
        i = head % len(doc)
        if delete and not rest:
            del out[i]
        else:
            out[i] = _deep_into(doc[i], rest, value, delete)
        return out
    out_doc = dict(doc) if isinstance(doc, dict) else {}
    if delete and not rest:
        out_doc.pop(head, None)
    else:
        out_doc[head] = _deep_into(out_doc.get(head), rest, value, delete)
    return out_doc


@st.composite
def mutated(draw: st.DrawFn, base: Any, fields: list[tuple[Any, ...]]) -> Any:
    """`base` with 1-4 of its `fields` (or made-up ones) replaced by any JSON, or deleted."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 4))):
        path = draw(
            st.sampled_from(fields)
            | st.lists(st.text(max_size=8), min_size=1, max_size=3).map(tuple)
        )
        if draw(st.booleans()):
            doc = _deep_into(doc, path, None, delete=True)
        else:
            doc = _deep_into(doc, path, draw(JSON))
    return doc


# -- sites.toml --------------------------------------------------------------------------------

GOOD_TOML = """\
[defaults]
namespace = "web"
image = "gcr.io/p/{repo}:{sha}"

[service]
schedule = "*/15 * * * *"
timezone = "Europe/Paris"

[sites.blog]
repo = "acme/blog"
branch = "main"
container = "app"

[sites.shop]
repo = "acme/shop"
deployment = "storefront"
verify = "checks"
required_checks = ["build"]

[notify]
slack = { webhook_env = "SLACK_URL" }
"""
TOKENS = st.sampled_from(
    [
        "[",
        "]",
        "[[",
        "]]",
        "{",
        "}",
        "=",
        '"',
        "'",
        '"""',
        "'''",
        "\n",
        "#",
        ".",
        ",",
        " ",
        "\\",
        "\\u0000",
        "\\uD800",
        "sites",
        "sites.",
        "[sites.x]",
        "defaults",
        "service",
        "timezone",
        "repo",
        "image",
        "{sha}",
        "true",
        "1e999",
        "nan",
        "-0",
        "0x",
        "1979-05-27",
        "9999-99-99T99:99:99",
        "\t",
        "\r\n",
        "\x00",
        "\x7f",
        "\ufeff",
        "é",
    ]
)
FILLER = (
    TOKENS
    | st.text(max_size=20)
    | DEEP_JSON
    | st.integers(4000, 6000).map(lambda n: "1" * n)
    | st.integers(100, 400).map(lambda n: "a" * n)
)


@st.composite
def toml_texts(draw: st.DrawFn) -> str:
    """A good sites.toml cut, spliced and salted with TOML's own punctuation."""
    text = _structured(draw) if draw(st.booleans()) else GOOD_TOML
    for _ in range(draw(st.integers(0, 5))):
        at = draw(st.integers(0, len(text)))
        end = min(len(text), at + draw(st.integers(0, 20)))
        replace = draw(st.booleans())
        text = text[:at] + draw(FILLER) + text[end if replace else at :]
    return text


def _structured(draw: st.DrawFn) -> str:
    """A document of the right keys (and some wrong ones) with values of any type."""
    keys = st.sampled_from([*config.SITE_KEYS, *config.SERVICE_KEYS, "typo"])
    value = JSON.filter(lambda v: v is not None) | st.sampled_from(
        ["acme/blog", "main", "gcr.io/p/{repo}:{sha}", "UTC", "a" * 300, "* * * * *", "checks"]
    )
    table = st.dictionaries(keys, value, max_size=6)
    doc = {
        "defaults": draw(table),
        "service": draw(table),
        "sites": draw(
            st.dictionaries(st.sampled_from(["blog", "shop", "a b", ""]), table, max_size=3)
        ),
        draw(st.sampled_from(["notify", "sites_", "extra"])): draw(table),
    }
    try:
        return tomlkit.dumps(_toml_safe(doc))
    except Exception:  # tomlkit cannot write every value (None, mixed arrays): use the good one
        return GOOD_TOML


def _toml_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _toml_safe(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_toml_safe(v) for v in value if v is not None]
    return value


@FUZZ
@given(text=toml_texts())
def test_any_sites_toml_is_valid_or_an_error_naming_its_line(text: str) -> None:
    try:
        config.parse(text, "sites.toml")
    except ConfigError as exc:
        lines = text.count("\n") + 2
        for problem in exc.problems:
            whole_file = problem.message.startswith("no sites")
            assert whole_file or problem.line is not None, problem
            assert problem.line is None or 1 <= problem.line <= lines, problem
            assert len(problem.message) <= 1000, problem.message[:200]
        assert len(exc.problems) <= 4 * lines + 20
        TALLY["sites.toml: error"] += 1
    else:
        TALLY["sites.toml: valid"] += 1


@FUZZ
@given(
    data=st.binary(max_size=200) | toml_texts().map(lambda t: t.encode("utf-8", "surrogatepass"))
)
def test_any_sites_toml_file_is_loaded_or_an_error_naming_its_line(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    path = tmp_path_factory.getbasetemp() / "fuzz-sites.toml"
    path.write_bytes(data)
    try:
        config_file.load(path)
    except ConfigError as exc:
        for problem in exc.problems:
            assert problem.message.startswith("no sites") or problem.line is not None, problem
        TALLY["sites.toml file: error"] += 1
    else:
        TALLY["sites.toml file: valid"] += 1


# -- the environment ---------------------------------------------------------------------------

VARIABLES = [
    "RECONCILER_CONFIG", "GITHUB_TOKEN", "GITHUB_API_URL", "GITHUB_APP_ID",
    "GITHUB_APP_PRIVATE_KEY", "GITHUB_APP_INSTALLATION_ID", "RECONCILER_GITHUB_STRATEGY",
    "RECONCILER_LOOKBACK", "KUBECONFIG", "KUBERNETES_SERVICE_HOST", "RECONCILER_TRIGGER_TOKEN",
    "RECONCILER_READ_TOKEN", "GITHUB_WEBHOOK_SECRET", "PUBSUB_SUBSCRIPTION",
    "PUBSUB_EMULATOR_HOST", "PUBSUB_CLOUD_BUILD_SUBSCRIPTION", "PUBSUB_GCR_SUBSCRIPTION",
    "POD_NAME", "POD_NAMESPACE", "RECONCILER_LEASE_NAMESPACE", "RECONCILER_LEASE",
    "RECONCILER_LEASE_SECONDS", "DOCKER_CONFIG", "RECONCILER_INSECURE_REGISTRIES",
    "RECONCILER_REGISTRY_AUTH_HOSTS", "GCE_METADATA_HOST", "BIND", "PORT",
    "RECONCILER_HTTP_THREADS", "RECONCILER_HTTP_CONNECTIONS", "RECONCILER_APPLY_CONCURRENCY",
    "RECONCILER_MALLOC_ARENAS", "LOG_FORMAT", "LOG_LEVEL", "USER", "LOGNAME",
]  # fmt: skip
# what a variable can hold: no NUL (the OS cannot pass one); bytes that are not UTF-8 arrive
# as surrogate escapes
ENV_TEXT = st.text(
    st.characters(exclude_characters="\x00", exclude_categories=["Cs"])
    | st.sampled_from([chr(c) for c in range(0xDC80, 0xDD00)]),
    max_size=40,
)
ENV_VALUES = (
    ENV_TEXT
    | st.integers(-(10**30), 10**30).map(str)
    | st.sampled_from(
        [
            "", "0", "1", "65535", "65536", "70000", "99999999999999999999", "²", "٨٠٨٠", " 8 ",
            "0.0.0.0", "::", "::1", "127.0.0.1", "999.999.999.999", "not-an-address", "localhost",
            "https://ghe.example.com/api/v3", "not a url", "http://", "https://h:99999",
            "https://[::1", "ftp://h", "projects/p/subscriptions/s", "projects/p", "garbage",
            "info", "debug", "DEBUG", "verbose", "json", "text", "xml", "off", "on", "open",
            "auto", "rest", "graphql", "x" * 32, "x" * 31, "a" * 5000,
        ]
    )
)  # fmt: skip


@FUZZ
@given(env=st.dictionaries(st.sampled_from(VARIABLES), ENV_VALUES, max_size=8))
def test_any_environment_is_usable_or_an_error_naming_the_variable(env: dict[str, str]) -> None:
    try:
        s = Settings.from_env(env)
    except SettingsError as exc:
        named = [v for v in env if str(exc).startswith(v) or f" {v} " in f" {exc} "]
        assert named, f"{exc} names none of {sorted(env)}"
        assert len(str(exc)) <= 400, str(exc)[:200]
        TALLY["environment: refused"] += 1
        return
    TALLY["environment: accepted"] += 1
    assert 1 <= s.port <= 65535
    assert s.bind == "localhost" or ipaddress.ip_address(s.bind)
    assert 1 <= s.http_threads <= 1024 and 1 <= s.http_connections <= 65536
    assert 1 <= s.apply_concurrency <= 1024 and 1 <= s.malloc_arenas <= 64
    assert s.log_level in ("info", "debug") and s.log_format in (None, "json", "text")
    assert all(SUBSCRIPTION.fullmatch(sub) for _, sub in s.subscriptions)
    url = urllib.parse.urlsplit(s.github.api_url)
    assert url.scheme in ("http", "https") and url.hostname
    assert 0 <= s.github.lookback <= 100


# -- GitHub webhooks ---------------------------------------------------------------------------

SECRET = "fuzz"
SHA = "a" * 40
EVENTS = ["push", "status", "check_run", "check_suite", "workflow_run", "ping", "issues", ""]
FIELDS: list[tuple[Any, ...]] = [
    ("ref",), ("after",), ("deleted",), ("repository",), ("repository", "full_name"),
    ("repository", "default_branch"), ("sha",), ("state",), ("branches",),
    ("branches", 0), ("branches", 0, "name"), ("action",), ("check_run",),
    ("check_run", "head_sha"), ("check_run", "check_suite"),
    ("check_run", "check_suite", "head_branch"), ("check_suite",),
    ("check_suite", "head_sha"), ("check_suite", "head_branch"), ("check_suite", "conclusion"),
    ("workflow_run", "head_sha"), ("workflow_run", "head_branch"), ("workflow_run", "conclusion"),
]  # fmt: skip


def _payloads() -> dict[str, Any]:
    return {
        "push": w.push("acme/blog", "main", SHA, "b" * 40),
        "status": w.status("acme/blog", SHA, "success", ["main"]),
        "check_suite": w.check_suite("acme/blog", "main", SHA),
        "workflow_run": w.workflow_run("acme/blog", "main", SHA),
        "check_run": w.example("check_run", "completed"),
        "ping": w.example("ping"),
    }


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[str, bytes, str]:
    """(event, body, content type): a real payload with fields of any shape, raw bytes, a form
    with or without its payload, or JSON nested deeper than any decoder recurses."""
    event = draw(st.sampled_from(EVENTS))
    base = _PAYLOADS.get(event) or draw(st.sampled_from(list(_PAYLOADS.values())))
    kind = draw(st.sampled_from(["mutated", "mutated", "raw", "form", "deep"]))
    if kind == "raw":
        return event, draw(st.binary(max_size=100)), "application/json"
    if kind == "deep":
        return event, draw(DEEP_JSON).encode(), "application/json"
    body = json.dumps(draw(mutated(base, FIELDS))).encode()
    if kind == "form":
        form = draw(st.sampled_from([b"payload=", b"payload=&x=1", b"payload=%ZZ&&", b"payload="]))
        tail = urllib.parse.quote_from_bytes(body).encode() if form == b"payload=" else b""
        return event, form + tail, "application/x-www-form-urlencoded"
    return event, body, "application/json"


_PAYLOADS: dict[str, Any] = {}
_IDS = itertools.count()


@pytest.fixture(scope="module")
def fuzz_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    _PAYLOADS.update(_payloads())
    svc, _, _ = service(tmp_path_factory.mktemp("hooks"))
    yield svc
    svc.shutdown(5)


@FUZZ
@given(delivery=deliveries())
def test_any_signed_delivery_is_answered_4xx_or_202_never_5xx(
    fuzz_service: Service, delivery: tuple[str, bytes, str]
) -> None:
    event, body, ctype = delivery
    client = create_app(fuzz_service, trigger_token=None, webhook_secret=SECRET).test_client()
    answer = client.post(
        "/hooks/github",
        data=body,
        headers={
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": f"fuzz-{next(_IDS)}",
            "X-Hub-Signature-256": w.sign(SECRET, body),
            "Content-Type": ctype,
        },
    )
    reply: dict[str, Any] = answer.get_json()
    TALLY[f"webhook: {answer.status_code} {reply['outcome']}"] += 1
    assert answer.status_code in (200, 202, 400), answer.status_code
    outcome = reply["outcome"]
    assert outcome in {200: ("ping",), 400: ("malformed",)}.get(
        answer.status_code, ("sync", "ignored", "reported")
    ), (answer.status_code, outcome)
    assert set(reply["sites"] or ()) <= {"blog"}


# -- Pub/Sub -----------------------------------------------------------------------------------

BUILD = {
    "id": "b1",
    "status": "SUCCESS",
    "substitutions": {"REPO_NAME": "blog", "BRANCH_NAME": "main", "COMMIT_SHA": SHA},
    "results": {"images": [{"name": f"gcr.io/p/blog:{SHA}"}]},
}
GCR = {
    "action": "INSERT",
    "digest": "gcr.io/p/blog@sha256:" + "0" * 64,
    "tag": f"gcr.io/p/blog:{SHA}",
}
JOB = {"job": "sync", "sites": ["blog"]}
MESSAGE_FIELDS: list[tuple[Any, ...]] = [
    ("id",), ("status",), ("substitutions",), ("substitutions", "REPO_NAME"),
    ("substitutions", "REPO_FULL_NAME"), ("substitutions", "BRANCH_NAME"),
    ("substitutions", "COMMIT_SHA"), ("results",), ("results", "images"),
    ("results", "images", 0), ("results", "images", 0, "name"), ("action",), ("tag",),
    ("digest",), ("job",), ("sites",), ("sites", 0),
]  # fmt: skip


@st.composite
def messages(draw: st.DrawFn) -> tuple[str, bytes, dict[str, str]]:
    kind = draw(st.sampled_from(["cloud-build", "gcr", "scheduler"]))
    base = {"cloud-build": BUILD, "gcr": GCR, "scheduler": JOB}[kind]
    data = draw(
        st.binary(max_size=100)
        | DEEP_JSON.map(str.encode)
        | mutated(base, MESSAGE_FIELDS).map(lambda d: json.dumps(d).encode())
        | st.just(b"")
    )
    attributes = draw(
        st.dictionaries(
            st.sampled_from(["job", "sites", "status", "buildId", "x"]), st.text(max_size=20)
        )
    )
    return kind, data, attributes


class _Message:
    """What the subscriber client hands the callback: data, attributes, ack() and nack()."""

    def __init__(self, data: bytes, attributes: dict[str, str]) -> None:
        self.data, self.attributes = data, attributes
        self.message_id, self.ack_id, self.delivery_attempt = "m1", "a1", None
        self.settled: list[str] = []

    def ack(self) -> None:
        self.settled.append("ack")

    def nack(self) -> None:
        self.settled.append("nack")


@FUZZ
@given(message=messages())
def test_any_message_is_acked_or_synced_never_redelivered_forever(
    fuzz_service: Service, message: tuple[str, bytes, dict[str, str]]
) -> None:
    kind, data, attributes = message
    submitted: list[SyncRequest] = []

    def submit(request: SyncRequest) -> Any:
        from concurrent.futures import Future

        submitted.append(request)
        return Future()

    trigger = PubSubTrigger(
        "projects/p/subscriptions/s", submit, pubsub_classifier(fuzz_service, kind), trigger=kind
    )
    got = _Message(data, attributes)
    trigger._on_message(got, 1)
    TALLY[f"pubsub {kind}: {'sync' if submitted else 'acked'}"] += 1
    assert "nack" not in got.settled, "a message that cannot succeed was put back"
    if submitted:  # held until its sync is done (then acked, see test_pubsub.py)
        assert got.settled == [] and trigger.in_flight == 1
        assert submitted[0].sites is None or submitted[0].sites <= {"blog"}
    else:
        assert got.settled == ["ack"]
