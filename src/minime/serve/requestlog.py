"""The opt-in request log: one JSON line per answered request, read back by
`minime data collect` as real visitor prompts.

A line: {"time", "question", "turns", "answer_chars", "completion_tokens",
"finish_reason", "first_token_s", "latency_s", "stream", "client"}, where "client" is a
salted hash of the visitor's address (never the address itself), so requests of one
visitor can be told apart without storing who they are. The salt comes from the
environment variable MINIME_LOG_SALT; without it a random salt is drawn per process, and
hashes then match only within one run of the server.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SALT_ENV = "MINIME_LOG_SALT"


class RequestLog:
    """Appends JSON lines to a file, safely from concurrent requests and processes."""

    def __init__(self, path: Path, salt: str | None = None) -> None:
        self.path = path
        salt = salt or os.environ.get(SALT_ENV) or secrets.token_hex(16)
        self._salt = salt.encode("utf-8")
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_APPEND: each line goes out in one write() at the end of the file, so lines
        # from several threads or server processes never interleave.
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def client_hash(self, address: str) -> str:
        """A salted hash of a visitor's address (16 hex digits)."""
        digest = hmac.new(self._salt, address.encode("utf-8"), hashlib.sha256)
        return digest.hexdigest()[:16]

    def write(self, client: str, **fields: Any) -> None:
        """Append one request: the time now, `fields`, and the hashed `client` address."""
        record = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            **fields,
            "client": self.client_hash(client),
        }
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock:
            os.write(self._fd, line)

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            os.close(self._fd)
