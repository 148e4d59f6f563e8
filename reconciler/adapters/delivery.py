"""Posts rendered notifications over HTTPS (requests): secrets read at send time, HMAC-signed."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

import requests

from reconciler.core.errors import DeliveryError
from reconciler.core.notify.config import Channel, SecretRef
from reconciler.core.notify.render import SIGNATURE_HEADER, Notification, render, sign

TIMEOUT = (5.0, 10.0)  # connect, read


def read_secret(ref: SecretRef, env: Mapping[str, str]) -> str:
    """The secret's value from its environment variable or mounted file; raises DeliveryError."""
    if ref.env is not None:
        value = env.get(ref.env, "").strip()
        if not value:
            raise DeliveryError(f"environment variable {ref.env} is not set", retryable=False)
        return value
    assert ref.file is not None
    try:
        with open(ref.file, encoding="utf-8") as f:
            value = f.read().strip()
    except OSError as exc:
        raise DeliveryError(f"cannot read {ref.file}: {exc.strerror}", retryable=False) from exc
    if not value:
        raise DeliveryError(f"{ref.file} is empty", retryable=False)
    return value


class WebhookSender:
    """One requests.Session; 5xx, 429 and network errors are retryable, other 4xx are not."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env = os.environ if env is None else env
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "reconciler"

    def send(self, channel: Channel, notification: Notification) -> None:
        """Render for the channel's kind, sign when it has a secret, POST."""
        assert channel.url is not None
        url = read_secret(channel.url, self.env)
        body = json.dumps(render(channel.kind, notification), ensure_ascii=False).encode()
        out = {
            "Content-Type": "application/json; charset=utf-8",
            "X-Reconciler-Event": notification.event.value,
            "X-Reconciler-Delivery": notification.id,
        }
        if channel.secret is not None:
            out[SIGNATURE_HEADER] = sign(read_secret(channel.secret, self.env).encode(), body)
        try:
            r = self.session.post(url, data=body, headers=out, timeout=TIMEOUT)
        except requests.RequestException as exc:
            # never echo the URL: for Slack and Google Chat it is the secret
            raise DeliveryError(
                f"{channel.name}: cannot reach the endpoint ({type(exc).__name__})"
            ) from exc
        if 200 <= r.status_code < 300:
            return
        retryable = r.status_code >= 500 or r.status_code in (408, 429)
        raise DeliveryError(
            f"{channel.name}: the endpoint answered {r.status_code} {r.text[:120]!r}",
            retryable=retryable,
        )
