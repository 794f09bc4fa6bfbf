"""Agents with identity, sessions and durable dispatch, driven from code.

A thin facade: everything here lives in ``rawloop.serve`` (see docs/serving.md)::

    from rawloop.agents import init_agent

    harness = await init_agent(make_support, id="cust-42")
    reply = await harness.session("billing").prompt("Where is my refund?")
"""

from __future__ import annotations

from .serve.agents import AgentContext as AgentContext
from .serve.agents import Agents as Agents
from .serve.agents import AgentTarget as AgentTarget
from .serve.agents import Profile as Profile
from .serve.agents import load_agents_dir as load_agents_dir
from .serve.harness import AgentHarness as AgentHarness
from .serve.harness import AgentSession as AgentSession
from .serve.harness import dispatch as dispatch
from .serve.harness import init_agent as init_agent
from .serve.store import Dispatch as Dispatch
from .serve.store import SessionFull as SessionFull
from .serve.store import SessionKey as SessionKey
from .serve.store import SessionLimits as SessionLimits
from .serve.store import SessionStore as SessionStore
from .serve.store_sqlite import SQLiteStore as SQLiteStore
from .serve.store_sqlite import default_store_path as default_store_path

__all__ = [
    "AgentContext",
    "AgentHarness",
    "AgentSession",
    "AgentTarget",
    "Agents",
    "Dispatch",
    "Profile",
    "SQLiteStore",
    "SessionFull",
    "SessionKey",
    "SessionLimits",
    "SessionStore",
    "default_store_path",
    "dispatch",
    "init_agent",
    "load_agents_dir",
]
