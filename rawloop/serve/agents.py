"""Agents with identity: who is asked (name, instance id, session) decides the loop.

An agent is built per request from an ``AgentContext``: the agent ``name``,
the instance ``id`` (a customer, a ticket, a thread), the ``session`` name,
the environment ``env`` and the request's ``payload``. What builds it is one
of:

* a ``Loop``: the same loop for every context;
* a ``Profile``: model, instructions, tools and ``Loop`` options, shared;
  ``profile.extend(...)`` makes a per-agent one (tool lists are merged, a
  later tool of the same name replacing the earlier);
* a factory ``factory(context)`` (sync or async) returning a ``Loop``, a
  ``Profile`` or a mapping of the fields to build one (merged into the
  served profile, if any). A factory whose first parameter is not named
  ``context``/``ctx`` nor annotated ``AgentContext`` is called with the
  agent name alone, as before. ``None`` or ``LookupError`` means no such
  agent.

``Agents`` is what the server serves: one target for every name, or a
mapping name -> target, such as ``load_agents_dir("agents/")`` gives (every
``*.py`` file of the folder is an agent named after the file; the module's
``agent`` attribute, else ``make_agent``, ``factory`` or ``loop``, is its
target).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.addresses import is_loopback_url
from ..core.errors import ConfigurationError
from ..loop.loop import Loop
from ..loop.tool_files import load_module
from .sessions import check_name

__all__ = [
    "AgentContext",
    "AgentTarget",
    "Agents",
    "Profile",
    "load_agents_dir",
    "missing_api_keys",
]

#: The attributes of an agent module looked at, in order.
_MODULE_ATTRIBUTES = ("agent", "make_agent", "factory", "loop")


@dataclass(frozen=True)
class AgentContext:
    """Who an agent is built for: name, instance id, session, environment and payload."""

    name: str
    id: str | None = None
    session: str | None = None
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ), repr=False)
    payload: Any = field(default=None, repr=False)


def _merge_tools(*groups: Iterable[Any]) -> tuple[Any, ...]:
    """Tools in order; a later tool with the name of an earlier one replaces it."""
    merged: dict[str, Any] = {}
    for group in groups:
        for item in group:
            merged[_tool_name(item)] = item
    return tuple(merged.values())


def _tool_name(item: Any) -> str:
    if isinstance(item, Mapping):
        function = item.get("function", item)
        return str(function.get("name") if isinstance(function, Mapping) else id(item))
    return str(getattr(item, "name", None) or getattr(item, "__name__", None) or id(item))


@dataclass(frozen=True)
class Profile:
    """What agents share: model, instructions, tools and other ``Loop`` options.

    ``extend`` makes a per-agent profile; ``build`` makes the ``Loop``.
    """

    model: str | None = None
    instructions: str | None = None
    tools: tuple[Any, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)

    def extend(
        self,
        *,
        model: str | None = None,
        instructions: str | None = None,
        tools: Iterable[Any] = (),
        **options: Any,
    ) -> Profile:
        """This profile with the given fields: scalars replace, tools and options merge."""
        return Profile(
            model=model if model is not None else self.model,
            instructions=instructions if instructions is not None else self.instructions,
            tools=_merge_tools(self.tools, tools),
            options={**self.options, **options},
        )

    def merged(self, fields: Mapping[str, Any]) -> Profile:
        """``extend(**fields)`` for a mapping of ``Loop`` fields."""
        return self.extend(**dict(fields))

    def build(self) -> Loop:
        """The ``Loop`` of this profile (``ConfigurationError`` without a model)."""
        if not self.model:
            raise ConfigurationError("an agent profile needs a model to build a Loop")
        return Loop(self.model, self.instructions, self.tools, **dict(self.options))


AgentTarget = (
    Loop | Profile | Callable[..., Loop | Profile | Mapping[str, Any] | Awaitable[Any] | None]
)


def _wants_context(factory: Callable[..., Any]) -> bool:
    try:
        parameters = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):
        return False
    if not parameters:
        return False
    first = parameters[0]
    annotation = first.annotation
    named = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    return first.name in ("context", "ctx") or named == "AgentContext"


class Agents:
    """The agents a server (or a harness) builds loops from.

    Args:
        targets: one ``AgentTarget`` for every agent name, or a mapping
            name -> target (names not in it are unknown).
        profile: shared fields that factories' mappings and ``Profile``
            targets extend.
    """

    def __init__(
        self,
        targets: AgentTarget | Mapping[str, AgentTarget],
        *,
        profile: Profile | None = None,
    ) -> None:
        if isinstance(targets, Mapping):
            self.targets: dict[str, AgentTarget] | None = {
                check_name(name, "agent name"): _checked(target) for name, target in targets.items()
            }
            self.default: AgentTarget | None = None
        else:
            self.targets, self.default = None, _checked(targets)
        self.profile = profile or Profile()

    def __repr__(self) -> str:
        names = "*" if self.targets is None else ", ".join(sorted(self.targets))
        return f"Agents({names})"

    @property
    def names(self) -> list[str] | None:
        """The agents served by name, or ``None`` when any name is served."""
        return None if self.targets is None else sorted(self.targets)

    def target(self, name: str) -> AgentTarget | None:
        """What builds agent ``name``, or ``None`` when there is no such agent."""
        if self.targets is None:
            return self.default
        return self.targets.get(name)

    async def loop_for(self, context: AgentContext) -> Loop | None:
        """The loop for ``context``, or ``None`` when there is no such agent."""
        target = self.target(context.name)
        if target is None:
            return None
        made: Any = target
        if callable(target) and not isinstance(target, (Loop, Profile)):
            try:
                made = target(context) if _wants_context(target) else target(context.name)
                if inspect.isawaitable(made):
                    made = await made
            except LookupError:
                return None
        if made is None or isinstance(made, Loop):
            return made
        if isinstance(made, Profile):
            return self.profile.extend(
                model=made.model,
                instructions=made.instructions,
                tools=made.tools,
                **dict(made.options),
            ).build()
        if isinstance(made, Mapping):
            return self.profile.merged(made).build()
        raise ConfigurationError(
            f"agent {context.name!r}: its factory returned {type(made).__name__}; "
            "expected a Loop, a Profile or a mapping of Loop fields"
        )


def _checked(target: Any) -> AgentTarget:
    if isinstance(target, (Loop, Profile)) or callable(target):
        return target  # type: ignore[no-any-return]
    raise ConfigurationError(
        f"an agent must be a Loop, a Profile or a factory(context) -> Loop, "
        f"not {type(target).__name__}"
    )


def load_agents_dir(path: str | Path) -> dict[str, AgentTarget]:
    """Every ``*.py`` module of folder ``path`` as an agent named after its file.

    Files starting with ``_`` are skipped. Raises ``ConfigurationError`` for
    a folder without agents or a module without an agent attribute.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise ConfigurationError(f"{folder}: not a folder of agent modules")
    found: dict[str, AgentTarget] = {}
    for file in sorted(folder.glob("*.py")):
        if file.name.startswith("_"):
            continue
        name = file.stem
        try:
            check_name(name, "agent name")
        except ValueError as exc:
            raise ConfigurationError(f"{file}: {exc}") from None
        module = load_module(file)
        for attribute in _MODULE_ATTRIBUTES:
            if hasattr(module, attribute):
                found[name] = _checked(getattr(module, attribute))
                break
        else:
            raise ConfigurationError(
                f"{file}: no agent in it: define one of {', '.join(_MODULE_ATTRIBUTES)}"
            )
    if not found:
        raise ConfigurationError(f"{folder}: no agent modules (*.py) in it")
    return found


def missing_api_keys(agents: Agents, env: Mapping[str, str] | None = None) -> list[str]:
    """Why each served agent cannot reach its model, naming the variable to set.

    A ``Loop`` needs a key unless it has one, an ``http_client`` or a
    loopback ``base_url``; a ``Profile`` or a factory needs ``OPENAI_API_KEY``
    unless its (or the environment's ``OPENAI_BASE_URL``) base URL is loopback.
    """
    env = os.environ if env is None else env
    problems: list[str] = []
    names = agents.names or ["*"]
    for name in names:
        target = agents.target(name if name != "*" else "default")
        if isinstance(target, Loop):
            if (
                target._api_key
                or target.http_client is not None
                or is_loopback_url(target.base_url)
            ):
                continue
            base = target.base_url
        else:
            options = dict(agents.profile.options)
            if isinstance(target, Profile):
                options.update(target.options)
            if options.get("api_key") or options.get("http_client") is not None:
                continue
            base = str(options.get("base_url") or env.get("OPENAI_BASE_URL") or "")
            if env.get("OPENAI_API_KEY") or (base and is_loopback_url(base)):
                continue
            base = base or "https://api.openai.com/v1"
        agent = "every agent" if name == "*" else f"agent {name!r}"
        problems.append(f"{agent} calls {base} and OPENAI_API_KEY is not set")
    return problems
