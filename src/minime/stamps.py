"""Build stamps: what each stage's result depends on, hashed, and what it last ran on.

`out/<stage>/build-stamp.json` records a hash of a stage's inputs (the project's name and
profile, the settings it reads that differ from the defaults, the model specs it uses, its
input files and its upstream stage's output files) and the sha256 of its outputs. `build`
compares them; `chat` and `serve` read them to tell whether the student learned the
current profile. Nothing here imports a stage.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from minime import layout
from minime.fileio import file_sha256, write_text_atomic
from minime.project import Project


def data_inputs(project: Project) -> dict[str, Any]:
    """What the data stage's result depends on."""
    models = project.config.models
    prompts = {
        _relative(project, path): _file_sha(path) if path.is_file() else None
        for path in project.prompt_files
    }
    return {
        **_person(project),
        "settings": _settings(project, "data"),
        "models": [models.teacher, models.generators, models.embedder],
        "prompts": prompts,
    }


def distill_inputs(project: Project) -> dict[str, Any]:
    """What the distill stage's result depends on."""
    return {
        **_person(project),
        "settings": _settings(project, "distill"),
        "student": project.config.models.student,
        "upstream": file_hashes(project, layout.data_outputs(project.root)),
    }


def export_inputs(project: Project) -> dict[str, Any]:
    """What the export stage's result depends on."""
    return {
        **_person(project),
        "settings": _settings(project, "export"),
        "upstream": file_hashes(project, layout.distill_outputs(project.root)),
    }


def eval_inputs(project: Project) -> dict[str, Any]:
    """What the eval stage's result depends on: every trained and exported student too."""
    models, questions = project.config.models, project.questions_path
    trained = [f for model in layout.trained_models(project.root) for f in model.glob("*")]
    return {
        **_person(project),
        "settings": [_settings(project, "eval"), _settings(project, "chat")],
        "models": [models.chat, models.generators, models.embedder],
        "questions": _file_sha(questions) if questions.is_file() else None,
        "data": file_hashes(project, layout.data_outputs(project.root)),
        "students": file_hashes(project, [*trained, *layout.exported_files(project.root)]),
    }


def file_hashes(project: Project, files: Iterable[Path]) -> dict[str, str]:
    """sha256 of each file that exists, by path relative to the project (stamps skipped)."""
    return {
        _relative(project, f): _file_sha(f)
        for f in files
        if f.is_file() and f.name != layout.STAMP and not f.name.startswith(".")
    }


def digest(inputs: dict[str, Any]) -> str:
    """One hash of a stage's inputs."""
    return sha(json.dumps(inputs, sort_keys=True).encode())


def sha(data: bytes) -> str:
    """sha256 of bytes, as hex."""
    return hashlib.sha256(data).hexdigest()


def profile_sha(project: Project) -> str:
    """sha256 of the project's profile as it is now."""
    return sha(project.profile.encode())


def read_stamp(project: Project, stage: str) -> dict | None:
    """The stage's stamp, or None when it has none (or an unreadable one)."""
    try:
        stamp = json.loads(layout.stamp_file(project.root, stage).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) else None


def write_stamp(project: Project, stage: str, stamp: dict) -> None:
    """Write the stage's stamp atomically."""
    path = layout.stamp_file(project.root, stage)
    write_text_atomic(path, json.dumps(stamp, indent=2) + "\n")


def record_answered_profile(project: Project) -> None:
    """Note that the teacher answered from the current profile (`out/data/profile.sha256`)."""
    write_text_atomic(layout.profile_sha_file(project.root), profile_sha(project) + "\n")


def profile_changed(project: Project) -> str | None:
    """Where a record says the student learned another profile than the current one (the
    record's path), or None when it did not or nothing tells.

    `out/data/profile.sha256` (written when the teacher answers) is read first, then the
    export's build stamp, then the data stage's; a stamp written before stamps kept the
    profile's hash is compared by its whole input digest, which also changes with the data
    settings.
    """
    current = profile_sha(project)
    answered_file = layout.profile_sha_file(project.root)
    try:
        answered = answered_file.read_text(encoding="utf-8").strip()
    except OSError:
        answered = None
    if answered:
        return None if answered == current else str(answered_file)
    for stage in ("export", "data"):
        stamp = read_stamp(project, stage)
        if stamp and stamp.get("complete") and "profile" in stamp:
            where = layout.stamp_file(project.root, stage)
            return None if stamp["profile"] == current else str(where)
    stamp = read_stamp(project, "data")
    if (
        stamp
        and stamp.get("complete")
        and "inputs" in stamp
        and stamp["inputs"] != digest(data_inputs(project))
    ):
        return f"{layout.stamp_file(project.root, 'data')}, or the data settings changed"
    return None


def _person(project: Project) -> dict[str, str]:
    return {"name": project.name, "profile": profile_sha(project)}


def _settings(project: Project, section: str) -> dict[str, Any] | None:
    """The settings of one section that differ from the defaults.

    Only changed settings count, so a setting added to minime later (with its default)
    does not make every existing stamp stale.
    """
    model = getattr(project.config, section, None)
    return model.model_dump(mode="json", exclude_defaults=True) if model is not None else None


def _relative(project: Project, path: Path) -> str:
    try:
        return path.resolve().relative_to(project.root.resolve()).as_posix()
    except ValueError:
        return str(path.resolve())


def _file_sha(path: Path) -> str:
    stat = path.stat()
    return _sha_of(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=1024)
def _sha_of(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of a file, computed once per size and modification time: one build reads a
    stage's outputs up to three times (its stamp, and the inputs of the stages after it)."""
    return file_sha256(path)
