"""JSON from outside (webhook bodies, Pub/Sub message data), decoded without surprises (pure).

``decode`` raises ValueError, saying why, for everything that is not a JSON document: bytes that
are not UTF-8, malformed JSON, and JSON nested too deeply for the decoder (it recurses once per
level, so ``[`` x 1,000 raises RecursionError where it is not caught).
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["decode"]


def decode(data: bytes | str) -> Any:
    """The JSON document in ``data``; ValueError (not JSON, not UTF-8, nested too deeply)."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        return json.loads(text)
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8: {exc}") from None
    except RecursionError:
        raise ValueError("arrays or objects nested too deeply") from None
