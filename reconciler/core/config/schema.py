"""The JSON Schema of sites.toml, made from the model the validator reads (keys.py for
[defaults], [service] and [sites.NAME]; notify/config.py's tables for [notify]). It checks the
structure an editor can check as you type (known keys, types, enums, ranges, name patterns);
`reconciler validate` checks that and the rest (templates, cron, duplicate targets, ...).

`reconciler schema` prints it; the committed copy is schema/sites.schema.json."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from reconciler.core.config import keys as configkeys
from reconciler.core.config.keys import Key
from reconciler.core.model import HOME_CLUSTER
from reconciler.core.notify.config import CHANNEL_KEYS, NOTIFY_KEYS, ChannelKind, EventKind

DRAFT = "http://json-schema.org/draft-07/schema#"  # the newest draft Taplo reads
Schema = dict[str, Any]


def json_schema() -> Schema:
    """The whole schema, a JSON-ready dict (stable key order: its dump is committed)."""
    site = _table(configkeys.SITE, required=("repo",))
    site["properties"]["notify"] = _table_or_false(_notify(), configkeys.SITE["notify"])
    helm = _table(configkeys.HELM)
    helm["properties"]["values"] = {
        "description": configkeys.HELM["values"].description,
        **_table(configkeys.HELM_VALUES),
        "anyOf": [{"required": ["tag"]}, {"required": ["digest"]}],
    }
    site["properties"]["helm"] = {"description": configkeys.SITE["helm"].description, **helm}
    site["properties"]["git"] = _git(configkeys.GIT, configkeys.SITE["git"], ("repo", "file"))
    defaults = _table(configkeys.DEFAULTS)
    defaults["properties"]["git"] = _git(configkeys.GIT_DEFAULTS, configkeys.DEFAULTS["git"], ())
    return {
        "$schema": DRAFT,
        "title": "sites.toml",
        "description": "The sites the reconciler keeps on their branch's newest ready commit.",
        "type": "object",
        "additionalProperties": False,
        "required": ["sites"],
        "properties": {
            "defaults": _described(defaults, "defaults"),
            "service": _described(_table(configkeys.SERVICE), "service"),
            "sites": {
                "description": configkeys.TOP["sites"],
                "type": "object",
                "minProperties": 1,
                "propertyNames": {"pattern": configkeys.SITE_NAME_PATTERN},
                "additionalProperties": site,
            },
            "notify": _described(_notify(), "notify"),
            "clusters": {
                "description": configkeys.TOP["clusters"],
                "type": "object",
                "propertyNames": {
                    "pattern": configkeys.CLUSTER_NAME_PATTERN,
                    "not": {"const": HOME_CLUSTER},
                },
                "additionalProperties": {
                    **_table(configkeys.CLUSTER),
                    "anyOf": [{"required": ["kubeconfig"]}, {"required": ["context"]}],
                },
            },
            "windows": {
                "description": configkeys.TOP["windows"],
                "type": "object",
                "propertyNames": {"pattern": configkeys.SITE_NAME_PATTERN},
                "additionalProperties": _table(configkeys.WINDOW, required=("kind", "timezone")),
            },
        },
    }


def _described(schema: Schema, top: str) -> Schema:
    return {"description": configkeys.TOP[top], **schema}


def _table(keys: Mapping[str, Key], required: tuple[str, ...] = ()) -> Schema:
    schema: Schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {name: _key(key) for name, key in keys.items()},
    }
    if required:
        schema["required"] = list(required)
    pairs = [(name, other) for name, key in keys.items() for other in key.excludes]
    if pairs:
        schema["allOf"] = [{"not": {"required": list(pair)}} for pair in pairs]
    return schema


def _key(key: Key) -> Schema:
    schema: Schema = {"description": key.description}
    if key.kind == "strings":
        schema.update(type="array", items={"type": "string", "minLength": 1})
    elif key.kind == "table":
        schema["type"] = "object"
    elif key.kind == "tables":
        items = _table(key.items or {}, required=key.required)
        schema.update(type="array", minItems=1, maxItems=key.maximum, items=items)
        return schema
    else:
        schema["type"] = key.kind
    if key.kind == "string":
        schema["minLength"] = 1
    if key.enum:
        schema["enum"] = list(key.enum)
    if key.pattern is not None:
        schema["pattern"] = key.pattern
    if key.minimum is not None:
        schema["minimum"] = key.minimum
    if key.maximum is not None:
        schema["maximum"] = key.maximum
    return schema


def _git(keys: Mapping[str, Key], key: Key, required: tuple[str, ...]) -> Schema:
    """[sites.NAME.git] (repo and file required there: [defaults.git] may give repo, but a
    schema cannot see across tables, so only file is required) and [defaults.git]."""
    table = _table(keys, required=tuple(k for k in required if k != "repo"))
    return {"description": key.description, **table}


def _table_or_false(table: Schema, key: Key) -> Schema:
    return {"description": key.description, "oneOf": [table, {"const": False}]}


def _notify() -> Schema:
    """[notify] and [sites.NAME.notify]: the same keys (a site's override them)."""
    properties: Schema = {
        "status_url": {"type": "string", "pattern": r"^https?://\S+$"},
        "events": {"type": "array", "items": {"enum": [e.value for e in EventKind]}},
        "blocked_after": {"type": "integer", "minimum": 0, "maximum": 604800},
        ChannelKind.GITHUB_DEPLOYMENTS.value: {
            "description": "true (environment: the site's name), an environment name, or false",
            "type": ["boolean", "string"],
            "minLength": 1,
            "maxLength": 255,
        },
    }
    for channel, keys in CHANNEL_KEYS.items():
        properties[channel] = {"oneOf": [_channel(keys), {"const": False}]}
    # A key added to NOTIFY_KEYS and not modelled above fails here (KeyError), in every test.
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {key: properties[key] for key in NOTIFY_KEYS},
    }


def _channel(keys: tuple[str, ...]) -> Schema:
    """A channel: each secret from an environment variable XOR a file; the URL is required."""
    bases = list(dict.fromkeys(key.rsplit("_", 1)[0] for key in keys))
    schema: Schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            key: {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"}
            if key.endswith("_env")
            else {"type": "string", "pattern": "^/"}
            for key in keys
        },
        "allOf": [{"not": {"required": [f"{base}_env", f"{base}_file"]}} for base in bases],
    }
    url = bases[0]  # webhook_* or url_*: where the URL comes from
    schema["anyOf"] = [{"required": [f"{url}_env"]}, {"required": [f"{url}_file"]}]
    return schema
