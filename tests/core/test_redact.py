"""Redaction: sensitive headers, stable placeholders, and the free-text secret scan."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rawloop.core.errors import APIStatusError, StreamErrorEvent
from rawloop.core.redact import (
    SECRET_PATTERN,
    SENSITIVE_HEADERS,
    placeholder,
    redact_bytes,
    redact_headers,
    redact_json,
    redact_text,
)
from rawloop.core.redact_stream import ChunkRedactor, redact_stream

PLACEHOLDER = re.compile(r"\[REDACTED:[0-9a-f]{8}\]")
KEY = "sk-proj-" + "Ab3_dE-9" * 5


def test_the_default_sensitive_headers() -> None:
    assert {
        "authorization",
        "proxy-authorization",
        "api-key",
        "x-api-key",
        "openai-organization",
        "openai-project",
        "cookie",
        "set-cookie",
    } == SENSITIVE_HEADERS


@pytest.mark.parametrize("name", sorted(SENSITIVE_HEADERS))
@pytest.mark.parametrize("spelling", [str.lower, str.upper, str.title])
def test_every_default_header_is_redacted_whatever_its_case(
    name: str, spelling: Callable[[str], str]
) -> None:
    header = spelling(name)
    secret = "s3cr3t-value-0123456789"
    out = redact_headers({header: secret, "Content-Type": "application/json"})
    assert out == {name: placeholder(secret), "content-type": "application/json"}
    assert secret not in str(out)


def test_placeholders_are_stable_for_a_value_and_differ_between_values() -> None:
    one, two = placeholder("alpha-secret"), placeholder("beta-secret")
    assert PLACEHOLDER.fullmatch(one) and PLACEHOLDER.fullmatch(two)
    assert one == placeholder("alpha-secret") and one != two
    first = redact_headers({"x-api-key": "alpha-secret"})
    second = redact_headers([("X-Api-Key", "alpha-secret")])
    assert first == second == {"x-api-key": one}


@given(st.text(min_size=1), st.text(min_size=1))
def test_placeholders_reveal_nothing_and_collide_only_for_equal_values(a: str, b: str) -> None:
    assert PLACEHOLDER.fullmatch(placeholder(a))
    if a == b:
        assert placeholder(a) == placeholder(b)
    # 32 bits of HMAC: distinct short values are expected to differ (no collision in practice).
    elif len(a) + len(b) < 40:
        assert placeholder(a) != placeholder(b)


def test_the_scheme_is_kept_so_bearer_and_basic_stay_distinguishable() -> None:
    out = redact_headers(
        {
            "Authorization": f"Bearer {KEY}",
            "Proxy-Authorization": "Basic dXNlcjpwYXNzd29yZA==",
        }
    )
    assert out["authorization"] == f"Bearer {placeholder(KEY)}"
    assert out["proxy-authorization"] == f"Basic {placeholder('dXNlcjpwYXNzd29yZA==')}"
    assert KEY not in str(out) and "dXNlcjpw" not in str(out)
    # The same key in an api-key header gets the same placeholder as in the bearer token.
    assert redact_headers({"api-key": KEY})["api-key"] == placeholder(KEY)


def test_other_headers_pass_untouched_and_names_are_lowered() -> None:
    headers = {"Content-Type": "text/event-stream", "X-Request-Id": "req_1", "Accept": "*/*"}
    assert redact_headers(headers) == {
        "content-type": "text/event-stream",
        "x-request-id": "req_1",
        "accept": "*/*",
    }


def test_extra_header_names_are_redacted_case_insensitively() -> None:
    out = redact_headers(
        {"X-Tenant": "acme", "x-session": "abc", "x-other": "keep"}, extra=["x-TENANT", "X-Session"]
    )
    assert out == {
        "x-tenant": placeholder("acme"),
        "x-session": placeholder("abc"),
        "x-other": "keep",
    }
    # The defaults still apply when extra names are given.
    assert redact_headers({"Cookie": "a"}, extra=["x-y"])["cookie"] == placeholder("a")


def test_the_input_mapping_is_not_changed() -> None:
    headers = {"Authorization": "Bearer abc"}
    redact_headers(headers)
    assert headers == {"Authorization": "Bearer abc"}


@pytest.mark.parametrize(
    ("name", "value", "secrets"),
    [
        ("cookie", "session=abc123secretvalue; theme=dark", ["abc123secretvalue"]),
        ("cookie", "a=1 b=2", ["a=1"]),
        ("set-cookie", "__cf_bm=SECRETVALUE123; path=/; HttpOnly", ["SECRETVALUE123"]),
        ("x-api-key", "first-half second-half", ["first-half"]),
    ],
)
def test_values_that_are_not_scheme_and_token_leak_nothing(
    name: str, value: str, secrets: list[str]
) -> None:
    # Keeping "the scheme" only makes sense for Authorization-style "Scheme token" values.
    out = redact_headers({name: value})[name]
    for secret in secrets:
        assert secret not in out, out


# -- free text ---------------------------------------------------------------------------


def test_redact_text_replaces_api_keys() -> None:
    text = f"the key is {KEY}, use it"
    out = redact_text(text)
    assert KEY not in out and out == f"the key is {placeholder(KEY)}, use it"
    assert redact_text(f"{KEY} and {KEY}").count(placeholder(KEY)) == 2


def test_redact_text_replaces_bearer_tokens_and_keeps_the_scheme() -> None:
    token = "eyJhbGciOiJIUzI1NiJ9.payload_part.signature-part"
    out = redact_text(f"Authorization: Bearer {token}\n")
    assert token not in out
    # The same secret, the same placeholder, in a header and in text.
    assert out == f"Authorization: Bearer {placeholder(token)}\n"
    assert (
        out.strip().split(": ", 1)[1]
        == redact_headers({"authorization": f"Bearer {token}"})["authorization"]
    )


def test_redact_text_leaves_placeholders_and_short_or_ordinary_text_alone() -> None:
    redacted = f"Authorization: Bearer {placeholder('x' * 40)}"
    assert redact_text(redacted) == redacted
    assert redact_text(placeholder(KEY)) == placeholder(KEY)
    assert redact_text(redact_text(f"key {KEY}")) == redact_text(f"key {KEY}")  # idempotent
    for text in ["sk-short", "Bearer short", "plain words", "", "Bearer"]:
        assert redact_text(text) == text


@pytest.mark.parametrize(
    "text",
    [
        "see the task-scheduler-configuration page",
        "risk-assessment-calculator v2",
        "use disk-usage-monitoring-tool",
        "a whisk-and-bowl-" + "combination-set",
    ],
)
def test_sk_inside_a_word_is_not_a_key(text: str) -> None:
    # Otherwise a trace recorder refuses records holding ordinary hyphenated words.
    assert redact_text(text) == text and SECRET_PATTERN.search(text) is None


@given(st.text(alphabet="abcdefXYZ0123456789_-", min_size=16, max_size=60))
def test_any_key_shaped_token_is_caught(body: str) -> None:
    secret = "sk-" + body
    out = redact_text(f"x {secret} y")
    assert secret not in out and PLACEHOLDER.search(out)
    assert SECRET_PATTERN.search(out) is None  # what is left passes the last scan


def test_redacting_twice_keeps_the_first_placeholder() -> None:
    once = redact_headers(
        {"Authorization": "Bearer sk-" + "abcdefghijklmnopqrstuvwxyz", "Cookie": "a=b"}
    )
    assert redact_headers(once) == once


# -- escapes, JSON, streams ------------------------------------------------------------------

GENERIC = "sk-" + "Zq9xW2" * 8
BEARER_TOKEN = "eyJ" + "hbGciOiJIUzI1NiJ9" + ".pay_load-9"


@pytest.mark.parametrize("key", [KEY, GENERIC, "sk-ant-" + "api03-" + "Qw_e-R7" * 8])
@pytest.mark.parametrize(
    "before",
    ["\n", "\t", "\r\n", '"', "\\", "é", "\x01", "\b", "\f", "key:\n", ""],
)
def test_a_key_after_an_escape_is_found_decoded_escaped_and_as_repr(key: str, before: str) -> None:
    value = f"x{before}{key} y" if before else f"{key} y"
    for form in (value, json.dumps(value), json.dumps(value, ensure_ascii=False), repr(value)):
        out = redact_text(form)
        assert key not in out and placeholder(key) in out, form
        assert key.encode() not in redact_bytes(form.encode())


def test_vendor_prefixes_are_keys_even_glued_to_a_word_and_bearer_is_any_case() -> None:
    assert redact_text(f"apikey{KEY}") == f"apikey{placeholder(KEY)}"
    assert redact_text(f"token{GENERIC}") == f"token{GENERIC}"  # "sk-" mid-word: not a key
    for scheme in ("Bearer", "bearer", "BEARER"):
        out = redact_text(f"authorization: {scheme} {BEARER_TOKEN}")
        assert out == f"authorization: {scheme} {placeholder(BEARER_TOKEN)}"
    # An escaped newline between the scheme and the token, as a JSON string holds it.
    assert BEARER_TOKEN not in redact_text(json.dumps(f"Bearer\n{BEARER_TOKEN}"))


def test_a_key_in_any_other_header_is_redacted_too() -> None:
    out = redact_headers({"X-Note": f"use {KEY}", "X-Plain": "hello"})
    assert out == {"x-note": f"use {placeholder(KEY)}", "x-plain": "hello"}


def test_redact_json_replaces_keys_in_decoded_strings_and_says_where() -> None:
    value: dict[str, Any] = {"input": [{"content": f"a\n{KEY}"}, {"content": "fine"}], KEY: 1}
    out, where = redact_json(value)
    assert where == ["/input/0/content", f"/{placeholder(KEY)}"]
    assert out["input"][0]["content"] == f"a\n{placeholder(KEY)}"
    assert KEY not in json.dumps(out) and value["input"][0]["content"] == f"a\n{KEY}"
    same, none = redact_json({"a": ["b", {"c": 1}]})
    assert none == [] and same == {"a": ["b", {"c": 1}]}
    assert redact_json([KEY] * 50, limit=3)[1] == ["/0", "/1", "/2"]


def test_errors_carry_no_key_in_their_message_error_object_or_body() -> None:
    event = StreamErrorEvent(f"the model said:\n{KEY}", error={"message": f"bad\t{KEY}"})
    status = APIStatusError(
        f"HTTP 401 {KEY}", status=401, body=json.dumps({"m": f"x\n{KEY}"}).encode(), request_id=None
    )
    for error in (event, status):
        assert KEY not in str(error) and KEY not in repr(error)
    assert KEY not in json.dumps(event.error) and KEY.encode() not in status.body


def _feed_all(pieces: list[bytes]) -> list[bytes]:
    redactor = ChunkRedactor()
    out: list[bytes] = []
    for piece in pieces:
        out += redactor.feed(piece)
    return out + redactor.flush()


def _cut(data: bytes, cuts: list[int]) -> list[bytes]:
    edges = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


@pytest.mark.parametrize("key", [KEY, GENERIC, f"Bearer {BEARER_TOKEN}"])
def test_a_key_split_in_two_at_every_offset_is_caught_and_boundaries_are_kept(key: str) -> None:
    body = b'data: {"delta":"x\\n' + key.encode() + b'\\tz"}\n\n'
    whole = redact_bytes(body)
    secret = key.removeprefix("Bearer ").encode()
    assert secret not in whole
    for cut in range(len(body) + 1):
        out = _feed_all(_cut(body, [cut]))
        assert len(out) == 2 and b"".join(out) == whole, cut
        assert secret not in out[0] and secret not in out[1]
    # Byte by byte.
    out = _feed_all([bytes([b]) for b in body])
    assert len(out) == len(body) and b"".join(out) == whole


@given(
    st.lists(
        st.sampled_from(
            [
                *(
                    b"sk-",
                    b"proj-",
                    KEY.encode(),
                    GENERIC.encode(),
                    b"Bearer ",
                    BEARER_TOKEN.encode(),
                ),
                *(b"\\n", b"\\t", b'"', b" ", b"risk-", b"abc", b"\xc3\xa9", b"\xff", b"s", b"B"),
            ]
        ),
        max_size=12,
    ),
    st.lists(st.integers(min_value=0, max_value=400), max_size=8),
)
def test_any_chunking_gives_the_redaction_of_the_whole(parts: list[bytes], cuts: list[int]) -> None:
    data = b"".join(parts)
    pieces = _cut(data, [c for c in cuts if c <= len(data)])
    out = _feed_all(pieces)
    assert len(out) == len(pieces)  # one released chunk per chunk fed
    assert b"".join(out) == redact_bytes(data)
    assert KEY.encode() not in b"".join(out)  # a vendor prefix is a key wherever it is


def test_a_chunk_is_held_only_while_its_end_could_start_a_key() -> None:
    redactor = ChunkRedactor()
    assert redactor.feed(b"data: ok\n\n") == [b"data: ok\n\n"]
    assert redactor.feed(b'{"t":"the ') == [b'{"t":"the ']
    assert redactor.feed(b"key is sk-pr") == [] and redactor.held == 1
    assert redactor.feed(b"oj-") == [] and redactor.held == 2
    rest = KEY.removeprefix("sk-proj-").encode() + b'"}'
    assert redactor.feed(rest) == [b"key is " + placeholder(KEY).encode(), b"", b'"}']
    assert redactor.held == 0 and redactor.flush() == []


def _delta_event(text: str) -> bytes:
    return b"data: " + json.dumps({"type": "x.delta", "delta": text}).encode() + b"\n\n"


@given(
    st.lists(
        st.sampled_from(
            [
                # Keys end a word: glued to the next one, a key's end is no longer a key's end.
                *(f"{KEY} ", f"{GENERIC} ", f"Bearer {BEARER_TOKEN} ", "sk-", "s", "Bear", "er"),
                *(" ", "\n", "\t", '"', "é", "abc", "risk-", ", "),
            ]
        ),
        max_size=10,
    ),
    st.lists(st.integers(min_value=0, max_value=400), max_size=6),
    st.lists(st.integers(min_value=0, max_value=900), max_size=8),
)
def test_a_key_split_across_delta_events_is_caught_under_any_chunking(
    parts: list[str], splits: list[int], cuts: list[int]
) -> None:
    text = "".join(parts)
    deltas = [text[a:b] for a, b in itertools.pairwise([0, *sorted(splits), len(text)]) if a <= b]
    body = b"".join(_delta_event(delta) for delta in deltas if delta)
    whole = redact_stream(body)
    pieces = _cut(body, [c for c in cuts if c <= len(body)])
    out = _feed_all(pieces)
    # Same bytes, same result, any chunking; one released chunk per chunk fed.
    assert len(out) == len(pieces) and b"".join(out) == whole
    # Every event is still valid JSON, and no key of the text survives in what they add up to.
    events = [json.loads(line[6:]) for line in whole.split(b"\n") if line.startswith(b"data: ")]
    assert len(events) == len([d for d in deltas if d])
    joined = "".join(event["delta"] for event in events)
    assert KEY not in joined and KEY[-16:] not in joined  # a vendor key is a key anywhere
    for match in SECRET_PATTERN.finditer(text):
        secret = match.group("token") or match.group(0)
        # (A copy of it glued to a word is no key, and may stay.)
        for piece in (secret, secret[-16:]):
            assert text.count(piece) > 1 or piece not in joined, (text, joined)


def test_a_key_in_two_deltas_becomes_one_placeholder_in_the_first() -> None:
    body = _delta_event("key: " + KEY[:10]) + _delta_event(KEY[10:] + " ok")
    assert redact_stream(body) == _delta_event(f"key: {placeholder(KEY)}") + _delta_event(" ok")
    # Without the delta view only the whole-looking part would be seen: none here.
    redactor = ChunkRedactor(deltas=False)
    assert b"".join(redactor.feed(body) + redactor.flush()) == body
