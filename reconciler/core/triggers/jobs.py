"""Parse a Cloud Scheduler job carried by a Pub/Sub message (pure: no Pub/Sub import).

Two equivalent forms are accepted:

- JSON data: ``{"job": "sync"}`` (every site) or ``{"job": "sync", "sites": ["blog", "shop"]}``;
- empty data with message attributes: ``job=sync`` and optionally ``sites=blog,shop``.

When the data is not empty it alone decides (attributes are then ignored). The only job is
``sync``. Anything else raises JobError with a message saying what is wrong; the caller logs it
and drops (acks) the message, since redelivering a malformed message can never succeed.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping

from reconciler.core.errors import JobError
from reconciler.core.triggers import jsontext
from reconciler.core.triggers.hints import Hint, Outcome

__all__ = ["JOBS", "JOB_EVENT", "JobError", "classify_job", "parse_job"]

JOB_EVENT = "scheduler"

JOBS = ("sync",)
_KEYS = ("job", "sites")
_MAX_SHOWN = 200  # characters of a bad value quoted back in an error message


def parse_job(
    data: bytes, attributes: Mapping[str, str], known_sites: Collection[str]
) -> frozenset[str] | None:
    """The sites a job asks to sync: None for every site, else a non-empty set of known names.

    Raises JobError when the message is malformed, names an unknown job, or names sites that
    ``known_sites`` does not hold.
    """
    if data.strip():
        job, sites = _from_data(data)
    elif "job" in attributes:
        job, sites = _from_attributes(attributes)
    else:
        raise JobError(
            'empty message: expected JSON data like {"job": "sync"} or a "job" attribute'
        )
    if job not in JOBS:
        raise JobError(f"unknown job {_show(job)} (known jobs: {', '.join(JOBS)})")
    if sites is None:
        return None
    unknown = sorted(set(sites) - set(known_sites))
    if unknown:
        names = ", ".join(_show(s) for s in unknown)
        plural = "s" if len(unknown) > 1 else ""
        raise JobError(f"unknown site{plural}: {names}")
    return frozenset(sites)


def classify_job(data: bytes, attributes: Mapping[str, str], known_sites: Collection[str]) -> Hint:
    """parse_job as a Hint: SYNC with the sites asked for, or MALFORMED saying why not."""
    try:
        sites = parse_job(data, attributes, known_sites)
    except JobError as exc:
        return Hint(JOB_EVENT, Outcome.MALFORMED, str(exc))
    shown = "every site" if sites is None else ", ".join(sorted(sites))
    return Hint(JOB_EVENT, Outcome.SYNC, f"job asks to sync {shown}", sites)


def _from_data(data: bytes) -> tuple[object, list[str] | None]:
    try:
        doc = jsontext.decode(data)
    except ValueError as exc:  # not UTF-8, not JSON, nested too deeply
        raise JobError(f"message data is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise JobError(f"message data must be a JSON object, not {_json_type(doc)}")
    extra = sorted(k for k in doc if k not in _KEYS)
    if extra:
        raise JobError(
            f"unexpected key{'s' if len(extra) > 1 else ''} {', '.join(_show(k) for k in extra)}"
            f" (allowed: {', '.join(_KEYS)})"
        )
    if "job" not in doc:
        raise JobError('message data has no "job" key')
    job = doc["job"]
    if not isinstance(job, str):
        raise JobError(f'"job" must be a string, not {_json_type(job)}')
    raw = doc.get("sites")
    if raw is None:  # absent or null: every site
        return job, None
    if not isinstance(raw, list):
        raise JobError(f'"sites" must be a list of site names, not {_json_type(raw)}')
    bad = [s for s in raw if not isinstance(s, str)]
    if bad:
        raise JobError(f'"sites" must be a list of strings; got {_show(bad[0])}')
    if not raw:
        raise JobError('"sites" is empty (leave it out to sync every site)')
    return job, raw


def _from_attributes(attributes: Mapping[str, str]) -> tuple[object, list[str] | None]:
    job = attributes["job"].strip()
    if "sites" not in attributes:
        return job, None
    sites = [s.strip() for s in attributes["sites"].split(",") if s.strip()]
    if not sites:
        raise JobError('the "sites" attribute names no site (leave it out to sync every site)')
    return job, sites


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _show(value: object) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    except RecursionError:  # parsed, but too deep to write back
        text = _json_type(value)
    return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "..."
