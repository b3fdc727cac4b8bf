"""The software secure module, verify_digest and open_module's spec parsing."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature

from amistack.bench.sign import bench_sign
from amistack.securemodule import (
    SecureModule,
    SecureModuleError,
    SoftwareModule,
    open_module,
    verify_digest,
)
from amistack.securemodule.spec import parse_pkcs11_spec

DIGEST = hashlib.sha256(b"meter-0001 event log, entries 0..41").digest()


def cryptography_verifies(pem: bytes, digest: bytes, signature: bytes) -> bool:
    """An independent check of raw r||s, straight on `cryptography`."""
    key = serialization.load_pem_public_key(pem)
    assert isinstance(key, ec.EllipticCurvePublicKey)
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    try:
        key.verify(encode_dss_signature(r, s), digest, ec.ECDSA(Prehashed(hashes.SHA256())))
    except InvalidSignature:
        return False
    return True


def test_software_sign_verify_round_trip(tmp_path: Path) -> None:
    module: SecureModule = SoftwareModule.create(tmp_path / "meter.pem", "meter-0001/eventlog")
    assert module.label == "meter-0001/eventlog"
    signature = module.sign_digest(DIGEST)
    assert len(signature) == 64
    pem = module.public_key_pem()
    assert pem.startswith(b"-----BEGIN PUBLIC KEY-----")
    assert verify_digest(pem, DIGEST, signature)
    assert cryptography_verifies(pem, DIGEST, signature)
    # ECDSA is randomised: two signatures differ, both verify
    again = module.sign_digest(DIGEST)
    assert again != signature and verify_digest(pem, DIGEST, again)
    module.close()


def test_signature_is_over_the_digest_as_given(tmp_path: Path) -> None:
    """The module does not hash again: verifying against SHA-256(data) with the ordinary
    (hashing) API agrees, and that is the MCU/module split."""
    module = SoftwareModule.create(tmp_path / "k.pem")
    data = b"the log as the MCU hashed it"
    signature = module.sign_digest(hashlib.sha256(data).digest())
    key = serialization.load_pem_public_key(module.public_key_pem())
    assert isinstance(key, ec.EllipticCurvePublicKey)
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))  # raises if not


def test_tampered_digest_and_signature_fail(tmp_path: Path) -> None:
    module = SoftwareModule.create(tmp_path / "k.pem")
    pem, signature = module.public_key_pem(), module.sign_digest(DIGEST)
    tampered = bytes([DIGEST[0] ^ 1]) + DIGEST[1:]
    assert not verify_digest(pem, tampered, signature)
    assert not cryptography_verifies(pem, tampered, signature)
    bad_sig = signature[:-1] + bytes([signature[-1] ^ 0x80])
    assert not verify_digest(pem, DIGEST, bad_sig)
    assert not verify_digest(pem, DIGEST, signature[:63])
    assert not verify_digest(pem, DIGEST[:31], signature)
    assert not verify_digest(pem, DIGEST, bytes(64))  # r = s = 0


def test_signature_from_another_key_fails(tmp_path: Path) -> None:
    a = SoftwareModule.create(tmp_path / "a.pem")
    b = SoftwareModule.create(tmp_path / "b.pem")
    assert a.public_key_pem() != b.public_key_pem()
    assert not verify_digest(a.public_key_pem(), DIGEST, b.sign_digest(DIGEST))


def test_verify_digest_rejects_a_key_that_is_not_p256() -> None:
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    pem = p384.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(SecureModuleError, match="P-256"):
        verify_digest(pem, DIGEST, bytes(64))
    with pytest.raises(SecureModuleError, match="PEM"):
        verify_digest(b"not a key", DIGEST, bytes(64))


@pytest.mark.parametrize("digest", [b"", b"\x00" * 31, b"\x00" * 33, b"\x00" * 48])
def test_sign_refuses_anything_but_a_sha256_digest(tmp_path: Path, digest: bytes) -> None:
    module = SoftwareModule.create(tmp_path / "k.pem")
    with pytest.raises(SecureModuleError, match="32-octet"):
        module.sign_digest(digest)


def test_key_file_is_0600_and_reopens_to_the_same_key(tmp_path: Path) -> None:
    path = tmp_path / "meter.pem"
    created = SoftwareModule.create(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    reopened = SoftwareModule.open(path, "meter-0001/eventlog")
    assert reopened.public_key_pem() == created.public_key_pem()
    assert verify_digest(created.public_key_pem(), DIGEST, reopened.sign_digest(DIGEST))
    assert reopened.label == "meter-0001/eventlog"
    assert created.label == "meter"  # the file's stem when no label is given


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o602])
def test_open_refuses_group_or_world_accessible_key(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "meter.pem"
    SoftwareModule.create(path)
    path.chmod(mode)
    with pytest.raises(SecureModuleError, match=f"{mode:04o}.*chmod 600"):
        SoftwareModule.open(path)


def test_create_refuses_to_overwrite_and_open_reports_missing(tmp_path: Path) -> None:
    path = tmp_path / "meter.pem"
    SoftwareModule.create(path)
    before = path.read_bytes()
    with pytest.raises(SecureModuleError, match="already exists"):
        SoftwareModule.create(path)
    assert path.read_bytes() == before
    with pytest.raises(SecureModuleError, match="does not exist"):
        SoftwareModule.open(tmp_path / "absent.pem")


def test_open_refuses_symlink_and_garbage(tmp_path: Path) -> None:
    target = tmp_path / "real.pem"
    SoftwareModule.create(target)
    link = tmp_path / "link.pem"
    link.symlink_to(target)
    with pytest.raises(SecureModuleError, match="cannot open"):
        SoftwareModule.open(link)
    junk = tmp_path / "junk.pem"
    junk.write_bytes(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    junk.chmod(0o600)
    with pytest.raises(SecureModuleError, match="not an unencrypted PEM private key"):
        SoftwareModule.open(junk)


def test_open_refuses_a_key_not_on_p256(tmp_path: Path) -> None:
    path = tmp_path / "p384.pem"
    key = ec.generate_private_key(ec.SECP384R1())
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    with pytest.raises(SecureModuleError, match="P-256"):
        SoftwareModule.open(path)


def test_closed_module_refuses_to_sign(tmp_path: Path) -> None:
    module = SoftwareModule.create(tmp_path / "k.pem")
    module.close()
    with pytest.raises(SecureModuleError, match="closed"):
        module.sign_digest(DIGEST)


def test_open_module_software(tmp_path: Path) -> None:
    path = tmp_path / "m.pem"
    with pytest.raises(SecureModuleError, match="does not exist"):
        open_module(f"software:{path}")
    created = open_module(f"software:{path}", create=True, label="meter-7/eventlog")
    assert isinstance(created, SoftwareModule) and created.label == "meter-7/eventlog"
    reopened = open_module(f"software:{path}")
    assert reopened.public_key_pem() == created.public_key_pem()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("meter.pem", "no backend prefix"),
        ("tpm:/dev/tpm0", "unknown backend 'tpm'"),
        ("software:", "no key file path"),
        ("pkcs11:?token=t&label=l&pin=1", "no PKCS#11 library path"),
        ("pkcs11:/usr/lib/x.so", "missing '\\?token="),
        ("pkcs11:/usr/lib/x.so?label=l&pin=1", "'token=' is required"),
        ("pkcs11:/usr/lib/x.so?token=t&pin=1", "'label=' is required"),
        ("pkcs11:/usr/lib/x.so?token=t&label=l&pin=1&slot=0", "unknown parameter.*slot"),
        ("pkcs11:/usr/lib/x.so?token=t&token=u&label=l&pin=1", "repeated"),
        ("pkcs11:/usr/lib/x.so?token=t&label=l", "no PKCS#11 user PIN.*AMISTACK_PKCS11_PIN"),
        ("pkcs11:/nonexistent/lib.so?token=t&label=l&pin=1", "does not exist"),
    ],
)
def test_open_module_spec_errors_are_clear(spec: str, message: str) -> None:
    with pytest.raises(SecureModuleError, match=message):
        open_module(spec, environ={})


def test_pkcs11_spec_parsing_and_pin_sources() -> None:
    library, params = parse_pkcs11_spec(
        "/usr/lib/softhsm/libsofthsm2.so?token=meters&label=meter-0001%2Feventlog&pin=12%2634",
        "spec",
    )
    assert library == "/usr/lib/softhsm/libsofthsm2.so"
    assert params == {"token": "meters", "label": "meter-0001/eventlog", "pin": "12&34"}
    spec = "pkcs11:/nonexistent/lib.so?token=t&label=l"
    # a PIN from the environment gets past the PIN check to the library check
    with pytest.raises(SecureModuleError, match="does not exist"):
        open_module(spec, environ={"AMISTACK_PKCS11_PIN": "1234"})
    with pytest.raises(SecureModuleError, match="does not exist"):
        open_module(spec, pin="1234", environ={})
    with pytest.raises(SecureModuleError, match="two different PINs"):
        open_module(spec + "&pin=1", pin="2", environ={})


def test_bench_sign_reports_a_rate(tmp_path: Path) -> None:
    module = SoftwareModule.create(tmp_path / "k.pem")
    rate = bench_sign(module, 50)
    assert rate > 0
    with pytest.raises(ValueError):
        bench_sign(module, 0)
