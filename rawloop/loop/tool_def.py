"""Defining a tool: ``@tool`` reads a function once and makes it a ``Tool`` with a JSON schema.

Theory of operation
-------------------
``@tool`` reads a function once, when it is decorated: its name, its
docstring and its signature become a ``Tool`` whose ``parameters`` is a JSON
object schema with one property per parameter, each with a converter from the
model's JSON to the Python value the annotation asks for (``rawloop.loop.schema``
does the docstrings and the type hints). Everything that can be wrong with a
definition is found then and raised as ``ConfigurationError``, not in the
middle of a run. An explicit ``schema=`` replaces the generated one; a
parameter whose type hint cannot be compiled then gets its JSON as is.

Arguments are parsed and checked against ``parameters`` (by
``rawloop.loop.validate``), then converted, before the handler is called; all the
problems are listed in one ``ToolArgumentsError``. Sync handlers run in a
worker thread (``anyio.to_thread.run_sync``) so that a blocking handler never
stalls the event loop or the other tools running next to it.
"""

from __future__ import annotations

import copy
import functools
import inspect
import re
import sys
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, ParamSpec, TypeVar, overload

import anyio
import anyio.to_thread
import orjson

from ..core.errors import ConfigurationError, RawloopError
from .schema import Compiled, Converter, JSONSchema, SchemaCompiler, parse_docstring, strict_problem
from .validate import json_type, problems

__all__ = ["Tool", "ToolArgumentsError", "tool"]

P = ParamSpec("P")
R = TypeVar("R")

# What OpenAI accepts as a function name (both dialects).
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# At most this many schema problems are listed in one error: the model needs
# enough to fix its call, not a wall of text.
_MAX_PROBLEMS = 10


class ToolArgumentsError(RawloopError):
    """The arguments of a function call are not valid JSON or do not fit the tool's schema.

    ``problems`` lists what was wrong, each prefixed with a JSON path
    (``$.items[2].name: expected string, got integer``).
    """

    def __init__(self, message: str, *, tool: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.tool = tool
        self.problems = tuple(problems)


@dataclass(frozen=True, slots=True)
class _Param:
    name: str
    kind: inspect._ParameterKind
    default: Any
    convert: Converter | None

    @property
    def required(self) -> bool:
        return self.default is inspect.Parameter.empty


def _introspection_target(func: Callable[..., Any]) -> Any:
    """The object whose type hints and docstring describe ``func``."""
    while isinstance(func, functools.partial):
        func = func.func
    if inspect.isroutine(func):
        return func
    # A callable instance: its class's __call__ carries the hints.
    return type(func).__call__


def _detect_async(func: Callable[..., Any]) -> bool:
    while isinstance(func, functools.partial):
        func = func.func
    if inspect.iscoroutinefunction(func):
        return True
    return not inspect.isroutine(func) and inspect.iscoroutinefunction(type(func).__call__)


class Tool(Generic[P, R]):
    """A function the model can call, with its JSON schema.

    Calling a ``Tool`` calls the function, exactly as before decoration. Build
    one with ``@tool`` (or ``Tool(func, ...)``); the arguments are those of
    ``tool``.

    Attributes:
        name: the name the model calls the tool by.
        description: what the tool does, for the model.
        parameters: the JSON schema of the arguments (an object schema); the
            arguments are checked against it, and the ``*_schema()`` methods
            hand out copies of it.
        handler: the wrapped function.
        is_async: whether ``handler`` is awaited (else it runs in a worker thread).
        strict: whether OpenAI's strict mode is asked for.
    """

    def __init__(
        self,
        handler: Callable[P, R],
        *,
        name: str | None = None,
        description: str | None = None,
        schema: Mapping[str, Any] | None = None,
        strict: bool = False,
    ) -> None:
        if not callable(handler):
            raise ConfigurationError(f"a tool needs a callable, got {handler!r}")
        self.handler: Callable[P, R] = handler
        self.name: str = name if name is not None else getattr(handler, "__name__", "")
        if not self.name:
            raise ConfigurationError(f"cannot tell the name of tool {handler!r}; pass name=")
        if not _NAME_RE.match(self.name):
            raise ConfigurationError(
                f"tool name {self.name!r} is not valid: OpenAI allows 1-64 letters, digits, "
                "'_' and '-'; pass name="
            )
        self.is_async: bool = _detect_async(handler)
        self.strict: bool = strict
        functools.update_wrapper(self, handler, updated=())

        target = _introspection_target(handler)
        summary, arg_docs = parse_docstring(getattr(target, "__doc__", None))
        self.description: str = summary if description is None else description
        try:
            signature = inspect.signature(handler)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"tool {self.name!r}: cannot read its signature: {exc}"
            ) from exc
        self._has_var_keyword = False
        self._params: list[_Param] = []
        self.parameters: JSONSchema = self._build(signature, target, arg_docs, schema)
        if strict and (problem := strict_problem(self.parameters)):
            raise ConfigurationError(
                f"tool {self.name!r} is strict, but its schema is not strict-compatible: {problem}"
            )

    def _build(
        self,
        signature: inspect.Signature,
        target: Any,
        arg_docs: Mapping[str, str],
        schema: Mapping[str, Any] | None,
    ) -> JSONSchema:
        explicit = schema is not None
        if explicit and (not isinstance(schema, Mapping) or schema.get("type") != "object"):
            raise ConfigurationError(
                f"tool {self.name!r}: schema= must be a JSON schema with type 'object', got {schema!r}"
            )
        try:
            hints = typing.get_type_hints(target, include_extras=True)
            if sys.version_info < (3, 11):
                # 3.10 wraps the hint of a parameter defaulting to None in
                # Optional; 3.11 stopped. Take the annotations as written so
                # the schema does not depend on the Python version.
                written = inspect.get_annotations(target, eval_str=True)
                hints.update((k, v) for k, v in written.items() if k in hints)
        except Exception as exc:  # unresolvable forward references and the like
            if not explicit:
                raise ConfigurationError(
                    f"tool {self.name!r}: cannot resolve its type hints: {exc}"
                ) from exc
            hints = {}

        compiler = SchemaCompiler(self.name, getattr(target, "__globals__", {}))
        properties: JSONSchema = {}
        required: list[str] = []
        for param in signature.parameters.values():
            if param.kind is param.VAR_POSITIONAL or (
                param.kind is param.VAR_KEYWORD and not explicit
            ):
                stars = "*" if param.kind is param.VAR_POSITIONAL else "**"
                raise ConfigurationError(
                    f"tool {self.name!r}: parameter {stars}{param.name} cannot be described "
                    "to the model; use named parameters"
                    + ("" if stars == "*" else " or pass an explicit schema=")
                )
            if param.kind is param.VAR_KEYWORD:
                self._has_var_keyword = True
                continue
            annotation = hints.get(param.name, Any)
            try:
                compiled = compiler.parameter(param.name, annotation)
            except ConfigurationError:
                if not explicit:
                    raise
                # The user described this parameter by hand; pass its JSON through.
                compiled = Compiled({})
            self._params.append(_Param(param.name, param.kind, param.default, compiled.convert))
            prop = dict(compiled.schema)
            if arg_docs.get(param.name) and "description" not in prop:
                prop["description"] = arg_docs[param.name]
            properties[param.name] = prop
            if param.default is param.empty:
                required.append(param.name)
        if schema is not None:
            return copy.deepcopy(dict(schema))
        # A copy, so that editing one tool's schema (a hook may) never
        # reaches a part shared with another tool or with this module.
        return copy.deepcopy(
            {
                "type": "object",
                "properties": properties,
                "required": required,
                "additionalProperties": False,
            }
        )

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.handler(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Tool {self.name!r} {'async' if self.is_async else 'sync'}>"

    def responses_schema(self) -> dict[str, Any]:
        """The tool as a Responses API ``tools`` entry.

        ``strict`` is always sent: the Responses API treats a missing
        ``strict`` as "make it strict if you can", which turns optional
        parameters into required ones.
        """
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": copy.deepcopy(self.parameters),
            "strict": self.strict,
        }

    def chat_schema(self) -> dict[str, Any]:
        """The tool as a Chat Completions ``tools`` entry (``strict`` only when set)."""
        function: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "parameters": copy.deepcopy(self.parameters),
        }
        if self.strict:
            function["strict"] = True
        return {"type": "function", "function": function}

    def parse_arguments(self, arguments: str | Mapping[str, Any]) -> dict[str, Any]:
        """Parse the model's JSON arguments and check them against ``parameters``.

        An empty string means no arguments. Raises ``ToolArgumentsError``.
        """
        if isinstance(arguments, str):
            if not arguments.strip():
                data: Any = {}
            else:
                try:
                    data = orjson.loads(arguments)
                except orjson.JSONDecodeError as exc:
                    raise ToolArgumentsError(
                        f"arguments for tool {self.name!r} are not valid JSON: {exc}",
                        tool=self.name,
                    ) from None
        else:
            data = arguments
        if not isinstance(data, Mapping):
            raise ToolArgumentsError(
                f"arguments for tool {self.name!r} must be a JSON object, got {json_type(data)}",
                tool=self.name,
            )
        checked: dict[str, Any] = {str(k): v for k, v in data.items()}
        found = problems(checked, self.parameters)
        # A hand-written schema may not require what the function needs.
        for param in self._params:
            missing = f"$: missing required property {param.name!r}"
            if param.required and param.name not in checked and missing not in found:
                found.append(missing)
        if found:
            shown = found[:_MAX_PROBLEMS]
            if len(found) > _MAX_PROBLEMS:
                shown.append(f"... and {len(found) - _MAX_PROBLEMS} more")
            raise ToolArgumentsError(
                f"invalid arguments for tool {self.name!r}: {'; '.join(shown)}",
                tool=self.name,
                problems=found,
            )
        return checked

    async def invoke(self, arguments: str | Mapping[str, Any]) -> Any:
        """Parse and check ``arguments``, call the handler, return what it returned.

        Sync handlers run in a worker thread. Raises ``ToolArgumentsError`` for
        bad arguments and whatever the handler raises; ``run_tool`` is the
        variant that never raises.
        """
        data = self.parse_arguments(arguments)
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        for param in self._params:
            if param.name in data:
                value = data.pop(param.name)
                if param.convert is not None:
                    value = param.convert(value)
            elif param.kind is inspect.Parameter.POSITIONAL_ONLY:
                value = param.default  # later positional-only arguments must not shift
            else:
                continue
            if param.kind is inspect.Parameter.POSITIONAL_ONLY:
                args.append(value)
            else:
                kwargs[param.name] = value
        if data and not self._has_var_keyword:
            # Only reachable with a hand-written schema that allows extra keys.
            unexpected = [f"$: unexpected property {k!r}" for k in data]
            raise ToolArgumentsError(
                f"invalid arguments for tool {self.name!r}: {'; '.join(unexpected)}",
                tool=self.name,
                problems=unexpected,
            )
        kwargs.update(data)

        handler: Callable[..., Any] = self.handler
        if self.is_async:
            return await handler(*args, **kwargs)
        # abandon_on_cancel: a timeout must end the wait even though the
        # thread itself cannot be stopped.
        result = await anyio.to_thread.run_sync(
            functools.partial(handler, *args, **kwargs), abandon_on_cancel=True
        )
        # A sync wrapper around a coroutine function (a decorator that lost
        # the coroutine marker) hands back a coroutine: finish the job.
        if inspect.iscoroutine(result):
            result = await result
        return result


@overload
def tool(
    func: Callable[P, R],
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    schema: Mapping[str, Any] | None = None,
    strict: bool = False,
) -> Tool[P, R]: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    schema: Mapping[str, Any] | None = None,
    strict: bool = False,
) -> Callable[[Callable[P, R]], Tool[P, R]]: ...


def tool(
    func: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    schema: Mapping[str, Any] | None = None,
    strict: bool = False,
) -> Tool[P, R] | Callable[[Callable[P, R]], Tool[P, R]]:
    """Turn a sync or async function into a ``Tool``; usable bare or with options.

    Args:
        func: the function (when used bare, as ``@tool``).
        name: the tool's name; the function's ``__name__`` by default.
        description: what the tool does; the docstring's summary by default.
        schema: a JSON schema (type object) for the arguments, replacing the
            one generated from the type hints. Only then may the function
            take ``**kwargs`` (it receives the properties it has no parameter for).
        strict: ask for OpenAI's strict mode; the schema is checked to be
            strict-compatible.

    Raises:
        ConfigurationError: the function cannot be described to the model.
    """

    def wrap(f: Callable[P, R]) -> Tool[P, R]:
        if isinstance(f, Tool):  # re-wrapping a tool makes a copy with new options
            f = f.handler
        return Tool(f, name=name, description=description, schema=schema, strict=strict)

    if func is None:
        return wrap
    return wrap(func)
