"""rawloop: an async tool-calling loop for the OpenAI Responses API that hides nothing.

The core (``sse``, ``responses``, ``chat``) is sans-IO: it turns bytes into
events, deltas and Turns without awaiting or touching a socket.
"""

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .core.errors import (
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
from .core.parse import StreamParser, parse_stream
from .core.sse import ServerSentEvent, SSEDecoder
from .core.turn import Delta, FunctionCall, Turn
from .loop.calls import SlowToolWarning
from .loop.hooks import (
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
from .loop.loop import Handoff, Loop, LoopRun
from .loop.params import UnknownParameterWarning
from .loop.retry import RetryPolicy
from .loop.state import LoopState, RunResult, Step
from .loop.tools import StopLoop, Tool, ToolArgumentsError, ToolResult, UnknownToolError, tool
from .replay.replayer import ReplayReport, ReplayTransport, loop_from_trace, replay
from .trace.format import Trace
from .trace.recorder import Redactor, TraceRecorder

if TYPE_CHECKING:
    from .capture.proxy import RecordingProxy
    from .replay.server import ReplayServer, replay_over_http
    from .serve.otel import OTelHook
    from .serve.remote_tools import RemoteTool, RemoteToolError, remote_session

# Servers, the HTTP front end and integrations load on first use: importing
# rawloop (as the pytest plugin does in every test session) stays cheap.
_LAZY = {
    "OTelHook": ".serve.otel",
    "RecordingProxy": ".capture.proxy",
    "RemoteTool": ".serve.remote_tools",
    "RemoteToolError": ".serve.remote_tools",
    "remote_session": ".serve.remote_tools",
    "ReplayServer": ".replay.server",
    "replay_over_http": ".replay.server",
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
    "SlowToolWarning",
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
    "UnknownParameterWarning",
    "UnknownToolError",
    "__version__",
    "loop_from_trace",
    "parse_stream",
    "remote_session",
    "replay",
    "replay_over_http",
    "tool",
]
