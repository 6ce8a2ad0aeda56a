"""JSONL files: reading with errors that name file and line, and resumable appends.

A stage that makes many slow records (LLM calls) appends each one to `<name>.partial` as
soon as it exists, flushed to disk; a rerun after a crash or SIGKILL reads the ids already
there and continues. `finish()` renames the partial file to its final name, so a final
file is always complete.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from minime.errors import InputError
from minime.fileio import atomic_open, not_utf8_message


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line.

    :raises InputError: naming file and line, if a line is not UTF-8 or not a JSON object,
        or the path is a folder.
    """
    if path.is_dir():
        raise InputError(f"{path}: is a folder; expected a JSONL file")
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(not_utf8_message(path, raw, exc.start, number)) from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{number}: invalid JSON: {exc.msg}") from exc
            if not isinstance(record, dict):
                raise InputError(
                    f"{path}:{number}: expected a JSON object, got {type(record).__name__}"
                )
            yield number, record


def load_jsonl(path: Path) -> list[dict[str, Any]]:
    """All objects of a JSONL file."""
    return [record for _, record in read_jsonl(path)]


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> int:
    """Write records atomically; return how many."""
    count = 0
    with atomic_open(path) as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


class ResumableJsonl:
    """Append-only JSONL output that survives being killed, keyed by a record field."""

    def __init__(self, path: Path, key: str = "id") -> None:
        self.path = path
        self.partial = path.with_name(path.name + ".partial")
        self.key = key
        self.done: dict[Any, dict[str, Any]] = {}
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and not self.partial.exists():
            os.replace(path, self.partial)  # a finished file: reuse its records, add new ones
        if self.partial.exists():
            self._recover()
        self._handle = self.partial.open("a", encoding="utf-8")

    def _recover(self) -> None:
        """Read the records already written; cut a last line that a kill left unfinished.

        :raises InputError: if a line before the last is unreadable (not a kill's doing).
        """
        good_end = 0
        with self.partial.open("rb") as handle:
            lines = handle.readlines()
        for number, line in enumerate(lines, start=1):
            try:
                record = json.loads(line) if line.endswith(b"\n") else None
            except json.JSONDecodeError:
                record = None
            if not isinstance(record, dict) or self.key not in record:
                if number < len(lines):
                    raise InputError(
                        f"{self.partial}:{number}: unreadable record; delete the file to "
                        "redo this step"
                    )
                break
            self.done[record[self.key]] = record
            good_end += len(line)
        with self.partial.open("r+b") as handle:
            handle.truncate(good_end)

    def append(self, record: dict[str, Any]) -> None:
        """Write one record and flush it to disk."""
        self._handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self.done[record[self.key]] = record

    def finish(self) -> dict[Any, dict[str, Any]]:
        """Close and move the partial file to its final name; return every record by key."""
        self._handle.close()
        os.replace(self.partial, self.path)
        return self.done

    def close(self) -> None:
        """Close without finishing (the partial file stays for a later run)."""
        self._handle.close()
