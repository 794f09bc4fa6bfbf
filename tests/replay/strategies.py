"""Hypothesis strategies the replay tests share: any text and any value JSON can carry."""

from __future__ import annotations

from hypothesis import strategies as st

# Any Unicode text JSON can carry: everything but lone surrogates.
texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=120)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)
