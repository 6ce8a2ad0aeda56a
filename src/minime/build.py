"""`minime build DIR`: data, distill, export and eval in order, skipping what is up to date.

The stages are one table, `PIPELINE`: each entry names the stage, the model roles it
loads, what its result depends on (`minime.stamps`), the files it hands on
(`minime.layout`) and the function that runs it. After a stage finishes, its build stamp
records the hash of its inputs and the sha256 of its outputs; a later build skips the
stage when both still match, so a fresh clone that carries a stage's outputs and stamp
does not redo it. The code's own version is not part of the hash: after upgrading minime,
`--force` redoes everything.

A stage that was interrupted leaves a stamp marked incomplete; `distill` then resumes from
its last complete checkpoint if its inputs are unchanged.

Each stage's package is imported when the stage runs: distill and export load torch and
transformers, which a build that skips them (or `--dry-run`) need not pay for.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from minime import layout, stamps
from minime.errors import InputError
from minime.fileio import write_text_atomic
from minime.progress import elapsed, piped_heartbeat
from minime.project import Project

Say = Callable[[str], object]


class StageOutcome(BaseModel):
    """What `build` did with one stage."""

    stage: str
    ran: bool
    seconds: float
    why: str


def _run_data(project: Project, resume: bool, say: Say) -> None:
    from minime.data import STEPS

    run_data_steps(project, STEPS, say)


def _run_distill(project: Project, resume: bool, say: Say) -> None:
    from minime.distill import distill

    distill(project, resume=resume)


def _run_export(project: Project, resume: bool, say: Say) -> None:
    from minime.export import export

    export(project)


def _run_eval(project: Project, resume: bool, say: Say) -> None:
    from minime.eval import evaluate

    evaluate(project)


@dataclass(frozen=True)
class Stage:
    """One stage of the pipeline."""

    name: str
    #: The model roles it loads (keys of `Project.model_specs`).
    roles: tuple[str, ...]
    #: Everything its result depends on, as JSON-able values and file hashes.
    inputs: Callable[[Project], dict[str, Any]]
    #: The files it hands on, under the project root.
    outputs: Callable[[Path], list[Path]]
    #: Runs it: (project, resume an interrupted run, say a line).
    run: Callable[[Project, bool, Say], None]
    #: Whether it prints its own progress lines (else a heartbeat when piped).
    reports_progress: bool = False


PIPELINE: tuple[Stage, ...] = (
    Stage(
        "data",
        ("teacher", "generators", "embedder"),
        stamps.data_inputs,
        layout.data_outputs,
        _run_data,
        reports_progress=True,
    ),
    Stage("distill", ("student",), stamps.distill_inputs, layout.distill_outputs, _run_distill),
    Stage("export", (), stamps.export_inputs, layout.export_outputs, _run_export),
    Stage(
        "eval",
        ("chat", "embedder", "eval.generator", "eval.judge"),
        stamps.eval_inputs,
        layout.eval_outputs,
        _run_eval,
    ),
)
STAGES = tuple(stage.name for stage in PIPELINE)
_BY_NAME = {stage.name: stage for stage in PIPELINE}
#: The model roles each stage loads.
STAGE_ROLES = {stage.name: stage.roles for stage in PIPELINE}


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


def stage_inputs(project: Project, stage: str) -> dict[str, Any]:
    """Everything a stage's result depends on, as JSON-able values and file hashes."""
    return _stage(stage).inputs(project)


def stage_outputs(project: Project, stage: str) -> dict[str, str]:
    """sha256 of each output file of `stage` that exists, by path relative to the project."""
    return stamps.file_hashes(project, _stage(stage).outputs(project.root))


def _stage(name: str) -> Stage:
    if name not in _BY_NAME:
        raise ValueError(f"unknown stage {name!r}")
    return _BY_NAME[name]


def _why(project: Project, stage: str, force: bool) -> tuple[str | None, str]:
    """(None, "up to date") for a stage to skip, else (its inputs' digest, why it runs)."""
    digest = stamps.digest(stage_inputs(project, stage))
    stamp = stamps.read_stamp(project, stage)
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
    say: Say | None = None,
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
    settings = layout.build_settings(project.root)
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
        stamps.write_stamp(project, stage, {"stage": stage, "inputs": digest, "complete": False})
        started = time.monotonic()
        run = _stage(stage)
        if run.reports_progress:
            run.run(project, resume, say)
        else:  # one line now and then while a stage without task lists works, when piped
            with piped_heartbeat(f"{stage}: working"):
                run.run(project, resume, say)
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
            f"{layout.stage_dir(project.root, stage)}: no outputs of the {stage} stage to record"
        )
    stamp = {
        "stage": stage,
        "inputs": stamps.digest(stage_inputs(project, stage)),
        "complete": True,
        "outputs": outputs,
        "profile": stamps.profile_sha(project),
    }
    stamps.write_stamp(project, stage, stamp)


def run_data_steps(project: Project, steps: tuple[str, ...], say: Say | None = None) -> dict:
    """Run data steps one at a time, saying as each starts and ends; return the summary."""
    from minime.data import build_dataset

    summary: dict = {}
    for step in steps:
        if say:
            say(f"data {step}: running")
        started = time.monotonic()
        summary = build_dataset(project, (step,))
        if step in ("respond", "cover"):  # the teacher answered from this profile
            stamps.record_answered_profile(project)
        if say:
            say(f"data {step}: done in {elapsed(time.monotonic() - started)}")
    return summary
