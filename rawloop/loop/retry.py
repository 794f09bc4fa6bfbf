"""When to retry a failed model call, and how long to wait: pure decisions, no sleeping."""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["RETRYABLE_STATUS", "RetryPolicy", "retry_after"]

#: Statuses worth another attempt: timeouts, conflicts, rate limits, server errors.
RETRYABLE_STATUS = frozenset({408, 409, 429})


@dataclass(frozen=True)
class RetryPolicy:
    """How many times to retry a model call and how to back off.

    The delay before retry ``n`` (0-based) is ``initial_delay * 2**n`` capped at
    ``max_delay``, unless the server said how long to wait (``retry-after-ms``
    or ``retry-after``), which is honoured up to ``max_retry_after``.
    """

    max_retries: int = 2
    initial_delay: float = 0.5
    max_delay: float = 8.0
    max_retry_after: float = 60.0

    def is_retryable_status(self, status: int) -> bool:
        return status in RETRYABLE_STATUS or status >= 500

    def delay(self, retry: int, headers: Mapping[str, str] | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (0 for the first retry)."""
        if headers is not None:
            told = retry_after(headers)
            if told is not None:
                return float(min(max(told, 0.0), self.max_retry_after))
        # 2.0**1024 overflows; by 2**1000 any cap has long been reached.
        return float(min(self.initial_delay * 2.0 ** min(retry, 1000), self.max_delay))


def retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the server asked us to wait, from ``retry-after-ms`` or ``retry-after``."""
    lowered = {k.lower(): v for k, v in headers.items()}
    raw_ms = lowered.get("retry-after-ms")
    if raw_ms is not None:
        try:
            ms = float(raw_ms)
        except ValueError:
            ms = math.nan
        if not math.isnan(ms):
            return ms / 1000.0
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        seconds = None
    if seconds is not None:
        return None if math.isnan(seconds) else seconds
    try:
        parsed = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return parsed.timestamp() - (time.time() if now is None else now)
