"""FileKek: 0600 creation and enforcement, AES-GCM wrap/unwrap bound to its AAD."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from amistack.crypto import seeded_random, system_random
from amistack.keymgmt.kek import FileKek, KekError, KeyEncryptionKey, record_aad


def test_create_is_0600_and_loads_back(tmp_path: Path) -> None:
    path = tmp_path / "kek.key"
    old = os.umask(0)  # even a permissive umask must not widen the file
    try:
        kek = FileKek.create(path, system_random)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.stat().st_size == 32
    again = FileKek.load(path, system_random)
    assert again.label == kek.label and again.label.startswith("file:")
    blob = kek.wrap(b"psk-bytes-16-oct", b"aad")
    assert again.unwrap(blob, b"aad") == b"psk-bytes-16-oct"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o602])
def test_refuses_group_or_world_accessible(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "kek.key"
    FileKek.create(path, system_random)
    path.chmod(mode)
    with pytest.raises(KekError, match=r"chmod 600"):
        FileKek.load(path, system_random)
    path.chmod(0o400)  # owner read-only is fine
    assert FileKek.load(path, system_random).label


def test_refuses_overwrite_missing_wrong_size_and_symlink(tmp_path: Path) -> None:
    path = tmp_path / "kek.key"
    FileKek.create(path, system_random)
    with pytest.raises(KekError, match="refusing to overwrite"):
        FileKek.create(path, system_random)
    with pytest.raises(KekError, match="does not exist"):
        FileKek.load(tmp_path / "nope", system_random)
    short = tmp_path / "short.key"
    short.write_bytes(b"x" * 31)
    short.chmod(0o600)
    with pytest.raises(KekError, match="exactly 32"):
        FileKek.load(short, system_random)
    link = tmp_path / "link.key"
    link.symlink_to(path)
    with pytest.raises(KekError):
        FileKek.load(link, system_random)


def test_open_or_create(tmp_path: Path) -> None:
    path = tmp_path / "k"
    a = FileKek.open_or_create(path, system_random)
    b = FileKek.open_or_create(path, system_random)
    assert a.label == b.label


def test_wrap_binds_aad_and_key(tmp_path: Path, kek: FileKek) -> None:
    aad = record_aad("psk", b"meter-1", 1)
    blob = kek.wrap(b"\x01" * 16, aad)
    assert b"\x01" * 16 not in blob and len(blob) == 1 + 12 + 16 + 16
    assert kek.unwrap(blob, aad) == b"\x01" * 16
    with pytest.raises(KekError, match="altered or moved"):
        kek.unwrap(blob, record_aad("psk", b"meter-2", 1))  # moved to another device's row
    with pytest.raises(KekError):
        kek.unwrap(blob, record_aad("app-key", b"meter-1", 1))  # other record kind
    tampered = bytearray(blob)
    tampered[-1] ^= 1
    with pytest.raises(KekError):
        kek.unwrap(bytes(tampered), aad)
    other = FileKek.create(tmp_path / "other.key", seeded_random(5))
    assert other.label != kek.label
    with pytest.raises(KekError):
        other.unwrap(blob, aad)
    with pytest.raises(KekError, match="truncated"):
        kek.unwrap(blob[:20], aad)


def test_nonces_are_fresh(kek: FileKek) -> None:
    blobs = {kek.wrap(b"same", b"") for _ in range(50)}
    assert len(blobs) == 50


def test_record_aad_is_unambiguous() -> None:
    assert record_aad("k", b"ab", b"c") != record_aad("k", b"a", b"bc")
    assert record_aad("k", "1") != record_aad("k", 1)
    assert record_aad("k", 1.0) != record_aad("k", 1)


def test_repr_has_no_key(tmp_path: Path) -> None:
    path = tmp_path / "kek.key"
    kek: KeyEncryptionKey = FileKek.create(path, system_random)
    raw = path.read_bytes()
    assert raw.hex() not in repr(kek) and repr(raw) not in repr(kek)
