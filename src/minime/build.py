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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from minime.errors import InputError
from minime.fileio import file_sha256, write_text_atomic
from minime.progress import elapsed, piped_heartbeat
from minime.project import Project

STAGES = ("data", "distill", "export", "eval")
STAMP = "build-stamp.json"


class StageOutcome(BaseModel):
    """What `build` did with one stage."""

    stage: str
    ran: bool
    seconds: float
    why: str


#: The model roles each stage loads (keys of `Project.model_specs`).
STAGE_ROLES = {
    "data": ("teacher", "generators", "embedder"),
    "distill": ("student",),
    "export": (),
    "eval": ("chat", "embedder", "eval.generator", "eval.judge"),
}


def select_stages(start: str | None = None, stop: str | None = None) -> tuple[str, ...]:
    """The stages from `start` to `stop` (both included), in pipeline order.

    :raises InputError: if either is not a stage, or `stop` comes before `start`.
    """
    for name in (start, stop):
        if name is not None and name not in STAGES:
            raise InputError(f"{name}: not a stage; expected one of {', '.join(STAGES)}")
    first = STAGES.index(start) if start else 0
    last = STAGES.index(stop) if stop else len(STAGES) - 1
    if last < first:
        raise InputError(f"--to {stop} comes before --from {start}")
    return STAGES[first : last + 1]


def _why(project: Project, stage: str, force: bool) -> tuple[str | None, str]:
    """(None, "up to date") for a stage to skip, else (its inputs' digest, why it runs)."""
    digest = _digest(stage_inputs(project, stage))
    stamp = _read_stamp(project, stage)
    current = stamp is not None and stamp.get("inputs") == digest
    if current and stamp.get("complete") and not force:
        if stamp.get("outputs") == stage_outputs(project, stage):
            return None, "up to date"
        return digest, "its outputs changed"
    if current and not force:
        return digest, "its last run did not finish"
    return digest, "forced" if force else ("first run" if stamp is None else "its inputs changed")


def plan(
    project: Project, stages: tuple[str, ...] = STAGES, *, force: bool = False
) -> list[StageOutcome]:
    """What `build` would do, without running anything: each stage, whether it runs and why.

    A stage after one that runs is marked to run too (its upstream outputs will change),
    unless it is up to date now; then the build decides again once its upstream has run.
    """
    outcomes, upstream_runs = [], False
    for stage in (s for s in STAGES if s in stages):
        digest, why = _why(project, stage, force)
        if digest is None and upstream_runs:
            why = "up to date now; runs if its upstream's outputs change"
        upstream_runs = upstream_runs or digest is not None
        outcomes.append(StageOutcome(stage=stage, ran=digest is not None, seconds=0, why=why))
    return outcomes


def build(
    project: Project,
    stages: tuple[str, ...] = STAGES,
    *,
    force: bool = False,
    say: Callable[[str], object] | None = None,
) -> list[StageOutcome]:
    """Run each of `stages` (in pipeline order) whose inputs changed since its last run.

    :param force: run every stage even when it is up to date.
    :param say: called with one plain line as each stage starts and ends.

    The settings in force are saved to `out/build-settings.json` before the first stage.
    :raises InputError: if the profile is still `minime init`'s starter text.
    :raises ConfigError: if a model spec that a stage to run needs resolves to nothing
        (checked for every such stage before the first one starts).
    :raises MinimeError: whatever a stage raises; the stages before it keep their stamps.
    """
    say = say or (lambda line: None)
    project.require_edited()
    planned = plan(project, stages, force=force)
    first_run = next((i for i, o in enumerate(planned) if o.ran), len(planned))
    roles = [role for o in planned[first_run:] for role in STAGE_ROLES[o.stage]]
    project.resolve_models(dict.fromkeys(roles))
    settings = project.root / "out" / "build-settings.json"
    settings.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(settings, project.config.model_dump_json(indent=2) + "\n")
    outcomes = []
    for stage in (o.stage for o in planned):
        digest, why = _why(project, stage, force)
        if digest is None:
            say(f"{stage}: up to date, skipped")
            outcomes.append(StageOutcome(stage=stage, ran=False, seconds=0, why=why))
            continue
        resume = stage == "distill" and why == "its last run did not finish"
        say(f"{stage}: running ({why})")
        _write_stamp(project, stage, {"stage": stage, "inputs": digest, "complete": False})
        started = time.monotonic()
        if stage == "data":
            _run(project, stage, resume, say)
        else:  # one line now and then while a stage without task lists works, when piped
            with piped_heartbeat(f"{stage}: working"):
                _run(project, stage, resume, say)
        record_stage(project, stage)
        seconds = round(time.monotonic() - started, 1)
        say(f"{stage}: done in {elapsed(seconds)}")
        outcomes.append(StageOutcome(stage=stage, ran=True, seconds=seconds, why=why))
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
    stamp = {
        "stage": stage,
        "inputs": digest,
        "complete": True,
        "outputs": outputs,
        "profile": _sha(project.profile.encode()),
    }
    _write_stamp(project, stage, stamp)


def profile_changed(project: Project) -> str | None:
    """Where a record says the student learned another profile than the current one (the
    record's path), or None when it did not or nothing tells.

    `out/data/profile.sha256` (written when the teacher answers) is read first, then the
    export's build stamp, then the data stage's; a stamp written before stamps kept the
    profile's hash is compared by its whole input digest, which also changes with the data
    settings.
    """
    current = _sha(project.profile.encode())
    try:
        answered = _profile_file(project).read_text(encoding="utf-8").strip()
    except OSError:
        answered = None
    if answered:
        return None if answered == current else str(_profile_file(project))
    for stage in ("export", "data"):
        stamp = _read_stamp(project, stage)
        if stamp and stamp.get("complete") and "profile" in stamp:
            return None if stamp["profile"] == current else str(_stamp_path(project, stage))
    stamp = _read_stamp(project, "data")
    if (
        stamp
        and stamp.get("complete")
        and "inputs" in stamp
        and stamp["inputs"] != _digest(stage_inputs(project, "data"))
    ):
        return f"{_stamp_path(project, 'data')}, or the data settings changed"
    return None


def run_data_steps(
    project: Project, steps: tuple[str, ...], say: Callable[[str], object] | None = None
) -> dict:
    """Run data steps one at a time, saying as each starts and ends; return the summary."""
    from minime.data import build_dataset

    summary: dict = {}
    for step in steps:
        if say:
            say(f"data {step}: running")
        started = time.monotonic()
        summary = build_dataset(project, (step,))
        if step in ("respond", "cover"):  # the teacher answered from this profile
            write_text_atomic(_profile_file(project), _sha(project.profile.encode()) + "\n")
        if say:
            say(f"data {step}: done in {elapsed(time.monotonic() - started)}")
    return summary


def _profile_file(project: Project) -> Path:
    """sha256 of the profile the teacher last answered from (`minime data` or build)."""
    return project.root / "out" / "data" / "profile.sha256"


def _run(project: Project, stage: str, resume: bool, say: Callable[[str], object]) -> None:
    if stage == "data":
        from minime.data import STEPS

        run_data_steps(project, STEPS, say)
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
        questions = project.questions_path
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
