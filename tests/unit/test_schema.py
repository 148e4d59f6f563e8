"""schema/sites.schema.json: generated from the model the validator reads (core/config/keys.py,
core/notify/config.py), committed and up to date; it accepts the README's reference file and the
examples, and rejects what the validator rejects for structural reasons (unknown keys, wrong
types, bad enum values, out-of-range numbers, a missing repo)."""

from __future__ import annotations

import io
import json
import re
import tomllib
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest

from demo.world import sites_toml as demo_sites_toml
from reconciler.cli.main import main
from reconciler.core.config import keys as configkeys
from reconciler.core.config.schema import json_schema
from reconciler.core.config.sites import parse
from reconciler.core.errors import ConfigError
from testkit.controlplane import REPO_ROOT

SCHEMA_FILE = REPO_ROOT / "schema" / "sites.schema.json"
VALIDATOR = jsonschema.Draft7Validator(json_schema())
GOOD_SITE = '[sites.blog]\nrepo = "acme/blog"\nimage = "gcr.io/p/blog:{sha}"\n'


def schema_errors(text: str) -> list[str]:
    return [e.message for e in VALIDATOR.iter_errors(tomllib.loads(text))]


def validator_rejects(text: str) -> bool:
    try:
        parse(text)
    except ConfigError:
        return True
    return False


def test_the_committed_schema_is_what_the_model_generates() -> None:
    out = io.StringIO()
    assert main(["schema"], env={}, stdout=out) == 0
    assert json.loads(out.getvalue()) == json_schema()
    assert SCHEMA_FILE.read_text() == out.getvalue(), (
        "schema/sites.schema.json is out of date: .venv/bin/reconciler schema > "
        "schema/sites.schema.json"
    )


def test_the_schema_is_a_valid_draft_7_schema() -> None:
    jsonschema.Draft7Validator.check_schema(json.loads(SCHEMA_FILE.read_text()))


def _readme_reference() -> str:
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme[readme.index("## sites.toml reference") :]
    match = re.search(r"```toml\n(.*?)```", section, re.S)
    assert match
    return match.group(1)


def _notifications_example() -> str:
    doc = (REPO_ROOT / "docs" / "notifications.md").read_text()
    match = re.search(r"```toml\n(.*?)```", doc, re.S)
    assert match
    # The example shows [notify] and a site's override; complete the sites it names.
    return (
        match.group(1) + '[sites.shop]\nrepo = "acme/shop"\n[defaults]\nimage = "r/{repo}:{sha}"\n'
    )


EXAMPLES = {
    "README reference": _readme_reference,
    "k8s/sites.toml": (REPO_ROOT / "k8s" / "sites.toml").read_text,
    "demo online": lambda: demo_sites_toml(offline=False),
    "demo offline": lambda: demo_sites_toml(offline=True),
    "docs/notifications.md": _notifications_example,
}


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_the_schema_accepts_the_reference_and_the_examples(name: str) -> None:
    text = EXAMPLES[name]()
    parse(text)  # the validator accepts it
    assert schema_errors(text) == []


BAD: dict[str, str] = {
    "unknown top-level table": GOOD_SITE + "[servce]\nschedule = '0 * * * *'\n",
    "unknown key in defaults": "[defaults]\nimage_template = 'x'\n" + GOOD_SITE,
    "unknown key in a site": GOOD_SITE + "branchh = 'main'\n",
    "unknown key in service": "[service]\ncron = '0 * * * *'\n" + GOOD_SITE,
    "unknown key in notify": "[notify]\nslak = false\n" + GOOD_SITE,
    "a secret written in sites.toml": "[notify]\nslack = { webhook = 'https://x' }\n" + GOOD_SITE,
    "both env and file": "[notify]\nwebhook = { url_env = 'U', url_file = '/u' }\n" + GOOD_SITE,
    "a channel without its URL": "[notify]\nslack = {}\n" + GOOD_SITE,
    "bad verify": GOOD_SITE + "verify = 'sometimes'\n",
    "bad verify in defaults": "[defaults]\nverify = 'always'\n" + GOOD_SITE,
    "bad event name": "[notify]\nevents = ['deployed', 'exploded']\n" + GOOD_SITE,
    "paused as a string": GOOD_SITE + "paused = 'yes'\n",
    "pin_digest as a number": "[defaults]\npin_digest = 1\n" + GOOD_SITE,
    "rollout_timeout zero": GOOD_SITE + "rollout_timeout = 0\n",
    "rollout_timeout too long": GOOD_SITE + "rollout_timeout = 86401\n",
    "rollout_timeout as a string": GOOD_SITE + "rollout_timeout = '300'\n",
    "jitter too large": "[service]\njitter = 3601\n" + GOOD_SITE,
    "jitter a float": "[service]\njitter = 1.5\n" + GOOD_SITE,
    "required_checks not a list": GOOD_SITE + "verify = 'checks'\nrequired_checks = 'build'\n",
    "repo missing": '[sites.blog]\nimage = "r/b:{sha}"\n',
    "repo malformed": '[sites.blog]\nrepo = "blog"\nimage = "r/b:{sha}"\n',
    "repo a number": '[sites.blog]\nrepo = 7\nimage = "r/b:{sha}"\n',
    "site not a table": 'sites = { blog = "acme/blog" }\n',
    "site name with a space": '[sites."my blog"]\nrepo = "acme/blog"\nimage = "r/b:{sha}"\n',
    "no sites": '[defaults]\nimage = "r/{repo}:{sha}"\n',
    "defaults not a table": 'defaults = "x"\n' + GOOD_SITE,
    "notify a number": GOOD_SITE + "notify = 3\n",
    "github_deployments a number": "[notify]\ngithub_deployments = 1\n" + GOOD_SITE,
    "blocked_after negative": "[notify]\nblocked_after = -1\n" + GOOD_SITE,
    "a token in a cluster": "[clusters.prod]\ntoken = 'abc'\n" + GOOD_SITE,
    "a cluster without kubeconfig or context": "[clusters.prod]\n" + GOOD_SITE,
    "a relative kubeconfig": "[clusters.prod]\nkubeconfig = 'prod.yaml'\n" + GOOD_SITE,
    "a cluster named home": "[clusters.home]\ncontext = 'x'\n" + GOOD_SITE,
    "a cluster name with capitals": "[clusters.Prod]\ncontext = 'x'\n" + GOOD_SITE,
    "a Job target": GOOD_SITE + "[[sites.blog.targets]]\nkind = 'Job'\nname = 'migrate'\n",
    "an unknown kind": GOOD_SITE + "[[sites.blog.targets]]\nkind = 'Pod'\nname = 'web'\n",
    "a target without a name": GOOD_SITE + "[[sites.blog.targets]]\ncontainers = ['app']\n",
    "no targets": GOOD_SITE + "targets = []\n",
    "an unknown target key": GOOD_SITE + "[[sites.blog.targets]]\nname = 'web'\nimage = 'x'\n",
    "targets and deployment": GOOD_SITE
    + "deployment = 'web'\n[[sites.blog.targets]]\nname = 'web'\n",
}


@pytest.mark.parametrize("case", list(BAD))
def test_the_schema_rejects_what_the_validator_rejects(case: str) -> None:
    text = BAD[case]
    assert validator_rejects(text), "the validator accepts it"
    assert schema_errors(text), "the schema accepts it"


WRONG_TYPE: dict[str, Any] = {
    "string": 5,
    "boolean": "true",
    "integer": "5",
    "strings": "build",
    "table": 5,
    "tables": [5],
}
TABLES = {"defaults": configkeys.DEFAULTS, "service": configkeys.SERVICE}


def _with(table: str, key: str, value: Any) -> str:
    """A valid file with `key = value` in [defaults], [service] or the site's table (the site
    does not set the key itself: it uses the default)."""
    line = f"{key} = {json.dumps(value)}\n"
    site = GOOD_SITE.replace(f"\n{key} = ", "\n# ")
    if table == "sites":
        return site + line + ('verify = "checks"\n' if key == "required_checks" else "")
    return f"[{table}]\n{line}" + site


MODEL = [
    (table, key, spec)
    for table, keys in (*TABLES.items(), ("sites", configkeys.SITE))
    for key, spec in keys.items()
]


@pytest.mark.parametrize(("table", "key", "spec"), MODEL, ids=[f"{t}.{k}" for t, k, _ in MODEL])
def test_every_modelled_key_is_checked_alike_by_both(
    table: str, key: str, spec: configkeys.Key
) -> None:
    """Driven by the model itself: a value of the wrong type, outside the enum or the range is
    refused by the validator and the schema alike."""
    wrong = [WRONG_TYPE[spec.kind]]
    if spec.enum:
        wrong.append("not-" + spec.enum[0])
    if spec.minimum is not None:
        wrong.append(spec.minimum - 1)
    if spec.maximum is not None:
        wrong.append(spec.maximum + 1)
    for value in wrong:
        text = _with(table, key, value)
        assert validator_rejects(text), f"the validator accepts {key} = {value!r}"
        assert schema_errors(text), f"the schema accepts {key} = {value!r}"
