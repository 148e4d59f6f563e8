"""What every blueprint of the HTTP app shares: the Service, who may do what, and one way to
answer an error (HttpError, turned into JSON by the app's one handler)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NoReturn

from flask import Response, jsonify

from reconciler.serve.auth import Access
from reconciler.serve.service import Service

DEFAULT_WAIT = 300.0


@dataclass(frozen=True)
class Web:
    """The app's parts, handed to each blueprint's factory."""

    service: Service
    access: Access
    trigger_token: str | None
    wait_limit: float = DEFAULT_WAIT


class HttpError(Exception):
    """An answer other than success: status, message, extra JSON fields, response headers."""

    def __init__(
        self, status: int, message: str, *, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.extra = extra


def fail(status: int, message: str, **extra: Any) -> NoReturn:
    raise HttpError(status, message, **extra)


def answer(exc: HttpError) -> tuple[Response, int]:
    """The JSON answer of an HttpError: {"error": message, **extra}."""
    response = jsonify({"error": exc.message, **exc.extra})
    response.headers.update(exc.headers)
    return response, exc.status


def known_site(service: Service, site: str) -> None:
    """Raise a 404 naming the known sites unless `site` is one."""
    if site not in service.site_names():
        fail(404, f'unknown site "{site}"', known=list(service.site_names()))
