"""``rawloop tools FILE.py``: tool definitions as pretty JSON."""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path

import pytest

from rawloop.cli.tools_command import add_parser, tools_command
from rawloop.core.errors import ConfigurationError

TOOLS = '''
from typing import Literal

import rawloop
from rawloop import tool


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two numbers.

    Args:
        a: the first factor.
        b: the second factor.
    """
    return a * b


@rawloop.tool(name="get_weather", strict=True)
def weather(city: str, unit: Literal["C", "F"]) -> str:
    """Today's weather in a city."""
    return "sunny"


also_multiply = multiply  # the same tool bound twice is listed once


def helper() -> None:
    """Not a tool."""
'''


def write(tmp_path: Path, source: str, name: str = "mytools.py") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return str(path)


def test_responses_definitions_in_definition_order(tmp_path: Path) -> None:
    out = tools_command(write(tmp_path, TOOLS))
    assert out.startswith("[\n  {")  # pretty: two-space indent
    assert not out.endswith("\n")
    definitions = json.loads(out)
    assert [d["name"] for d in definitions] == ["multiply", "get_weather"]
    assert definitions[0] == {
        "type": "function",
        "name": "multiply",
        "description": "Multiply two numbers.",
        "parameters": {
            "type": "object",
            "properties": {
                "a": {"type": "integer", "description": "the first factor."},
                "b": {"type": "integer", "description": "the second factor."},
            },
            "required": ["a", "b"],
            "additionalProperties": False,
        },
        "strict": False,
    }
    assert definitions[1]["strict"] is True
    assert definitions[1]["parameters"]["properties"]["unit"]["enum"] == ["C", "F"]


def test_chat_definitions(tmp_path: Path) -> None:
    definitions = json.loads(tools_command(write(tmp_path, TOOLS), "chat"))
    assert [d["type"] for d in definitions] == ["function", "function"]
    assert definitions[0]["function"]["name"] == "multiply"
    assert "strict" not in definitions[0]["function"]
    assert definitions[1]["function"]["strict"] is True


def test_non_ascii_is_kept_readable(tmp_path: Path) -> None:
    source = '''
    from rawloop import tool

    @tool
    def greet(name: str) -> str:
        """Say grüß dich to someone."""
        return name
    '''
    assert "grüß dich" in tools_command(write(tmp_path, source))


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"nope\.py: no such file"):
        tools_command(str(tmp_path / "nope.py"))


def test_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="is a directory"):
        tools_command(str(tmp_path))


def test_a_file_without_tools(tmp_path: Path) -> None:
    path = write(tmp_path, "def plain(x: int) -> int:\n    return x\n", "plain.py")
    with pytest.raises(ConfigurationError, match=r"plain\.py: no @rawloop\.tool functions"):
        tools_command(path)


def test_a_file_that_fails_to_import(tmp_path: Path) -> None:
    path = write(tmp_path, "raise RuntimeError('boom')\n", "broken.py")
    with pytest.raises(ConfigurationError, match="importing it failed: RuntimeError: boom"):
        tools_command(path)


def test_two_tools_with_one_name(tmp_path: Path) -> None:
    source = """
    from rawloop import tool

    @tool(name="same")
    def one() -> None: ...

    @tool(name="same")
    def two() -> None: ...
    """
    with pytest.raises(ConfigurationError, match="two tools are named 'same'"):
        tools_command(write(tmp_path, source))


def test_an_unknown_dialect(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigurationError, match="unknown dialect 'xml'; choose from responses, chat"
    ):
        tools_command(write(tmp_path, TOOLS), "xml")


def test_the_subcommand_parser(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="rawloop")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["tools", write(tmp_path, TOOLS), "--dialect", "chat"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert out.endswith("]\n")
    assert json.loads(out)[0]["function"]["name"] == "multiply"
    with pytest.raises(SystemExit):
        parser.parse_args(["tools", "x.py", "--dialect", "xml"])


def test_the_rawloop_command_when_wired(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rawloop.cli.main import build_parser, main

    try:
        build_parser().parse_args(["tools", "x.py"])
    except SystemExit:
        pytest.skip("`rawloop tools` is not wired into rawloop.cli yet")
    capsys.readouterr()
    assert main(["tools", write(tmp_path, TOOLS)]) == 0
    assert json.loads(capsys.readouterr().out)[1]["name"] == "get_weather"
    assert main(["tools", str(tmp_path / "nope.py")]) == 2
    assert "no such file" in capsys.readouterr().err
