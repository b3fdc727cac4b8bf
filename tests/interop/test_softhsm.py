"""The PKCS#11 secure module against independent peers: OpenSSL verifies the token's signatures,
softhsm2-util sees the token, and a separate process finds the same key in the token."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import REPO, require_tool
from tests.unit.meter.conftest import SoftHsmToken, softhsm_token

from amistack.securemodule import Pkcs11Module, open_module, verify_digest
from amistack.securemodule.base import SCALAR_LENGTH

pytestmark = pytest.mark.interop
__all__ = ["softhsm_token"]

KEY = "meter-0001/eventlog"


def der_signature(raw: bytes) -> bytes:
    """raw r||s -> DER ECDSA-Sig-Value, built by hand so the check does not reuse our encoder."""

    def integer(value: bytes) -> bytes:
        value = value.lstrip(b"\x00") or b"\x00"
        if value[0] & 0x80:
            value = b"\x00" + value
        return b"\x02" + bytes([len(value)]) + value

    body = integer(raw[:SCALAR_LENGTH]) + integer(raw[SCALAR_LENGTH:])
    return b"\x30" + bytes([len(body)]) + body


def openssl_verifies(tmp_path: Path, pem: bytes, digest: bytes, signature: bytes) -> bool:
    openssl = require_tool("openssl")
    (tmp_path / "pub.pem").write_bytes(pem)
    (tmp_path / "digest.bin").write_bytes(digest)
    (tmp_path / "sig.der").write_bytes(der_signature(signature))
    result = subprocess.run(
        [openssl, "pkeyutl", "-verify", "-pubin", "-inkey", "pub.pem", "-in", "digest.bin",
         "-sigfile", "sig.der"],
        cwd=tmp_path, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert "Signature Verified Successfully" in result.stdout or result.returncode != 0, result
    return result.returncode == 0


def test_openssl_verifies_token_signatures(softhsm_token: SoftHsmToken, tmp_path: Path) -> None:
    t = softhsm_token
    digest = hashlib.sha256(b"log state the MCU hashed").digest()
    with Pkcs11Module.create(t.library, t.label, t.pin, KEY) as module:
        pem, signature = module.public_key_pem(), module.sign_digest(digest)
    # the public key is a proper SPKI: OpenSSL parses it and names the curve
    openssl = require_tool("openssl")
    (tmp_path / "p.pem").write_bytes(pem)
    text = subprocess.run(
        [openssl, "pkey", "-pubin", "-in", "p.pem", "-noout", "-text"],
        cwd=tmp_path, capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    assert "prime256v1" in text or "P-256" in text
    assert openssl_verifies(tmp_path, pem, digest, signature)
    tampered = bytes([digest[0] ^ 1]) + digest[1:]
    assert not openssl_verifies(tmp_path, pem, tampered, signature)


def test_softhsm2_util_lists_the_token(softhsm_token: SoftHsmToken) -> None:
    util = require_tool("softhsm2-util")
    shown = subprocess.run(
        [util, "--show-slots"], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    assert f"Label:            {softhsm_token.label}" in shown
    assert "Initialized:      yes" in shown


def test_another_process_signs_with_the_same_token_key(softhsm_token: SoftHsmToken) -> None:
    t = softhsm_token
    with Pkcs11Module.create(t.library, t.label, t.pin, KEY) as module:
        pem = module.public_key_pem()
    digest = hashlib.sha256(b"signed in another process").digest()
    script = (
        "import sys\n"
        "from amistack.securemodule import open_module\n"
        "m = open_module(sys.argv[1])\n"
        "sys.stdout.write(m.public_key_pem().decode() + '\\n' + m.sign_digest("
        "bytes.fromhex(sys.argv[2])).hex())\n"
        "m.close()\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, t.spec(KEY, with_pin=False), digest.hex()],
        env={**os.environ, "AMISTACK_PKCS11_PIN": t.pin, "PYTHONPATH": str(REPO / "src")},
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    child_pem, signature_hex = out.rsplit("\n", 1)
    assert child_pem.encode().strip() == pem.strip()
    assert verify_digest(pem, digest, bytes.fromhex(signature_hex))
    again = open_module(t.spec(KEY))
    try:
        assert again.public_key_pem() == pem
    finally:
        again.close()
