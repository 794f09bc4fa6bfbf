"""Retry decisions: exponential backoff, the server's retry-after, and which statuses retry."""

from __future__ import annotations

import email.utils
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rawloop.loop.retry import RETRYABLE_STATUS, RetryPolicy, retry_after

from ..conftest import Reply, ScriptedAPI
from .test_loop import loop_for, text_reply

NOW = 1_700_000_000.0


def http_date(timestamp: float) -> str:
    return email.utils.formatdate(timestamp, usegmt=True)


# -- backoff --------------------------------------------------------------------------


def test_backoff_doubles_from_the_initial_delay_up_to_the_cap() -> None:
    policy = RetryPolicy(initial_delay=0.5, max_delay=8.0)
    assert [policy.delay(n) for n in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert RetryPolicy(initial_delay=1.0, max_delay=3.0).delay(5) == 3.0
    assert RetryPolicy(initial_delay=0.0).delay(4) == 0.0
    assert all(isinstance(policy.delay(n), float) for n in range(3))


def test_defaults() -> None:
    policy = RetryPolicy()
    assert (policy.max_retries, policy.initial_delay, policy.max_delay) == (2, 0.5, 8.0)
    assert policy.max_retry_after == 60.0
    assert policy.delay(0, {}) == 0.5  # no header: plain backoff


@given(st.integers(min_value=0, max_value=100))
def test_backoff_never_shrinks_and_never_passes_the_cap(retry: int) -> None:
    policy = RetryPolicy(initial_delay=0.25, max_delay=5.0)
    assert 0.25 <= policy.delay(retry) <= 5.0
    assert policy.delay(retry + 1) >= policy.delay(retry)


@pytest.mark.parametrize("retry", [1024, 1100, 10_000])
def test_backoff_stays_at_the_cap_for_any_retry_number(retry: int) -> None:
    # A policy that retries "forever" (max_retries=10_000) must not overflow.
    assert RetryPolicy(max_retries=20_000).delay(retry) == 8.0


# -- what the server says --------------------------------------------------------------


def test_retry_after_seconds() -> None:
    assert retry_after({"retry-after": "3"}) == 3.0
    assert retry_after({"Retry-After": "1.5"}) == 1.5
    assert retry_after({"RETRY-AFTER": " 2 "}) == 2.0
    assert RetryPolicy().delay(0, {"retry-after": "3"}) == 3.0
    assert RetryPolicy().delay(5, {"retry-after": "0"}) == 0.0  # told: no backoff on top


def test_retry_after_http_date() -> None:
    assert retry_after({"retry-after": http_date(NOW + 30)}, now=NOW) == pytest.approx(30.0)
    # The RFC 9110 example format, and a date in the past (wait nothing).
    assert retry_after(
        {"retry-after": "Fri, 31 Dec 1999 23:59:59 GMT"}, now=946684799.0 - 10
    ) == pytest.approx(10.0)
    assert retry_after({"retry-after": http_date(NOW - 100)}, now=NOW) == pytest.approx(-100.0)
    assert RetryPolicy().delay(0, {"retry-after": http_date(0)}) == 0.0


def test_retry_after_ms_takes_precedence() -> None:
    headers = {"retry-after-ms": "250", "retry-after": "30"}
    assert retry_after(headers) == 0.25
    assert RetryPolicy().delay(0, headers) == 0.25
    assert retry_after({"Retry-After-Ms": "1500"}) == 1.5


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"retry-after": "soon"},
        {"retry-after": ""},
        {"retry-after": "Funday, 99 Foo 20xx"},
        {"x-other": "5"},
    ],
)
def test_missing_or_garbage_values_are_ignored(headers: dict[str, str]) -> None:
    assert retry_after(headers) is None
    assert RetryPolicy(initial_delay=0.5).delay(2, headers) == 2.0


def test_garbage_retry_after_ms_falls_back_to_retry_after() -> None:
    assert retry_after({"retry-after-ms": "fast", "retry-after": "4"}) == 4.0
    assert RetryPolicy().delay(1, {"retry-after-ms": "fast"}) == 1.0


@pytest.mark.parametrize(
    "headers",
    [{"retry-after": "nan"}, {"retry-after": "NaN"}, {"retry-after-ms": "nan"}],
)
def test_nan_is_garbage_too(headers: dict[str, str]) -> None:
    # float() accepts "nan"; a delay of nan makes anyio.sleep raise ValueError mid-run.
    assert RetryPolicy(initial_delay=0.5).delay(1, headers) == 1.0


@pytest.mark.parametrize(
    "headers", [{"retry-after": "inf"}, {"retry-after-ms": "-inf"}, {"retry-after": "1e400"}]
)
def test_infinite_values_give_a_finite_delay(headers: dict[str, str]) -> None:
    delay = RetryPolicy(max_retry_after=20.0).delay(1, headers)
    assert math.isfinite(delay) and 0.0 <= delay <= 20.0


@pytest.mark.anyio
async def test_a_nan_retry_after_does_not_crash_a_run() -> None:
    api = ScriptedAPI([Reply(b"{}", status=429, headers={"retry-after": "nan"}), text_reply("ok")])
    result = await loop_for(api, retries=RetryPolicy(max_retries=1, initial_delay=0.0)).run("x")
    assert result.text == "ok" and len(api.requests) == 2


def test_the_servers_wait_is_capped_by_max_retry_after() -> None:
    policy = RetryPolicy(max_retry_after=20.0)
    assert policy.delay(0, {"retry-after": "3600"}) == 20.0
    assert policy.delay(0, {"retry-after-ms": "90000"}) == 20.0
    assert policy.delay(0, {"retry-after": http_date(4_102_444_800)}) == 20.0  # year 2100
    assert policy.delay(0, {"retry-after": "-5"}) == 0.0  # never negative
    # The cap on the server's wait is its own: max_delay (backoff) does not apply.
    assert RetryPolicy(max_delay=1.0, max_retry_after=60.0).delay(0, {"retry-after": "30"}) == 30.0


# -- which statuses retry ------------------------------------------------------------------


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504, 520, 529, 599])
def test_retryable_statuses(status: int) -> None:
    assert RetryPolicy().is_retryable_status(status)


@pytest.mark.parametrize("status", [200, 204, 301, 400, 401, 403, 404, 413, 415, 422, 499])
def test_statuses_that_are_not_retried(status: int) -> None:
    assert not RetryPolicy().is_retryable_status(status)


def test_the_retryable_set_is_timeouts_conflicts_and_rate_limits() -> None:
    assert frozenset({408, 409, 429}) == RETRYABLE_STATUS
