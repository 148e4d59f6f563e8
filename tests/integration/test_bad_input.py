"""Bad input gets a clear error and loses nothing (#23): each way a malformed sites.toml,
variable, webhook delivery or Pub/Sub message crashed or wedged the reconciler, as a test.

The property-based tests in test_properties.py generate such input by the thousand; these are
the cases the fuzzing found, one by one.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

from reconciler.cli.main import main
from reconciler.core.config import sites as config
from reconciler.core.errors import ConfigError
from reconciler.core.model import Site
from reconciler.core.triggers import cloud_events, jobs, webhooks
from reconciler.core.triggers.hints import Outcome
from reconciler.serve.app import create_app
from reconciler.serve.triggers.messages import pubsub_classifier
from testkit import webhooks as w
from tests.unit.test_service import service

SITE = '[sites.blog]\nrepo = "acme/blog"\nimage = "gcr.io/p/blog:{sha}"\n'
DEEP = 1000  # levels: far past any recursion limit of the decoders


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        config.parse(text, "sites.toml")
    return [str(p) for p in exc.value.problems]


def validate(tmp_path: Path, text: str) -> tuple[int, str]:
    path = tmp_path / "sites.toml"
    path.write_text(text, encoding="utf-8")
    err = io.StringIO()
    code = main(["validate", "--config", str(path)], env={}, stdout=io.StringIO(), stderr=err)
    return code, err.getvalue().replace(str(path), "sites.toml")


# -- sites.toml --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "zone",
    ["a" * 300, "Mars/Olympus_Mons", "America", "../../etc/passwd", "/etc/localtime", "\\u0000"],
    ids=["300-characters", "unknown", "a-directory", "relative-path", "absolute-path", "nul"],
)
def test_an_unknown_or_malformed_timezone_is_an_error_at_its_line(
    tmp_path: Path, zone: str
) -> None:
    """#23 item 1: a 300-character zone raised OSError (File name too long) from zoneinfo."""
    code, err = validate(tmp_path, f'[service]\ntimezone = "{zone}"\n\n{SITE}')
    assert code == 2 and "Traceback" not in err
    assert err.startswith('sites.toml:2: "timezone" '), err
    assert "is not a known time zone" in err and len(err) < 400


@pytest.mark.parametrize(
    "value",
    ["[" * 500 + "]" * 500, "{a = " * 500 + "1" + "}" * 500, "[" * 100_000 + "]" * 100_000],
    ids=["array-500", "inline-table-500", "array-100000"],
)
def test_deeply_nested_toml_is_an_error_at_its_line(tmp_path: Path, value: str) -> None:
    """#23 item 2: the loader caught only TOMLDecodeError; tomllib raised RecursionError."""
    code, err = validate(tmp_path, f"{SITE}\n# nested\nx = {value}\n")
    assert code == 2 and "Traceback" not in err
    assert re.match(r"sites\.toml:6: invalid TOML: arrays or inline tables nested \d+ levels", err)


def test_an_integer_too_long_to_read_is_an_error_at_its_line(tmp_path: Path) -> None:
    """Found while fuzzing the loader: int() refuses more than 4,300 digits, a ValueError that is
    not a TOMLDecodeError."""
    code, err = validate(tmp_path, f"{SITE}x = {'1' * 5000}\n")
    assert code == 2 and "Traceback" not in err
    assert err.startswith("sites.toml:4: invalid TOML: a number too long to read"), err[:200]


@pytest.mark.parametrize(
    ("data", "start"),
    [
        (f'{SITE}x = "unterminated'.encode(), "sites.toml:4: invalid TOML: Unterminated string"),
        (f"{SITE}x = [\n\n".encode(), "sites.toml:4: invalid TOML: "),
        (SITE.encode() + b"# caf\xe9\n", "sites.toml:4: not UTF-8 text"),
        (f'[notify."\x85"]\n{SITE}typo = 1\n'.encode(), 'sites.toml:5: site "blog": unknown key'),
        (f'{SITE}"{"k" * 5000}" = 1\n'.encode(), 'sites.toml:4: site "blog": unknown key "kkk'),
    ],
    ids=["end-of-document", "open-array", "not-utf8", "u0085-in-a-key", "a-5000-character-key"],
)
def test_every_problem_names_its_line(tmp_path: Path, data: bytes, start: str) -> None:
    """Found by the property tests: errors at the end of the document and in a file that is
    not UTF-8 had no line; U+0085 in a string shifted every line after it (str.splitlines);
    a 5,000-character key was quoted back whole."""
    path = tmp_path / "sites.toml"
    path.write_bytes(data)
    err = io.StringIO()
    code = main(["validate", "--config", str(path)], env={}, stdout=io.StringIO(), stderr=err)
    message = err.getvalue().replace(str(path), "sites.toml")
    assert code == 2 and any(line.startswith(start) for line in message.split("\n")), message
    assert len(message) < 1000


def test_thousands_of_sites_on_one_deployment_are_reported_once_each_and_bounded() -> None:
    """#23 item 3: every pair was reported (quadratic): 2,000 sites made a 287 MB message."""
    text = '[defaults]\nimage = "gcr.io/p/x:{sha}"\ncontainer = "app"\n'
    text += "".join(f'[sites.s{i}]\nrepo = "acme/s{i}"\ndeployment = "web"\n' for i in range(2000))
    found = problems(text)
    assert len(found) == config.MAX_CONFLICTS_SHOWN + 1
    assert found[0] == (
        'sites.toml:7: site "s1": targets default/web like site "s0" (line 4): '
        'the same container "app"'
    )
    assert found[-1].startswith(
        f"sites.toml:{4 + 3 * 11}: and 1,989 more sites target default/web the same way (lines "
    )
    assert sum(map(len, found)) < 5000


def test_a_site_conflicts_with_the_first_site_it_clashes_with() -> None:
    text = '[defaults]\nimage = "gcr.io/p/x:{sha}"\n'
    text += '[sites.a]\nrepo = "o/a"\ncontainer = "app"\ndeployment = "d"\n'
    text += '[sites.b]\nrepo = "o/b"\ncontainer = "worker"\ndeployment = "d"\n'
    text += '[sites.c]\nrepo = "o/c"\ndeployment = "d"\n'  # no container: clashes with a
    text += '[sites.e]\nrepo = "o/e"\ncontainer = "worker"\ndeployment = "d"\n'  # with b
    assert [p.split(": ", 2)[1:] for p in problems(text)] == [
        [
            'site "c"',
            'targets default/d like site "a" (line 3): the same Deployment (set a distinct '
            '"container" on each)',
        ],
        ['site "e"', 'targets default/d like site "b" (line 7): the same container "worker"'],
    ]


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (f"sites_ = 1\n{SITE}", 1),
        (f'{SITE}[sites_.blog]\nrepo = "acme/blog"\n', 4),
        (f'sites_.blog.repo = "acme/blog"\n{SITE}', 1),
        (f"{SITE}[[sites_]]\nx = 1\n", 4),
    ],
    ids=["key", "implicit-table", "dotted-key", "array-of-tables"],
)
def test_an_unknown_top_level_key_names_its_line(text: str, line: int) -> None:
    """#23 item 4: a table made implicitly ([sites_.blog], sites_.blog.repo) had no line."""
    found = problems(text)
    assert found[0].startswith(f'sites.toml:{line}: unknown key "sites_" (did you mean "sites"?)')


# -- the environment ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "argv", "variable"),
    [
        ({"PORT": "70000"}, [], "PORT"),
        ({"PORT": "99999999999999999999"}, [], "PORT"),
        ({"BIND": "not-an-address"}, [], "BIND"),
        ({"BIND": "999.999.999.999"}, [], "BIND"),
        ({"RECONCILER_HTTP_THREADS": "10000000"}, [], "RECONCILER_HTTP_THREADS"),
        ({"LOG_LEVEL": "verbose"}, [], "LOG_LEVEL"),
        ({"PUBSUB_SUBSCRIPTION": "garbage"}, [], "PUBSUB_SUBSCRIPTION"),
        ({"GITHUB_API_URL": "not a url"}, [], "GITHUB_API_URL"),
        ({}, ["--port", "70000"], "--port"),
        ({}, ["--bind", "999.999.999.999"], "--bind"),
    ],
)
def test_serve_refuses_a_value_it_cannot_use_naming_it(
    tmp_path: Path, env: dict[str, str], argv: list[str], variable: str
) -> None:
    """#23 items 5-10: each was accepted (and serve crashed, or ran with it)."""
    path = tmp_path / "sites.toml"
    path.write_text(SITE)
    err = io.StringIO()
    code = main(["serve", "--config", str(path), *argv], env=env, stderr=err)
    assert code == 2 and err.getvalue().startswith(f"reconciler: {variable} must be "), err


def test_serve_exits_2_when_it_cannot_listen(tmp_path: Path) -> None:
    """#23 item 6: an address serve cannot listen on was a traceback (ValueError, OSError)."""
    import socket
    import subprocess
    import sys

    sites = tmp_path / "sites.toml"
    sites.write_text(SITE)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        '{"apiVersion": "v1", "kind": "Config", "current-context": "c",'
        ' "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],'
        ' "users": [{"name": "u", "user": {"token": "t"}}],'
        ' "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}'
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = {
            "PATH": "/usr/bin:/bin",
            "KUBECONFIG": str(kubeconfig),
            "RECONCILER_LEASE": "off",
            "BIND": "127.0.0.1",
            "PORT": str(taken.getsockname()[1]),
            "LOG_FORMAT": "text",
        }
        done = subprocess.run(
            [sys.executable, "-m", "reconciler", "serve", "--config", str(sites)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "reconciler: cannot listen on 127.0.0.1:" in done.stderr
    assert "(BIND or --bind, PORT or --port)" in done.stderr


# -- GitHub webhooks ---------------------------------------------------------------------------

SECRET = "s"
BLOG = Site(
    "blog", "acme/blog", "main", "web", "blog", None, "gcr.io/p/blog:{sha}", verify="checks"
)


def _status(**fields: object) -> dict[str, object]:
    return {
        "sha": "0fc8" + "0" * 36,
        "state": "success",
        "branches": [{"name": "main"}],
        "repository": {"full_name": "acme/blog"},
        **fields,
    }


@pytest.mark.parametrize(
    ("event", "payload", "field"),
    [
        ("status", _status(branches=True), '"branches" is a boolean, expected a list'),
        ("status", _status(branches=["main"]), '"branches[0]" is a string, expected an object'),
        ("status", _status(branches=[{"name": 3}]), '"branches[0].name" is a number'),
        ("push", {**w.push("acme/blog", "main", "a" * 40, "b" * 40), "deleted": "yes"}, "deleted"),
        (
            "check_run",
            {"action": "completed", "check_run": {"head_sha": "a" * 40, "check_suite": []}}
            | {"repository": {"full_name": "acme/blog"}},
            '"check_run.check_suite" is a list, expected an object',
        ),
        (
            "check_suite",
            {"action": "completed", "check_suite": {"head_sha": "a", "conclusion": [[1]]}}
            | {"repository": {"full_name": "acme/blog"}},
            '"check_suite.conclusion" is a list, expected a string',
        ),
        (
            "push",
            {
                **w.push("acme/blog", "main", "a" * 40, "b" * 40),
                "repository": {"full_name": "acme/blog", "default_branch": 1},
            },
            '"repository.default_branch" is a number, expected a string',
        ),
    ],
)
def test_a_field_of_the_wrong_shape_is_malformed_naming_it(
    event: str, payload: dict[str, object], field: str
) -> None:
    """#23 item 11: `branches: true` raised TypeError (a 500)."""
    hint = webhooks.classify(event, payload, [BLOG])
    assert hint.outcome is Outcome.MALFORMED and field in hint.reason, hint.reason


def _deliver(tmp_path: Path, event: str, body: bytes, ctype: str = "application/json") -> object:
    svc, _, _ = service(tmp_path)
    client = create_app(svc, trigger_token=None, webhook_secret=SECRET).test_client()
    headers = {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": "d1",
        "X-Hub-Signature-256": w.sign(SECRET, body),
        "Content-Type": ctype,
    }
    try:
        return client.post("/hooks/github", data=body, headers=headers)
    finally:
        svc.shutdown(5)


def test_a_signed_status_whose_branches_is_not_a_list_is_a_400_naming_it(tmp_path: Path) -> None:
    """#23 item 11, as the issue shows it: answered 500."""
    body = json.dumps(_status(branches=True)).encode()
    answer = _deliver(tmp_path, "status", body)
    assert answer.status_code == 400  # type: ignore[attr-defined]
    assert '"branches"' in answer.json["reason"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("body", [b"payload=", b"payload=&x=1", b"payload=&&"])
def test_a_form_without_a_payload_is_a_400(tmp_path: Path, body: bytes) -> None:
    """#23 item 12: parse_qs dropped the blank payload, then a KeyError answered 500."""
    answer = _deliver(tmp_path, "push", body, "application/x-www-form-urlencoded")
    assert answer.status_code == 400  # type: ignore[attr-defined]
    assert answer.json["outcome"] == "malformed"  # type: ignore[attr-defined]


@pytest.mark.parametrize("event", ["push", "status", "ping", "check_run", "issues"])
@pytest.mark.parametrize("depth", [DEEP, 100_000])
def test_json_nested_too_deeply_is_a_400_for_any_event(
    tmp_path: Path, event: str, depth: int
) -> None:
    """#23 item 13: json.loads raised RecursionError (a 500)."""
    body = b'{"a": ' + b"[" * depth + b"]" * depth + b"}"
    answer = _deliver(tmp_path, event, body)
    assert answer.status_code == 400  # type: ignore[attr-defined]
    assert "nested too deeply" in answer.json["reason"]  # type: ignore[attr-defined]


# -- Pub/Sub -----------------------------------------------------------------------------------

POISON = [b"[" * DEEP + b"]" * DEEP, b'{"a": ' * DEEP, b'{"job": "sync", "sites": [' * DEEP]


@pytest.mark.parametrize("data", POISON, ids=["arrays", "objects", "jobs"])
def test_deeply_nested_messages_are_malformed_on_every_subscription(data: bytes) -> None:
    """#23 item 14: RecursionError came out of the classifier: nacked and redelivered forever."""
    assert cloud_events.classify_build(data, {}, [BLOG]).outcome is Outcome.MALFORMED
    assert cloud_events.classify_gcr(data, [BLOG]).outcome is Outcome.MALFORMED
    assert jobs.classify_job(data, {}, ["blog"]).outcome is Outcome.MALFORMED


def test_a_message_the_rules_cannot_read_is_malformed_and_counted(tmp_path: Path) -> None:
    """However a rule breaks on a message, the message is poison: acked as malformed (the
    adapter acks every hint that does not sync), never redelivered."""
    svc, _, _ = service(tmp_path)
    try:
        for kind in ("cloud-build", "gcr", "scheduler"):
            hint = pubsub_classifier(svc, kind)(POISON[0], {})
            assert hint.outcome is Outcome.MALFORMED, (kind, hint)
            counted = svc.metrics.events.labels("pubsub", kind, "malformed")._value.get()
            assert counted == 1, kind
    finally:
        svc.shutdown(5)
