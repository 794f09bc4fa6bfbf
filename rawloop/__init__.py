"""rawloop: an async tool-calling loop for the OpenAI Responses API that hides nothing.

The core (``sse``, ``responses``, ``chat``) is sans-IO: it turns bytes into
events, deltas and Turns without awaiting or touching a socket.
"""

from .errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    ConfigurationError,
    EventTooLarge,
    HookError,
    IncompleteStream,
    InvalidEncoding,
    InvalidEventData,
    RawloopError,
    ReplayDivergence,
    ReplayError,
    SecretInTraceError,
    StreamError,
    StreamErrorEvent,
    TraceError,
    TraceFormatError,
    TraceVersionError,
)
from .parse import StreamParser, parse_stream
from .sse import ServerSentEvent, SSEDecoder
from .turn import Delta, FunctionCall, Turn

__version__ = "0.1.0"

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "ConfigurationError",
    "Delta",
    "EventTooLarge",
    "FunctionCall",
    "HookError",
    "IncompleteStream",
    "InvalidEncoding",
    "InvalidEventData",
    "RawloopError",
    "ReplayDivergence",
    "ReplayError",
    "SSEDecoder",
    "SecretInTraceError",
    "ServerSentEvent",
    "StreamError",
    "StreamErrorEvent",
    "StreamParser",
    "TraceError",
    "TraceFormatError",
    "TraceVersionError",
    "Turn",
    "__version__",
    "parse_stream",
]
