"""What `minime serve` answers with: a distilled GGUF, any GGUF, or the profile-prompted
assistant of a project that has no export yet."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from minime.backends import ChatBackend, Message, SamplingParams, load_backend
from minime.chat import system_prompt
from minime.config import ChatConfig, ServeConfig
from minime.errors import InputError
from minime.guard import GuardedBackend, OffTopicGuard
from minime.layout import EXPORT_JSON, EXPORT_MANIFEST, default_quant, exported_ggufs
from minime.project import Project
from minime.serve.engine import Speed, measure_speed


@dataclass
class ServedModel:
    """The model behind the server, the id clients see, and the prompt it is given.

    A distilled model learned the person's facts, so it gets the visitor's messages as
    they are; the profile-prompted mode puts its system prompt (policy and profile) first.
    """

    id: str
    backend: ChatBackend
    params: SamplingParams
    title: str
    system: str | None = None
    speed: Speed | None = None  # measured at load, for admission; None: cautious defaults
    guard: OffTopicGuard | None = None  # put before the backend once its speed is measured

    def messages(self, visitor: list[Message]) -> list[Message]:
        """The conversation sent to the model for the visitor's messages."""
        if self.system is None:
            return list(visitor)
        return [{"role": "system", "content": self.system}, *visitor]

    def prompt_tokens(self, messages: list[Message]) -> list[int] | None:
        """Token ids of the model's prompt for `messages`, where the backend gives them
        (the local backends do; a remote one does not)."""
        tokenize = getattr(self.backend, "prompt_tokens", None)
        return list(tokenize(messages)) if tokenize is not None else None

    @property
    def n_ctx(self) -> int | None:
        """The context window in tokens, where the backend has one."""
        return getattr(self.backend, "n_ctx", None)


def exported_gguf(folder: Path, quant: str | None = None) -> Path:
    """The GGUF that `minime export` marked as default in `folder/export.json`, or `quant`.

    :raises InputError: if the manifest is missing or unreadable, or names no such quant.
    """
    files = exported_ggufs(folder)
    manifest = folder / EXPORT_JSON
    quant = quant or default_quant(folder)
    if quant is None:
        raise InputError(f'{manifest}: field "default" missing')
    if quant not in files:
        raise InputError(f"{manifest}: no {quant} file (exported: {', '.join(files) or 'none'})")
    return files[quant]


def open_served_model(
    target: Path,
    config: ServeConfig,
    *,
    model: str | None = None,
    quant: str | None = None,
) -> ServedModel:
    """Load what `minime serve TARGET` answers with, and time one short generation on a
    local model (its speed, for admission; it also pages the weights in).

    :param target: a `.gguf` file, or a project folder: its exported default GGUF when
        `out/export/export.json` exists, else its profile-prompted assistant.
    :param config: the server settings (context window, threads, longest answer).
    :param model: for a project, serve the profile-prompted assistant with this model spec.
    :param quant: for a project with an export, the quant to serve instead of the default.
    :raises InputError: if the target is neither, or its export manifest is broken.
    :raises ModelNotFoundError: if a model spec resolves to nothing.
    """
    served = _open(Path(target), config, model, quant)
    if hasattr(served.backend, "prompt_tokens"):  # a local model: time it before serving
        try:
            served.speed = measure_speed(served.backend)
        except Exception:
            served.backend.close()
            raise
    if served.guard is not None:
        served.backend = GuardedBackend(served.backend, served.guard)
    return served


def _open(target: Path, config: ServeConfig, model: str | None, quant: str | None) -> ServedModel:
    options = {"n_ctx": config.n_ctx, "n_threads": config.threads}
    if target.is_file() and target.suffix == ".gguf":
        chat = ChatConfig()
        backend = load_backend(str(target), seed=chat.seed, **options)
        return ServedModel(target.stem, backend, _params(chat, config), title=target.stem)
    if not target.is_dir():
        raise InputError(f"{target}: neither a .gguf file nor a project folder")
    project = Project.open(target)
    chat = project.config.chat
    params = _params(chat, config)
    manifest = target / EXPORT_MANIFEST
    if model is None and manifest.is_file():
        path = exported_gguf(manifest.parent, quant)
        backend = load_backend(str(path), seed=chat.seed, **options)
        guard = OffTopicGuard.for_project(project) if config.guard else None
        return ServedModel(path.stem, backend, params, title=project.name, guard=guard)
    if quant is not None:
        raise InputError(f"{manifest}: no export to pick quant {quant} from (run `minime export`)")
    spec = model or project.config.models.chat
    backend = load_backend(spec, seed=chat.seed, **options)
    return ServedModel(
        f"{target.resolve().name}-profile",
        backend,
        params,
        title=project.name,
        system=system_prompt(project.name, project.profile),
    )


def _params(chat: ChatConfig, config: ServeConfig) -> SamplingParams:
    return SamplingParams(
        temperature=chat.temperature,
        top_p=chat.top_p,
        max_tokens=config.max_tokens,
        seed=chat.seed,
    )
