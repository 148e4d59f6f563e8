"""What a handler answers: the Reply value, GitHub's error body, ETags and conditional requests."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from testkit.github.ratelimits import Bucket

Json = Any

DOCS = "https://docs.github.com/rest"
_CACHE_HEADERS = [
    ("Cache-Control", "private, max-age=60, s-maxage=60"),
    ("Vary", "Accept, Authorization, Cookie, X-GitHub-OTP, Accept-Encoding"),
]


class Headers(Protocol):
    def get(self, name: str, /) -> str | None: ...


@dataclass
class Reply:
    status: int
    json_body: Json = None
    raw_body: bytes | None = None
    content_type: str | None = "application/json; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)
    schema_op: str | None = None  # OpenAPI operationId to validate JSON against
    validate: bool = True
    resource: str = "core"
    bucket: Bucket | None = None
    points: int = 0

    def body_bytes(self) -> bytes:
        if self.raw_body is None:
            self.raw_body = (
                b""
                if self.json_body is None and self.status == 304
                else json.dumps(self.json_body, separators=(",", ":")).encode()
            )
        return self.raw_body


def error(status: int, message: str, doc: str) -> dict[str, str]:
    """GitHub's basic-error body."""
    return {"message": message, "documentation_url": doc, "status": str(status)}


def etag_matches(if_none_match: str | None, value: str) -> bool:
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        tag = candidate.strip()
        if tag == "*":
            return True
        tag = tag.removeprefix("W/").strip('"')
        if tag == value:
            return True
    return False


def not_modified(headers: list[tuple[str, str]]) -> Reply:
    return Reply(304, None, raw_body=b"", content_type=None, headers=headers, validate=False)


def json_ok(obj: Json, op: str, caller_key: str, headers: Headers) -> Reply:
    """200 with a weak ETag per caller and Accept; 304 (free for tokens) when If-None-Match hits."""
    reply = Reply(200, obj, schema_op=op)
    body = reply.body_bytes()
    digest = hashlib.sha256(
        caller_key.encode() + b"\0" + (headers.get("Accept") or "").encode() + b"\0" + body
    ).hexdigest()
    cache = [("ETag", f'W/"{digest}"'), *_CACHE_HEADERS]
    if etag_matches(headers.get("If-None-Match"), digest):
        return not_modified(cache)
    reply.headers += cache
    return reply


def sha_reply(sha: str, headers: Headers) -> Reply:
    """The bare-SHA media type's answer (application/vnd.github.sha)."""
    cache = [
        ("ETag", f'"{sha}"'),
        *_CACHE_HEADERS,
        ("x-github-media-type", "github.v3; param=sha"),
    ]
    if etag_matches(headers.get("If-None-Match"), sha):
        return not_modified(cache)
    return Reply(
        200,
        None,
        raw_body=sha.encode(),
        content_type="application/vnd.github.sha; charset=utf-8",
        headers=cache,
        validate=False,
    )
