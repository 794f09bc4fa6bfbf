"""rawloop: an async tool-calling loop for the OpenAI Responses API that hides nothing.

The core (``sse``, ``responses``, ``chat``) is sans-IO: it turns bytes into
events, deltas and Turns without awaiting or touching a socket.
"""

from ._version import __version__
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
from .hooks import (
    HOOK_POINTS,
    ChunkInfo,
    DecisionInfo,
    EditInfo,
    EndInfo,
    ErrorInfo,
    EventInfo,
    HandoffInfo,
    HookBus,
    RequestInfo,
    ResponseInfo,
    ResultInfo,
)
from .loop import Handoff, Loop, LoopRun
from .parse import StreamParser, parse_stream
from .replay import ReplayReport, ReplayTransport, loop_from_trace, replay
from .retry import RetryPolicy
from .sse import ServerSentEvent, SSEDecoder
from .state import LoopState, RunResult, Step
from .tools import StopLoop, Tool, ToolArgumentsError, ToolResult, UnknownToolError, tool
from .trace import Redactor, Trace, TraceRecorder
from .turn import Delta, FunctionCall, Turn

__all__ = [
    "HOOK_POINTS",
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "ChunkInfo",
    "ConfigurationError",
    "DecisionInfo",
    "Delta",
    "EditInfo",
    "EndInfo",
    "ErrorInfo",
    "EventInfo",
    "EventTooLarge",
    "FunctionCall",
    "Handoff",
    "HandoffInfo",
    "HookBus",
    "HookError",
    "IncompleteStream",
    "InvalidEncoding",
    "InvalidEventData",
    "Loop",
    "LoopRun",
    "LoopState",
    "RawloopError",
    "Redactor",
    "ReplayDivergence",
    "ReplayError",
    "ReplayReport",
    "ReplayTransport",
    "RequestInfo",
    "ResponseInfo",
    "ResultInfo",
    "RetryPolicy",
    "RunResult",
    "SSEDecoder",
    "SecretInTraceError",
    "ServerSentEvent",
    "Step",
    "StopLoop",
    "StreamError",
    "StreamErrorEvent",
    "StreamParser",
    "Tool",
    "ToolArgumentsError",
    "ToolResult",
    "Trace",
    "TraceError",
    "TraceFormatError",
    "TraceRecorder",
    "TraceVersionError",
    "Turn",
    "UnknownToolError",
    "__version__",
    "loop_from_trace",
    "parse_stream",
    "replay",
    "tool",
]
