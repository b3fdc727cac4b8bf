"""The mypyc-compiled frame codec (setup.py) against the same source run interpreted: identical
results, errors (offset and reason) and reprs on arbitrary input, and the build is present and
current where it must be (CI builds it from a fresh clone with `make setup`)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from tests.conftest import unavailable

from amistack.bench.echonet_codec import codec_compiled
from amistack.echonet import frame as loaded
from amistack.echonet.errors import EchonetDecodeError

SOURCE = Path(__file__).resolve().parents[3] / "src" / "amistack" / "echonet" / "frame.py"


def _interpreted() -> ModuleType:
    """frame.py loaded from its source under another name, whatever `loaded` is."""
    name = "amistack.echonet._frame_interpreted"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_loader(
        name, importlib.machinery.SourceFileLoader(name, str(SOURCE))
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


pure = _interpreted()


def _require_compiled() -> None:
    if not codec_compiled():
        unavailable(
            "amistack.echonet.frame is not compiled: `pip install -e .` (make setup) "
            "builds it with mypyc (setup.py)"
        )


def test_the_compiled_codec_is_built_under_ci() -> None:
    _require_compiled()
    assert not pure.__file__.endswith(".so")


def test_the_compiled_codec_is_not_older_than_its_source() -> None:
    # An editable install imports the .so before the .py: an edited frame.py needs a rebuild.
    _require_compiled()
    built = Path(loaded.__file__).stat().st_mtime
    assert built >= SOURCE.stat().st_mtime, (
        f"{loaded.__file__} is older than {SOURCE}: rebuild with `make setup` or `pip install -e .`"
    )


def _outcome(module: ModuleType, data: bytes) -> Any:
    try:
        f = module.Frame.decode(data)
    except EchonetDecodeError as e:
        return ("error", e.offset, e.reason)
    return (
        "frame",
        f.tid,
        repr(f.seoj),
        repr(f.deoj),
        f.esv,
        [(p.epc, p.edt) for p in f.props],
        [(p.epc, p.edt) for p in f.props_get],
        f.encode(),
        repr(f),
        hash(f),
    )


@settings(max_examples=400)
@given(
    st.one_of(
        st.binary(max_size=80),
        st.binary(max_size=60).map(lambda b: b"\x10\x81" + b),
        st.binary(max_size=40).map(lambda b: bytes.fromhex("108100010ef00105ff017e") + b),
    )
)
def test_decode_agrees(data: bytes) -> None:
    assert _outcome(loaded, data) == _outcome(pure, data)
    assert _any_outcome(loaded, data) == _any_outcome(pure, data)


def _any_outcome(module: ModuleType, data: bytes) -> Any:
    try:
        return repr(module.decode_any(data))
    except EchonetDecodeError as e:
        return (e.offset, e.reason)


def _encoded(module: ModuleType, args: tuple[Any, ...]) -> Any:
    tid, seoj, deoj, esv, props, props_get = args
    try:
        f = module.Frame(
            tid,
            module.Eoj(*seoj),
            module.Eoj(*deoj),
            esv,
            tuple(module.Property(e, d) for e, d in props),
            tuple(module.Property(e, d) for e, d in props_get),
        )
        return ("ok", f.encode(), repr(f), hash(f), f.is_setget)
    except ValueError as e:
        return ("ValueError", str(e))


near_byte = st.integers(-2, 0x101)
eojs = st.tuples(near_byte, near_byte, near_byte)
props = st.lists(st.tuples(near_byte, st.binary(max_size=3) | st.just(bytes(256))), max_size=5).map(
    tuple
)


@settings(max_examples=400)
@given(
    st.tuples(
        st.integers(-1, 0x10000),
        eojs,
        eojs,
        st.sampled_from([0x62, 0x6E, 0x72, 0x7E, 0x5E]) | near_byte,
        props,
        props,
    )
)
def test_encode_agrees(args: tuple[Any, ...]) -> None:
    assert _encoded(loaded, args) == _encoded(pure, args)
