"""The one small interface every LLM backend implements.

A backend turns chat `messages` into an answer, streamed or not, and reports for each
generated token its top-k log-probabilities (with token ids where the backend has them),
which the distillation stages keep.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

Message = dict[str, str]
"""A chat message: {"role": "system"|"user"|"assistant", "content": "..."}."""


class SamplingParams(BaseModel):
    """How to sample an answer; shared by every backend."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(0.2, ge=0, le=2, description="0 is greedy decoding.")
    top_p: float = Field(0.95, gt=0, le=1)
    top_k: int = Field(0, ge=0, description="Sample among the k likeliest tokens; 0 = off.")
    max_tokens: int = Field(256, ge=1)
    stop: list[str] = Field(default_factory=list, description="Extra stop strings.")
    seed: int | None = None
    logprobs: int = Field(0, ge=0, le=100, description="Top-k log-probs to keep per token.")


@dataclass(frozen=True)
class TopLogprob:
    """One candidate token and its log-probability."""

    token: str
    logprob: float
    id: int | None = None


@dataclass(frozen=True)
class TokenLogprobs:
    """A generated token, its log-probability and the top-k alternatives at that step.

    `logprob` is None when log-probs were not asked for (`SamplingParams.logprobs == 0`).
    """

    token: str
    logprob: float | None
    id: int | None = None
    top: tuple[TopLogprob, ...] = ()


@dataclass(frozen=True)
class Usage:
    """Token counts of one completion; `cached_tokens` were reused from the KV cache."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0


@dataclass(frozen=True)
class Delta:
    """A piece of a streamed answer; the last one has `finish_reason` and `usage`."""

    text: str
    tokens: tuple[TokenLogprobs, ...] = ()
    #: Full-vocabulary logits of this step, from backends that keep them (HF).
    logits: np.ndarray | None = None
    finish_reason: str | None = None
    usage: Usage | None = None


@dataclass
class Completion:
    """A whole answer."""

    text: str
    finish_reason: str
    usage: Usage
    tokens: list[TokenLogprobs] = field(default_factory=list)
    #: (generated tokens, vocabulary) logits, from backends that keep them (HF).
    logits: np.ndarray | None = None


class ChatBackend(ABC):
    """An LLM that completes chat conversations."""

    #: Human-readable model spec, for logs and reports.
    name: str
    #: Whether requests may be sent at once (an HTTP server); in-process models take turns.
    concurrent: bool = False

    @abstractmethod
    def stream(self, messages: list[Message], params: SamplingParams) -> Iterator[Delta]:
        """Generate an answer piece by piece; the final Delta carries finish reason and usage."""

    def complete(self, messages: list[Message], params: SamplingParams) -> Completion:
        """Generate a whole answer."""
        text, tokens, logits = [], [], []
        finish_reason, usage = "stop", Usage(0, 0)
        for delta in self.stream(messages, params):
            text.append(delta.text)
            tokens.extend(delta.tokens)
            if delta.logits is not None:
                logits.append(delta.logits)
            if delta.finish_reason:
                finish_reason = delta.finish_reason
            if delta.usage:
                usage = delta.usage
        stacked = np.stack(logits) if logits else None
        return Completion("".join(text), finish_reason, usage, tokens, stacked)

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release the model's memory or connections."""

    def __enter__(self) -> ChatBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def common_prefix(cached: Sequence[int], prompt: Sequence[int]) -> int:
    """How many leading tokens two token sequences share (the reusable part of a KV cache)."""
    n = 0
    for a, b in zip(cached, prompt, strict=False):
        if a != b:
            break
        n += 1
    return n
