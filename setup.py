"""Build step beyond pyproject.toml: two optional C extensions.

- EAX' over OpenSSL (`src/amistack/crypto/_eax_prime.c`): a C12.22 message protected or opened
  in one call instead of a `cryptography` cipher context per message (benchmarks/README.md,
  "Head-end ingest"); `amistack.crypto.eax_prime` falls back to its pure-Python reference when
  the extension is missing (no C compiler or no OpenSSL headers: Debian's libssl-dev).
- The ECHONET Lite frame codec with mypyc:

`src/amistack/echonet/frame.py` is ordinary typed Python; mypyc turns it into a C extension that
is 5 - 9x faster than pychonet's codec where the interpreted module is at par
(benchmarks/README.md, "ECHONET Lite"). The extension is optional: without mypy/mypyc or a C
compiler, or with AMISTACK_PURE_PYTHON=1 in the environment, the build carries on and the same
module runs interpreted (`amistack bench echonet` reports which one is loaded as
`codec_compiled`).

AMISTACK_PURE_PYTHON=1 builds neither.
"""

from __future__ import annotations

import os
import sys

from setuptools import Extension, setup

COMPILED = ["src/amistack/echonet/frame.py"]


def _pure_python() -> bool:
    return os.environ.get("AMISTACK_PURE_PYTHON", "") not in ("", "0")


def _native_eax_prime() -> list[object]:
    if _pure_python():
        return []
    # optional: without a compiler or OpenSSL's headers setuptools warns and skips it
    return [
        Extension(
            "amistack.crypto._eax_prime",
            ["src/amistack/crypto/_eax_prime.c"],
            libraries=["crypto"],
            optional=True,
        )
    ]


def _ext_modules() -> list[object]:
    if _pure_python():
        print("amistack: AMISTACK_PURE_PYTHON set, codec stays interpreted", file=sys.stderr)
        return []
    try:
        from mypyc.build import mypycify
    except ImportError as exc:  # a build without the build-system requirements
        print(f"amistack: mypyc unavailable ({exc}), codec stays interpreted", file=sys.stderr)
        return []
    try:
        exts = mypycify(COMPILED, opt_level="3", debug_level="0")
    except (Exception, SystemExit) as exc:  # mypyc type-checks first and exits on errors
        print(f"amistack: mypyc failed ({exc!r}), codec stays interpreted", file=sys.stderr)
        return []
    for ext in exts:
        # No C compiler or headers: setuptools warns and skips an optional extension.
        ext.optional = True
    return list(exts)


setup(ext_modules=_native_eax_prime() + _ext_modules())
