"""The models an evaluation compares: distilled models, plain models and profile-prompted ones.

A contender answers the visitor's question either as it is (`plain`: a distilled student,
a GGUF, a server; no profile and no added system text), behind the serving guard as
`minime serve` answers (`guarded`: see `minime.guard`), or through `minime chat`'s
profile-prompted assistant (`profile`: the system prompt with the whole profile).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from minime.layout import default_quant, export_manifests, exported_ggufs, trained_models
from minime.project import Project
from minime.registry import resolve

Mode = Literal["plain", "guarded", "profile"]

#: Contender spec prefix for the profile-prompted mode with any model.
PROFILE_PREFIX = "profile:"
#: Characters that make the text before "=" part of a spec (a path or URL), not a label.
_LABEL_STOPS = set(":/\\")


@dataclass(frozen=True)
class Contender:
    """One model in one mode, under a label for the report."""

    label: str
    spec: str
    mode: Mode
    #: What it is, for grouping in the report: baseline, a distill method, or "model".
    group: str = "model"
    quant: str | None = None

    @property
    def kind(self) -> str:
        """gguf, hf or openai."""
        return resolve(self.spec).kind

    def size_bytes(self) -> int | None:
        """Bytes of the weights (a GGUF file or a model folder); None for a server."""
        path = resolve(self.spec).path
        if path is None:
            return None
        if path.is_dir():
            return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        return path.stat().st_size

    def fingerprint(self, project: Project) -> str:
        """Changes when the model or, in profile mode, the profile does."""
        model = resolve(self.spec)
        parts = [self.mode, self.spec]
        if model.path is not None:
            files = sorted(model.path.rglob("*")) if model.path.is_dir() else [model.path]
            parts += [f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files]
        if self.mode != "plain":
            parts += [project.name, project.profile]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def parse_contender(text: str, project: Project) -> Contender:
    """A contender from the command line: `baseline`, `profile:SPEC` or a model spec, each
    optionally as `LABEL=...` to name it in the report.

    :raises ModelNotFoundError: if the model spec names nothing on this machine.
    :raises ConfigError: if an `openai:` spec is malformed.
    """
    label, equals, rest = text.partition("=")
    if equals and label and not _LABEL_STOPS.intersection(label):
        return replace(parse_contender(rest, project), label=label)
    if text == "baseline":
        return baseline(project)
    if text.startswith(PROFILE_PREFIX):
        spec = text.removeprefix(PROFILE_PREFIX)
        resolve(spec)
        return Contender(f"profile-prompted {spec}", spec, "profile", "profile-prompted")
    path = resolve(text).path
    if path is not None and (path / "minime.json").is_file():
        method = _method("", path / "minime.json")
        return Contender(f"{method} (HF) {text}", text, "plain", method)
    return Contender(path.name if path is not None and Path(text).exists() else text, text, "plain")


def baseline(project: Project) -> Contender:
    """The profile-prompted chat model (`models.chat`): what every student must beat."""
    spec = project.config.models.chat
    return Contender(f"baseline: profile-prompted {spec}", spec, "profile", "baseline")


def default_contenders(project: Project) -> list[Contender]:
    """The baseline, each quantization in `out/export*/export.json` (the served one also
    behind the guard, when `serve.guard` is on), and each trained student in
    `out/distill*/model` that has no export (as a Hugging Face model).

    :raises InputError: naming the file and field, if an export.json lists a missing file.
    """
    contenders = [baseline(project)]
    exported = set()
    for manifest in export_manifests(project.root):
        folder = manifest.parent
        method = _method(folder.name.removeprefix("export"), manifest)
        for quant, path in exported_ggufs(folder).items():
            label = f"{method} {quant}"
            contenders.append(Contender(label, str(path), "plain", method, quant))
            if project.config.serve.guard and quant == recommended_quant(folder):
                guarded = Contender(f"{label} + guard", str(path), "guarded", method, quant)
                contenders.append(guarded)
        exported.add("distill" + folder.name.removeprefix("export"))
    for model in trained_models(project.root):
        if model.parent.name in exported or not (model / "config.json").is_file():
            continue
        method = _method(model.parent.name.removeprefix("distill"), model / "minime.json")
        contenders.append(Contender(f"{method} (HF)", str(model), "plain", method))
    return contenders


def _method(suffix: str, metadata: Path) -> str:
    """The distill method of an output folder: from its metadata, else its name's suffix."""
    try:
        method = json.loads(metadata.read_text(encoding="utf-8")).get("method")
    except (OSError, ValueError, AttributeError):
        method = None
    return str(method or suffix.lstrip("-") or "student")


def recommended_quant(folder: Path) -> str:
    """The quantization an export folder recommends (`default` in its export.json), else the
    first it has."""
    files = exported_ggufs(folder)
    default = default_quant(folder)
    return default if default in files else next(iter(files))
