"""Atomic file writes (a reader or a crash never sees a half-written file), reading a user's
text files with one-line errors, and file digests."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from minime.errors import InputError, MinimeError

# Read once: os.umask can only be read by setting it, which races with other threads.
_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_open(path: Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file beside `path`; on success it replaces `path`, else it is removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    tmp = Path(tmp_name)
    # mkstemp makes the file private (0600); give it the mode a plain open() would.
    os.fchmod(fd, 0o666 & ~_UMASK)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` atomically."""
    with atomic_open(path) as handle:
        handle.write(text)


def file_sha256(path: Path | str) -> str:
    """The sha256 hex digest of a file, read in blocks (model files are hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(8 * 1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


def read_text(path: Path, error: type[MinimeError] = InputError) -> str:
    """Read a file a person wrote (profile, settings, questions) as UTF-8.

    A BOM at the start is dropped (editors on Windows write one).

    :param error: the MinimeError subclass to raise (ConfigError for minime.yaml).
    :raises InputError: (or `error`) if the path is a folder, cannot be read, or is not
        UTF-8 text, naming the line and column of the first bad byte.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise error(f"{path}: is a folder; expected a file") from None
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(not_utf8_message(path, data, exc.start)) from None


def not_utf8_message(path: Path, data: bytes, offset: int, first_line: int = 1) -> str:
    """`path:LINE:COLUMN: not UTF-8 text ...` for the bad byte at `offset` of `data`."""
    line = first_line + data.count(b"\n", 0, offset)
    column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
    return (
        f"{path}:{line}:{column}: not UTF-8 text (byte 0x{data[offset]:02x}); save the file "
        "as UTF-8 (in most editors: Save As, encoding UTF-8)"
    )
