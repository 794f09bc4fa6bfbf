"""rawloop: an async tool-calling loop for the OpenAI Responses API that hides nothing.

The core (``sse``, ``responses``, ``chat``) is sans-IO: it turns bytes into
events, deltas and Turns without awaiting or touching a socket.
"""

from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from .otel import OTelHook
    from .proxy import RecordingProxy
    from .remote import RemoteTool, RemoteToolError, remote_session
    from .server import ReplayServer, replay_over_http

# Servers, the HTTP front end and integrations load on first use: importing
# rawloop (as the pytest plugin does in every test session) stays cheap.
_LAZY = {
    "OTelHook": ".otel",
    "RecordingProxy": ".proxy",
    "RemoteTool": ".remote",
    "RemoteToolError": ".remote",
    "remote_session": ".remote",
    "ReplayServer": ".server",
    "replay_over_http": ".server",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rawloop' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module, __name__), name)


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
    "OTelHook",
    "RawloopError",
    "RecordingProxy",
    "Redactor",
    "RemoteTool",
    "RemoteToolError",
    "ReplayDivergence",
    "ReplayError",
    "ReplayReport",
    "ReplayServer",
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
    "remote_session",
    "replay",
    "replay_over_http",
    "tool",
]
