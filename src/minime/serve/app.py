"""The web server: OpenAI's chat completions API, a health check, the widget and a demo page.

Routes: `POST /v1/chat/completions` (streamed as server-sent events, or whole),
`GET /v1/models`, `GET /healthz`, `GET /` (demo page), `GET /widget.js`.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from minime.backends import Delta, Message, SamplingParams
from minime.config import ServeConfig
from minime.errors import BackendError
from minime.serve.engine import Engine, Job, NotInTime, QueueFull, QueueTimeout, Speed
from minime.serve.limits import (
    APIError,
    ChatRequest,
    RateLimiter,
    client_address,
    parse_request,
    retry_after_header,
    visitor_messages,
)
from minime.serve.model import ServedModel
from minime.serve.requestlog import RequestLog

logger = logging.getLogger("minime.serve")

# The demo page runs only the widget, from this server; no inline script, no framing.
DEMO_PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def create_app(
    served: ServedModel, config: ServeConfig, *, request_log: Path | None = None
) -> Starlette:
    """The server for one model (Starlette rather than FastAPI: nothing here needs its
    request models or OpenAPI pages, and importing it would add to every cold start).

    :param served: the model and how it is prompted; the caller keeps it open while the
        app runs, and closes it afterwards.
    :param config: limits, queue, CORS and rate-limit settings.
    :param request_log: append a JSON line per request to this file (opt-in).
    """
    static = files("minime.serve") / "static"
    widget = (static / "widget.js").read_text(encoding="utf-8")
    page = (static / "index.html").read_text(encoding="utf-8")
    page = page.replace("{{title}}", html.escape(served.title, quote=True))
    limiter = RateLimiter(config.rate_limit, config.rate_burst)
    created = int(time.time())
    # Answers not yet finished, each with the callback that ends it and logs it.
    pending: set[Callable[[str], None]] = set()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # The engine's lock and queues belong to the event loop that serves requests.
        speed = Speed(**vars(served.speed)) if served.speed else None  # a copy: it learns
        app.state.engine = Engine(served.backend, config.queue_size, speed)
        app.state.log = RequestLog(request_log) if request_log else None
        try:
            yield
        finally:
            # Streams that the graceful shutdown's timeout cut: stop them, and log them.
            for end in list(pending):
                end("shutdown")
            app.state.engine.close()
            if app.state.log:
                app.state.log.close()

    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        error = APIError(exc.status_code, str(exc.detail), headers=exc.headers)
        return JSONResponse(error.body(), status_code=exc.status_code, headers=error.headers)

    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        error = APIError(500, "the server failed to answer", type="server_error")
        return JSONResponse(error.body(), status_code=500)

    async def demo_page(request: Request) -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": DEMO_PAGE_CSP})

    async def widget_script(request: Request) -> Response:
        return Response(
            widget,
            media_type="text/javascript; charset=utf-8",
            headers={"Cache-Control": "public, max-age=3600"},
        )

    async def health(request: Request) -> JSONResponse:
        engine: Engine = request.app.state.engine
        return JSONResponse(
            {
                "status": "ok",
                "model": served.id,
                "running": engine.running,
                "waiting": engine.waiting,
                "capacity": engine.capacity,
            }
        )

    async def list_models(request: Request) -> JSONResponse:
        model = {"id": served.id, "object": "model", "created": created, "owned_by": "minime"}
        return JSONResponse({"object": "list", "data": [model]})

    async def chat_completions(request: Request) -> Response:
        arrived = time.monotonic()
        _require_json(request)
        peer = request.client.host if request.client else None
        forwarded = request.headers.get("x-forwarded-for")
        client = client_address(peer, forwarded, config.forwarded_proxies)
        wait = limiter.take(client)
        if wait:
            raise APIError(
                429,
                "too many requests from your address; wait before asking again",
                type="rate_limit_error",
                code="rate_limit_exceeded",
                headers=retry_after_header(wait),
            )
        try:
            async with asyncio.timeout(config.request_timeout):
                body = await _read_body(request, config.max_body_bytes)
        except TimeoutError:
            raise APIError(408, "the request body did not arrive in time", code="timeout") from None
        chat = parse_request(_decode_json(body), config)
        visitor = visitor_messages(chat)
        messages = served.messages(visitor)
        prompt = _check_context(served, messages)
        engine: Engine = request.app.state.engine
        left = config.request_timeout - (time.monotonic() - arrived)
        try:
            job = engine.submit(messages, _sampling(served.params, chat, config), left, prompt)
        except QueueFull as exc:
            raise APIError(
                429,
                str(exc),
                type="rate_limit_error",
                code="server_busy",
                headers=retry_after_header(exc.retry_after),
            ) from None
        except NotInTime as exc:
            raise _generation_error(exc) from None
        answer = _Answer(
            id=f"chatcmpl-{uuid.uuid4().hex}",
            arrived=arrived,
            question=visitor[-1]["content"],
            turns=len(visitor),
            stream=chat.stream,
            # Counted here too, so that an answer cut short still reports its prompt.
            prompt_tokens=len(prompt) if prompt is not None else 0,
        )
        watcher = asyncio.create_task(_watch_disconnect(request, job))

        def finish(reason: str | None = None) -> None:
            if finish not in pending:
                return  # already finished
            pending.discard(finish)
            watcher.cancel()
            job.abandon()  # no-op once the answer is complete
            if reason and not answer.finish_reason:
                answer.finish_reason = reason
            if request.app.state.log:
                request.app.state.log.write(client, **answer.record())

        pending.add(finish)
        if chat.stream:
            # The 200 goes out only once the answer starts: until then the visitor can
            # still be told that it will not come (503), as a whole answer would be.
            try:
                await job.wait_turn()
            except Exception as exc:
                answer.finish_reason = "disconnected" if job.cancel.is_set() else "error"
                finish()
                raise _generation_error(exc) from None
            events = _sse(served.id, job, answer, chat.include_usage, finish)
            headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
            return StreamingResponse(events, media_type="text/event-stream", headers=headers)
        try:
            async for delta in job.deltas():
                answer.add(delta)
        except Exception as exc:
            answer.finish_reason = "error"
            raise _generation_error(exc) from exc
        finally:
            finish()
        return JSONResponse(_completion(served.id, answer))

    cors = Middleware(
        CORSMiddleware,
        allow_origins=config.cors_origins,
        allow_methods=["GET", "POST"],
        allow_headers=["Content-Type", "Authorization"],
        max_age=600,
    )
    app = Starlette(
        routes=[
            Route("/", demo_page),
            Route("/widget.js", widget_script),
            Route("/healthz", health),
            Route("/v1/models", list_models),
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        ],
        middleware=[cors],
        exception_handlers={
            APIError: api_error,
            HTTPException: http_error,
            Exception: server_error,
        },
        lifespan=lifespan,
    )
    # No redirect from /healthz/ to /healthz: Starlette builds its URL from the Host
    # header, so a visitor could make the server point anywhere.
    app.router.redirect_slashes = False
    return app


@dataclass
class _Answer:
    """An answer as it arrives, with what the response and the request log report."""

    id: str
    arrived: float
    question: str
    turns: int
    stream: bool
    parts: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    first_token: float | None = None
    created: int = field(default_factory=lambda: int(time.time()))

    def add(self, delta: Delta) -> None:
        if delta.text:
            self.parts.append(delta.text)
            self.first_token = self.first_token or time.monotonic()
        if delta.usage:
            self.prompt_tokens = delta.usage.prompt_tokens
            self.completion_tokens = delta.usage.completion_tokens
        elif delta.text:
            self.completion_tokens += 1  # a delta is one token on every local backend
        if delta.finish_reason:
            self.finish_reason = delta.finish_reason

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def usage(self) -> dict[str, int]:
        total = self.prompt_tokens + self.completion_tokens
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": total,
        }

    def record(self) -> dict[str, Any]:
        """The request log's fields (the visitor's address is added by the log)."""
        end = time.monotonic()
        return {
            "question": self.question,
            "turns": self.turns,
            "answer_chars": len(self.text),
            "completion_tokens": self.completion_tokens,
            "finish_reason": self.finish_reason or "disconnected",
            "first_token_s": round(self.first_token - self.arrived, 3)
            if self.first_token
            else None,
            "latency_s": round(end - self.arrived, 3),
            "stream": self.stream,
        }


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused past `limit` bytes: by its declared length before reading
    anything, and by the bytes actually received (a chunked body declares none).

    :raises APIError: 413 if the body is too large, 400 if Content-Length is not a number.
    """
    too_large = APIError(
        413, f"the request body is larger than {limit} bytes", code="request_too_large"
    )
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise APIError(400, "the Content-Length header is not a number")
        if int(declared) > limit:
            raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _decode_json(body: bytes) -> Any:
    """:raises APIError: 400 if the body is not JSON (NaN and Infinity are not JSON)."""

    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not valid JSON")

    try:
        return json.loads(body, parse_constant=refuse)
    except (ValueError, RecursionError) as exc:
        raise APIError(
            400, f"the request body is not valid JSON: {exc}", code="invalid_json"
        ) from None


def _require_json(request: Request) -> None:
    """Only JSON bodies: a page on another site can POST text/plain through a visitor's
    browser without a CORS preflight, but not application/json.

    :raises APIError: 415 for any other Content-Type.
    """
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise APIError(
            415,
            f"the Content-Type must be application/json, not {media_type or 'missing'}",
            code="unsupported_media_type",
        )


def _check_context(served: ServedModel, messages: list[Message]) -> list[int] | None:
    """The prompt's token ids, where the backend gives them.

    :raises APIError: 400 if the chat template refuses the conversation, or it leaves no
        room for an answer in the context window."""
    try:
        prompt = served.prompt_tokens(messages)
    except BackendError as exc:
        raise APIError(400, str(exc), param="messages") from None
    if prompt is not None and served.n_ctx is not None and len(prompt) >= served.n_ctx:
        raise APIError(
            400,
            f"the conversation is {len(prompt)} tokens, more than the model's context window of "
            f"{served.n_ctx}; send fewer or shorter messages",
            param="messages",
            code="context_length_exceeded",
        )
    return prompt


def _sampling(defaults: SamplingParams, chat: ChatRequest, config: ServeConfig) -> SamplingParams:
    """The request's sampling settings over the server's defaults; answers never exceed
    the server's `max_tokens`."""
    requested = chat.max_completion_tokens or chat.max_tokens or config.max_tokens
    update: dict[str, Any] = {"max_tokens": min(requested, config.max_tokens)}
    for name in ("temperature", "top_p", "seed"):
        if getattr(chat, name) is not None:
            update[name] = getattr(chat, name)
    if chat.stop:
        update["stop"] = [chat.stop] if isinstance(chat.stop, str) else chat.stop
    return defaults.model_copy(update=update)


async def _watch_disconnect(request: Request, job: Job) -> None:
    """Abandon the job when the visitor disconnects (the body has been read by then, so
    the next ASGI message is the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            job.abandon()
            return


def _generation_error(exc: Exception) -> APIError:
    """The error response for a generation that failed."""
    if isinstance(exc, QueueTimeout):
        return APIError(
            503, str(exc), type="server_error", code="timeout", headers=retry_after_header(1)
        )
    if isinstance(exc, NotInTime):
        return APIError(
            503,
            str(exc),
            type="server_error",
            code="timeout",
            headers=retry_after_header(exc.retry_after),
        )
    if isinstance(exc, BackendError):
        return APIError(400, str(exc), param="messages")
    logger.error("generation failed", exc_info=exc)
    return APIError(500, "the model failed to answer", type="server_error")


async def _sse(
    model: str, job: Job, answer: _Answer, include_usage: bool, finish: Callable[..., None]
) -> AsyncIterator[bytes]:
    """The answer as OpenAI's chunks, one server-sent event each, ending with [DONE]."""

    def event(payload: dict[str, Any]) -> bytes:
        return b"data: " + json.dumps(payload, ensure_ascii=False).encode("utf-8") + b"\n\n"

    def chunk(delta: dict[str, str], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return event({**_head(model, answer, "chat.completion.chunk"), "choices": [choice]})

    try:
        # Sent as soon as the answer starts, before its first token is out.
        yield chunk({"role": "assistant", "content": ""})
        try:
            async for delta in job.deltas():
                answer.add(delta)
                if delta.text:
                    yield chunk({"content": delta.text})
        except Exception as exc:
            answer.finish_reason = "error"
            yield event(_generation_error(exc).body())
        else:
            yield chunk({}, answer.finish_reason or "stop")
            if include_usage:
                head = _head(model, answer, "chat.completion.chunk")
                yield event({**head, "choices": [], "usage": answer.usage()})
        yield b"data: [DONE]\n\n"
    finally:
        finish()


def _head(model: str, answer: _Answer, kind: str) -> dict[str, Any]:
    return {"id": answer.id, "object": kind, "created": answer.created, "model": model}


def _completion(model: str, answer: _Answer) -> dict[str, Any]:
    message = {"role": "assistant", "content": answer.text}
    choice = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": answer.finish_reason or "stop",
    }
    return {**_head(model, answer, "chat.completion"), "choices": [choice], "usage": answer.usage()}
