"""The turn codec: a stored turn rebuilds every request exactly, whatever the bodies hold."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rawloop.serve.store import SessionKey, StoredTurn, StoreError
from rawloop.serve.turns import REFERENCE, _compress, _expand, expand_records

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
items = st.lists(
    st.dictionaries(st.sampled_from(["role", "content", "type"]), json_values), max_size=6
)


@settings(max_examples=50, deadline=None)
@given(
    conversation=items,
    head=st.lists(json_values, max_size=2),
    tail=items,
    key=st.sampled_from(["input", "messages"]),
    take=st.integers(0, 6),
)
def test_compress_then_expand_gives_the_body_back(
    conversation: list[Any], head: list[Any], tail: list[Any], key: str, take: int
) -> None:
    body = {"model": "m", key: [*head, *conversation[:take], *tail]}
    stored = _compress(body, conversation)
    assert _expand(stored, conversation) == body
    # What is stored is never bigger than a reference plus what it does not cover.
    if stored[key] != body[key]:
        assert len(orjson.dumps(stored)) <= len(orjson.dumps(body)) + 80


def test_a_bad_reference_is_a_store_error() -> None:
    key = SessionKey("a", "b")
    request = {"kind": "request", "body": {"input": {REFERENCE: {"items": 5}}}}
    turn = StoredTurn(key, 0, [{"role": "user"}], [request], {}, 0.0, 1)
    with pytest.raises(StoreError, match="refers to 5 conversation items"):
        expand_records([turn], 0)
    broken = StoredTurn(
        key, 0, [], [{"kind": "request", "body": {"input": {REFERENCE: 3}}}], {}, 0.0, 1
    )
    with pytest.raises(StoreError, match="bad conversation reference"):
        expand_records([broken], 0)
    with pytest.raises(StoreError, match="no turn 4"):
        expand_records([turn], 4)
