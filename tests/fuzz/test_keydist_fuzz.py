"""The key-distribution client's codec (keymgmt.keydist) under a hostile or broken key server:
any answer line ends as a dict or a KeyDistError (KeyDistRefused for a refusal), and any
answer object as a DistributedKey or a KeyDistError -- never anything else."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from amistack.keymgmt.keydist import KeyDistError, decode_answer, key_from_answer

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=4,
)
_FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "ok": st.booleans() | _JSON,
        "id": st.integers(0, 3) | _JSON,
        "key": st.text("0123456789abcdefg", max_size=40) | _JSON,
        "key_id": st.just("4097dcd8.00000001") | st.text(max_size=20) | _JSON,
        "purpose": st.sampled_from(["c1222", "link"]) | _JSON,
        "not_after": st.floats() | _JSON,
        "device_hex": st.text("0123456789abcdef", max_size=12) | _JSON,
        "error": _JSON,
        "detail": _JSON,
    },
)


@settings(max_examples=150, deadline=None)
@given(line=st.one_of(st.binary(max_size=200), _FIELDS.map(lambda d: json.dumps(d).encode())))
def test_fuzz_decode_answer_raises_only_keydist_errors(line: bytes) -> None:
    with contextlib.suppress(KeyDistError):
        assert isinstance(decode_answer(line, 1), dict)


@settings(max_examples=150, deadline=None)
@given(answer=_FIELDS)
def test_fuzz_key_from_answer_raises_only_keydist_errors(answer: dict[str, Any]) -> None:
    with contextlib.suppress(KeyDistError):
        key = key_from_answer(answer, "c1222")
        assert key.purpose == "c1222" and key.key
