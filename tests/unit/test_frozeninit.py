"""frozeninit.frozen_init: the same frozen dataclass, built through its instance dict."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from amistack.frozeninit import frozen_init


def _sample(fast: bool) -> Any:
    """The same frozen dataclass, with or without `frozen_init`."""

    @dataclass(frozen=True, order=True)
    class Sample:
        a: int
        b: bytes | None = None
        c: str = "x"

        def __post_init__(self) -> None:
            if self.a < 0:
                raise ValueError("a < 0")

    return frozen_init(Sample) if fast else Sample


Plain, Fast = _sample(False), _sample(True)


@given(st.integers(0, 10), st.none() | st.binary(max_size=4), st.text(max_size=3))
def test_same_fields_equality_order_and_hash_as_the_dataclass(
    a: int, b: bytes | None, c: str
) -> None:
    plain, fast = Plain(a, b, c), Fast(a, b, c)
    assert dataclasses.astuple(plain) == dataclasses.astuple(fast)
    assert Fast(a) == Fast(a=a, b=None, c="x") and hash(Fast(a, b, c)) == hash(fast)
    assert (Fast(a, b, c) < Fast(a + 1, b, c)) is True
    assert dataclasses.replace(fast, c=c + "!") == Fast(a, b, c + "!")


def test_still_frozen_and_post_init_still_runs() -> None:
    fast = Fast(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.a = 2
    with pytest.raises(ValueError, match="a < 0"):
        Fast(-1)
    with pytest.raises(TypeError):
        Fast()
    with pytest.raises(TypeError):
        Fast(1, d=2)


def test_refuses_what_it_would_build_differently() -> None:
    @dataclass
    class Mutable:
        a: int

    @dataclass(frozen=True)
    class Factory:
        a: list[int] = field(default_factory=list)

    @dataclass(frozen=True, kw_only=True)
    class KwOnly:
        a: int

    @dataclass(frozen=True, slots=True)
    class Slotted:
        a: int

    for cls in (Mutable, Factory, KwOnly, Slotted):
        with pytest.raises(TypeError):
            frozen_init(cls)
