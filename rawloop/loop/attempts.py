"""One model call of an iteration: attempts, retries and fallback models.

Each attempt is one ``stream_turn``. A retryable failure (a 408/409/429/5xx,
a dropped or stalled connection, a stream cut short, a transient in-stream
error) is retried after the policy's delay; when the retries of a model run
out, or it is not found, the next fallback model gets its own. Every failed
attempt is reported to ``on_error`` with whether and when it is retried.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import httpx

from ..core.errors import APIConnectionError, APIStatusError, IncompleteStream, StreamErrorEvent
from ..core.turn import Turn
from .hooks import ErrorInfo, HookBus
from .state import LoopState
from .wire import stream_turn

if TYPE_CHECKING:
    from .loop import Loop

__all__ = ["call_model"]

# Error codes inside a stream that mean "try again", not "your request is wrong".
_TRANSIENT_STREAM_ERRORS = frozenset(
    {"server_error", "internal_error", "rate_limit_exceeded", "overloaded", "service_unavailable"}
)


async def call_model(client: httpx.AsyncClient, loop: Loop, state: LoopState, bus: HookBus) -> Turn:
    """The turn of ``state``'s next request; raises the last attempt's error when all failed."""
    policy = loop.retry_policy
    url = loop.base_url + loop.dialect.path
    headers = loop._request_headers()
    models = [state.model, *(m for m in loop.fallback_models if m != state.model)]
    attempt = 0
    last: Exception | None = None
    for model_number, model in enumerate(models):
        # Copies: the body must not change when the state does after it was sent.
        body = loop.dialect.build_request(
            model,
            list(state.input),
            instructions=state.instructions,
            tools=list(state.tools),
            params=dict(state.request_params),
        )
        for retry in range(policy.max_retries + 1):
            retry_headers: dict[str, str] | None = None
            try:
                turn = await stream_turn(
                    client,
                    url=url,
                    headers=headers,
                    body=body,
                    dialect=loop.dialect,
                    bus=bus,
                    iteration=state.iteration,
                    attempt=attempt,
                    timeout=loop.timeout,
                )
                if turn.status != "failed" or turn.error is None:
                    return turn
                raise StreamErrorEvent(
                    f"the model reported an error: {turn.error.get('message', turn.error)}",
                    error=turn.error,
                    partial=turn,
                )
            except APIStatusError as exc:
                last, retry_headers = exc, exc.headers
                retryable = policy.is_retryable_status(exc.status)
                next_model = exc.status == 404  # e.g. model_not_found: a fallback may exist
            except StreamErrorEvent as exc:
                last = exc
                code = exc.error.get("code") or exc.error.get("type")
                retryable = code in _TRANSIENT_STREAM_ERRORS
                next_model = False
            except (APIConnectionError, IncompleteStream) as exc:
                last = exc
                retryable, next_model = True, False
            has_more_models = model_number + 1 < len(models)
            will_retry = retryable and retry < policy.max_retries
            delay = policy.delay(retry, retry_headers) if will_retry else 0.0
            await bus.emit(
                "on_error",
                ErrorInfo(state.iteration, attempt, "request", last, will_retry, delay),
                iteration=state.iteration,
                attempt=attempt,
            )
            attempt += 1
            if will_retry:
                await anyio.sleep(delay)
                continue
            if (retryable or next_model) and has_more_models:
                break  # on to the next fallback model
            raise last
    assert last is not None
    raise last
