"""Shared fixtures: the example persona, real bundled models, and a scripted HTTP server."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from minime.errors import ModelNotFoundError
from minime.project import Project
from minime.registry import BUNDLED, bundled_path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "mara"


@pytest.fixture
def example_project() -> Project:
    return Project.open(EXAMPLE)


def bundled_model_path(name: str) -> Path:
    """The path of a bundled model; skips the test when its packages are not installed."""
    try:
        return bundled_path(BUNDLED[name])
    except ModelNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def smollm2_backend():
    from minime.backends.llamacpp import LlamaCppBackend

    backend = LlamaCppBackend(bundled_model_path("smollm2-135m-instruct"), n_ctx=4096, n_threads=2)
    yield backend
    backend.close()


@dataclass
class Scripted:
    """One scripted HTTP reply."""

    status: int = 200
    body: str | bytes = ""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False  # close the connection without answering


class ScriptedServer:
    """A loopback HTTP server that answers each request with the next scripted reply."""

    def __init__(self) -> None:
        self.replies: list[Scripted] = []
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                server.requests.append(json.loads(self.rfile.read(length) or b"{}"))
                reply = server.replies.pop(0) if server.replies else Scripted(500, "no reply")
                time.sleep(reply.delay)
                if reply.drop:
                    self.close_connection = True
                    return
                body = reply.body.encode() if isinstance(reply.body, str) else reply.body
                self.send_response(reply.status)
                headers = {"Content-Type": "application/json", **reply.headers}
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def scripted_server() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    yield server
    server.close()


def chat_completion_body(text: str, finish_reason: str = "stop") -> str:
    return json.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": "fake",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
        }
    )
