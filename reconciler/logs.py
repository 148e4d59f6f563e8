"""Logging setup: one JSON object per line off a terminal, plain text on one; never a secret."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from reconciler.settings import Settings

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
_SECRET_WORDS = ("token", "secret", "password", "authorization", "private_key")


class JsonFormatter(logging.Formatter):
    """Structured log lines: time, level, logger, message and the record's `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key in _STANDARD or key.startswith("_"):
                continue
            if any(word in key.lower() for word in _SECRET_WORDS):
                continue
            entry[key] = (
                value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
            )
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup(settings: Settings, *, verbose: bool = False) -> None:
    """Route the root logger to stdout in the format LOG_FORMAT asks (json|text; auto by TTY)."""
    fmt = settings.log_format or ("text" if sys.stdout.isatty() else "json")
    handler = logging.StreamHandler(sys.stdout)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    debug = verbose or settings.log_level == "debug"
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    for noisy in ("urllib3", "kubernetes", "google", "apscheduler.executors", "github"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
