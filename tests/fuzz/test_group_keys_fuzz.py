"""Mesh group key deliveries under hostile input: random AVP values, and well-wrapped plaintexts
the key server would never send, end as GroupKeyError (the only exception `open` raises)."""

from __future__ import annotations

import contextlib

from cryptography.hazmat.primitives.keywrap import aes_key_wrap
from hypothesis import given, settings
from hypothesis import strategies as st

from amistack.keymgmt.groupkeys import GroupKeyDelivery, GroupKeyError
from amistack.pana.avp import Avp
from amistack.pana.constants import AMISTACK_VENDOR_ID, VendorAvpCode

PAN = 0xFACE


@settings(max_examples=200, deadline=None)
@given(value=st.binary(max_size=120))
def test_fuzz_open_raises_only_group_key_error(value: bytes) -> None:
    kek = bytes(16)
    avp = Avp(VendorAvpCode.GROUP_KEY_DELIVERY, value, AMISTACK_VENDOR_ID)
    with contextlib.suppress(GroupKeyError):
        GroupKeyDelivery.open(avp, kek, 0.0)


@settings(max_examples=50, deadline=None)
@given(
    body=st.lists(
        st.tuples(st.integers(0, 255), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
        min_size=0,
        max_size=3,
    ),
    count=st.integers(0, 255),
    version=st.integers(0, 255),
)
def test_fuzz_well_wrapped_garbage_is_refused_typed(
    body: list[tuple[int, int, int]], count: int, version: int
) -> None:
    """Plaintexts the key server would never send, wrapped correctly: still only typed errors."""
    kek = bytes(range(16))
    plain = bytes([version, count]) + PAN.to_bytes(2, "big") + (1).to_bytes(4, "big")
    for index, a, b in body:
        plain += bytes([index, 0, 0, 0]) + a.to_bytes(4, "big") + b.to_bytes(4, "big")
        plain += bytes(4) + bytes(16)
    if len(plain) < 16:
        plain += bytes(16 - len(plain))
    avp = Avp(VendorAvpCode.GROUP_KEY_DELIVERY, aes_key_wrap(kek, plain), AMISTACK_VENDOR_ID)
    try:
        got = GroupKeyDelivery.open(avp, kek, 0.0)
    except GroupKeyError:
        return
    assert 1 <= len(got.keys) <= 2 and all(1 <= k.index <= 7 for k in got.keys)
