"""Any OpenAI-compatible HTTP server: vLLM, llama-server, hosted APIs.

The `openai` client does the transport: timeouts, and retries with exponential backoff
(honouring Retry-After) on 408/409/429/5xx and connection errors. This module turns its
answers into minime's types and every failure into a BackendError that says what happened.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from minime.backends.base import (
    ChatBackend,
    Completion,
    Delta,
    Message,
    SamplingParams,
    TokenLogprobs,
    TopLogprob,
    Usage,
)
from minime.errors import BackendError


class OpenAIBackend(ChatBackend):
    """A model behind an OpenAI-compatible `/v1/chat/completions` endpoint."""

    concurrent = True

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str = "not-needed",
        *,
        timeout: float = 120.0,
        max_retries: int = 4,
        name: str | None = None,
    ) -> None:
        import openai

        self.name = name or f"openai:{model}@{base_url}"
        self.model = model
        self._client = openai.OpenAI(
            base_url=base_url, api_key=api_key, timeout=timeout, max_retries=max_retries
        )

    def _request(self, messages: list[Message], params: SamplingParams) -> dict[str, Any]:
        request: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_tokens,
        }
        if params.stop:
            request["stop"] = params.stop
        if params.seed is not None:
            request["seed"] = params.seed
        if params.logprobs:
            request["logprobs"] = True
            request["top_logprobs"] = params.logprobs
        if params.top_k:
            # Not in OpenAI's API; vLLM and llama-server read it from the body.
            request["extra_body"] = {"top_k": params.top_k}
        return request

    def stream(self, messages: list[Message], params: SamplingParams) -> Iterator[Delta]:
        """Stream an answer over server-sent events (see ChatBackend.stream)."""
        request = self._request(messages, params)
        finish_reason, usage = None, None
        with _backend_errors(self.name):
            chunks = self._client.chat.completions.create(
                **request, stream=True, stream_options={"include_usage": True}
            )
            for chunk in chunks:
                if getattr(chunk, "usage", None):
                    usage = _usage(chunk.usage)
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                text = getattr(choice.delta, "content", None) or ""
                tokens = _tokens(choice.logprobs)
                finish_reason = choice.finish_reason or finish_reason
                if text or tokens:
                    yield Delta(text=text, tokens=tokens)
        if finish_reason is None:
            raise BackendError(f"{self.name}: the stream ended without a finish reason")
        yield Delta(text="", finish_reason=finish_reason, usage=usage or Usage(0, 0))

    def complete(self, messages: list[Message], params: SamplingParams) -> Completion:
        """Generate a whole answer in one request (see ChatBackend.complete)."""
        with _backend_errors(self.name):
            response = self._client.chat.completions.create(**self._request(messages, params))
        choices = getattr(response, "choices", None)
        if not choices or not isinstance(getattr(choices[0].message, "content", None), str):
            raise BackendError(
                f"{self.name}: invalid response, expected choices[0].message.content: "
                f"{str(response)[:200]}"
            )
        choice = choices[0]
        usage = _usage(response.usage) if getattr(response, "usage", None) else Usage(0, 0)
        return Completion(
            text=choice.message.content,
            finish_reason=choice.finish_reason or "stop",
            usage=usage,
            tokens=list(_tokens(choice.logprobs)),
        )

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()


@contextmanager
def _backend_errors(name: str) -> Iterator[None]:
    """Turn the openai client's exceptions into BackendErrors that say what to check."""
    import openai

    try:
        yield
    except openai.APITimeoutError as exc:
        raise BackendError(f"{name}: timed out (after retries)") from exc
    except openai.APIConnectionError as exc:
        raise BackendError(f"{name}: cannot connect (after retries): {exc}") from exc
    except openai.APIStatusError as exc:
        body = (exc.response.text or "")[:300]
        raise BackendError(f"{name}: HTTP {exc.status_code}: {body}") from exc
    except (openai.APIResponseValidationError, ValueError, AttributeError, TypeError) as exc:
        raise BackendError(f"{name}: invalid response: {exc}") from exc


def _usage(usage: Any) -> Usage:
    details = getattr(usage, "prompt_tokens_details", None)
    return Usage(
        prompt_tokens=usage.prompt_tokens or 0,
        completion_tokens=usage.completion_tokens or 0,
        cached_tokens=(getattr(details, "cached_tokens", None) or 0) if details else 0,
    )


def _tokens(logprobs: Any) -> tuple[TokenLogprobs, ...]:
    content = getattr(logprobs, "content", None) or []
    return tuple(
        TokenLogprobs(
            token=item.token,
            logprob=item.logprob,
            top=tuple(TopLogprob(t.token, t.logprob) for t in (item.top_logprobs or [])),
        )
        for item in content
    )
