"""Redaction: sensitive headers, stable placeholders, and the free-text secret scan."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rawloop.core.redact import (
    SECRET_PATTERN,
    SENSITIVE_HEADERS,
    placeholder,
    redact_headers,
    redact_text,
)

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
