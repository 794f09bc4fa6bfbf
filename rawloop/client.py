"""A Python client of ``rawloop serve-agent``: ``AgentClient(base_url)``.

A thin facade over ``rawloop.serve.client`` (see docs/serving.md).
"""

from __future__ import annotations

from .serve.client import AgentClient as AgentClient
from .serve.client import AgentClientError as AgentClientError
from .serve.client import AgentConnection as AgentConnection
from .serve.client import Reply as Reply

__all__ = ["AgentClient", "AgentClientError", "AgentConnection", "Reply"]
