"""LLM backends behind one interface, and `load_backend` to open one from a model spec."""

from __future__ import annotations

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
from minime.errors import ConfigError
from minime.registry import ResolvedModel, resolve

__all__ = [
    "ChatBackend",
    "Completion",
    "Delta",
    "LazyBackend",
    "Message",
    "SamplingParams",
    "TokenLogprobs",
    "TopLogprob",
    "Usage",
    "load_backend",
]


def load_backend(
    spec: str | ResolvedModel,
    *,
    n_ctx: int = 4096,
    n_threads: int | None = None,
    seed: int = 0,
    keep_logits: bool = False,
) -> ChatBackend:
    """Open the chat backend that fits a model spec: llama.cpp, transformers or HTTP.

    :raises ModelNotFoundError: if the spec resolves to nothing.
    :raises ConfigError: if the spec names a model that cannot chat (an encoder).
    """
    model = resolve(spec) if isinstance(spec, str) else spec
    if model.kind == "gguf":
        from minime.backends.llamacpp import LlamaCppBackend

        return LlamaCppBackend(
            model.path,
            chat_template=model.chat_template,
            n_ctx=n_ctx,
            n_threads=n_threads,
            seed=seed,
            name=model.spec,
        )
    if model.kind == "hf":
        from minime.backends.hf import HFBackend

        return HFBackend(
            model.path, chat_template=model.chat_template, keep_logits=keep_logits, name=model.spec
        )
    if model.kind == "openai":
        from minime.backends.openai_http import OpenAIBackend

        return OpenAIBackend(model.base_url, model.model, model.api_key, name=model.spec)
    raise ConfigError(f"{model.spec}: a {model.kind} model embeds text; it cannot chat")


class LazyBackend(ChatBackend):
    """A backend that loads its model on first use: a step with nothing left to do loads
    nothing, and a resumed run does not pay for models it no longer needs."""

    def __init__(self, spec: str, **options) -> None:
        self.name = spec
        self.concurrent = spec.startswith("openai:")
        self._options = options
        self._backend: ChatBackend | None = None

    def _loaded(self) -> ChatBackend:
        if self._backend is None:
            self._backend = load_backend(self.name, **self._options)
        return self._backend

    def stream(self, messages: list[Message], params: SamplingParams):
        """See ChatBackend.stream."""
        return self._loaded().stream(messages, params)

    def complete(self, messages: list[Message], params: SamplingParams) -> Completion:
        """See ChatBackend.complete."""
        return self._loaded().complete(messages, params)

    def close(self) -> None:
        """Free the model if it was loaded."""
        if self._backend is not None:
            self._backend.close()
