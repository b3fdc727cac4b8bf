"""Build step beyond pyproject.toml: compile the ECHONET Lite frame codec with mypyc.

`src/amistack/echonet/frame.py` is ordinary typed Python; mypyc turns it into a C extension that
is 5 - 9x faster than pychonet's codec where the interpreted module is at par
(benchmarks/README.md, "ECHONET Lite"). The extension is optional: without mypy/mypyc or a C
compiler, or with AMISTACK_PURE_PYTHON=1 in the environment, the build carries on and the same
module runs interpreted (`amistack bench echonet` reports which one is loaded as
`codec_compiled`).
"""

from __future__ import annotations

import os
import sys

from setuptools import setup

COMPILED = ["src/amistack/echonet/frame.py"]


def _ext_modules() -> list[object]:
    if os.environ.get("AMISTACK_PURE_PYTHON", "") not in ("", "0"):
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


setup(ext_modules=_ext_modules())
