"""Files that hold secrets: created owner-only, read only when nobody else could have read them.

One place for the rules every key file follows (the KEK, a software secure module's key):
created with O_EXCL|O_NOFOLLOW and mode 0600 exactly, synced before use; opened without
following links, refused unless a regular file that its group and others cannot access.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


class SecretFileError(Exception):
    """The secret file cannot be created or trusted; the message says why and what to do."""


def write_secret_file(path: Path | str, data: bytes, what: str = "key") -> None:
    """Create `path` holding `data`, mode 0600; never overwrites an existing file."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise SecretFileError(f"{path}: already exists; refusing to overwrite a {what}") from None
    except OSError as exc:
        raise SecretFileError(f"{path}: cannot create {what} file: {exc.strerror}") from None
    try:
        os.fchmod(fd, 0o600)  # the umask can only narrow; make the mode exact anyway
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_secret_file(path: Path | str, max_len: int, what: str = "key") -> bytes:
    """The content of `path` (at most `max_len` + 1 bytes read, so callers see an oversize file)
    if it is a regular file that only its owner can access."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise SecretFileError(f"{path}: {what} file does not exist") from None
    except OSError as exc:
        raise SecretFileError(f"{path}: cannot open {what} file: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SecretFileError(f"{path}: {what} is not a regular file")
        if st.st_mode & 0o077:
            raise SecretFileError(
                f"{path}: {what} file mode is {stat.S_IMODE(st.st_mode):04o}; it must not be "
                f"accessible to group or others (run: chmod 600 {path})"
            )
        return os.read(fd, max_len + 1)
    finally:
        os.close(fd)
