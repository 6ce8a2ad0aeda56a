"""`minime build DIR`: data, distill, export and eval in order, skipping what is up to date.

After a stage finishes, `out/<stage>/build-stamp.json` records a hash of its inputs (the
project's name and profile, the settings it reads that differ from the defaults, the
model specs it uses, its input files and its upstream stage's output files) and the
sha256 of its outputs. A later build skips the stage when both still match, so a fresh
clone that carries a stage's outputs and stamp does not redo it. The code's own version
is not part of the hash: after upgrading minime, `--force` redoes everything.

A stage that was interrupted leaves a stamp marked incomplete; `distill` then resumes from
its last complete checkpoint if its inputs are unchanged.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from minime.errors import InputError
from minime.fileio import file_sha256, write_text_atomic
from minime.project import Project

STAGES = ("data", "distill", "export", "eval")
STAMP = "build-stamp.json"


class StageOutcome(BaseModel):
    """What `build` did with one stage."""

    stage: str
    ran: bool
    seconds: float
    why: str


def build(
    project: Project, stages: tuple[str, ...] = STAGES, *, force: bool = False
) -> list[StageOutcome]:
    """Run each of `stages` (in pipeline order) whose inputs changed since its last run.

    :param force: run every stage even when it is up to date.
    :raises MinimeError: whatever a stage raises; the stages before it keep their stamps.
    """
    outcomes = []
    for stage in (s for s in STAGES if s in stages):
        digest = _digest(stage_inputs(project, stage))
        stamp = _read_stamp(project, stage)
        current = stamp is not None and stamp.get("inputs") == digest
        if current and stamp.get("complete") and not force:
            if stamp.get("outputs") == stage_outputs(project, stage):
                outcomes.append(StageOutcome(stage=stage, ran=False, seconds=0, why="up to date"))
                continue
            why = "its outputs changed"
        elif current and not force:
            why = "its last run did not finish"
        else:
            why = "forced" if force else ("first run" if stamp is None else "its inputs changed")
        resume = stage == "distill" and current and not stamp.get("complete")
        _write_stamp(project, stage, {"stage": stage, "inputs": digest, "complete": False})
        started = time.monotonic()
        _run(project, stage, resume)
        record_stage(project, stage)
        outcomes.append(
            StageOutcome(
                stage=stage, ran=True, seconds=round(time.monotonic() - started, 1), why=why
            )
        )
    return outcomes


def record_stage(project: Project, stage: str) -> None:
    """Mark `stage` complete with its current inputs and outputs (as after a run), e.g.
    after running it by hand.

    :raises InputError: if the stage has no outputs.
    """
    outputs = stage_outputs(project, stage)
    if not outputs:
        raise InputError(
            f"{project.root / 'out' / stage}: no outputs of the {stage} stage to record"
        )
    digest = _digest(stage_inputs(project, stage))
    stamp = {"stage": stage, "inputs": digest, "complete": True, "outputs": outputs}
    _write_stamp(project, stage, stamp)


def _run(project: Project, stage: str, resume: bool) -> None:
    if stage == "data":
        from minime.data import STEPS, build_dataset

        build_dataset(project, STEPS)
    elif stage == "distill":
        from minime.distill import distill

        distill(project, resume=resume)
    elif stage == "export":
        from minime.export import export

        export(project)
    else:
        from minime.eval import evaluate

        evaluate(project)


def stage_inputs(project: Project, stage: str) -> dict[str, Any]:
    """Everything a stage's result depends on, as JSON-able values and file hashes."""
    config, models = project.config, project.config.models
    person = {"name": project.name, "profile": _sha(project.profile.encode())}
    if stage == "data":
        prompts = {
            _relative(project, path): _file_sha(path) if path.is_file() else None
            for path in project.prompt_files
        }
        return {
            **person,
            "settings": _settings(config, "data"),
            "models": [models.teacher, models.generators, models.embedder],
            "prompts": prompts,
        }
    if stage == "distill":
        return {
            **person,
            "settings": _settings(config, "distill"),
            "student": models.student,
            "upstream": stage_outputs(project, "data"),
        }
    if stage == "export":
        return {
            **person,
            "settings": _settings(config, "export"),
            "upstream": stage_outputs(project, "distill"),
        }
    if stage == "eval":
        questions = project.root / config.eval.questions
        students = {
            _relative(project, f): _file_sha(f)
            for pattern in ("out/distill*/model/*", "out/export*/*.gguf", "out/export*/export.json")
            for f in sorted(project.root.glob(pattern))
            if f.is_file() and f.name != STAMP and not f.name.startswith(".")
        }
        return {
            **person,
            "settings": [_settings(config, "eval"), _settings(config, "chat")],
            "models": [models.chat, models.generators, models.embedder],
            "questions": _file_sha(questions) if questions.is_file() else None,
            "data": stage_outputs(project, "data"),
            "students": students,
        }
    raise ValueError(f"unknown stage {stage!r}")


def stage_outputs(project: Project, stage: str) -> dict[str, str]:
    """sha256 of each output file of `stage` that exists, by path relative to the project."""
    out = project.root / "out"
    if stage == "data":
        files = [out / "data" / "train.jsonl", out / "data" / "val.jsonl"]
    elif stage == "distill":
        files = sorted((out / "distill" / "model").glob("*"))
    elif stage == "export":
        files = sorted((out / "export").glob("*"))
    else:
        files = [out / "eval" / "report.json"]
    return {
        _relative(project, f): _file_sha(f)
        for f in files
        if f.is_file() and f.name != STAMP and not f.name.startswith(".")
    }


def _settings(config, section: str) -> dict[str, Any] | None:
    """The settings of one section that differ from the defaults.

    Only changed settings count, so a setting added to minime later (with its default)
    does not make every existing stamp stale.
    """
    model = getattr(config, section, None)
    return model.model_dump(mode="json", exclude_defaults=True) if model is not None else None


def _relative(project: Project, path: Path) -> str:
    try:
        return path.resolve().relative_to(project.root.resolve()).as_posix()
    except ValueError:
        return str(path.resolve())


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_sha(path: Path) -> str:
    stat = path.stat()
    return _sha_of(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=1024)
def _sha_of(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of a file, computed once per size and modification time: one build reads a
    stage's outputs up to three times (its stamp, and the inputs of the stages after it)."""
    return file_sha256(path)


def _digest(inputs: dict[str, Any]) -> str:
    return _sha(json.dumps(inputs, sort_keys=True).encode())


def _stamp_path(project: Project, stage: str) -> Path:
    return project.root / "out" / stage / STAMP


def _read_stamp(project: Project, stage: str) -> dict | None:
    try:
        stamp = json.loads(_stamp_path(project, stage).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) else None


def _write_stamp(project: Project, stage: str, stamp: dict) -> None:
    write_text_atomic(_stamp_path(project, stage), json.dumps(stamp, indent=2) + "\n")
