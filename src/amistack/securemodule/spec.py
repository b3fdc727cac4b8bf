"""`open_module(spec)`: pick a secure-module backend from one string (CLI flag, config value).

    software:PATH                                  a PEM key file (0600)
    pkcs11:LIBRARY?token=T&label=L[&pin=P]         a key pair in a PKCS#11 token

The PIN may be left out of the spec (it then shows in no process list or config file): it is then
taken from the `pin` argument, else from the environment variable named by `pin_env`
(AMISTACK_PKCS11_PIN by default).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import parse_qs

from amistack.securemodule.base import SecureModule, SecureModuleError
from amistack.securemodule.pkcs11_module import Pkcs11Module
from amistack.securemodule.software import SoftwareModule

PIN_ENV = "AMISTACK_PKCS11_PIN"
_PKCS11_KEYS = frozenset({"token", "pin", "label"})
_USAGE = "expected 'software:PATH' or 'pkcs11:LIBRARY?token=T&label=L[&pin=P]'"


def parse_pkcs11_spec(rest: str, spec: str) -> tuple[str, dict[str, str]]:
    library, sep, query = rest.partition("?")
    if not library:
        raise SecureModuleError(f"secure module {spec!r}: no PKCS#11 library path; {_USAGE}")
    if not sep or not query:
        raise SecureModuleError(f"secure module {spec!r}: missing '?token=...&label=...'; {_USAGE}")
    try:
        parsed = parse_qs(query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise SecureModuleError(f"secure module {spec!r}: malformed query; {_USAGE}") from None
    unknown = sorted(set(parsed) - _PKCS11_KEYS)
    if unknown:
        raise SecureModuleError(
            f"secure module {spec!r}: unknown parameter(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(_PKCS11_KEYS))}"
        )
    repeated = sorted(k for k, v in parsed.items() if len(v) > 1)
    if repeated:
        raise SecureModuleError(f"secure module {spec!r}: parameter(s) repeated: {repeated}")
    params = {k: v[0] for k, v in parsed.items()}
    for required in ("token", "label"):
        if not params.get(required):
            raise SecureModuleError(f"secure module {spec!r}: '{required}=' is required; {_USAGE}")
    return library, params


def resolve_pin(
    spec_pin: str | None, pin: str | None, pin_env: str, environ: Mapping[str, str]
) -> str:
    if spec_pin is not None and pin is not None and spec_pin != pin:
        raise SecureModuleError("two different PINs given (in the spec and as an argument)")
    found = spec_pin if spec_pin is not None else pin
    if found is None:
        found = environ.get(pin_env)
    if not found:
        raise SecureModuleError(
            f"no PKCS#11 user PIN: give pin= in the spec, or set the environment variable {pin_env}"
        )
    return found


def open_module(
    spec: str,
    *,
    pin: str | None = None,
    pin_env: str = PIN_ENV,
    create: bool = False,
    label: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> SecureModule:
    """Open the secure module `spec` names; with `create`, make its key if it does not exist yet.

    `label` names a software key (default: the file's stem); a PKCS#11 key is named by `label=`.
    """
    scheme, sep, rest = spec.partition(":")
    if not sep:
        raise SecureModuleError(f"secure module {spec!r}: no backend prefix; {_USAGE}")
    if scheme == "software":
        if not rest:
            raise SecureModuleError(f"secure module {spec!r}: no key file path; {_USAGE}")
        if create:
            return SoftwareModule.open_or_create(rest, label)
        return SoftwareModule.open(rest, label)
    if scheme == "pkcs11":
        library, params = parse_pkcs11_spec(rest, spec)
        user_pin = resolve_pin(
            params.get("pin"), pin, pin_env, os.environ if environ is None else environ
        )
        return Pkcs11Module.open(library, params["token"], user_pin, params["label"], create=create)
    raise SecureModuleError(f"secure module {spec!r}: unknown backend {scheme!r}; {_USAGE}")
