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
import torch

from minime.backends import ChatBackend, Delta, Usage
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


WORDS = ["hello", "world", "mara", "works", "at", "verdant", "loop", "yes", "no", "cat"]
SPECIAL = ["<eos>", "<unk>", "<pad>", "<system>", "<user>", "<assistant>"]
TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}<assistant> {% endif %}"
)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("tiny")
    vocab = {token: i for i, token in enumerate(SPECIAL + WORDS)}
    core = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token="<eos>", unk_token="<unk>", pad_token="<pad>"
    )
    tokenizer.chat_template = TEMPLATE
    tokenizer.save_pretrained(path)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
        eos_token_id=0,
        pad_token_id=2,
        bos_token_id=None,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    return path


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
        self.default = Scripted(500, "no reply scripted")
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                server.requests.append(json.loads(self.rfile.read(length) or b"{}"))
                reply = server.replies.pop(0) if server.replies else server.default
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


def sse_reply(text: str) -> Scripted:
    """A streamed chat completion: one chunk per word, a finish reason, then [DONE]."""
    pieces = [word + " " for word in text.split(" ")]
    pieces[-1] = pieces[-1].rstrip()
    events = [
        {"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
        for piece in pieces
    ]
    events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    body = "".join(
        "data: "
        + json.dumps(
            {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "fake", **event}
        )
        + "\n\n"
        for event in events
    )
    return Scripted(200, body + "data: [DONE]\n\n", headers={"Content-Type": "text/event-stream"})


class FakeTeacher(ChatBackend):
    """Answers each question from a script: a list of answers per question, used in turn."""

    name = "fake-teacher"

    def __init__(self, script: dict[str, list[str]], default: str = "I don't know.") -> None:
        self.script = {q: list(a) for q, a in script.items()}
        self.default = default
        self.asked: list[list[dict]] = []

    def stream(self, messages, params):
        self.asked.append(messages)
        answers = self.script.get(messages[-1]["content"])
        text = answers.pop(0) if answers else self.default
        yield Delta(text=text)
        yield Delta(text="", finish_reason="stop", usage=Usage(10, 5))
