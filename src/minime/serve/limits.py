"""What a request may contain and how often a visitor may send one.

Every refusal is an `APIError`, which the server turns into OpenAI's error shape:
`{"error": {"message", "type", "param", "code"}}` with the matching HTTP status.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

from minime.backends import Message
from minime.config import ServeConfig


class APIError(Exception):
    """A request the server refuses, with OpenAI's error fields."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON body of the error response."""
        fields = {"message": self.message, "type": self.type, "param": self.param}
        return {"error": {**fields, "code": self.code}}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


MAX_STOP = 4
"""Stop sequences a request may give (OpenAI's limit)."""

# JSON types as OpenAI checks them: no "16" or true for a number, no "yes" for a boolean.
_Float = Annotated[float, Field(strict=True)]


class TextPart(_Strict):
    """A text part of a message's content (OpenAI's list form)."""

    type: Literal["text"]
    text: StrictStr


class ChatMessage(_Strict):
    """One message of the conversation."""

    role: Literal["system", "developer", "user", "assistant"]
    content: StrictStr | list[TextPart]
    name: StrictStr | None = None

    @property
    def text(self) -> str:
        """The content as one string."""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(_Strict):
    """Options of a streamed answer."""

    include_usage: StrictBool = False


class ChatRequest(_Strict):
    """The body of `POST /v1/chat/completions`: the OpenAI fields this server honours.

    Any other field is refused, as OpenAI does, rather than silently ignored.
    """

    model: StrictStr | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    max_tokens: StrictInt | None = Field(None, ge=1)
    max_completion_tokens: StrictInt | None = Field(None, ge=1)
    temperature: _Float | None = Field(None, ge=0, le=2)
    top_p: _Float | None = Field(None, gt=0, le=1)
    stop: StrictStr | list[StrictStr] | None = None
    seed: StrictInt | None = None
    n: Literal[1] = 1
    user: StrictStr | None = None
    # Clients such as LangChain send 0 by default; the server applies no penalties, so
    # the neutral value is accepted and any other refused (parse_request).
    presence_penalty: _Float | None = Field(None, ge=-2, le=2)
    frequency_penalty: _Float | None = Field(None, ge=-2, le=2)

    @property
    def include_usage(self) -> bool:
        """Whether a streamed answer ends with a usage chunk."""
        return bool(self.stream_options and self.stream_options.include_usage)


def parse_request(data: Any, config: ServeConfig) -> ChatRequest:
    """Validate a decoded request body against the schema and the server's limits.

    :raises APIError: 400 naming the offending field.
    """
    if not isinstance(data, dict):
        raise APIError(400, "the request body must be a JSON object")
    messages = data.get("messages")
    # Counted before validation, so a huge history is refused without building it.
    if isinstance(messages, list) and len(messages) > config.max_messages:
        raise APIError(
            400,
            f"the conversation has {len(messages)} messages; the limit is {config.max_messages}",
            param="messages",
            code="too_many_messages",
        )
    try:
        _refuse_lone_surrogates(data, "")
    except RecursionError:
        raise APIError(400, "the request body is nested too deeply") from None
    try:
        request = ChatRequest.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        # A union's errors carry the member's name (`stop.list[str]`): keep the field's.
        loc = [part for part in error["loc"] if part != "str" and not str(part).startswith("list[")]
        param = ".".join(map(str, loc)) or None
        if error["type"] == "extra_forbidden":
            message = f"Unrecognized request argument supplied: {param}"
            raise APIError(400, message, param=param) from None
        raise APIError(400, f"{param}: {error['msg']}", param=param) from None
    if isinstance(request.stop, list) and len(request.stop) > MAX_STOP:
        raise APIError(
            400,
            f"stop: {len(request.stop)} sequences; at most {MAX_STOP} are allowed",
            param="stop",
        )
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(request, name):
            raise APIError(
                400,
                f"{name}: this server applies no penalties; send 0 or leave it out",
                param=name,
                code="unsupported_value",
            )
    for index, message in enumerate(request.messages):
        if len(message.text) > config.max_message_chars:
            raise APIError(
                400,
                f"message {index} has {len(message.text)} characters; the limit is "
                f"{config.max_message_chars}",
                param=f"messages.{index}.content",
                code="message_too_long",
            )
    return request


def _refuse_lone_surrogates(value: Any, path: str) -> None:
    """JSON may escape half of a UTF-16 pair (`"\\ud800"`), which no UTF-8 text can hold.

    :raises APIError: 400 naming the field.
    """
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise APIError(
                400,
                f"{path or 'body'}: the text holds an unpaired surrogate (\\ud800-\\udfff), "
                "which is not valid Unicode",
                param=path or None,
            ) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _refuse_lone_surrogates(key, path)
            _refuse_lone_surrogates(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _refuse_lone_surrogates(item, f"{path}.{index}" if path else str(index))


def visitor_messages(request: ChatRequest) -> list[Message]:
    """The conversation as the model sees it: user and assistant turns only.

    System and developer messages are dropped: the assistant's instructions are fixed by
    the server (a distilled model learned them; the profile-prompted mode has its own
    system prompt), and generic OpenAI front ends send a system prompt of their own.

    :raises APIError: 400 if no turn is left, the last is not the visitor's, or it is empty.
    """
    turns = [
        {"role": message.role, "content": message.text}
        for message in request.messages
        if message.role in ("user", "assistant")
    ]
    if not turns or turns[-1]["role"] != "user":
        raise APIError(400, "the last message must be the visitor's (role user)", param="messages")
    if not turns[-1]["content"].strip():
        raise APIError(400, "the question is empty", param="messages")
    return turns


class RateLimiter:
    """A token bucket per visitor: `burst` requests at once, refilled at `per_minute`.

    Written here rather than taken from a library because it is a dozen lines, and the
    memory it keeps must stay bounded under a flood of addresses: the least recently
    seen visitors are forgotten past `max_clients` (which only ever lets them in again).
    """

    def __init__(self, per_minute: float, burst: int, max_clients: int = 10_000) -> None:
        self.rate = per_minute / 60.0
        self.burst = burst
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, client: str, now: float | None = None) -> float:
        """Spend one request of `client`'s allowance.

        :returns: 0 if the request may go ahead, else the seconds until it may.
        """
        if self.rate <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.pop(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self.rate
        self._buckets[client] = (tokens, now)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait


def client_address(peer: str | None, forwarded_for: str | None, proxies: int) -> str:
    """The visitor's address: the peer's, or the one `proxies` trusted proxies reported.

    Each proxy appends the address it received the request from to X-Forwarded-For, so
    with N trusted proxies the visitor is the N-th entry from the right; entries left of
    it are whatever the visitor wrote and are never trusted.
    """
    if proxies and forwarded_for:
        hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
        if len(hops) >= proxies:
            return hops[-proxies]
    return peer or "unknown"


def retry_after_header(seconds: float) -> dict[str, str]:
    """The Retry-After header for a wait, in whole seconds (at least 1)."""
    return {"Retry-After": str(max(1, math.ceil(seconds)))}
